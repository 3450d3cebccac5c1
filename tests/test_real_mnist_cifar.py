"""splicer.data.real.mnist_cifar on tiny archives in the real upstream formats (MNIST idx .gz files, the CIFAR-10
python tarball), downloaded from a loopback server with pinned checksums and built with build_data.

Fixture images are identifiable: an MNIST digit d is a square of intensity 20 (d + 1) with its upstream index
written in pixels (0, 0) and (0, 1); a CIFAR image of label k has R = 100 + k, its index in the G plane's first two
rows and B = the pixel's row, so label agreement, plane order and row-major layout can be read back. Indices of
the test pools are offset by TEST_MARK.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
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
from splicer.data.real.mnist_cifar import DEFAULTS, read_cifar_batches, read_idx

pytestmark = pytest.mark.timeout(120)

KIND = "mnist_cifar"
NAMES = ["pretrain", "pretrain_cifar_only", "rNONE", "rMNIST", "rCIFAR", "mnist_only", "cifar_only"]
EVAL = ["rNONE", "rMNIST", "rCIFAR", "mnist_only", "cifar_only"]
TEST_MARK = 100 * 256
DIGITS, CIFAR = DEFAULTS["mnist_digits"], DEFAULTS["cifar_classes"]


# ------------------------------------------------------------------------------------------------ fixture data
def mnist_arrays(labels: np.ndarray, test: bool) -> np.ndarray:
    images = np.zeros((labels.size, 28, 28), np.uint8)
    images[:, 6:22, 8:20] = (20 * (labels + 1)).astype(np.uint8)[:, None, None]
    ident = np.arange(labels.size) + (TEST_MARK if test else 0)
    images[:, 0, 0], images[:, 0, 1] = ident % 256, ident // 256
    return images


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def cifar_rows(labels: np.ndarray, test: bool) -> np.ndarray:
    n = labels.size
    img = np.zeros((n, 3, 32, 32), np.uint8)
    img[:, 0] = (100 + labels)[:, None, None]
    ident = np.arange(n) + (TEST_MARK if test else 0)
    img[:, 1, 0], img[:, 1, 1] = (ident % 256)[:, None], (ident // 256)[:, None]
    img[:, 2] = np.arange(32)[None, :, None]
    return img.reshape(n, 3072)


def batch_pickle(data: np.ndarray, labels: np.ndarray, drop: str | None = None) -> bytes:
    batch = {
        b"batch_label": b"fixture batch",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    if drop:
        del batch[drop.encode()]
    return pickle.dumps(batch, protocol=2)  # as upstream (written by Python 2's cPickle)


def cifar_tar(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    *,
    drop: tuple[str, str] | None = None,
    skip: str | None = None,
    replace: dict[str, bytes] | None = None,
) -> bytes:
    data = cifar_rows(train_labels, False)
    members = {}
    for i, part in enumerate(np.array_split(np.arange(train_labels.size), 5), start=1):
        members[f"data_batch_{i}"] = (data[part], train_labels[part])
    members["test_batch"] = (cifar_rows(test_labels, True), test_labels)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        meta = pickle.dumps(
            {
                b"label_names": [
                    b"airplane",
                    b"automobile",
                    b"bird",
                    b"cat",
                    b"deer",
                    b"dog",
                    b"frog",
                    b"horse",
                    b"ship",
                    b"truck",
                ],
                b"num_vis": 3072,
            }
        )
        for name, payload in [("batches.meta", meta)] + [
            (n, batch_pickle(d, lab, drop[1] if drop and drop[0] == n else None)) for n, (d, lab) in members.items()
        ]:
            if name == skip:
                continue
            payload = (replace or {}).get(name, payload)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def fixture_labels() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    return {
        "mnist_train": rng.choice(10, 320, p=[0.3, 0.35] + [0.35 / 8] * 8),
        "mnist_test": rng.choice(10, 90, p=[0.3, 0.35] + [0.35 / 8] * 8),
        "cifar_train": rng.choice(10, 250, p=[0.05, 0.4] + [0.15 / 7] * 7 + [0.4]),
        "cifar_test": rng.choice(10, 80, p=[0.05, 0.4] + [0.15 / 7] * 7 + [0.4]),
    }


def write_archives(folder: Path, labels: dict[str, np.ndarray], **tar_kw) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(mnist_arrays(labels["mnist_train"], False)),
        "train-labels-idx1-ubyte.gz": idx_bytes(labels["mnist_train"]),
        "t10k-images-idx3-ubyte.gz": idx_bytes(mnist_arrays(labels["mnist_test"], True)),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(labels["mnist_test"]),
        "cifar-10-python.tar.gz": cifar_tar(labels["cifar_train"], labels["cifar_test"], **tar_kw),
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


def pinned(files: dict[str, Path], mirror: str) -> list[sources.Archive]:
    sums = {name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
    return sources.archives(KIND, mirror=mirror, checksums=sums)


def build(paths, out: Path, seed: int = 0, caps: dict | None = None, params: dict | None = None) -> dict:
    build_data({"kind": KIND, "params": params or {}, "caps": caps or {}, "seed": seed}, out, list(paths))
    return {name: load_dataset(out / name, mmap=False) for name in NAMES}


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)


@pytest.fixture(scope="module")
def labels() -> dict[str, np.ndarray]:
    return fixture_labels()


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, labels) -> list[Path]:
    """The fixture archives, served on loopback and fetched with their pinned sha256."""
    root = tmp_path_factory.mktemp("mc")
    files = write_archives(root / "upstream", labels)
    with serving() as server:
        serve_files(server, files)
        paths = [fetch(a, root / "resources", timeout=5, backoff=0.0) for a in pinned(files, server.url("/"))]
        assert sorted(p for p, _ in server.requests) == sorted("/" + n for n in files)
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory, downloaded) -> dict:
    return build(downloaded, tmp_path_factory.mktemp("mc_built"))


# ------------------------------------------------------------------------------------------------------ helpers
def mnist_digit(images: np.ndarray) -> np.ndarray:
    """Digit of each MNIST half (top 32 rows): square intensity 20 (d + 1) at the padded centre."""
    return images[:, 0, 2 + 14, 2 + 14].astype(int) // 20 - 1


def mnist_id(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 2, 2].astype(int) + 256 * images[:, 0, 2, 3].astype(int)


def cifar_label(images: np.ndarray, top: int = 32) -> np.ndarray:
    return images[:, 0, top, 0].astype(int) - 100


def cifar_id(images: np.ndarray, top: int = 32) -> np.ndarray:
    return images[:, 1, top, 0].astype(int) + 256 * images[:, 1, top + 1, 0].astype(int)


def block(ds, split: str) -> np.ndarray:
    return np.asarray(ds.select(split).images)


# -------------------------------------------------------------------------------------------------------- tests
def test_datasets_shapes_and_demo_conventions(built, tmp_path: Path) -> None:
    from splicer.data.demo import make_mnist_cifar

    demo = make_mnist_cifar(tmp_path / "demo", n_pretrain=4, n_train=4, n_val=2, n_test=2, half_size=8)
    assert sorted(demo) == sorted(NAMES)
    manifest = (built["rNONE"].path.parent / "manifest.json").read_text()
    for name in NAMES:
        ds, ref = built[name], load_dataset(demo[name])
        for key in ("channel_names", "class_names", "split_names", "mask_names"):
            assert ds.meta[key] == ref.meta[key], (name, key)
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64 and ds.masks is None
        assert ds.hw == ((64, 32) if name in ("pretrain", "rNONE", "rMNIST", "rCIFAR") else (32, 32))
        assert ds.channels == 3
        assert f'"{name}"' in manifest
        codes = np.asarray(ds.split)
        assert (np.diff(codes.astype(int)) >= 0).all()  # each split one contiguous block
    assert built["rMNIST"].meta["info"]["randomised"] == "mnist"
    assert built["rCIFAR"].meta["info"]["randomised"] == "cifar"
    assert built["rNONE"].meta["info"]["regions"] == {
        "mnist": {"rows": [0, 32], "cols": [0, 32]},
        "cifar": {"rows": [32, 64], "cols": [0, 32]},
    }


def test_pairing_counts_and_splits(built, labels) -> None:
    ds = built["rNONE"]
    expected = {}
    for pool in ("train", "test"):
        m, c = labels[f"mnist_{pool}"], labels[f"cifar_{pool}"]
        expected[pool] = [min((m == d).sum(), (c == k).sum()) for d, k in zip(DIGITS, CIFAR, strict=True)]
    counts = {s: np.bincount(np.asarray(ds.select(s).labels), minlength=2) for s in ("train", "val", "test")}
    assert (counts["train"] + counts["val"]).tolist() == expected["train"]
    assert counts["test"].tolist() == expected["test"]
    for c in (0, 1):  # stratified val of ~10% per class
        assert counts["val"][c] == expected["train"][c] - round(0.9 * expected["train"][c]) > 0
    assert ds.meta["info"]["upstream"]["test"]["1"]["pairs"] == expected["test"][1]


def test_labels_layout_and_pools(built) -> None:
    ds = built["rNONE"]
    img, y = np.asarray(ds.images), np.asarray(ds.labels)
    assert (mnist_digit(img) == np.asarray(DIGITS)[y]).all()  # the MNIST half of class 1 rows is a "1"
    assert (cifar_label(img) == np.asarray(CIFAR)[y]).all()  # ... and the CIFAR half a truck
    assert (img[:, 0, :32] == img[:, 1, :32]).all() and (img[:, 0, :32] == img[:, 2, :32]).all()  # grey -> RGB
    assert not img[:, :, [0, 1, 30, 31]].any() and not img[:, :, :32][..., [0, 1, 30, 31]].any()  # zero padding
    assert (img[:, 2, 32:] == np.arange(32)[None, :, None]).all()  # B plane, row-major 32x32
    assert not img[:, 1, 34:].any()  # G plane: only its first two rows are set
    split = np.asarray(ds.split)
    test = split == 2
    assert (mnist_id(img)[test] >= TEST_MARK).all() and (mnist_id(img)[~test] < TEST_MARK).all()
    assert (cifar_id(img)[test] >= TEST_MARK).all() and (cifar_id(img)[~test] < TEST_MARK).all()
    # every upstream image used at most once (train and val are disjoint)
    for ident in (mnist_id(img), cifar_id(img)):
        assert np.unique(ident).size == ident.size
    # both classes appear interleaved, not in class blocks
    assert np.abs(np.diff(y[split == 0])).sum() > 5


def test_pretrain_halves_and_variants_share_rows(built) -> None:
    none = built["rNONE"]
    np.testing.assert_array_equal(built["pretrain"].images, block(none, "train"))
    np.testing.assert_array_equal(built["pretrain"].labels, none.select("train").labels)
    np.testing.assert_array_equal(built["pretrain_cifar_only"].images, np.asarray(built["pretrain"].images)[:, :, 32:])
    np.testing.assert_array_equal(built["mnist_only"].images, np.asarray(none.images)[:, :, :32])
    np.testing.assert_array_equal(built["cifar_only"].images, np.asarray(none.images)[:, :, 32:])
    for name in EVAL:
        np.testing.assert_array_equal(built[name].labels, none.labels)
        np.testing.assert_array_equal(built[name].split, none.split)


@pytest.mark.parametrize(
    ("name", "kept", "shuffled"), [("rMNIST", slice(32, 64), slice(0, 32)), ("rCIFAR", slice(0, 32), slice(32, 64))]
)
def test_randomised_half_is_decorrelated(built, name: str, kept: slice, shuffled: slice) -> None:
    none, ds = built["rNONE"], built[name]
    for split in ("train", "val", "test"):
        a, b = block(none, split), block(ds, split)
        np.testing.assert_array_equal(b[:, :, kept], a[:, :, kept])  # the other half is untouched
        # the randomised halves are the same images, shuffled among the split's rows
        key = (lambda x: mnist_id(x)) if name == "rMNIST" else (lambda x: cifar_id(x))
        assert sorted(key(b)) == sorted(key(a))
        assert not np.array_equal(b[:, :, shuffled], a[:, :, shuffled])
    img, y = np.asarray(ds.images), np.asarray(ds.labels)
    half_class = (mnist_digit(img) == DIGITS[1]) if name == "rMNIST" else (cifar_label(img) == CIFAR[1])
    agree = float(np.mean(half_class.astype(int) == y))
    assert 0.35 < agree < 0.65, agree  # about chance: only the other half predicts the label
    assert abs(np.corrcoef(half_class, y)[0, 1]) < 0.2
    info = ds.meta["info"]["randomised_half_agrees_with_label"]
    assert set(info) == {"train", "val", "test"}


def test_deterministic_and_seeded(built, downloaded, tmp_path: Path) -> None:
    again = build(downloaded, tmp_path / "again")
    for name in NAMES:
        np.testing.assert_array_equal(again[name].images, built[name].images)
        np.testing.assert_array_equal(again[name].labels, built[name].labels)
        np.testing.assert_array_equal(again[name].split, built[name].split)
    other = build(downloaded, tmp_path / "seed1", seed=1)
    assert not np.array_equal(other["rNONE"].images, built["rNONE"].images)
    for s in ("train", "val", "test"):  # same class counts per split, different pairing
        assert (
            np.bincount(other["rNONE"].select(s).labels).tolist()
            == np.bincount(built["rNONE"].select(s).labels).tolist()
        )


def test_caps(downloaded, tmp_path: Path, built) -> None:
    caps = {"*": 9, "rNONE/test": 5, "pretrain": 20, "cifar_only": 4}
    ds = build(downloaded, tmp_path / "capped", caps=caps)
    assert ds["pretrain"].n == 20 and ds["pretrain_cifar_only"].n == 9
    for name in ("rNONE", "rMNIST", "rCIFAR", "mnist_only"):
        assert [ds[name].select(s).n for s in ("train", "val", "test")] == [9, 9, 5], name
    assert [ds["cifar_only"].select(s).n for s in ("train", "val", "test")] == [4, 4, 4]
    none = ds["rNONE"]
    # capped rows are a subset of the uncapped build, in order; the variants share rNONE's rows
    full_ids = cifar_id(np.asarray(built["rNONE"].images))
    ids = cifar_id(np.asarray(none.images))
    assert np.isin(ids, full_ids).all()
    np.testing.assert_array_equal(ids[:9], full_ids[np.isin(full_ids, ids[:9])])
    np.testing.assert_array_equal(np.asarray(ds["rMNIST"].images)[:, :, 32:], np.asarray(none.images)[:, :, 32:])
    np.testing.assert_array_equal(ds["mnist_only"].images, np.asarray(none.images)[:, :, :32])
    assert np.isin(cifar_id(np.asarray(ds["cifar_only"].images), 0), ids).all()
    assert np.isin(
        cifar_id(np.asarray(ds["pretrain_cifar_only"].images), 0), cifar_id(np.asarray(ds["pretrain"].images))
    ).all()


def test_params(downloaded, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown params key"):
        build(downloaded, tmp_path / "a", params={"n_train": 3})
    with pytest.raises(ValueError, match="val_fraction"):
        build(downloaded, tmp_path / "b", params={"val_fraction": 1.0})
    with pytest.raises(ValueError, match="mnist_digits"):
        build(downloaded, tmp_path / "c", params={"mnist_digits": [1, 1]})
    ds = build(
        downloaded, tmp_path / "d", params={"mnist_digits": [2, 3], "cifar_classes": [0, 1], "val_fraction": 0.25}
    )
    img, y = np.asarray(ds["rNONE"].images), np.asarray(ds["rNONE"].labels)
    assert (mnist_digit(img) == np.array([2, 3])[y]).all() and (cifar_label(img) == np.array([0, 1])[y]).all()
    assert ds["rNONE"].meta["info"]["class_meaning"] == {"0": "digit 2 / airplane", "1": "digit 3 / automobile"}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), cap=st.one_of(st.none(), st.integers(1, 60)))
def test_invariants_hold_for_any_seed_and_cap(downloaded, tmp_path_factory, seed: int, cap: int | None) -> None:
    ds = build(downloaded, tmp_path_factory.mktemp("prop"), seed=seed, caps={"*": cap} if cap else {})
    none, rm, rc = (np.asarray(ds[n].images) for n in ("rNONE", "rMNIST", "rCIFAR"))
    y = np.asarray(ds["rNONE"].labels)
    assert (mnist_digit(none) == np.asarray(DIGITS)[y]).all() and (cifar_label(none) == np.asarray(CIFAR)[y]).all()
    assert (cifar_label(rm) == np.asarray(CIFAR)[y]).all() and (mnist_digit(rc) == np.asarray(DIGITS)[y]).all()
    np.testing.assert_array_equal(rm[:, :, 32:], none[:, :, 32:])
    np.testing.assert_array_equal(rc[:, :, :32], none[:, :, :32])
    split = np.asarray(ds["rNONE"].split)
    for code in range(3):
        sel = split == code
        assert sorted(mnist_id(rm[sel])) == sorted(mnist_id(none[sel]))
        assert sorted(cifar_id(rc[sel])) == sorted(cifar_id(none[sel]))
        if cap:
            assert sel.sum() <= cap
    assert (np.diff(split.astype(int)) >= 0).all()


# ---------------------------------------------------------------------------------------------------- faults
def test_corrupted_download_is_rejected_and_never_built(tmp_path: Path, labels) -> None:
    files = write_archives(tmp_path / "upstream", labels)
    with serving() as server:
        serve_files(server, files)
        server.routes["/cifar-10-python.tar.gz"] = Route(files["cifar-10-python.tar.gz"].read_bytes(), corrupt=True)
        archives = {a.name: a for a in pinned(files, server.url("/"))}
        with pytest.raises(ChecksumError, match=r"cifar-10-python\.tar\.gz"):
            fetch(archives["cifar-10-python.tar.gz"], tmp_path / "res", timeout=5, backoff=0.0)
        got = [fetch(a, tmp_path / "res", timeout=5, backoff=0.0) for n, a in archives.items() if "cifar" not in n]
    assert not (tmp_path / "res" / "cifar-10-python.tar.gz").exists()
    with pytest.raises(BuildError, match=r"cifar-10-python\.tar\.gz"):
        build_data({"kind": KIND, "seed": 0}, tmp_path / "out", got)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("*/meta.json"))


def test_served_bad_idx_magic_downloads_but_fails_to_build(tmp_path: Path, labels) -> None:
    files = write_archives(tmp_path / "upstream", labels)
    bad = files["t10k-labels-idx1-ubyte.gz"]
    bad.write_bytes(idx_bytes(labels["mnist_test"], magic=2051))
    with serving() as server:
        serve_files(server, files)
        paths = [fetch(a, tmp_path / "res", timeout=5, backoff=0.0) for a in pinned(files, server.url("/"))]
    with pytest.raises(BuildError, match=r"t10k-labels-idx1-ubyte\.gz.*magic number 2051"):
        build_data({"kind": KIND, "seed": 0}, tmp_path / "out", paths)
    assert not (tmp_path / "out" / "manifest.json").exists()


def _broken_idx(kind: str, labels: dict) -> bytes:
    images = mnist_arrays(labels["mnist_train"], False)
    good = idx_bytes(images)
    if kind == "truncated_gz":
        return good[: len(good) // 2]
    if kind == "not_gz":
        return b"this is not gzip at all"
    if kind == "short_data":
        raw = gzip.decompress(good)
        return gzip.compress(raw[:-100])
    if kind == "wrong_dims":
        return idx_bytes(images[:, :, :27].copy())
    if kind == "count_mismatch":
        return idx_bytes(images[:-1])
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated_gz", "not a readable gzip"),
        ("not_gz", "not a readable gzip"),
        ("short_data", "truncated"),
        ("wrong_dims", r"dimensions \(320, 28, 27\)"),
        ("count_mismatch", "319 images but"),
    ],
)
def test_broken_idx_images(tmp_path: Path, labels, kind: str, message: str) -> None:
    files = write_archives(tmp_path / "raw", labels)
    files["train-images-idx3-ubyte.gz"].write_bytes(_broken_idx(kind, labels))
    with pytest.raises(BuildError, match=message) as info:
        build_data({"kind": KIND, "seed": 0}, tmp_path / "out", list(files.values()))
    assert str(files["train-images-idx3-ubyte.gz"]) in str(info.value)
    assert info.value.file == str(files["train-images-idx3-ubyte.gz"])


def test_bad_label_idx_magic(tmp_path: Path, labels) -> None:
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    f.write_bytes(idx_bytes(labels["mnist_train"], magic=0x0803))
    with pytest.raises(BuildError, match=r"train-labels-idx1-ubyte\.gz: bad idx magic number 2051"):
        read_idx(f, "labels")


MEMBER = "cifar-10-batches-py/data_batch_3"


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/splicer-test-evil-should-not-exist",))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("drop_labels", rf"{MEMBER}: CIFAR-10 batch lacks key\(s\) \[b'labels'\]"),
        ("drop_data", rf"{MEMBER}: CIFAR-10 batch lacks key\(s\) \[b'data'\]"),
        ("missing_member", r"cifar-10-batches-py/test_batch: missing from the archive"),
        ("not_pickle", rf"{MEMBER}: cannot unpickle"),
        ("evil_global", rf"{MEMBER}: cannot unpickle .*posix.system|{MEMBER}: cannot unpickle .*os.system"),
        ("wrong_width", rf"{MEMBER}: b'data' must be a uint8 array"),
        ("label_count", rf"{MEMBER}: b'labels' has shape"),
    ],
)
def test_broken_cifar_batches(tmp_path: Path, labels, case: str, message: str) -> None:
    kw: dict = {}
    if case == "drop_labels":
        kw["drop"] = ("data_batch_3", "labels")
    elif case == "drop_data":
        kw["drop"] = ("data_batch_3", "data")
    elif case == "missing_member":
        kw["skip"] = "test_batch"
    elif case == "not_pickle":
        kw["replace"] = {"data_batch_3": b"garbage, not a pickle"}
    elif case == "evil_global":
        kw["replace"] = {"data_batch_3": pickle.dumps({b"data": _Evil(), b"labels": []})}
    elif case == "wrong_width":
        kw["replace"] = {"data_batch_3": pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [1, 1, 9]})}
    elif case == "label_count":
        kw["replace"] = {"data_batch_3": pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 9]})}
    files = write_archives(tmp_path / "raw", labels, **kw)
    with pytest.raises(BuildError, match=message) as info:
        build_data({"kind": KIND, "seed": 0}, tmp_path / "out", list(files.values()))
    assert str(files["cifar-10-python.tar.gz"]) in str(info.value)
    assert not Path("/tmp/splicer-test-evil-should-not-exist").exists()


def test_truncated_tarball_and_missing_archive(tmp_path: Path, labels) -> None:
    files = write_archives(tmp_path / "raw", labels)
    tar = files["cifar-10-python.tar.gz"]
    tar.write_bytes(tar.read_bytes()[:-200])
    with pytest.raises(BuildError, match=r"cifar-10-python\.tar\.gz"):
        read_cifar_batches(tar)
    del files["t10k-images-idx3-ubyte.gz"]
    with pytest.raises(BuildError, match=r"t10k-images-idx3-ubyte\.gz.*was not provided"):
        build_data({"kind": KIND, "seed": 0}, tmp_path / "out", list(files.values()))


def test_other_pickle_protocols_and_str_keys_are_read(tmp_path: Path, labels) -> None:
    """Besides upstream's protocol-2 pickles with byte keys: protocol 5 and str keys (a re-pickled copy)."""
    data = cifar_rows(np.array([1, 9, 3]), False)
    raw = pickle.dumps({b"data": data, b"labels": [1, 9, 3]}, protocol=5)
    str_keys = pickle.dumps({"data": data, "labels": [1, 9, 3]}, protocol=4)
    files = write_archives(tmp_path / "raw", labels, replace={"data_batch_1": raw, "data_batch_2": str_keys})
    out = read_cifar_batches(files["cifar-10-python.tar.gz"], keep=[1, 9])
    assert out["train"][0][:2].tolist() == [1, 9] and out["train"][0][2:4].tolist() == [1, 9]


