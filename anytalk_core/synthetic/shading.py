"""Deferred shading: background, skin texture and the facial-feature decals of each domain."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .raster import Cam, Layers
from .scene import Scene, bhw


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


def _union_box(layers: Layers, ks: Sequence[int]) -> tuple[int, int, int, int] | None:
    boxes = [layers.bbox[k] for k in ks if k in layers.bbox]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def _col(c: torch.Tensor) -> torch.Tensor:
    """[B,3] -> [B,3,1,1]."""
    return c.reshape(-1, 3, 1, 1)



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
    sym = bhw(P["sym"])
    xs = xn + (xn.abs() - xn) * sym
    ang = bhw(P["bg_angle"])
    t = (0.5 + 0.5 * (torch.cos(ang) * xs + torch.sin(ang) * yn)).clamp(0, 1)
    k, ph = P["bg_k"], P["bg_phase"]
    blot = sum(torch.sin(bhw(k[:, 2 * j]) * xs + bhw(k[:, 2 * j + 1]) * yn + bhw(ph[:, j])) for j in range(3)) / 3
    shade = (1 + bhw(P["bg_amp"]) * 2 * blot) * (1 - 0.18 * (xn * xn + yn * yn))
    bg = _col(P["bg0"]) + (_col(P["bg1"]) - _col(P["bg0"])) * t[:, None]
    return bg * shade[:, None]


def _texture(X: torch.Tensor, P: dict[str, torch.Tensor]) -> torch.Tensor:
    """Smooth 3-D noise-like pattern in [-1, 1] on head-local points X [B,3,H,W]."""
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    sym = bhw(P["sym"])
    xs = x + (x.abs() - x) * sym
    k, ph = P["tex_k"], P["tex_phase"]
    acc = 0
    for j in range(4):
        acc = acc + torch.sin(bhw(k[:, 3 * j]) * xs + bhw(k[:, 3 * j + 1]) * y + bhw(k[:, 3 * j + 2]) * z + bhw(ph[:, j]))
    return acc * 0.5


def _sd_ellipse(dx, dy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (negative inside), same units as dx."""
    qx, qy = dx / rx, dy / ry
    f = qx * qx + qy * qy - 1.0
    gx, gy = qx / rx, qy / ry
    return f / (2 * (gx * gx + gy * gy).sqrt() + 1e-6)


