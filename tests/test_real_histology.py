"""Real-data builders nct_crc and camelyon17 (splicer.data.real.histology) on tiny archives in the upstream layouts,
served from a loopback HTTP server, fetched with checksums and built with build_data."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from loopback import Route, Server
from PIL import Image

from splicer.data import sources
from splicer.data.build import build_data
from splicer.data.download import ChecksumError, fetch
from splicer.data.format import load_dataset
from splicer.data.real import builder
from splicer.data.real.common import BuildError
from splicer.data.real.histology import CAMELYON_ARCHIVE, NCT_CLASSES, NCT_TEST, NCT_TRAIN

pytestmark = pytest.mark.timeout(60)

TILE = 32  # fixture tiles (the real ones are 224 px): built with params tile_size=32
PATCH = 96  # Camelyon17-WILDS patches are 96 px


# ------------------------------------------------------------------------------------------------ fixtures
def nct_colour(archive: int, cls: int, idx: int) -> tuple[int, int, int]:
    """Constant colour of one fixture tile: R = class, G = archive (0: 100K, 1: 7K), B = tile index."""
    return 20 * cls + 5, 60 + 120 * archive, idx


def tiff_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb, photometric="rgb")
    return buf.getvalue()


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def nct_zip(
    path: Path, top: str, archive: int, per_class: int, *, extra: dict[str, bytes] | None = None, junk: bool = True
) -> Path:
    """A zip laid out as Zenodo 1214456: ``<top>/<CLASS>/<CLASS>-<ID>.tif``, 224 px there, TILE px here."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for c, cls in enumerate(NCT_CLASSES):
            zf.writestr(f"{top}/{cls}/", b"")  # directory entries, as zip tools write them
            for i in range(per_class):
                colour = nct_colour(archive, c, i)
                name = f"{top}/{cls}/{cls}-{'TCGA-' if archive else ''}A{i:03d}.tif"
                if i % 2:  # half written by tifffile, half by PIL (LZW): both decoders' output must read
                    data = tiff_bytes(np.full((TILE, TILE, 3), colour, np.uint8))
                else:
                    data = pil_bytes(Image.new("RGB", (TILE, TILE), colour), "TIFF", compression="tiff_lzw")
                zf.writestr(name, data)
        if junk:
            zf.writestr(f"__MACOSX/{top}/ADI/._ADI-A000.tif", b"\x00\x05\x16\x07junk")
            zf.writestr(f"{top}/.DS_Store", b"junk")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def serve_and_fetch(
    server: Server, kind: str, archives: dict[str, Path], dest: Path, corrupt: tuple[str, ...] = ()
) -> list[Path]:
    """Serve local archives as the kind's mirror, pinned by sha256, and fetch them into ``dest``."""
    digests = {}
    for name, path in archives.items():
        data = path.read_bytes()
        digests[name] = "sha256:" + hashlib.sha256(data).hexdigest()
        server.routes["/" + name] = Route(data, corrupt=name in corrupt)
    found = sources.archives(kind, mirror=server.url("/"), checksums=digests)
    assert sorted(a.name for a in found) == sorted(archives)
    return [fetch(a, dest, backoff=0.0, timeout=5) for a in found]


def colours(images: np.ndarray) -> np.ndarray:
    """(N, 3) colour of constant images (and check they are constant)."""
    first = images[:, :, :1, :1]
    assert (images == first).all()
    return first[:, :, 0, 0].astype(int)


# -------------------------------------------------------------------------------------------------- NCT
@pytest.fixture(scope="module")
def nct_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nct_src")
    return {
        NCT_TRAIN: nct_zip(d / NCT_TRAIN, "NCT-CRC-HE-100K", 0, per_class=5),
        NCT_TEST: nct_zip(d / NCT_TEST, "CRC-VAL-HE-7K", 1, per_class=2),
    }


