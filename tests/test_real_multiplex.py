"""The ``multiplex`` kind (splicer.data.real.multiplex) on generated MCMICRO output folders: real tiled, zlib,
pyramidal OME-TIFFs with OME channel names, uint32 label masks and mcquant-style tables whose means are computed
from the written pixels, read in place; every crop, mask and record compared with the full image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from splicer.data.build import build_data
from splicer.data.format import load_dataset
from splicer.data.mcmicro_example import CELL_TYPES, PANEL, write_mcmicro
from splicer.data.real.common import BuildError
from splicer.data.real.multiplex import CELL_FILES, layout

pytestmark = pytest.mark.timeout(120)

SAMPLES = ["s1", "s2", "s3"]
SIZE, CROP = 384, 32
DROP = ["DNA_[2-9]", "AF*"]
CHANNELS = [m for m in PANEL if m not in ("DNA_2", "AF488")]


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mcmicro(tmp_path_factory.mktemp("mcmicro") / "mc", SAMPLES, size=SIZE, spacing=18, seed=3)


def spec(path: Path, **params) -> dict:
    return {"kind": "multiplex", "params": {"path": str(path), **params}, "seed": 0}


def truth(mc: Path, sample: str) -> dict:
    project = mc / sample
    return {
        "image": tifffile.imread(project / "registration" / f"{sample}.ome.tif"),
        "cell": tifffile.imread(project / "segmentation" / f"unmicst-{sample}" / "cell.ome.tif"),
        "table": pd.read_csv(project / "quantification" / f"{sample}--unmicst_cell.csv"),
    }


def block_asarray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every whole-page / whole-series read fail: the builder must read tiles only."""

    def refuse(*_a, **_k):
        raise AssertionError("whole-page read")

    for target in (tifffile.TiffFile, tifffile.TiffPage, tifffile.TiffFrame, tifffile.TiffPageSeries):
        monkeypatch.setattr(target, "asarray", refuse, raising=False)
    monkeypatch.setattr(tifffile, "imread", refuse)


def records(ds) -> dict[str, np.ndarray]:
    return {k: np.load(ds.path / f) for k, f in CELL_FILES.items()}


def nothing_written(out: Path) -> bool:
    return not list(out.glob("*/meta.json")) and not list(out.glob("*.tmp-*"))


