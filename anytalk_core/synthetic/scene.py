"""Analytic head scenes: per-domain primitives (ellipsoids, plates) in head-local coordinates."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .params import Identity


BIG = 1.0e6


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


def stack_params(idents: Sequence[Identity]) -> dict[str, torch.Tensor]:
    keys = idents[0].params.keys()
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        out[k] = torch.tensor([i.params[k] for i in idents], dtype=torch.float32)
    out["sym"] = torch.tensor([1.0 if i.symmetric else 0.0 for i in idents])
    return out


def bhw(t: torch.Tensor) -> torch.Tensor:
    """[B] -> [B,1,1] for broadcasting over images."""
    return t.reshape(-1, 1, 1)



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
class Scene:
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


def _eyeballs(P: dict[str, torch.Tensor], center: torch.Tensor, axes: torch.Tensor, lid: torch.Tensor,
              prims: list[_Prim]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Append both eyeballs, set into the head ellipsoid (center, axes [B,3]), to ``prims``; their lids are coloured
    ``lid`` [B,3]. Returns the eye centres [B,3] and their yaw turns [B] (right eye first)."""
    B = center.shape[0]
    one, eye3 = torch.ones(B), torch.eye(3).expand(B, 3, 3)
    a, c = axes[:, 0], axes[:, 2]
    er = P["eye_r"]
    eyes, eye_rot = [], []
    for side, nm, k in ((-1.0, "eye_r", 1), (1.0, "eye_l", 2)):
        ex = side * P["eye_x"]
        zs = _ell_front_z_at(ex, P["eye_y"], center, axes)
        ez = zs + er * P["eye_inset"]
        ec = torch.stack([ex, P["eye_y"], ez], -1)
        eyes.append(ec)
        eye_rot.append(-0.7 * torch.atan2(ex / a ** 2, -zs / c ** 2))
        prims.append(_Prim("ell", "head", ec, lid, one, torch.stack([er, er, er], -1), eye3, eye=k,
                           glossy=0.0, name=nm))
    return eyes, eye_rot


def _human_scene(P: dict[str, torch.Tensor], E: torch.Tensor) -> Scene:
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
    eyes, eye_rot = _eyeballs(P, cranium_c, cranium_ax, skin, prims)
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
    return Scene("human", prims, g)


def _animal_scene(P: dict[str, torch.Tensor], E: torch.Tensor) -> Scene:
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
    eyes, eye_rot = _eyeballs(P, head_c, head_ax, fur, prims)
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
    return Scene("animal", prims, g)


def build_scene(domain: str, P: dict[str, torch.Tensor], E: torch.Tensor) -> Scene:
    return _animal_scene(P, E) if domain == "animal" else _human_scene(P, E)