def test_nct_crc_from_served_zips(server: Server, tmp_path: Path, nct_archives: dict[str, Path]) -> None:
    paths = serve_and_fetch(server, "nct_crc", nct_archives, tmp_path / "resources")
    spec = {"kind": "nct_crc", "params": {"tile_size": TILE, "size": TILE, "val_fraction": 0.2}, "seed": 0}
    manifest = build_data(spec, tmp_path / "data", paths)
    assert manifest.is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["eval", "manifest.json", "pretrain"]

    pre = load_dataset(tmp_path / "data" / "pretrain")
    assert pre.images.shape == (45, 3, TILE, TILE) and pre.images.dtype == np.uint8
    assert pre.channel_names == ["R", "G", "B"] and pre.class_names == NCT_CLASSES
    assert pre.split_names == ["train"] and pre.mask_names == [] and pre.masks is None
    assert (np.asarray(pre.split) == 0).all()
    assert pre.class_counts() == dict.fromkeys(NCT_CLASSES, 5)
    rgb = colours(np.asarray(pre.images))
    labels = np.asarray(pre.labels)
    assert (rgb[:, 0] == 20 * labels + 5).all() and (rgb[:, 1] == 60).all()  # its class's tiles, all from 100K
    assert sorted(map(tuple, rgb)) == sorted(nct_colour(0, c, i) for c in range(9) for i in range(5))

    ev = load_dataset(tmp_path / "data" / "eval")
    assert ev.split_names == ["train", "val", "test"] and ev.class_names == NCT_CLASSES and ev.mask_names == []
    split = np.asarray(ev.split)
    assert (np.diff(split.astype(int)) >= 0).all()  # contiguous blocks train, val, test
    assert np.bincount(split, minlength=3).tolist() == [36, 9, 18]
    rgb, labels = colours(np.asarray(ev.images)), np.asarray(ev.labels)
    assert (rgb[:, 0] == 20 * labels + 5).all()
    assert (rgb[split < 2, 1] == 60).all() and (rgb[split == 2, 1] == 180).all()  # train/val 100K, test 7K
    for s, per_class in ((0, 4), (1, 1), (2, 2)):  # val stratified by class
        assert ev.select(["train", "val", "test"][s]).class_counts() == dict.fromkeys(NCT_CLASSES, per_class)
    train_val = {tuple(c) for c in rgb[split < 2]}
    assert len(train_val) == 45  # the 100K tiles, each once, split between train and val
    info = ev.meta["info"]
    assert info["archives"] == {"train": NCT_TRAIN, "val": NCT_TRAIN, "test": NCT_TEST}
    assert info["n_archive"] == {NCT_TRAIN: 45, NCT_TEST: 18}

    # same seed, same build; another seed, another val hold-out
    again = build_data({**spec, "seed": 0}, tmp_path / "again", paths)
    assert (np.asarray(load_dataset(again.parent / "eval").images) == np.asarray(ev.images)).all()
    other = build_data({**spec, "seed": 1}, tmp_path / "other", paths)
    assert not (np.asarray(load_dataset(other.parent / "eval").images) == np.asarray(ev.images)).all()


