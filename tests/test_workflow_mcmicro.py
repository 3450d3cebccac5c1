"""The worked example of "Using SpliCER on your multiplex slides" through Snakemake: a generated MCMICRO output
folder (3 slides, 11-channel panel, pyramidal OME-TIFFs) -> multiplex datasets -> a trained SpliCER encoder ->
probe -> one .h5ad per slide -> UMAP figure and summary, with config/examples/mcmicro.yaml as shipped (one epoch,
its SpliCER run only)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import ROOT, snakemake

from splicer.data.mcmicro_example import CELL_TYPES, PANEL, write_mcmicro
from splicer.encoders import load_encoder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLE = ROOT / "config" / "examples" / "mcmicro.yaml"


def test_worked_example_from_an_mcmicro_folder_to_h5ad_and_umap(tmp_path: Path) -> None:
    import scanpy as sc

    slides = ["slide1", "slide2", "slide3"]
    folder = write_mcmicro(tmp_path / "resources" / "mcmicro_example", slides, size=256, spacing=18, seed=0)
    quick = tmp_path / "quick.yaml"  # the example as shipped (its path is relative to the workdir), one epoch and
    # only its SpliCER run with a component per marker (each run costs jobs that start Python and import torch)
    runs = yaml.safe_load(EXAMPLE.read_text())["experiments"]["mcmicro"]["runs"][1:2]
    quick.write_text(
        yaml.safe_dump(
            {
                "device": "cpu",
                "threads": 1,
                "run_defaults": {"train": {"epochs": 1, "warmup_epochs": 0}},
                "experiments": {"mcmicro": {"runs": runs}},
            }
        )
    )
    run = snakemake("--cores", "2", "-d", str(tmp_path), "--configfile", str(EXAMPLE), str(quick), cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    res = tmp_path / "results" / "mcmicro_example"

    manifest = json.loads((res / "data" / "slides" / "manifest.json").read_text())
    assert manifest["kind"] == "multiplex" and manifest["datasets"] == ["cells", "pretrain"]
    assert manifest["archives"] == []  # read in place, nothing copied
    probes = pd.read_csv(res / "tables" / "mcmicro" / "probes.csv")
    acc = probes[probes.metric == "accuracy"]
    assert set(zip(acc.method, acc.pairing, strict=True)) == {("splicer", "markers")}
    assert acc.value.between(0, 1).all() and acc.value.max() > 1 / len(CELL_TYPES)

    export = json.loads((res / "embeddings" / "slides" / "manifest.json").read_text())
    assert sorted(export["files"]) == slides and "runs/mcmicro/splicer/markers/vicreg/seed0" in export["encoder"]
    truth = pd.read_csv(folder / "ground_truth.csv").set_index(["sample", "CellID"])["cell_type"]
    width = load_encoder(export["encoder"]).out_dim  # the primary encoder's representation, as the probes use
    for slide in slides:
        adata = sc.read_h5ad(res / "embeddings" / "slides" / export["files"][slide])
        assert list(adata.var_names) == PANEL and adata.obsm["X_splicer"].shape == (adata.n_obs, width)
        assert adata.obsm["spatial"].shape == (adata.n_obs, 2) and set(adata.obs["sample"]) == {slide}
        assert list(adata.obs["cell_type"].astype(str)) == [truth[(slide, i)] for i in adata.obs["CellID"]]
        assert np.isfinite(adata.obsm["X_splicer"]).all()
    umap = mpimg.imread(res / "figures" / "umap.png")
    assert umap.shape[0] > 300 and umap.shape[1] > 300
    summary = (res / "summary.md").read_text()
    assert "| mcmicro | splicer | markers | vicreg | cell_types |" in summary
    assert "- mcmicro/cell_types" in summary and "| split | B cell |" in summary
