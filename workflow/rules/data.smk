# Raw data -> datasets. Downloads run on the submit host (compute nodes are often offline); a user can also
# copy the archives into resources/<kind>/ by hand, and they are verified and used without network access.
# The download rule's output is a verification record beside the archive (resources/<kind>/.verified/), never
# the archive itself: Snakemake deletes a job's outputs before rerunning it, and must never delete 50 GB. With
# `source: {path: ...}` the record is of an extracted upstream folder verified in place (nothing downloaded);
# the record names where each archive is, and the build reads it from there.


rule download:
    output:
        f"resources/{{kind}}/{A.VERIFIED}/{{file}}.json",
    log:
        "logs/download/{kind}/{file}.log",
    wildcard_constraints:
        kind="[A-Za-z0-9_]+",
        file="[^/]+",
    # Not rerun on failure (this overrides the profile's retries): network errors are retried inside the job,
    # resuming the transfer with backoff (splicer.data.download), while a checksum mismatch or an archive missing
    # offline would fail the same way again, and a rerun would replace the log that says why.
    retries: 0
    localrule: True
    conda:
        "../../envs/download.yaml"
    params:
        # the archive (URL, digests, where it is read in place) resolved here, so the job imports no medmnist
        archive=lambda w: A.archive_fields(config, w.kind, w.file),
    script:
        "../scripts/download.py"


rule build_data:
    input:
        lambda w: A.archive_targets(config, w.data),
    output:
        f"{RES}/data/{{data}}/manifest.json",
    log:
        f"{RES}/logs/data/{{data}}.log",
    benchmark:
        f"{RES}/benchmarks/data/{{data}}.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        spec=lambda w: config["datasets"][w.data],
    script:
        "../scripts/build_data.py"
