"""The trainer's one door to the synthetic head renderer (``anytalk_core.synthetic``, SPEC §7).

Everything the trainer needs from the renderer goes through here: identities, batched rendering, the
pose/expression layouts, and random smooth motion for clips (pose and expression trajectories with
blinks), all reproducible from integer seeds. Images come back as (B, 3, H, W) float32 in 0..1 with
ground truth: pose (B, 6) = yaw, pitch, roll (degrees), tx, ty, scale and expression (B, 7).
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from anytalk_core import synthetic as _syn

DOMAINS: tuple[str, ...] = tuple(_syn.DOMAINS)
POSE_FIELDS: tuple[str, ...] = tuple(_syn.POSE_FIELDS)
EXPRESSION_FIELDS: tuple[str, ...] = tuple(_syn.EXPRESSION_FIELDS)
EXPRESSION_RANGES: dict[str, tuple[float, float]] = dict(_syn.EXPRESSION_RANGES)
NUM_EXPRESSION = len(EXPRESSION_FIELDS)

# Ranges of the random motion (degrees / normalised image units), moderate like talking-head video.
POSE_RANGE = {"yaw": 30.0, "pitch": 15.0, "roll": 12.0, "tx": 0.06, "ty": 0.05, "scale": 0.06}


def check_domains(domains: list[str] | tuple[str, ...], where: str) -> None:
    bad = [d for d in domains if d not in DOMAINS]
    if bad or not domains:
        raise ValueError(f"{where}: synthetic domains must be a non-empty subset of {list(DOMAINS)}, got {list(domains)}")


def identity(domain: str, seed: int):
    return _syn.sample_identity(domain, np.random.default_rng(seed))


def render(identities: list, poses: torch.Tensor, expressions: torch.Tensor, size: int) -> torch.Tensor:
    """Render a batch -> (B, 3, size, size) float32 in 0..1."""
    out = _syn.render_batch(list(identities), poses.float(), expressions.float(), size)
    return out.images.permute(0, 3, 1, 2).contiguous().clamp_(0, 1)


def random_still(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random poses (n, 6) and expressions (n, 7) covering the expression ranges."""
    pose = np.zeros((n, len(POSE_FIELDS)), dtype=np.float32)
    for j, f in enumerate(POSE_FIELDS):
        r = POSE_RANGE[f]
        pose[:, j] = (1.0 if f == "scale" else 0.0) + rng.uniform(-r, r, n)
    expr = np.zeros((n, NUM_EXPRESSION), dtype=np.float32)
    for j, f in enumerate(EXPRESSION_FIELDS):
        lo, hi = EXPRESSION_RANGES[f]
        if f.startswith("blink"):  # mostly open eyes, sometimes closed, sometimes in between
            u = rng.uniform(0, 1, n)
            expr[:, j] = np.where(u < 0.55, rng.uniform(0, 0.2, n), np.where(u < 0.8, rng.uniform(0.8, 1.0, n),
                                                                               rng.uniform(0, 1, n)))
        elif f.startswith("gaze"):
            expr[:, j] = rng.uniform(0.6 * lo, 0.6 * hi, n)
        else:
            expr[:, j] = rng.uniform(lo, hi, n)
    return torch.from_numpy(pose), torch.from_numpy(expr)


def _smooth(rng: np.random.Generator, n: int, amplitude: float, base: float = 0.0) -> np.ndarray:
    """Sum of two random low-frequency sinusoids: a smooth trajectory over n frames."""
    t = np.arange(n, dtype=np.float64)
    out = np.full(n, base, dtype=np.float64)
    for _ in range(2):
        period = rng.uniform(12, 60)
        out += amplitude * 0.5 * rng.uniform(0.3, 1.0) * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
    return out


