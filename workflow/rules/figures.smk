# One target rule per paper figure / table (`snakemake fig2c`), reading only the tidy tables and example
# datasets. Each output goes into the HTML report (`snakemake --report report.html`) with its caption.

FIGURE_TABLES = ("fig4b", "tableS2", "scorecard")


def _figure_outputs(name):
    out = {
        "png": report(
            f"{RES}/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category="Figures" if name not in FIGURE_TABLES else "Tables",
        ),
        "pdf": f"{RES}/figures/{name}.pdf",
    }
    if name in FIGURE_TABLES:
        out["csv"] = f"{RES}/figures/{name}.csv"
    return out


for _name in config["figures"]:

    rule:
        name:
            _name
        input:
            P.figure_inputs(config, _name)[0],
        output:
            **_figure_outputs(_name),
        params:
            inputs=P.figure_inputs(config, _name)[1],
            options=P.figure_options(config, _name),
        log:
            f"{RES}/logs/figures/{_name}.log",
        localrule: True
        conda:
            "../../envs/plots.yaml"
        script:
            "../scripts/figure.py"
