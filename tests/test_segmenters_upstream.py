"""The pretrained-segmenter adapters against the real upstream architectures, with random weights (no download).

* HoVer-Net: TIAToolbox's own ``HoVerNet`` (``hovernet_fast-pannuke``'s architecture and IO config, read from the
  installed TIAToolbox), run through :class:`~splicer.pretrained_segmenters.TiledNucleusNet`: the API names, the
  patch geometry, the stitched nucleus probabilities against TIAToolbox's ``infer_batch``, the masks against
  TIAToolbox's own post-processing, and the ``torch.export`` recipe of the module docstring.
* HybridGNet: ``Hybrid`` of ngaggion/HybridGNet (``models/HybridGNet_2_IGSC.py``, built as its trainer does), the
  TorchScript / ``torch.export`` / state-dict routes of :func:`~splicer.pretrained_segmenters.load_landmark_model`.

Both need packages outside the project's lock (TIAToolbox 2.1.3 pins torch<2.13 and numpy<2.4.4;
HybridGNet needs torch_geometric and its source, which is not on PyPI). They skip with the reason unless
installed: ``SPLICER_HYBRIDGNET_SRC`` names a checkout of ngaggion/HybridGNet.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from splicer import pretrained_segmenters as ps

pytestmark = pytest.mark.timeout(900)


def he_like(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8: pink stroma with darker blobs, so the random network's maps are not uniform."""
    rng = np.random.default_rng(seed)
    img = np.empty((n, h, w, 3), np.float64)
    img[:] = (230, 170, 200)
    yy, xx = np.mgrid[:h, :w]
    for b in range(n):
        for _ in range(40):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 9)
            img[b][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (90, 40, 140)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# ============================================================================================== HoVer-Net
@pytest.fixture(scope="module")
def tia():
    try:
        from tiatoolbox.models.architecture import get_pretrained_model  # noqa: F401 - the API name the adapter uses
        from tiatoolbox.models.architecture.hovernet import HoVerNet
    except ImportError as err:
        pytest.skip(f"TIAToolbox is not installed here ({err}); see the module docstring")
    from importlib.resources import files

    import yaml

    config = yaml.safe_load((files("tiatoolbox") / "data" / "pretrained_model.yaml").read_text())[ps.HOVERNET_MODEL]
    torch.manual_seed(0)
    net = HoVerNet(**config["architecture"]["kwargs"]).eval()
    return HoVerNet, net, config["ioconfig"]["kwargs"]


def test_tiatoolbox_io_config_is_what_the_adapter_assumes(tia) -> None:
    _, _, io = tia
    assert io["patch_input_shape"] == [ps.HOVERNET_PATCH] * 2
    assert io["input_resolutions"][0] == {"units": "mpp", "resolution": ps.HOVERNET_MPP}
    model = ps.TiledNucleusNet(tia[1], device="cpu")
    assert [model.patch_output] * 2 == io["patch_output_shape"] and model.margin == (256 - 164) // 2


def test_stitched_probabilities_and_masks_match_tiatoolbox(tia) -> None:
    """On a 164-px image (one patch, reflect-padded as the adapter does), the nucleus probability equals
    TIAToolbox's ``infer_batch`` and the mask is the foreground of TIAToolbox's post-processing (``blb``), which
    contains every instance of its ``_proc_np_hv``; the adapter also tiles a larger image the same way."""
    from scipy import ndimage
    from skimage.morphology import remove_small_objects

    hovernet, net, _ = tia
    model = ps.TiledNucleusNet(net, device="cpu", batch_size=4)
    image = he_like(2, 164, 164)
    patch = np.pad(image, ((0, 0), (46, 46), (46, 46), (0, 0)), mode="reflect")
    np_map, hv_map, _ = hovernet.infer_batch(net, torch.from_numpy(patch), device="cpu")
    ours = model.probabilities(image)
    np.testing.assert_allclose(ours, np_map[..., 0], atol=1e-5)
    masks = model.predict(image)
    for b in range(2):
        blb = ndimage.label(np_map[b, ..., 0] >= 0.5)[0]
        blb = remove_small_objects(blb, max_size=ps.HOVERNET_MIN_AREA - 1) > 0
        np.testing.assert_array_equal(masks[b], blb)
        instances = hovernet._proc_np_hv(np_map[b], hv_map[b]) > 0
        assert not (instances & ~masks[b]).any()  # every TIAToolbox instance is inside the adapter's mask
    # tiling: a 300 x 400 image, patch by patch, equals the network run on each 256-px window it cuts
    big = he_like(1, 300, 400, seed=1)
    prob = model.probabilities(big)
    padded = np.pad(big, ((0, 0), (46, 46 + 2 * 164 - 300), (46, 46 + 3 * 164 - 400), (0, 0)), mode="reflect")
    window = padded[:, 164 : 164 + 256, 328 : 328 + 256]
    direct = hovernet.infer_batch(net, torch.from_numpy(np.ascontiguousarray(window)), device="cpu")[0]
    np.testing.assert_allclose(prob[0, 164:300, 328:400], direct[0, : 300 - 164, : 400 - 328, 0], atol=1e-5)


def test_torch_export_recipe_of_the_docstring(tia, tmp_path: Path) -> None:
    _, net, _ = tia
    x = torch.rand(2, 3, 256, 256) * 255
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(net.eval(), (x,), dynamic_shapes=({0: batch},)), tmp_path / "hovernet.pt2")
    exported = ps.load_hovernet(tmp_path / "hovernet.pt2", device="cpu", batch_size=3)
    eager = ps.TiledNucleusNet(net, device="cpu", batch_size=3)
    image = he_like(2, 200, 180, seed=2)
    np.testing.assert_allclose(exported.probabilities(image), eager.probabilities(image), atol=1e-4)
    assert exported.describe()["source"] == "torch.export"


