"""The repository's pipeline configs as the Snakefile sees them (shared by the tests that read them)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    """A config file with the schema's defaults filled in, as the Snakefile sees it."""
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config
