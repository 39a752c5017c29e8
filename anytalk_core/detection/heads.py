"""The head detector for animals, cartoons and CG faces: a small CNN trained only on synthetic renders.

It finds one head in a picture of any size and reads its face frame (centre, face size, roll) and four
points (the two eyes, the nose tip, the mouth centre), in the conventions of
:func:`anytalk_core.detection.framing.face_frame`. No download: the weights (:data:`HEAD_DETECTOR_PATH`,
float32 safetensors, < 1 MB) ship inside the package; ``python -m anytalk_core.detection.train_heads``
remakes them (see that module for the data and the report stored in the file's metadata).

How it works (MTCNN's O-Net idea, one network): :class:`HeadNet` looks at a 48 x 48 window and says
whether a face of about :data:`NOMINAL_FACE` (22) pixels sits at its centre, and where exactly (centre
offset, log size ratio, four points). Made of valid convolutions and poolings, it runs fully
convolutionally over an image pyramid (one output cell per 8 pixels), so faces of any size between
:data:`MIN_FACE` pixels and the whole picture are found; the best cell is then refined twice on a window
cut at the found centre, size and roll.

Shipped weights (80,508 parameters, 0.33 MB): four stages, one thread each --
``train_heads --minutes 22 --pool 5000`` (seed 0: 1,133 steps of 192 windows on a busy shared machine), then
``--minutes 5 --pool 2000 --seed 1 --lr 1e-3 --init <stage 1>`` (197 steps; negatives now include faces
up to 8 x too large, i.e. a face's parts), then ``--minutes 45 --pool 4000 --seed 2 --lr 1e-3 --init
<stage 2>`` (14,741 steps on an idle AVX-512 core; windows now include faces cut by a photo's edge and
fur-like texture), then ``--minutes 12 --pool 4000 --seed 3 --lr 5e-4 --init <stage 3>`` (3,337 steps;
featureless head silhouettes become negatives: stage 3 had called a plain ellipse with ears a face). On
held-out windows of the final data (``validate(net, 3)``): recall 0.99 (stage 2: 0.95), false positives
1.4 % (5.8 %), centre error 1.5 px (2.4) and size error 8 % (13 %) at a 22 px face, before refinement.
On whole pictures (:mod:`.evaluate`, 24 per seed, seeds 1 / 5 / 9) it meets the centre-10 % / size-15 %
bar on every human and CG render, on 96-100 % of animal renders (stage 2: 88-92 %), and on only 8-21 %
of the real cat photo's placements (stage 2: 0-8 %): on the cat it often prefers a spoon or cup of the
clutter, and where it finds the cat its size reading is off by 20-50 % -- synthetic fur does not teach
real fur.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..safetensors_io import meta_json, read_tagged

__all__ = [
    "HEAD_DETECTOR_PATH", "HEAD_DETECTOR_FORMAT", "WINDOW", "NOMINAL_FACE", "STRIDE", "MIN_FACE",
    "HeadNet", "HeadDetection", "load_head_detector", "detect_heads", "HeadDetectorError",
]

HEAD_DETECTOR_PATH = Path(__file__).resolve().parent / "head_detector.safetensors"
HEAD_DETECTOR_FORMAT = "anytalk.head_detector"
WINDOW = 48
NOMINAL_FACE = 22.0
STRIDE = 8
MIN_FACE = 20.0
NUM_POINTS = 4  # eye (image left when upright), eye (image right), nose tip, mouth centre
PYRAMID_STEP = 0.8
CLOSE_LOGIT = 2.0  # pyramid levels within this logit of the best compete on size
MAX_CANDIDATES = 4


class HeadDetectorError(ValueError):
    """The head detector weights are missing or unreadable; the message says how to remake them."""


class HeadNet(nn.Module):
    """Windows (B, 3, 48, 48) in 0..1 -> raw outputs (B, 12, 1, 1); on a larger image (B, 3, H, W) ->
    (B, 12, (H - 40) // 8, (W - 40) // 8) maps: cell (i, j) reads the window with top-left (8 j, 8 i).

    Channels: 0 face logit; 1, 2 face-centre offset from the window centre / 48; 3 log(face size / 22);
    4..11 the four points' offsets from the window centre / 48 (x, y pairs).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = int(width)
        self.width = w

        def block(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(3, w), nn.MaxPool2d(2),            # 48 -> 46 -> 23
            *block(w, 2 * w), nn.MaxPool2d(2),        # 23 -> 21 -> 10
            *block(2 * w, 3 * w), nn.MaxPool2d(2),    # 10 -> 8 -> 4
            *block(3 * w, 5 * w),                     # 4 -> 2
            *block(5 * w, 5 * w, 2),                  # 2 -> 1
        )
        self.head = nn.Conv2d(5 * w, 4 + 2 * NUM_POINTS, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images * 2 - 1))


