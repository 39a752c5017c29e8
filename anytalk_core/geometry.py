"""Geometry of the canonical-3D-keypoint motion representation.

Pure, batched functions in the manner of ``kornia.geometry``: device and dtype come from the inputs,
everything is differentiable. Shapes use B for batch, K for keypoints, D/H/W for volume sizes.

Coordinates are normalised to [-1, 1] with the face-vid2vid convention ``c_j = 2 j / (n - 1) - 1``;
the last axis of a grid or keypoint is (x, y, z) with x along width, y along height, z along depth.
(kornia's ``create_meshgrid3d`` orders its last axis differently, so the identity grid is ours.)
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

log = logging.getLogger("anytalk")
_CPU_SAMPLER_DEVICES: set[str] = set()  # devices whose CPU fallback was announced

__all__ = [
    "bins_to_degrees",
    "elementary_rotations",
    "euler_to_rotation_matrix",
    "transform_keypoints",
    "coordinate_grid_3d",
    "coordinate_grid_2d",
    "keypoint_gaussians",
    "heatmap_to_keypoints",
    "grid_sample_3d",
    "warp_volume",
    "convex_hull_volume",
]


def bins_to_degrees(logits: torch.Tensor, offset: float = 99.0, bin_width: float = 3.0) -> torch.Tensor:
    """Expected angle of a binned head-pose classifier: ``bin_width * sum_i softmax_i * i - offset``.

    logits: (B, N) -> (B,) degrees. face-vid2vid uses offset 99, LivePortrait 97.5 (66 bins of 3 deg).
    """
    probs = F.softmax(logits, dim=1)
    idx = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    return torch.sum(probs * idx, dim=1) * bin_width - offset


def elementary_rotations(
    pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor, pi: float = math.pi
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation matrices about x (pitch), y (yaw) and z (roll) for angles in degrees.

    pitch, yaw, roll: (B,) -> three (B, 3, 3). ``pi`` is a parameter because face-vid2vid converts
    degrees with 3.14, not the true constant, and its weights were trained that way.
    """
    def parts(deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rad = deg.reshape(-1) / 180 * pi
        return torch.cos(rad), torch.sin(rad), torch.ones_like(rad), torch.zeros_like(rad)

    c, s, one, zero = parts(pitch)
    r_x = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], dim=1).view(-1, 3, 3)
    c, s, one, zero = parts(yaw)
    r_y = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=1).view(-1, 3, 3)
    c, s, one, zero = parts(roll)
    r_z = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).view(-1, 3, 3)
    return r_x, r_y, r_z


def euler_to_rotation_matrix(
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    roll: torch.Tensor,
    order: str = "xyz",
    pi: float = math.pi,
) -> torch.Tensor:
    """Column-vector rotation matrix from Euler angles in degrees: (B,) x3 -> (B, 3, 3).

    ``order="xyz"`` gives R_x(pitch) R_y(yaw) R_z(roll) (face-vid2vid: roll applied first);
    ``order="zyx"`` gives R_z(roll) R_y(yaw) R_x(pitch) (LivePortrait: pitch applied first).
    """
    r_x, r_y, r_z = elementary_rotations(pitch, yaw, roll, pi=pi)
    mats = {"x": r_x, "y": r_y, "z": r_z}
    if sorted(order) != ["x", "y", "z"]:
        raise ValueError(f"rotation order must be a permutation of 'xyz', got {order!r}")
    first, second, third = (mats[a] for a in order)
    return torch.einsum("bij,bjk,bkm->bim", first, second, third)


def transform_keypoints(
    canonical: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    expression: torch.Tensor,
    scale: torch.Tensor | None = None,
    translate_z: bool = True,
    scale_before_translation: bool = True,
) -> torch.Tensor:
    """Move canonical keypoints by a head pose and expression deltas.

    canonical (B, K, 3), rotation (B, 3, 3) column-vector, translation (B, 3), expression (B, K, 3),
    scale (B,) or (B, 1) or None -> (B, K, 3).
    Without scale: ``R x_c + t + delta`` (face-vid2vid). With scale: ``s (R x_c + delta) + t``
    (LivePortrait, which also ignores t_z: ``translate_z=False``).
    """
    rotated = torch.einsum("bmp,bkp->bkm", rotation, canonical)
    t = translation if translate_z else torch.cat(
        [translation[:, :2], torch.zeros_like(translation[:, 2:])], dim=1
    )
    if scale is None:
        return rotated + t.unsqueeze(1) + expression
    s = scale.reshape(-1, 1, 1)
    return s * (rotated + expression) + t.unsqueeze(1)


