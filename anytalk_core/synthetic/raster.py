"""Orthographic ray-cast rasteriser: camera, per-primitive coverage and shade, two-deep fragment buffer."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..geometry import euler_to_rotation_matrix
from .scene import BIG, Scene, bhw


class Layers:
    """Two-deep fragment buffer. Layer 1 channels: z, alpha, primitive id, shade, aux, specular, X (3,
    head-local surface point for decals); layer 2 keeps the first five."""

    def __init__(self, B: int, H: int, W: int):
        self.L1 = torch.zeros(B, 9, H, W)
        self.L1[:, 0] = BIG
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
        z = torch.where(a > 0.002, z, BIG)
        F = torch.cat([z[:, None], a[:, None], torch.full_like(a, float(k))[:, None], sh[:, None], aux[:, None],
                       sp[:, None], X], 1)
        L1 = self.L1[:, :, y0:y1, x0:x1]
        L2 = self.L2[:, :, y0:y1, x0:x1]
        front = (z < L1[:, 0])[:, None]
        second = (z < L2[:, 0])[:, None]
        self.L2[:, :, y0:y1, x0:x1] = torch.where(front, L1[:, :5], torch.where(second, F[:, :5], L2))
        self.L1[:, :, y0:y1, x0:x1] = torch.where(front, F, L1)


@dataclass
class Cam:
    M_head: torch.Tensor    # [B,3,3] head-local -> pixel-scaled camera
    M_body: torch.Tensor    # [B,3,3]
    origin: torch.Tensor    # [B,3] pixel position of the head origin (z = 0)
    ppu: torch.Tensor       # [B] pixels per head-local unit
    R: torch.Tensor         # [B,3,3]


def make_camera(P: dict[str, torch.Tensor], pose: torch.Tensor, size: int) -> Cam:
    yaw, pitch, roll, tx, ty, sc = pose.unbind(-1)
    R = euler_to_rotation_matrix(yaw, pitch, roll, order="xyz").to(torch.float32)
    ppu = size / 2.0 * P["s_norm"] * sc
    ox = (1.0 + P["tx0"] + tx) * size / 2.0 - 0.5
    oy = (1.0 + P["ty0"] + ty) * size / 2.0 - 0.5
    origin = torch.stack([ox, oy, torch.zeros_like(ox)], -1)
    eye3 = torch.eye(3).expand_as(R)
    return Cam(R * ppu[:, None, None], eye3 * ppu[:, None, None], origin, ppu, R)


def _shade(n: torch.Tensor, P: dict[str, torch.Tensor], glossy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n [B,3,h,w] unit camera normals -> shade, specular [B,h,w]."""
    L = P["light"]
    ndl = (n * L[:, :, None, None]).sum(1)
    w = bhw(P["wrap"])
    diff = ((ndl + w) / (1 + w)).clamp(min=0.0)
    facing = (-n[:, 2]).clamp(0.0, 1.0)
    sh = bhw(P["ambient"]) * (0.75 + 0.25 * facing) + bhw(P["diffuse"]) * diff + bhw(P["rim"]) * (1 - facing) ** 3
    if glossy > 0:
        H = L + torch.tensor([0.0, 0.0, -1.0])
        H = H / H.norm(dim=-1, keepdim=True)
        ndh = (n * H[:, :, None, None]).sum(1).clamp(min=0.0)
        sp = bhw(P["spec"]) * glossy * ndh.pow(48.0)
    else:
        sp = torch.zeros_like(sh)
    return sh, sp


def rasterise(scene: Scene, cam: Cam, P: dict[str, torch.Tensor], size: int) -> Layers:
    B = cam.ppu.shape[0]
    H = W = size
    layers = Layers(B, H, W)
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
            alpha = (0.5 + g / grad).clamp(0.0, 1.0) * bhw(pr.enabled)
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
            A = bhw(j00) * dx[:, None, :] + bhw(j01) * dy[:, :, None]
            Bc = bhw(j10) * dx[:, None, :] + bhw(j11) * dy[:, :, None]
            z = bhw(ok[:, 2]) + A * bhw(Me1[:, 2]) + Bc * bhw(Me2[:, 2])

            def tri_sd(a_, b_, scale):
                out = None
                for na, nb, off in ((2.0, -1.0, 1.0), (-2.0, -1.0, 1.0), (0.0, 1.0, 1.0)):
                    l = math.hypot(na, nb)
                    na_, nb_ = na / l, nb / l
                    e = (na_ * a_ + nb_ * b_) - off / l
                    gn = ((j00 * na_ + j10 * nb_) ** 2 + (j01 * na_ + j11 * nb_) ** 2).sqrt() / scale
                    sd = e / bhw(gn)
                    out = sd if out is None else torch.maximum(out, sd)
                return out

            def disc_sd(a_, b_, scale):
                f = a_ * a_ + b_ * b_ - 1.0
                gxp = bhw(j00) * 2 * a_ + bhw(j10) * 2 * b_
                gyp = bhw(j01) * 2 * a_ + bhw(j11) * 2 * b_
                return f / ((gxp * gxp + gyp * gyp).sqrt() / scale + 1e-9)

            pt = bhw(pr.pointed) > 0.5
            sd = torch.where(pt, tri_sd(A, Bc, 1.0), disc_sd(A, Bc, 1.0))
            cr = torch.cross(Me1, Me2, dim=-1)
            nrm = cr / cr.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            edge_fade = (nrm[:, 2].abs() / 0.2).clamp(0.0, 1.0)
            alpha = (0.5 - sd).clamp(0.0, 1.0) * bhw(pr.enabled * edge_fade)
            si = 0.62
            Ai, Bi = A / si, 0.5 + (Bc - 0.5) / si
            sdi = torch.where(pt, tri_sd(Ai, Bi, si), disc_sd(Ai, Bi, si))
            facing = (cr[:, 2] > 0).float()
            aux = (0.5 - sdi).clamp(0.0, 1.0) * bhw(facing)
            nf = nrm * torch.where(nrm[:, 2:3] > 0, -1.0, 1.0)
            e1n = Me1 / Me1.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            n = nf[:, :, None, None] + 0.45 * A[:, None] * e1n[:, :, None, None]
            n = n * torch.rsqrt((n * n).sum(1, keepdim=True).clamp(min=1e-18))
            X = pr.center[:, :, None, None] + A[:, None] * pr.e1[:, :, None, None] + Bc[:, None] * pr.e2[:, :, None, None]
        sh, sp = _shade(n, P, pr.glossy)
        layers.bbox[k] = (y0, y1, x0, x1)
        layers.insert(y0, y1, x0, x1, k, z, alpha, X, sh, sp, aux)
    return layers
