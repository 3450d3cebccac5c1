"""Shared pieces of the real-dataset builders: caps, splits, parameter checks, the streaming writer, and the
mirror/checksum source options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splicer.data import sources
from splicer.data.format import DatasetFormatError, DatasetWriter, load_dataset
from splicer.data.real.common import BuildError, Caps, check_params, require, split_order, three_way_split

META = {
    "name": "x",
    "channel_names": ["a"],
    "class_names": ["p", "q"],
    "split_names": ["train", "test"],
    "mask_names": [],
}


# ------------------------------------------------------------------------------------------------------- caps
def test_caps_most_specific_key_wins() -> None:
    caps = Caps({"*": 50, "pretrain": 20, "cell_types/train": 7})
    assert caps.limit("cell_types", "train") == 7
    assert caps.limit("cell_types", "test") == 50
    assert caps.limit("pretrain", "train") == 20
    assert Caps().limit("any", "train") is None


@given(n=st.integers(0, 300), cap=st.integers(1, 100), seed=st.integers(0, 5))
@settings(max_examples=60, deadline=None)
def test_caps_keep_a_sorted_subset_of_at_most_cap_rows(n: int, cap: int, seed: int) -> None:
    rows = np.arange(n) * 3 + 1
    kept = Caps({"*": cap}).apply(rows, "d", "train", seed)
    assert kept.size == min(n, cap)
    assert np.all(np.diff(kept) > 0) and set(kept) <= set(rows)
    np.testing.assert_array_equal(kept, Caps({"*": cap}).apply(rows, "d", "train", seed))  # deterministic


@pytest.mark.parametrize("limits", [{"*": 0}, {"a/b/c": 3}, {"x": 2.5}, {"x": True}, {"": 1}])
def test_caps_reject_bad_keys_and_values(limits: dict) -> None:
    with pytest.raises(ValueError, match="caps"):
        Caps(limits)


# ----------------------------------------------------------------------------------------------------- splits
@given(n=st.integers(0, 400), k=st.integers(1, 5), seed=st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_three_way_split_is_stratified_and_deterministic(n: int, k: int, seed: int) -> None:
    labels = np.arange(n) % k
    codes = three_way_split(n, [0.6, 0.2, 0.2], seed, "key", labels)
    np.testing.assert_array_equal(codes, three_way_split(n, [0.6, 0.2, 0.2], seed, "key", labels))
    for c in range(k):
        per_class = codes[labels == c]
        m = per_class.size
        assert abs((per_class == 0).sum() - 0.6 * m) <= 1
        assert abs((per_class == 1).sum() - 0.2 * m) <= 1


def test_three_way_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="fractions"):
        three_way_split(10, [0.5, 0.5, 0.5], 0, "k")


def test_split_order_makes_each_split_contiguous() -> None:
    split = np.array([2, 0, 1, 0, 2, 1, 0], np.uint8)
    ordered = split[split_order(split)]
    assert ordered.tolist() == sorted(split.tolist())
    assert split_order(split)[:3].tolist() == [1, 3, 6]  # stable


# ----------------------------------------------------------------------------------------------------- params
def test_check_params_fills_defaults_and_names_bad_keys() -> None:
    defaults = {"size": 32, "fractions": [0.8, 0.1, 0.1], "gate": "otsu"}
    assert check_params("k", {"size": 64}, defaults)["size"] == 64
    with pytest.raises(ValueError, match=r"unknown params key\(s\) \['sise'\]"):
        check_params("k", {"sise": 64}, defaults)
    with pytest.raises(ValueError, match=r"params\.size"):
        check_params("k", {"size": "big"}, defaults)


def test_require_names_the_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"resources/mnist/a\.gz"):
        require({}, "a.gz", "mnist")
    with pytest.raises(BuildError, match="missing"):
        require({"a.gz": tmp_path / "a.gz"}, "a.gz", "mnist")


# ----------------------------------------------------------------------------------------------------- writer
def test_dataset_writer_streams_rows_and_moves_into_place(tmp_path: Path) -> None:
    meta = {**META, "mask_names": ["m"]}
    with DatasetWriter(tmp_path / "d", 4, (1, 3, 3), meta, dtype=np.uint16, n_masks=1) as w:
        for row in (3, 1, 0, 2):  # any order
            w.write(row, np.full((1, 3, 3), row * 1000), row % 2, int(row >= 2), np.ones((1, 3, 3)) * (row % 2))
    data = load_dataset(tmp_path / "d")
    assert data.images.dtype == np.uint16 and data.images[:, 0, 0, 0].tolist() == [0, 1000, 2000, 3000]
    assert data.labels.tolist() == [0, 1, 0, 1] and data.split.tolist() == [0, 0, 1, 1]
    assert data.masks[:, 0, 0, 0].tolist() == [0, 1, 0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_dataset_writer_leaves_nothing_on_error_or_missing_rows(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path / "d", 2, (1, 2, 2), META) as w:
        w.write(0, np.zeros((1, 2, 2)), 0, 0)
        raise RuntimeError("reader failed")
    assert list(tmp_path.iterdir()) == []
    w = DatasetWriter(tmp_path / "d", 2, (1, 2, 2), META)
    w.write(0, np.zeros((1, 2, 2)), 0, 0)
    with pytest.raises(DatasetFormatError, match="1 rows never written"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_dataset_writer_validates_labels_against_meta(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="labels"), DatasetWriter(tmp_path / "d", 1, (1, 2, 2), META) as w:
        w.write(0, np.zeros((1, 2, 2)), 5, 0)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------- sources
def test_mirror_and_pinned_checksums_replace_url_and_digest() -> None:
    pin = {"t10k-labels-idx1-ubyte.gz": "sha256:" + "a" * 64}
    found = sources.archives("mnist_cifar", mirror="http://127.0.0.1:9/m/", checksums=pin)
    by_name = {a.name: a for a in found}
    assert all(a.url == f"http://127.0.0.1:9/m/{a.name}" for a in found)
    pinned = by_name["t10k-labels-idx1-ubyte.gz"]
    assert pinned.sha256 == "a" * 64 and pinned.md5 is None and pinned.size is None
    assert by_name["t10k-images-idx3-ubyte.gz"].md5 == "9fb629c4189551a2d022fa330f9573f3"  # others keep theirs


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mirror": "ftp://x"}, "mirror"),
        ({"checksums": {"nope.gz": "md5:" + "0" * 32}}, "unknown file"),
        ({"checksums": {"t10k-labels-idx1-ubyte.gz": "crc:1"}}, "sha256:<hex>"),
        ({"checksums": {"t10k-labels-idx1-ubyte.gz": "md5:xyz"}}, "md5"),
    ],
)
def test_bad_source_options_are_named(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sources.archives("mnist_cifar", **options)


def test_dataset_writer_rejects_a_row_of_the_wrong_shape(tmp_path: Path) -> None:
    meta = {**META, "channel_names": ["r", "g", "b"]}
    with (
        pytest.raises(DatasetFormatError, match=r"row 0: image shape \(1, 1, 1\)"),
        DatasetWriter(tmp_path / "d", 1, (3, 2, 2), meta) as w,
    ):
        w.write(0, np.zeros((1, 1, 1)), 0, 0)
    assert list(tmp_path.iterdir()) == []
