"""Image I/O: any Pillow image mode to RGB, ComfyUI IMAGE tensors to RGB, atomic saves.

Conventions, used by every caller (CLI, nodes, trainer, tests):

- RGB out, always. Grayscale (``1``, ``L``, ``I;16``, ``I``, ``F``), palette (``P``, ``PA``), ``CMYK``,
  ``YCbCr``, ``LAB``, ``HSV``, ``RGBX`` are converted, never refused.
- Alpha (``LA``, ``RGBA``, ``P`` with transparency, ComfyUI IMAGE with 4 channels) is composited onto
  ``background`` (straight alpha: ``rgb * a + background * (1 - a)``), white by default; pass
  ``background=None`` to drop the alpha channel instead.
- 16-bit and 32-bit integer grayscale is scaled by 1/65535 (how Pillow opens 16-bit PNGs), float ``F``
  images are taken as 0..1 when their maximum is <= 1, else as 0..255 (Pillow's own ``F`` -> ``L`` rule).
- CMYK uses Pillow's plain (profile-less) conversion; an embedded ICC profile is not applied.
- EXIF orientation is applied; multi-frame files (GIF, APNG, TIFF) give their first frame.
- Images larger than ``limits.max_pixels()`` (``ANYTALK_MAX_PIXELS``, 50 Mpx) are refused from the header,
  before decoding.
- Background colours are RGB tuples of floats in 0..1.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import limits
from ._files import atomic_output, check_input_file

__all__ = ["WHITE", "load_image", "to_rgb_array", "image_tensor_to_rgb", "to_unit_frames", "save_image"]

Background = tuple[float, float, float]
WHITE: Background = (1.0, 1.0, 1.0)

_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_WIDE_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_EXIF_WARNED: list[bool] = []  # the unreadable-EXIF fallback is announced once per process

log = logging.getLogger("anytalk")


def load_image(path: str | os.PathLike, background: Background | None = WHITE) -> torch.Tensor:
    """Read an image file as a float32 RGB tensor [H, W, 3] in 0..1 (see the module notes)."""
    p = check_input_file(path, "Image")
    if background is not None:
        _check_background(background)
    try:
        with Image.open(p) as image:
            limits.check_pixels(image.width, image.height, f"{p}: the image")  # from the header, before decoding
            image.load()
            rgb = to_rgb_array(image, background=background, dtype=np.float32)
    except limits.LimitError:
        raise
    except Image.DecompressionBombError as e:
        raise ValueError(f"image is too large to load safely: {p} ({e})") from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file, or a format Pillow cannot read: {p}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data; Pillow uses all three
        raise ValueError(f"cannot read image {p}: {e}") from None
    return torch.from_numpy(rgb)


def to_rgb_array(
    image: Image.Image, background: Background | None = WHITE, dtype: type = np.uint8
) -> np.ndarray:
    """Convert a Pillow image of any mode to an RGB array [H, W, 3], uint8 or float32 in 0..1."""
    if dtype not in (np.uint8, np.float32):
        raise ValueError(f"dtype must be np.uint8 or np.float32, got {dtype}")
    image = _apply_exif_orientation(image)
    rgb = _rgb_float(image, background) if _needs_float(image) else _rgb_uint8(image)
    if dtype == np.float32:
        return rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb
    if rgb.dtype == np.uint8:
        return rgb
    return np.round(rgb * 255.0).astype(np.uint8)


def image_tensor_to_rgb(image: torch.Tensor | np.ndarray, background: Background | None = WHITE) -> torch.Tensor:
    """Validate a ComfyUI-style IMAGE [B,H,W,C] or [H,W,C] (C in 1, 3, 4) and return float32 [B,H,W,3].

    uint8 input is scaled by 1/255; float input is clamped to 0..1. One channel is repeated to three;
    a fourth (alpha) channel is composited onto ``background`` or, with ``background=None``, dropped.
    """
    t = torch.as_tensor(image)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"expected an image tensor [B,H,W,C] or [H,W,C], got shape {tuple(t.shape)}")
    b, h, w, c = t.shape
    if b == 0:
        raise ValueError("empty image batch (B = 0)")
    if h == 0 or w == 0:
        raise ValueError(f"image has zero size: shape {tuple(t.shape)}")
    if c not in (1, 3, 4):
        hint = " (channels-first? expected channels last)" if h in (1, 3, 4) else ""
        raise ValueError(f"expected 1, 3 or 4 channels in the last dimension, got shape {tuple(t.shape)}{hint}")
    t = _to_unit_float(t)
    if c == 1:
        return t.expand(b, h, w, 3).contiguous()
    if c == 4:
        return _composite(t[..., :3], t[..., 3:], background)
    return t.contiguous()


def save_image(
    image: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    overwrite: bool = False,
    background: Background | None = WHITE,
    **save_options,
) -> Path:
    """Save one image [H,W,C] or [1,H,W,C] (float 0..1 or uint8) atomically; the format comes from the suffix.

    Refuses to replace an existing file unless ``overwrite=True`` (use ``unique_path`` for new names).
    """
    p = Path(path).expanduser()
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format from the file name: {p} (use e.g. .png or .jpg)")
    rgb = image_tensor_to_rgb(image, background=background)
    if rgb.shape[0] != 1:
        raise ValueError(f"save_image writes one image, got a batch of {rgb.shape[0]}: {p}")
    pixels = (rgb[0].detach().cpu() * 255.0).round().to(torch.uint8).numpy()
    with atomic_output(p, overwrite=overwrite) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format=fmt, **save_options)
    return p


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; a broken EXIF block is ignored with a warning, not fatal."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not make an otherwise good image unreadable
        if not _EXIF_WARNED:
            _EXIF_WARNED.append(True)
            log.warning("AnyTalk: an image's EXIF block is unreadable (%s: %s); it is used as stored, without "
                        "rotating it by its EXIF orientation", type(exc).__name__, exc)
        return image


def _needs_float(image: Image.Image) -> bool:
    """Whether converting ``image`` needs float arithmetic (wide grayscale or alpha compositing)."""
    return image.mode in _WIDE_GRAY_MODES or image.mode == "F" or _has_alpha(image)


def _has_alpha(image: Image.Image) -> bool:
    """Alpha channel, or a palette/grayscale image with a transparent colour."""
    return image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info)


def _rgb_uint8(image: Image.Image) -> np.ndarray:
    """8-bit modes without alpha, through Pillow's own converters."""
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode == "LAB":
        return _lab_to_rgb(image)
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot convert image mode {image.mode!r} to RGB: {e}") from None