def test_nct_crc_caps_before_decoding_and_resize(
    tmp_path: Path, nct_archives: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from splicer.data.real import histology

    decoded: list[str] = []
    real = histology._decode
    monkeypatch.setattr(histology, "_decode", lambda data, where, *a: decoded.append(where) or real(data, where, *a))
    caps = {"pretrain": 10, "eval/train": 7, "eval/test": 5}
    spec = {"kind": "nct_crc", "params": {"tile_size": TILE, "size": 8, "val_fraction": 0.2}, "caps": caps, "seed": 3}
    build_data(spec, tmp_path / "data", list(nct_archives.values()))
    pre, ev = load_dataset(tmp_path / "data" / "pretrain"), load_dataset(tmp_path / "data" / "eval")
    assert pre.images.shape == (10, 3, 8, 8)
    assert np.bincount(np.asarray(ev.split), minlength=3).tolist() == [7, 9, 5]
    assert ev.images.shape == (21, 3, 8, 8)
    rgb = colours(np.asarray(ev.images))  # constant colours survive the resize
    assert (rgb[:, 0] == 20 * np.asarray(ev.labels) + 5).all()
    # only the chosen tiles were decoded, each 100K tile once even when both datasets use it
    assert len(decoded) == len(set(decoded))
    from_train = [w for w in decoded if NCT_TRAIN in w]
    assert len([w for w in decoded if NCT_TEST in w]) == 5
    assert max(10, 16) <= len(from_train) <= 10 + 16
    assert ev.meta["info"]["caps"] == caps


def test_nct_crc_corrupted_download_builds_nothing(
    server: Server, tmp_path: Path, nct_archives: dict[str, Path]
) -> None:
    with pytest.raises(ChecksumError):
        serve_and_fetch(server, "nct_crc", nct_archives, tmp_path / "resources", corrupt=(NCT_TEST,))
    assert not (tmp_path / "resources" / NCT_TEST).exists()
    assert not (tmp_path / "data").exists()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    ("member", "data", "problem"),
    [
        ("NCT-CRC-HE-100K/TUM/TUM-BAD.tif", b"II*\x00 this is not a tiff", "cannot be decoded as TIFF"),
        ("NCT-CRC-HE-100K/TUM/TUM-GREY.tif", "grey", "'L' image"),
        ("NCT-CRC-HE-100K/TUM/TUM-SMALL.tif", "small", "31x31 px"),
        ("NCT-CRC-HE-100K/FOO/FOO-A000.tif", "ok", "class folder 'FOO'"),
        ("NCT-CRC-HE-100K/TUM/TUM-A999.png", "ok", "not a .tif"),
        ("CRC-VAL-HE-7K/TUM/TUM-A999.tif", "ok", "expected NCT-CRC-HE-100K/<CLASS>/<tile>.tif"),
    ],
)
def test_nct_crc_bad_member_names_it(
    tmp_path: Path, nct_archives: dict[str, Path], member: str, data: bytes | str, problem: str
) -> None:
    payload = {
        "grey": pil_bytes(Image.new("L", (TILE, TILE), 9), "TIFF"),
        "small": tiff_bytes(np.zeros((TILE - 1, TILE - 1, 3), np.uint8)),
        "ok": tiff_bytes(np.zeros((TILE, TILE, 3), np.uint8)),
    }.get(data, data)
    bad = nct_zip(tmp_path / NCT_TRAIN, "NCT-CRC-HE-100K", 0, per_class=2, extra={member: payload})
    spec = {"kind": "nct_crc", "params": {"tile_size": TILE, "size": TILE, "val_fraction": 0.5}}
    with pytest.raises(BuildError, match=problem) as err:
        build_data(spec, tmp_path / "data", [bad, nct_archives[NCT_TEST]])
    assert str(err.value).startswith(f"{bad}:{member}: ")
    assert err.value.file == f"{bad}:{member}"
    assert not (tmp_path / "data" / "manifest.json").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # no half-written dataset or temp dir left


def test_nct_crc_archive_level_faults(tmp_path: Path, nct_archives: dict[str, Path]) -> None:
    spec = {"kind": "nct_crc", "params": {"tile_size": TILE, "size": TILE}}
    not_zip = tmp_path / "x" / NCT_TRAIN
    not_zip.parent.mkdir()
    not_zip.write_bytes(b"not a zip at all")
    with pytest.raises(BuildError, match="not a readable zip") as err:
        build_data(spec, tmp_path / "d1", [not_zip, nct_archives[NCT_TEST]])
    assert err.value.file == str(not_zip)
    with zipfile.ZipFile(tmp_path / NCT_TEST, "w") as zf:  # a class missing altogether
        zf.writestr("CRC-VAL-HE-7K/ADI/ADI-A000.tif", tiff_bytes(np.zeros((TILE, TILE, 3), np.uint8)))
    with pytest.raises(BuildError, match=r"no tiles of class\(es\) \['BACK'"):
        build_data(spec, tmp_path / "d2", [nct_archives[NCT_TRAIN], tmp_path / NCT_TEST])
    with pytest.raises(BuildError, match="was not provided"):
        build_data(spec, tmp_path / "d3", [nct_archives[NCT_TRAIN]])
    with pytest.raises(ValueError, match="unknown params key"):
        build_data({**spec, "params": {"sise": 3}}, tmp_path / "d4", list(nct_archives.values()))
    with pytest.raises(ValueError, match="val_fraction"):
        build_data({**spec, "params": {"val_fraction": 1.0}}, tmp_path / "d5", list(nct_archives.values()))


