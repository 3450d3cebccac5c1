"""Tests for the on-disk dataset format (splicer.data.format)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from splicer.data import format as fmt
from splicer.data.format import DatasetFormatError, ImageDataset, load_dataset, save_dataset, to_float


def _meta(c: int = 3, masks: int = 0, **over) -> dict:
    meta = {
        "name": "toy",
        "channel_names": [f"ch{i}" for i in range(c)],
        "class_names": ["a", "b", "c"],
        "split_names": ["train", "val", "test"],
        "mask_names": [f"m{i}" for i in range(masks)],
        "info": {"seed": np.int64(3), "shape": np.array([1, 2])},
    }
    meta.update(over)
    return meta


def _arrays(n: int = 12, c: int = 3, hw: int = 8, dtype=np.uint8, masks: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    images = rng.integers(0, hi, (n, c, hw, hw), endpoint=True).astype(dtype)
    labels = (np.arange(n) % 3).astype(np.int64)
    labels[0] = -1
    split = np.repeat(np.array([0, 1, 2], dtype=np.uint8), [n // 2, n // 4, n - n // 2 - n // 4])
    m = rng.integers(0, 2, (n, masks, hw, hw)).astype(np.uint8) if masks else None
    return images, labels, split, m


def _save_toy(path: Path, **kw) -> Path:
    images, labels, split, masks = _arrays(**kw)
    return save_dataset(path, images, labels, split, _meta(c=images.shape[1], masks=kw.get("masks", 0)), masks)


def test_round_trip_uint8_with_masks(tmp_path):
    images, labels, split, masks = _arrays(masks=2)
    root = save_dataset(tmp_path / "ds", images, labels, split, _meta(masks=2), masks=masks)
    ds = load_dataset(root)
    assert isinstance(ds, ImageDataset)
    assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.split, split)
    np.testing.assert_array_equal(ds.masks, masks)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64 and ds.split.dtype == np.uint8
    assert (ds.n, ds.channels, ds.size, ds.hw) == (12, 3, 8, (8, 8))
    assert ds.meta["mask_names"] == ["m0", "m1"] and ds.meta["info"] == {"seed": 3, "shape": [1, 2]}
    assert ds.path == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp directories left behind


def test_round_trip_uint16_no_mmap_and_int_casts(tmp_path):
    images, labels, split, _ = _arrays(dtype=np.uint16, c=13)
    root = save_dataset(tmp_path / "hs", images, labels.astype(np.int32), split.astype(np.int64), _meta(c=13))
    ds = load_dataset(root, mmap=False)
    assert not isinstance(ds.images, np.memmap)
    assert ds.images.dtype == np.uint16 and ds.images.max() > 255
    np.testing.assert_array_equal(ds.images, images)
    assert ds.labels.dtype == np.int64 and ds.split.dtype == np.uint8
    assert ds.masks is None and not (root / "masks.npy").exists()


def test_non_square_size_is_largest_side(tmp_path):
    images = np.zeros((2, 3, 32, 16), np.uint8)
    ds = load_dataset(save_dataset(tmp_path / "mc", images, [0, 1], [0, 0], _meta()))
    assert ds.hw == (32, 16) and ds.size == 32


def test_select_and_class_counts(tmp_path):
    ds = load_dataset(_save_toy(tmp_path / "ds"))
    train, val, test = (ds.select(s) for s in ("train", "val", "test"))
    assert (train.n, val.n, test.n) == (6, 3, 3)
    assert isinstance(train.images, np.memmap)  # contiguous split -> still a memory-mapped view
    np.testing.assert_array_equal(test.images, ds.images[9:])
    assert ds.class_counts() == {"a": 3, "b": 4, "c": 4}  # label -1 not counted
    assert train.class_counts() == {"a": 1, "b": 2, "c": 2}
    with pytest.raises(DatasetFormatError, match="'holdout'"):
        ds.select("holdout")


def test_select_non_contiguous_split(tmp_path):
    images, labels, _, _ = _arrays(n=6)
    split = np.array([0, 1, 0, 1, 0, 2], np.uint8)
    ds = load_dataset(save_dataset(tmp_path / "ds", images, labels, split, _meta()))
    val = ds.select("val")
    np.testing.assert_array_equal(val.images, images[[1, 3]])
    np.testing.assert_array_equal(val.labels, labels[[1, 3]])


# ------------------------------------------------------------------------------------ validation on load
def _assert_names(err: pytest.ExceptionInfo, file: Path, key: str) -> None:
    msg = str(err.value)
    assert str(file) in msg, msg
    assert repr(key) in msg, msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("key", ["name", "channel_names", "class_names", "split_names", "mask_names"])
def test_load_missing_meta_key(tmp_path, key):
    root = _save_toy(tmp_path / "ds")
    meta = json.loads((root / "meta.json").read_text())
    del meta[key]
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(root)
    _assert_names(err, root / "meta.json", key)


def test_load_channel_names_mismatch(tmp_path):
    root = _save_toy(tmp_path / "ds")
    meta = json.loads((root / "meta.json").read_text())
    meta["channel_names"] = ["only", "two"]
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(root)
    _assert_names(err, root / "meta.json", "channel_names")


@pytest.mark.parametrize("key", ["images", "labels", "split", "meta"])
def test_load_missing_file(tmp_path, key):
    root = _save_toy(tmp_path / "ds")
    file = root / ("meta.json" if key == "meta" else f"{key}.npy")
    file.unlink()
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(root)
    _assert_names(err, file, key)


def test_load_missing_directory(tmp_path):
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(tmp_path / "nope")
    _assert_names(err, tmp_path / "nope", "path")


def test_load_missing_masks_file(tmp_path):
    root = _save_toy(tmp_path / "ds", masks=1)
    (root / "masks.npy").unlink()
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(root)
    _assert_names(err, root / "masks.npy", "masks")


@pytest.mark.parametrize("key", ["labels", "split", "masks"])
def test_load_length_mismatch(tmp_path, key):
    root = _save_toy(tmp_path / "ds", masks=1)
    arr = np.load(root / f"{key}.npy")
    np.save(root / f"{key}.npy", arr[:-1])
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(root)
    _assert_names(err, root / f"{key}.npy", key)


def test_load_wrong_dtype_and_ndim(tmp_path):
    root = _save_toy(tmp_path / "ds")
    np.save(root / "images.npy", np.zeros((12, 3, 8, 8), np.float32))
    with pytest.raises(DatasetFormatError, match="uint8 or uint16") as err:
        load_dataset(root)
    _assert_names(err, root / "images.npy", "images")
    np.save(root / "images.npy", np.zeros((12, 8, 8), np.uint8))
    with pytest.raises(DatasetFormatError, match="4-D") as err:
        load_dataset(root)
    _assert_names(err, root / "images.npy", "images")
    np.save(root / "images.npy", np.zeros((12, 3, 8, 8), np.uint8))
    np.save(root / "labels.npy", np.zeros(12, np.int32))
    with pytest.raises(DatasetFormatError, match="int64") as err:
        load_dataset(root)
    _assert_names(err, root / "labels.npy", "labels")


def test_load_split_code_out_of_range(tmp_path):
    root = _save_toy(tmp_path / "ds")
    split = np.load(root / "split.npy")
    split[3] = 3
    np.save(root / "split.npy", split)
    with pytest.raises(DatasetFormatError, match="code 3") as err:
        load_dataset(root)
    _assert_names(err, root / "split.npy", "split")


# ------------------------------------------------------------------------------------ validation on save
def test_save_rejects_bad_inputs_naming_file_and_key(tmp_path):
    images, labels, split, masks = _arrays(masks=1)
    root = (tmp_path / "ds").absolute()
    cases = [
        (dict(images=images.astype(np.float32)), "images.npy", "images"),
        (dict(images=images[0]), "images.npy", "images"),
        (dict(labels=labels[:-1]), "labels.npy", "labels"),
        (dict(labels=labels.astype(np.float64)), "labels.npy", "labels"),
        (dict(labels=labels + 5), "labels.npy", "labels"),
        (dict(split=split[:-2]), "split.npy", "split"),
        (dict(split=np.full_like(split, 7)), "split.npy", "split"),
        (dict(masks=masks[:-1]), "masks.npy", "masks"),
        (dict(masks=masks * 3), "masks.npy", "masks"),
        (dict(masks=None), "masks.npy", "masks"),
        (dict(meta=_meta(c=4, masks=1)), "meta.json", "channel_names"),
        (dict(meta=_meta(masks=2)), "meta.json", "mask_names"),
        (dict(meta={k: v for k, v in _meta(masks=1).items() if k != "split_names"}), "meta.json", "split_names"),
        (dict(meta=_meta(masks=1, info={"obj": object()})), "meta.json", "meta"),
    ]
    for override, file, key in cases:
        kw = dict(images=images, labels=labels, split=split, meta=_meta(masks=1), masks=masks) | override
        with pytest.raises(DatasetFormatError) as err:
            save_dataset(root, **kw)
        _assert_names(err, root / file, key)
        assert not root.exists(), f"nothing may be written when {key} is invalid"


def test_save_accepts_bool_masks(tmp_path):
    images, labels, split, masks = _arrays(masks=1)
    ds = load_dataset(save_dataset(tmp_path / "ds", images, labels, split, _meta(masks=1), masks.astype(bool)))
    assert ds.masks.dtype == np.uint8
    np.testing.assert_array_equal(ds.masks, masks)


# ------------------------------------------------------------------------------------------- atomicity
def test_overwrite_is_atomic_and_old_mmap_stays_readable(tmp_path):
    root = _save_toy(tmp_path / "ds", seed=0)
    old = load_dataset(root)
    old_copy = np.array(old.images)
    images, labels, split, _ = _arrays(n=20, seed=1)
    save_dataset(root, images, labels, split, _meta())
    new = load_dataset(root)
    assert new.n == 20
    np.testing.assert_array_equal(new.images, images)
    np.testing.assert_array_equal(old.images, old_copy)  # the old memory map is still valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_failed_write_keeps_previous_dataset(tmp_path, monkeypatch):
    root = _save_toy(tmp_path / "ds", seed=0)
    before = np.array(load_dataset(root).images)
    calls = {"n": 0}
    real_save = np.save

    def flaky_save(file, arr, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_save(file, arr, **kw)

    monkeypatch.setattr(fmt.np, "save", flaky_save)
    images, labels, split, _ = _arrays(seed=5)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(root, images, labels, split, _meta())
    monkeypatch.undo()
    np.testing.assert_array_equal(load_dataset(root).images, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_stale_temp_dir_is_replaced(tmp_path):
    import os

    stale = tmp_path / f"ds.tmp-{os.getpid()}"
    stale.mkdir()
    (stale / "junk.npy").write_text("x")
    root = _save_toy(tmp_path / "ds")
    assert load_dataset(root).n == 12 and not stale.exists()


# --------------------------------------------------------------------------------------------- to_float
def test_to_float_numpy_and_torch():
    u8 = np.array([[0, 128, 255]], np.uint8)
    u16 = np.array([[0, 32768, 65535]], np.uint16)
    out8, out16 = to_float(u8), to_float(u16)
    assert out8.dtype == torch.float32 and out16.dtype == torch.float32
    torch.testing.assert_close(out8, torch.tensor([[0.0, 128 / 255, 1.0]]))
    torch.testing.assert_close(out16, torch.tensor([[0.0, 32768 / 65535, 1.0]]))
    torch.testing.assert_close(to_float(torch.from_numpy(u8)), out8, rtol=0, atol=0)
    torch.testing.assert_close(to_float(torch.from_numpy(u16.astype(np.int32)).to(torch.uint16)), out16)
    f = np.array([0.25], np.float64)
    torch.testing.assert_close(to_float(f), torch.tensor([0.25]))
    with pytest.raises(TypeError, match="int32"):
        to_float(np.array([1], np.int32))


def test_to_float_reads_memmap_without_warning(tmp_path):
    ds = load_dataset(_save_toy(tmp_path / "ds"))
    x = to_float(ds.images)
    assert x.shape == (12, 3, 8, 8) and float(x.max()) <= 1.0
    x[0] = 0  # writable result, independent of the read-only map
    assert ds.images[0].any()
