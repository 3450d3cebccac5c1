# Raw data -> datasets. Downloads run on the submit host (compute nodes are often offline); a user can also
# copy the archives into resources/<kind>/ by hand, and they are verified and used without network access.
# The download rule's output is a verification record beside the archive (resources/<kind>/.verified/), never
# the archive itself: Snakemake deletes a job's outputs before rerunning it, and must never delete 50 GB.


rule download:
    output:
        f"resources/{{kind}}/{P.VERIFIED}/{{file}}.json",
    params:
        kind="{kind}",
        file="{file}",
        source=lambda w: P.archive_options(config, w.kind, w.file),
    log:
        "logs/download/{kind}/{file}.log",
    wildcard_constraints:
        kind="[A-Za-z0-9_]+",
        file="[^/]+",
    localrule: True
    retries: 2
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/download.py"


rule build_data:
    input:
        lambda w: P.archive_targets(config, w.data),
    output:
        f"{RES}/data/{{data}}/manifest.json",
    params:
        spec=lambda w: config["datasets"][w.data],
    log:
        f"{RES}/logs/data/{{data}}.log",
    benchmark:
        f"{RES}/benchmarks/data/{{data}}.tsv"
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/build_data.py"
