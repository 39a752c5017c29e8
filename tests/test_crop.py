"""Face crop and paste-back: exact footprint, round-trip quality, box geometry, auto crop, errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
from skimage import data

from anytalk_core.crop import CropSpec, apply_crop, crop_auto, crop_box, crop_full, feather_mask, paste_back


def _astronaut(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].to(dtype) / 255).contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    mse = ((a - b)[where.expand_as(a)] ** 2).mean()
    return float(10 * torch.log10(1 / mse))


def _to_crop(spec: CropSpec, x: float, y: float) -> tuple[float, float]:
    p = spec.matrix[0] @ torch.tensor([x, y, 1.0], dtype=torch.float64)
    return float(p[0]), float(p[1])


def _to_frame(spec: CropSpec, u: float, v: float, index: int = 0) -> tuple[float, float]:
    p = spec.inverse_matrix()[index] @ torch.tensor([u, v, 1.0], dtype=torch.float64)
    return float(p[0]), float(p[1])


def _crop_side_in_frame(spec: CropSpec, index: int = 0) -> float:
    return spec.size / float(spec.matrix[index, 0, :2].norm())


def _footprint_coords(spec: CropSpec, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop coordinates (u, v) of every frame pixel, in float64."""
    h, w = spec.original_hw
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    m = spec.matrix[index]
    return m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]


def _outside(spec: CropSpec, index: int = 0, tol: float = 1e-3) -> torch.Tensor:
    u, v = _footprint_coords(spec, index)
    hi = spec.size - 1 + tol
    return (u < -tol) | (u > hi) | (v < -tol) | (v > hi)