def _axis(n: int, device: torch.device | None, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(n, device=device, dtype=dtype)
    return 2 * (x / (n - 1)) - 1 if n > 1 else torch.zeros_like(x)


def coordinate_grid_3d(
    depth: int, height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Identity grid (D, H, W, 3) with last axis (x, y, z) in [-1, 1], ``c_j = 2 j / (n - 1) - 1``."""
    z = _axis(depth, device, dtype).view(-1, 1, 1).expand(depth, height, width)
    y = _axis(height, device, dtype).view(1, -1, 1).expand(depth, height, width)
    x = _axis(width, device, dtype).view(1, 1, -1).expand(depth, height, width)
    return torch.stack([x, y, z], dim=-1)


def coordinate_grid_2d(
    height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Identity grid (H, W, 2) with last axis (x, y) in [-1, 1]."""
    y = _axis(height, device, dtype).view(-1, 1).expand(height, width)
    x = _axis(width, device, dtype).view(1, -1).expand(height, width)
    return torch.stack([x, y], dim=-1)


def keypoint_gaussians(keypoints: torch.Tensor, spatial_size: tuple[int, int, int], variance: float = 0.01) -> torch.Tensor:
    """Gaussian heatmaps ``exp(-0.5 |grid - x_k|^2 / variance)``: (B, K, 3) -> (B, K, D, H, W)."""
    grid = coordinate_grid_3d(*spatial_size, device=keypoints.device, dtype=keypoints.dtype)
    diff = grid.view(1, 1, *spatial_size, 3) - keypoints.view(*keypoints.shape[:2], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


def heatmap_to_keypoints(heatmap: torch.Tensor) -> torch.Tensor:
    """Expected grid position of each normalised heatmap: (B, K, D, H, W) -> (B, K, 3)."""
    grid = coordinate_grid_3d(*heatmap.shape[2:], device=heatmap.device, dtype=heatmap.dtype)
    return (heatmap.unsqueeze(-1) * grid.view(1, 1, *grid.shape)).sum(dim=(2, 3, 4))


def warp_volume(volume: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Sample a feature volume at a deformation field (trilinear, zero padding, align_corners=False).

    volume (B, C, D, H, W), deformation (B, D', H', W', 3) with last axis (x, y, z) -> (B, C, D', H', W').
    A field of another size than the volume is first resized trilinearly, as face-vid2vid does.
    """
    if deformation.shape[1:4] != volume.shape[2:]:
        deformation = F.interpolate(
            deformation.permute(0, 4, 1, 2, 3), size=volume.shape[2:], mode="trilinear"
        ).permute(0, 2, 3, 4, 1)
    return grid_sample_3d(volume, deformation)


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear ``grid_sample`` (zero padding, align_corners=False) on any device.

    volume (B, C, D, H, W), grid (B, D', H', W', 3) -> (B, C, D', H', W'). Devices without a 3D grid-sampler
    kernel (Apple MPS) compute this one operation on the CPU and get the result back on their device.
    """
    try:
        return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    except (NotImplementedError, RuntimeError) as exc:
        if volume.device.type == "cpu" or "grid_sample" not in str(exc) and "grid_sampler" not in str(exc):
            raise
        if volume.device.type not in _CPU_SAMPLER_DEVICES:
            _CPU_SAMPLER_DEVICES.add(volume.device.type)
            log.warning("AnyTalk: %s has no 3D grid-sample kernel; that step runs on the CPU (slower)",
                        volume.device.type)
        out = F.grid_sample(volume.cpu().float(), grid.cpu().float(), mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        return out.to(device=volume.device, dtype=volume.dtype)


def convex_hull_volume(points: torch.Tensor) -> float:
    """Volume of the 3D convex hull of one keypoint set (K, 3), computed by scipy in float64."""
    from scipy.spatial import ConvexHull

    return float(ConvexHull(points.detach().to("cpu", torch.float64).numpy()).volume)
