"""The repository's pipeline configs as the Snakefile sees them (shared by the tests that read them)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(*names: str) -> dict:
    """Config files layered left to right (as ``--configfile a b``: mappings merged, lists replaced), validated
    with the schema's defaults filled in, as the Snakefile sees them."""
    from snakemake.utils import update_config, validate

    config: dict = {}
    for name in names:
        update_config(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config
