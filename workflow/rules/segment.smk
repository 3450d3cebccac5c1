# Segmentation masks -> components (nuclei / background, lungs / background).


rule segment:
    input:
        f"{RES}/data/{{data}}/manifest.json",
    output:
        f"{RES}/segmented/{{data}}/manifest.json",
    params:
        segmenter=lambda w: config["datasets"][w.data]["segment"]["segmenter"],
    log:
        f"{RES}/logs/segment/{{data}}.log",
    benchmark:
        f"{RES}/benchmarks/segment/{{data}}.tsv"
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/segment.py"
