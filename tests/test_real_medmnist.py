"""splicer.data.real.medmnist on tiny ``.npz`` files with MedMNIST's keys, downloaded from a loopback server with
pinned checksums and built with build_data.

Fixture images are identifiable: pixel (0, 0) / (0, 1) hold the upstream row index (low / high byte), pixel (0, 2)
the upstream split code and the rest a constant intensity that encodes the label.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import Route, serve_files, serving

from splicer.data import download, sources
from splicer.data.build import build_data
from splicer.data.download import ChecksumError, fetch
from splicer.data.format import load_dataset
from splicer.data.real.common import BuildError
from splicer.data.real.medmnist import XRAY_CLASSES, read_npz_array

pytestmark = pytest.mark.timeout(120)

SPLITS = ["train", "val", "test"]
COUNTS = {"train": 40, "val": 12, "test": 18}
PNEUMONIA_COL = 6  # ChestMNIST INFO label "6": "pneumonia"


def images_for(labels_key: np.ndarray, split: str, size: int) -> np.ndarray:
    n = labels_key.size
    img = np.full((n, size, size), 30, np.uint8) + (100 * labels_key).astype(np.uint8)[:, None, None]
    img[:, 0, 0], img[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    img[:, 0, 2] = SPLITS.index(split)
    return img


def medmnist_arrays(flag: str, size: int = 28, counts: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (counts or COUNTS).items():
        if flag == "chestmnist":
            labels = (rng.random((n, 14)) < 0.3).astype(np.uint8)
            key = labels[:, PNEUMONIA_COL]
        else:
            labels = rng.integers(0, 2, (n, 1)).astype(np.uint8)
            key = labels[:, 0]
        arrays[f"{split}_images"] = images_for(key, split, size)
        arrays[f"{split}_labels"] = labels
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def pinned(flag: str, files: dict[str, Path], mirror: str, size: int = 28) -> list[sources.Archive]:
    sums = {name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
    return sources.archives(flag, size=size, mirror=mirror, checksums=sums)


def build(flag: str, paths, out: Path, seed: int = 0, caps: dict | None = None, params: dict | None = None):
    build_data({"kind": flag, "params": params or {}, "caps": caps or {}, "seed": seed}, out, list(paths))
    name = "pretrain" if flag == "chestmnist" else "pneumonia"
    return load_dataset(out / name, mmap=False)


def ident(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("medmnist")
    arrays = {"chestmnist": medmnist_arrays("chestmnist"), "pneumoniamnist": medmnist_arrays("pneumoniamnist", seed=1)}
    files = {
        "chestmnist.npz": write_npz(root / "up" / "chestmnist.npz", arrays["chestmnist"]),
        "pneumoniamnist.npz": write_npz(root / "up" / "pneumoniamnist.npz", arrays["pneumoniamnist"], compressed=False),
    }
    with serving() as server:
        serve_files(server, files)
        paths = {
            flag: fetch(
                pinned(flag, {f"{flag}.npz": files[f"{flag}.npz"]}, server.url("/"))[0],
                root / "resources" / flag,
                timeout=5,
                backoff=0.0,
            )
            for flag in arrays
        }
    return {"arrays": arrays, "paths": paths, "root": root}


@pytest.fixture(scope="module")
def demo_xray(tmp_path_factory) -> dict:
    from splicer.data.demo import make_xray

    paths = make_xray(tmp_path_factory.mktemp("demo"), n_pretrain=4, n_train=4, n_val=2, n_test=2, size=8)
    return {name: load_dataset(p) for name, p in paths.items()}


# -------------------------------------------------------------------------------------------------------- tests
def test_pneumonia_from_served_npz(upstream, demo_xray, tmp_path: Path) -> None:
    ds = build("pneumoniamnist", [upstream["paths"]["pneumoniamnist"]], tmp_path / "out")
    arrays = upstream["arrays"]["pneumoniamnist"]
    ref = demo_xray["pneumonia"].meta
    assert ds.meta["name"] == "pneumonia"
    assert ds.class_names == XRAY_CLASSES == ref["class_names"] == ["normal", "pneumonia"]
    assert ds.split_names == ref["split_names"] == SPLITS
    assert ds.channel_names == ref["channel_names"] == ["X-ray"]
    assert ds.mask_names == [] and ds.masks is None
    assert ds.images.dtype == np.uint8 and ds.images.shape == (sum(COUNTS.values()), 1, 28, 28)
    for split in SPLITS:
        part = ds.select(split)
        np.testing.assert_array_equal(part.images[:, 0], arrays[f"{split}_images"])  # upstream order, exact pixels
        np.testing.assert_array_equal(part.labels, arrays[f"{split}_labels"][:, 0])
    assert (np.diff(np.asarray(ds.split).astype(int)) >= 0).all()
    info = ds.meta["info"]
    assert info["size"] == 28 and info["medmnist_flag"] == "pneumoniamnist" and info["upstream_counts"] == COUNTS
    assert "manifest.json" in {p.name for p in (tmp_path / "out").iterdir()}


def test_chest_pretrain(upstream, demo_xray, tmp_path: Path) -> None:
    ds = build("chestmnist", [upstream["paths"]["chestmnist"]], tmp_path / "out")
    arrays = upstream["arrays"]["chestmnist"]
    ref = demo_xray["pretrain"].meta
    for key in ("class_names", "split_names", "channel_names"):
        assert ds.meta[key] == ref[key], key
    assert ds.mask_names == [] and ds.split_names == ["train"]
    np.testing.assert_array_equal(ds.images[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(ds.labels, arrays["train_labels"][:, PNEUMONIA_COL])
    info = ds.meta["info"]
    assert info["findings"][PNEUMONIA_COL] == "pneumonia" and len(info["findings"]) == 14
    assert info["pooled_splits"] == ["train"] and info["rows_per_upstream_split"] == {"train": COUNTS["train"]}
    # all upstream splits pooled (given in any order): train rows, then val, then test
    ds = build(
        "chestmnist", [upstream["paths"]["chestmnist"]], tmp_path / "all", params={"splits": ["test", "train", "val"]}
    )
    assert ds.n == sum(COUNTS.values())
    np.testing.assert_array_equal(ds.images[:, 0], np.concatenate([arrays[f"{s}_images"] for s in SPLITS]))
    assert (np.asarray(ds.split) == 0).all()


def test_caps_and_determinism(upstream, tmp_path: Path) -> None:
    paths = [upstream["paths"]["pneumoniamnist"]]
    caps = {"*": 5, "pneumonia/train": 9}
    ds = build("pneumoniamnist", paths, tmp_path / "a", caps=caps)
    again = build("pneumoniamnist", paths, tmp_path / "b", caps=caps)
    other = build("pneumoniamnist", paths, tmp_path / "c", caps=caps, seed=3)
    assert [ds.select(s).n for s in SPLITS] == [9, 5, 5]
    np.testing.assert_array_equal(ds.images, again.images)
    np.testing.assert_array_equal(ds.labels, again.labels)
    assert not np.array_equal(ident(np.asarray(ds.images)), ident(np.asarray(other.images)))
    arrays = upstream["arrays"]["pneumoniamnist"]
    for split in SPLITS:
        part = ds.select(split)
        rows = ident(np.asarray(part.images))
        assert (np.diff(rows) > 0).all()  # a subset in upstream order
        np.testing.assert_array_equal(part.images[:, 0], arrays[f"{split}_images"][rows])
        np.testing.assert_array_equal(part.labels, arrays[f"{split}_labels"][rows, 0])
    chest = build(
        "chestmnist",
        [upstream["paths"]["chestmnist"]],
        tmp_path / "chest",
        caps={"pretrain": 7},
        params={"splits": ["train", "val"]},
    )
    assert chest.n == 7 and chest.meta["info"]["caps"] == {"pretrain": 7}
    assert sum(chest.meta["info"]["rows_per_upstream_split"].values()) == 7


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap=st.integers(1, 50), seed=st.integers(0, 2**31 - 1))
def test_capped_rows_match_upstream(upstream, tmp_path_factory, cap: int, seed: int) -> None:
    arrays = upstream["arrays"]["chestmnist"]
    ds = build(
        "chestmnist",
        [upstream["paths"]["chestmnist"]],
        tmp_path_factory.mktemp("p"),
        seed=seed,
        caps={"*": cap},
        params={"splits": ["train", "val", "test"]},
    )
    assert ds.n == min(cap, sum(COUNTS.values()))
    img = np.asarray(ds.images)
    split_of, rows = img[:, 0, 0, 2].astype(int), ident(img)
    assert (np.diff(split_of) >= 0).all()
    for j in range(ds.n):
        s = SPLITS[split_of[j]]
        np.testing.assert_array_equal(img[j, 0], arrays[f"{s}_images"][rows[j]])
        assert ds.labels[j] == arrays[f"{s}_labels"][rows[j], PNEUMONIA_COL]


def test_size_is_inferred_or_checked(tmp_path: Path) -> None:
    small = medmnist_arrays("chestmnist", size=64, counts={"train": 3, "val": 2, "test": 2})
    f64 = write_npz(tmp_path / "res" / "chestmnist_64.npz", small)
    ds = build("chestmnist", [f64], tmp_path / "a")
    assert ds.hw == (64, 64) and ds.meta["info"]["size"] == 64
    assert build("chestmnist", [f64], tmp_path / "b", params={"size": 64}).n == 3
    with pytest.raises(BuildError, match=r"chestmnist\.npz.*was not provided"):
        build("chestmnist", [f64], tmp_path / "c", params={"size": 28})
    f28 = write_npz(tmp_path / "res" / "chestmnist.npz", medmnist_arrays("chestmnist"))
    with pytest.raises(BuildError, match="several chestmnist sizes"):
        build("chestmnist", [f64, f28], tmp_path / "d")
    assert build("chestmnist", [f64, f28], tmp_path / "e", params={"size": 28}).hw == (28, 28)
    mislabeled = write_npz(tmp_path / "mis" / "chestmnist_128.npz", small)
    with pytest.raises(BuildError, match=r"chestmnist_128\.npz:train_images\.npy: images are 64x64, expected 128x128"):
        build("chestmnist", [mislabeled], tmp_path / "f")
    with pytest.raises(ValueError, match=r"params\.size must be one of \[28, 64, 128, 224\]"):
        build("chestmnist", [f64], tmp_path / "g", params={"size": 32})


def test_params_are_checked(upstream, tmp_path: Path) -> None:
    chest, pneu = [upstream["paths"]["chestmnist"]], [upstream["paths"]["pneumoniamnist"]]
    with pytest.raises(ValueError, match="unknown params key"):
        build("pneumoniamnist", pneu, tmp_path / "a", params={"splits": ["train"]})
    for bad in ([], ["train", "train"], ["holdout"], "train"):
        with pytest.raises(ValueError, match=r"params\.splits"):
            build("chestmnist", chest, tmp_path / "b", params={"splits": bad})


# ---------------------------------------------------------------------------------------------------- faults
def test_corrupted_download_is_rejected_and_never_built(tmp_path: Path) -> None:
    f = write_npz(tmp_path / "up" / "pneumoniamnist.npz", medmnist_arrays("pneumoniamnist"))
    with serving() as server:
        server.routes["/pneumoniamnist.npz"] = Route(f.read_bytes(), corrupt=True)
        (archive,) = pinned("pneumoniamnist", {f.name: f}, server.url("/"))
        with pytest.raises(ChecksumError, match=r"pneumoniamnist\.npz"):
            fetch(archive, tmp_path / "res", timeout=5, backoff=0.0)
    assert not (tmp_path / "res" / "pneumoniamnist.npz").exists()
    with pytest.raises(BuildError, match=r"pneumoniamnist\.npz.*was not provided"):
        build_data({"kind": "pneumoniamnist", "seed": 0}, tmp_path / "out", [])
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_served_npz_missing_val_labels_downloads_but_fails_to_build(tmp_path: Path) -> None:
    arrays = medmnist_arrays("pneumoniamnist")
    del arrays["val_labels"]
    f = write_npz(tmp_path / "up" / "pneumoniamnist.npz", arrays)
    with serving() as server:
        serve_files(server, [f])
        (archive,) = pinned("pneumoniamnist", {f.name: f}, server.url("/"))
        path = fetch(archive, tmp_path / "res", timeout=5, backoff=0.0)
    with pytest.raises(BuildError, match=r"pneumoniamnist\.npz:val_labels\.npy: array 'val_labels' missing") as info:
        build_data({"kind": "pneumoniamnist", "seed": 0}, tmp_path / "out", [path])
    assert str(path) in str(info.value)
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / "pneumonia").exists()


def _corrupt_member(path: Path, member: str) -> None:
    """Flip bytes in the middle of a stored (uncompressed) member's data, keeping the zip's directory intact."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200
    raw[start : start + 16] = bytes(b ^ 0xFF for b in raw[start : start + 16])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_zip", r"chestmnist\.npz: not a readable \.npz"),
        ("missing_test_images", r"chestmnist\.npz:test_images\.npy: array 'test_images' missing"),
        ("label_columns", r"chestmnist\.npz:train_labels\.npy: expected integer labels \(40, 14\)"),
        ("label_values", r"chestmnist\.npz:val_labels\.npy: label values must lie in \[0, 2\)"),
        ("float_images", r"chestmnist\.npz:train_images\.npy: expected greyscale uint8 images"),
        ("rgb_images", r"chestmnist\.npz:train_images\.npy: expected greyscale uint8 images"),
        ("object_labels", r"chestmnist\.npz:test_labels\.npy: not a readable \.npy array"),
        ("bad_crc", r"chestmnist\.npz:train_images\.npy: not a readable \.npy array"),
        ("count_mismatch", r"chestmnist\.npz:val_labels\.npy: expected integer labels \(12, 14\) for 12 images"),
    ],
)
def test_broken_npz(tmp_path: Path, case: str, message: str) -> None:
    arrays = medmnist_arrays("chestmnist")
    path = tmp_path / "res" / "chestmnist.npz"
    compressed = True
    if case == "missing_test_images":
        del arrays["test_images"]
    elif case == "label_columns":
        arrays["train_labels"] = arrays["train_labels"][:, :13]
    elif case == "label_values":
        arrays["val_labels"][0, 3] = 2
    elif case == "float_images":
        arrays["train_images"] = arrays["train_images"].astype(np.float32)
    elif case == "rgb_images":
        arrays["train_images"] = np.repeat(arrays["train_images"][..., None], 3, axis=3)
    elif case == "object_labels":
        arrays["test_labels"] = np.array([[1] * 14] * 18, dtype=object)
    elif case == "count_mismatch":
        arrays["val_labels"] = arrays["val_labels"][:-1]
    elif case == "bad_crc":
        compressed = False
    if case == "not_zip":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"PK not really a zip")
    else:
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **arrays)
        path.parent.mkdir(parents=True)
        path.write_bytes(buf.getvalue())
        if case == "bad_crc":
            _corrupt_member(path, "train_images.npy")
    with pytest.raises(BuildError, match=message) as info:
        build_data({"kind": "chestmnist", "seed": 0}, tmp_path / "out", [path])
    assert str(path) in str(info.value)
    assert not (tmp_path / "out" / "pretrain").exists()
    assert not list((tmp_path / "out").glob("pretrain.tmp-*"))


def test_read_npz_array_never_unpickles(tmp_path: Path) -> None:
    f = tmp_path / "x.npz"
    np.savez(f, ok=np.arange(3), obj=np.array([{"a": 1}], dtype=object))
    assert read_npz_array(f, "ok").tolist() == [0, 1, 2]
    with pytest.raises(BuildError, match=r"x\.npz:obj\.npy: not a readable \.npy array.*allow_pickle"):
        read_npz_array(f, "obj")