# ------------------------------------------------------------------------------ torchvision's folders, in place
def torchvision_root(root: Path, files: dict[str, Path]) -> Path:
    """What torchvision's ``MNIST(root, download=True)`` and ``CIFAR10(root, download=True)`` leave in ``root``:
    ``MNIST/raw/`` with each ``.gz`` and its extracted idx file (here the t10k images' ``.gz`` deleted by the
    user), and ``cifar-10-batches-py/`` extracted from the tarball (the tarball deleted)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, path in files.items():
        if name.endswith("-ubyte.gz"):
            (raw / name[:-3]).write_bytes(gzip.decompress(path.read_bytes()))
            if name != "t10k-images-idx3-ubyte.gz":
                (raw / name).write_bytes(path.read_bytes())
    with tarfile.open(files["cifar-10-python.tar.gz"]) as tar:
        tar.extractall(root, filter="data")
    return root


def test_torchvision_folders_are_read_in_place(tmp_path: Path, labels, built, monkeypatch) -> None:
    from splicer.pipeline.archives import archive_files

    files = write_archives(tmp_path / "upstream", labels)
    root = torchvision_root(tmp_path / "torchvision", files)
    batches = root / "cifar-10-batches-py"
    # as if the fixture batches and .gz files were the upstream ones (torchvision's md5s are of the real files)
    md5s = {b: hashlib.md5((batches / b).read_bytes()).hexdigest() for b in sources.TORCHVISION_CIFAR10_BATCHES}
    monkeypatch.setattr(sources, "TORCHVISION_CIFAR10_BATCHES", md5s)
    gz = {n: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for n, p in files.items() if n.endswith(".gz")}
    del gz["t10k-images-idx3-ubyte.gz"]
    found = {a.name: a for a in sources.archives(KIND, path=str(root), checksums=gz)}
    assert found["train-images-idx3-ubyte.gz"].local == str(root / "MNIST/raw/train-images-idx3-ubyte.gz")
    extracted = found["t10k-images-idx3-ubyte.gz"]
    assert extracted.local == str(root / "MNIST/raw/t10k-images-idx3-ubyte") and extracted.md5 is None
    assert found["cifar-10-python.tar.gz"].local == str(batches) and found["cifar-10-python.tar.gz"].md5 is None
    records = []
    for archive in found.values():
        record = tmp_path / "resources" / KIND / ".verified" / f"{archive.name}.json"
        download.fetch_verified(archive, record.parent.parent, record)
        records.append(record)
    assert not any((tmp_path / "resources" / KIND).glob("*.gz"))  # nothing downloaded or copied
    out = tmp_path / "in_place"
    build_data({"kind": KIND, "seed": 0}, out, archive_files(records))
    for name in NAMES:  # byte for byte the datasets built from the archives
        np.testing.assert_array_equal(load_dataset(out / name, mmap=False).images, built[name].images)
    # a damaged batch is named and left where it is (the user's copy is never moved)
    (batches / "data_batch_3").write_bytes(b"\x80\x02}q\x00." + b"0" * 10)
    with pytest.raises(ChecksumError, match=r"data_batch_3.*read in place"):
        download.fetch_verified(found["cifar-10-python.tar.gz"], tmp_path / "resources" / KIND, records[-1])
    assert (batches / "data_batch_3").exists()
    # an extracted idx file cut short fails its header's size
    cut = root / "MNIST/raw/t10k-images-idx3-ubyte"
    cut.write_bytes(cut.read_bytes()[:-5])
    with pytest.raises(ChecksumError, match="idx"):
        download.fetch(extracted, tmp_path / "resources" / KIND)
