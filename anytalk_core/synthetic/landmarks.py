"""Analytic landmarks on the drawn surfaces, their projection and depth-tested visibility."""
from __future__ import annotations

from typing import Sequence

import torch

from .params import LANDMARK_INDEX, NUM_LANDMARKS
from .raster import Cam, Layers
from .scene import BIG, Scene


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
    return torch.where(disc >= 0, t, torch.full_like(t, BIG))




def _face_front_z(scene: Scene, x: torch.Tensor, y: torch.Tensor, names: Sequence[str] | None = None):
    """Front surface z in head-local coordinates over the face primitives at points (x, y) [B,L]."""
    best = torch.full_like(x, BIG)
    for p in scene.prims:
        if p.kind != "ell" or p.frame != "head" or not (p.face or p.contour) or p.eye:
            continue
        if names is not None and p.name not in names:
            continue
        t = _front_z_ellipsoid(x, y, p.center, p.axes, p.rot)
        t = torch.where(p.enabled[:, None] > 0, t, torch.full_like(t, BIG))
        best = torch.minimum(best, t)
    return torch.where(best >= BIG, torch.zeros_like(best), best)


def _half_width(scene: Scene, y: torch.Tensor) -> torch.Tensor:
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


def _eye_points(scene: Scene, P, E, side: float):
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


def head_landmarks(scene: Scene, P: dict[str, torch.Tensor], E: torch.Tensor) -> torch.Tensor:
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


def project(pts: torch.Tensor, cam: Cam) -> torch.Tensor:
    """Head-local [B,L,3] -> pixel-scaled camera [B,L,3] (x, y pixels, z depth)."""
    return torch.einsum("bij,blj->bli", cam.M_head, pts) + cam.origin[:, None, :]


def landmark_visibility(pc: torch.Tensor, layers: Layers, cam: Cam, size: int) -> torch.Tensor:
    B, L, _ = pc.shape
    x, y = pc[..., 0], pc[..., 1]
    inside = (x >= -0.5) & (x <= size - 0.5) & (y >= -0.5) & (y <= size - 0.5)
    xi = x.round().long().clamp(0, size - 1)
    yi = y.round().long().clamp(0, size - 1)
    bi = torch.arange(B)[:, None].expand(B, L)
    # front-most depth in a 3x3 neighbourhood (robust to rounding at steep surfaces)
    zmax = torch.full((B, L), -BIG)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            zz = layers.z1[bi, (yi + oy).clamp(0, size - 1), (xi + ox).clamp(0, size - 1)]
            zmax = torch.maximum(zmax, zz)
    zc = layers.z1[bi, yi, xi]
    tol = 0.06 * cam.ppu[:, None]
    vis = (pc[..., 2] <= zc + tol) | (pc[..., 2] <= zmax + 0.5 * tol)
    return inside & vis