SPECS = {
    "upscale_rotated": dict(box=(200, 100, 180, 180), size=256, scale=1.0, angle=20.0),
    "one_to_one": dict(box=(150, 60, 256, 256), size=256, scale=1.0, angle=0.0),
    "one_to_one_rotated": dict(box=(150, 60, 256, 256), size=256, scale=1.0, angle=15.0),
    "scaled_box": dict(box=(200, 100, 100, 120), size=256, scale=1.3, angle=-25.0),
    "beyond_border": dict(box=(380, -40, 200, 200), size=256, scale=1.2, angle=10.0),
}


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("feather", [0.0, 0.1, 0.25])
def test_outside_footprint_is_bit_exact(name, feather):
    image = _astronaut()
    spec = crop_box(image.shape[-2:], **SPECS[name])
    generated = torch.rand(1, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    frame = paste_back(image, generated, spec, feather=feather)
    outside = _outside(spec)
    assert outside.sum() > 1000 and (~outside).sum() > 1000
    assert torch.equal(frame[..., outside], image[..., outside])
    # ... and the inside really took the crop.
    assert not torch.equal(frame[..., ~outside], image[..., ~outside])


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_psnr(name, dtype):
    image = _astronaut(dtype)
    spec = crop_box(image.shape[-2:], **SPECS[name])
    crop = apply_crop(image, spec)
    assert crop.shape == (1, 3, spec.size, spec.size) and crop.dtype == dtype
    frame = paste_back(image, crop, spec)
    # The crop's region in the frame, away from the padded part of a box beyond the border.
    region = ~_outside(spec, tol=0.0)
    u, v = _footprint_coords(spec)
    region = region & (u > 2) & (v > 2) & (u < spec.size - 3) & (v < spec.size - 3)
    assert region.sum() > 5000
    assert _psnr(frame, image, region) >= 40.0


@pytest.mark.parametrize("side", [300, 400])
def test_roundtrip_psnr_downscaled_band_limited(side):
    # A crop smaller than its region loses detail by design; on an image without that detail
    # the round trip must still land exactly.
    from kornia.filters import gaussian_blur2d

    sigma = 0.6 * side / 256 + 0.5
    image = gaussian_blur2d(_astronaut(torch.float64), (15, 15), (sigma, sigma))
    spec = crop_box(image.shape[-2:], (100, 50, side, side), 256, angle=10.0)
    frame = paste_back(image, apply_crop(image, spec), spec)
    assert _psnr(frame, image, ~_outside(spec, tol=0.0)) >= 40.0


def test_interior_takes_the_crop_exactly():
    image = _astronaut()
    spec = crop_box(image.shape[-2:], (200, 100, 180, 180), 256, angle=20.0)
    generated = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    pasted = paste_back(torch.zeros_like(image), generated, spec, feather=0.0)
    frame = paste_back(image, generated, spec, feather=0.0)
    weight = paste_back(torch.zeros(1, 1, 512, 512), torch.ones(1, 1, 256, 256), spec, feather=0.0)
    full = (weight == 1).expand_as(image)
    assert full.sum() > 3 * 20000
    assert torch.equal(frame[full], pasted[full])


def test_feather_mask_and_user_mask():
    m = feather_mask(64, 0.1)
    assert m.shape == (1, 1, 64, 64)
    assert m[..., 0, :].eq(0).all() and m[..., :, -1].eq(0).all()
    assert m[..., 10:-10, 10:-10].eq(1).all()
    image = _astronaut()
    spec = crop_box(image.shape[-2:], (200, 100, 180, 180), 128)
    zero_mask = torch.zeros(1, 1, 128, 128)
    assert torch.equal(paste_back(image, torch.rand(1, 3, 128, 128), spec, mask=zero_mask), image)
    with pytest.raises(ValueError, match="mask must have shape"):
        paste_back(image, torch.rand(1, 3, 128, 128), spec, mask=torch.ones(1, 128, 128))


@pytest.mark.parametrize("hw", [(300, 451), (451, 300), (120, 500)])
def test_crop_full_keeps_aspect(hw):
    h, w = hw
    spec = crop_full(hw, 128)
    m = spec.matrix[0]
    # Uniform scale, no rotation, the longer side spans the crop edge to edge.
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == 0 and m[1, 0] == 0
    assert float(m[0, 0]) == pytest.approx(128 / max(h, w))
    assert _to_crop(spec, (w - 1) / 2, (h - 1) / 2) == pytest.approx((63.5, 63.5))
    long_edge = (-0.5, w - 0.5) if w >= h else (-0.5, h - 0.5)
    axis = 0 if w >= h else 1
    ends = [_to_crop(spec, e, e)[axis] for e in long_edge]
    assert ends == pytest.approx([-0.5, 127.5])
    # A circle stays a circle: a disc's crop has equal extents along both axes.
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    disc = (((xx - w / 2) ** 2 + (yy - h / 2) ** 2) <= (0.4 * min(h, w)) ** 2).float()[None, None]
    crop = apply_crop(disc.expand(1, 3, h, w), spec)[0, 0] > 0.5
    rows, cols = crop.any(1).nonzero(), crop.any(0).nonzero()
    assert abs(int(rows[-1] - rows[0]) - int(cols[-1] - cols[0])) <= 1


def test_crop_full_pads_with_border():
    image = torch.zeros(1, 3, 50, 100)
    image[..., 0, :] = 0.25  # top row
    image[..., -1, :] = 0.75  # bottom row
    crop = apply_crop(image, crop_full((50, 100), 64), mode="bilinear")
    assert torch.allclose(crop[..., :10, :], torch.tensor(0.25))
    assert torch.allclose(crop[..., -10:, :], torch.tensor(0.75))


@pytest.mark.parametrize("box", [(40, 30, 21, 21), (10, 60, 41, 15), (-30, 5, 101, 31)])
def test_manual_box_centre_lands_in_crop_centre(box):
    h, w = 120, 160
    x, y, bw, bh = box
    cx, cy = x + (bw - 1) / 2, y + (bh - 1) / 2  # pixel centre of an odd box
    spec = crop_box((h, w), box, 64, scale=1.5)
    assert _to_crop(spec, cx, cy) == pytest.approx((31.5, 31.5))
    assert _crop_side_in_frame(spec) == pytest.approx(max(bw, bh) * 1.5)
    # The same in pixels: a blob at the box centre is rendered at the crop centre.
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0**2))[None, None]
    crop = apply_crop(blob, spec)[0, 0]
    grid = torch.arange(64, dtype=torch.float64)
    total = crop.sum()
    assert float((crop.sum(0) * grid).sum() / total) == pytest.approx(31.5, abs=0.05)
    assert float((crop.sum(1) * grid).sum() / total) == pytest.approx(31.5, abs=0.05)