# --------------------------------------------------------------------------------------------- Camelyon17
# (patient, node, center, slide): patients 0-19 are hospital 0, 20-39 hospital 1, ... (WILDS preprocessing)
SLIDES = [(4, 4, 0, 0), (15, 1, 0, 8), (21, 2, 1, 11), (41, 0, 2, 20), (44, 3, 2, 23), (61, 1, 3, 30), (88, 2, 4, 44)]
PER_SLIDE = 4
HEADER = ",patient,node,x_coord,y_coord,tumor,slide,center,split"


def camelyon_rows() -> list[dict]:
    rows = []
    for s, (patient, node, center, slide) in enumerate(SLIDES):
        for k in range(PER_SLIDE):
            rows.append(
                {
                    "patient": patient,
                    "node": node,
                    "x": 96 * k + 48,
                    "y": 1000 + 32 * s,
                    "tumor": k % 2,
                    "slide": slide,
                    "center": center,
                    "split": int(k == 3),
                    "id": len(rows),
                }
            )
    return rows


def patch_name(r: dict) -> str:
    p, n = f"{r['patient']:03d}", r["node"]
    return f"patches/patient_{p}_node_{n}/patch_patient_{p}_node_{n}_x_{r['x']}_y_{r['y']}.png"


def patch_colour(r: dict) -> tuple[int, int, int]:
    """R = hospital, G = tumour, B = row id."""
    return 40 * r["center"] + 1, 200 * r["tumor"] + 7, r["id"]


def camelyon_tar(
    path: Path,
    *,
    prefix: str = "",
    metadata_first: bool = True,
    drop: str | None = None,
    columns: str = HEADER,
    replace: dict[str, bytes] | None = None,
) -> Path:
    """A tar.gz laid out as Camelyon17-WILDS v1.0: metadata.csv (unnamed index column, zero-padded patients) and
    patches/... PNGs saved as OpenSlide writes them (RGBA), optionally under a folder ``prefix``."""
    rows = camelyon_rows()
    lines = [columns] + [
        f"{r['id']},{r['patient']:03d},{r['node']},{r['x']},{r['y']},{r['tumor']},{r['slide']},"
        f"{r['center']},{r['split']}"
        for r in rows
    ]
    members = [("metadata.csv", ("\n".join(lines) + "\n").encode())]
    for r in rows:
        mode = "RGBA" if r["id"] % 2 else "RGB"
        img = Image.new(mode, (PATCH, PATCH), (*patch_colour(r), 255)[: len(mode)])
        members.append((patch_name(r), pil_bytes(img, "PNG")))
    if not metadata_first:
        members = members[1:] + members[:1]
    members = [(n, (replace or {}).get(n, d)) for n, d in members if n != drop]
    members.append(("RELEASE_v1.0.txt", b"v1.0\n"))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("prefix", "metadata_first"), [("", True), ("./camelyon17_v1.0/", False)])
