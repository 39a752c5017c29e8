"""Procedural ray-cast renderer of synthetic heads (human, CG human, cartoon animal).

Scene: a handful of analytic primitives per domain — ellipsoids (cranium, jaw, nose, eyeballs, ears, hair,
snout, chin, neck, torso, ...) and flat plates (pointed or round animal ears) — placed in head-local
coordinates (see :mod:`.params` for the conventions). Every pixel casts an orthographic ray along +z; each
primitive gives its front intersection, an anti-aliased coverage from the exact screen-space distance to
its silhouette, a Lambert-like shade from its surface normal and the surface point in head-local
coordinates. A two-deep per-pixel fragment buffer keeps the two nearest fragments (correct occlusion where
primitives interpenetrate, anti-aliased silhouettes over whatever lies behind). Facial features — eyes
(sclera, iris, pupil, lids, lashes), brows, lips, mouth interior, teeth, nostrils, hairline, whiskers,
fur patterns — are decals evaluated in head-local or eyeball-local coordinates of the front surface, so
they move, foreshorten and hide exactly with the geometry. Landmarks are points on the same surfaces
computed analytically from the same feature geometry, so their projections land on the drawn features;
visibility is a depth test against the rendered front depth.

Everything is batched over identities of one domain (``render_batch`` groups mixed batches by domain),
pure torch, float32, deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..geometry import euler_to_rotation_matrix
from .params import (
    DOMAINS,
    LANDMARK_INDEX,
    NUM_LANDMARKS,
    Expression,
    HeadPose,
    Identity,
    expression_tensor,
    pose_tensor,
)

__all__ = ["RenderResult", "BatchRenderResult", "render", "render_batch", "landmarks_3d", "landmarks_2d"]

_BIG = 1.0e6
_PART_NAMES = ("head", "mouth", "iris", "eye_open")


@dataclass
class RenderResult:
    """One rendered frame.

    image: float32 [H,W,3] in 0..1; landmarks: float32 [L,2] pixel (x, y), pixel centres at integers;
    visible: bool [L] (inside the image and not occluded by geometry — eyelids closing over a pupil do not
    count as occlusion); mask: float32 [H,W] foreground coverage (head, hair, neck, body);
    parts: optional dict of float32 [H,W] soft masks ("head", "mouth" interior, "iris", "eye_open").
    """

    image: torch.Tensor
    landmarks: torch.Tensor
    visible: torch.Tensor
    mask: torch.Tensor
    parts: dict[str, torch.Tensor] | None = None


@dataclass
class BatchRenderResult:
    """A batch of frames: images [B,H,W,3], landmarks [B,L,2], visible [B,L], mask [B,H,W], parts."""

    images: torch.Tensor
    landmarks: torch.Tensor
    visible: torch.Tensor
    mask: torch.Tensor
    parts: dict[str, torch.Tensor] | None = None

    def __getitem__(self, i: int) -> RenderResult:
        parts = None if self.parts is None else {k: v[i] for k, v in self.parts.items()}
        return RenderResult(self.images[i], self.landmarks[i], self.visible[i], self.mask[i], parts)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ------------------------------------------------------------------------------------------------ helpers

def _rot_x(deg: torch.Tensor) -> torch.Tensor:
    r = deg * (math.pi / 180.0)
    c, s, o, z = torch.cos(r), torch.sin(r), torch.ones_like(r), torch.zeros_like(r)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*deg.shape, 3, 3)


def _rot_y(deg: torch.Tensor) -> torch.Tensor:
    r = deg * (math.pi / 180.0)
    c, s, o, z = torch.cos(r), torch.sin(r), torch.ones_like(r), torch.zeros_like(r)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*deg.shape, 3, 3)


def _rot_z(deg: torch.Tensor) -> torch.Tensor:
    r = deg * (math.pi / 180.0)
    c, s, o, z = torch.cos(r), torch.sin(r), torch.ones_like(r), torch.zeros_like(r)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*deg.shape, 3, 3)


def _vec(*comps: Any, like: torch.Tensor) -> torch.Tensor:
    """Stack scalars/[B] tensors into [B,3]."""
    out = []
    for c in comps:
        if isinstance(c, torch.Tensor):
            out.append(c.to(like.dtype).expand_as(like))
        else:
            out.append(torch.full_like(like, float(c)))
    return torch.stack(out, -1)


def _stack_params(idents: Sequence[Identity]) -> dict[str, torch.Tensor]:
    keys = idents[0].params.keys()
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        out[k] = torch.tensor([i.params[k] for i in idents], dtype=torch.float32)
    out["sym"] = torch.tensor([1.0 if i.symmetric else 0.0 for i in idents])
    return out


def _b(t: torch.Tensor) -> torch.Tensor:
    """[B] -> [B,1,1] for broadcasting over images."""
    return t.reshape(-1, 1, 1)


def _band(d: torch.Tensor, h: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Exact 1-D box-filtered coverage of the band |d| <= h (d, h in units; pix = pixels per unit).
    Unlike ``_cov`` of a signed distance it goes to 0 as the band closes (h -> 0)."""
    dp, hp = d * pix, h.clamp(min=0) * pix
    return (torch.minimum(dp + 0.5, hp) - torch.maximum(dp - 0.5, -hp)).clamp(0.0, 1.0)


