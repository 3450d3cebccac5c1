"""Orion-CRC builder (splicer.data.real.orion) on small upstream-shaped fixtures: tiled, zlib-compressed, pyramidal
(SubIFDs) 19-channel OME-TIFFs whose pixel values encode (slide, channel, position), MCMICRO-layout per-cell tables
with designed marker intensities, and markers.csv; served by a loopback server and fetched like the real files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from loopback import Route, Server

from splicer.data import download, sources
from splicer.data.build import build_data
from splicer.data.download import ChecksumError, fetch
from splicer.data.format import load_dataset
from splicer.data.real.common import BuildError
from splicer.data.real.orion import _otsu, gate_cells
from splicer.data.vocab import CELL_TYPES, MULTIPLEX_CHANNELS, T_SUBTYPES

pytestmark = pytest.mark.timeout(60)

SLIDES = ["CRC01", "CRC02", "CRC03"]
SPLITS_ = ["train", "val", "test"]
SIZE, TILE, CROP = 512, 128, 32
MORPHOLOGY = ["Area", "MajorAxisLength", "MinorAxisLength", "Eccentricity", "Solidity", "Extent", "Orientation"]
# designed cell kinds: positive markers, expected coarse type, expected T subtype, cells per slide
KINDS = [
    (("Pan-CK", "E-cadherin"), "tumour", None, 30),
    (("SMA",), "stromal", None, 22),
    (("CD31",), "endothelial", None, 12),
    (("CD31", "SMA"), "endothelial", None, 8),  # CD31 takes precedence over SMA
    (("CD45", "CD68"), "macrophage", None, 12),
    (("CD45", "CD163", "CD68"), "macrophage", None, 10),
    (("CD45", "CD20"), "B cell", None, 20),
    (("CD45", "CD3e", "CD4"), "T cell", "CD4 helper T", 16),
    (("CD45", "CD3e", "CD8a"), "T cell", "CD8 cytotoxic T", 14),
    (("CD45", "CD3e", "CD4", "FOXP3"), "T cell", "FOXP3 regulatory T", 12),
    (("CD45", "CD3e"), "T cell", None, 6),  # no subtype
    (("CD45", "CD3e", "CD4", "CD8a"), "T cell", None, 4),  # double positive: no subtype
    ((), None, None, 12),  # nothing
    (("Pan-CK", "CD45", "CD3e"), None, None, 6),  # epithelial / immune conflict
    (("CD45", "CD3e", "CD20"), None, None, 6),  # two immune lineages
]
N_EDGE = 4  # tumour cells per slide whose crop leaves the image (centroid within 16 px of the left edge)


def fine_index(coarse: str | None, sub: str | None) -> int:
    if coarse == "T cell":
        return -1 if sub is None else 5 + T_SUBTYPES.index(sub)
    return -1 if coarse is None else CELL_TYPES.index(coarse)


def slide_pixels(slide: int, channels: int = 19) -> np.ndarray:
    """(C, Y, X) uint16: the position (Y*512+X, 18 bits) mixed with slide and channel by an invertible hash,
    so every 32x32 crop of every channel differs (a crop read from the wrong place or channel is caught)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.uint64)
    c = np.arange(channels, dtype=np.uint64)[:, None, None]
    key = ((y * SIZE + x) * np.uint64(64) + c) * np.uint64(8) + np.uint64(slide)
    mixed = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return (mixed & np.uint64(0xFFFF)).astype(np.uint16)