def _eye_decals(alb, X, ids, scene: Scene, P, E, pix_u, parts):
    """Sclera, iris, pupil, lids, lashes and catch-lights on the eyeballs (layer-1 pixels)."""
    ir = scene.index("eye_r")
    il = scene.index("eye_l")
    is_l = ids == il
    is_eye = (ids == ir) | is_l
    cr, cl = scene.geo["eye_c_r"], scene.geo["eye_c_l"]
    c = torch.where(is_l[:, None], _col(cl), _col(cr))
    side = torch.where(is_l, 1.0, -1.0)
    blink = torch.where(is_l, bhw(E[:, 2]), bhw(E[:, 3]))
    r = bhw(P["eye_r"])
    U = (X - c) / r[:, None]
    hx_, uy, hz_ = U[:, 0], U[:, 1], U[:, 2]
    th = torch.where(is_l, bhw(scene.geo["eye_rot_l"]), bhw(scene.geo["eye_rot_r"]))
    ct, st = torch.cos(th), torch.sin(th)
    ux = ct * hx_ - st * hz_               # lid frame: R_y(theta)^T u
    uz = st * hx_ + ct * hz_
    pix = pix_u * r                      # pixels per eyeball unit
    Wd, Hu, Hl = bhw(P["eye_w"]), bhw(P["eye_hu"]), bhw(P["eye_hl"])
    yc = -bhw(P["eye_tilt"]) * ux * side
    shape = (1 - (ux / Wd) ** 2).clamp(min=0).sqrt()
    y_bot = yc + Hl * shape
    y_top = y_bot - (Hu + Hl) * (1 - blink) * shape
    front = (uz < 0.1).float()
    opn = _band(uy - 0.5 * (y_top + y_bot), 0.5 * (y_bot - y_top), pix) * front * is_eye.float()
    gz = torch.stack([0.4 * E[:, 5], 0.3 * E[:, 6], -torch.ones_like(E[:, 5])], -1)
    gz = gz / gz.norm(dim=-1, keepdim=True)
    gx, gy = bhw(gz[:, 0]), bhw(gz[:, 1])
    ddx, ddy = hx_ - gx, uy - gy
    rr = (ddx * ddx + ddy * ddy).sqrt()
    ri = bhw(P["iris_r"])
    iris_w = _cov(rr - ri, pix) * opn
    asp = bhw(P["pupil_aspect"]) if "pupil_aspect" in P else torch.ones_like(ri)
    rp = bhw(P["pupil_r"])
    sd_p = _sd_ellipse(ddx, ddy, rp * asp, rp)
    pupil_w = _cov(sd_p, pix) * opn
    sclera = torch.tensor([0.93, 0.91, 0.88]).reshape(1, 3, 1, 1)
    iris_col = _col(P["iris"]) * (1.25 - 0.55 * (rr / ri).clamp(0, 1) ** 2)[:, None]
    out = _lerp(alb, sclera.expand_as(alb), opn)
    out = _lerp(out, iris_col, iris_w)
    out = _lerp(out, torch.tensor([0.02, 0.015, 0.015]).reshape(1, 3, 1, 1).expand_as(alb), pupil_w)
    hx = 0.45 * bhw(P["light"][:, 0]) * ri          # catch-light towards the light, mirrored with it
    hl = _cov(((ddx - hx) ** 2 + (ddy + 0.5 * ri) ** 2).sqrt() - 0.17 * ri, pix) * opn * bhw(P["highlight"])
    out = _lerp(out, torch.ones_like(alb), hl)
    lash = bhw(P["lash"])
    sd_lash = torch.maximum((uy - (y_top - lash * 0.5)).abs() - lash * 0.5, ux.abs() - Wd * 1.04)
    lash_w = _cov(sd_lash, pix) * front * is_eye.float()
    low = _cov(torch.maximum((uy - y_bot - lash * 0.12).abs() - lash * 0.12, ux.abs() - Wd * 0.9), pix) * front
    lash_w = torch.maximum(lash_w, 0.5 * low * is_eye.float())
    out = _lerp(out, torch.tensor([0.05, 0.035, 0.03]).reshape(1, 3, 1, 1).expand_as(alb), lash_w)
    parts["iris"] = iris_w * (1 - lash_w)
    parts["spec_mask"] = torch.where(is_eye, opn * (1 - lash_w), torch.ones_like(opn))
    parts["eye_open"] = opn * (1 - lash_w)
    return out


