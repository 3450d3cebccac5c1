"""Real Sentinel-2 builders (splicer.data.real.sentinel2) on tiny fixtures in the exact upstream layouts, served
over loopback HTTP, fetched with checksums and built with build_data: EuroSAT (13-band GeoTIFFs in
EuroSATallBands.zip + the eurosat-{train,val,test}.txt lists) and MMEarth100k (data_100k_v001.h5 + its JSONs)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from loopback import Route, Server, serve_files
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from splicer.data import download, sources
from splicer.data.build import build_data
from splicer.data.download import ChecksumError, fetch
from splicer.data.format import load_dataset
from splicer.data.real.common import BuildError
from splicer.data.real.sentinel2 import EUROSAT_BANDS, EUROSAT_CLASSES, MMEARTH_BANDS
from splicer.data.vocab import HYPERSPECTRAL_BANDS

pytestmark = pytest.mark.timeout(60)

BASE = "ds/images/remote_sensing/otherDatasets/sentinel_2/tif"  # torchgeo EuroSAT.base_dir
CLASSES = ["AnnualCrop", "Forest", "SeaLake"]
PX = 8
LISTS = {  # upstream lists name the RGB JPEGs; order deliberately not sorted
    "train": [
        "Forest_2",
        "AnnualCrop_1",
        "SeaLake_3",
        "AnnualCrop_2",
        "Forest_1",
        "SeaLake_1",
        "AnnualCrop_3",
        "Forest_3",
        "SeaLake_2",
    ],
    "val": ["SeaLake_4", "AnnualCrop_4", "Forest_4"],
    "test": ["Forest_5", "AnnualCrop_5", "SeaLake_5"],
}
HOT = ("SeaLake_5", 1)  # this image has one pixel of stored band 1 (B02) above reflectance 1


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)


# --------------------------------------------------------------------------------------------------- fixtures
def stem_id(stem: str) -> int:
    cls, k = stem.rsplit("_", 1)
    return EUROSAT_CLASSES.index(cls) * 10 + int(k)


def stored_value(stem: str, band: int) -> int:
    """DN of stored band ``band`` (0-based, EuroSAT order with B8A last) everywhere in image ``stem``."""
    return (band + 1) * 500 + stem_id(stem)


def geotiff(stem: str, count: int = 13, order: list[str] | None = None, describe: bool = False) -> bytes:
    """A GeoTIFF of image ``stem``: bands in EuroSAT's upstream order (B8A last), or in ``order`` (band names; each
    band holds the same values as in the upstream file), with band descriptions if ``describe``."""
    names = order or EUROSAT_BANDS[:count]
    arr = np.stack([np.full((PX, PX), stored_value(stem, EUROSAT_BANDS.index(n)), np.uint16) for n in names])
    if stem == HOT[0]:
        arr[HOT[1], 0, 0] = 12000
    profile = {
        "driver": "GTiff",
        "dtype": "uint16",
        "count": count,
        "height": PX,
        "width": PX,
        "crs": "EPSG:32635",
        "transform": Affine(10.0, 0.0, 624602.2, 0.0, -10.0, 4877286.0),
        "compress": "lzw",
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr)
            if describe:
                for i, name in enumerate(names, 1):
                    dst.set_band_description(i, name)
        return mem.read()


def eurosat_tifs(replace: dict[str, bytes] | None = None, extra: tuple[str, ...] = ("Forest_6",), **tif) -> dict:
    """``{member path: GeoTIFF bytes}`` of the fixture, in torchgeo's ``ds/.../tif/<Class>/<Class>_<k>.tif`` layout."""
    replace = replace or {}
    out = {}
    for cls in CLASSES:
        stems = [f"{cls}_{k}" for k in range(1, 6)] + [s for s in extra if s.startswith(cls + "_")]
        for stem in stems:
            out[f"{BASE}/{cls}/{stem}.tif"] = replace.get(stem) or geotiff(stem, **tif)
    return out


