"""Parameters of the synthetic head renderer: domains, pose, expression, identity and landmark names.

Conventions (shared by the whole ``synthetic`` package):

* Camera axes: x to the image right, y to the image bottom, z into the screen (away from the viewer).
  The camera is orthographic and looks along +z; a smaller z is nearer.
* Head-local axes coincide with the camera axes at zero pose: the face looks towards -z (at the viewer).
  Head-local units: the cranium is about 0.76 wide (half-width), 0.95 high (half-height); the subject's
  *left* side is at +x (it appears on the image right in a frontal view). "left"/"right" in names and
  expression fields always mean the subject's own left/right.
* Rotation ``R = R_x(pitch) @ R_y(yaw) @ R_z(roll)`` (column vectors, degrees; the face-vid2vid order of
  :func:`anytalk_core.geometry.euler_to_rotation_matrix`), applied to head-local points about the head
  origin (centre of the cranium). Signs: **yaw > 0** turns the face towards the image left (the nose moves
  to -x; the subject turns to their right); **pitch > 0** tilts the face down (the nose moves to +y);
  **roll > 0** rotates the head clockwise in the image (the top of the head moves to +x).
* Projection: normalised image coordinates ``n = s_norm * scale * (R X)_xy + (tx0 + tx, ty0 + ty)``
  span [-1, 1] over the image; pixel coordinates use pixel centres at integers,
  ``p = (n + 1) * size / 2 - 0.5`` (the ``align_corners=False`` convention), so landmarks of a render at
  size S map to size S' by ``(p + 0.5) * S' / S - 0.5``. ``s_norm``, ``tx0``, ``ty0`` are identity
  framing (about 0.6, 0, -0.08); ``tx``, ``ty``, ``scale`` are the pose's motion on top of it.
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import torch

__all__ = [
    "DOMAINS",
    "POSE_FIELDS",
    "EXPRESSION_FIELDS",
    "EXPRESSION_RANGES",
    "LANDMARK_NAMES",
    "NUM_LANDMARKS",
    "LANDMARK_INDEX",
    "HeadPose",
    "Expression",
    "Identity",
    "sample_identity",
    "make_rng",
    "pose_tensor",
    "expression_tensor",
]

DOMAINS: tuple[str, ...] = ("human", "cg_human", "animal")

POSE_FIELDS: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "scale")
"""Pose tensor layout ``[..., 6]``: yaw, pitch, roll (degrees), tx, ty (normalised image units, the image
spans [-1, 1]) and scale (multiplier, 1 = identity framing)."""

EXPRESSION_FIELDS: tuple[str, ...] = (
    "jaw_open", "smile", "blink_left", "blink_right", "brow_raise", "gaze_x", "gaze_y",
)
"""Expression tensor layout ``[..., 7]``. Ranges in :data:`EXPRESSION_RANGES`; values are clamped."""

EXPRESSION_RANGES: dict[str, tuple[float, float]] = {
    "jaw_open": (0.0, 1.0),      # 0 closed mouth, 1 fully open (jaw drops ~0.16 head units)
    "smile": (-1.0, 1.0),        # >0 mouth corners up and wider, <0 frown (corners down)
    "blink_left": (0.0, 1.0),    # subject's left eye (+x): 0 open, 1 closed
    "blink_right": (0.0, 1.0),   # subject's right eye (-x)
    "brow_raise": (-1.0, 1.0),   # >0 brows up, <0 brows down/frown (inner ends lower)
    "gaze_x": (-1.0, 1.0),       # >0 irises move to +x (image right)
    "gaze_y": (-1.0, 1.0),       # >0 irises move to +y (down)
}

LANDMARK_NAMES: tuple[str, ...] = (
    # face outline on the cheek/jaw surface, subject's right (-x) -> chin -> subject's left (+x)
    "contour_r1", "contour_r2", "contour_r3", "contour_r4", "chin",
    "contour_l4", "contour_l3", "contour_l2", "contour_l1",
    # brows (human/CG: hair brows; animal: fur brow marks)
    "brow_r_outer", "brow_r_mid", "brow_r_inner", "brow_l_inner", "brow_l_mid", "brow_l_outer",
    # eyes: lid-opening corners, upper/lower lid at the middle, pupil centre (on the eyeball)
    "eye_r_outer", "eye_r_top", "eye_r_inner", "eye_r_bottom", "pupil_r",
    "eye_l_inner", "eye_l_top", "eye_l_outer", "eye_l_bottom", "pupil_l",
    # nose
    "nose_bridge", "nose_tip", "nostril_r", "nostril_l", "nose_base",
    # mouth: corners, outer lip edges at the middle, inner lip edges at the middle
    "mouth_r", "lip_upper", "mouth_l", "lip_lower", "lip_upper_inner", "lip_lower_inner",
    # ears: human tip = top of the ear, base = lobe; animal tip = apex, base = middle of the ear's base
    "ear_r_tip", "ear_r_base", "ear_l_tip", "ear_l_base",
    # forehead centre (skin/fur above the brows)
    "forehead",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)
LANDMARK_INDEX: dict[str, int] = {n: i for i, n in enumerate(LANDMARK_NAMES)}


def _clamp_expr(name: str, v: float) -> float:
    lo, hi = EXPRESSION_RANGES[name]
    return float(min(max(v, lo), hi))


@dataclass
class HeadPose:
    """Head pose: angles in degrees, translation in normalised image units, scale multiplier."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    scale: float = 1.0

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f) for f in POSE_FIELDS], dtype=torch.float32)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "HeadPose":
        v = [float(x) for x in t.reshape(-1).tolist()]
        return cls(**dict(zip(POSE_FIELDS, v)))