def _human_face_decals(alb, X, ids, scene: Scene, P, E, pix_u, parts):
    geo = scene.geo
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    ax = x.abs()
    icr, ijaw, inose = scene.index("cranium"), scene.index("jaw"), scene.index("nose")
    is_face = ((ids == icr) | (ids == ijaw) | (ids == inose)).float()
    front = (-z * 6).clamp(0, 1) * is_face
    pix = pix_u
    smile = bhw(E[:, 1])
    # blush
    bl = torch.exp(-(((ax - 0.42) ** 2) + (y - (0.33 - 0.04 * smile)) ** 2) / (2 * 0.1 ** 2))
    alb = _lerp(alb, torch.tensor([0.85, 0.35, 0.35]).reshape(1, 3, 1, 1).expand_as(alb), bl * bhw(P["blush"]) * front)
    # eye sockets: slightly darker skin around the eyes
    ex, ey, er = bhw(P["eye_x"]), bhw(P["eye_y"]), bhw(P["eye_r"])
    so = torch.exp(-(((ax - ex) / (er * 1.7)) ** 2 + ((y - ey + 0.02) / (er * 1.5)) ** 2))
    alb = alb * (1 - 0.18 * so * front)[:, None]
    # shadow under the nose
    nb = bhw(geo["nose_bottom"])
    sh = torch.exp(-((x / 0.09) ** 2 + ((y - nb - 0.02) / 0.025) ** 2)) * (ids != inose).float() * front
    alb = alb * (1 - 0.2 * sh)[:, None]
    # beard / stubble
    my = bhw(geo["mouth_y"])
    beard = ((y - nb - 0.02) * 12).clamp(0, 1) * ((0.95 - ax / 0.7) * 4).clamp(0, 1) * front * bhw(P["beard"])
    alb = _lerp(alb, (_col(P["hair"]) * 0.9).expand_as(alb), beard * (0.6 + 0.4 * _texture(X * 3, P).clamp(-1, 1)))
    # hair on the cranium
    th = torch.atan2(ax, -z)
    t1 = (th / (math.pi / 2)).clamp(0, 1)
    t2 = ((th - math.pi / 2) / (math.pi / 2)).clamp(0, 1)
    hl = bhw(geo["hairline"]) + 0.15 * ax * ax + 0.03 * torch.cos(ax * 23) * (bhw(P["fringe"]) > 0).float()
    hl = hl + bhw(P["hair_part"]) * x + (0.05 - hl) * t1 ** 1.6 + 0.5 * t2
    sd_h = y - hl
    hair_w = _cov(sd_h, pix * 0.6) * (ids == icr).float() * bhw(P["hair_amount"])
    xs = x + (ax - x) * bhw(P["sym"])
    hair_col = _col(P["hair"]) * (1 + 0.12 * torch.sin(55 * xs + 4 * torch.sin(7 * y)) * bhw(_fine(pix_u, 0.11)))[:, None]
    alb = _lerp(alb, hair_col, hair_w)
    # brows
    t = (ax - bhw(geo["brow_xm"])) / bhw(P["brow_len"])
    yb = bhw(geo["brow_y"]) - bhw(P["brow_arch"]) * (1 - t * t).clamp(min=0) + bhw(geo["brow_frown"]) * (1 - t) * 0.5
    thick = bhw(P["brow_th"]) * (1 - 0.45 * t.clamp(min=0)) * 0.5
    sd_b = torch.maximum((y - yb).abs() - thick, (t.abs() - 1) * bhw(P["brow_len"]))
    brow_w = _cov(sd_b, pix) * front
    alb = _lerp(alb, _col(P["brow_col"]).expand_as(alb), brow_w * 0.92)
    # nostrils (on the nose)
    nw = bhw(geo["nose_w"])
    sd_n = _sd_ellipse(ax - nw * 0.45, y - (nb - 0.035), nw * 0.32, torch.full_like(nw, 0.018))
    nos_w = _cov(sd_n, pix) * (ids == inose).float()
    alb = _lerp(alb, alb * 0.25, nos_w)
    # mouth: lips, interior, teeth, tongue
    w = bhw(geo["mouth_w"])
    mx = ax / w
    sq = (1 - mx * mx).clamp(min=0).sqrt()
    yc = my - bhw(geo["smile_k"]) * mx * mx
    hu = bhw(geo["mouth_hu"]) * sq
    hd = bhw(geo["mouth_hd"]) * sq
    tu = bhw(P["lip_u"]) * (0.3 + 0.7 * sq)
    tl = bhw(P["lip_l"]) * (0.3 + 0.7 * sq)
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


def _glasses(alb, X, ids, scene: Scene, P, pix_u):
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    ax = x.abs()
    recv = torch.zeros_like(x)
    for nm in ("cranium", "jaw", "nose", "eye_r", "eye_l"):
        recv = recv + (ids == scene.index(nm)).float()
    front = (-z * 5).clamp(0, 1) * recv * bhw(P["glasses"])
    ex, ey, er = bhw(P["eye_x"]), bhw(P["eye_y"]), bhw(P["eye_r"])
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


