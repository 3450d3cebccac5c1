"""Pretrained segmenters (HoVer-Net, HybridGNet) through tiny stand-in networks: tiling, resampling, batching,
binarisation, landmark rasterisation, weights loading (TorchScript / state dict), caching, fallback and records.

The real TIAToolbox HoVer-Net and HybridGNet weights are exercised only when present (skipped otherwise)."""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pytest
import torch
from skimage import draw

from splicer.data.demo import make_histology, make_xray
from splicer.data.format import load_dataset
from splicer.pretrained_segmenters import (
    SegmenterUnavailable,
    TiledNucleusNet,
    file_sha256,
    fill_polygon,
    landmark_masks,
    load_hovernet,
    nucleus_masks,
)
from splicer.segment import parse_spec, segment_dataset, segment_manifest
from splicer.segmenters import classical_lungs, classical_nuclei, dice

COUNTS = {"n_pretrain": 16, "n_train": 8, "n_val": 4, "n_test": 8}


# ------------------------------------------------------------------------------------------------ stand-ins
class DarkNet(torch.nn.Module):
    """HoVer-Net-shaped stand-in: NCHW 0..255 in, valid 5x5 convolution (margin 2), dict with 'np' logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 5)
        with torch.no_grad():
            self.conv.weight.fill_(-20.0 / (75 * 255.0))  # mean darkness
            self.conv.bias.fill_(10.0)  # logit 0 at mean intensity 127.5

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logit = self.conv(x)
        hv = torch.zeros_like(logit).repeat(1, 2, 1, 1)
        return {"np": torch.cat([torch.zeros_like(logit), logit], dim=1), "hv": hv}


class CountingNucleusModel:
    """NucleusModel stand-in (0.25 um/px) returning instance ids of dark pixels; records every batch it sees."""

    mpp = 0.25

    def __init__(self, threshold: int = 110) -> None:
        self.threshold = threshold
        self.batches: list[tuple[tuple[int, ...], np.dtype]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append((batch.shape, batch.dtype))
        dark = batch.mean(axis=-1) < self.threshold
        return dark.astype(np.int32) * 7  # instance id 7 everywhere: integer maps are binarised as > 0

    def describe(self) -> dict:
        return {"source": "test", "threshold": self.threshold}


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> torch.Tensor:
    t = torch.linspace(0, 2 * math.pi, n + 1)[:-1]
    return torch.stack([cx + rx * torch.cos(t), cy + ry * torch.sin(t)], dim=1)


# right lung on the image's left, as in a radiograph; published order: right lung 44, left lung 50, heart 26
POLYGONS = {
    "right_lung": (0.3, 0.45, 0.13, 0.3, 44),
    "left_lung": (0.7, 0.45, 0.13, 0.3, 50),
    "heart": (0.55, 0.7, 0.1, 0.08, 26),
}


class LandmarkStandIn(torch.nn.Module):
    """HybridGNet-shaped stand-in: (B, 1, 1024, 1024) in, fixed normalised landmarks (tuple, first = (B, 120, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self.points = torch.nn.Parameter(torch.cat([_ellipse(*p) for p in POLYGONS.values()]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pts = self.points.unsqueeze(0).expand(x.shape[0], -1, -1) + 0.0 * x.mean()
        return pts, pts


def make_landmark_standin() -> torch.nn.Module:
    """``segment.options.loader`` target of the state-dict test (``test_segment_pretrained:make_landmark_standin``)."""
    return LandmarkStandIn()


def _expected_polygon(name: str, h: int, w: int, supersample: int = 1) -> np.ndarray:
    """The stand-in's organ polygon rasterised at ``supersample`` x the dataset's size (images padded to a
    square), then block-averaged (>= 0.5) to the dataset's size."""
    side = max(h, w)
    big = side * supersample
    pts = _ellipse(*POLYGONS[name]).numpy() * big
    m = np.zeros((big, big), bool)
    rr, cc = draw.polygon(pts[:, 1], pts[:, 0], shape=(big, big))
    m[rr, cc] = True
    m = m.reshape(side, supersample, side, supersample).mean(axis=(1, 3)) >= 0.5
    top, left = (side - h) // 2, (side - w) // 2
    return m[top : top + h, left : left + w]


@pytest.fixture(scope="module")
def histology(tmp_path_factory):
    return make_histology(tmp_path_factory.mktemp("histology"), **COUNTS)


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    return make_xray(tmp_path_factory.mktemp("xray"), **COUNTS)


@pytest.fixture(scope="module")
def darknet_ts(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "darknet.pt"
    torch.jit.script(DarkNet().eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def landmark_ts(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "landmarks.pt"
    torch.jit.trace(LandmarkStandIn().eval(), torch.rand(2, 1, 16, 16), strict=False).save(str(path))
    return path


@pytest.fixture
def no_tiatoolbox(monkeypatch):
    """Make ``import tiatoolbox`` fail even where it is installed."""
    import sys

    monkeypatch.setitem(sys.modules, "tiatoolbox", None)


# ==================================================================================================== HoVer-Net
def test_tiling_equals_whole_image():
    """Patches (12 px in, 8 out, margin 2) stitched == the network on the whole reflect-padded image."""
    net = DarkNet()
    tiled = TiledNucleusNet(net, patch_input=12, device="cpu", batch_size=5, min_area=1)
    assert (tiled.patch_output, tiled.margin) == (8, 2)
    images = np.random.default_rng(0).integers(0, 256, (3, 19, 23, 3), dtype=np.uint8)
    got = tiled.probabilities(images)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect").transpose(0, 3, 1, 2)
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(padded).float())["np"], dim=1)[:, 1].numpy()
    assert got.shape == (3, 19, 23)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (tiled.predict(images) == (got >= 0.5)).all()


def test_nucleus_resampling_batching_binarisation(histology):
    data = load_dataset(histology["eval"])
    model = CountingNucleusModel()
    masks = nucleus_masks(data.images, model, data_mpp=0.5, batch_size=7)
    n, _, h, w = data.images.shape
    assert masks.shape == (n, 1, h, w) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    # x2 to the model's 0.25 um/px, RGB uint8, in batches of 7
    assert [s for s, _ in model.batches] == [(min(7, n - i), 2 * h, 2 * w, 3) for i in range(0, n, 7)]
    assert all(d == np.uint8 for _, d in model.batches)
    # resampled x2 and back, a mask lands where it belongs: dark blocks come back exactly
    blocks = np.full((2, 3, 32, 32), 220, np.uint8)
    blocks[0, :, 4:12, 6:20], blocks[1, :, 20:31, 3:9] = 30, 30
    assert (nucleus_masks(blocks, model, data_mpp=0.5) == (blocks.mean(axis=1) < 110)[:, None]).all()
    # at the model's own resolution (mpp 0.25) nothing is resampled
    model.batches.clear()
    assert (nucleus_masks(blocks, model, data_mpp=0.25) == (blocks.mean(axis=1) < 110)[:, None]).all()
    assert model.batches[0][0] == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="3-channel"):
        nucleus_masks(np.zeros((1, 1, 8, 8), np.uint8), model, 0.5)


def test_hovernet_torchscript_weights_record(histology, darknet_ts, tmp_path):
    spec = {"segmenter": "hovernet", "weights": str(darknet_ts), "options": {"patch_input": 32, "batch_size": 4}}
    rec = segment_dataset(histology["eval"], tmp_path / "seg", spec)
    assert rec["segmenter"] == rec["requested"] == "hovernet" and rec["fallback_reason"] is None
    assert rec["model"]["source"] == "torchscript" and rec["model"]["sha256"] == file_sha256(darknet_ts)
    assert rec["model"]["patch_output"] == 28 and rec["options"]["mpp"] == 0.5
    assert rec["mask_names"] == ["nuclei"] and 0 < rec["coverage"]["nuclei"] < 1
    out = load_dataset(tmp_path / "seg")
    net = load_hovernet(darknet_ts, patch_input=32, device="cpu")
    assert (np.asarray(out.masks) == nucleus_masks(load_dataset(histology["eval"]).images, net, 0.5)).all()
    assert "nuclei" in rec["dice_vs_stored_masks"]  # the demo's truth rides along
    saved = json.loads((tmp_path / "seg" / "segmentation.json").read_text())
    assert saved["segmenter"] == "hovernet" and saved["model"]["path"] == str(darknet_ts)


def test_cache_reuse_and_invalidation(histology, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps({"kind": "demo", "datasets": ["eval", "shift"]}))
    for name in ("eval", "shift"):
        os.symlink(histology[name], src / name)
    cache = tmp_path / "cache"
    spec = {"segmenter": "hovernet", "options": {"batch_size": 5}}
    model = CountingNucleusModel()
    first = segment_manifest(
        src / "manifest.json", tmp_path / "a" / "manifest.json", spec, cache_dir=cache, model=model
    )
    calls = len(model.batches)
    assert calls > 0
    masks = np.load(tmp_path / "a" / "eval" / "masks.npy")
    # rerun: every chunk from the cache, not one call; same masks and records
    again = segment_manifest(
        src / "manifest.json", tmp_path / "b" / "manifest.json", spec, cache_dir=cache, model=model
    )
    assert len(model.batches) == calls
    assert (np.load(tmp_path / "b" / "eval" / "masks.npy") == masks).all()
    assert again["segmentation"]["eval"]["coverage"] == first["segmentation"]["eval"]["coverage"]
    # runtime options (batch size, device) share the cache; options that change masks, or other weights, do not
    segment_dataset(
        histology["eval"], tmp_path / "c", {**spec, "options": {"batch_size": 3}}, cache_dir=cache, model=model
    )
    assert len(model.batches) == calls
    segment_dataset(histology["eval"], tmp_path / "d", {**spec, "options": {"mpp": 0.25}}, cache_dir=cache, model=model)
    assert len(model.batches) > calls
    calls = len(model.batches)
    segment_dataset(histology["eval"], tmp_path / "e", spec, cache_dir=cache, model=CountingNucleusModel(threshold=90))
    assert len(model.batches) == calls  # a different model (describe()) -> its own entry, computed by it
    keys = sorted(p.name for p in cache.iterdir())
    assert len(keys) == 3 and all(k.startswith("hovernet-") for k in keys)
    record = json.loads((cache / keys[0] / "record.json").read_text())
    assert record["segmenter"] == "hovernet" and "version" in record
    # chunked computation (chunk = 5 images) gives the same masks, and the chunks are cached one by one
    model2 = CountingNucleusModel()
    segment_dataset(histology["eval"], tmp_path / "f", spec, cache_dir=tmp_path / "cache2", model=model2, chunk=5)
    assert (np.load(tmp_path / "f" / "masks.npy") == masks).all()
    n = load_dataset(histology["eval"]).n
    assert len(list((tmp_path / "cache2").glob("*/*.npz"))) == math.ceil(n / 5)
    # a damaged entry (a truncated file) is recomputed, not an error
    entry = sorted((tmp_path / "cache2").glob("*/*.npz"))[0]
    entry.write_bytes(entry.read_bytes()[:40])
    calls = len(model2.batches)
    segment_dataset(histology["eval"], tmp_path / "g", spec, cache_dir=tmp_path / "cache2", model=model2, chunk=5)
    assert len(model2.batches) > calls and (np.load(tmp_path / "g" / "masks.npy") == masks).all()


def test_hovernet_unavailable_error_and_fallback(histology, no_tiatoolbox, tmp_path, caplog):
    with pytest.raises(SegmenterUnavailable, match=r"pip install tiatoolbox.*segment\.weights.*fallback"):
        segment_dataset(histology["eval"], tmp_path / "x", "hovernet")
    assert not (tmp_path / "x").exists()
    with pytest.raises(SegmenterUnavailable, match=r"weights file .*nope\.pt does not exist"):
        segment_dataset(histology["eval"], tmp_path / "x", {"segmenter": "hovernet", "weights": "nope.pt"})
    not_ts = tmp_path / "state.pth"
    torch.save(DarkNet().state_dict(), not_ts)
    with pytest.raises(SegmenterUnavailable, match=r"torch\.export file, so they need TIAToolbox"):
        segment_dataset(histology["eval"], tmp_path / "x", {"segmenter": "hovernet", "weights": str(not_ts)})
    with caplog.at_level(logging.WARNING, logger="splicer.segment"):
        rec = segment_dataset(
            histology["eval"], tmp_path / "fb", {"segmenter": "hovernet", "fallback": "classical_nuclei"}
        )
    assert rec["segmenter"] == "classical_nuclei" and rec["requested"] == "hovernet"
    assert "tiatoolbox" in rec["fallback_reason"] and "falling back to segmenter 'classical_nuclei'" in caplog.text
    saved = json.loads((tmp_path / "fb" / "segmentation.json").read_text())
    assert saved["segmenter"] == "classical_nuclei" and saved["requested"] == "hovernet"
    want, _ = classical_nuclei(load_dataset(histology["eval"]))
    assert (np.load(tmp_path / "fb" / "masks.npy") == want).all()


def test_real_hovernet_if_available():
    try:
        import tiatoolbox  # noqa: F401
    except ImportError:
        print("SKIP reason: tiatoolbox is not installed (pip install tiatoolbox) -- real HoVer-Net untested here")
        pytest.skip("tiatoolbox is not installed: the real HoVer-Net path is untested here")
    try:
        net = load_hovernet(os.environ.get("SPLICER_HOVERNET_WEIGHTS"), device="cpu", batch_size=2)
    except SegmenterUnavailable as err:
        print(f"SKIP reason: {err}")
        pytest.skip(f"HoVer-Net weights unavailable: {err}")
    assert (net.patch_input, net.patch_output, net.mpp) == (256, 164, 0.25)
    rgb = np.full((1, 3, 64, 64), 230, np.uint8)
    rgb[:, 0, 20:34, 20:34], rgb[:, 1, 20:34, 20:34], rgb[:, 2, 20:34, 20:34] = 60, 30, 120  # one dark purple blob
    masks = nucleus_masks(rgb, net, data_mpp=0.5)
    assert masks.shape == (1, 1, 64, 64) and masks[0, 0, 27, 27] == 1 and masks[0, 0, 2, 2] == 0


# =================================================================================================== HybridGNet
def test_landmarks_rasterised_and_resized_back(xray, landmark_ts, tmp_path):
    spec = {
        "segmenter": "hybridgnet",
        "weights": str(landmark_ts),
        "options": {"masks": ["lungs", "right_lung", "left_lung", "heart"], "batch_size": 3},
    }
    rec = segment_dataset(xray["pneumonia"], tmp_path / "seg", spec)
    assert rec["segmenter"] == "hybridgnet" and rec["model"]["source"] == "torchscript"
    assert rec["mask_names"] == ["lungs", "right_lung", "left_lung", "heart"]
    out = load_dataset(tmp_path / "seg")
    h, w = out.hw
    masks = np.asarray(out.masks)
    assert h == w and 1024 % h == 0
    for k, name in enumerate(("right_lung", "left_lung", "heart"), start=1):  # polygon at 1024 px, area-averaged
        assert (masks[:, k] == _expected_polygon(name, h, w, supersample=1024 // h)).all(), name
        assert dice(masks[:, k], np.broadcast_to(_expected_polygon(name, h, w), masks[:, k].shape)) > 0.85, name
    assert (masks[:, 0] == (masks[:, 1] | masks[:, 2])).all()  # lungs = both lungs, heart not included
    assert masks[:, 1, :, : w // 2].sum() > 10 * masks[:, 1, :, w // 2 :].sum()  # right lung on the image's left
    assert set(rec["dice_vs_stored_masks"]) == {"lungs"}  # against the demo's true lungs (stand-in: low)


def test_fill_polygon_matches_skimage():
    """The scanline fill gives skimage.draw.polygon's pixels (random, self-intersecting, partly outside polygons)."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        n, (h, w) = int(rng.integers(3, 50)), rng.integers(4, 90, 2)
        xs, ys = rng.uniform(-10, w + 10, n), rng.uniform(-10, h + 10, n)
        want = np.zeros((h, w), bool)
        rr, cc = draw.polygon(ys, xs, shape=(h, w))
        want[rr, cc] = True
        assert (fill_polygon(xs, ys, (h, w)) == want).all()
    assert not fill_polygon(np.array([1.0, 3, 2]), np.array([-9.0, -8, -5]), (4, 4)).any()  # above the image


def test_landmarks_non_square_padding(landmark_ts):
    from splicer.pretrained_segmenters import load_landmark_model

    model = load_landmark_model(landmark_ts, device="cpu")
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 24, 40), dtype=np.uint8)  # RGB, wide
    masks = landmark_masks(images, model, ["right_lung", "heart"], batch_size=1)
    assert masks.shape == (2, 2, 24, 40)
    assert dice(masks[:, 0], np.broadcast_to(_expected_polygon("right_lung", 24, 40), (2, 24, 40))) > 0.85
    assert dice(masks[:, 1], np.broadcast_to(_expected_polygon("heart", 24, 40), (2, 24, 40))) > 0.8
    with pytest.raises(ValueError, match="landmark groups"):
        landmark_masks(images, model, ["liver"])
    with pytest.raises(ValueError, match=r"expected \(1, 100, 2\)"):
        landmark_masks(images[:1], model, ["lungs"], landmarks={"right_lung": 50, "left_lung": 50})


def test_state_dict_loader_matches_torchscript(xray, landmark_ts, tmp_path):
    state = tmp_path / "bestMSE.pt"
    torch.save(LandmarkStandIn().state_dict(), state)
    rec = segment_dataset(
        xray["pneumonia"],
        tmp_path / "sd",
        {
            "segmenter": "hybridgnet",
            "weights": str(state),
            "options": {"loader": "test_segment_pretrained:make_landmark_standin", "input_size": 256},
        },
    )
    assert rec["model"]["source"] == "state_dict" and rec["mask_names"] == ["lungs"]
    segment_dataset(
        xray["pneumonia"],
        tmp_path / "ts",
        {"segmenter": "hybridgnet", "weights": str(landmark_ts), "options": {"input_size": 256}},
    )
    assert (np.load(tmp_path / "sd" / "masks.npy") == np.load(tmp_path / "ts" / "masks.npy")).all()
    with pytest.raises(SegmenterUnavailable, match=r"is a state dict .*set segment\.options\.source"):
        segment_dataset(xray["pneumonia"], tmp_path / "x", {"segmenter": "hybridgnet", "weights": str(state)})
    with pytest.raises(SegmenterUnavailable, match="cannot be imported"):
        segment_dataset(
            xray["pneumonia"],
            tmp_path / "x",
            {"segmenter": "hybridgnet", "weights": str(state), "options": {"loader": "no_such_module:build"}},
        )


def test_hybridgnet_without_weights(xray, tmp_path):
    with pytest.raises(SegmenterUnavailable, match=r"needs weights.*bestMSE\.pt.*fallback: classical_lungs"):
        segment_dataset(xray["pneumonia"], tmp_path / "x", "hybridgnet")
    rec = segment_dataset(
        xray["pneumonia"], tmp_path / "fb", {"segmenter": "hybridgnet", "fallback": "classical_lungs"}
    )
    assert rec["segmenter"] == "classical_lungs" and rec["requested"] == "hybridgnet"
    assert (np.load(tmp_path / "fb" / "masks.npy") == classical_lungs(load_dataset(xray["pneumonia"]))[0]).all()


def test_real_hybridgnet_if_available():
    weights, source = os.environ.get("SPLICER_HYBRIDGNET_WEIGHTS"), os.environ.get("SPLICER_HYBRIDGNET_SRC")
    if not weights:
        print("SKIP reason: set SPLICER_HYBRIDGNET_WEIGHTS (trained state dict) and SPLICER_HYBRIDGNET_SRC to test it")
        pytest.skip("no HybridGNet weights (SPLICER_HYBRIDGNET_WEIGHTS unset): the trained HybridGNet is untested")
    from splicer.pretrained_segmenters import load_landmark_model

    loader = os.environ.get("SPLICER_HYBRIDGNET_LOADER")
    model = load_landmark_model(weights, device="cpu", loader=loader, source=source)
    y, x = np.mgrid[:64, :64]
    grey = np.full((64, 64), 200.0)
    grey[((x - 20) / 9) ** 2 + ((y - 30) / 18) ** 2 < 1] = 40  # two dark lung fields in a bright body
    grey[((x - 44) / 9) ** 2 + ((y - 30) / 18) ** 2 < 1] = 40
    masks = landmark_masks(grey.astype(np.uint8)[None, None], model, ["lungs"])
    assert masks.shape == (1, 1, 64, 64) and masks[0, 0, 30, 20] == 1 and masks[0, 0, 30, 44] == 1


# ======================================================================================================= spec
def test_parse_spec_errors():
    assert parse_spec("classical_nuclei").segmenter == "classical_nuclei"
    spec = parse_spec({"segmenter": "hovernet", "weights": "w.pt", "fallback": "classical_nuclei"})
    assert spec.options["mpp"] == 0.5 and spec.options["model"] == "hovernet_fast-pannuke"
    with pytest.raises(ValueError, match=r"segment\.options: unknown key\(s\) \['mmp'\]"):
        parse_spec({"segmenter": "hovernet", "options": {"mmp": 0.5}})
    with pytest.raises(ValueError, match=r"segment\.fallback: 'hybridgnet' is not a weight-free"):
        parse_spec({"segmenter": "hovernet", "fallback": "hybridgnet"})
    with pytest.raises(ValueError, match=r"options\.mpp of segmenter 'hovernet' must be a positive number"):
        parse_spec({"segmenter": "hovernet", "options": {"mpp": -1}})
    with pytest.raises(ValueError, match=r"options\.coords .* must be 'normalized' or 'pixels'"):
        parse_spec({"segmenter": "hybridgnet", "options": {"coords": "px"}})
    with pytest.raises(ValueError, match="only the pretrained segmenters"):
        parse_spec({"segmenter": "classical_lungs", "weights": "w.pt"})
    with pytest.raises(ValueError, match="unknown segmenter 'unet'"):
        parse_spec("unet")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['weight'\]"):
        parse_spec({"segmenter": "hovernet", "weight": "w.pt"})


def test_truth_is_not_cached_and_images_are_linked(histology, tmp_path):
    rec = segment_dataset(histology["eval"], tmp_path / "t", "truth", cache_dir=tmp_path / "cache")
    assert rec["dice_vs_stored_masks"] == {"nuclei": 1.0} and not (tmp_path / "cache").exists()
    assert (tmp_path / "t" / "images.npy").is_symlink() or (tmp_path / "t" / "images.npy").is_file()
    assert (load_dataset(tmp_path / "t").images == load_dataset(histology["eval"]).images).all()


def test_hovernet_torch_export_weights(histology, darknet_ts, tmp_path):
    """A torch.export program (.pt2, dynamic batch) runs like the TorchScript file of the same network."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(DarkNet().eval(), (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "darknet.pt2"))
    options = {"patch_input": 32, "patch_batch": 7}
    rec = segment_dataset(
        histology["eval"],
        tmp_path / "a",
        {"segmenter": "hovernet", "weights": str(tmp_path / "darknet.pt2"), "options": options},
    )
    assert rec["model"]["source"] == "torch.export"
    segment_dataset(
        histology["eval"], tmp_path / "b", {"segmenter": "hovernet", "weights": str(darknet_ts), "options": options}
    )
    assert (np.load(tmp_path / "a" / "masks.npy") == np.load(tmp_path / "b" / "masks.npy")).all()


def test_runtime_options_are_not_provenance():
    """The segment rule's params hold only what decides the masks: a new device or batch size reruns nothing."""
    from splicer.segment import mask_relevant

    fast = {"segmenter": "hovernet", "options": {"mpp": 0.5, "device": "cuda", "batch_size": 64, "patch_batch": 64}}
    slow = {"segmenter": "hovernet", "options": {"mpp": 0.5, "device": "cpu"}}
    assert mask_relevant(fast) == mask_relevant(slow) == {"segmenter": "hovernet", "options": {"mpp": 0.5}}
    assert mask_relevant({**slow, "options": {"mpp": 0.25}}) != mask_relevant(slow)
