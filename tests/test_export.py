"""Embedding export to AnnData (``splicer embed --format h5ad``): one .h5ad per sample that scanpy opens and runs
neighbours + UMAP on ``use_rep="X_splicer"``; contents checked against the MCMICRO tables and a direct embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from splicer.cli import main as cli
from splicer.data.build import build_data
from splicer.data.format import load_dataset
from splicer.data.mcmicro_example import CELL_TYPES, PANEL, write_mcmicro
from splicer.encoders import build_encoder, load_encoder, save_encoder
from splicer.evaluate import embed

pytestmark = pytest.mark.timeout(300)

SAMPLES = ["tonsil-A", "tonsil B"]  # a space: file names are sanitised, obs keep the name


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    mc = write_mcmicro(root / "mc", SAMPLES, size=256, spacing=16, seed=5)
    spec = {
        "kind": "multiplex",
        "params": {
            "path": str(mc),
            "drop": ["DNA_2", "AF488"],
            "split_by": "cell",
            "n_pretrain": 10,
            "labels": {"csv": str(mc / "ground_truth.csv"), "column": "cell_type", "classes": CELL_TYPES},
        },
    }
    build_data(spec, root / "data", [])
    cells = load_dataset(root / "data" / "cells")
    encoder = build_encoder("resnet", cells.channels, 32, base_width=4, blocks=[1])
    save_encoder(encoder, root / "encoder.pt")
    return {"mc": mc, "cells": root / "data" / "cells", "encoder": root / "encoder.pt", "root": root}


def test_h5ad_per_sample_opens_in_scanpy_and_runs_neighbours_and_umap(built: dict, tmp_path: Path, capsys) -> None:
    import scanpy as sc

    out = tmp_path / "emb"
    assert (
        cli(
            [
                "embed",
                "--encoder",
                str(built["encoder"]),
                "--data",
                str(built["cells"]),
                "--out",
                str(out),
                "--format",
                "h5ad",
                "--batch-size",
                "7",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == {"tonsil-A": "tonsil-A.h5ad", "tonsil B": "tonsil_B.h5ad"}
    cells = load_dataset(built["cells"])
    reference = embed(load_encoder(built["encoder"]), np.asarray(cells.images), batch_size=256)
    ids = np.load(built["cells"] / "cell_ids.npy")
    of = np.load(built["cells"] / "cell_samples.npy")
    truth = pd.read_csv(built["mc"] / "ground_truth.csv").set_index(["sample", "CellID"])["cell_type"]
    assert sorted(cells.meta["info"]["samples"]) == sorted(SAMPLES)
    for s, sample in enumerate(cells.meta["info"]["samples"]):
        adata = sc.read_h5ad(out / manifest["files"][sample])
        table = pd.read_csv(built["mc"] / sample / "quantification" / f"{sample}--unmicst_cell.csv").set_index("CellID")
        rows = np.flatnonzero(of == s)
        assert adata.n_obs == rows.size == manifest["n_cells"][sample]
        assert list(adata.obs_names) == [str(i) for i in ids[rows]] and adata.obs_names.is_unique
        assert list(adata.var_names) == PANEL
        assert adata.var["crop_channel"].tolist() == [m not in ("DNA_2", "AF488") for m in PANEL]
        assert set(adata.obs["sample"]) == set(adata.obs["imageid"]) == {sample}
        want = table.loc[adata.obs["CellID"].to_numpy()]
        assert np.allclose(adata.X, want[PANEL].to_numpy(np.float32))  # the quantification table's means
        assert np.allclose(adata.obsm["spatial"], want[["X_centroid", "Y_centroid"]].to_numpy())
        assert np.allclose(adata.obs[["X_centroid", "Y_centroid"]].to_numpy(), adata.obsm["spatial"])
        assert np.allclose(adata.obsm["X_splicer"], reference[rows], atol=1e-5)  # batches of 7 = one pass
        assert list(adata.obs["cell_type"].cat.categories) == CELL_TYPES
        assert list(adata.obs["cell_type"].astype(str)) == [truth[(sample, i)] for i in adata.obs["CellID"]]
        assert set(adata.obs["split"].astype(str)) == {"train", "val", "test"}
        assert adata.uns["splicer"]["label_key"] == "cell_type" and adata.uns["splicer"]["sample"] == sample
        assert json.loads(adata.uns["splicer"]["dataset_info"])["normalisation"]["method"] == "percentile"
        # what a scverse user does next
        sc.pp.neighbors(adata, use_rep="X_splicer", n_neighbors=10)
        sc.tl.umap(adata)
        assert adata.obsm["X_umap"].shape == (rows.size, 2) and np.isfinite(adata.obsm["X_umap"]).all()
        assert adata.obsp["connectivities"].shape == (rows.size, rows.size)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no scratch or temp file left


def test_export_refuses_datasets_without_cell_records_and_leaves_no_manifest(
    built: dict, tmp_path: Path, monkeypatch, capsys
) -> None:
    from splicer.data.format import save_dataset

    plain = tmp_path / "plain"
    save_dataset(
        plain,
        np.zeros((4, 9, 32, 32), np.uint8),
        np.full(4, -1),
        np.zeros(4, int),
        {
            "name": "x",
            "channel_names": [f"c{i}" for i in range(9)],
            "class_names": [],
            "split_names": ["train"],
            "mask_names": [],
        },
    )
    code = cli(
        [
            "embed",
            "--encoder",
            str(built["encoder"]),
            "--data",
            str(plain),
            "--out",
            str(tmp_path / "o"),
            "--format",
            "h5ad",
        ]
    )
    assert code == 2 and "no per-cell records" in capsys.readouterr().err

    import splicer.evaluate

    calls = {"n": 0}
    real = splicer.evaluate.embed

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 30:  # mid-export
            raise RuntimeError("node lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(splicer.evaluate, "embed", failing)
    out = tmp_path / "cut"
    from splicer.export import export_h5ad

    with pytest.raises(RuntimeError, match="node lost"):
        export_h5ad(built["encoder"], built["cells"], out, batch_size=4)
    assert not (out / "manifest.json").exists()  # an interrupted export is never taken as complete
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