def _cov(sd: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of a region from its signed distance (negative inside) and pixels per unit."""
    return (0.5 - sd * pix).clamp(0.0, 1.0)


def _lerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a [B,3,H,W], b [B,3,H,W] or broadcastable ([B,3,1,1], [1,3,1,1]); w [B,H,W]."""
    return torch.lerp(a, b, w.unsqueeze(1))


def _union_box(layers: "_Layers", ks: Sequence[int]) -> tuple[int, int, int, int] | None:
    boxes = [layers.bbox[k] for k in ks if k in layers.bbox]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def _col(c: torch.Tensor) -> torch.Tensor:
    """[B,3] -> [B,3,1,1]."""
    return c.reshape(-1, 3, 1, 1)


def _front_z_ellipsoid(x: torch.Tensor, y: torch.Tensor, center: torch.Tensor, axes: torch.Tensor,
                       rot: torch.Tensor) -> torch.Tensor:
    """Front (smallest) z where the line (x, y, z) meets an ellipsoid; +BIG where it misses.

    x, y [B,L]; center, axes [B,3]; rot [B,3,3] (local -> frame).
    """
    qt = rot.transpose(1, 2) / axes[:, :, None]                         # [B,3,3]: frame -> unit sphere
    rel = torch.stack([x - center[:, None, 0], y - center[:, None, 1], -center[:, None, 2].expand_as(x)], -1)
    p0 = torch.einsum("bij,blj->bli", qt, rel)                          # [B,L,3]
    d = qt[:, :, 2]                                                     # [B,3]
    dd = (d * d).sum(-1, keepdim=True)
    pd = (p0 * d[:, None]).sum(-1)
    disc = pd * pd - dd * ((p0 * p0).sum(-1) - 1.0)
    t = (-pd - disc.clamp(min=0).sqrt()) / dd
    return torch.where(disc >= 0, t, torch.full_like(t, _BIG))


# -------------------------------------------------------------------------------------------- scene build

@dataclass
class _Prim:
    kind: str                   # "ell" or "plate"
    frame: str                  # "head" (moves with the head pose) or "body" (translation/scale only)
    center: torch.Tensor        # [B,3] in frame coordinates
    col: torch.Tensor           # [B,3] albedo
    enabled: torch.Tensor       # [B] 0..1
    axes: torch.Tensor | None = None   # [B,3] ellipsoid semi-axes
    rot: torch.Tensor | None = None    # [B,3,3] ellipsoid local -> frame
    e1: torch.Tensor | None = None     # plate half-width axis [B,3]
    e2: torch.Tensor | None = None     # plate half-height axis [B,3] (apex at -e2, base edge at +e2)
    pointed: torch.Tensor | None = None  # [B] plate: 1 triangle, 0 disc
    col2: torch.Tensor | None = None   # [B,3] plate inner colour
    face: bool = False          # receives face decals
    eye: int = 0                # 1 right eyeball, 2 left eyeball
    glossy: float = 0.0
    tex: int = 0                # 0 none, 1 skin/fur, 2 hair, 3 cloth
    contour: bool = False       # defines the face outline for contour landmarks
    name: str = ""


@dataclass
class _Scene:
    family: str                 # "human" (human and cg_human) or "animal"
    prims: list[_Prim]
    geo: dict[str, torch.Tensor]   # derived feature geometry shared by decals and landmarks ([B] or [B,3])

    def index(self, name: str) -> int:
        for i, p in enumerate(self.prims):
            if p.name == name:
                return i
        raise KeyError(name)


def _ell_front_z_at(x, y, center, axes):
    """Front z of an axis-aligned ellipsoid at (x, y) ([B] tensors), clamped at the silhouette."""
    q = 1.0 - ((x - center[:, 0]) / axes[:, 0]) ** 2 - ((y - center[:, 1]) / axes[:, 1]) ** 2
    return center[:, 2] - axes[:, 2] * q.clamp(min=0.0).sqrt()


def _human_scene(P: dict[str, torch.Tensor], E: torch.Tensor) -> _Scene:
    B = E.shape[0]
    one, zero = torch.ones(B), torch.zeros(B)
    eye3 = torch.eye(3).expand(B, 3, 3)
    jaw, smile, brow = E[:, 0], E[:, 1], E[:, 4]
    a, b, c = P["head_a"], P["head_b"], P["head_c"]
    drop = 0.16 * jaw
    skin, hair, cloth = P["skin"], P["hair"], P["cloth"]
    prims: list[_Prim] = []
    cranium_c = _vec(0, 0, 0, like=one)
    cranium_ax = torch.stack([a, b, c], -1)
    prims.append(_Prim("ell", "head", cranium_c, skin, one, cranium_ax, eye3, face=True, tex=1, contour=True,
                       glossy=0.15, name="cranium"))
    jaw_c = _vec(0, P["jaw_y"] + drop, -0.1 + 0.03 * jaw, like=one)
    jaw_ax = torch.stack([P["jaw_w"] * (1 - 0.05 * jaw), P["jaw_h"], c * 0.74], -1)
    prims.append(_Prim("ell", "head", jaw_c, skin, one, jaw_ax, eye3, face=True, tex=1, contour=True,
                       glossy=0.15, name="jaw"))
    # nose: tilted ellipsoid whose lower end sticks out
    ny = P["nose_y"]
    nz = _ell_front_z_at(zero, ny, cranium_c, cranium_ax) + P["nose_d"] * 0.3
    nose_c = _vec(0, ny, nz, like=one)
    nose_ax = torch.stack([P["nose_w"], P["nose_len"], P["nose_d"]], -1)
    nose_rot = _rot_x(torch.full((B,), -22.0))
    prims.append(_Prim("ell", "head", nose_c, skin, one, nose_ax, nose_rot, face=True, tex=1, glossy=0.3,
                       name="nose"))
    # eyeballs (the lids are the part of the eyeball outside the lid opening, skin coloured)
    er = P["eye_r"]
    eyes, eye_rot = [], []
    for side, nm, k in ((-1.0, "eye_r", 1), (1.0, "eye_l", 2)):
        ex = side * P["eye_x"]
        zs = _ell_front_z_at(ex, P["eye_y"], cranium_c, cranium_ax)
        ez = zs + er * P["eye_inset"]
        ec = torch.stack([ex, P["eye_y"], ez], -1)
        eyes.append(ec)
        eye_rot.append(-0.7 * torch.atan2(ex / a ** 2, -zs / c ** 2))
        prims.append(_Prim("ell", "head", ec, skin, one, torch.stack([er, er, er], -1), eye3, eye=k,
                           glossy=0.0, name=nm))
    # ears
    for side, nm in ((-1.0, "ear_r"), (1.0, "ear_l")):
        ec = torch.stack([side * (a * 0.97 + 0.015), P["ear_y"], torch.full((B,), 0.06)], -1)
        ax = torch.stack([torch.full((B,), 0.055), P["ear_h"], P["ear_h"] * 0.62], -1)
        prims.append(_Prim("ell", "head", ec, skin * 0.97, one, ax, _rot_y(torch.full((B,), side * -38.0)),
                           tex=1, glossy=0.1, name=nm))
    # hair volume (behind the face surface, above and around the cranium) and long hair at the back
    hs = P["hair_side"]
    cap_c = torch.stack([P["hair_part"] * 0.1, -0.3 + hs * 0.5 - P["hair_lift"], torch.full((B,), 0.12)], -1)
    cap_ax = torch.stack([a * 1.05 + 0.03, b * (0.8 + hs * 0.4) + 0.02, c * 0.96], -1)
    prims.append(_Prim("ell", "head", cap_c, hair, P["hair_cap"], cap_ax, eye3, tex=2, glossy=0.2,
                       name="hair_cap"))
    back_c = _vec(0, 0.72, 0.5, like=one)
    back_ax = torch.stack([a * 1.06, torch.full((B,), 0.85), torch.full((B,), 0.4)], -1)
    prims.append(_Prim("ell", "body", back_c, hair, P["hair_long"], back_ax, eye3, tex=2, glossy=0.2,
                       name="hair_back"))
    # neck and torso (body frame: translation and scale only)
    prims.append(_Prim("ell", "body", _vec(0, 1.0, 0.16, like=one), skin * 0.92, one,
                       _vec(0.31, 0.62, 0.31, like=one), eye3, tex=1, name="neck"))
    prims.append(_Prim("ell", "body", _vec(0, 2.12, 0.45, like=one), cloth, one,
                       _vec(1.3, 0.8, 0.62, like=one), eye3, tex=3, name="torso"))

    # ---- derived feature geometry
    g: dict[str, torch.Tensor] = {}
    g["drop"] = drop
    g["eye_c_r"], g["eye_c_l"] = eyes
    g["eye_rot_r"], g["eye_rot_l"] = eye_rot          # lid frame yaw (radians): the lids face the surface normal
    # nose: front-most point and bottom
    qs = nose_rot * nose_ax[:, None, :]                                  # Q diag(s)
    v = nose_rot.transpose(1, 2) @ torch.tensor([0.0, 0.0, -1.0])       # Q^T (0,0,-1)
    u = nose_ax * v
    u = u / u.norm(dim=-1, keepdim=True)
    g["nose_tip"] = nose_c + torch.einsum("bij,bj->bi", qs, u)
    g["nose_bottom"] = ny + qs[:, 1, :].norm(dim=-1)
    g["nose_w"] = P["nose_w"]
    # mouth
    g["mouth_y"] = P["mouth_y"] + 0.1 * drop
    g["mouth_w"] = P["mouth_w"] * (1 + 0.12 * smile) * (1 - 0.12 * jaw)
    g["mouth_hu"] = 0.003 + 0.02 * jaw
    g["mouth_hd"] = 0.003 + 0.8 * drop
    g["smile_k"] = 0.05 * smile
    # brows
    g["brow_y"] = P["eye_y"] - P["brow_gap"] - 0.08 * brow
    g["brow_frown"] = 0.05 * (-brow).clamp(min=0)
    g["brow_xm"] = P["eye_x"] + 0.02
    g["hairline"] = torch.maximum(P["hairline"] + P["fringe"], g["brow_y"] - 0.16)
    g["chin_y"] = jaw_c[:, 1] + jaw_ax[:, 1]
    return _Scene("human", prims, g)


def _animal_scene(P: dict[str, torch.Tensor], E: torch.Tensor) -> _Scene:
    B = E.shape[0]
    one, zero = torch.ones(B), torch.zeros(B)
    eye3 = torch.eye(3).expand(B, 3, 3)
    jaw, smile, brow = E[:, 0], E[:, 1], E[:, 4]
    a, b, c = P["head_a"], P["head_b"], P["head_c"]
    drop = 0.14 * jaw
    fur, muzzle = P["fur"], P["muzzle"]
    prims: list[_Prim] = []
    head_c = _vec(0, 0, 0, like=one)
    head_ax = torch.stack([a, b, c], -1)
    prims.append(_Prim("ell", "head", head_c, fur, one, head_ax, eye3, face=True, tex=1, contour=True,
                       name="head"))
    sy, sh = P["snout_y"], P["snout_h"]
    s_depth = torch.full((B,), 0.3)
    sz = _ell_front_z_at(zero, sy, head_c, head_ax) + s_depth - P["snout_len"] * 0.6
    snout_c = torch.stack([zero, sy, sz], -1)
    snout_ax = torch.stack([P["snout_w"], sh, s_depth], -1)
    prims.append(_Prim("ell", "head", snout_c, muzzle, one, snout_ax, eye3, face=True, tex=1, glossy=0.1,
                       name="snout"))
    chin_c = torch.stack([zero, sy + sh * 0.72 + drop, sz + 0.06 + 0.04 * jaw], -1)
    chin_ax = torch.stack([P["chin_w"], P["chin_h"], torch.full((B,), 0.22)], -1)
    prims.append(_Prim("ell", "head", chin_c, muzzle, one, chin_ax, eye3, face=True, tex=1, contour=True,
                       name="chin"))
    ny = sy - sh * 0.45
    nose_z = _ell_front_z_at(zero, ny, snout_c, snout_ax) + P["nose_h"] * 0.5
    nose_c = torch.stack([zero, ny, nose_z], -1)
    nose_ax = torch.stack([P["nose_w"], P["nose_h"], P["nose_h"] * 0.9], -1)
    prims.append(_Prim("ell", "head", nose_c, P["nose_col"], one, nose_ax, eye3, face=True, glossy=0.8,
                       name="nose"))
    er = P["eye_r"]
    eyes, eye_rot = [], []
    for side, nm, k in ((-1.0, "eye_r", 1), (1.0, "eye_l", 2)):
        ex = side * P["eye_x"]
        zs = _ell_front_z_at(ex, P["eye_y"], head_c, head_ax)
        ez = zs + er * P["eye_inset"]
        ec = torch.stack([ex, P["eye_y"], ez], -1)
        eyes.append(ec)
        eye_rot.append(-0.7 * torch.atan2(ex / a ** 2, -zs / c ** 2))
        prims.append(_Prim("ell", "head", ec, fur, one, torch.stack([er, er, er], -1), eye3, eye=k,
                           glossy=0.0, name=nm))
    ck = P["cheeks"]
    for side, nm in ((-1.0, "cheek_r"), (1.0, "cheek_l")):
        cc = torch.stack([side * a * 0.58, 0.22 + 0.06 * ck, -0.3 - 0.05 * ck], -1)
        cax = torch.stack([0.3 + 0.08 * ck, 0.3 + 0.04 * ck, 0.38 + 0.04 * ck], -1)
        prims.append(_Prim("ell", "head", cc, fur, (ck > 0).float(), cax, eye3, face=True, tex=1,
                           contour=True, name=nm))
    prims.append(_Prim("ell", "body", _vec(0, 1.55, 0.6, like=one), fur, one,
                       _vec(1.15, 0.88, 0.6, like=one), eye3, tex=1, name="body"))
    # ears: plates standing on the crown, splayed outwards and leaning back
    for side, nm in ((-1.0, "ear_r"), (1.0, "ear_l")):
        ex = side * P["ear_x"]
        ey = -b * (1 - (P["ear_x"] / a) ** 2).clamp(min=0.05).sqrt()
        q = _rot_x(-P["ear_back"]) @ _rot_z(side * P["ear_splay"])
        e1 = q[:, :, 0] * (P["ear_w"] * 0.5)[:, None]
        e2 = q[:, :, 1] * (P["ear_h"] * 0.5)[:, None]
        base = torch.stack([ex, ey + 0.06, torch.full((B,), 0.02)], -1)
        center = base - 0.7 * e2
        prims.append(_Prim("plate", "head", center, fur, one, e1=e1, e2=e2, pointed=P["ear_pointed"],
                           col2=P["inner_ear"], tex=1, name=nm))

    g: dict[str, torch.Tensor] = {}
    g["drop"] = drop
    g["eye_c_r"], g["eye_c_l"] = eyes
    g["eye_rot_r"], g["eye_rot_l"] = eye_rot          # lid frame yaw (radians): the lids face the surface normal
    g["nose_c"] = nose_c
    g["nose_ax"] = nose_ax
    g["nose_tip"] = nose_c - torch.stack([zero, zero, nose_ax[:, 2]], -1)
    g["nose_bottom"] = ny + nose_ax[:, 1]
    g["nose_w"] = P["nose_w"]
    g["mouth_y"] = g["nose_bottom"] + 0.07
    g["mouth_w"] = P["mouth_w"] * (1 + 0.12 * smile)
    g["mouth_open"] = 1.1 * drop
    g["smile_k"] = 0.04 * smile
    g["brow_y"] = P["eye_y"] - P["eye_r"] * P["eye_hu"] - P["brow_gap"] - 0.06 * brow
    g["brow_x"] = P["eye_x"] - 0.02
    g["brow_tilt"] = 0.35 * brow            # radians; >0 inner end up
    g["chin_y"] = chin_c[:, 1] + chin_ax[:, 1]
    return _Scene("animal", prims, g)


def _build_scene(domain: str, P: dict[str, torch.Tensor], E: torch.Tensor) -> _Scene:
    return _animal_scene(P, E) if domain == "animal" else _human_scene(P, E)


# --------------------------------------------------------------------------------------------- rasteriser

class _Layers:
    """Two-deep fragment buffer. Layer 1 channels: z, alpha, primitive id, shade, aux, specular, X (3,
    head-local surface point for decals); layer 2 keeps the first five."""

    def __init__(self, B: int, H: int, W: int):
        self.L1 = torch.zeros(B, 9, H, W)
        self.L1[:, 0] = _BIG
        self.L1[:, 2] = -1
        self.L2 = self.L1[:, :5].clone()
        self.bbox: dict[int, tuple[int, int, int, int]] = {}   # primitive -> (y0, y1, x0, x1) drawn region

    z1 = property(lambda s: s.L1[:, 0])
    a1 = property(lambda s: s.L1[:, 1])
    id1 = property(lambda s: s.L1[:, 2].long())
    sh1 = property(lambda s: s.L1[:, 3])
    ax1 = property(lambda s: s.L1[:, 4])
    sp1 = property(lambda s: s.L1[:, 5])
    X1 = property(lambda s: s.L1[:, 6:9])
    z2 = property(lambda s: s.L2[:, 0])
    a2 = property(lambda s: s.L2[:, 1])
    id2 = property(lambda s: s.L2[:, 2].long())
    sh2 = property(lambda s: s.L2[:, 3])
    ax2 = property(lambda s: s.L2[:, 4])

    def insert(self, y0: int, y1: int, x0: int, x1: int, k: int, z, a, X, sh, sp, aux) -> None:
        z = torch.where(a > 0.002, z, _BIG)
        F = torch.cat([z[:, None], a[:, None], torch.full_like(a, float(k))[:, None], sh[:, None], aux[:, None],
                       sp[:, None], X], 1)
        L1 = self.L1[:, :, y0:y1, x0:x1]
        L2 = self.L2[:, :, y0:y1, x0:x1]
        front = (z < L1[:, 0])[:, None]
        second = (z < L2[:, 0])[:, None]
        self.L2[:, :, y0:y1, x0:x1] = torch.where(front, L1[:, :5], torch.where(second, F[:, :5], L2))
        self.L1[:, :, y0:y1, x0:x1] = torch.where(front, F, L1)


@dataclass
class _Cam:
    M_head: torch.Tensor    # [B,3,3] head-local -> pixel-scaled camera
    M_body: torch.Tensor    # [B,3,3]
    origin: torch.Tensor    # [B,3] pixel position of the head origin (z = 0)
    ppu: torch.Tensor       # [B] pixels per head-local unit
    R: torch.Tensor         # [B,3,3]


def _camera(P: dict[str, torch.Tensor], pose: torch.Tensor, size: int) -> _Cam:
    yaw, pitch, roll, tx, ty, sc = pose.unbind(-1)
    R = euler_to_rotation_matrix(yaw, pitch, roll, order="xyz").to(torch.float32)
    ppu = size / 2.0 * P["s_norm"] * sc
    ox = (1.0 + P["tx0"] + tx) * size / 2.0 - 0.5
    oy = (1.0 + P["ty0"] + ty) * size / 2.0 - 0.5
    origin = torch.stack([ox, oy, torch.zeros_like(ox)], -1)
    eye3 = torch.eye(3).expand_as(R)
    return _Cam(R * ppu[:, None, None], eye3 * ppu[:, None, None], origin, ppu, R)


def _shade(n: torch.Tensor, P: dict[str, torch.Tensor], glossy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n [B,3,h,w] unit camera normals -> shade, specular [B,h,w]."""
    L = P["light"]
    ndl = (n * L[:, :, None, None]).sum(1)
    w = _b(P["wrap"])
    diff = ((ndl + w) / (1 + w)).clamp(min=0.0)
    facing = (-n[:, 2]).clamp(0.0, 1.0)
    sh = _b(P["ambient"]) * (0.75 + 0.25 * facing) + _b(P["diffuse"]) * diff + _b(P["rim"]) * (1 - facing) ** 3
    if glossy > 0:
        H = L + torch.tensor([0.0, 0.0, -1.0])
        H = H / H.norm(dim=-1, keepdim=True)
        ndh = (n * H[:, :, None, None]).sum(1).clamp(min=0.0)
        sp = _b(P["spec"]) * glossy * ndh.pow(48.0)
    else:
        sp = torch.zeros_like(sh)
    return sh, sp


def _raster(scene: _Scene, cam: _Cam, P: dict[str, torch.Tensor], size: int) -> _Layers:
    B = cam.ppu.shape[0]
    H = W = size
    layers = _Layers(B, H, W)
    for k, pr in enumerate(scene.prims):
        en = pr.enabled > 0
        if not bool(en.any()):
            continue
        M = cam.M_head if pr.frame == "head" else cam.M_body
        if pr.kind == "ell":
            QS = pr.rot * pr.axes[:, None, :]
            Mk = M @ QS
            ok = torch.einsum("bij,bj->bi", M, pr.center) + cam.origin
            hx = Mk[:, 0].norm(dim=-1)
            hy = Mk[:, 1].norm(dim=-1)
        else:
            Me1 = torch.einsum("bij,bj->bi", M, pr.e1)
            Me2 = torch.einsum("bij,bj->bi", M, pr.e2)
            ok = torch.einsum("bij,bj->bi", M, pr.center) + cam.origin
            hx = Me1[:, 0].abs() + Me2[:, 0].abs()
            hy = Me1[:, 1].abs() + Me2[:, 1].abs()
        x0 = int(math.floor(float((ok[:, 0] - hx)[en].min()))) - 1
        x1 = int(math.ceil(float((ok[:, 0] + hx)[en].max()))) + 2
        y0 = int(math.floor(float((ok[:, 1] - hy)[en].min()))) - 1
        y1 = int(math.ceil(float((ok[:, 1] + hy)[en].max()))) + 2
        x0, x1, y0, y1 = max(x0, 0), min(x1, W), max(y0, 0), min(y1, H)
        if x1 <= x0 or y1 <= y0:
            continue
        dx = torch.arange(x0, x1, dtype=torch.float32)[None, :] - ok[:, 0:1]    # [B,w]
        dy = torch.arange(y0, y1, dtype=torch.float32)[None, :] - ok[:, 1:2]    # [B,h]
        if pr.kind == "ell":
            N = torch.linalg.inv(Mk)
            d = N[:, :, 2]
            dn = d.norm(dim=-1)
            dh = d / dn[:, None]
            N0, N1 = N[:, :, 0], N[:, :, 1]
            c0, c1 = (dh * N0).sum(-1), (dh * N1).sum(-1)
            A0 = N0 - dh * c0[:, None]
            A1 = N1 - dh * c1[:, None]
            Pp = A0[:, :, None, None] * dx[:, None, None, :] + A1[:, :, None, None] * dy[:, None, :, None]
            g = 1.0 - (Pp * Pp).sum(1)
            gx = (A0[:, :, None, None] * Pp).sum(1)
            gy = (A1[:, :, None, None] * Pp).sum(1)
            grad = 2.0 * torch.hypot(gx, gy) + 1e-9
            alpha = (0.5 + g / grad).clamp(0.0, 1.0) * _b(pr.enabled)
            sg = g.clamp(min=0.0).sqrt()
            U = Pp - sg[:, None] * dh[:, :, None, None]
            s = c0[:, None, None] * dx[:, None, :] + c1[:, None, None] * dy[:, :, None] - (dn * ok[:, 2])[:, None, None]
            z = (-sg - s) / dn[:, None, None]
            h, w = g.shape[1:]
            Uf = U.reshape(B, 3, -1)
            n = torch.bmm(N.transpose(1, 2), Uf).reshape(B, 3, h, w)
            n = n * torch.rsqrt((n * n).sum(1, keepdim=True).clamp(min=1e-18))
            X = (torch.bmm(QS, Uf) + pr.center[:, :, None]).reshape(B, 3, h, w)
            aux = torch.zeros_like(z)
        else:
            det = Me1[:, 0] * Me2[:, 1] - Me2[:, 0] * Me1[:, 1]
            det = torch.where(det.abs() < 1e-6, torch.full_like(det, 1e-6), det)
            j00, j01 = Me2[:, 1] / det, -Me2[:, 0] / det
            j10, j11 = -Me1[:, 1] / det, Me1[:, 0] / det
            A = _b(j00) * dx[:, None, :] + _b(j01) * dy[:, :, None]
            Bc = _b(j10) * dx[:, None, :] + _b(j11) * dy[:, :, None]
            z = _b(ok[:, 2]) + A * _b(Me1[:, 2]) + Bc * _b(Me2[:, 2])

            def tri_sd(a_, b_, scale):
                out = None
                for na, nb, off in ((2.0, -1.0, 1.0), (-2.0, -1.0, 1.0), (0.0, 1.0, 1.0)):
                    l = math.hypot(na, nb)
                    na_, nb_ = na / l, nb / l
                    e = (na_ * a_ + nb_ * b_) - off / l
                    gn = ((j00 * na_ + j10 * nb_) ** 2 + (j01 * na_ + j11 * nb_) ** 2).sqrt() / scale
                    sd = e / _b(gn)
                    out = sd if out is None else torch.maximum(out, sd)
                return out

            def disc_sd(a_, b_, scale):
                f = a_ * a_ + b_ * b_ - 1.0
                gxp = _b(j00) * 2 * a_ + _b(j10) * 2 * b_
                gyp = _b(j01) * 2 * a_ + _b(j11) * 2 * b_
                return f / ((gxp * gxp + gyp * gyp).sqrt() / scale + 1e-9)

            pt = _b(pr.pointed) > 0.5
            sd = torch.where(pt, tri_sd(A, Bc, 1.0), disc_sd(A, Bc, 1.0))
            cr = torch.cross(Me1, Me2, dim=-1)
            nrm = cr / cr.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            edge_fade = (nrm[:, 2].abs() / 0.2).clamp(0.0, 1.0)
            alpha = (0.5 - sd).clamp(0.0, 1.0) * _b(pr.enabled * edge_fade)
            si = 0.62
            Ai, Bi = A / si, 0.5 + (Bc - 0.5) / si
            sdi = torch.where(pt, tri_sd(Ai, Bi, si), disc_sd(Ai, Bi, si))
            facing = (cr[:, 2] > 0).float()
            aux = (0.5 - sdi).clamp(0.0, 1.0) * _b(facing)
            nf = nrm * torch.where(nrm[:, 2:3] > 0, -1.0, 1.0)
            e1n = Me1 / Me1.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            n = nf[:, :, None, None] + 0.45 * A[:, None] * e1n[:, :, None, None]
            n = n * torch.rsqrt((n * n).sum(1, keepdim=True).clamp(min=1e-18))
            X = pr.center[:, :, None, None] + A[:, None] * pr.e1[:, :, None, None] + Bc[:, None] * pr.e2[:, :, None, None]
        sh, sp = _shade(n, P, pr.glossy)
        layers.bbox[k] = (y0, y1, x0, x1)
        layers.insert(y0, y1, x0, x1, k, z, alpha, X, sh, sp, aux)
    return layers


# ---------------------------------------------------------------------------------------------- shading

def _gather(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table [B,K,C], ids [B,H,W] with -1 = none -> [B,C,H,W] (zeros for -1)."""
    B, K, C = table.shape
    t = torch.cat([table, torch.zeros(B, 1, C)], 1)
    idx = torch.where(ids < 0, torch.full_like(ids, K), ids)
    H, W = ids.shape[1:]
    out = torch.gather(t.transpose(1, 2), 2, idx.reshape(B, 1, H * W).expand(B, C, H * W))
    return out.reshape(B, C, H, W)


def _background(P: dict[str, torch.Tensor], B: int, size: int, key: list[int] | None = None) -> torch.Tensor:
    """Background [B,3,H,W]; ``key`` (one int per item) marks items sharing an identity: computed once each."""
    if key is not None and len(set(key)) < B:
        first: dict[int, int] = {}
        for j, kk in enumerate(key):
            first.setdefault(kk, j)
        uniq = list(first.values())
        sub = {k: v[uniq] for k, v in P.items()}
        bgu = _background(sub, len(uniq), size)
        pos = {kk: i for i, kk in enumerate(first)}
        return bgu[torch.tensor([pos[kk] for kk in key])]
    ax = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    xn = ax[None, None, :].expand(B, size, size)
    yn = ax[None, :, None].expand(B, size, size)
    sym = _b(P["sym"])
    xs = xn + (xn.abs() - xn) * sym
    ang = _b(P["bg_angle"])
    t = (0.5 + 0.5 * (torch.cos(ang) * xs + torch.sin(ang) * yn)).clamp(0, 1)
    k, ph = P["bg_k"], P["bg_phase"]
    blot = sum(torch.sin(_b(k[:, 2 * j]) * xs + _b(k[:, 2 * j + 1]) * yn + _b(ph[:, j])) for j in range(3)) / 3
    shade = (1 + _b(P["bg_amp"]) * 2 * blot) * (1 - 0.18 * (xn * xn + yn * yn))
    bg = _col(P["bg0"]) + (_col(P["bg1"]) - _col(P["bg0"])) * t[:, None]
    return bg * shade[:, None]


def _texture(X: torch.Tensor, P: dict[str, torch.Tensor]) -> torch.Tensor:
    """Smooth 3-D noise-like pattern in [-1, 1] on head-local points X [B,3,H,W]."""
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    sym = _b(P["sym"])
    xs = x + (x.abs() - x) * sym
    k, ph = P["tex_k"], P["tex_phase"]
    acc = 0
    for j in range(4):
        acc = acc + torch.sin(_b(k[:, 3 * j]) * xs + _b(k[:, 3 * j + 1]) * y + _b(k[:, 3 * j + 2]) * z + _b(ph[:, j]))
    return acc * 0.5


def _sd_ellipse(dx, dy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (negative inside), same units as dx."""
    qx, qy = dx / rx, dy / ry
    f = qx * qx + qy * qy - 1.0
    gx, gy = qx / rx, qy / ry
    return f / (2 * (gx * gx + gy * gy).sqrt() + 1e-6)


def _eye_decals(alb, X, ids, scene: _Scene, P, E, pix_u, parts):
    """Sclera, iris, pupil, lids, lashes and catch-lights on the eyeballs (layer-1 pixels)."""
    ir = scene.index("eye_r")
    il = scene.index("eye_l")
    is_l = ids == il
    is_eye = (ids == ir) | is_l
    cr, cl = scene.geo["eye_c_r"], scene.geo["eye_c_l"]
    c = torch.where(is_l[:, None], _col(cl), _col(cr))
    side = torch.where(is_l, 1.0, -1.0)
    blink = torch.where(is_l, _b(E[:, 2]), _b(E[:, 3]))
    r = _b(P["eye_r"])
    U = (X - c) / r[:, None]
    hx_, uy, hz_ = U[:, 0], U[:, 1], U[:, 2]
    th = torch.where(is_l, _b(scene.geo["eye_rot_l"]), _b(scene.geo["eye_rot_r"]))
    ct, st = torch.cos(th), torch.sin(th)
    ux = ct * hx_ - st * hz_               # lid frame: R_y(theta)^T u
    uz = st * hx_ + ct * hz_
    pix = pix_u * r                      # pixels per eyeball unit
    Wd, Hu, Hl = _b(P["eye_w"]), _b(P["eye_hu"]), _b(P["eye_hl"])
    yc = -_b(P["eye_tilt"]) * ux * side
    shape = (1 - (ux / Wd) ** 2).clamp(min=0).sqrt()
    y_bot = yc + Hl * shape
    y_top = y_bot - (Hu + Hl) * (1 - blink) * shape
    front = (uz < 0.1).float()
    opn = _band(uy - 0.5 * (y_top + y_bot), 0.5 * (y_bot - y_top), pix) * front * is_eye.float()
    gz = torch.stack([0.4 * E[:, 5], 0.3 * E[:, 6], -torch.ones_like(E[:, 5])], -1)
    gz = gz / gz.norm(dim=-1, keepdim=True)
    gx, gy = _b(gz[:, 0]), _b(gz[:, 1])
    ddx, ddy = hx_ - gx, uy - gy
    rr = (ddx * ddx + ddy * ddy).sqrt()
    ri = _b(P["iris_r"])
    iris_w = _cov(rr - ri, pix) * opn
    asp = _b(P["pupil_aspect"]) if "pupil_aspect" in P else torch.ones_like(ri)
    rp = _b(P["pupil_r"])
    sd_p = _sd_ellipse(ddx, ddy, rp * asp, rp)
    pupil_w = _cov(sd_p, pix) * opn
    sclera = torch.tensor([0.93, 0.91, 0.88]).reshape(1, 3, 1, 1)
    iris_col = _col(P["iris"]) * (1.25 - 0.55 * (rr / ri).clamp(0, 1) ** 2)[:, None]
    out = _lerp(alb, sclera.expand_as(alb), opn)
    out = _lerp(out, iris_col, iris_w)
    out = _lerp(out, torch.tensor([0.02, 0.015, 0.015]).reshape(1, 3, 1, 1).expand_as(alb), pupil_w)
    hx = 0.45 * _b(P["light"][:, 0]) * ri          # catch-light towards the light, mirrored with it
    hl = _cov(((ddx - hx) ** 2 + (ddy + 0.5 * ri) ** 2).sqrt() - 0.17 * ri, pix) * opn * _b(P["highlight"])
    out = _lerp(out, torch.ones_like(alb), hl)
    lash = _b(P["lash"])
    sd_lash = torch.maximum((uy - (y_top - lash * 0.5)).abs() - lash * 0.5, ux.abs() - Wd * 1.04)
    lash_w = _cov(sd_lash, pix) * front * is_eye.float()
    low = _cov(torch.maximum((uy - y_bot - lash * 0.12).abs() - lash * 0.12, ux.abs() - Wd * 0.9), pix) * front
    lash_w = torch.maximum(lash_w, 0.5 * low * is_eye.float())
    out = _lerp(out, torch.tensor([0.05, 0.035, 0.03]).reshape(1, 3, 1, 1).expand_as(alb), lash_w)
    parts["iris"] = iris_w * (1 - lash_w)
    parts["spec_mask"] = torch.where(is_eye, opn * (1 - lash_w), torch.ones_like(opn))
    parts["eye_open"] = opn * (1 - lash_w)
    return out


def _human_face_decals(alb, X, ids, scene: _Scene, P, E, pix_u, parts):
    geo = scene.geo
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    ax = x.abs()
    icr, ijaw, inose = scene.index("cranium"), scene.index("jaw"), scene.index("nose")
    is_face = ((ids == icr) | (ids == ijaw) | (ids == inose)).float()
    front = (-z * 6).clamp(0, 1) * is_face
    pix = pix_u
    smile = _b(E[:, 1])
    # blush
    bl = torch.exp(-(((ax - 0.42) ** 2) + (y - (0.33 - 0.04 * smile)) ** 2) / (2 * 0.1 ** 2))
    alb = _lerp(alb, torch.tensor([0.85, 0.35, 0.35]).reshape(1, 3, 1, 1).expand_as(alb), bl * _b(P["blush"]) * front)
    # eye sockets: slightly darker skin around the eyes
    ex, ey, er = _b(P["eye_x"]), _b(P["eye_y"]), _b(P["eye_r"])
    so = torch.exp(-(((ax - ex) / (er * 1.7)) ** 2 + ((y - ey + 0.02) / (er * 1.5)) ** 2))
    alb = alb * (1 - 0.18 * so * front)[:, None]
    # shadow under the nose
    nb = _b(geo["nose_bottom"])
    sh = torch.exp(-((x / 0.09) ** 2 + ((y - nb - 0.02) / 0.025) ** 2)) * (ids != inose).float() * front
    alb = alb * (1 - 0.2 * sh)[:, None]
    # beard / stubble
    my = _b(geo["mouth_y"])
    beard = ((y - nb - 0.02) * 12).clamp(0, 1) * ((0.95 - ax / 0.7) * 4).clamp(0, 1) * front * _b(P["beard"])
    alb = _lerp(alb, (_col(P["hair"]) * 0.9).expand_as(alb), beard * (0.6 + 0.4 * _texture(X * 3, P).clamp(-1, 1)))
    # hair on the cranium
    th = torch.atan2(ax, -z)
    t1 = (th / (math.pi / 2)).clamp(0, 1)
    t2 = ((th - math.pi / 2) / (math.pi / 2)).clamp(0, 1)
    hl = _b(geo["hairline"]) + 0.15 * ax * ax + 0.03 * torch.cos(ax * 23) * (_b(P["fringe"]) > 0).float()
    hl = hl + _b(P["hair_part"]) * x + (0.05 - hl) * t1 ** 1.6 + 0.5 * t2
    sd_h = y - hl
    hair_w = _cov(sd_h, pix * 0.6) * (ids == icr).float() * _b(P["hair_amount"])
    xs = x + (ax - x) * _b(P["sym"])
    hair_col = _col(P["hair"]) * (1 + 0.12 * torch.sin(55 * xs + 4 * torch.sin(7 * y)) * _b(_fine(pix_u, 0.11)))[:, None]
    alb = _lerp(alb, hair_col, hair_w)
    # brows
    t = (ax - _b(geo["brow_xm"])) / _b(P["brow_len"])
    yb = _b(geo["brow_y"]) - _b(P["brow_arch"]) * (1 - t * t).clamp(min=0) + _b(geo["brow_frown"]) * (1 - t) * 0.5
    thick = _b(P["brow_th"]) * (1 - 0.45 * t.clamp(min=0)) * 0.5
    sd_b = torch.maximum((y - yb).abs() - thick, (t.abs() - 1) * _b(P["brow_len"]))
    brow_w = _cov(sd_b, pix) * front
    alb = _lerp(alb, _col(P["brow_col"]).expand_as(alb), brow_w * 0.92)
    # nostrils (on the nose)
    nw = _b(geo["nose_w"])
    sd_n = _sd_ellipse(ax - nw * 0.45, y - (nb - 0.035), nw * 0.32, torch.full_like(nw, 0.018))
    nos_w = _cov(sd_n, pix) * (ids == inose).float()
    alb = _lerp(alb, alb * 0.25, nos_w)
    # mouth: lips, interior, teeth, tongue
    w = _b(geo["mouth_w"])
    mx = ax / w
    sq = (1 - mx * mx).clamp(min=0).sqrt()
    yc = my - _b(geo["smile_k"]) * mx * mx
    hu = _b(geo["mouth_hu"]) * sq
    hd = _b(geo["mouth_hd"]) * sq
    tu = _b(P["lip_u"]) * (0.3 + 0.7 * sq)
    tl = _b(P["lip_l"]) * (0.3 + 0.7 * sq)
    side = (mx - 1) * w
    sd_lips = torch.maximum(torch.maximum(yc - hu - tu - y, y - (yc + hd + tl)), side)
    lips_w = _cov(sd_lips, pix) * front
    lip_col = _col(P["lip"]) * (1 + 0.15 * ((y > yc).float()))[:, None]
    alb = _lerp(alb, lip_col, lips_w)
    sd_in = torch.maximum(torch.maximum(yc - hu - y, y - (yc + hd)), side)
    in_w = _cov(sd_in, pix) * front
    inner = torch.tensor([0.2, 0.05, 0.06]).reshape(1, 3, 1, 1).expand_as(alb)
    teeth = _cov(torch.maximum(y - (yc - hu + 0.035), mx - 0.8), pix)
    tongue = _cov(torch.maximum(yc + hd - 0.045 - y, mx - 0.6), pix)
    inner = _lerp(inner, torch.tensor([0.93, 0.9, 0.84]).reshape(1, 3, 1, 1).expand_as(alb), teeth)
    inner = _lerp(inner, torch.tensor([0.7, 0.28, 0.3]).reshape(1, 3, 1, 1).expand_as(alb), tongue * (1 - teeth))
    alb = _lerp(alb, inner, in_w)
    parts["mouth"] = in_w
    return alb


def _glasses(alb, X, ids, scene: _Scene, P, pix_u):
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    ax = x.abs()
    recv = torch.zeros_like(x)
    for nm in ("cranium", "jaw", "nose", "eye_r", "eye_l"):
        recv = recv + (ids == scene.index(nm)).float()
    front = (-z * 5).clamp(0, 1) * recv * _b(P["glasses"])
    ex, ey, er = _b(P["eye_x"]), _b(P["eye_y"]), _b(P["eye_r"])
    rx, ry = er * 1.85, er * 1.45
    d = _sd_ellipse(ax - ex, y - ey - 0.02, rx, ry)
    ring = _cov(d.abs() - 0.018, pix_u)
    bridge = _cov(torch.maximum((y - ey + 0.01).abs() - 0.014, ax - (ex - rx * 0.95)), pix_u)
    arm = _cov(torch.maximum((y - ey + 0.01).abs() - 0.012, ex + rx * 0.95 - ax), pix_u) * (z > -0.6).float()
    frame = torch.maximum(torch.maximum(ring, bridge), arm) * front
    lens = _cov(d, pix_u) * front
    alb = _lerp(alb, (alb * 0.85 + _col(P["glasses_col"]) * 0.15), lens)
    return _lerp(alb, _col(P["glasses_col"]).expand_as(alb), frame)


def _fine(pix_u: torch.Tensor, period: float) -> torch.Tensor:
    """Fade factor [B] for a pattern of the given period (head units) so it never aliases."""
    return ((pix_u.reshape(-1) * period - 2.5) / 4).clamp(0, 1)


def _animal_face_decals(alb, X, ids, scene: _Scene, P, E, pix_u, parts):
    geo = scene.geo
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    ax = x.abs()
    ih, isn, ich, ino = (scene.index(n) for n in ("head", "snout", "chin", "nose"))
    is_head = (ids == ih).float()
    recv = is_head + (ids == isn).float() + (ids == ich).float() + (ids == ino).float()
    recv = recv + (ids == scene.index("cheek_r")).float() + (ids == scene.index("cheek_l")).float()
    front = (-z * 6).clamp(0, 1) * recv
    pix = pix_u
    ex, ey, er = _b(P["eye_x"]), _b(P["eye_y"]), _b(P["eye_r"])
    # stripes on the forehead / crown and on the sides
    s = torch.sin(_b(P["stripe_freq"]) * (y + 0.12 * torch.cos(5 * x)) + 3 * ax)
    region = ((-(y - ey + er * 1.2)) * 5).clamp(0, 1) * (1 - _cov(_sd_ellipse(ax - ex, y - ey, er * 1.6, er * 1.6), pix))
    region = torch.maximum(region, ((ax - 0.55) * 5).clamp(0, 1))
    st = ((s - 0.35) * 4).clamp(0, 1) * region * is_head * _b(P["stripes"]) * 2
    alb = _lerp(alb, _col(P["stripe_col"]).expand_as(alb), st.clamp(0, 1))
    # eye patches
    pw = _cov(_sd_ellipse(ax - ex, y - ey + 0.02, er * 1.55, er * 1.4), pix * 0.5) * is_head * _b(P["eye_patch"])
    alb = _lerp(alb, _col(P["patch_col"]).expand_as(alb), pw * front)
    # blush
    bw = torch.exp(-(((ax - ex - 0.06) / 0.11) ** 2 + ((y - ey - er - 0.16) / 0.065) ** 2)) * _b(P["blush"])
    alb = _lerp(alb, torch.tensor([0.98, 0.5, 0.55]).reshape(1, 3, 1, 1).expand_as(alb), bw * front * 0.8)
    # brow marks: tilted ellipses (inner end up for brow_raise > 0)
    bx = ax - _b(geo["brow_x"])
    by = y - _b(geo["brow_y"])
    ang = _b(geo["brow_tilt"])
    ca, sa = torch.cos(ang), torch.sin(ang)
    u_ = ca * bx - sa * by
    v_ = sa * bx + ca * by
    brow_w = _cov(_sd_ellipse(u_, v_, _b(P["brow_len"]), _b(P["brow_th"]) * 0.5), pix) * front * is_head
    alb = _lerp(alb, _col(P["brow_col"]).expand_as(alb), brow_w)
    # nostrils on the nose
    nc, nax = geo["nose_c"], geo["nose_ax"]
    nw, nh = _b(nax[:, 0]), _b(nax[:, 1])
    nos = _cov(_sd_ellipse(ax - nw * 0.45, y - _b(nc[:, 1]) - nh * 0.3, nw * 0.24, nh * 0.26), pix) * (ids == ino).float()
    alb = _lerp(alb, alb * 0.3, nos)
    # mouth: philtrum line, omega-shaped mouth line, opening with tongue
    my, w, op = _b(geo["mouth_y"]), _b(geo["mouth_w"]), _b(geo["mouth_open"])
    lw = 0.008
    t = (2 * ax / w - 1)
    yline = my + 0.035 * (1 - t * t).clamp(min=0) - _b(geo["smile_k"]) * (ax / w) ** 2
    in_w = _cov(_sd_ellipse(x, y - my - op * 0.5, w * 0.7, op * 0.5 + 1e-4), pix) * front * (op > 0.004).float()
    tongue = _cov(_sd_ellipse(x, y - my - op * 0.85, w * 0.4, op * 0.3 + 1e-4), pix)
    inner = _lerp(torch.tensor([0.25, 0.05, 0.07]).reshape(1, 3, 1, 1).expand_as(alb),
                  torch.tensor([0.88, 0.4, 0.45]).reshape(1, 3, 1, 1).expand_as(alb), tongue)
    alb = _lerp(alb, inner, in_w)
    line = torch.maximum((y - yline).abs() - lw, ax - w)
    phil = torch.maximum(ax - lw * 0.8, torch.maximum(_b(geo["nose_bottom"]) - 0.01 - y, y - my))
    line_w = _cov(torch.minimum(line, phil), pix) * front
    alb = _lerp(alb, torch.tensor([0.12, 0.07, 0.07]).reshape(1, 3, 1, 1).expand_as(alb), line_w)
    # whiskers
    wk = torch.zeros_like(x)
    for j in range(3):
        yl = my - 0.05 + 0.045 * j + (j - 1) * 0.25 * (ax - 0.16)
        wk = torch.maximum(wk, _cov(torch.maximum((y - yl).abs() - 0.006, (ax - 0.36).abs() - 0.18), pix))
    wk = wk * front * _b(P["whiskers"]) * (ids != ino).float()
    alb = _lerp(alb, _col(P["whisker_col"]).expand_as(alb), wk)
    parts["mouth"] = in_w
    return alb


def _deferred(scene: _Scene, layers: _Layers, cam: _Cam, P, E, size: int, parts_out: bool, bg_key=None):
    prims = scene.prims
    B = cam.ppu.shape[0]
    K = len(prims)
    has_plates = any(p.kind == "plate" for p in prims)
    col = torch.stack([p.col for p in prims], 1)                            # [B,K,3]
    col2 = torch.stack([p.col2 if p.col2 is not None else p.col for p in prims], 1)
    # per-primitive flags: 0 skin/fur texture, 1 hair, 2 cloth, 3 shading-blend group, 4 head frame
    flags = torch.tensor([[float(p.tex == 1), float(p.tex == 2), float(p.tex == 3), float(p.tex == 1 or p.eye > 0),
                           float(p.frame == "head")] for p in prims]).expand(B, K, 5)
    ids1, ids2 = layers.id1, layers.id2
    X = layers.X1
    pix_u = _b(cam.ppu)
    tbl1 = torch.cat([col, col2, flags], -1) if has_plates else torch.cat([col, flags], -1)
    g1 = _gather(tbl1, ids1)
    alb = g1[:, 0:3]
    if has_plates:
        alb = _lerp(alb, g1[:, 3:6], layers.ax1)
        g1 = g1[:, 3:]
    ws, wh, wc, bl1, hd1 = g1[:, 3], g1[:, 4], g1[:, 5], g1[:, 6], g1[:, 7]
    tbl2 = torch.cat([col, col2, flags[..., 3:]], -1) if has_plates else torch.cat([col, flags[..., 3:]], -1)
    g2 = _gather(tbl2, ids2)
    alb2 = _lerp(g2[:, 0:3], g2[:, 3:6], layers.ax2) if has_plates else g2[:, 0:3]
    bl2, hd2 = g2[:, -2], g2[:, -1]
    # textures
    tx = _texture(X, P)
    xs = X[:, 0] + (X[:, 0].abs() - X[:, 0]) * _b(P["sym"])
    fur = torch.sin(37 * xs + 29 * X[:, 1] + 4 * tx) * _b(_fine(cam.ppu, 0.17)) if scene.family == "animal" else 0
    mult = 1 + _b(P["tex_amp"]) * (2 * tx + fur) * ws
    strands = torch.sin(60 * xs + 5 * torch.sin(6 * X[:, 1]) + 2 * tx) * _b(_fine(cam.ppu, 0.105))
    mult = mult + (0.06 * strands + 0.06 * tx) * wh + 0.04 * tx * wc
    alb = alb * mult[:, None]
    parts: dict[str, torch.Tensor] = {k: torch.zeros(B, size, size) for k in ("mouth", "iris", "eye_open")}
    parts["spec_mask"] = torch.ones(B, size, size)
    face_ids = [k for k, p in enumerate(prims) if p.face]
    eye_ids = [k for k, p in enumerate(prims) if p.eye]
    box = _union_box(layers, face_ids)
    if box is not None:
        y0, y1, x0, x1 = box
        sub: dict[str, torch.Tensor] = {}
        fn = _animal_face_decals if scene.family == "animal" else _human_face_decals
        alb[:, :, y0:y1, x0:x1] = fn(alb[:, :, y0:y1, x0:x1], X[:, :, y0:y1, x0:x1], ids1[:, y0:y1, x0:x1],
                                     scene, P, E, pix_u, sub)
        parts["mouth"][:, y0:y1, x0:x1] = sub["mouth"]
    box = _union_box(layers, eye_ids)
    if box is not None:
        y0, y1, x0, x1 = box
        sub = {}
        alb[:, :, y0:y1, x0:x1] = _eye_decals(alb[:, :, y0:y1, x0:x1], X[:, :, y0:y1, x0:x1],
                                              ids1[:, y0:y1, x0:x1], scene, P, E, pix_u, sub)
        for k in ("iris", "eye_open", "spec_mask"):
            parts[k][:, y0:y1, x0:x1] = sub[k]
    if scene.family == "human" and bool((P["glasses"] > 0).any()):
        box = _union_box(layers, face_ids + eye_ids)
        if box is not None:
            y0, y1, x0, x1 = box
            alb[:, :, y0:y1, x0:x1] = _glasses(alb[:, :, y0:y1, x0:x1], X[:, :, y0:y1, x0:x1],
                                               ids1[:, y0:y1, x0:x1], scene, P, pix_u)
    # smooth the shading seam where two skin/fur primitives interpenetrate (cranium/jaw, nose/face, ...)
    a1, a2 = layers.a1, layers.a2
    z1, z2, sh1, sh2 = layers.z1, layers.z2, layers.sh1, layers.sh2
    bw = bl1 * bl2 * (a2 > 0.5).float() * 0.5 * (1 - (z2 - z1) / (0.07 * pix_u)).clamp(0, 1)
    sh1 = torch.lerp(sh1, sh2, bw)
    sp1 = layers.sp1 * parts.pop("spec_mask")
    c1 = torch.addcmul(sp1[:, None], alb, sh1[:, None])
    c2 = alb2 * sh2[:, None]
    bg = _background(P, B, size, bg_key)
    img = a1[:, None] * c1 + (1 - a1)[:, None] * (a2[:, None] * c2 + (1 - a2)[:, None] * bg)
    img = img.clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()
    mask = a1 + (1 - a1) * a2
    out_parts = None
    if parts_out:
        out_parts = {"head": a1 * hd1 + (1 - a1) * a2 * hd2}
        for k in ("mouth", "iris", "eye_open"):
            out_parts[k] = (parts[k] * a1).contiguous()
    return img, mask, out_parts


# ------------------------------------------------------------------------------------------- landmarks

def _face_front_z(scene: _Scene, x: torch.Tensor, y: torch.Tensor, names: Sequence[str] | None = None):
    """Front surface z in head-local coordinates over the face primitives at points (x, y) [B,L]."""
    best = torch.full_like(x, _BIG)
    for p in scene.prims:
        if p.kind != "ell" or p.frame != "head" or not (p.face or p.contour) or p.eye:
            continue
        if names is not None and p.name not in names:
            continue
        t = _front_z_ellipsoid(x, y, p.center, p.axes, p.rot)
        t = torch.where(p.enabled[:, None] > 0, t, torch.full_like(t, _BIG))
        best = torch.minimum(best, t)
    return torch.where(best >= _BIG, torch.zeros_like(best), best)


def _half_width(scene: _Scene, y: torch.Tensor) -> torch.Tensor:
    """Half-width of the face outline at height y [B,n] (max over contour primitives)."""
    hw = torch.zeros_like(y)
    for p in scene.prims:
        if not p.contour or p.kind != "ell":
            continue
        q = 1 - ((y - p.center[:, 1:2]) / p.axes[:, 1:2]) ** 2
        w = p.axes[:, 0:1] * q.clamp(min=0).sqrt() + p.center[:, 0:1].abs()
        w = torch.where(q > 0, w, torch.zeros_like(w)) * (p.enabled[:, None] > 0).float()
        hw = torch.maximum(hw, w)
    return hw


def _eye_points(scene: _Scene, P, E, side: float):
    """Head-local [B,5,3]: outer, top, inner, bottom, pupil of one eye (side -1 right, +1 left)."""
    c = scene.geo["eye_c_l"] if side > 0 else scene.geo["eye_c_r"]
    th = scene.geo["eye_rot_l"] if side > 0 else scene.geo["eye_rot_r"]
    ct, st = torch.cos(th), torch.sin(th)
    blink = E[:, 2] if side > 0 else E[:, 3]
    r, Wd, Hu, Hl, tilt = P["eye_r"], P["eye_w"], P["eye_hu"], P["eye_hl"], P["eye_tilt"]
    wc = Wd * 0.97
    shape_c = (1 - (wc / Wd) ** 2).sqrt()

    def on(ux, uy):
        """Lid-frame point on the eyeball's front -> head-local (R_y(theta) u)."""
        uz = -(1 - ux ** 2 - uy ** 2).clamp(min=0).sqrt()
        return c + r[:, None] * torch.stack([ct * ux + st * uz, uy, -st * ux + ct * uz], -1)

    def lid(ux, shp):
        yc = -tilt * ux * side
        yb = yc + Hl * shp
        return yb - (Hu + Hl) * (1 - blink) * shp, yb

    t_o, b_o = lid(side * wc, shape_c)
    t_i, b_i = lid(-side * wc, shape_c)
    t_m, b_m = lid(torch.zeros_like(r), torch.ones_like(r))
    outer = on(side * wc, 0.5 * (t_o + b_o))
    inner = on(-side * wc, 0.5 * (t_i + b_i))
    top = on(torch.zeros_like(r), t_m + 0.04 * (1 - blink))
    bottom = on(torch.zeros_like(r), b_m - 0.04 * (1 - blink))
    gz = torch.stack([0.4 * E[:, 5], 0.3 * E[:, 6], -torch.ones_like(r)], -1)
    gz = gz / gz.norm(dim=-1, keepdim=True)
    pupil = c + r[:, None] * gz
    return torch.stack([outer, top, inner, bottom, pupil], 1)


def _landmarks_3d(scene: _Scene, P: dict[str, torch.Tensor], E: torch.Tensor) -> torch.Tensor:
    """Head-local landmark positions [B,L,3] (see LANDMARK_NAMES)."""
    geo = scene.geo
    B = E.shape[0]
    pts = torch.zeros(B, NUM_LANDMARKS, 3)
    zero = torch.zeros(B)

    requests: dict[tuple[str, ...] | None, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    def surf(names_xy: dict[str, tuple[torch.Tensor, torch.Tensor]], prims: Sequence[str] | None = None):
        """Queue points (x, y) to be put on the front surface of the face primitives (or of ``prims``)."""
        requests.setdefault(None if prims is None else tuple(prims), {}).update(names_xy)

    # contour
    if scene.family == "human":
        ey = P["eye_y"]
        levels = torch.stack([ey + 0.1, 0.4 + 0 * ey, 0.7 + 0 * ey, 0.88 + 0 * ey], 1)
    else:
        ey = P["eye_y"]
        levels = torch.stack([ey + 0.25, 0.3 + 0 * ey, 0.45 + 0 * ey, geo["chin_y"] - 0.08], 1)
    hw = _half_width(scene, levels) * 0.9
    d: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for i in range(4):
        d[f"contour_r{i + 1}"] = (-hw[:, i], levels[:, i])
        d[f"contour_l{i + 1}"] = (hw[:, i], levels[:, i])
    d["chin"] = (zero, geo["chin_y"] - 0.07)
    surf(d)
    # brows
    d = {}
    if scene.family == "human":
        for side, s in (("r", -1.0), ("l", 1.0)):
            for nm, t in (("outer", 0.85), ("mid", 0.0), ("inner", -0.85)):
                t_ = torch.full((B,), t)
                xx = geo["brow_xm"] + t_ * P["brow_len"]
                yb = geo["brow_y"] - P["brow_arch"] * (1 - t_ * t_) + geo["brow_frown"] * (1 - t_) * 0.5
                d[f"brow_{side}_{nm}"] = (s * xx, yb)
    else:
        ca, sa = torch.cos(geo["brow_tilt"]), torch.sin(geo["brow_tilt"])
        for side, s in (("r", -1.0), ("l", 1.0)):
            for nm, t in (("outer", 0.8), ("mid", 0.0), ("inner", -0.8)):
                u_ = t * P["brow_len"]
                # inverse of the decal's rotation (u, v) = Rot(ang) (bx, by) at v = 0
                bx, by = ca * u_, -sa * u_
                d[f"brow_{side}_{nm}"] = (s * (geo["brow_x"] + bx), geo["brow_y"] + by)
    surf(d, ["cranium"] if scene.family == "human" else ["head"])
    # eyes
    er = _eye_points(scene, P, E, -1.0)
    el = _eye_points(scene, P, E, 1.0)
    for i, nm in enumerate(("eye_r_outer", "eye_r_top", "eye_r_inner", "eye_r_bottom", "pupil_r")):
        pts[:, LANDMARK_INDEX[nm]] = er[:, i]
    for i, nm in enumerate(("eye_l_outer", "eye_l_top", "eye_l_inner", "eye_l_bottom", "pupil_l")):
        pts[:, LANDMARK_INDEX[nm]] = el[:, i]
    # nose
    pts[:, LANDMARK_INDEX["nose_tip"]] = geo["nose_tip"]
    nb, nw = geo["nose_bottom"], geo["nose_w"]
    if scene.family == "human":
        d = {"nostril_r": (-nw * 0.45, nb - 0.035), "nostril_l": (nw * 0.45, nb - 0.035)}
        surf(d, ["nose"])
        d = {"nose_bridge": (zero, P["eye_y"] + 0.02), "nose_base": (zero, nb - 0.005)}
        surf(d)
    else:
        nc, nax = geo["nose_c"], geo["nose_ax"]
        d = {"nostril_r": (-nax[:, 0] * 0.45, nc[:, 1] + nax[:, 1] * 0.3),
             "nostril_l": (nax[:, 0] * 0.45, nc[:, 1] + nax[:, 1] * 0.3),
             "nose_base": (zero, nb - 0.012)}
        surf(d, ["nose"])
        surf({"nose_bridge": (zero, P["eye_y"] + 0.05)})
    # mouth
    my, w, sk = geo["mouth_y"], geo["mouth_w"], geo["smile_k"]
    if scene.family == "human":
        hu, hd = geo["mouth_hu"], geo["mouth_hd"]
        cy = my - sk * 0.9
        d = {
            "mouth_r": (-w * 0.95, cy), "mouth_l": (w * 0.95, cy),
            "lip_upper": (zero, my - hu - P["lip_u"] * 0.8), "lip_lower": (zero, my + hd + P["lip_l"] * 0.8),
            "lip_upper_inner": (zero, my - hu * 0.5), "lip_lower_inner": (zero, my + hd * 0.5),
        }
    else:
        op = geo["mouth_open"]
        cy = my - sk * 0.95
        d = {
            "mouth_r": (-w * 0.97, cy), "mouth_l": (w * 0.97, cy),
            "lip_upper": (zero, my), "lip_lower": (zero, my + op + 0.01),
            "lip_upper_inner": (zero, my + 0.006), "lip_lower_inner": (zero, my + op * 0.9),
        }
    surf(d)
    # ears
    for side, s in (("r", -1.0), ("l", 1.0)):
        pr = scene.prims[scene.index(f"ear_{side}")]
        if pr.kind == "ell":
            QS = pr.rot * pr.axes[:, None, :]
            tip = pr.center + torch.einsum("bij,j->bi", QS, torch.tensor([0.0, -0.97, -0.24]))
            base = pr.center + torch.einsum("bij,j->bi", QS, torch.tensor([0.0, 0.9, -0.43]))
        else:
            tip = pr.center - 0.6 * pr.e2
            base = pr.center + 0.1 * pr.e2
        pts[:, LANDMARK_INDEX[f"ear_{side}_tip"]] = tip
        pts[:, LANDMARK_INDEX[f"ear_{side}_base"]] = base
    fy = geo["brow_y"] - 0.12
    surf({"forehead": (zero, fy)})
    for prims, names_xy in requests.items():
        names = list(names_xy)
        xs = torch.stack([names_xy[n][0] for n in names], 1)
        ys = torch.stack([names_xy[n][1] for n in names], 1)
        zs = _face_front_z(scene, xs, ys, prims)
        idx = torch.tensor([LANDMARK_INDEX[n] for n in names])
        pts[:, idx] = torch.stack([xs, ys, zs], -1)
    return pts


def _project(pts: torch.Tensor, cam: _Cam) -> torch.Tensor:
    """Head-local [B,L,3] -> pixel-scaled camera [B,L,3] (x, y pixels, z depth)."""
    return torch.einsum("bij,blj->bli", cam.M_head, pts) + cam.origin[:, None, :]


def _visibility(pc: torch.Tensor, layers: _Layers, cam: _Cam, size: int) -> torch.Tensor:
    B, L, _ = pc.shape
    x, y = pc[..., 0], pc[..., 1]
    inside = (x >= -0.5) & (x <= size - 0.5) & (y >= -0.5) & (y <= size - 0.5)
    xi = x.round().long().clamp(0, size - 1)
    yi = y.round().long().clamp(0, size - 1)
    bi = torch.arange(B)[:, None].expand(B, L)
    # front-most depth in a 3x3 neighbourhood (robust to rounding at steep surfaces)
    zmax = torch.full((B, L), -_BIG)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            zz = layers.z1[bi, (yi + oy).clamp(0, size - 1), (xi + ox).clamp(0, size - 1)]
            zmax = torch.maximum(zmax, zz)
    zc = layers.z1[bi, yi, xi]
    tol = 0.06 * cam.ppu[:, None]
    vis = (pc[..., 2] <= zc + tol) | (pc[..., 2] <= zmax + 0.5 * tol)
    return inside & vis


# ------------------------------------------------------------------------------------------------ API

def _render_group(idents: Sequence[Identity], pose: torch.Tensor, expr: torch.Tensor, size: int,
                  parts: bool):
    domain = idents[0].domain
    P = _stack_params(idents)
    scene = _build_scene(domain, P, expr)
    cam = _camera(P, pose, size)
    layers = _raster(scene, cam, P, size)
    key = [id(i) for i in idents]
    img, mask, prt = _deferred(scene, layers, cam, P, expr, size, parts, key)
    pc = _project(_landmarks_3d(scene, P, expr), cam)
    vis = _visibility(pc, layers, cam, size)
    return img, pc[..., :2].contiguous(), vis, mask, prt


def render_batch(
    identities: Identity | Sequence[Identity],
    poses: Any = None,
    expressions: Any = None,
    size: int = 64,
    return_parts: bool = False,
    threads: int | None = 1,
) -> BatchRenderResult:
    """Render a batch. ``identities``: one Identity (shared) or a list of B (domains may be mixed: they are
    rendered in per-domain groups); ``poses``: HeadPose, list of HeadPose, tensor [6] or [B,6] (see
    POSE_FIELDS) or None (frontal); ``expressions``: Expression, list, tensor [7] or [B,7] (see
    EXPRESSION_FIELDS) or None (neutral). Returns images [B,H,W,3], landmarks [B,L,2], visible [B,L],
    mask [B,H,W] and, with ``return_parts``, soft part masks.

    ``threads``: torch intra-op threads while rendering (restored afterwards). The default 1 is fastest:
    the renderer runs many small element-wise ops where OpenMP start-up costs more than it saves (and a
    busy machine makes multi-threaded small ops very slow). None leaves the global setting alone.
    """
    if not isinstance(size, int) or size < 16 or size > 2048:
        raise ValueError(f"size must be an int in [16, 2048], got {size!r}")
    if isinstance(identities, Identity):
        idl: list[Identity] | None = None
        single = identities
    else:
        idl = list(identities)
        if not idl:
            raise ValueError("render_batch needs at least one identity")
        single = None
    nb = None if idl is None else len(idl)
    pose = pose_tensor(poses, nb)
    expr = expression_tensor(expressions, nb)
    if nb is None:
        nb = max(pose.shape[0], expr.shape[0])
        pose = pose.expand(nb, -1) if pose.shape[0] == 1 else pose
        expr = expr.expand(nb, -1) if expr.shape[0] == 1 else expr
        idl = [single] * nb  # type: ignore[list-item]
    if not (bool(torch.isfinite(pose).all()) and bool(torch.isfinite(expr).all())):
        raise ValueError("poses and expressions must be finite (got NaN or inf)")
    if bool((pose[:, 5] <= 0).any()):
        raise ValueError("pose scale must be > 0")
    if pose.shape[0] != nb or expr.shape[0] != nb:
        raise ValueError(f"batch sizes differ: {nb} identities, {pose.shape[0]} poses, {expr.shape[0]} expressions")
    for i in idl:
        if i.domain not in DOMAINS:
            raise ValueError(f"unknown domain {i.domain!r}")
    images = torch.empty(nb, size, size, 3)
    lms = torch.empty(nb, NUM_LANDMARKS, 2)
    vis = torch.empty(nb, NUM_LANDMARKS, dtype=torch.bool)
    mask = torch.empty(nb, size, size)
    parts = {k: torch.empty(nb, size, size) for k in _PART_NAMES} if return_parts else None
    # group by domain family and parameter key set (identities of one domain share keys)
    groups: dict[str, list[int]] = {}
    for j, ident in enumerate(idl):
        groups.setdefault(ident.domain, []).append(j)
    prev_threads = torch.get_num_threads()
    if threads is not None and threads != prev_threads:
        torch.set_num_threads(int(threads))
    try:
        _render_groups(groups, idl, pose, expr, size, return_parts, images, lms, vis, mask, parts)
    finally:
        if threads is not None and threads != prev_threads:
            torch.set_num_threads(prev_threads)
    return BatchRenderResult(images, lms, vis, mask, parts)


def _render_groups(groups, idl, pose, expr, size, return_parts, images, lms, vis, mask, parts) -> None:
    with torch.no_grad():
        for dom, idx in groups.items():
            ii = torch.tensor(idx)
            out = _render_group([idl[j] for j in idx], pose[ii].contiguous(), expr[ii].contiguous(), size,
                                return_parts)
            images[ii], lms[ii], vis[ii], mask[ii] = out[0], out[1], out[2], out[3]
            if parts is not None:
                for k in _PART_NAMES:
                    parts[k][ii] = out[4][k]


def render(
    identity: Identity,
    pose: HeadPose | torch.Tensor | None = None,
    expression: Expression | torch.Tensor | None = None,
    size: int = 256,
    return_parts: bool = False,
    threads: int | None = 1,
) -> RenderResult:
    """Render one frame of ``identity`` at ``pose`` / ``expression`` (defaults: frontal, neutral)."""
    return render_batch([identity], pose, expression, size, return_parts, threads)[0]


def _per_domain(identities, expressions, fn):
    idl = [identities] if isinstance(identities, Identity) else list(identities)
    expr = expression_tensor(expressions, len(idl))
    if expr.shape[0] != len(idl):
        raise ValueError(f"{len(idl)} identities but {expr.shape[0]} expressions")
    out = torch.empty(len(idl), NUM_LANDMARKS, 3)
    groups: dict[str, list[int]] = {}
    for j, ident in enumerate(idl):
        groups.setdefault(ident.domain, []).append(j)
    with torch.no_grad():
        for dom, idx in groups.items():
            ii = torch.tensor(idx)
            P = _stack_params([idl[j] for j in idx])
            out[ii] = fn(dom, P, expr[ii].contiguous(), ii)
    return out


def landmarks_3d(identities: Identity | Sequence[Identity], expressions: Any = None) -> torch.Tensor:
    """Landmarks in head-local coordinates (pose-free, with the expression applied): [B,L,3]
    (x right, y down, z into the screen; head units). A single Identity gives B = 1."""
    return _per_domain(identities, expressions, lambda dom, P, E, ii: _landmarks_3d(_build_scene(dom, P, E), P, E))


def landmarks_2d(identities: Identity | Sequence[Identity], poses: Any = None, expressions: Any = None,
                 size: int = 256) -> torch.Tensor:
    """Projected landmark pixels [B,L,2] without rendering (same values as ``render_batch``'s, no
    visibility). ``identities`` is one Identity or a list of B."""
    n = 1 if isinstance(identities, Identity) else len(list(identities))
    pose = pose_tensor(poses, n)

    def fn(dom, P, E, ii):
        cam = _camera(P, pose[ii], size)
        return _project(_landmarks_3d(_build_scene(dom, P, E), P, E), cam)

    return _per_domain(identities, expressions, fn)[..., :2].contiguous()