def _animal_face_decals(alb, X, ids, scene: Scene, P, E, pix_u, parts):
    geo = scene.geo
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    ax = x.abs()
    ih, isn, ich, ino = (scene.index(n) for n in ("head", "snout", "chin", "nose"))
    is_head = (ids == ih).float()
    recv = is_head + (ids == isn).float() + (ids == ich).float() + (ids == ino).float()
    recv = recv + (ids == scene.index("cheek_r")).float() + (ids == scene.index("cheek_l")).float()
    front = (-z * 6).clamp(0, 1) * recv
    pix = pix_u
    ex, ey, er = bhw(P["eye_x"]), bhw(P["eye_y"]), bhw(P["eye_r"])
    # stripes on the forehead / crown and on the sides
    s = torch.sin(bhw(P["stripe_freq"]) * (y + 0.12 * torch.cos(5 * x)) + 3 * ax)
    region = ((-(y - ey + er * 1.2)) * 5).clamp(0, 1) * (1 - _cov(_sd_ellipse(ax - ex, y - ey, er * 1.6, er * 1.6), pix))
    region = torch.maximum(region, ((ax - 0.55) * 5).clamp(0, 1))
    st = ((s - 0.35) * 4).clamp(0, 1) * region * is_head * bhw(P["stripes"]) * 2
    alb = _lerp(alb, _col(P["stripe_col"]).expand_as(alb), st.clamp(0, 1))
    # eye patches
    pw = _cov(_sd_ellipse(ax - ex, y - ey + 0.02, er * 1.55, er * 1.4), pix * 0.5) * is_head * bhw(P["eye_patch"])
    alb = _lerp(alb, _col(P["patch_col"]).expand_as(alb), pw * front)
    # blush
    bw = torch.exp(-(((ax - ex - 0.06) / 0.11) ** 2 + ((y - ey - er - 0.16) / 0.065) ** 2)) * bhw(P["blush"])
    alb = _lerp(alb, torch.tensor([0.98, 0.5, 0.55]).reshape(1, 3, 1, 1).expand_as(alb), bw * front * 0.8)
    # brow marks: tilted ellipses (inner end up for brow_raise > 0)
    bx = ax - bhw(geo["brow_x"])
    by = y - bhw(geo["brow_y"])
    ang = bhw(geo["brow_tilt"])
    ca, sa = torch.cos(ang), torch.sin(ang)
    u_ = ca * bx - sa * by
    v_ = sa * bx + ca * by
    brow_w = _cov(_sd_ellipse(u_, v_, bhw(P["brow_len"]), bhw(P["brow_th"]) * 0.5), pix) * front * is_head
    alb = _lerp(alb, _col(P["brow_col"]).expand_as(alb), brow_w)
    # nostrils on the nose
    nc, nax = geo["nose_c"], geo["nose_ax"]
    nw, nh = bhw(nax[:, 0]), bhw(nax[:, 1])
    nos = (_cov(_sd_ellipse(ax - nw * 0.45, y - bhw(nc[:, 1]) - nh * 0.3, nw * 0.24, nh * 0.26), pix)
           * (ids == ino).float())
    alb = _lerp(alb, alb * 0.3, nos)
    # mouth: philtrum line, omega-shaped mouth line, opening with tongue
    my, w, op = bhw(geo["mouth_y"]), bhw(geo["mouth_w"]), bhw(geo["mouth_open"])
    lw = 0.008
    t = (2 * ax / w - 1)
    yline = my + 0.035 * (1 - t * t).clamp(min=0) - bhw(geo["smile_k"]) * (ax / w) ** 2
    in_w = _cov(_sd_ellipse(x, y - my - op * 0.5, w * 0.7, op * 0.5 + 1e-4), pix) * front * (op > 0.004).float()
    tongue = _cov(_sd_ellipse(x, y - my - op * 0.85, w * 0.4, op * 0.3 + 1e-4), pix)
    inner = _lerp(torch.tensor([0.25, 0.05, 0.07]).reshape(1, 3, 1, 1).expand_as(alb),
                  torch.tensor([0.88, 0.4, 0.45]).reshape(1, 3, 1, 1).expand_as(alb), tongue)
    alb = _lerp(alb, inner, in_w)
    line = torch.maximum((y - yline).abs() - lw, ax - w)
    phil = torch.maximum(ax - lw * 0.8, torch.maximum(bhw(geo["nose_bottom"]) - 0.01 - y, y - my))
    line_w = _cov(torch.minimum(line, phil), pix) * front
    alb = _lerp(alb, torch.tensor([0.12, 0.07, 0.07]).reshape(1, 3, 1, 1).expand_as(alb), line_w)
    # whiskers
    wk = torch.zeros_like(x)
    for j in range(3):
        yl = my - 0.05 + 0.045 * j + (j - 1) * 0.25 * (ax - 0.16)
        wk = torch.maximum(wk, _cov(torch.maximum((y - yl).abs() - 0.006, (ax - 0.36).abs() - 0.18), pix))
    wk = wk * front * bhw(P["whiskers"]) * (ids != ino).float()
    alb = _lerp(alb, _col(P["whisker_col"]).expand_as(alb), wk)
    parts["mouth"] = in_w
    return alb


def deferred_shade(scene: Scene, layers: Layers, cam: Cam, P, E, size: int, parts_out: bool, bg_key=None):
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
    pix_u = bhw(cam.ppu)
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
    xs = X[:, 0] + (X[:, 0].abs() - X[:, 0]) * bhw(P["sym"])
    fur = torch.sin(37 * xs + 29 * X[:, 1] + 4 * tx) * bhw(_fine(cam.ppu, 0.17)) if scene.family == "animal" else 0
    mult = 1 + bhw(P["tex_amp"]) * (2 * tx + fur) * ws
    strands = torch.sin(60 * xs + 5 * torch.sin(6 * X[:, 1]) + 2 * tx) * bhw(_fine(cam.ppu, 0.105))
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
