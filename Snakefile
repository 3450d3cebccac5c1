# SpliCER reproduction pipeline. Default config: the embedded demo (synthetic data, CPU, minutes).
#   snakemake --cores 2                          # whole demo DAG
#   snakemake --cores 2 fig2c                    # one figure and only what it needs
#   snakemake --profile slurm all                                          # the paper, on SLURM
from snakemake.utils import min_version, validate

min_version("8.0")


# The embedded demo is the default; a --configfile (or a profile's configfile) replaces it instead of being
# merged into it (list several to layer them, targets first, since --configfile takes every word after it:
#   snakemake --cores 2 all --configfile config/config.yaml config/test.yaml).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),