def _synthetic_head(
    h: int = 240, w: int = 320, cx: float = 190.0, cy: float = 140.0, rx: float = 55.0, ry: float = 65.0,
    gradient: bool = True, body: bool = False, seed: int = 0,
) -> torch.Tensor:
    """A cartoon 'head': a coloured ellipse with two ears (and optionally a body) on a plain or gradient background."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    if gradient:
        bg = torch.stack([0.2 + 0.5 * xx / w, 0.6 - 0.3 * yy / h, 0.8 + 0 * xx])
    else:
        bg = torch.tensor([0.9, 0.9, 0.85], dtype=torch.float64).view(3, 1, 1).expand(3, h, w)
    fg = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    for ex in (cx - 0.6 * rx, cx + 0.6 * rx):
        fg |= ((xx - ex) / (0.3 * rx)) ** 2 + ((yy - (cy - 0.95 * ry)) / (0.45 * ry)) ** 2 <= 1
    if body:
        fg |= ((xx - cx) / (2.2 * rx)) ** 2 + ((yy - (cy + 2.2 * ry)) / (1.4 * ry)) ** 2 <= 1
    fur = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).view(3, 1, 1)
    img = torch.where(fg, fur.expand(3, h, w), bg)
    noise = 0.01 * torch.randn(img.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (img + noise).clamp(0, 1)[None].float()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"gradient": False}, {"body": True}, {"cx": 90.0, "cy": 150.0, "body": True},
     {"h": 600, "w": 400, "cx": 200.0, "cy": 250.0, "rx": 120.0, "ry": 140.0}],
)
@pytest.mark.parametrize("colour", ["rgb", "gray3", "gray1"])
def test_auto_crop_finds_synthetic_head(kwargs, colour):
    image = _synthetic_head(**kwargs)
    if colour == "gray3":
        image = image.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    elif colour == "gray1":
        image = image.mean(1, keepdim=True)
    spec = crop_auto(image, 256, backend="foreground")
    cx, cy = kwargs.get("cx", 190.0), kwargs.get("cy", 140.0)
    head_h = 2 * kwargs.get("ry", 65.0)
    centre = _to_frame(spec, 127.5, 127.5)
    assert math.dist(centre, (cx, cy)) < 0.2 * head_h
    assert head_h <= _crop_side_in_frame(spec) <= 2.5 * head_h
    # The head sits inside the crop.
    for px, py in [(cx, cy - 0.9 * head_h / 2), (cx, cy + 0.9 * head_h / 2), (cx - kwargs.get("rx", 55.0), cy)]:
        u, v = _to_crop(spec, px, py)
        assert 0 <= u <= 255 and 0 <= v <= 255


def test_auto_crop_without_foreground_uses_centre_square():
    plain = torch.full((1, 3, 100, 180), 0.4)
    for backend in ("foreground", "center", "auto"):
        spec = crop_auto(plain, 64, backend=backend)
        assert _to_frame(spec, 31.5, 31.5) == pytest.approx((89.5, 49.5))
        assert _crop_side_in_frame(spec) == pytest.approx(100)


def test_auto_crop_on_photo_is_valid_and_batched():
    image = torch.cat([_astronaut(), _synthetic_head(h=512, w=512, cx=256.0, cy=256.0, rx=80.0, ry=90.0)])
    spec = crop_auto(image, 128, backend="auto")
    assert len(spec) == 2
    crops = apply_crop(image, spec)
    assert crops.shape == (2, 3, 128, 128) and torch.isfinite(crops).all()
    assert math.dist(_to_frame(spec, 63.5, 63.5, index=1), (256.0, 256.0)) < 0.2 * 180


def test_auto_crop_alpha_channel_is_the_foreground():
    rgba = torch.rand(1, 4, 200, 200, generator=torch.Generator().manual_seed(0))  # noisy colour: no plain background
    rgba[:, 3] = 0
    rgba[:, 3, 60:140, 80:150] = 1
    spec = crop_auto(rgba, 64, backend="foreground")
    assert _to_frame(spec, 31.5, 31.5) == pytest.approx((114.5, 99.5), abs=2.0)


def test_auto_crop_backend_errors():
    image = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown crop backend"):
        crop_auto(image, 32, backend="yolo")
    with pytest.raises(ValueError, match="unknown crop backend 'mediapipe'"):  # removed: it never ran
        crop_auto(image, 32, backend="mediapipe")


def test_spec_round_trips_through_dict():
    spec = crop_auto(torch.cat([_synthetic_head(), _synthetic_head(cx=100.0)]), 96, backend="foreground")
    text = json.dumps(spec.to_dict())
    back = CropSpec.from_dict(json.loads(text))
    assert torch.equal(back.matrix, spec.matrix)
    assert back.size == spec.size and back.original_hw == spec.original_hw
    with pytest.raises(ValueError, match="missing"):
        CropSpec.from_dict({"size": 64})


def test_batch_handling():
    image = _astronaut()
    frames = image.expand(4, -1, -1, -1).clone()
    spec = crop_box(image.shape[-2:], (200, 100, 180, 180), 128)
    crops = apply_crop(frames, spec)
    assert crops.shape == (4, 3, 128, 128)
    generated = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    # Several generated crops into one original ...
    many = paste_back(image, generated, spec)
    assert many.shape == (4, 3, 512, 512)
    for i in range(4):
        assert torch.equal(many[i : i + 1], paste_back(image, generated[i : i + 1], spec))
    # ... or into a batch of originals, with one spec per frame.
    specs = crop_box(image.shape[-2:], (200, 100, 180, 180), 128)
    per_frame = CropSpec(torch.cat([specs.matrix, crop_box((512, 512), (10, 10, 90, 90), 128).matrix] * 2), 128, (512, 512))
    out = paste_back(frames, generated, per_frame)
    for i in range(4):
        assert torch.equal(out[i : i + 1], paste_back(frames[i : i + 1], generated[i : i + 1], per_frame.select(i)))
    with pytest.raises(ValueError, match="batch sizes"):
        paste_back(frames[:3], generated, spec)


def test_crop_of_another_size_is_resampled():
    image = _astronaut(torch.float64)
    spec = crop_box(image.shape[-2:], (200, 100, 128, 128), 128)
    big = apply_crop(image, spec.resized(256))
    frame = paste_back(image, big, spec)
    region = ~_outside(spec, tol=0.0)
    assert _psnr(frame, image, region) >= 40.0


def test_dtype_and_device_follow_inputs():
    image = _astronaut(torch.float64)
    spec = crop_full(image.shape[-2:], 64)
    crop = apply_crop(image, spec)
    assert crop.dtype == torch.float64
    assert paste_back(image, crop.float(), spec).dtype == torch.float64


def test_errors():
    image = torch.rand(1, 3, 64, 80)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        apply_crop(image[0], crop_full((64, 80), 32))
    with pytest.raises(ValueError, match="made for"):
        apply_crop(image, crop_full((64, 64), 32))
    with pytest.raises(ValueError, match="at least 16"):
        crop_full((64, 80), 8)
    with pytest.raises(ValueError, match="at least 16"):
        crop_auto(image, 15)
    with pytest.raises(ValueError, match="positive width and height"):
        crop_box((64, 80), (10, 10, 0, 20), 32)
    with pytest.raises(ValueError, match="entirely outside"):
        crop_box((64, 80), (80, 10, 20, 20), 32)
    with pytest.raises(ValueError, match="entirely outside"):
        crop_box((64, 80), (-30, -30, 30, 30), 32)
    with pytest.raises(ValueError, match=r"\(x, y, w, h\)"):
        crop_box((64, 80), (1, 2, 3), 32)
    with pytest.raises(ValueError, match="floating"):
        apply_crop(torch.zeros(1, 3, 64, 80, dtype=torch.uint8), crop_full((64, 80), 32))
    with pytest.raises(ValueError, match="channels"):
        paste_back(image, torch.rand(1, 1, 32, 32), crop_full((64, 80), 32))
    with pytest.raises(ValueError, match="square"):
        paste_back(image, torch.rand(1, 3, 32, 30), crop_full((64, 80), 32))
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        CropSpec(torch.zeros(1, 3, 3), 32, (64, 80))
    with pytest.raises(ValueError, match="singular"):
        CropSpec(torch.zeros(1, 2, 3), 32, (64, 80))


def test_auto_crop_says_which_detector_framed_each_frame_and_the_box_in_pixels():
    head = _synthetic_head()
    h, w = head.shape[-2:]
    spec = crop_auto(torch.cat([head, torch.full_like(head, 0.4)]), 64, backend="foreground")
    assert [r.detector for r in spec.reports] == ["foreground", "center"]
    left, top, side = spec.box(1)  # nothing found: the centre square of the picture
    assert (left, top, side) == pytest.approx(((w - h) / 2, 0.0, h))
    assert [r.detector for r in crop_auto(head, 64, backend="center").reports] == ["center"]


def test_box_is_the_manual_box_made_square():
    spec = crop_box((100, 120), (10.0, 20.0, 30.0, 40.0), 64)
    assert spec.box() == pytest.approx((5.0, 20.0, 40.0))  # side max(w, h), same centre
    assert spec.reports == ()
