"""Tests for splicer.augment (tiny tensors, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from splicer.augment import AugmentConfig, BatchAugment, _affine_theta, _crop_boxes

IDENTITY = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    p_hflip=0.0,
    p_vflip=0.0,
    p_rot90=0.0,
    p_jitter=0.0,
    p_grayscale=0.0,
    p_noise=0.0,
    p_solarize=0.0,
)
STRONG = dict(
    p_hflip=0.5,
    p_vflip=0.5,
    p_rot90=0.5,
    p_jitter=0.8,
    p_grayscale=0.3,
    p_noise=0.5,
    p_solarize=0.3,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def strong(**kw) -> AugmentConfig:
    """Config with every op enabled, some fields overridden."""
    return AugmentConfig(**{**STRONG, **kw})


def only(**kw) -> AugmentConfig:
    """Identity config with some fields overridden."""
    return AugmentConfig(**{**IDENTITY, **kw})


def images(n=4, c=3, h=16, w=16, seed=123, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed), dtype=dtype)


# ---------------------------------------------------------------- config


def test_defaults_match_contract():
    c = AugmentConfig()
    assert c.crop_scale == (0.2, 1.0)
    assert c.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (c.p_hflip, c.p_vflip, c.p_rot90, c.p_jitter) == (0.5, 0.0, 0.0, 0.8)
    assert (c.brightness, c.contrast, c.saturation, c.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (c.p_grayscale, c.p_noise, c.noise_std, c.p_solarize) == (0.0, 0.0, 0.05, 0.0)
    assert c.out_size is None


def test_from_dict_accepts_lists_and_converts_to_tuples():
    c = AugmentConfig.from_dict({"crop_scale": [0.5, 1], "p_rot90": 1, "out_size": 8})
    assert c.crop_scale == (0.5, 1.0)
    assert c.p_rot90 == 1.0
    assert c.out_size == (8, 8)


def test_from_dict_rejects_unknown_key_by_name():
    with pytest.raises(ValueError, match="p_hflipp"):
        AugmentConfig.from_dict({"p_hflip": 0.5, "p_hflipp": 0.5})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.5, 0.2)),
        ("crop_scale", (0.2, 1.5)),
        ("crop_scale", (0.2,)),
        ("crop_ratio", (0.0, 1.0)),
        ("crop_ratio", (2.0, 1.0)),
        ("p_hflip", 1.5),
        ("p_noise", -0.1),
        ("p_jitter", "high"),
        ("brightness", -0.2),
        ("hue", 0.6),
        ("noise_std", -1.0),
        ("out_size", 0),
        ("out_size", (8, 8, 8)),
    ],
)
def test_invalid_values_raise_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        AugmentConfig.from_dict({key: value})


def test_bad_input_rejected():
    aug = BatchAugment(AugmentConfig())
    with pytest.raises(ValueError, match="shape"):
        aug(torch.rand(3, 8, 8), gen())
    with pytest.raises(TypeError, match="dtype"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), gen())
    with pytest.raises(TypeError, match="Generator"):
        aug(torch.rand(2, 3, 8, 8), None)


# ---------------------------------------------------------------- invariants


def test_reproducible_under_seed():
    aug = BatchAugment(strong())
    x = images(n=8, c=3)
    a, b = aug(x, gen(7)), aug(x, gen(7))
    assert torch.equal(a, b)
    assert not torch.allclose(a, aug(x, gen(8)))
    y = images(n=8, c=13)
    assert torch.equal(aug(y, gen(7)), aug(y, gen(7)))
    assert not torch.allclose(aug(y, gen(7)), aug(y, gen(8)))


@pytest.mark.parametrize("c", [1, 3, 13, 19])
@pytest.mark.parametrize("hw", [(16, 16), (24, 12)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_range_preserved(c, hw, dtype):
    x = images(n=5, c=c, h=hw[0], w=hw[1], dtype=dtype)
    out = BatchAugment(strong(p_rot90=1.0))(x, gen(1))
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_out_size():
    x = images(n=3, c=13, h=20, w=20)
    assert BatchAugment(AugmentConfig(out_size=8))(x, gen()).shape == (3, 13, 8, 8)
    assert BatchAugment(AugmentConfig(out_size=(6, 10), p_rot90=1.0))(x, gen()).shape == (3, 13, 6, 10)


def test_empty_batch():
    out = BatchAugment(strong())(torch.rand(0, 3, 8, 8), gen())
    assert out.shape == (0, 3, 8, 8)


def test_extreme_pixels_stay_finite():
    x = torch.cat([torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)])
    out = BatchAugment(strong(p_jitter=1.0, hue=0.5))(x, gen())
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1, 3, 13])
def test_identity_config_returns_input(dtype, c):
    x = images(n=4, c=c, dtype=dtype)
    assert torch.allclose(BatchAugment(only())(x, gen()), x)
    # non-square: an aspect range that contains W/H keeps the whole image
    y = images(n=4, c=c, h=16, w=8, dtype=dtype)
    assert torch.allclose(BatchAugment(only(crop_ratio=(0.5, 2.0)))(y, gen()), y)


def test_crop_boxes_full_image_for_unit_scale():
    n = 6
    for h, w, ratio in [(16, 16, (1.0, 1.0)), (16, 16, (0.5, 2.0)), (16, 8, (0.5, 0.5)), (16, 8, (0.25, 2.0))]:
        u = torch.rand(n, 22, generator=gen())
        boxes = _crop_boxes(u[:, :10], u[:, 10:20], u[:, 20:], h, w, (1.0, 1.0), ratio)
        assert torch.allclose(boxes, torch.tensor([0.0, 0.0, h, w]).expand(n, 4), atol=1e-4), (h, w, ratio)


def test_crop_boxes_respect_bounds_scale_and_ratio():
    n, h, w = 2000, 32, 24
    u = torch.rand(n, 22, generator=gen(3))
    boxes = _crop_boxes(u[:, :10], u[:, 10:20], u[:, 20:], h, w, (0.2, 0.6), (3 / 4, 4 / 3))
    top, left, ch, cw = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + ch <= h + 1e-4).all() and (left + cw <= w + 1e-4).all()
    frac = ch * cw / (h * w)
    assert (frac >= 0.2 - 1e-4).all() and (frac <= 0.6 + 1e-4).all()
    aspect = cw / ch
    assert (aspect >= 3 / 4 - 1e-4).all() and (aspect <= 4 / 3 + 1e-4).all()
    assert frac.std() > 0.05 and left.std() > 0.5  # really random per sample


def test_affine_crop_is_pixel_exact():
    x = images(n=2, c=3, h=32, w=32)
    boxes = torch.tensor([[8.0, 4.0, 16.0, 16.0], [0.0, 10.0, 8.0, 20.0]])
    no = torch.zeros(2, dtype=torch.bool)
    theta = _affine_theta(boxes, 32, 32, no, no, torch.zeros(2))
    grid0 = F.affine_grid(theta[:1], [1, 3, 16, 16], align_corners=False)
    grid1 = F.affine_grid(theta[1:], [1, 3, 8, 20], align_corners=False)
    out0 = F.grid_sample(x[:1], grid0, mode="bilinear", padding_mode="border", align_corners=False)
    out1 = F.grid_sample(x[1:], grid1, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out0[0], x[0, :, 8:24, 4:20], atol=1e-5)
    assert torch.allclose(out1[0], x[1, :, 0:8, 10:30], atol=1e-5)


@pytest.mark.parametrize("hw", [(16, 16), (16, 10)])
def test_hflip_and_vflip_equal_torch_flip(hw):
    x = images(n=3, c=13, h=hw[0], w=hw[1])
    ratio = (hw[1] / hw[0],) * 2
    assert torch.allclose(BatchAugment(only(p_hflip=1.0, crop_ratio=ratio))(x, gen()), x.flip(-1), atol=1e-6)
    assert torch.allclose(BatchAugment(only(p_vflip=1.0, crop_ratio=ratio))(x, gen()), x.flip(-2), atol=1e-6)
    both = BatchAugment(only(p_hflip=1.0, p_vflip=1.0, crop_ratio=ratio))(x, gen())
    assert torch.allclose(both, x.flip(-1, -2), atol=1e-6)


def test_hflip_half_probability_mixes_samples():
    x = images(n=64, c=1)
    out = BatchAugment(only(p_hflip=0.5))(x, gen(2))
    same = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    flipped = torch.isclose(out, x.flip(-1), atol=1e-6).flatten(1).all(1)
    assert (same ^ flipped).all()
    assert 10 < int(flipped.sum()) < 54


def test_rot90_square_gives_one_of_four_rotations():
    x = images(n=32, c=3, h=12, w=12)
    out = BatchAugment(only(p_rot90=1.0))(x, gen(4))
    seen = set()
    for i in range(x.shape[0]):
        matches = [k for k in range(4) if torch.allclose(out[i], torch.rot90(x[i], k, dims=(-2, -1)), atol=1e-6)]
        assert len(matches) == 1, i
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_rot90_non_square_only_0_or_180():
    x = images(n=32, c=2, h=16, w=8)
    out = BatchAugment(only(p_rot90=1.0, crop_ratio=(0.5, 0.5)))(x, gen(4))
    assert out.shape == x.shape
    same = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    rot180 = torch.isclose(out, x.flip(-1, -2), atol=1e-6).flatten(1).all(1)
    assert (same ^ rot180).all()
    assert 0 < int(rot180.sum()) < 32


# ---------------------------------------------------------------- photometric


def test_per_channel_brightness_for_multiplex():
    x = torch.full((4, 13, 8, 8), 0.5)
    out = BatchAugment(only(p_jitter=1.0, brightness=0.4, contrast=0.0))(x, gen())
    factors = out[:, :, 0, 0] / 0.5  # (N, C)
    assert torch.allclose(out, factors[:, :, None, None] * 0.5)  # spatially constant per channel
    assert (factors >= 0.6 - 1e-6).all() and (factors <= 1.4 + 1e-6).all()
    assert factors.std(dim=1).min() > 0.02  # different factors per channel ...
    assert factors.std(dim=0).min() > 0.02  # ... and per sample


def test_shared_brightness_for_rgb():
    x = torch.full((4, 3, 8, 8), 0.5)
    out = BatchAugment(only(p_jitter=1.0, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0))(x, gen())
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 0], out[:, 2])
    assert out[:, 0, 0, 0].std() > 0.01


def test_per_channel_contrast_preserves_channel_means():
    x = 0.4 + 0.2 * images(n=4, c=13)  # values in [0.4, 0.6]: no clamping with contrast <= 1.4
    out = BatchAugment(only(p_jitter=1.0, brightness=0.0, contrast=0.4))(x, gen())
    assert torch.allclose(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5)
    ratio = out.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert (ratio >= 0.6 - 1e-4).all() and (ratio <= 1.4 + 1e-4).all()
    assert ratio.std(dim=1).min() > 0.02


def test_jitter_probability_masks_per_sample():
    x = images(n=64, c=13)
    out = BatchAugment(only(p_jitter=0.5))(x, gen(5))
    unchanged = torch.isclose(out, x).flatten(1).all(1)
    assert 10 < int(unchanged.sum()) < 54


def test_zero_strength_jitter_is_identity_incl_hsv_roundtrip():
    x = images(n=4, c=3)
    aug = BatchAugment(only(p_jitter=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=1e-9))
    assert torch.allclose(aug(x, gen()), x, atol=1e-5)


def test_hue_shift_preserves_value_and_chroma_and_changes_colour():
    x = images(n=8, c=3)
    out = BatchAugment(only(p_jitter=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5))(x, gen())
    assert torch.allclose(out.amax(1), x.amax(1), atol=1e-5)
    assert torch.allclose(out.amin(1), x.amin(1), atol=1e-5)
    assert (out - x).abs().amax(dim=(1, 2, 3)).min() > 0.05


def test_saturation_zero_factor_range_and_grayscale():
    x = images(n=4, c=3)
    gray = BatchAugment(only(p_grayscale=1.0))(x, gen())
    expected = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        assert torch.allclose(gray[:, ch], expected, atol=1e-6)
    # grayscale is RGB-only: ignored for other channel counts
    y = images(n=4, c=4)
    assert torch.allclose(BatchAugment(only(p_grayscale=1.0))(y, gen()), y)


def test_solarize():
    x = images(n=4, c=13)
    out = BatchAugment(only(p_solarize=1.0))(x, gen())
    assert torch.allclose(out, torch.where(x >= 0.5, 1 - x, x))


def test_noise_std():
    x = torch.full((8, 3, 32, 32), 0.5)
    out = BatchAugment(only(p_noise=1.0, noise_std=0.05))(x, gen())
    assert abs(float((out - x).std()) - 0.05) < 0.005
    assert abs(float((out - x).mean())) < 0.005


# ---------------------------------------------------------------- property test


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.sampled_from([1, 2, 3, 5, 13]),
    h=st.integers(4, 20),
    w=st.integers(4, 20),
    seed=st.integers(0, 2**31 - 1),
    out_size=st.none() | st.integers(3, 12),
)
def test_property_shape_and_range(n, c, h, w, seed, out_size):
    x = torch.rand(n, c, h, w, generator=gen(seed))
    aug = BatchAugment(strong(out_size=out_size))
    out = aug(x, gen(seed))
    oh, ow = (h, w) if out_size is None else (out_size, out_size)
    assert out.shape == (n, c, oh, ow)
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, aug(x, gen(seed)))


# ---------------------------------------------------------------- crop aspect relative to the image (MNIST-CIFAR)


def coordinate_image(n: int, h: int, w: int) -> torch.Tensor:
    """(n, 2, h, w): channel 0 = normalised row coordinate (pixel centres), channel 1 = column coordinate."""
    rows = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    cols = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij")).expand(n, 2, h, w).clone()


def test_crop_ratio_mode_is_validated_by_name():
    assert AugmentConfig().crop_ratio_mode == "absolute"  # torchvision's semantics stay the default
    assert AugmentConfig.from_dict({"crop_ratio_mode": "relative"}).crop_ratio_mode == "relative"
    with pytest.raises(ValueError, match=r"crop_ratio_mode.*'relativ'"):
        AugmentConfig.from_dict({"crop_ratio_mode": "relativ"})


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    lo=st.floats(0.05, 1.0),
    ratio_lo=st.floats(0.3, 1.0),
    ratio_hi=st.floats(1.0, 3.0),
    tall=st.sampled_from([(64, 32), (32, 16), (16, 48)]),
)
def test_relative_crop_of_a_rectangle_is_the_absolute_crop_of_a_square(seed, lo, ratio_lo, ratio_hi, tall):
    """Property: in normalised image coordinates, a relative-aspect crop of an H x W image samples exactly where
    an absolute-aspect crop of a square image samples (same random numbers): the crop distribution no longer
    depends on the image's shape."""
    h, w = tall
    common = dict(crop_scale=(lo, 1.0), crop_ratio=(ratio_lo, ratio_hi), out_size=(8, 8))
    rect = BatchAugment(only(crop_ratio_mode="relative", **common))(coordinate_image(16, h, w), gen(seed))
    square = BatchAugment(only(crop_ratio_mode="absolute", **common))(coordinate_image(16, 32, 32), gen(seed))
    # bilinear sampling of a linear ramp is exact except within half a pixel of the border (border padding)
    assert torch.allclose(rect, square, atol=0.5 / min(h, w, 32) + 1e-6)


