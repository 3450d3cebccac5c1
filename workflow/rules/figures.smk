# One target rule per paper figure / table (`snakemake fig2c`), reading only the tidy tables and example
# datasets. Each output goes into the HTML report (`snakemake --report report.html`) with its caption.

for _name in config["figures"]:

    rule:
        name:
            _name
        input:
            F.figure_inputs(config, _name)[0],
        output:
            **figure_outputs(_name),
        log:
            f"{RES}/logs/figures/{_name}.log",
        localrule: True
        conda:
            "../../envs/plots.yaml"
        params:
            inputs=F.figure_inputs(config, _name)[1],
            options=F.figure_options(config, _name),
        script:
            "../scripts/figure.py"


rule summary:
    input:
        probes=[P.table_paths(config, e)["probes"] for e in EXPERIMENTS],
        ceilings=[P.table_paths(config, e)["ceilings"] for e in EXPERIMENTS],
        scorecard=scorecard_table(),
        data=sorted({m for e in EXPERIMENTS for m in P.eval_manifests(config, e)}),
    output:
        report(f"{RES}/summary.md", caption="../report/summary.rst", category="Tables"),
    log:
        f"{RES}/logs/summary.log",
    localrule: True
    conda:
        "../../envs/plots.yaml"
    params:
        datasets=P.evaluation_datasets(config),
    script:
        "../scripts/summary.py"
