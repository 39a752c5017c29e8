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
pure torch, float32, deterministic. This module is the public API; the stages live in :mod:`.scene`
(primitives), :mod:`.raster` (camera, fragment buffer), :mod:`.shading` (decals) and :mod:`.landmarks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .landmarks import head_landmarks, project, landmark_visibility
from .params import (
    DOMAINS,
    NUM_LANDMARKS,
    Expression,
    HeadPose,
    Identity,
    expression_tensor,
    pose_tensor,
)
from .raster import make_camera, rasterise
from .scene import build_scene, stack_params
from .shading import deferred_shade

__all__ = ["RenderResult", "BatchRenderResult", "render", "render_batch", "landmarks_3d", "landmarks_2d"]

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



def _render_group(idents: Sequence[Identity], pose: torch.Tensor, expr: torch.Tensor, size: int,
                  parts: bool):
    domain = idents[0].domain
    P = stack_params(idents)
    scene = build_scene(domain, P, expr)
    cam = make_camera(P, pose, size)
    layers = rasterise(scene, cam, P, size)
    key = [id(i) for i in idents]
    img, mask, prt = deferred_shade(scene, layers, cam, P, expr, size, parts, key)
    pc = project(head_landmarks(scene, P, expr), cam)
    vis = landmark_visibility(pc, layers, cam, size)
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
            P = stack_params([idl[j] for j in idx])
            out[ii] = fn(dom, P, expr[ii].contiguous(), ii)
    return out


def landmarks_3d(identities: Identity | Sequence[Identity], expressions: Any = None) -> torch.Tensor:
    """Landmarks in head-local coordinates (pose-free, with the expression applied): [B,L,3]
    (x right, y down, z into the screen; head units). A single Identity gives B = 1."""
    return _per_domain(identities, expressions, lambda dom, P, E, ii: head_landmarks(build_scene(dom, P, E), P, E))


def landmarks_2d(identities: Identity | Sequence[Identity], poses: Any = None, expressions: Any = None,
                 size: int = 256) -> torch.Tensor:
    """Projected landmark pixels [B,L,2] without rendering (same values as ``render_batch``'s, no
    visibility). ``identities`` is one Identity or a list of B."""
    n = 1 if isinstance(identities, Identity) else len(list(identities))
    pose = pose_tensor(poses, n)

    def fn(dom, P, E, ii):
        cam = make_camera(P, pose[ii], size)
        return project(head_landmarks(build_scene(dom, P, E), P, E), cam)

    return _per_domain(identities, expressions, fn)[..., :2].contiguous()