def _half_coverage(mode: str, scale: tuple[float, float], n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a 64x32 image each view spans, and the share of each half (top, bottom) it keeps."""
    x = coordinate_image(n, 64, 32)
    out = BatchAugment(only(crop_ratio_mode=mode, crop_scale=scale))(x, gen(7))
    top_edge, bottom_edge = out[:, 0].amin(dim=(1, 2)) * 64, out[:, 0].amax(dim=(1, 2)) * 64
    spans = bottom_edge - top_edge + 1  # pixel centres seen, within a pixel
    top_half = (torch.clamp(32 - top_edge, 0, 32) / 32).clamp(max=1)
    bottom_half = (torch.clamp(bottom_edge - 32, 0, 32) / 32).clamp(max=1)
    return spans, torch.minimum(top_half, bottom_half)


@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.6, 1.0)])
def test_relative_crops_cover_both_halves_of_a_64x32_image(scale):
    spans_abs, least_abs = _half_coverage("absolute", scale)
    spans_rel, least_rel = _half_coverage("relative", scale)
    # torchvision's absolute 3/4-4/3 range: a view never spans more than 32 * 4/3 ~ 43 of the 64 rows
    assert spans_abs.max() <= 32 * 4 / 3 + 1.5
    # relative to the image's aspect: full-height views exist, and views keep much more of both halves
    assert spans_rel.max() >= 63
    assert spans_rel.mean() > spans_abs.mean() + 8
    assert (least_rel < 0.25).float().mean() <= 0.15
    assert (least_rel < 0.25).float().mean() < (least_abs < 0.25).float().mean() + 1e-9
    assert least_rel.mean() > least_abs.mean() + 0.1