# ------------------------------------------------------------------------------------------------ end to end
def test_build_reads_the_folder_in_place_crops_masks_records_labels(mc: Path, tmp_path: Path, monkeypatch) -> None:
    full = {s: truth(mc, s) for s in SAMPLES}
    ground = pd.read_csv(mc / "ground_truth.csv")
    block_asarray(monkeypatch)
    calls = []
    params = {
        "drop": DROP,
        "normalise": "none",
        "labels": {"csv": str(mc / "ground_truth.csv"), "column": "cell_type", "classes": CELL_TYPES},
    }
    from splicer.data.real.multiplex import build_multiplex

    build_multiplex(tmp_path / "out", {}, params | {"path": str(mc)}, _caps(), 0, progress=lambda *a: calls.append(a))
    cells, pre = load_dataset(tmp_path / "out" / "cells"), load_dataset(tmp_path / "out" / "pretrain")
    assert cells.channel_names == CHANNELS and cells.mask_names == ["cell"] and cells.class_names == CELL_TYPES
    assert cells.images.dtype == np.uint16 and cells.images.shape[1:] == (len(CHANNELS), CROP, CROP)
    info = cells.meta["info"]
    assert info["samples"] == SAMPLES and info["quant_markers"] == PANEL and info["split_by"] == "sample"
    assert sorted(info["sample_splits"].values()) == ["test", "train", "val"]
    rec = records(cells)
    order = [PANEL.index(c) for c in CHANNELS]
    n_inside = 0
    for s, name in enumerate(SAMPLES):
        t = full[name]["table"]
        x = np.floor(t["X_centroid"]).astype(int) - CROP // 2
        y = np.floor(t["Y_centroid"]).astype(int) - CROP // 2
        inside = (x >= 0) & (y >= 0) & (x + CROP <= SIZE) & (y + CROP <= SIZE)
        n_inside += int(inside.sum())
        rows = np.flatnonzero(rec["cell_samples"] == s)
        assert sorted(rec["cell_ids"][rows]) == sorted(t["CellID"][inside])  # every cell whose crop fits, once
        assert set(np.asarray(cells.split)[rows]) == {["train", "val", "test"].index(info["sample_splits"][name])}
        by_id = t.set_index("CellID")
        labels = ground[ground["sample"] == name].set_index("CellID")["cell_type"]
        for r in rows[:: max(1, rows.size // 60)]:  # a spread of cells: exact crops, masks and records
            cid = int(rec["cell_ids"][r])
            row = by_id.loc[cid]
            top, left = int(np.floor(row["Y_centroid"])) - CROP // 2, int(np.floor(row["X_centroid"])) - CROP // 2
            want = full[name]["image"][order, top : top + CROP, left : left + CROP]
            assert np.array_equal(cells.images[r], want)
            assert np.array_equal(cells.masks[r, 0], full[name]["cell"][top : top + CROP, left : left + CROP] == cid)
            assert np.allclose(rec["centroids"][r], [row["X_centroid"], row["Y_centroid"]])
            assert np.allclose(rec["marker_means"][r], row[PANEL].to_numpy(np.float32))
            assert cells.class_names[cells.labels[r]] == labels[cid]
    assert cells.n == n_inside and pre.n == n_inside  # n_pretrain 50000 > cells: all of them
    assert info["mask_check"]["cell"]["s1"]["without_own_pixels"] == 0
    assert info["class_counts"]["train"]["unlabelled"] == 0
    assert all(v["tiles_decoded"] < v["tiles_total"] for v in info["reading"].values())  # tiles, not pages
    assert calls and calls[-1][0] == calls[-1][1] == n_inside and calls[-1][2] > 0  # progress reported


def _caps(limits: dict | None = None):
    from splicer.data.real.common import Caps

    return Caps(limits or {})


def test_percentile_normalisation_is_recorded_and_applied(mc: Path, tmp_path: Path) -> None:
    """Per sample and marker: clip to [p1, p99.9] of tissue pixels, scale to 0..65535; recorded in meta.json."""
    build_data(spec(mc, samples=["s2"], drop=DROP, n_pretrain=10), tmp_path / "out", [])
    ds = load_dataset(tmp_path / "out" / "cells")
    norm = ds.meta["info"]["normalisation"]
    assert norm["method"] == "percentile" and norm["percentiles"] == [1.0, 99.9]
    ranges = norm["per_sample"]["s2"]
    full = truth(mc, "s2")
    rec = records(ds)
    by_id = full["table"].set_index("CellID")
    lo = np.array([ranges[c][0] for c in CHANNELS], np.float32)[:, None, None]
    hi = np.array([ranges[c][1] for c in CHANNELS], np.float32)[:, None, None]
    order = [PANEL.index(c) for c in CHANNELS]
    for r in range(0, ds.n, 37):
        row = by_id.loc[int(rec["cell_ids"][r])]
        top, left = int(np.floor(row["Y_centroid"])) - CROP // 2, int(np.floor(row["X_centroid"])) - CROP // 2
        raw = full["image"][order, top : top + CROP, left : left + CROP].astype(np.float32)
        want = np.rint(np.clip((raw - lo) * (np.float32(65535.0) / (hi - lo)), 0, 65535))
        assert np.array_equal(ds.images[r], want.astype(np.uint16))
    dna = full["image"][PANEL.index("DNA_1")]
    assert np.percentile(dna, 50) < ranges["DNA_1"][1] <= dna.max()  # a bright nuclear stain: high cut near the top
    assert ds.images[:, CHANNELS.index("DNA_1")].max() == 65535


def test_labels_from_a_table_column_and_from_gating_rules(mc: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    shutil.copytree(mc / "s1", one / "s1")
    table = one / "s1" / "quantification" / "s1--unmicst_cell.csv"
    ground = pd.read_csv(mc / "ground_truth.csv").query("sample == 's1'").set_index("CellID")["cell_type"]
    t = pd.read_csv(table)
    t["phenotype"] = ground.reindex(t["CellID"]).to_numpy()
    t.loc[t.index[:5], "phenotype"] = np.nan  # unlabelled
    t.to_csv(table, index=False)
    build_data(spec(one, drop=DROP, labels={"column": "phenotype"}, n_pretrain=5), tmp_path / "col", [])
    ds = load_dataset(tmp_path / "col" / "cells")
    ids = records(ds)["cell_ids"]
    got = np.array([ds.class_names[v] if v >= 0 else None for v in ds.labels], dtype=object)
    want = t.set_index("CellID")["phenotype"].reindex(ids).to_numpy(dtype=object)
    assert [g if isinstance(w, str) else None for g, w in zip(got, want, strict=True)] == list(got)
    assert all(g == w for g, w in zip(got, want, strict=True) if isinstance(w, str))
    assert ds.meta["info"]["labels"] == {"key": "cell_type", "source": "column", "column": "phenotype"}
    assert ds.meta["info"]["split_by"] == "cell"  # one sample: cells split at random, stratified

    rules = [
        {"label": "tumour", "pos": ["Pan-CK"], "neg": ["CD45"]},
        {"label": "stromal", "pos": ["SMA"], "neg": ["CD45"]},
        {"label": "CD8 T cell", "pos": ["CD45", "CD3e", "CD8a"], "neg": ["CD4"]},
        {"label": "CD4 T cell", "pos": ["CD45", "CD3e", "CD4"], "neg": ["CD8a"]},
        {"label": "B cell", "pos": ["CD45", "CD20"], "neg": ["CD3e"]},
        {"label": "macrophage", "pos": ["CD45"], "any": ["CD68"], "neg": ["CD3e", "CD20"]},
    ]
    labels = {"rules": rules, "gates": {"CD45": "otsu", "SMA": "quantile:0.8"}, "key": "phenotype"}
    build_data(spec(mc, drop=DROP, labels=labels, n_pretrain=5), tmp_path / "gate", [])
    ds = load_dataset(tmp_path / "gate" / "cells")
    assert ds.class_names == [r["label"] for r in rules]
    rec = records(ds)
    ground = pd.read_csv(mc / "ground_truth.csv").set_index(["sample", "CellID"])["cell_type"]
    want = ground.reindex(list(zip(np.array(SAMPLES)[rec["cell_samples"]], rec["cell_ids"], strict=True)))
    got = [ds.class_names[v] if v >= 0 else None for v in ds.labels]
    agree = np.mean([g == w for g, w in zip(got, want, strict=True)])
    assert agree > 0.9, agree  # the designed types come back through per-sample Otsu gates
    gating = ds.meta["info"]["labels"]
    assert gating["source"] == "gating" and gating["key"] == "phenotype" and set(gating["thresholds"]) == set(SAMPLES)
    assert 0 < gating["thresholds"]["s1"]["CD45"] < 5000


def test_keep_order_common_panel_old_names_tma_cores_and_layout(mc: Path, tmp_path: Path) -> None:
    lay = layout(spec(mc, keep=["CD8a", "CD4", "CD*"], drop=["CD20"]))
    assert lay["cells"].channels == ("CD8a", "CD4", "CD45", "CD3e", "CD68") and lay["cells"].masks == ("cell",)
    assert layout(spec(tmp_path / "not-mounted"))["cells"].channels is None
    # a second panel: s9 lacks CD20 and adds CD99 -> refused unless keep avoids them or common_panel is asked
    other = tmp_path / "two"
    shutil.copytree(mc / "s1", other / "s1")
    shutil.copytree(mc / "s2", other / "s9")
    for old in (other / "s9").rglob("*s2*"):
        old.rename(old.with_name(old.name.replace("s2", "s9")))
    (other / "s9" / "markers.csv").write_text((other / "s9" / "markers.csv").read_text().replace(",CD20,", ",CD99,"))
    quant = other / "s9" / "quantification" / "s9--unmicst_cell.csv"
    pd.read_csv(quant).rename(columns={"CD20": "CD99"}).to_csv(quant, index=False)
    common = dict(drop=DROP, check_channel_names=False, n_pretrain=5)
    with pytest.raises(BuildError, match=r"different panel: it lacks \['CD20'\]") as info:
        build_data(spec(other, **common), tmp_path / "a", [])
    assert Path(info.value.file) == other / "s9" / "markers.csv" and nothing_written(tmp_path / "a")
    build_data(spec(other, **common, common_panel=True), tmp_path / "b", [])
    assert "CD20" not in load_dataset(tmp_path / "b" / "cells").channel_names
    build_data(spec(other, **common, keep=["DNA_1", "CD45", "CD3e"]), tmp_path / "c", [])
    assert load_dataset(tmp_path / "c" / "cells").meta["info"]["quant_markers"] == [m for m in PANEL if m != "CD20"]
    # pre-2022 table names (<method>-<sample>_cell.csv), a TMA core image in dearray/, and a second method
    old = tmp_path / "old"
    shutil.copytree(mc / "s3", old / "s3")
    quant = old / "s3" / "quantification"
    (quant / "s3--unmicst_cell.csv").rename(quant / "unmicst-s3_cell.csv")
    (old / "s3" / "dearray").mkdir()
    (old / "s3" / "registration" / "s3.ome.tif").rename(old / "s3" / "dearray" / "s3.tif")
    build_data(spec(old, drop=DROP, n_pretrain=5), tmp_path / "d", [])
    assert load_dataset(tmp_path / "d" / "cells").meta["info"]["per_sample"]["s3"]["image"].endswith("dearray/s3.tif")
    shutil.copy(quant / "unmicst-s3_cell.csv", quant / "s3--mesmer_cell.csv")
    with pytest.raises(BuildError, match=r"several segmentation methods \['mesmer', 'unmicst'\]"):
        build_data(spec(old, drop=DROP), tmp_path / "e", [])
    build_data(spec(old, drop=DROP, segmentation="unmicst", masks=[], n_pretrain=5), tmp_path / "f", [])
    assert load_dataset(tmp_path / "f" / "cells").mask_names == []


# ---------------------------------------------------------------------------------------------------- faults
def _broken(mc: Path, tmp: Path, what: str) -> tuple[Path, Path]:
    """A copy of sample s1 (with s2 for the cross-sample defects) with one defect; returns the folder and the file
    at fault."""
    root = tmp / "broken"
    for s in ("s1", "s2") if what in ("mask of another sample", "different panels") else ("s1",):
        shutil.copytree(mc / s, root / s)
    project = root / "s1"
    markers = project / "markers.csv"
    table = project / "quantification" / "s1--unmicst_cell.csv"
    image = project / "registration" / "s1.ome.tif"
    mask = project / "segmentation" / "unmicst-s1" / "cell.ome.tif"
    t = pd.read_csv(table)
    if what == "marker the image lacks":
        pd.DataFrame({"marker_name": [*PANEL, "CD99"]}).to_csv(markers, index=False)
        return root, image
    if what == "channel the markers lack":
        pd.DataFrame({"marker_name": [m for m in PANEL if m != "SMA"]}).to_csv(markers, index=False)
        return root, image
    if what == "renamed marker":
        pd.DataFrame({"marker_name": [m if m != "CD4" else "CD4_typo" for m in PANEL]}).to_csv(markers, index=False)
        t.rename(columns={"CD4": "CD4_typo"}).to_csv(table, index=False)
        return root, image
    if what in ("no CellID", "no X_centroid"):
        t.drop(columns=[what[3:]]).to_csv(table, index=False)
        return root, table
    if what == "centroids outside":
        t.assign(Y_centroid=t["Y_centroid"] + SIZE).to_csv(table, index=False)
        return root, table
    if what == "mask of another sample":
        shutil.copy(root / "s2" / "segmentation" / "unmicst-s2" / "cell.ome.tif", mask)
        shutil.rmtree(root / "s2")
        return root, mask
    if what == "different panels":
        (root / "s2" / "markers.csv").write_text(markers.read_text().replace(",CD8a,", ",CD8b,"))
        quant = root / "s2" / "quantification" / "s2--unmicst_cell.csv"
        pd.read_csv(quant).rename(columns={"CD8a": "CD8b"}).to_csv(quant, index=False)
        return root, root / "s2" / "markers.csv"
    assert what == "truncated OME-TIFF"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])
    return root, image


@pytest.mark.parametrize(
    "what, says",
    [
        ("marker the image lacks", "has 11 channels but"),
        ("channel the markers lack", "has 11 channels but"),
        ("renamed marker", "its channels are named"),
        ("no CellID", "lacks column(s) ['CellID']"),
        ("no X_centroid", "lacks column(s) ['X_centroid']"),
        ("centroids outside", "outside the 384x384 image"),
        ("mask of another sample", "labels do not match the CellIDs"),
        ("different panels", "different panel"),
        ("truncated OME-TIFF", "truncated"),
    ],
)
def test_bad_input_fails_naming_the_file_and_writes_nothing(mc: Path, tmp_path: Path, what: str, says: str) -> None:
    root, culprit = _broken(mc, tmp_path, what)
    out = tmp_path / "out"
    with pytest.raises(BuildError) as info:
        build_data(spec(root, drop=DROP, n_pretrain=20), out, [])
    assert says in str(info.value) and Path(info.value.file) == culprit, str(info.value)
    assert nothing_written(out)


def test_bad_params_and_label_specs_fail_naming_the_key(mc: Path, tmp_path: Path) -> None:
    for params, says in (
        ({"crop": 32}, "unknown params"),
        ({"normalise": "zscore"}, "params.normalise"),
        ({"percentiles": [99, 1]}, "params.percentiles"),
        ({"drop": ["XYZ*"]}, "params.drop 'XYZ\\*' matches no marker"),
        ({"keep": ["CD4", "CD4*"], "drop": ["CD4*"]}, "leave no channel"),
        ({"labels": {"column": "a", "rules": []}}, "exactly one source"),
        ({"labels": {"rules": [{"label": "T", "pos": ["CD3"]}]}}, "rules\\[0\\].pos names marker"),
        ({"labels": {"rules": [{"label": "T"}]}}, "no pos, neg or any marker"),
        ({"labels": {"rules": [{"label": "T", "pos": ["CD3e"]}], "gates": {"CD3e": "median"}}}, "gate of 'CD3e'"),
        ({"labels": {"csv": "x.csv"}}, "labels.column"),
        ({"sample_splits": {"s1": "train"}}, "every sample a split"),
        ({"masks": ["membrane"]}, "no mask\\(s\\) \\['membrane'\\]"),
        ({"samples": ["s7"]}, "params.samples names sample\\(s\\) \\['s7'\\]"),
    ):
        with pytest.raises(ValueError, match=says):
            build_data(spec(mc, **params), tmp_path / "x", [])
    with pytest.raises(ValueError, match="not found"):
        build_data(spec(tmp_path / "none"), tmp_path / "x", [])
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"CellID": [1, 2], "cell_type": ["a", "b"]}).to_csv(csv, index=False)
    with pytest.raises(BuildError, match="needs a 'sample'"):
        build_data(spec(mc, labels={"csv": str(csv), "column": "cell_type"}), tmp_path / "y", [])
    assert nothing_written(tmp_path / "x") and nothing_written(tmp_path / "y")


def test_caps_and_fixed_sample_splits(mc: Path, tmp_path: Path) -> None:
    splits = {"s1": "test", "s2": "train", "s3": "train"}
    build_data(
        {**spec(mc, drop=DROP, sample_splits=splits, n_pretrain=40), "caps": {"cells/train": 50, "pretrain": 7}},
        tmp_path / "out",
        [],
    )
    cells, pre = load_dataset(tmp_path / "out" / "cells"), load_dataset(tmp_path / "out" / "pretrain")
    assert cells.select("train").n == 50 and cells.select("val").n == 0 and pre.n == 7
    rec = records(cells)
    assert set(rec["cell_samples"][np.asarray(cells.split) == 2]) == {0}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["caps"] == {"cells/train": 50, "pretrain": 7}