@dataclass
class Expression:
    """Facial expression; see :data:`EXPRESSION_RANGES` for ranges and meanings."""

    jaw_open: float = 0.0
    smile: float = 0.0
    blink_left: float = 0.0
    blink_right: float = 0.0
    brow_raise: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([_clamp_expr(f, getattr(self, f)) for f in EXPRESSION_FIELDS], dtype=torch.float32)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "Expression":
        v = [float(x) for x in t.reshape(-1).tolist()]
        return cls(**dict(zip(EXPRESSION_FIELDS, v)))


def _param_tensor(values: Any, cls: type, fields: Sequence[str]) -> torch.Tensor:
    """``cls`` | list | tensor [F] / [B,F] | numpy | None -> float32 tensor [B,F] (F = len(fields))."""
    if values is None:
        return cls().to_tensor()[None]
    if isinstance(values, cls):
        return values.to_tensor()[None]
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32).reshape(-1, len(fields))
    if isinstance(values, np.ndarray):
        return torch.as_tensor(values, dtype=torch.float32).reshape(-1, len(fields))
    return torch.stack([v.to_tensor() if isinstance(v, cls) else torch.as_tensor(v, dtype=torch.float32)
                        for v in values])


def _broadcast(t: torch.Tensor, n: int | None) -> torch.Tensor:
    """[1,F] -> [n,F] when n asks for more rows; contiguous."""
    if n is not None and t.shape[0] == 1 and n != 1:
        t = t.expand(n, -1)
    return t.contiguous()


def pose_tensor(poses: Any, n: int | None = None) -> torch.Tensor:
    """HeadPose | list[HeadPose] | tensor [6] / [B,6] | None -> float32 tensor [B,6] (broadcast to n)."""
    return _broadcast(_param_tensor(poses, HeadPose, POSE_FIELDS), n)


def expression_tensor(exprs: Any, n: int | None = None) -> torch.Tensor:
    """Expression | list | tensor [7] / [B,7] | None -> clamped float32 tensor [B,7] (broadcast to n)."""
    t = _param_tensor(exprs, Expression, EXPRESSION_FIELDS)
    lo = torch.tensor([EXPRESSION_RANGES[f][0] for f in EXPRESSION_FIELDS])
    hi = torch.tensor([EXPRESSION_RANGES[f][1] for f in EXPRESSION_FIELDS])
    return _broadcast(torch.maximum(torch.minimum(t, hi), lo), n)


RngLike = Union[None, int, np.random.Generator, torch.Generator]