def _lab_to_rgb(image: Image.Image) -> np.ndarray:
    """CIE LAB (D50) -> sRGB through littleCMS; Pillow's convert() has no LAB path."""
    try:
        from PIL import ImageCms
    except ImportError as e:  # Pillow built without littleCMS
        raise ValueError(f"cannot convert a LAB image to RGB: {e}") from None
    try:
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return np.asarray(ImageCms.applyTransform(image, transform), dtype=np.uint8).copy()
    except (OSError, ValueError, ImageCms.PyCMSError) as e:
        raise ValueError(f"cannot convert a LAB image to RGB: {e}") from None


def _rgb_float(image: Image.Image, background: Background | None) -> np.ndarray:
    """Wide grayscale and alpha modes as float32 RGB in 0..1."""
    if image.mode in _WIDE_GRAY_MODES or image.mode == "F":
        gray = _gray_unit(image)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("La", "RGBa"):
        return _premultiplied_rgb(image, background)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    return _composite_np(rgba[..., :3], rgba[..., 3:], background)


def _premultiplied_rgb(image: Image.Image, background: Background | None) -> np.ndarray:
    """Premultiplied-alpha modes (Pillow cannot convert ``La`` at all): composite or un-premultiply."""
    values = np.asarray(image, dtype=np.float32) / 255.0
    colour, alpha = values[..., :-1], values[..., -1:]
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    if background is None:
        return np.clip(np.divide(colour, alpha, out=np.zeros_like(colour), where=alpha > 0), 0.0, 1.0)
    bg = np.asarray(_check_background(background), dtype=np.float32)
    return colour + bg * (1.0 - alpha)


def _gray_unit(image: Image.Image) -> np.ndarray:
    """A 16/32-bit integer or float grayscale image as float32 in 0..1."""
    values = np.asarray(image).astype(np.float32)
    if image.mode == "F":
        scale = 1.0 if values.size == 0 or np.nanmax(values) <= 1.0 else 255.0
    else:
        scale = 65535.0
    return np.clip(np.nan_to_num(values / scale), 0.0, 1.0)


def _composite_np(rgb: np.ndarray, alpha: np.ndarray, background: Background | None) -> np.ndarray:
    """Straight-alpha composite onto ``background`` (or drop alpha when it is None)."""
    if background is None:
        return rgb
    bg = np.asarray(_check_background(background), dtype=np.float32)
    return rgb * alpha + bg * (1.0 - alpha)


def _composite(rgb: torch.Tensor, alpha: torch.Tensor, background: Background | None) -> torch.Tensor:
    """Tensor version of ``_composite_np``."""
    if background is None:
        return rgb.contiguous()
    bg = torch.tensor(_check_background(background), dtype=rgb.dtype, device=rgb.device)
    return rgb * alpha + bg * (1.0 - alpha)


def _check_background(background: Background) -> Background:
    """Validate an RGB background given as three floats in 0..1."""
    values = tuple(float(v) for v in background)
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"background must be three floats in 0..1 (RGB), got {background!r}")
    return values  # type: ignore[return-value]


def _to_unit_float(t: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 / 255; floats checked for NaN/inf and clamped to 0..1."""
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype == torch.uint8):
        raise ValueError(f"image tensor must be float in 0..1 or uint8, got dtype {t.dtype}")
    return _unit_values(t, "image tensor contains").clamp(0.0, 1.0)


def _unit_values(t: torch.Tensor, subject: str) -> torch.Tensor:
    """uint8 -> float32 / 255; other dtypes -> float32, refused when not finite (``subject`` starts the message)."""
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{subject} NaN or infinite values")
    return t


def to_unit_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 or float frames (N, H, W, 3) or (N, 3, H, W) -> float32 (N, 3, H, W), uint8 scaled by 1/255.

    Float frames are taken as 0..1 and not clamped (metrics see the values the model made).
    """
    if frames.dim() != 4:
        raise ValueError(f"frames must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(frames.shape)}")
    if frames.shape[1] != 3 and frames.shape[-1] == 3:
        frames = frames.permute(0, 3, 1, 2)
    if frames.shape[1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {tuple(frames.shape)}")
    return _unit_values(frames, "frames contain")