def eurosat_zip(path: Path, **kw) -> Path:
    """EuroSATallBands.zip: class folders (with directory entries) holding ``<Class>_<k>.tif``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in ("ds/", "ds/images/", f"{BASE}/"):
            zf.writestr(part, b"")
        for cls in CLASSES:
            zf.writestr(f"{BASE}/{cls}/", b"")
        for member, data in eurosat_tifs(**kw).items():
            zf.writestr(member, data)
    return path


@pytest.fixture
def as_upstream(monkeypatch: pytest.MonkeyPatch):
    """Pin a fixture zip as *the* upstream EuroSATallBands.zip (its sha256 in splicer.data.sources.EUROSAT), the
    archive whose band order (B8A last) is known."""

    def pin(zip_path: Path) -> None:
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        pinned = [
            dataclasses.replace(a, sha256=digest) if a.name == "EuroSATallBands.zip" else a for a in sources.EUROSAT
        ]
        monkeypatch.setattr(sources, "EUROSAT", pinned)

    return pin


def eurosat_lists(root: Path) -> dict[str, Path]:
    files = {}
    for split, stems in LISTS.items():
        path = root / f"eurosat-{split}.txt"
        path.write_text("".join(f"{s}.jpg\n" for s in stems))
        files[path.name] = path
    return files


def eurosat_files(root: Path, **kw) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {"EuroSATallBands.zip": eurosat_zip(root / "EuroSATallBands.zip", **kw)}
    for split, stems in LISTS.items():
        path = root / f"eurosat-{split}.txt"
        path.write_text("".join(f"{s}.jpg\n" for s in stems))
        files[path.name] = path
    return files


N_TILES, TILE = 12, 16
MM_SPLITS = {"train": [7, 2, 9, 0, 5, 11, 3, 6], "val": [1, 8], "test": [4, 10]}


def s2_type(t: int) -> str:
    return "l2a" if t % 3 == 0 else "l1c"


def tile_values(t: int) -> np.ndarray:
    """(13, 16, 16) stored DNs of tile t, MMEarth band order: (band+1)*600 + 20*t + quadrant (0..3)."""
    yy, xx = np.mgrid[:TILE, :TILE]
    quadrant = (yy // (TILE // 2)) * 2 + xx // (TILE // 2)
    arr = np.stack([(b + 1) * 600 + 20 * t + quadrant for b in range(13)]).astype(np.uint16)
    if s2_type(t) == "l2a":
        arr[MMEARTH_BANDS.index("B10")] = 0  # L2A has no B10: MMEarth's zero placeholder
    return arr


def mmearth_files(root: Path, bands: int = 13, drop: str | None = None, meta_fields: int = 2) -> dict[str, Path]:
    """data_100k_v001{.h5, _splits.json, _band_stats.json, _tile_info.json} as MMEarth-data writes them."""
    root.mkdir(parents=True, exist_ok=True)
    h5 = root / "data_100k_v001.h5"
    ids = [f"{1000 + t}_tile" for t in range(N_TILES)]
    with h5py.File(h5, "w") as f:
        if drop != "sentinel2":
            data = np.stack([tile_values(t)[:bands] for t in range(N_TILES)])
            f.create_dataset("sentinel2", data=data, dtype="uint16", compression="gzip", chunks=(1, bands, TILE, TILE))
        f.create_dataset("sentinel2_cloudmask", data=np.zeros((N_TILES, 1, TILE, TILE), np.uint16))
        f.create_dataset("lat", data=np.zeros((N_TILES, 2), np.float32), chunks=(1, 2))
        if meta_fields == 2:
            dt = np.dtype([("tile_id", "S100"), ("S2_type", "S10")])
            meta = np.array([(i.encode(), s2_type(t).encode()) for t, i in enumerate(ids)], dt)
        else:
            meta = np.array([(i.encode(),) for i in ids], np.dtype([("tile_id", "S100")]))
        f.create_dataset("metadata", data=meta, compression="gzip", chunks=(1,))
    files = {h5.name: h5}
    stats = {
        key: {s: [float(b) for b in range(13)] for s in ("mean", "std", "min", "max")}
        for key in ("sentinel2", "sentinel2_l1c", "sentinel2_l2a")
    }
    stats["aster"] = {s: [0.0, 1.0] for s in ("mean", "std", "min", "max")}
    l2a = [*MMEARTH_BANDS[:10], "B11", "B12", "SCL", "MSK_CLDPRB", "QA60"]  # L2A: B1 ... B9 (no B10), B11, B12
    info = {
        i: {
            "S2_DATE": "2018-07-16",
            "S2_type": s2_type(t),
            "CRS": "EPSG:32721",
            "lat": -14.5,
            "lon": -56.9,
            "BANDS": {"sentinel2": l2a if s2_type(t) == "l2a" else [*MMEARTH_BANDS, "QA60"]},
        }
        for t, i in enumerate(ids)
    }
    for suffix, obj in (("splits", MM_SPLITS), ("band_stats", stats), ("tile_info", info)):
        path = root / f"data_100k_v001_{suffix}.json"
        path.write_text(json.dumps(obj))
        files[path.name] = path
    return files


def fetch_kind(server: Server, kind: str, files: dict[str, Path], dest: Path) -> list[Path]:
    serve_files(server, files)
    digests = {name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
    return [
        fetch(a, dest, backoff=0.0, timeout=5)
        for a in sources.archives(kind, mirror=server.url("/"), checksums=digests)
    ]


def built(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def expected_u16(dn: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(np.asarray(dn, float) / 10000.0, 0, 1) * 65535).astype(np.uint16)


# ---------------------------------------------------------------------------------------------------- EuroSAT
def test_eurosat_downloaded_and_built_with_b8a_moved_and_fixed_splits(
    server: Server, tmp_path: Path, as_upstream
) -> None:
    files = eurosat_files(tmp_path / "raw")
    as_upstream(files["EuroSATallBands.zip"])
    paths = fetch_kind(server, "eurosat", files, tmp_path / "resources")
    out = tmp_path / "data"
    build_data({"kind": "eurosat", "seed": 0}, out, paths)
    assert json.loads((out / "manifest.json").read_text())["datasets"] == ["bands13", "rgb"]
    b13, rgb = load_dataset(out / "bands13"), load_dataset(out / "rgb")
    assert b13.images.shape == (15, 13, PX, PX) and b13.images.dtype == np.uint16
    assert rgb.images.shape == (15, 3, PX, PX) and rgb.images.dtype == np.uint16
    assert b13.channel_names == HYPERSPECTRAL_BANDS and rgb.channel_names == ["B04", "B03", "B02"]
    assert b13.class_names == rgb.class_names == EUROSAT_CLASSES
    assert b13.split_names == ["train", "val", "test"]
    order = LISTS["train"] + LISTS["val"] + LISTS["test"]  # contiguous splits, each in its list's order
    np.testing.assert_array_equal(b13.split, np.repeat([0, 1, 2], [9, 3, 3]))
    np.testing.assert_array_equal(b13.labels, [EUROSAT_CLASSES.index(s.split("_")[0]) for s in order])
    np.testing.assert_array_equal(rgb.labels, b13.labels)
    images = np.asarray(b13.images)
    for row, stem in enumerate(order):
        for i, band in enumerate(HYPERSPECTRAL_BANDS):
            stored = EUROSAT_BANDS.index("B8A" if band == "B08A" else band)
            want = expected_u16(stored_value(stem, stored))
            values = images[row, i].ravel()[1:] if (stem, stored) == HOT else images[row, i]
            assert (values == want).all(), (stem, band)
    row = order.index("Forest_2")
    assert images[row, HYPERSPECTRAL_BANDS.index("B08A"), 0, 0] == expected_u16(stored_value("Forest_2", 12))
    assert images[row, HYPERSPECTRAL_BANDS.index("B09"), 0, 0] == expected_u16(stored_value("Forest_2", 8))
    np.testing.assert_array_equal(np.asarray(rgb.images), images[:, [3, 2, 1]])  # R, G, B = B04, B03, B02
    hot = order.index(HOT[0])
    assert images[hot, 1, 0, 0] == 65535  # DN 12000 > reflectance 1: clipped
    info = b13.meta["info"]
    assert info["stored_band_order"][-1] == "B08A" and info["band_order"] == HYPERSPECTRAL_BANDS
    assert info["band_order_from"] == {"checksum-pinned upstream EuroSATallBands.zip (B8A last)": 15}
    assert info["unlisted_files"] == 1 and info["units"] == "reflectance * 65535"
    assert info["counts"] == {"train": 9, "val": 3, "test": 3}
    assert info["clipped_fraction"]["B02"] == pytest.approx(1 / (15 * PX * PX))
    assert info["clipped_fraction"]["B03"] == 0.0
    assert rgb.meta["info"]["channel_order"] == "R,G,B" and set(rgb.meta["info"]["clipped_fraction"]) == set(
        ["B04", "B03", "B02"]
    )


def test_eurosat_caps_are_nested_and_honoured(tmp_path: Path, as_upstream) -> None:
    files = eurosat_files(tmp_path / "raw")
    as_upstream(files["EuroSATallBands.zip"])
    out = tmp_path / "data"
    spec = {
        "kind": "eurosat",
        "caps": {"*": 2, "rgb/train": 1, "bands13/test": 3},
        "seed": 4,
        "params": {"dn_scale": 20000},
    }
    build_data(spec, out, list(files.values()))
    b13, rgb = load_dataset(out / "bands13"), load_dataset(out / "rgb")
    assert [b13.select(s).n for s in ("train", "val", "test")] == [2, 2, 3]
    assert [rgb.select(s).n for s in ("train", "val", "test")] == [1, 2, 2]
    b13_rgb = {np.asarray(b13.images[r, [3, 2, 1]]).tobytes() for r in range(b13.n)}
    assert all(np.asarray(rgb.images[r]).tobytes() in b13_rgb for r in range(rgb.n))  # rgb rows are bands13 rows
    assert b13.meta["info"]["dn_scale"] == 20000
    for row in range(b13.n):  # DN / 20000 * 65535, B01 of one of the listed images of the row's class
        label = EUROSAT_CLASSES[int(b13.labels[row])]
        stems = [st for st in LISTS[b13.split_names[int(b13.split[row])]] if st.startswith(label + "_")]
        assert int(b13.images[row, 0, 1, 1]) in {int(np.rint(stored_value(st, 0) / 20000 * 65535)) for st in stems}


@pytest.mark.parametrize(
    ("fault", "where"),
    [
        ("bands", f"EuroSATallBands.zip:{BASE}/Forest/Forest_1.tif"),
        ("garbage", f"EuroSATallBands.zip:{BASE}/SeaLake/SeaLake_4.tif"),
        ("missing", "eurosat-test.txt"),
        ("twice", "eurosat-val.txt"),
    ],
)
def test_eurosat_bad_inputs_name_the_file_and_build_nothing(
    tmp_path: Path, fault: str, where: str, as_upstream
) -> None:
    replace = {
        "bands": {"Forest_1": geotiff("Forest_1", count=12)},
        "garbage": {"SeaLake_4": b"II*\x00 this is not a tiff" * 10},
    }.get(fault)
    files = eurosat_files(tmp_path / "raw", replace=replace)
    if fault == "missing":
        files["eurosat-test.txt"].write_text("Forest_5.jpg\nRiver_9.jpg\n")
    if fault == "twice":
        files["eurosat-val.txt"].write_text("SeaLake_4.jpg\nAnnualCrop_1.jpg\n")
    as_upstream(files["EuroSATallBands.zip"])
    out = tmp_path / "data"
    with pytest.raises(BuildError) as info:
        build_data({"kind": "eurosat"}, out, list(files.values()))
    assert where in str(info.value)
    assert {"bands": "12 bands", "garbage": "not a readable GeoTIFF", "missing": "river_9", "twice": "annualcrop_1"}[
        fault
    ] in str(info.value)
    assert built(out) == []  # no dataset, no temp directory, no manifest


def test_corrupted_archive_is_rejected_by_fetch_and_nothing_is_built(server: Server, tmp_path: Path) -> None:
    files = eurosat_files(tmp_path / "raw")
    serve_files(server, files)
    server.routes["/EuroSATallBands.zip"] = Route(files["EuroSATallBands.zip"].read_bytes(), corrupt=True)
    digests = {n: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for n, p in files.items()}
    (archive,) = [
        a
        for a in sources.archives("eurosat", mirror=server.url("/"), checksums=digests)
        if a.name == "EuroSATallBands.zip"
    ]
    with pytest.raises(ChecksumError):
        fetch(archive, tmp_path / "resources", backoff=0.0, timeout=5)
    assert built(tmp_path / "resources") == []
    mm = mmearth_files(tmp_path / "mm")
    serve_files(server, mm)
    server.routes["/data_100k_v001.h5"].corrupt = True
    digests = {n: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for n, p in mm.items()}
    (archive,) = [
        a
        for a in sources.archives("mmearth", mirror=server.url("/"), checksums=digests)
        if a.name == "data_100k_v001.h5"
    ]
    with pytest.raises(ChecksumError):
        fetch(archive, tmp_path / "resources", backoff=0.0, timeout=5)
    assert built(tmp_path / "resources") == []


def test_eurosat_rejects_bad_params(tmp_path: Path) -> None:
    files = list(eurosat_files(tmp_path / "raw").values())
    with pytest.raises(ValueError, match="unknown params"):
        build_data({"kind": "eurosat", "params": {"size": 64}}, tmp_path / "a", files)
    with pytest.raises(ValueError, match="dn_scale"):
        build_data({"kind": "eurosat", "params": {"dn_scale": 0}}, tmp_path / "b", files)
    with pytest.raises(BuildError, match=r"eurosat-val\.txt"):
        build_data({"kind": "eurosat"}, tmp_path / "c", [p for p in files if p.name != "eurosat-val.txt"])


def b8a_slot(folder: Path, stem: str) -> int:
    """The value built into the B08A channel of image ``stem`` (rows follow the split lists)."""
    order = LISTS["train"] + LISTS["val"] + LISTS["test"]
    return int(load_dataset(folder / "bands13").images[order.index(stem), HYPERSPECTRAL_BANDS.index("B08A"), 0, 0])


REORDERED = [b for b in EUROSAT_BANDS if b != "B8A"]
REORDERED.insert(REORDERED.index("B08") + 1, "B8A")  # B01..B08, B8A, B09..B12: already in the pipeline's order


def test_eurosat_repackaged_in_pipeline_order_is_refused_not_scrambled(tmp_path: Path) -> None:
    """A repackaged zip (admitted by source.checksums, so not the pinned upstream archive) already in B01..B08,B8A
    order and without band descriptions: the builder cannot know its order and refuses it, naming the file --
    instead of moving its B12 into the B8A slot."""
    files = eurosat_files(tmp_path / "raw", order=REORDERED)
    with pytest.raises(BuildError) as info:
        build_data({"kind": "eurosat"}, tmp_path / "data", list(files.values()))
    message = str(info.value)
    assert "EuroSATallBands.zip:" in message and "ambiguous" in message and "stored_band_order" in message
    assert built(tmp_path / "data") == []
    # stating the order builds it right: B8A's values in the B08A slot (B12's would be stored_value(.., 11))
    build_data({"kind": "eurosat", "params": {"stored_band_order": REORDERED}}, tmp_path / "ok", list(files.values()))
    assert b8a_slot(tmp_path / "ok", "Forest_2") == expected_u16(stored_value("Forest_2", 12))


@pytest.mark.parametrize("order", [EUROSAT_BANDS, REORDERED], ids=["upstream-order", "pipeline-order"])
def test_eurosat_band_descriptions_decide_the_order(tmp_path: Path, order: list[str]) -> None:
    files = eurosat_files(tmp_path / "raw", order=order, describe=True)
    build_data({"kind": "eurosat"}, tmp_path / "data", list(files.values()))
    assert b8a_slot(tmp_path / "data", "Forest_2") == expected_u16(stored_value("Forest_2", 12))
    b13 = load_dataset(tmp_path / "data" / "bands13")
    b12 = int(b13.images[0, HYPERSPECTRAL_BANDS.index("B12"), 0, 0])
    assert b12 == expected_u16(stored_value(LISTS["train"][0], 11))
    info = b13.meta["info"]
    assert info["band_order_from"] == {"GeoTIFF band descriptions": 15}
    assert info["stored_band_order"][-1] == ("B08A" if order == EUROSAT_BANDS else "B12")


def test_eurosat_partial_or_contradicted_descriptions_are_refused(tmp_path: Path) -> None:
    bad = geotiff("Forest_1", describe=True)
    with MemoryFile(bad) as mem, mem.open() as src:
        data, profile = src.read(), src.profile
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
            for i in range(1, 14):
                dst.set_band_description(i, "B02" if i == 2 else "")
        partial = mem.read()
    files = eurosat_files(tmp_path / "raw", describe=True, replace={"Forest_1": partial})
    with pytest.raises(BuildError, match=r"Forest_1\.tif.*ambiguous"):
        build_data({"kind": "eurosat"}, tmp_path / "a", list(files.values()))
    files = eurosat_files(tmp_path / "raw2", describe=True)
    with pytest.raises(BuildError, match=r"params\.stored_band_order says"):
        build_data(
            {"kind": "eurosat", "params": {"stored_band_order": REORDERED}}, tmp_path / "b", list(files.values())
        )
    with pytest.raises(ValueError, match="13 Sentinel-2 bands once each"):
        build_data(
            {"kind": "eurosat", "params": {"stored_band_order": ["B01"] * 13}}, tmp_path / "c", list(files.values())
        )


def torchgeo_root(root: Path, keep_zip: bool = False, lists: bool = True) -> Path:
    """What torchgeo's ``EuroSAT(root, download=True)`` leaves: the split lists and the extracted ``ds/`` tree (and
    the zip unless it was deleted)."""
    for member, data in eurosat_tifs().items():
        (root / member).parent.mkdir(parents=True, exist_ok=True)
        (root / member).write_bytes(data)
    if lists:
        eurosat_lists(root)
    if keep_zip:
        eurosat_zip(root / "EuroSATallBands.zip")
    return root


def test_eurosat_extracted_by_torchgeo_is_read_in_place(tmp_path: Path, as_upstream) -> None:
    from splicer.pipeline.archives import archive_files

    reference = eurosat_files(tmp_path / "ref")
    as_upstream(reference["EuroSATallBands.zip"])
    build_data({"kind": "eurosat"}, tmp_path / "from_zip", list(reference.values()))
    root = torchgeo_root(tmp_path / "torchgeo" / "data")
    found = sources.archives("eurosat", path=str(root))
    assert {a.name: a.local for a in found} == {
        "EuroSATallBands.zip": str(root / BASE),
        **{f"eurosat-{s}.txt": str(root / f"eurosat-{s}.txt") for s in LISTS},
    }
    # verified in place (the lists against their pinned sha256 would fail for these fixture lists: pin them)
    digests = {
        f"eurosat-{s}.txt": "sha256:" + hashlib.sha256((root / f"eurosat-{s}.txt").read_bytes()).hexdigest()
        for s in LISTS
    }
    records = []
    for archive in sources.archives("eurosat", path=str(root), checksums=digests):
        record = tmp_path / "resources" / "eurosat" / ".verified" / f"{archive.name}.json"
        download.fetch_verified(archive, record.parent.parent, record)
        records.append(record)
    assert not (tmp_path / "resources" / "eurosat" / "EuroSATallBands.zip").exists()  # nothing copied
    files = archive_files(records)
    assert files["EuroSATallBands.zip"] == root / BASE
    with pytest.raises(BuildError, match=r"extracted folder.*stored_band_order"):
        build_data({"kind": "eurosat"}, tmp_path / "refused", files)
    spec = {"kind": "eurosat", "params": {"stored_band_order": EUROSAT_BANDS}}
    build_data(spec, tmp_path / "in_place", files)
    for name in ("bands13", "rgb"):
        a, b = load_dataset(tmp_path / "from_zip" / name), load_dataset(tmp_path / "in_place" / name)
        np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
        np.testing.assert_array_equal(a.labels, b.labels)
    # a root that still holds torchgeo's zip uses the zip (its sha256 decides the order); lists downloaded if absent
    kept = torchgeo_root(tmp_path / "kept", keep_zip=True, lists=False)
    by_name = {a.name: a for a in sources.archives("eurosat", path=str(kept))}
    assert by_name["EuroSATallBands.zip"].local == str(kept / "EuroSATallBands.zip")
    assert by_name["EuroSATallBands.zip"].sha256 == sources.EUROSAT[0].sha256
    assert by_name["eurosat-train.txt"].local is None  # not there: downloaded as usual
    with pytest.raises(ValueError, match="holds none of its files"):
        sources.archives("eurosat", path=str(tmp_path))
    with pytest.raises(ValueError, match="not a folder"):
        sources.archives("eurosat", path=str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------------- MMEarth
def out_bands(stored: np.ndarray) -> np.ndarray:
    """MMEarth band order -> pipeline order (B08 before B08A)."""
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08A", "B08", "B09", "B10", "B11", "B12"]
    return stored[[names.index(b) for b in HYPERSPECTRAL_BANDS]]


def test_mmearth_downloaded_and_built_center_crop(server: Server, tmp_path: Path) -> None:
    paths = fetch_kind(server, "mmearth", mmearth_files(tmp_path / "raw"), tmp_path / "resources")
    out = tmp_path / "data"
    build_data({"kind": "mmearth", "params": {"patch_size": 8, "chunk_rows": 3}, "seed": 0}, out, paths)
    ds = load_dataset(out / "pretrain")
    tiles = sorted(MM_SPLITS["train"])  # HDF5 row order
    assert ds.images.shape == (len(tiles), 13, 8, 8) and ds.images.dtype == np.uint16
    assert ds.channel_names == HYPERSPECTRAL_BANDS and ds.split_names == ["train"]
    assert ds.class_names == EUROSAT_CLASSES and (np.asarray(ds.labels) == -1).all()
    for row, t in enumerate(tiles):
        want = expected_u16(out_bands(tile_values(t))[:, 4:12, 4:12])  # central 8 px of 16
        np.testing.assert_array_equal(ds.images[row], want)
    b8, b8a, b10 = (HYPERSPECTRAL_BANDS.index(b) for b in ("B08", "B08A", "B10"))
    assert ds.images[0, b8, 0, 0] == expected_u16(9 * 600 + 20 * tiles[0])  # stored index 8 = B8
    assert ds.images[0, b8a, 0, 0] == expected_u16(8 * 600 + 20 * tiles[0])  # stored index 7 = B8A
    l2a = [row for row, t in enumerate(tiles) if s2_type(t) == "l2a"]
    assert l2a and all((ds.images[r, b10] == 0).all() for r in l2a)
    assert all((ds.images[r, b10] > 0).all() for r in range(len(tiles)) if r not in l2a)
    info = ds.meta["info"]
    assert info["b10_zero_rows"] == len(l2a) and info["rows_per_s2_type"]["l1c"] == len(tiles) - len(l2a)
    assert info["stored_band_order"][7:9] == ["B08A", "B08"] and info["patch_mode"] == "center"
    assert info["band_stat_means"]["sentinel2_l1c"][7:9] == [8.0, 7.0]  # B08 then B08A


def test_mmearth_grid_resize_types_splits_caps_and_tile_info(tmp_path: Path) -> None:
    files = mmearth_files(tmp_path / "raw")
    paths = list(files.values())

    build_data({"kind": "mmearth", "params": {"patch_size": 8, "patch_mode": "grid"}}, tmp_path / "g", paths)
    grid = load_dataset(tmp_path / "g" / "pretrain")
    tiles = sorted(MM_SPLITS["train"])
    assert grid.n == 4 * len(tiles)
    for row in range(grid.n):
        (t, q), full = divmod(row, 4), None
        full = out_bands(tile_values(tiles[t]))
        y, x = (q // 2) * 8, (q % 2) * 8  # patches row-major within the tile
        np.testing.assert_array_equal(grid.images[row], expected_u16(full[:, y : y + 8, x : x + 8]))
        assert len(np.unique(np.asarray(grid.images[row, 0]))) == 1  # each patch is one quadrant

    build_data(
        {
            "kind": "mmearth",
            "params": {
                "patch_size": 8,
                "patch_mode": "resize",
                "s2_types": ["l1c"],
                "splits": ["train", "val", "test"],
            },
        },
        tmp_path / "r",
        paths,
    )
    res = load_dataset(tmp_path / "r" / "pretrain")
    l1c = [t for t in range(N_TILES) if s2_type(t) == "l1c"]
    assert res.n == len(l1c) and res.images.shape[2:] == (8, 8)
    for row, t in enumerate(l1c):
        stored = out_bands(tile_values(t)).astype(float)
        np.testing.assert_array_equal(res.images[row], expected_u16(stored.reshape(13, 8, 2, 8, 2).mean((2, 4))))
    assert res.meta["info"]["b10_zero_rows"] == 0

    capped = tmp_path / "c"
    build_data({"kind": "mmearth", "params": {"patch_size": 8}, "caps": {"pretrain": 3}, "seed": 1}, capped, paths)
    assert load_dataset(capped / "pretrain").n == 3

    old = mmearth_files(tmp_path / "old", meta_fields=1)  # metadata without S2_type: tile_info tells
    build_data(
        {"kind": "mmearth", "params": {"patch_size": 8, "s2_types": ["l2a"]}}, tmp_path / "o", list(old.values())
    )
    assert load_dataset(tmp_path / "o" / "pretrain").n == sum(s2_type(t) == "l2a" for t in MM_SPLITS["train"])


@pytest.mark.parametrize(
    ("fault", "file", "message"),
    [
        ("no_s2", "data_100k_v001.h5", "no 'sentinel2'"),
        ("bands", "data_100k_v001.h5", "13 bands"),
        ("not_h5", "data_100k_v001.h5", "not a readable HDF5"),
        ("index", "data_100k_v001_splits.json", "outside [0, 12)"),
        ("stats", "data_100k_v001_band_stats.json", "12 values"),
        ("big_patch", "data_100k_v001.h5", "smaller than patch_size"),
    ],
)
def test_mmearth_bad_inputs_name_the_file_and_build_nothing(
    tmp_path: Path, fault: str, file: str, message: str
) -> None:
    files = mmearth_files(
        tmp_path / "raw", bands=12 if fault == "bands" else 13, drop="sentinel2" if fault == "no_s2" else None
    )
    if fault == "not_h5":
        files["data_100k_v001.h5"].write_bytes(b"not hdf5" * 100)
    if fault == "index":
        files["data_100k_v001_splits.json"].write_text(json.dumps({**MM_SPLITS, "train": [0, 12]}))
    if fault == "stats":
        files["data_100k_v001_band_stats.json"].write_text(json.dumps({"sentinel2_l1c": {"mean": [0.0] * 12}}))
    params = {"patch_size": 32 if fault == "big_patch" else 8}
    out = tmp_path / "data"
    with pytest.raises(BuildError) as info:
        build_data({"kind": "mmearth", "params": params}, out, list(files.values()))
    assert str(files[file]) in str(info.value) and message in str(info.value)
    assert built(out) == []


@pytest.mark.parametrize(
    "params",
    [
        {"patch_mode": "random"},
        {"s2_types": ["l1b"]},
        {"splits": []},
        {"patch_size": 0},
        {"chunk_rows": 1.5},
        {"tile": 3},
    ],
)
def test_mmearth_rejects_bad_params(tmp_path: Path, params: dict) -> None:
    files = list(mmearth_files(tmp_path / "raw").values())
    with pytest.raises(ValueError, match="params"):
        build_data({"kind": "mmearth", "params": params}, tmp_path / "data", files)


def test_fixture_geotiff_is_a_13_band_uint16_gtiff() -> None:
    with MemoryFile(geotiff("Forest_1")) as mem, mem.open() as src:
        assert (src.count, src.dtypes[0], src.driver, src.width) == (13, "uint16", "GTiff", PX)
        assert src.read(13)[0, 0] == stored_value("Forest_1", 12)  # band 13 (1-based) = B8A
        assert src.crs == rasterio.crs.CRS.from_epsg(32635)