def write_image(path: Path, data: np.ndarray, names: list[str], tiled: bool = True) -> None:
    if not tiled:
        tifffile.imwrite(path, data, ome=True, rowsperstrip=40, metadata={"axes": "CYX"})
        return
    opts = {"tile": (TILE, TILE), "compression": "zlib", "predictor": True}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(
            data,
            subifds=2,
            metadata={"axes": "CYX", "Channel": {"Name": names}, "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325},
            **opts,
        )
        tw.write(data[:, ::2, ::2], subfiletype=1, **opts)
        tw.write(data[:, ::4, ::4], subfiletype=1, **opts)


def cell_table(slide: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Upstream-layout table (CellID, markers, centroids, morphology) and the designed (coarse, fine) labels."""
    rng = np.random.default_rng(100 + slide)
    rows, coarse, fine = [], [], []
    for positive, ctype, sub, n in KINDS:
        for _ in range(n):
            level = rng.lognormal(np.log(60), 0.3, len(MULTIPLEX_CHANNELS))
            for m in positive:
                level[MULTIPLEX_CHANNELS.index(m)] = rng.lognormal(np.log(3000), 0.3)
            rows.append(level)
            coarse.append(-1 if ctype is None else CELL_TYPES.index(ctype))
            fine.append(fine_index(ctype, sub))
    n = len(rows)
    x, y = rng.uniform(20, SIZE - 20, n), rng.uniform(20, SIZE - 20, n)
    x[:N_EDGE] = rng.uniform(0, 14, N_EDGE)  # first cells are tumour: their crops leave the image
    table = pd.DataFrame(np.array(rows), columns=MULTIPLEX_CHANNELS)
    table.insert(0, "CellID", np.arange(1, n + 1))
    table["X_centroid"], table["Y_centroid"] = x, y
    for col in MORPHOLOGY:
        table[col] = rng.uniform(1, 400, n)
    return table, np.array(coarse), np.array(fine)


def names_of(folder: str) -> dict[str, str]:
    """{file type: archive name} of one slide, as the registry names them."""
    found = {a.name: a for a in sources.orion_archives("orion_crc", [folder])}
    image = next(n for n in found if n.endswith("-zlib.ome.tiff"))
    cells = next(n for n in found if n.endswith(".csv") and n != "markers.csv")
    return {"image": image, "cells": cells}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Fixture files of three slides (local paths), plus the pixels and designed labels to check against."""
    root = tmp_path_factory.mktemp("orion_raw")
    (root / "markers.csv").write_text("\n".join(MULTIPLEX_CHANNELS) + "\n")  # header-less, as upstream
    files, truth = {"markers.csv": root / "markers.csv"}, {}
    for i, folder in enumerate(SLIDES):
        names = names_of(folder)
        pixels = slide_pixels(i)
        write_image(root / names["image"], pixels, MULTIPLEX_CHANNELS)
        table, coarse, fine = cell_table(i)
        table.to_csv(root / names["cells"], index=False)
        files[names["image"]], files[names["cells"]] = root / names["image"], root / names["cells"]
        truth[folder] = {"pixels": pixels, "table": table, "coarse": coarse, "fine": fine}
    return {"files": files, "truth": truth}


def spec(slides: list[str], params: dict | None = None, caps: dict | None = None) -> dict:
    return {"kind": "orion_crc", "source": {"slides": slides}, "params": params or {}, "caps": caps or {}, "seed": 0}


def subset(raw: dict, slides: list[str]) -> list[Path]:
    chosen = {"markers.csv"} | {n for f in slides for n in names_of(f).values()}
    return [p for name, p in raw["files"].items() if name in chosen]


def crop_index(raw: dict, slides: list[str]) -> dict[bytes, tuple[str, int]]:
    """Bytes of the expected crop of every cell whose crop lies inside its image -> (slide, row in its table)."""
    index = {}
    for folder in slides:
        t = raw["truth"][folder]
        x = np.floor(t["table"]["X_centroid"].to_numpy()).astype(int) - CROP // 2
        y = np.floor(t["table"]["Y_centroid"].to_numpy()).astype(int) - CROP // 2
        for i, (left, top) in enumerate(zip(x, y, strict=True)):
            if left >= 0 and top >= 0 and left + CROP <= SIZE and top + CROP <= SIZE:
                index[t["pixels"][:, top : top + CROP, left : left + CROP].tobytes()] = (folder, i)
    return index


def identify(ds, index: dict) -> list[tuple[str, int]]:
    images = np.asarray(ds.images)
    found = [index.get(images[r].tobytes()) for r in range(ds.n)]
    assert None not in found, "a crop matches no cell's crop of the full image"
    return found


def block_asarray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every whole-page / whole-series read fail: the builder must read tiles only."""

    def refuse(*_a, **_k):
        raise AssertionError("whole-page read")

    for target in (tifffile.TiffFile, tifffile.TiffPage, tifffile.TiffFrame, tifffile.TiffPageSeries):
        monkeypatch.setattr(target, "asarray", refuse, raising=False)
    monkeypatch.setattr(tifffile, "imread", refuse)


# ---------------------------------------------------------------------------------------------------- end to end
def test_fetch_and_build_three_slides(raw: dict, server: Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    for name, path in raw["files"].items():
        server.routes[f"/{name}"] = Route(path.read_bytes())
    checksums = {n: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for n, p in raw["files"].items()}
    archives = sources.archives("orion_crc", slides=SLIDES, mirror=server.url("/"), checksums=checksums)
    assert sorted(a.name for a in archives) == sorted(raw["files"])
    paths = [fetch(a, tmp_path / "res", backoff=0.0, timeout=5) for a in archives]

    block_asarray(monkeypatch)
    manifest = build_data(spec(SLIDES, {"min_per_class": 20}), tmp_path / "out", paths)
    assert json.loads(manifest.read_text())["datasets"] == ["cell_types", "pretrain", "t_cells"]
    index = crop_index(raw, SLIDES)
    truth = raw["truth"]
    data = {n: load_dataset(tmp_path / "out" / n) for n in ("pretrain", "cell_types", "t_cells")}
    info = data["cell_types"].meta["info"]
    assert info["split_by"] == "slide" and sorted(info["slide_splits"].values()) == ["test", "train", "val"]

    seen = {}
    for name, ds in data.items():
        assert ds.channel_names == MULTIPLEX_CHANNELS and ds.images.dtype == np.uint16
        assert ds.images.shape[1:] == (19, CROP, CROP)
        cells = identify(ds, index)  # every crop is exactly the full-image crop of one cell
        seen[name] = set(cells)
        assert len(seen[name]) == ds.n  # no cell twice
        for (folder, i), label, split in zip(cells, np.asarray(ds.labels), np.asarray(ds.split), strict=True):
            t = truth[folder]
            if name == "pretrain":
                assert label == t["fine"][i]
            elif name == "cell_types":
                assert label == t["coarse"][i]
            else:
                assert label == t["fine"][i] - 5 >= 0
            if name != "pretrain":  # whole slides go to one split
                assert ds.split_names[split] == info["slide_splits"][folder]
    assert data["pretrain"].class_names == CELL_TYPES[:5] + T_SUBTYPES and data["pretrain"].split_names == ["train"]
    assert data["cell_types"].class_names == CELL_TYPES and data["t_cells"].class_names == T_SUBTYPES
    assert not seen["pretrain"] & (seen["cell_types"] | seen["t_cells"])  # pretrain is disjoint from evaluation

    # balanced in every split; per_class (default 2000) shrinks to what the scarcest (split, class) allows, which
    # min_per_class 20 accepts; meta.json records what was asked, accepted, available and written
    for name in ("cell_types", "t_cells"):
        ds = data[name]
        for split in ds.split_names:
            counts = ds.select(split).class_counts()
            assert len(set(counts.values())) == 1 and min(counts.values()) > 0, (name, split, counts)
            assert ds.meta["info"]["class_counts"][split] == counts
        assert np.all(np.diff(np.asarray(ds.split).astype(int)) >= 0)  # contiguous split blocks
        assert ds.meta["info"]["per_class_asked"] == 2000 and ds.meta["info"]["min_per_class"] == 20
    # scarcest cell type per slide: 20 endothelial/B/macrophage-ish -> 20 / 0.6 -> 33 per class (20/6/7)
    assert data["cell_types"].meta["info"]["per_class"] == 33
    assert [data["cell_types"].select(s).n for s in SPLITS_] == [120, 36, 42]
    available = data["cell_types"].meta["info"]["available"]
    assert available["train"]["B cell"] == 20 and available["test"]["T cell"] == 52
    # pretrain: every typed cell of the three slides not used for evaluation (natural distribution)
    typed = sum(int((t["fine"][N_EDGE:] >= 0).sum()) for t in truth.values())
    used = {(f, i) for f, i in seen["cell_types"] | seen["t_cells"] if truth[f]["fine"][i] >= 0}
    assert data["pretrain"].n == typed - len(used)

    # gating recovered the design on every slide; thresholds are recorded
    per_slide = info["gating"]["per_slide"]
    for folder in SLIDES:
        counts = per_slide[folder]["counts"]
        assert counts["tumour"] == 30 - N_EDGE and counts["endothelial"] == 20 and counts["macrophage"] == 22
        assert counts["CD4 helper T"] == 16 and counts["FOXP3 regulatory T"] == 12
        assert counts["T cell without subtype"] == 10 and counts["unassigned"] == 24
        assert per_slide[folder]["n_crop_outside_image"] == N_EDGE
        assert 60 * 2 < per_slide[folder]["thresholds"]["CD45"] < 3000 / 2
    assert info["gating"]["decision_tree"][1].startswith("Pan-CK+ and CD45+")

    # lazy: exactly the tiles under the chosen crops were decoded, once each (cache), never whole pages
    touched = {f: set() for f in SLIDES}
    for folder, i in set().union(*seen.values()):
        t = truth[folder]["table"]
        left = int(np.floor(t["X_centroid"][i])) - CROP // 2
        top = int(np.floor(t["Y_centroid"][i])) - CROP // 2
        for ty in range(top // TILE, (top + CROP - 1) // TILE + 1):
            for tx in range(left // TILE, (left + CROP - 1) // TILE + 1):
                touched[folder].add((ty, tx))
    reading = data["t_cells"].meta["info"]["reading"]
    for folder in SLIDES:
        assert reading[folder]["tiles_decoded"] == 19 * len(touched[folder])
        assert reading[folder]["tiles_total"] == 19 * (SIZE // TILE) ** 2


def test_evaluation_sets_below_per_class_fail_with_counts_per_split(raw: dict, tmp_path: Path) -> None:
    """Three slides, one per split: the scarcest class of one slide caps every class far below per_class. The build
    fails and names the per-class counts per split, unless min_per_class accepts the shortfall."""
    files = subset(raw, SLIDES)
    with pytest.raises(BuildError) as info:
        build_data(spec(SLIDES), tmp_path / "a", files)
    text = str(info.value)
    assert "cell_types: only 33 cells per class" in text and "not per_class 2000" in text
    assert "'train': {'tumour': 26, 'stromal': 22, 'endothelial': 20" in text and "'val': {" in text
    assert "'test': {" in text and "min_per_class" in text
    assert not list((tmp_path / "a").glob("*/meta.json")) and not list((tmp_path / "a").glob("*.tmp-*"))
    with pytest.raises(BuildError, match=r"t_cells: only \d+ cells per class .*min_per_class 30 is not met"):
        build_data(spec(SLIDES, {"per_class": 40, "min_per_class": 30}), tmp_path / "b", files)
    with pytest.raises(ValueError, match=r"min_per_class \(50\) exceeds per_class \(40\)"):
        build_data(spec(SLIDES, {"per_class": 40, "min_per_class": 50}), tmp_path / "c", files)
    build_data(spec(SLIDES, {"per_class": 0, "n_pretrain": 5}), tmp_path / "d", files)  # 0: as many as possible
    t_cells = load_dataset(tmp_path / "d" / "t_cells").meta["info"]
    assert t_cells["per_class"] == t_cells["per_class_asked"] == 0 or t_cells["per_class"] > 0
    assert sum(t_cells["class_counts"]["test"].values()) > 0


def test_summary_shows_the_per_class_counts_and_the_shortfall(raw: dict, tmp_path: Path) -> None:
    """The pipeline's summary lists every evaluation set's cells per class and split, and says when per_class was
    not met and min_per_class accepted fewer."""
    from splicer.pipeline.tables import summarise

    build_data(spec(SLIDES, {"min_per_class": 20, "n_pretrain": 10}), tmp_path / "out", subset(raw, SLIDES))
    probes = tmp_path / "probes.csv"
    probes.write_text("experiment,dataset,method,loss,pairing,seed,task,variant,metric,value,head\n")
    datasets = {"orion/cell_types": tmp_path / "out" / "cell_types", "orion/t_cells": tmp_path / "out" / "t_cells"}
    text = summarise([probes], [], demo=False, datasets=datasets)
    info = load_dataset(tmp_path / "out" / "t_cells").meta["info"]
    assert "- orion/cell_types -- **33 per class, not the 2000 asked** (accepted by min_per_class 20)" in text
    assert "| split | tumour | stromal | endothelial | macrophage | B cell | T cell |" in text
    assert "| train | 20 | 20 | 20 | 20 | 20 | 20 |" in text and "| val | 6 | 6 | 6 | 6 | 6 | 6 |" in text
    row = info["class_counts"]["test"]
    assert f"| test | {row['CD4 helper T']} | {row['CD8 cytotoxic T']} | {row['FOXP3 regulatory T']} |" in text


def s3_sync_layout(raw: dict, root: Path, slides: list[str]) -> None:
    """The release as ``aws s3 sync s3://lin-2023-orion-crc/data <root>`` leaves it: CRCxx/ folders, each with
    its image, cell table and an identical markers.csv."""
    for folder in slides:
        (root / folder).mkdir(parents=True)
        for name in (*names_of(folder).values(), "markers.csv"):
            (root / folder / name).symlink_to(raw["files"][name])


def test_aws_s3_sync_layout_is_read_in_place(raw: dict, tmp_path: Path, monkeypatch) -> None:
    """params.path reads CRCxx/ folders as synced, nothing copied or flattened: the same datasets as the flat
    downloads; a markers.csv that differs between folders fails naming it."""
    s3 = tmp_path / "bucket" / "data"
    s3_sync_layout(raw, s3, SLIDES)
    params = {"per_class": 6, "n_pretrain": 30}
    build_data(spec(SLIDES, params), tmp_path / "flat", subset(raw, SLIDES))
    block_asarray(monkeypatch)
    in_place = {"kind": "orion_crc", "params": {**params, "path": str(s3)}, "seed": 0}
    manifest = build_data(in_place, tmp_path / "synced", [])
    assert json.loads(manifest.read_text())["archives"] == []
    for name in ("pretrain", "cell_types", "t_cells"):
        a, b = load_dataset(tmp_path / "flat" / name), load_dataset(tmp_path / "synced" / name)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.split, b.split)
    assert load_dataset(tmp_path / "synced" / "t_cells").meta["info"]["read_in_place"] == str(s3)
    # the bucket root (holding data/) and a subset of the slides
    two = {"kind": "orion_crc", "params": {**params, "path": str(s3.parent), "slides": ["crc01", "CRC02"]}}
    build_data(two, tmp_path / "two", [])
    assert load_dataset(tmp_path / "two" / "cell_types").meta["info"]["slides"] == ["CRC01", "CRC02"]
    assert not sources.archives("orion_crc")  # no source.slides: nothing to download
    # a damaged copy of markers.csv in one folder
    broken = s3 / "CRC02" / "markers.csv"
    broken.unlink()
    broken.write_text("\n".join(MULTIPLEX_CHANNELS[::-1]) + "\n")
    with pytest.raises(BuildError, match="differs from") as info:
        build_data(in_place, tmp_path / "bad", [])
    assert Path(info.value.file) == broken
    # the same files handed to the build one by one from their folders: each folder's copy is compared too
    handed = [s3 / "CRC01" / "markers.csv"] + [s3 / f / n for f in SLIDES for n in names_of(f).values()]
    with pytest.raises(BuildError, match="differs from") as info:
        build_data(spec(SLIDES, params), tmp_path / "bad2", handed)
    assert Path(info.value.file) == broken
    for params_, says in (
        ({"path": str(s3), "slides": ["CRC07"]}, "no slide folder"),
        ({"path": str(tmp_path / "nowhere")}, "not found"),
        ({"slides": ["CRC01"]}, "params.slides goes with params.path"),
    ):
        with pytest.raises(ValueError, match=says):
            build_data({"kind": "orion_crc", "params": params_}, tmp_path / "x", [])
    with pytest.raises(BuildError, match=r"source\.slides, or read"):
        build_data({"kind": "orion_crc"}, tmp_path / "y", [])


def test_caps_per_class_and_cell_split_keep_balance_and_read_little(raw: dict, tmp_path: Path, monkeypatch) -> None:
    block_asarray(monkeypatch)
    caps = {"cell_types/train": 13, "t_cells": 4, "pretrain": 9}
    build_data(spec(["CRC02"], {"per_class": 10}, caps), tmp_path / "out", subset(raw, ["CRC02"]))
    ct, tc, pre = (load_dataset(tmp_path / "out" / n) for n in ("cell_types", "t_cells", "pretrain"))
    assert ct.meta["info"]["split_by"] == "cell" and ct.meta["info"]["slide_splits"] is None
    assert [ct.select(s).n for s in SPLITS_] == [13, 12, 12]  # 10 per class -> 6/2/2; train capped to 13
    assert sorted(ct.select("train").class_counts().values()) == [2, 2, 2, 2, 2, 3]
    assert [tc.select(s).n for s in SPLITS_] == [4, 4, 4] and pre.n == 9
    assert sorted(tc.select("val").class_counts().values()) == [1, 1, 2]
    index = crop_index(raw, ["CRC02"])
    table, touched = raw["truth"]["CRC02"]["table"], set()
    for ds in (ct, tc, pre):
        for _, i in identify(ds, index):
            left = int(np.floor(table["X_centroid"][i])) - CROP // 2
            top = int(np.floor(table["Y_centroid"][i])) - CROP // 2
            touched |= {
                (ty, tx)
                for ty in range(top // TILE, (top + CROP - 1) // TILE + 1)
                for tx in range(left // TILE, (left + CROP - 1) // TILE + 1)
            }
    assert ct.meta["info"]["reading"]["CRC02"]["tiles_decoded"] == 19 * len(touched)


def test_same_seed_same_bytes_and_explicit_gates(raw: dict, tmp_path: Path) -> None:
    files = subset(raw, ["CRC01"])
    params = {"per_class": 6, "n_pretrain": 10, "gates": {"CD45": 500.0, "FOXP3": "quantile:0.5"}}
    for run in ("a", "b"):
        build_data(spec(["CRC01"], params), tmp_path / run, files)
    for name in ("pretrain", "cell_types", "t_cells"):
        a, b = load_dataset(tmp_path / "a" / name), load_dataset(tmp_path / "b" / name)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    info = load_dataset(tmp_path / "a" / "t_cells").meta["info"]["gating"]
    thresholds = info["per_slide"]["CRC01"]["thresholds"]
    foxp3 = raw["truth"]["CRC01"]["table"]["FOXP3"].to_numpy()
    assert thresholds["CD45"] == 500.0 and thresholds["FOXP3"] == pytest.approx(np.quantile(foxp3, 0.5))
    # half of all cells are now FOXP3+: helpers (CD4+ FOXP3-) mostly become Tregs or lose their subtype
    counts = info["per_slide"]["CRC01"]["counts"]
    assert counts["CD4 helper T"] < 16


def test_pad_keeps_edge_cells_zero_filled(raw: dict, tmp_path: Path) -> None:
    build_data(
        spec(["CRC01"], {"edge": "pad", "n_pretrain": 0, "per_class": 3}), tmp_path / "out", subset(raw, ["CRC01"])
    )
    t = raw["truth"]["CRC01"]
    edge = set()
    for i in range(N_EDGE):  # crops reaching left of column 0: zeros there, pixels elsewhere
        left = int(np.floor(t["table"]["X_centroid"][i])) - CROP // 2
        top = int(np.floor(t["table"]["Y_centroid"][i])) - CROP // 2
        assert left < 0
        crop = np.zeros((19, CROP, CROP), np.uint16)
        crop[:, :, -left:] = t["pixels"][:, top : top + CROP, : CROP + left]
        edge.add(crop.tobytes())
    interior = crop_index(raw, ["CRC01"])
    got = set()
    for name in ("pretrain", "cell_types"):  # every typed cell is in one of them (n_pretrain=0: all the rest)
        images = np.asarray(load_dataset(tmp_path / "out" / name).images)
        crops = {images[r].tobytes() for r in range(len(images))}
        assert all(c in interior or c in edge for c in crops)
        got |= crops
    assert edge <= got
    info = load_dataset(tmp_path / "out" / "pretrain").meta["info"]["gating"]["per_slide"]["CRC01"]
    assert info["counts"]["tumour"] == 30 and info["n_crop_outside_image"] == N_EDGE


def test_strips_and_reordered_mcmicro_markers(raw: dict, tmp_path: Path) -> None:
    """An uncompressed, stripped (untiled) image whose channels follow a markers.csv in another order, with the
    MCMICRO header (channel_number, cycle_number, marker_name): crops come back in MULTIPLEX_CHANNELS order."""
    order = MULTIPLEX_CHANNELS[::-1]
    files = {p.name: p for p in subset(raw, ["CRC01"])}
    names = names_of("CRC01")
    pixels = raw["truth"]["CRC01"]["pixels"]
    write_image(tmp_path / names["image"], pixels[::-1].copy(), order, tiled=False)
    pd.DataFrame({"channel_number": range(1, 20), "cycle_number": 1, "marker_name": order}).to_csv(
        tmp_path / "markers.csv", index=False
    )
    files[names["image"]], files["markers.csv"] = tmp_path / names["image"], tmp_path / "markers.csv"
    build_data(spec(["CRC01"], {"per_class": 3, "n_pretrain": 20}), tmp_path / "out", list(files.values()))
    pre = load_dataset(tmp_path / "out" / "pretrain")
    identify(pre, crop_index(raw, ["CRC01"]))


# ---------------------------------------------------------------------------------------------------- gating
def test_gate_cells_decision_tree() -> None:
    cases = [  # positive markers -> (coarse, subtype)
        ((), (-1, -1)),
        (("Pan-CK",), (0, -1)),
        (("Pan-CK", "CD45"), (-1, -1)),
        (("Pan-CK", "SMA"), (0, -1)),
        (("SMA",), (1, -1)),
        (("CD31", "SMA"), (2, -1)),
        (("CD31",), (2, -1)),
        (("CD45", "CD163"), (3, -1)),
        (("CD45", "CD68", "CD163"), (3, -1)),
        (("CD68",), (-1, -1)),
        (("CD45", "CD20"), (4, -1)),
        (("CD45",), (-1, -1)),
        (("CD45", "CD20", "CD68"), (-1, -1)),
        (("CD45", "CD3e"), (5, -1)),
        (("CD45", "CD3e", "CD4"), (5, 0)),
        (("CD45", "CD3e", "CD8a"), (5, 1)),
        (("CD45", "CD3e", "CD4", "FOXP3"), (5, 2)),
        (("CD45", "CD3e", "CD8a", "FOXP3"), (5, -1)),
        (("CD45", "CD3e", "CD4", "CD8a"), (5, -1)),
        (("CD3e", "CD4"), (-1, -1)),
        (("CD45", "CD3e", "SMA"), (5, -1)),
        (("CD45", "CD31"), (-1, -1)),
    ]
    table = pd.DataFrame([{m: (10.0 if m in pos else 1.0) for m in MULTIPLEX_CHANNELS} for pos, _ in cases])
    coarse, sub = gate_cells(table, dict.fromkeys(MULTIPLEX_CHANNELS, 5.0))
    assert list(zip(coarse.tolist(), sub.tolist(), strict=True)) == [want for _, want in cases]


def test_otsu_splits_a_bimodal_log_intensity() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.lognormal(np.log(50), 0.3, 950), rng.lognormal(np.log(5000), 0.3, 50)])
    t = _otsu(x)
    assert 100 < t < 2000 and 50 <= (x >= t).sum() <= 52
    assert _otsu(np.full(10, 3.0)) == np.inf


# ---------------------------------------------------------------------------------------------------- faults
def test_corrupt_download_is_rejected(raw: dict, server: Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    name = names_of("CRC01")["cells"]
    data = raw["files"][name].read_bytes()
    server.routes[f"/{name}"] = Route(data, corrupt=True)
    archive = next(
        a
        for a in sources.archives(
            "orion_crc",
            slides=["CRC01"],
            mirror=server.url("/"),
            checksums={name: "sha256:" + hashlib.sha256(data).hexdigest()},
        )
        if a.name == name
    )
    with pytest.raises(ChecksumError):
        fetch(archive, tmp_path, backoff=0.0, timeout=5)
    assert not (tmp_path / name).exists()


def _broken(raw: dict, tmp_path: Path, what: str) -> tuple[list[Path], str]:
    """CRC01's files with one defect; returns the files and the name of the file at fault."""
    files = {p.name: p for p in subset(raw, ["CRC01"])}
    names = names_of("CRC01")
    table = raw["truth"]["CRC01"]["table"]
    if what in ("18 channels", "garbage tiff"):
        bad = tmp_path / names["image"]
        if what == "18 channels":
            write_image(bad, raw["truth"]["CRC01"]["pixels"][:18].copy(), MULTIPLEX_CHANNELS[:18])
        else:
            bad.write_bytes(b"II*\x00" + b"\x07" * 300)
    elif what == "marker name":
        bad = tmp_path / "markers.csv"
        bad.write_text("\n".join([*MULTIPLEX_CHANNELS[:-1], "aSMA"]) + "\n")
    elif what == "20 markers":
        bad = tmp_path / "markers.csv"
        bad.write_text("\n".join([*MULTIPLEX_CHANNELS, "DAPI"]) + "\n")
    else:
        bad = tmp_path / names["cells"]
        broken = {
            "no CD3e": table.drop(columns=["CD3e"]),
            "no Y_centroid": table.drop(columns=["Y_centroid"]),
            "outside": table.assign(X_centroid=table["X_centroid"] + SIZE),
            "text": table.astype({"CD45": object}).assign(CD45="high"),
        }[what]
        broken.to_csv(bad, index=False)
    files[bad.name] = bad
    return list(files.values()), bad.name


@pytest.mark.parametrize(
    "what, says",
    [
        ("18 channels", "has 18 channels"),
        ("garbage tiff", "cannot be read as a TIFF"),
        ("marker name", "unexpected ['aSMA']"),
        ("20 markers", "got 20 names"),
        ("no CD3e", "['CD3e']"),
        ("no Y_centroid", "['Y_centroid']"),
        ("outside", "outside the 512x512 image"),
        ("text", "non-numeric"),
    ],
)
def test_bad_inputs_raise_build_error_naming_the_file(raw: dict, tmp_path: Path, what: str, says: str) -> None:
    files, culprit = _broken(raw, tmp_path, what)
    with pytest.raises(BuildError) as info:
        build_data(spec(["CRC01"]), tmp_path / "out", files)
    assert Path(info.value.file).name == culprit and says in str(info.value)
    assert not (tmp_path / "out" / "pretrain").exists()


def test_missing_pair_member_and_bad_params(raw: dict, tmp_path: Path) -> None:
    files = [p for p in subset(raw, ["CRC01"]) if not p.name.endswith(".csv") or p.name == "markers.csv"]
    with pytest.raises(BuildError, match=names_of("CRC01")["cells"]):
        build_data(spec(["CRC01"]), tmp_path / "a", files)
    for params, says in (
        ({"gates": {"CD99": 3.0}}, "CD99"),
        ({"gates": {"CD45": "median"}}, "CD45"),
        ({"edge": "wrap"}, "edge"),
        ({"split_by": "slide"}, "split_by='slide'"),
        ({"crop": 32}, "unknown params"),
    ):
        with pytest.raises(ValueError, match=says):
            build_data(spec(["CRC01"], params), tmp_path / "b", subset(raw, ["CRC01"]))


def test_truncated_tile_data_names_the_image(raw: dict, tmp_path: Path) -> None:
    name = names_of("CRC01")["image"]
    data = bytearray(raw["files"][name].read_bytes())
    with tifffile.TiffFile(raw["files"][name]) as tif:
        page = tif.series[0].pages[0]
        start = page.dataoffsets[5]
        data[start : start + page.databytecounts[5]] = b"\x00" * page.databytecounts[5]  # zlib cannot decode this
    files = {p.name: p for p in subset(raw, ["CRC01"])}
    (tmp_path / name).write_bytes(bytes(data))
    files[name] = tmp_path / name
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    with pytest.raises(BuildError, match="cannot decode tile 5") as info:
        build_data(spec(["CRC01"], {"n_pretrain": 0, "per_class": 0}), tmp_path / "out", list(files.values()))
    assert Path(info.value.file).name == name
    assert not list((tmp_path / "out").glob("*/meta.json")) and not list((tmp_path / "out").glob("*.tmp-*"))


def test_layout_declares_the_channels_and_needs_slides_or_a_folder() -> None:
    """What the config checks can know before any build (the registry's Kind.layout hook, issue 13)."""
    from splicer.data.real.orion import layout

    declared = layout({"kind": "orion_crc", "source": {"slides": ["CRC01"]}, "params": {"crop_size": 48}})
    assert set(declared) == {"pretrain", "cell_types", "t_cells"}
    assert declared["t_cells"].channels == tuple(MULTIPLEX_CHANNELS) and declared["t_cells"].size == (48, 48)
    assert layout({"kind": "orion_crc", "params": {"path": "/data/orion"}})["pretrain"].masks == ()
    with pytest.raises(ValueError, match=r"source\.slides.*params\.path"):
        layout({"kind": "orion_crc"})