def test_camelyon17_from_served_tar(server: Server, tmp_path: Path, prefix: str, metadata_first: bool) -> None:
    src = camelyon_tar(tmp_path / CAMELYON_ARCHIVE, prefix=prefix, metadata_first=metadata_first)
    paths = serve_and_fetch(server, "camelyon17", {CAMELYON_ARCHIVE: src}, tmp_path / "resources")
    build_data({"kind": "camelyon17", "seed": 0}, tmp_path / "data", paths)
    ds = load_dataset(tmp_path / "data" / "camelyon")
    assert ds.images.shape[1:] == (3, PATCH, PATCH) and ds.images.dtype == np.uint8
    assert ds.class_names == ["normal", "tumour"] and ds.split_names == ["train", "val", "test"]
    assert ds.channel_names == ["R", "G", "B"] and ds.mask_names == []
    split = np.asarray(ds.split)
    assert (np.diff(split.astype(int)) >= 0).all()
    rgb, labels = colours(np.asarray(ds.images)), np.asarray(ds.labels)
    rows = camelyon_rows()
    by_id = {r["id"]: r for r in rows}
    for colour, label, s in zip(rgb, labels, split, strict=True):
        r = by_id[int(colour[2])]
        assert tuple(colour) == patch_colour(r) and label == r["tumor"]
        if s == 2:
            assert r["center"] == 2  # held-out hospital
        else:
            assert r["center"] in (0, 3, 4) and r["split"] == s  # WILDS train / id_val of the train hospitals
    expect = {s: sorted(r["id"] for r in rows if r["center"] in (0, 3, 4) and r["split"] == s) for s in (0, 1)}
    expect[2] = sorted(r["id"] for r in rows if r["center"] == 2)
    for s in range(3):
        assert sorted(rgb[split == s, 2].tolist()) == expect[s]
    info = ds.meta["info"]
    assert info["train_hospitals"] == [0, 3, 4] and info["test_hospital"] == 2 and info["val_hospitals"] == [0, 3, 4]
    assert info["counts"]["test"] == {"2": [4, 4]}


def test_camelyon17_ood_val_caps_resize(tmp_path: Path) -> None:
    src = camelyon_tar(tmp_path / CAMELYON_ARCHIVE)
    spec = {
        "kind": "camelyon17",
        "params": {"val": "ood", "size": 24},
        "caps": {"camelyon/train": 5, "*": 3},
        "seed": 1,
    }
    build_data(spec, tmp_path / "data", [src])
    ds = load_dataset(tmp_path / "data" / "camelyon")
    assert ds.images.shape == (11, 3, 24, 24)
    split = np.asarray(ds.split)
    assert np.bincount(split, minlength=3).tolist() == [5, 3, 3]
    rgb = colours(np.asarray(ds.images))
    centers = (rgb[:, 0] - 1) // 40
    assert set(centers[split == 0]) <= {0, 3, 4} and set(centers[split == 1]) == {1} and set(centers[split == 2]) == {2}
    assert ds.meta["info"]["val_hospitals"] == [1] and ds.meta["info"]["wilds_splits"]["val"] == "val (OOD)"