def random_clip(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth pose (n, 6) and expression (n, 7) trajectories of a talking head, with blinks."""
    pose = np.zeros((n, len(POSE_FIELDS)))
    for j, f in enumerate(POSE_FIELDS):
        r = POSE_RANGE[f]
        base = (1.0 if f == "scale" else 0.0) + rng.uniform(-0.5 * r, 0.5 * r)
        pose[:, j] = _smooth(rng, n, r, base)
    expr = np.zeros((n, NUM_EXPRESSION))
    blink = np.zeros(n)
    t = 0
    while t < n:  # blinks of 2-4 frames every ~10-40 frames
        t += int(rng.integers(6, 40))
        length = int(rng.integers(2, 5))
        shape = np.sin(np.linspace(0, math.pi, length + 2)[1:-1])
        blink[t:t + length] = shape[: max(0, min(length, n - t))]
        t += length
    for j, f in enumerate(EXPRESSION_FIELDS):
        lo, hi = EXPRESSION_RANGES[f]
        if f.startswith("blink"):
            expr[:, j] = blink
        elif f == "jaw_open":
            expr[:, j] = np.abs(_smooth(rng, n, 1.2, 0.0))  # speech-like opening and closing
        else:
            expr[:, j] = _smooth(rng, n, 0.6 * (hi - lo), rng.uniform(lo, hi) * 0.5)
        expr[:, j] = np.clip(expr[:, j], lo, hi)
    return torch.from_numpy(pose.astype(np.float32)), torch.from_numpy(expr.astype(np.float32))


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """Ground truth of a horizontally flipped frame: yaw, roll and tx change sign (..., 6) or (..., 3)."""
    out = pose.clone()
    for name in ("yaw", "roll", "tx"):
        j = POSE_FIELDS.index(name)
        if j < out.shape[-1]:
            out[..., j] = -out[..., j]
    return out


def mirror_expression(expr: torch.Tensor) -> torch.Tensor:
    """Ground truth of a horizontally flipped frame: left/right blinks swap, horizontal gaze changes sign."""
    out = expr.clone()
    fields = EXPRESSION_FIELDS
    if "blink_left" in fields and "blink_right" in fields:
        a, b = fields.index("blink_left"), fields.index("blink_right")
        out[..., a], out[..., b] = expr[..., b], expr[..., a]
    if "gaze_x" in fields:
        out[..., fields.index("gaze_x")] = -expr[..., fields.index("gaze_x")]
    return out


# Renderer landmarks that supervise the first keypoints when keypoint_supervision.weight > 0, in this
# order (symmetric pairs, lips for the mouth, ears for animals). A semantic anchor for short synthetic
# runs: the same landmark is keypoint k in every domain, so motion transfers across domains from the start.
SUPERVISED_LANDMARKS: tuple[str, ...] = (
    "nose_tip", "chin", "mouth_r", "mouth_l", "lip_upper", "lip_lower", "eye_r_outer", "eye_l_outer",
    "brow_r_mid", "brow_l_mid", "contour_r2", "contour_l2", "ear_r_tip", "ear_l_tip", "forehead")
# The supervised landmarks that outline the mouth (rows of SUPERVISED_LANDMARKS): the lip-region loss's box.
LIP_LANDMARKS: tuple[int, ...] = tuple(SUPERVISED_LANDMARKS.index(n) for n in ("mouth_r", "mouth_l", "lip_upper", "lip_lower"))
_LANDMARK_ROWS = [list(_syn.LANDMARK_NAMES).index(n) for n in SUPERVISED_LANDMARKS]


def _mirror_name(name: str) -> str:
    return re.sub(r"(?<=_)([rl])(?=\d|_|$)", lambda m: "l" if m.group(1) == "r" else "r", name)


MIRRORED_LANDMARKS: list[int] = [SUPERVISED_LANDMARKS.index(_mirror_name(n)) for n in SUPERVISED_LANDMARKS]


def supervised_landmarks(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The supervised rows of renderer landmarks (n, 41, 2) in pixels -> (n, L, 2) in the model's normalised
    image coordinates (x, y in [-1, 1], align_corners=False: pixel centre p -> (2p + 1) / size - 1)."""
    return (2 * pixels[:, _LANDMARK_ROWS] + 1) / size - 1


def landmark_targets(identity, poses: torch.Tensor, expressions: torch.Tensor, size: int) -> torch.Tensor:
    """Supervised landmarks of ``identity`` at poses (n, 6) / expressions (n, 7) -> (n, L, 2), normalised."""
    return supervised_landmarks(_syn.landmarks_2d([identity] * poses.shape[0], poses.float(), expressions.float(), size),
                                size)


def mirror_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """Targets of a horizontally flipped frame: x changes sign and left/right landmarks swap: (..., L, 2)."""
    out = landmarks[..., MIRRORED_LANDMARKS, :].clone()
    out[..., 0] = -out[..., 0]
    return out
