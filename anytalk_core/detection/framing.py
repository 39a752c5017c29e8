"""Framing conventions per checkpoint family: from face landmarks to the square crop a model was trained on.

Pure, batched functions (kornia style). Pixel coordinates follow :mod:`anytalk_core.crop` (pixel centres at
integers, x right, y down).

The face frame (LivePortrait's ``parse_rect_from_landmark``, facts from KwaiVGI/LivePortrait
``src/utils/crop.py``): the face's up-down axis ``uy`` points from the midpoint of the eyes to the centre
of the mouth, ``ux`` is ``uy`` turned a quarter to the right; all face landmarks (jaw contour, brows,
eyes, nose, mouth; never ears or forehead) are expressed in that frame; the face centre is the middle of
their extent and the *face size* is the longer side of it. A crop is then a square of side
``scale * face size`` centred at ``centre + vx_ratio * side * ux + vy_ratio * side * uy``, turned so the face
axis is vertical (the eye line level).

Conventions (:data:`FRAMINGS`):

* ``liveportrait`` source / animal source: ``scale`` 2.3, ``vx_ratio`` 0, ``vy_ratio`` -0.125, rotated;
  driving video: ``scale`` 2.2, ``vy_ratio`` -0.1 (LivePortrait's ``CropConfig``).
* ``face_vid2vid``: first-order-model's ``crop-video.py``: the detector's face box grown by
  ``increase_area`` 0.1 on every side (a square of 1.2 x the face box's longer side), centred on it, upright
  (no rotation).
* ``anytalk``: the framing of the synthetic renders AnyTalk checkpoints are trained on, measured on
  renders of all three domains at their default framing (see :data:`ANYTALK_FRAMING`), rotated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Framing", "FRAMINGS", "ANYTALK_FRAMING", "face_frame", "framing_square"]


@dataclass(frozen=True)
class Framing:
    """A crop convention: side = ``scale`` x face size; centre moved by (``vx_ratio``, ``vy_ratio``) x side
    along the face axes; ``rotate`` levels the eye line."""

    scale: float
    vx_ratio: float = 0.0
    vy_ratio: float = 0.0
    rotate: bool = True


# Measured on 3 x 64 frontal renders at the renderer's default framing (tests/test_detection.py checks it):
# image side / face size 2.44 (human), 2.29 (cg_human), 2.17 (animal), mean 2.30; the image centre sits
# above the face centre by 0.065 of the side (human), 0.056 (cg_human), 0.009 (animal), mean 0.043.
ANYTALK_FRAMING = Framing(scale=2.3, vx_ratio=0.0, vy_ratio=-0.043, rotate=True)

FRAMINGS: dict[str, dict[str, Framing]] = {
    "liveportrait": {
        "source": Framing(scale=2.3, vx_ratio=0.0, vy_ratio=-0.125),
        "driving": Framing(scale=2.2, vx_ratio=0.0, vy_ratio=-0.1),
    },
    "face_vid2vid": {
        "source": Framing(scale=1.2, rotate=False),
        "driving": Framing(scale=1.2, rotate=False),
    },
    "anytalk": {"source": ANYTALK_FRAMING, "driving": ANYTALK_FRAMING},
}


def face_frame(
    landmarks: torch.Tensor, eyes: torch.Tensor, mouth: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face centre (B, 2), face size (B,) and roll angle (B,) in degrees from landmarks.

    landmarks: (B, N, 2) face landmarks in pixels (contour, brows, eyes, nose, mouth);
    eyes: (B, 2, 2) the two eye centres; mouth: (B, 2) the mouth centre. The angle is that of the face's
    ``ux`` axis against the image x axis (positive: the face is turned clockwise on screen, y down).
    """
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (B, N, 2), got {tuple(landmarks.shape)}")
    eye_mid = eyes.mean(dim=1)
    uy = mouth - eye_mid
    length = uy.norm(dim=-1, keepdim=True)
    down = torch.tensor([0.0, 1.0], dtype=uy.dtype, device=uy.device).expand_as(uy)
    uy = torch.where(length > 1e-3, uy / length.clamp_min(1e-3), down)
    ux = torch.stack([uy[:, 1], -uy[:, 0]], dim=-1)
    axes = torch.stack([ux, uy], dim=1)  # (B, 2, 2): rows ux, uy
    c0 = landmarks.mean(dim=1)
    local = torch.einsum("bnk,bjk->bnj", landmarks - c0[:, None], axes)
    lo, hi = local.amin(dim=1), local.amax(dim=1)
    mid = (lo + hi) / 2
    center = c0 + torch.einsum("bj,bjk->bk", mid, axes)
    size = (hi - lo).amax(dim=-1)
    angle = torch.rad2deg(torch.atan2(ux[:, 1], ux[:, 0]))
    return center, size, angle


def framing_square(
    center: torch.Tensor, size: torch.Tensor, angle: torch.Tensor, framing: Framing
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The crop square of a convention: face centre (B, 2), size (B,), angle (B,) degrees ->
    square centre (B, 2), side (B,), angle (B,) (zero where the convention does not rotate)."""
    side = size * framing.scale
    a = torch.deg2rad(angle) if framing.rotate else torch.zeros_like(angle)
    ux = torch.stack([torch.cos(a), torch.sin(a)], dim=-1)
    uy = torch.stack([-torch.sin(a), torch.cos(a)], dim=-1)
    shift = (framing.vx_ratio * side)[:, None] * ux + (framing.vy_ratio * side)[:, None] * uy
    return center + shift, side, torch.rad2deg(a)

