"""Dataset kind ``folder`` (splicer.data.real.folder): the user's own PNG/TIFF images, masks and labels, and the
user path folder -> segment (truth) -> SpliCER mask components."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from splicer.components import build_components
from splicer.data.build import build_data
from splicer.data.format import load_dataset, to_float
from splicer.data.real.common import BuildError, Caps
from splicer.data.real.folder import build_folder
from splicer.segment import segment_manifest

RNG = np.random.default_rng(0)


def _png(path, arr):
    Image.fromarray(arr).save(path)


def _square_mask(h, w, i):
    m = np.zeros((h, w), np.uint8)
    m[i % 5 : i % 5 + 6, 2:9] = 255
    return m


@pytest.fixture
def tiles(tmp_path):
    """12 RGB PNG tiles (16 x 16), binary masks (0/255) with one all-zero, labels CSV with a header."""
    img, msk = tmp_path / "img", tmp_path / "msk"
    img.mkdir()
    msk.mkdir()
    images, masks = {}, {}
    for i in range(12):
        stem = f"tile{i:02d}"
        images[stem] = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        masks[stem] = _square_mask(16, 16, i) if i != 3 else np.zeros((16, 16), np.uint8)
        _png(img / f"{stem}.png", images[stem])
        _png(msk / f"{stem}.png", masks[stem])
    (img / "notes.txt").write_text("ignored")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,label\n"
        + "".join(f"tile{i:02d}.png,{'tumour' if i % 3 else 'normal'}\n" for i in range(12))
        + "gone.png,normal\n"
    )
    return {"img": img, "msk": msk, "labels": labels, "images": images, "masks": masks, "root": tmp_path}


def test_png_images_masks_labels(tiles, caplog):
    params = {
        "images": str(tiles["img"]),
        "masks": str(tiles["msk"]),
        "labels": str(tiles["labels"]),
        "mask_names": ["nuclei"],
        "name": "tiles",
    }
    with caplog.at_level(logging.WARNING):
        paths = build_folder(tiles["root"] / "out", {}, params, Caps(), seed=0)
    d = load_dataset(paths["tiles"])
    assert d.images.shape == (12, 3, 16, 16) and d.images.dtype == np.uint8
    assert d.channel_names == ["c0", "c1", "c2"] and d.mask_names == ["nuclei"]
    assert d.class_names == ["normal", "tumour"] and d.split_names == ["train", "val", "test"]
    info = d.meta["info"]
    assert info["label_rows_without_image"] == 1 and info["unlabelled"] == 0
    assert info["empty_masks"] == {"nuclei": 1} and "empty" in caplog.text
    # every row is the file its stem names: pixels, 0/1 mask, label
    for row, stem in enumerate(info["stems"]):
        assert (d.images[row] == tiles["images"][stem].transpose(2, 0, 1)).all()
        assert (d.masks[row, 0] == (tiles["masks"][stem] > 0)).all()
        assert d.class_names[d.labels[row]] == ("tumour" if int(stem[-2:]) % 3 else "normal")
    assert set(np.unique(d.masks)) <= {0, 1}
    split = np.asarray(d.split)
    assert (np.diff(split.astype(int)) >= 0).all()  # split blocks are contiguous
    assert (split == 0).sum() > (split == 2).sum() > 0  # 0.7 / 0.15 / 0.15 by default with labels


def test_no_labels_all_train_and_split_caps(tiles):
    d = load_dataset(build_folder(tiles["root"] / "a", {}, {"images": str(tiles["img"])}, Caps(), 0)["images"])
    assert (np.asarray(d.split) == 0).all() and (np.asarray(d.labels) == -1).all()
    assert d.masks is None and d.mask_names == []
    params = {"images": str(tiles["img"]), "split": [0.5, 0.25, 0.25]}
    d = load_dataset(build_folder(tiles["root"] / "b", {}, params, Caps({"images/train": 2}), 0)["images"])
    assert d.n == 2 + 3 + 3 and (np.asarray(d.split) == 0).sum() == 2


def test_split_column_overrides(tiles):
    csv = tiles["root"] / "split.csv"
    csv.write_text("".join(f"tile{i:02d},{i % 2},{'test' if i < 4 else 'train'}\n" for i in range(12)))  # no header
    d = load_dataset(
        build_folder(tiles["root"] / "o", {}, {"images": str(tiles["img"]), "labels": str(csv)}, Caps(), 0)["images"]
    )
    stems = d.meta["info"]["stems"]
    test = {stems[i] for i in np.flatnonzero(np.asarray(d.split) == 2)}
    assert test == {f"tile{i:02d}" for i in range(4)} and d.class_names == ["0", "1"]


def test_multiplex_tiff_layouts_uint16(tmp_path):
    a, b = tmp_path / "chw", tmp_path / "hwc"
    a.mkdir()
    b.mkdir()
    chw = RNG.integers(0, 65535, (3, 6, 12, 10), dtype=np.uint16)
    for i, x in enumerate(chw):
        tifffile.imwrite(a / f"m{i}.tif", x)  # 6 planes -> (C, H, W)
        tifffile.imwrite(b / f"m{i}.tiff", x[:3].transpose(1, 2, 0), photometric="rgb")  # (H, W, 3), axes YXS
    names = ["DNA", "CD3", "CD8", "CD20", "PanCK", "aSMA"]
    d = load_dataset(build_folder(tmp_path / "o", {}, {"images": str(a), "channel_names": names}, Caps(), 0)["images"])
    assert d.images.dtype == np.uint16 and d.images.shape == (3, 6, 12, 10) and d.channel_names == names
    assert (np.asarray(d.images) == chw).all()
    d = load_dataset(build_folder(tmp_path / "p", {}, {"images": str(b)}, Caps(), 0)["images"])
    assert (np.asarray(d.images) == chw[:, :3]).all()


def test_label_image_and_multiplane_masks(tmp_path):
    img, msk, mp = tmp_path / "img", tmp_path / "msk", tmp_path / "mp"
    for f in (img, msk, mp):
        f.mkdir()
    lab = np.zeros((3, 20, 20), np.uint8)
    lab[:, 2:18, 2:8], lab[:, 2:18, 12:18], lab[:, 8:12, 9:12] = 1, 2, 3
    for i in range(3):
        _png(img / f"x{i}.png", RNG.integers(0, 256, (20, 20), dtype=np.uint8))  # greyscale
        _png(msk / f"x{i}.png", lab[i])
        tifffile.imwrite(mp / f"x{i}.tif", np.stack([lab[i] == 1, lab[i] == 3]).astype(np.uint8))
    values = {"lungs": [1, 2], "heart": 3}
    d = load_dataset(
        build_folder(tmp_path / "o", {}, {"images": str(img), "masks": str(msk), "mask_values": values}, Caps(), 0)[
            "images"
        ]
    )
    assert d.channels == 1 and d.mask_names == ["lungs", "heart"]
    assert (d.masks[:, 0] == np.isin(lab, [1, 2])).all() and (d.masks[:, 1] == (lab == 3)).all()
    d = load_dataset(
        build_folder(
            tmp_path / "p", {}, {"images": str(img), "masks": str(mp), "mask_names": ["right", "heart"]}, Caps(), 0
        )["images"]
    )
    assert (d.masks[:, 0] == (lab == 1)).all() and (d.masks[:, 1] == (lab == 3)).all()
    d = load_dataset(build_folder(tmp_path / "q", {}, {"images": str(img), "masks": str(msk)}, Caps(), 0)["images"])
    assert d.mask_names == ["mask"] and (d.masks[:, 0] == (lab > 0)).all()  # label image: non-zero = inside


def test_size_resizes_images_and_masks(tiles, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    _png(odd / "big.png", RNG.integers(0, 256, (32, 24, 3), dtype=np.uint8))
    _png(odd / "small.png", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    with pytest.raises(BuildError, match=r"small\.png: size 16x16 differs"):
        build_folder(tmp_path / "o", {}, {"images": str(odd)}, Caps(), 0)
    d = load_dataset(build_folder(tmp_path / "o", {}, {"images": str(odd), "size": [8, 8]}, Caps(), 0)["images"])
    assert d.images.shape == (2, 3, 8, 8) and d.meta["info"]["resized"]
    d = load_dataset(
        build_folder(
            tmp_path / "m", {}, {"images": str(tiles["img"]), "masks": str(tiles["msk"]), "size": 8}, Caps(), 0
        )["images"]
    )
    assert d.masks.shape == (12, 1, 8, 8) and 0 < d.masks.mean() < 1


def test_errors_name_the_file(tiles, tmp_path):
    base = {"images": str(tiles["img"]), "masks": str(tiles["msk"])}
    (tiles["msk"] / "tile05.png").unlink()
    with pytest.raises(BuildError, match=r"tile05\.png: has no mask in") as err:
        build_folder(tmp_path / "o", {}, base, Caps(), 0)
    assert err.value.file.endswith("img/tile05.png")
    _png(tiles["msk"] / "tile05.png", np.zeros((8, 8), np.uint8))  # wrong size
    with pytest.raises(BuildError, match=r"msk/tile05\.png: size 8x8 differs from its image .*tile05\.png"):
        build_folder(tmp_path / "o", {}, base, Caps(), 0)
    d = load_dataset(build_folder(tmp_path / "o", {}, {**base, "resize_masks": True}, Caps(), 0)["images"])
    assert d.masks.shape == (12, 1, 16, 16)
    (tiles["img"] / "tile07.png").write_bytes(b"not a png")
    with pytest.raises(BuildError, match=r"tile07\.png: cannot be read as an image"):
        build_folder(tmp_path / "o", {}, base, Caps(), 0)
    _png(tiles["img"] / "tile07.png", RNG.integers(0, 256, (16, 16), dtype=np.uint8))  # grey among RGB
    with pytest.raises(BuildError, match=r"tile07\.png: has 1 channel\(s\) but tile00.png has 3"):
        build_folder(tmp_path / "o", {}, base, Caps(), 0)
    with pytest.raises(ValueError, match="unknown params key"):
        build_folder(tmp_path / "o", {}, {**base, "colour": 1}, Caps(), 0)
    with pytest.raises(ValueError, match=r"params\.images"):
        build_folder(tmp_path / "o", {}, {}, Caps(), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="no PNG or TIFF images"):
        build_folder(tmp_path / "o", {}, {"images": str(tmp_path / "empty")}, Caps(), 0)
    with pytest.raises(BuildError, match="image folder does not exist"):
        build_folder(tmp_path / "o", {}, {"images": str(tmp_path / "nowhere")}, Caps(), 0)


def test_user_path_folder_segment_truth_components(tiles, tmp_path):
    """build_data(kind folder) -> segment with 'truth' -> SpliCER mask components are image*mask, image*(1-mask)."""
    spec = {
        "kind": "folder",
        "params": {
            "images": str(tiles["img"]),
            "masks": str(tiles["msk"]),
            "labels": str(tiles["labels"]),
            "mask_names": ["nuclei"],
            "name": "tiles",
        },
    }
    manifest = build_data(spec, tmp_path / "data", [])
    assert json.loads(manifest.read_text())["datasets"] == ["tiles"]
    out = segment_manifest(manifest, tmp_path / "seg" / "manifest.json", {"segmenter": "truth"})
    record = out["segmentation"]["tiles"]
    assert record["segmenter"] == "truth" and record["dice_vs_stored_masks"] == {"nuclei": 1.0}
    assert record["empty_masks"] == {"nuclei": 1}
    d = load_dataset(tmp_path / "seg" / "tiles")
    comps = build_components(
        {
            "nuclei": {"type": "mask", "mask": "nuclei"},
            "background": {"type": "mask", "mask": "nuclei", "invert": True},
        },
        d.channel_names,
        d.mask_names,
    )
    x = to_float(np.asarray(d.images))
    m = torch.from_numpy(np.array(d.masks)).float()
    roi, rest = comps["nuclei"](x, m), comps["background"](x, m)
    assert torch.equal(roi, x * m) and torch.equal(rest, x * (1 - m))
    assert torch.equal(roi + rest, x)
    empty = d.meta["info"]["stems"].index("tile03")  # its region of interest is all zero, its complement all
    assert not roi[empty].any() and torch.equal(rest[empty], x[empty])
