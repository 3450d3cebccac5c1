"""Snakemake adapter: write one run's splicer run config (validated) as YAML."""

from pathlib import Path

import yaml

from splicer.config import validate_run_config
from splicer.logs import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    cfg = validate_run_config(snakemake.params.cfg, where=snakemake.output[0])  # noqa: F821
    Path(snakemake.output[0]).write_text(yaml.safe_dump(cfg, sort_keys=False))  # noqa: F821