def make_rng(rng: RngLike) -> np.random.Generator:
    """A numpy Generator from an int seed, a numpy Generator (used as is), a torch.Generator (one draw
    from it seeds a new numpy Generator) or None (fresh OS entropy, not reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed, numpy.random.Generator or torch.Generator, got {type(rng)!r}")


@dataclass
class Identity:
    """A random head identity: domain, the seed it was drawn from, and its parameters.

    ``params`` maps names to floats or float tuples (colours are RGB tuples in 0..1); the key set is fixed
    per domain family (``human``/``cg_human`` share one set, ``animal`` has its own), which lets
    :func:`render_batch` stack identities of one domain into tensors. ``symmetric`` identities are exactly
    left-right mirror-symmetric (frontal light, symmetric texture, background and hair), so a frontal render
    with a symmetric expression is symmetric up to float rounding.
    """

    domain: str
    seed: int
    params: dict[str, Any] = field(repr=False)
    symmetric: bool = False

    def replace(self, **updates: Any) -> "Identity":
        """A copy with some parameters changed (unknown names are an error)."""
        unknown = set(updates) - set(self.params)
        if unknown:
            raise KeyError(f"unknown identity parameters {sorted(unknown)} for domain {self.domain!r}")
        p = dict(self.params)
        p.update(updates)
        return dataclasses.replace(self, params=p)


# ----------------------------------------------------------------------------------------------- sampling

def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (float(r), float(g), float(b))


def _jitter(rng: np.random.Generator, c: tuple[float, ...], amount: float) -> tuple[float, float, float]:
    a = np.clip(np.asarray(c, dtype=np.float64) + rng.normal(0.0, amount, 3), 0.0, 1.0)
    return (float(a[0]), float(a[1]), float(a[2]))


def _mix(a, b, t) -> tuple[float, float, float]:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def _saturate(c, amount: float) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*c)
    return _hsv(h, s * amount, v)


def _common(rng: np.random.Generator, symmetric: bool, domain: str) -> dict[str, Any]:
    p: dict[str, Any] = {}
    p["s_norm"] = float(rng.uniform(0.56, 0.64))
    p["tx0"] = 0.0 if symmetric else float(rng.uniform(-0.03, 0.03))
    p["ty0"] = float(rng.uniform(-0.12, -0.05))
    # light: direction *towards* the light in camera coordinates (z < 0 is towards the viewer)
    if symmetric:
        lx = 0.0
    else:
        lx = float(rng.uniform(-0.6, 0.6))
    ly, lz = float(rng.uniform(-0.7, -0.2)), -1.0
    n = math.sqrt(lx * lx + ly * ly + lz * lz)
    p["light"] = (lx / n, ly / n, lz / n)
    # background: two colours, gradient angle, low-frequency blotches
    h = rng.uniform()
    c0 = _hsv(h, rng.uniform(0.1, 0.6), rng.uniform(0.25, 0.9))
    c1 = _hsv(h + rng.uniform(-0.25, 0.25), rng.uniform(0.1, 0.7), rng.uniform(0.15, 0.85))
    p["bg0"], p["bg1"] = c0, c1
    p["bg_angle"] = math.pi / 2 if symmetric else float(rng.uniform(0, 2 * math.pi))
    p["bg_amp"] = float(rng.uniform(0.0, 0.12))
    p["bg_k"] = tuple(float(v) for v in rng.uniform(-4.0, 4.0, 6))
    p["bg_phase"] = tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 3))
    # surface texture: 4 random 3-D sinusoids in head-local coordinates
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.uniform(3.0, 14.0, 4)
    p["tex_k"] = tuple(float(v) for v in (dirs * freqs[:, None]).reshape(-1))
    p["tex_phase"] = tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 4))
    return p


_SKIN_DARK = (0.26, 0.16, 0.11)
_SKIN_MID = (0.66, 0.46, 0.34)
_SKIN_LIGHT = (0.95, 0.80, 0.70)
_HAIR = [
    (0.05, 0.045, 0.04), (0.16, 0.10, 0.06), (0.33, 0.21, 0.11), (0.55, 0.38, 0.20),
    (0.85, 0.70, 0.45), (0.55, 0.20, 0.07), (0.62, 0.62, 0.62),
]
_IRIS = [(0.32, 0.18, 0.08), (0.22, 0.42, 0.68), (0.28, 0.48, 0.25), (0.50, 0.38, 0.18), (0.45, 0.50, 0.55)]


def _sample_skin(rng: np.random.Generator) -> tuple[float, float, float]:
    t = rng.uniform()
    c = _mix(_SKIN_DARK, _SKIN_MID, t / 0.5) if t < 0.5 else _mix(_SKIN_MID, _SKIN_LIGHT, (t - 0.5) / 0.5)
    return _jitter(rng, c, 0.025)


def _sample_human(rng: np.random.Generator, symmetric: bool, cg: bool) -> dict[str, Any]:
    p = _common(rng, symmetric, "cg_human" if cg else "human")
    U = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    # head shape
    if cg:
        p["head_a"], p["head_b"], p["head_c"] = U(0.78, 0.86), U(0.92, 1.0), U(0.84, 0.92)
        p["jaw_w"], p["jaw_h"], p["jaw_y"] = U(0.46, 0.56), U(0.42, 0.50), U(0.44, 0.52)
        p["eye_x"], p["eye_y"], p["eye_r"] = U(0.30, 0.36), U(0.02, 0.10), U(0.16, 0.19)
        p["eye_inset"] = U(0.42, 0.5)
        p["eye_w"], p["eye_hu"], p["eye_hl"] = U(0.72, 0.78), U(0.55, 0.68), U(0.38, 0.5)
        p["eye_tilt"] = U(-0.05, 0.12)
        p["iris_r"], p["pupil_r"] = U(0.52, 0.62), U(0.22, 0.3)
        p["lash"] = U(0.10, 0.16)
        p["highlight"] = 1.0
        p["nose_len"], p["nose_w"], p["nose_d"], p["nose_y"] = U(0.13, 0.18), U(0.07, 0.09), U(0.09, 0.12), U(0.3, 0.36)
        p["mouth_y"], p["mouth_w"] = U(0.58, 0.64), U(0.14, 0.19)
        p["lip_u"], p["lip_l"] = U(0.015, 0.028), U(0.025, 0.04)
        p["brow_gap"], p["brow_len"], p["brow_th"], p["brow_arch"] = U(0.24, 0.3), U(0.13, 0.17), U(0.035, 0.05), U(0.03, 0.06)
        p["ear_h"], p["ear_y"] = U(0.17, 0.22), U(0.12, 0.2)
    else:
        p["head_a"], p["head_b"], p["head_c"] = U(0.72, 0.8), U(0.9, 0.98), U(0.84, 0.9)
        p["jaw_w"], p["jaw_h"], p["jaw_y"] = U(0.54, 0.64), U(0.48, 0.56), U(0.46, 0.54)
        p["eye_x"], p["eye_y"], p["eye_r"] = U(0.28, 0.32), U(-0.04, 0.04), U(0.135, 0.15)
        p["eye_inset"] = U(0.56, 0.62)
        p["eye_w"], p["eye_hu"], p["eye_hl"] = U(0.68, 0.74), U(0.4, 0.5), U(0.25, 0.32)
        p["eye_tilt"] = U(-0.06, 0.08)
        p["iris_r"], p["pupil_r"] = U(0.44, 0.52), U(0.16, 0.22)
        p["lash"] = U(0.1, 0.14)
        p["highlight"] = U(0.5, 0.8)
        p["nose_len"], p["nose_w"], p["nose_d"], p["nose_y"] = U(0.22, 0.28), U(0.09, 0.12), U(0.13, 0.17), U(0.2, 0.26)
        p["mouth_y"], p["mouth_w"] = U(0.6, 0.66), U(0.2, 0.25)
        p["lip_u"], p["lip_l"] = U(0.028, 0.042), U(0.038, 0.058)
        p["brow_gap"], p["brow_len"], p["brow_th"], p["brow_arch"] = U(0.18, 0.24), U(0.15, 0.19), U(0.035, 0.055), U(0.015, 0.045)
        p["ear_h"], p["ear_y"] = U(0.2, 0.25), U(0.12, 0.2)
    # colours
    skin = _sample_skin(rng)
    if cg:
        skin = _saturate(_mix(skin, (1.0, 0.85, 0.75), 0.25), 1.25)
    p["skin"] = skin
    hair = _HAIR[int(rng.integers(len(_HAIR)))]
    if cg:
        hair = _saturate(hair, 1.4)
    p["hair"] = _jitter(rng, hair, 0.02)
    p["brow_col"] = _mix(tuple(float(v) * 0.6 for v in p["hair"]), (0.1, 0.07, 0.05), 0.45)
    iris = _IRIS[int(rng.integers(len(_IRIS)))]
    p["iris"] = _saturate(_jitter(rng, iris, 0.03), 1.5 if cg else 1.0)
    lip = _mix(skin, (0.62, 0.2, 0.22) if not cg else (0.9, 0.3, 0.35), U(0.35, 0.6))
    p["lip"] = lip
    p["cloth"] = _hsv(rng.uniform(), U(0.2, 0.8) if not cg else U(0.5, 0.9), U(0.2, 0.9))
    # hair style
    p["hair_amount"] = 0.0 if rng.uniform() < (0.1 if not cg else 0.03) else 1.0
    p["hair_cap"] = 1.0 if p["hair_amount"] > 0 and rng.uniform() < 0.85 else 0.0
    p["hair_long"] = 1.0 if p["hair_cap"] > 0 and rng.uniform() < 0.4 else 0.0
    p["hairline"] = U(-0.62, -0.42)
    p["fringe"] = U(0.0, 0.25) if rng.uniform() < 0.35 else 0.0
    p["hair_side"] = U(0.0, 0.25)
    p["hair_part"] = 0.0 if symmetric else U(-0.15, 0.15)
    p["hair_lift"] = U(0.03, 0.12)
    p["beard"] = U(0.12, 0.3) if (not cg and rng.uniform() < 0.2) else 0.0
    p["blush"] = U(0.0, 0.15) if not cg else U(0.1, 0.35)
    p["glasses"] = 1.0 if rng.uniform() < 0.15 else 0.0
    p["glasses_col"] = _hsv(rng.uniform(), U(0.0, 0.6), U(0.05, 0.5))
    # rendering style
    p["tex_amp"] = U(0.025, 0.05) if not cg else U(0.0, 0.01)
    p["ambient"] = U(0.3, 0.42) if not cg else U(0.42, 0.55)
    p["diffuse"] = U(0.6, 0.75) if not cg else U(0.5, 0.62)
    p["wrap"] = U(0.05, 0.2) if not cg else U(0.5, 0.8)
    p["rim"] = 0.0 if not cg else U(0.1, 0.25)
    p["spec"] = U(0.2, 0.35) if not cg else U(0.35, 0.5)
    return p


_FUR = [
    (0.90, 0.52, 0.16), (0.52, 0.33, 0.18), (0.56, 0.56, 0.60), (0.93, 0.90, 0.85), (0.16, 0.15, 0.15),
    (0.85, 0.66, 0.32), (0.70, 0.45, 0.30), (0.35, 0.30, 0.28),
]
_ANIMAL_IRIS = [(0.85, 0.6, 0.1), (0.35, 0.65, 0.2), (0.4, 0.25, 0.1), (0.25, 0.55, 0.85), (0.08, 0.06, 0.05)]


def _sample_animal(rng: np.random.Generator, symmetric: bool) -> dict[str, Any]:
    p = _common(rng, symmetric, "animal")
    U = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    p["ty0"] = U(-0.06, 0.02)
    p["head_a"], p["head_b"], p["head_c"] = U(0.8, 0.92), U(0.72, 0.82), U(0.76, 0.84)
    p["snout_w"], p["snout_h"], p["snout_len"], p["snout_y"] = U(0.3, 0.4), U(0.2, 0.26), U(0.26, 0.42), U(0.26, 0.34)
    p["chin_w"], p["chin_h"] = U(0.18, 0.26), U(0.1, 0.14)
    p["nose_w"], p["nose_h"] = U(0.09, 0.14), U(0.06, 0.09)
    p["eye_x"], p["eye_y"], p["eye_r"] = U(0.3, 0.38), U(-0.16, -0.06), U(0.17, 0.23)
    p["eye_inset"] = U(0.35, 0.5)
    p["eye_w"], p["eye_hu"], p["eye_hl"] = U(0.76, 0.84), U(0.65, 0.78), U(0.6, 0.72)
    p["eye_tilt"] = U(-0.05, 0.15)
    p["iris_r"] = U(0.55, 0.72)
    p["pupil_r"] = U(0.28, 0.42)
    p["pupil_aspect"] = 0.28 if rng.uniform() < 0.35 else 1.0
    p["lash"] = U(0.08, 0.14)
    p["highlight"] = 1.0
    p["ear_pointed"] = 1.0 if rng.uniform() < 0.6 else 0.0
    p["ear_x"], p["ear_y"] = U(0.4, 0.58), U(-0.62, -0.5)
    if p["ear_pointed"] > 0:
        p["ear_w"], p["ear_h"] = U(0.2, 0.3), U(0.32, 0.48)
    else:
        p["ear_w"], p["ear_h"] = U(0.2, 0.3), U(0.2, 0.28)
    p["ear_splay"] = U(10.0, 30.0)
    p["ear_back"] = U(5.0, 25.0)
    p["mouth_w"] = U(0.11, 0.16)
    p["brow_gap"], p["brow_len"], p["brow_th"] = U(0.12, 0.18), U(0.08, 0.12), U(0.035, 0.05)
    fur = _FUR[int(rng.integers(len(_FUR)))]
    fur = _jitter(rng, _saturate(fur, U(1.0, 1.3)), 0.03)
    p["fur"] = fur
    light_muzzle = rng.uniform() < 0.7
    p["muzzle"] = _jitter(rng, _mix(fur, (0.97, 0.94, 0.88), U(0.55, 0.9)), 0.02) if light_muzzle else \
        _jitter(rng, tuple(v * 0.9 for v in fur), 0.02)
    p["nose_col"] = (0.07, 0.05, 0.05) if rng.uniform() < 0.65 else _jitter(rng, (0.85, 0.45, 0.5), 0.04)
    p["inner_ear"] = _jitter(rng, (0.92, 0.6, 0.62), 0.04) if rng.uniform() < 0.6 else p["muzzle"]
    p["iris"] = _jitter(rng, _ANIMAL_IRIS[int(rng.integers(len(_ANIMAL_IRIS)))], 0.03)
    p["brow_col"] = _mix(fur, (0.05, 0.04, 0.03), 0.5) if rng.uniform() < 0.5 else p["muzzle"]
    p["stripes"] = U(0.2, 0.45) if rng.uniform() < 0.35 else 0.0
    p["stripe_freq"] = U(14.0, 22.0)
    p["stripe_col"] = _mix(fur, (0.05, 0.04, 0.03), U(0.4, 0.7))
    p["eye_patch"] = 1.0 if rng.uniform() < 0.2 else 0.0
    p["patch_col"] = _mix(fur, (0.08, 0.06, 0.05), 0.75) if rng.uniform() < 0.7 else (0.95, 0.93, 0.9)
    p["whiskers"] = 1.0 if rng.uniform() < 0.6 else 0.0
    p["whisker_col"] = (0.1, 0.08, 0.08) if rng.uniform() < 0.5 else (0.98, 0.98, 0.98)
    p["blush"] = U(0.0, 0.4) if rng.uniform() < 0.5 else 0.0
    p["cheeks"] = U(0.0, 1.0) if rng.uniform() < 0.5 else 0.0
    p["tex_amp"] = U(0.03, 0.07)
    p["ambient"], p["diffuse"] = U(0.4, 0.52), U(0.5, 0.62)
    p["wrap"], p["rim"], p["spec"] = U(0.4, 0.8), U(0.05, 0.2), U(0.4, 0.6)
    return p


def sample_identity(domain: str, rng: RngLike = None, symmetric: bool = False) -> Identity:
    """Draw a random identity of ``domain`` ("human", "cg_human" or "animal").

    ``rng``: int seed, numpy Generator, torch.Generator or None. The same seed (or a Generator in the same
    state) gives the same identity; the identity records the seed it was finally drawn from.
    ``symmetric=True`` gives a mirror-symmetric identity (for symmetry tests and canonical views).
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        seed = int(rng)
    else:
        seed = int(make_rng(rng).integers(0, 2**31 - 1))
    g = np.random.default_rng([seed, DOMAINS.index(domain)])
    if domain == "animal":
        params = _sample_animal(g, symmetric)
    else:
        params = _sample_human(g, symmetric, cg=(domain == "cg_human"))
    return Identity(domain=domain, seed=seed, params=params, symmetric=symmetric)