@pytest.mark.parametrize(
    ("kwargs", "member", "problem"),
    [
        ({"columns": HEADER.replace(",center", ",hospital")}, "metadata.csv", r"missing column\(s\) \['center'\]"),
        ({"drop": patch_name(camelyon_rows()[13])}, patch_name(camelyon_rows()[13]), "missing from the archive"),
        (
            {"replace": {patch_name(camelyon_rows()[2]): b"\x89PNG\r\n\x1a\n broken"}},
            patch_name(camelyon_rows()[2]),
            "cannot be decoded as PNG",
        ),
        (
            {"replace": {patch_name(camelyon_rows()[0]): pil_bytes(Image.new("RGB", (64, 64)), "PNG")}},
            patch_name(camelyon_rows()[0]),
            "64x64 px",
        ),
        ({"drop": "metadata.csv"}, None, "holds no metadata.csv"),
    ],
)
def test_camelyon17_faults_name_the_member(tmp_path: Path, kwargs: dict, member: str | None, problem: str) -> None:
    src = camelyon_tar(tmp_path / CAMELYON_ARCHIVE, metadata_first=False, **kwargs)
    with pytest.raises(BuildError, match=problem) as err:
        build_data({"kind": "camelyon17"}, tmp_path / "data", [src])
    assert err.value.file == (str(src) if member is None else f"{src}:{member}")
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_camelyon17_corrupted_download_and_damaged_archive(server: Server, tmp_path: Path) -> None:
    src = camelyon_tar(tmp_path / CAMELYON_ARCHIVE)
    with pytest.raises(ChecksumError):
        serve_and_fetch(server, "camelyon17", {CAMELYON_ARCHIVE: src}, tmp_path / "resources", corrupt=(src.name,))
    assert not (tmp_path / "resources" / CAMELYON_ARCHIVE).exists()
    cut = tmp_path / "cut" / CAMELYON_ARCHIVE
    cut.parent.mkdir()
    data = src.read_bytes()
    for end in (len(data) // 4, len(data) // 2, 3 * len(data) // 4):  # cut gzip streams: never "missing patch"
        cut.write_bytes(data[:end])
        with pytest.raises(BuildError, match=r"truncated|cannot be read|Compressed file ended") as err:
            build_data({"kind": "camelyon17"}, tmp_path / "data", [cut])
        assert err.value.file == str(cut) or err.value.file.startswith(f"{cut}:")
        assert [p.name for p in (tmp_path / "data").iterdir()] == []
    cut.write_bytes(b"not gzip")
    with pytest.raises(BuildError, match=r"not a readable tar\.gz") as err:
        build_data({"kind": "camelyon17"}, tmp_path / "data", [cut])
    assert err.value.file == str(cut)


def test_registry_resolves_both_builders() -> None:
    from splicer.data.real import histology

    assert builder("nct_crc") is histology.build_nct_crc and builder("camelyon17") is histology.build_camelyon17


def test_camelyon17_extracted_by_wilds_is_read_in_place(tmp_path: Path) -> None:
    """WILDS extracts archive.tar.gz into <root_dir>/camelyon17_v1.0/ and deletes it: that folder (or the WILDS
    root above it) is accepted as source.path, verified and built in place, identical to the archive's build."""
    from splicer.data import download
    from splicer.pipeline.archives import archive_files

    src = camelyon_tar(tmp_path / CAMELYON_ARCHIVE)
    build_data({"kind": "camelyon17", "seed": 0}, tmp_path / "from_tar", [src])
    wilds_root = tmp_path / "wilds_data"
    folder = wilds_root / "camelyon17_v1.0"
    folder.mkdir(parents=True)
    with tarfile.open(src) as tar:
        tar.extractall(folder, filter="data")
    for path in (folder, wilds_root):
        (archive,) = sources.archives("camelyon17", path=str(path))
        assert archive.local == str(folder) and archive.approx_size is None
    record = tmp_path / "resources" / "camelyon17" / ".verified" / f"{CAMELYON_ARCHIVE}.json"
    download.fetch_verified(archive, record.parent.parent, record)
    assert not (tmp_path / "resources" / "camelyon17" / CAMELYON_ARCHIVE).exists()  # nothing downloaded or copied
    info = json.loads(record.read_text())
    assert info["path"] == str(folder) and "metadata.csv: complete" in info["verified"]
    build_data({"kind": "camelyon17", "seed": 0}, tmp_path / "in_place", archive_files([record]))
    a, b = load_dataset(tmp_path / "from_tar" / "camelyon"), load_dataset(tmp_path / "in_place" / "camelyon")
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
    # a patch listed in metadata.csv but missing from the folder is named
    missing = folder / patch_name(camelyon_rows()[5])
    missing.unlink()
    with pytest.raises(BuildError, match=re.escape(str(missing))):
        build_data({"kind": "camelyon17", "seed": 0}, tmp_path / "broken", archive_files([record]))
    # a metadata.csv cut mid-row is caught when it is verified
    meta = folder / "metadata.csv"
    meta.write_bytes(meta.read_bytes()[:-7])
    with pytest.raises(download.ChecksumError, match=r"metadata\.csv"):
        download.fetch_verified(archive, record.parent.parent, record)