# ============================================================================================= HybridGNet
HYBRIDGNET_SRC = os.environ.get("SPLICER_HYBRIDGNET_SRC")


def build_hybrid() -> torch.nn.Module:
    """A loader for ``segment.options.loader``: HybridGNet built from the checkout (random weights, seeded)."""
    torch.manual_seed(0)
    return ps.hybridgnet_from_source(HYBRIDGNET_SRC)


@pytest.fixture(scope="module")
def hybrid():
    if not HYBRIDGNET_SRC or not (Path(HYBRIDGNET_SRC) / "models" / "HybridGNet_2_IGSC.py").is_file():
        pytest.skip("SPLICER_HYBRIDGNET_SRC does not name a checkout of ngaggion/HybridGNet")
    pytest.importorskip("torch_geometric")
    return build_hybrid().eval()


def radiographs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 1, 96, 80), dtype=np.uint8)


def reference(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """The published inference: one image at a time through the eager model (landmarks in [0, 1])."""
    x = ps._resize_images(torch.from_numpy(ps._grey(images)).float()[:, None], (1024, 1024))
    with torch.no_grad():
        return np.stack([net(x[i : i + 1])[0][0].numpy() for i in range(len(images))])


def test_hybridgnet_outputs_landmarks_of_the_expected_layout(hybrid) -> None:
    out = reference(hybrid, radiographs(1))
    assert out.shape == (1, sum(ps.HYBRIDGNET_LANDMARKS.values()), 2)


def test_hybridgnet_cannot_be_exported(hybrid, tmp_path: Path) -> None:
    """Why the recipe is a state dict: TorchScript tracing fails, and a torch.export program cannot be saved (its
    sparse graph matrices have no storage). If this starts passing, an export route can come back."""
    x = torch.rand(1, 1, 1024, 1024)
    with pytest.raises(RuntimeError, match="Unsupported value kind"):
        torch.jit.trace(hybrid, x, strict=False)
    with pytest.raises(NotImplementedError, match="SparseTensorImpl"):
        torch.export.save(torch.export.export(hybrid, (x,)), tmp_path / "hybridgnet.pt2")


@pytest.mark.parametrize("route", ["source", "loader"])
def test_hybridgnet_state_dict_routes_give_the_published_inference(hybrid, route: str, tmp_path: Path) -> None:
    """A state dict built into the checkout's model (segment.options.source) or a loader function: batches of 3
    images through the adapter equal the published one-image-at-a-time inference (HybridGNet's BatchNorm layers
    keep no running statistics, so they normalise over whatever batch they are given)."""
    images = radiographs(3)
    path = tmp_path / "bestMSE.pt"
    torch.save(hybrid.state_dict(), path)
    if route == "source":
        model = ps.load_landmark_model(path, source=HYBRIDGNET_SRC, device="cpu")
    else:
        model = ps.load_landmark_model(path, loader=f"{__name__}:build_hybrid", device="cpu")
    got = model.predict(ps._resize_images(torch.from_numpy(ps._grey(images))[:, None], (1024, 1024))[:, 0].numpy())
    np.testing.assert_allclose(got, reference(hybrid, images), atol=1e-4)
    masks = ps.landmark_masks(images, model, ["lungs"], batch_size=3)
    assert masks.shape == (3, 1, 96, 80)