@dataclass
class HeadDetection:
    """One detected face: centre (2,) px, face size px, roll angle degrees, points (4, 2) px, score 0..1."""

    center: torch.Tensor
    size: float
    angle: float
    points: torch.Tensor
    score: float


def load_head_detector(path: str | os.PathLike | None = None) -> HeadNet:
    """The shipped (or a given) head detector, in eval mode on the CPU."""
    p = Path(path) if path is not None else HEAD_DETECTOR_PATH
    what, how = "head detector file", f"remake it with: python -m anytalk_core.detection.train_heads --out {p}"
    state, meta = read_tagged(p, HEAD_DETECTOR_FORMAT, what, error=HeadDetectorError, hint=how)
    cfg = meta_json(meta, "config", p, what, HeadDetectorError, default={}, hint=how)
    net = HeadNet(int(cfg.get("width", 16)))
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise HeadDetectorError(f"{p}: weights do not fit the network ({str(exc)[:200]}); {how}") from None
    net.report = meta_json(meta, "report", p, what, HeadDetectorError, default={}, hint=how)
    return net.eval()


def decode(raw: torch.Tensor, origin: torch.Tensor, scale: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """Raw outputs (N, 12) of windows whose top-left corners are ``origin`` (N, 2) at pyramid ``scale``
    (resized px per original px) -> centre (N, 2), size (N,), points (N, 4, 2) in original px, score (N,)."""
    c = WINDOW / 2 - 0.5
    centre = origin + c + raw[:, 1:3] * WINDOW
    points = origin[:, None] + c + raw[:, 4:].reshape(-1, NUM_POINTS, 2) * WINDOW
    size = NOMINAL_FACE * torch.exp(raw[:, 3].clamp(-3, 3))
    scale = torch.as_tensor(scale, dtype=raw.dtype).reshape(-1, 1)
    # pixel centres between resolutions: x = (x_level + 1/2) / scale - 1/2
    return {
        "center": (centre + 0.5) / scale - 0.5,
        "size": size / scale[:, 0],
        "points": (points + 0.5) / scale[:, :, None] - 0.5,
        "score": torch.sigmoid(raw[:, 0]),
    }


def _angle_from_points(points: torch.Tensor) -> torch.Tensor:
    """Roll (N,) degrees from points (N, 4, 2): the direction of ux, the eye-mid -> mouth axis turned."""
    uy = points[:, 3] - points[:, :2].mean(dim=1)
    return torch.rad2deg(torch.atan2(-uy[:, 0], uy[:, 1]))


def _windows(image: torch.Tensor, center: torch.Tensor, size: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut 48 px windows (N, 3, 48, 48) from image (1, 3, H, W) where a face of ``size`` at ``center``,
    rolled by ``angle``, becomes upright and 22 px; returns them and the (N, 2, 3) window matrices."""
    import kornia.geometry.transform as KT

    n = center.shape[0]
    k = (NOMINAL_FACE / size).to(torch.float64)
    m = KT.get_rotation_matrix2d(center.to(torch.float64), angle.to(torch.float64), torch.stack([k, k], 1))
    m[:, :, 2] += (WINDOW - 1) / 2 - center.to(torch.float64)
    outs = []
    for i in range(n):
        src, mi = image, m[i : i + 1].clone()
        f = min(1.0, 2 * float(k[i]))
        if f < 1.0:  # reduce with antialiasing first: bilinear sampling alone would alias
            hw = (max(1, round(image.shape[-2] * f)), max(1, round(image.shape[-1] * f)))
            src = F.interpolate(image, size=hw, mode="bilinear", align_corners=False, antialias=True)
            fy, fx = hw[0] / image.shape[-2], hw[1] / image.shape[-1]
            # x_orig = (x_small + 1/2) / f - 1/2 on each axis
            a = mi[:, :, :2].clone()
            mi[:, :, 0], mi[:, :, 1] = a[:, :, 0] / fx, a[:, :, 1] / fy
            mi[:, :, 2] += a[:, :, 0] * (0.5 / fx - 0.5) + a[:, :, 1] * (0.5 / fy - 0.5)
        outs.append(KT.warp_affine(src, mi.to(image.dtype), (WINDOW, WINDOW), mode="bilinear",
                                   padding_mode="border", align_corners=True))
    return torch.cat(outs), m


# Test-time views of a refining window: (mirrored, scale factor); their readings are averaged.
_VIEWS = ((False, 1.0), (True, 1.0), (False, 0.9), (True, 0.9), (False, 1.1), (True, 1.1))


def _refine(net: HeadNet, img: torch.Tensor, det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One refining step: read the face again on windows cut at the current estimate (upright at the
    current roll, mirrored and rescaled views averaged) and map the readings back to the image."""
    import kornia.geometry.transform as KT

    angle = _angle_from_points(det["points"])
    n = len(_VIEWS)
    sizes = det["size"].repeat(n) * torch.tensor([v[1] for v in _VIEWS])
    win, m = _windows(img, det["center"].repeat(n, 1), sizes, angle.repeat(n))
    mirror = torch.tensor([v[0] for v in _VIEWS])
    win = torch.where(mirror.view(-1, 1, 1, 1), win.flip(-1), win)
    flip = torch.tensor([[-1.0, 0.0, WINDOW - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    m3 = torch.cat([m, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(n, -1, -1)], dim=1)
    m3 = torch.where(mirror.view(-1, 1, 1), flip @ m3, m3)
    inv = KT.invert_affine_transform(m3[:, :2]).to(torch.float32)  # window px -> image px
    d = decode(net(win)[:, :, 0, 0], torch.zeros(n, 2), 1.0)
    pts = torch.cat([d["center"][:, None], d["points"]], dim=1)  # (n, 5, 2)
    mapped = pts @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    # a mirrored view's first eye is the image's second
    swapped = mapped[:, [0, 2, 1, 3, 4]]
    mapped = torch.where(mirror.view(-1, 1, 1), swapped, mapped)
    scale_back = torch.linalg.det(inv[:, :, :2]).abs().sqrt()
    size = torch.exp(torch.log(d["size"] * scale_back).mean())
    mean = mapped.mean(0)
    return {"center": mean[:1], "size": size.view(1), "points": mean[None, 1:], "score": d["score"].mean().view(1)}


@torch.no_grad()
def detect_heads(
    net: HeadNet, image: torch.Tensor, min_face: float = MIN_FACE, refine: int = 3, threshold: float = 0.5
) -> list[HeadDetection | None]:
    """The most face-like head of each image (B, 3, H, W) in 0..1, or None where no window scores above
    ``threshold``. Sizes and points are in the image's pixels (pixel centres at integers); the score is
    the refined window's."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"detect_heads takes images (B, 3, H, W), got {tuple(image.shape)}")
    results: list[HeadDetection | None] = []
    for b in range(image.shape[0]):
        img = image[b : b + 1].float().clamp(0, 1)
        h, w = img.shape[-2:]
        candidates = []  # the best window of every pyramid level: (logit, decoded)
        k = NOMINAL_FACE / max(min_face, 1.0)
        k_min = NOMINAL_FACE / (1.25 * max(h, w))
        pad = WINDOW // 2
        while k >= k_min:
            hh, ww = max(1, round(h * k)), max(1, round(w * k))
            level = F.interpolate(img, size=(hh, ww), mode="bilinear", align_corners=False,
                                  antialias=k < 1) if (hh, ww) != (h, w) else img
            level = F.pad(level, (pad, pad, pad, pad), mode="replicate")
            raw = net(level)[0]  # (12, gh, gw)
            score = raw[0]
            flat = int(torch.argmax(score))
            gi, gj = divmod(flat, score.shape[1])
            origin = torch.tensor([[gj * STRIDE - pad, gi * STRIDE - pad]], dtype=torch.float32)
            # the two axes' scales differ by rounding; use their mean
            kk = ((ww / w) + (hh / h)) / 2
            candidates.append((float(score[gi, gj]), decode(raw[:, gi, gj][None], origin, kk)))
            k *= PYRAMID_STEP
        if not candidates:
            results.append(None)
            continue
        # Clutter can look like a face at some level, and a face's parts (an eye) like a small face: the
        # levels scoring nearly as well as the best are refined once; the best refined score wins, unless
        # a larger confirmed face contains it (then it was a part of that face).
        top = max(c[0] for c in candidates)
        close = sorted((c for c in candidates if c[0] >= top - CLOSE_LOGIT), key=lambda c: -c[0])[:MAX_CANDIDATES]
        refined = sorted(((c[0], _refine(net, img, c[1])) for c in close), key=lambda r: -float(r[1]["score"][0]))
        best = refined[0]
        for other in refined[1:]:
            o, bd = other[1], best[1]
            if (float(o["score"][0]) >= threshold and float(o["size"][0]) > 1.5 * float(bd["size"][0])
                    and float((o["center"] - bd["center"]).norm()) < 0.5 * float(o["size"][0])):
                best = other
        det = best[1]
        for _ in range(refine - 1):
            det = _refine(net, img, det)
        if float(det["score"][0]) < threshold:  # the refined window must still call it a face
            results.append(None)
            continue
        results.append(HeadDetection(det["center"][0], float(det["size"][0]),
                                     float(_angle_from_points(det["points"])[0]), det["points"][0],
                                     float(det["score"][0])))
    return results
