"""The synthetic annotator: a small CNN that reads head pose and landmarks off a rendered head.

It is the synthetic-data analogue of Hopenet plus a landmark detector, and the independent estimator the
synthetic ground-truth benchmark (:mod:`anytalk_eval.synthetic`, SPEC §7) measures generated frames with:
it is trained only on images of the procedural renderer (:mod:`anytalk_core.synthetic`) against their
ground truth and never sees a talking-head model, its keypoints or its motion estimator.

Outputs for images (B, 3, H, W) in 0..1 (resized to ``size``, 64 px by default, antialiased):

* ``pose`` (B, 3): yaw, pitch, roll in degrees (renderer convention, ``R = R_x(pitch) R_y(yaw) R_z(roll)``);
* ``landmarks`` (B, 41, 2): the renderer's 41 landmarks in normalised image coordinates, the image
  spanning [-1, 1] (pixels at any size S: ``(n + 1) * S / 2 - 0.5``; see :func:`to_pixels`).

It does not read the 7 expression values: a first version with an expression head learned pose and
landmarks but stayed at the mean predictor's error on expression (mean absolute error 0.34 against 0.35)
-- at 64 px a blink or a gaze shift moves a pixel or two. Expression transfer is still measured through
the landmarks of the lids, pupils, brows and lips.

Training data and seeds
-----------------------
Renders of random identities of all three domains (cycled, so balanced) with independent random head
poses and expressions (:func:`sample_stills`). Poses cover the trainer's random ranges
(``training/synthetic_source.py`` ``POSE_RANGE``: yaw ±30°, pitch ±15°, roll ±12°, tx ±0.06, ty ±0.05,
scale ±0.06) widened by :data:`RANGE_MARGIN` so the benchmark's motion never sits where a regressor
saturates; expressions are drawn like the trainer's ``random_still`` over
:data:`anytalk_core.synthetic.EXPRESSION_RANGES`. Images are augmented (blur, down-up resampling,
brightness/contrast, noise) because generated frames are softer than renders.

Every random draw comes from ``numpy.random.default_rng([ANNOTATOR_TAG, seed, split, batch, 1])`` with
:data:`ANNOTATOR_TAG` = 0xA771 and ``split`` 0 (training), 1 (validation) or 2 (fresh check renders, used
by the tests and ``validate``). The benchmark's held-out identities use 0xA770 keys of five words
(:mod:`anytalk_eval.synthetic`). Both are disjoint by construction from the trainer's identities, which
are seeded by single random 62-bit integers (``default_rng(int)``: at most two 32-bit words of entropy),
while these keys have five words, the last one non-zero (numpy pads short keys with zeros, so a key only
equals another if they agree word for word after padding); the two tags keep the annotator's and the
benchmark's keys apart.

Shipped weights
---------------
``assets/eval/synthetic_annotator.safetensors`` (2.8 MB, float32; the metadata holds the config and the
full training report) was made by the ``train`` command below with its defaults (seed 0, 2000 steps of
64 fresh renders, one thread: 706 CPU seconds on a busy 2-core machine). On 768 held-out renders
(split val) it reads pose with a mean absolute error of 1.38° / 1.48° / 1.98° (human / cg_human /
animal; yaw 1.33°, pitch 1.88°, roll 1.63° over all) and landmarks with a mean error of 1.09 / 1.12 /
1.63 % of the image size (1.28 % over all); on the same renders blurred, 1.64° and 1.31 %.

Command line::

    python -m anytalk_eval.annotator train --out assets/eval/synthetic_annotator.safetensors
    python -m anytalk_eval.annotator validate [--annotator FILE] [--images 600]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from anytalk_core import synthetic as syn
from anytalk_core.safetensors_io import read_tagged, write_tagged

__all__ = [
    "ANNOTATOR_FORMAT", "ANNOTATOR_TAG", "DEFAULT_ANNOTATOR_PATH", "POSE_RANGE", "RANGE_MARGIN", "AnnotatorError",
    "Annotation", "SyntheticAnnotator", "AnnotatedRenders", "annotator_rng", "sample_stills", "render_annotated", "augment",
    "to_normalised", "to_pixels", "pose_abs_error", "landmark_error_pct", "evaluate_annotator", "train_annotator",
    "save_annotator", "load_annotator", "main",
]

ANNOTATOR_FORMAT = "anytalk.synthetic_annotator"
ANNOTATOR_FORMAT_VERSION = 1
ANNOTATOR_TAG = 0xA771
SPLITS = {"train": 0, "val": 1, "check": 2}

DEFAULT_ANNOTATOR_PATH = Path(__file__).resolve().parents[1] / "assets" / "eval" / "synthetic_annotator.safetensors"
TRAIN_COMMAND = "python -m anytalk_eval.annotator train --out {path}"

# The trainer's random-still ranges (training/synthetic_source.py POSE_RANGE; a test checks they agree).
POSE_RANGE: dict[str, float] = {"yaw": 30.0, "pitch": 15.0, "roll": 12.0, "tx": 0.06, "ty": 0.05, "scale": 0.06}
RANGE_MARGIN = 1.25
ANGLES = ("yaw", "pitch", "roll")
NUM_LANDMARKS = syn.NUM_LANDMARKS
NUM_EXPRESSION = len(syn.EXPRESSION_FIELDS)
_POSE_UNIT = 20.0  # degrees per unit of the network's pose output
_INVISIBLE_WEIGHT = 0.25  # training weight of occluded landmarks (their positions are still well defined)


class AnnotatorError(ValueError):
    """The annotator weights are missing, unreadable or not an annotator; the message says how to fix it."""


# ------------------------------------------------------------------------------------------------
# Coordinates and errors
# ------------------------------------------------------------------------------------------------

def to_normalised(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates at image size ``size`` (pixel centres at integers) -> normalised [-1, 1]: (..., 2)."""
    return (points + 0.5) * (2.0 / size) - 1.0


def to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised coordinates (..., 2) -> pixels at image size ``size`` (the renderer's convention)."""
    return (points + 1.0) * (size / 2.0) - 0.5


def pose_abs_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Absolute angle errors in degrees, wrapped to [0, 180]: (B, 3), (B, >=3) -> (B, 3)."""
    d = torch.remainder(pred[..., :3] - target[..., :3] + 180.0, 360.0) - 180.0
    return d.abs()


def landmark_error_pct(pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L2 distance of (visible) landmarks as a percentage of the image size, per image.

    pred, target: (B, L, 2) normalised coordinates (the image spans 2 units); visible: (B, L) bool or None
    (all). Returns (B,); an image without visible landmarks gives NaN.
    """
    dist = (pred - target).norm(dim=-1) * 50.0  # 2 normalised units = 100 % of the image size
    if visible is None:
        return dist.mean(-1)
    w = visible.to(dist.dtype)
    return (dist * w).sum(-1) / w.sum(-1)


# ------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------

@dataclass
class Annotation:
    """What the annotator reads off images: pose (B, 3) degrees, landmarks (B, L, 2) normalised."""

    pose: torch.Tensor
    landmarks: torch.Tensor

    def landmarks_px(self, size: int) -> torch.Tensor:
        """Landmarks in pixels at image size ``size``: (B, L, 2)."""
        return to_pixels(self.landmarks, size)


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SyntheticAnnotator(nn.Module):
    """Images (B, 3, H, W) in 0..1 -> pose and landmarks (see the module docstring).

    Seven 3 x 3 conv-BN-ReLU layers (four of stride 2: ``size`` -> ``size / 16``), a fully connected layer
    on the flattened map (its layout keeps where things are) and a linear head.
    """

    def __init__(self, size: int = 64, width: int = 24, hidden: int = 192):
        super().__init__()
        if size % 16 or size < 32:
            raise ValueError(f"annotator input size must be a multiple of 16 and >= 32, got {size}")
        self.size, self.width, self.hidden = int(size), int(width), int(hidden)
        w = self.width
        chans = [3, w, w + 8, 2 * w, 2 * w, 4 * w, 4 * w, 128]
        strides = [2, 1, 2, 1, 2, 1, 2]
        layers: list[nn.Module] = []
        for i, s in enumerate(strides):
            layers += _conv(chans[i], chans[i + 1], s)
        self.body = nn.Sequential(*layers)
        cells = (self.size // 16) ** 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * cells, self.hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(self.hidden, 3 + 2 * NUM_LANDMARKS)

    @property
    def config(self) -> dict:
        return {"size": self.size, "width": self.width, "hidden": self.hidden, "num_landmarks": NUM_LANDMARKS,
                "pose_fields": list(ANGLES)}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in 0..1, square -> (B, 3, size, size) (antialiased bilinear resize)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the annotator takes images (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"the annotator takes square images, got {images.shape[-2]}x{images.shape[-1]}")
        images = images.float()
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > self.size)
        return images

    def raw(self, prepared: torch.Tensor) -> torch.Tensor:
        """Prepared images (B, 3, size, size) -> raw outputs (B, 3 + 2L)."""
        return self.head(self.fc(self.body(prepared * 2 - 1)))

    @staticmethod
    def split(raw: torch.Tensor) -> Annotation:
        """Raw outputs (B, 3 + 2L) -> :class:`Annotation` in physical units."""
        return Annotation(raw[:, :3] * _POSE_UNIT, raw[:, 3:].reshape(raw.shape[0], NUM_LANDMARKS, 2))

    def forward(self, images: torch.Tensor) -> Annotation:
        return self.split(self.raw(self.prepare(images)))

    @torch.no_grad()
    def annotate(self, images: torch.Tensor, batch_size: int = 256) -> Annotation:
        """Inference in eval mode, in batches, on the annotator's device; results on the CPU.

        images: (B, 3, H, W) or (B, H, W, 3) float in 0..1.
        """
        if images.dim() == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        if images.shape[0] == 0:
            raise ValueError("the annotator got an empty batch of images")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        parts = [self(images[a:a + batch_size].to(device)) for a in range(0, images.shape[0], batch_size)]
        self.train(was_training)
        return Annotation(*(torch.cat([getattr(p, k) for p in parts]).cpu() for k in ("pose", "landmarks")))


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

def annotator_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one batch of annotator renders: ``default_rng([0xA771, seed, split, index, 1])``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    for name, v in (("seed", seed), ("index", index)):
        if not 0 <= int(v) < 2**32:
            raise ValueError(f"{name} must be in 0 .. 2**32 - 1, got {v}")
    return np.random.default_rng([ANNOTATOR_TAG, int(seed), SPLITS[split], int(index), 1])


def sample_stills(rng: np.random.Generator, n: int, margin: float = RANGE_MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random poses (n, 6) and expressions (n, 7).

    Pose: uniform within ``margin`` x :data:`POSE_RANGE` (scale about 1). Expression: like the trainer's
    ``random_still`` -- blinks mostly open (55 %), closed (25 %) or in between, gaze within 60 % of its
    range, the rest uniform over :data:`anytalk_core.synthetic.EXPRESSION_RANGES`.
    """
    pose = np.zeros((n, len(syn.POSE_FIELDS)), dtype=np.float32)
    for j, f in enumerate(syn.POSE_FIELDS):
        r = POSE_RANGE[f] * margin
        pose[:, j] = (1.0 if f == "scale" else 0.0) + rng.uniform(-r, r, n)
    expr = np.zeros((n, NUM_EXPRESSION), dtype=np.float32)
    for j, f in enumerate(syn.EXPRESSION_FIELDS):
        lo, hi = syn.EXPRESSION_RANGES[f]
        if f.startswith("blink"):
            u = rng.uniform(0, 1, n)
            expr[:, j] = np.where(u < 0.55, rng.uniform(0, 0.2, n),
                                  np.where(u < 0.8, rng.uniform(0.8, 1.0, n), rng.uniform(0, 1, n)))
        elif f.startswith("gaze"):
            expr[:, j] = rng.uniform(0.6 * lo, 0.6 * hi, n)
        else:
            expr[:, j] = rng.uniform(lo, hi, n)
    return torch.from_numpy(pose), torch.from_numpy(expr)


@dataclass
class AnnotatedRenders:
    """Renders with ground truth: images (n, 3, S, S) in 0..1, pose (n, 6), landmarks (n, L, 2) normalised,
    visible (n, L) bool, expression (n, 7), domains (n names)."""

    images: torch.Tensor
    pose: torch.Tensor
    landmarks: torch.Tensor
    visible: torch.Tensor
    expression: torch.Tensor
    domains: list[str]


def render_annotated(n: int, seed: int, split: str, size: int = 64, index: int = 0,
                     domains: tuple[str, ...] = syn.DOMAINS) -> AnnotatedRenders:
    """``n`` renders of fresh identities (domains cycled), random poses and expressions, with ground truth.

    All draws come from :func:`annotator_rng` ``(seed, split, index)``: batch ``index`` of a split.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = annotator_rng(seed, split, index)
    names = [domains[i % len(domains)] for i in range(n)]
    idents = [syn.sample_identity(d, rng) for d in names]
    pose, expr = sample_stills(rng, n)
    out = syn.render_batch(idents, pose, expr, size)
    return AnnotatedRenders(out.images.permute(0, 3, 1, 2).contiguous().clamp_(0, 1), pose,
                            to_normalised(out.landmarks, size), out.visible.clone(), syn.expression_tensor(expr),
                            names)


def _binomial_blur(x: torch.Tensor, taps: int) -> torch.Tensor:
    k1 = torch.tensor({3: [1., 2., 1.], 5: [1., 4., 6., 4., 1.]}[taps], dtype=x.dtype, device=x.device)
    k = (k1[:, None] * k1[None, :]) / k1.sum() ** 2
    pad = taps // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(x, k.expand(3, 1, taps, taps).contiguous(), groups=3)


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Label-preserving degradations of (B, 3, S, S): blur or down-up resampling, contrast, brightness, noise."""
    b, _, s, _ = images.shape
    u = torch.rand(b, generator=g)
    soft3 = _binomial_blur(images, 3)
    soft5 = _binomial_blur(images, 5)
    small = F.interpolate(F.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=False,
                                        antialias=True), size=(s, s), mode="bilinear", align_corners=False)
    out = torch.where((u < 0.25).view(-1, 1, 1, 1), soft3, images)
    out = torch.where(((u >= 0.25) & (u < 0.4)).view(-1, 1, 1, 1), soft5, out)
    out = torch.where(((u >= 0.4) & (u < 0.55)).view(-1, 1, 1, 1), small, out)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.3
    br = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.3
    out = ((out - mean) * c + mean) * br
    noise = torch.rand(b, 1, 1, 1, generator=g) * 0.03
    out = out + noise * torch.randn(out.shape, generator=g)
    return out.clamp(0, 1)


# ------------------------------------------------------------------------------------------------
# Training and validation
# ------------------------------------------------------------------------------------------------

def _loss(raw: torch.Tensor, data: AnnotatedRenders) -> torch.Tensor:
    """L1 losses in comparable units: pose per 5 degrees, landmarks in % of the image size."""
    ann = SyntheticAnnotator.split(raw)
    pose = (ann.pose - data.pose[:, :3]).abs().mean() / 5.0
    w = torch.where(data.visible, 1.0, _INVISIBLE_WEIGHT)
    lmk = (((ann.landmarks - data.landmarks).abs().sum(-1) * 50.0) * w).sum() / w.sum()
    return pose + lmk


def evaluate_annotator(net: SyntheticAnnotator, data: AnnotatedRenders) -> dict:
    """Errors on held-out renders, per domain and over all: pose MAE (degrees, per angle and mean) and
    landmark error (% of image size, visible landmarks; mean and 95th percentile over images)."""
    ann = net.annotate(data.images)
    pose_err = pose_abs_error(ann.pose, data.pose)
    lmk_err = landmark_error_pct(ann.landmarks, data.landmarks, data.visible)
    names = np.array(data.domains)
    out: dict = {}
    for domain in [*dict.fromkeys(data.domains), "all"]:
        sel = torch.from_numpy(names == domain) if domain != "all" else torch.ones(len(names), dtype=torch.bool)
        pe = pose_err[sel].mean(0)
        out[domain] = {
            "images": int(sel.sum()),
            "pose_mae_deg": round(float(pe.mean()), 3),
            **{f"{a}_mae_deg": round(float(v), 3) for a, v in zip(ANGLES, pe)},
            "landmark_error_pct": round(float(lmk_err[sel].nanmean()), 3),
            "landmark_error_p95_pct": round(float(lmk_err[sel].nanquantile(0.95)), 3),
        }
    return out


def train_annotator(seed: int = 0, steps: int = 2000, batch: int = 64, size: int = 64, width: int = 24,
                    hidden: int = 192, lr: float = 2e-3, val_images: int = 768,
                    log: Callable[[str], None] = print, log_every: int = 100) -> tuple[SyntheticAnnotator, dict]:
    """Train an annotator on fresh renders (one new batch of identities per step) and validate it.

    Deterministic for a seed on one machine and thread count. Returns the network (eval mode, CPU) and a
    report: the training settings, wall and CPU seconds, and :func:`evaluate_annotator` on ``val_images``
    held-out renders (split ``val``).
    """
    if steps < 1 or batch < 2:
        raise ValueError(f"steps must be >= 1 and batch >= 2, got steps={steps}, batch={batch}")
    t0, c0 = time.time(), time.process_time()
    torch.manual_seed(seed)
    net = SyntheticAnnotator(size, width, hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    log(f"annotator: training {sum(p.numel() for p in net.parameters())} parameters for {steps} steps of {batch} "
        f"fresh renders at {size} px (seed {seed}, {torch.get_num_threads()} threads)")
    net.train()
    running = 0.0
    for step in range(steps):
        data = render_annotated(batch, seed, "train", size, index=step)
        raw = net.raw(augment(data.images, g))
        loss = _loss(raw, data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if log_every and (step + 1) % log_every == 0:
            log(f"annotator: step {step + 1}/{steps} loss {running / log_every:.3f} "
                f"({time.time() - t0:.0f} s)")
            running = 0.0
    net.eval()
    seconds, cpu_seconds = time.time() - t0, time.process_time() - c0
    val = render_annotated(val_images, seed, "val", size)
    report = {
        "seed": seed, "steps": steps, "batch": batch, "lr": lr, "train_images": steps * batch,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "data": {"pose_range": POSE_RANGE, "range_margin": RANGE_MARGIN, "domains": list(syn.DOMAINS),
                 "rng": f"numpy default_rng([{ANNOTATOR_TAG:#x}, seed, split, batch, 1]), split train=0 val=1 check=2",
                 "augment": "binomial blur 3/5, down-up x0.5, contrast/brightness ±15 %, noise sigma <= 0.03"},
        "validation": evaluate_annotator(net, val),
        "validation_blurred": evaluate_annotator(net, AnnotatedRenders(
            _binomial_blur(val.images, 3), val.pose, val.landmarks, val.visible, val.expression, val.domains)),
    }
    report["validation"]["note"] = f"{val_images} held-out renders (split val), clean, {size} px"
    report["validation_blurred"]["note"] = "the same renders blurred by a 3 x 3 binomial filter (softer, like generated frames)"
    return net, report


def save_annotator(net: SyntheticAnnotator, path: str | os.PathLike, report: dict, overwrite: bool = False) -> Path:
    """Write the weights (float32 safetensors) with config and report as metadata, atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise AnnotatorError(f"{path}: annotator weights are written as .safetensors files")
    meta = {"format_version": str(ANNOTATOR_FORMAT_VERSION),
            "config": json.dumps(net.config, sort_keys=True), "report": json.dumps(report, sort_keys=True)}
    return write_tagged(path, net.state_dict(), ANNOTATOR_FORMAT, meta, overwrite=overwrite)


def _how_to_make(path: Path) -> str:
    return (f"regenerate it with `{TRAIN_COMMAND.format(path=path)}` (about 10 minutes on CPU), "
            "or pass another file with --annotator FILE")


def load_annotator(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SyntheticAnnotator:
    """Load annotator weights (default: the shipped :data:`DEFAULT_ANNOTATOR_PATH`) in eval mode.

    The training report is at ``net.report`` (dict). Raises :class:`AnnotatorError` when the file is
    missing, corrupt, of another format or does not match the network.
    """
    p = Path(path) if path is not None else DEFAULT_ANNOTATOR_PATH
    if not p.is_file():
        raise AnnotatorError(f"synthetic annotator weights not found at {p}: {_how_to_make(p)}")
    state, meta = read_tagged(p, ANNOTATOR_FORMAT, "synthetic annotator file", error=AnnotatorError,
                              hint=_how_to_make(p))
    try:
        cfg = json.loads(meta["config"])
        report = json.loads(meta.get("report", "{}"))
        net = SyntheticAnnotator(int(cfg["size"]), int(cfg["width"]), int(cfg["hidden"]))
        if int(cfg.get("num_landmarks", NUM_LANDMARKS)) != NUM_LANDMARKS:
            raise ValueError(f"it predicts {cfg['num_landmarks']} landmarks, the renderer has {NUM_LANDMARKS}")
        missing, unexpected = set(net.state_dict()) - set(state), set(state) - set(net.state_dict())
        if missing or unexpected:
            raise ValueError(f"missing tensors {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise AnnotatorError(f"{p}: annotator weights do not fit the network ({text}); {_how_to_make(p)}") from None
    net.report = report
    return net.to(device).eval()


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def _table(validation: dict) -> str:
    cols = ("images", "pose_mae_deg", "yaw_mae_deg", "pitch_mae_deg", "roll_mae_deg", "landmark_error_pct",
            "landmark_error_p95_pct")
    lines = ["| domain | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for domain, row in validation.items():
        if isinstance(row, dict):
            lines.append(f"| {domain} | " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anytalk_eval.annotator",
                                     description="Train or validate the synthetic annotator (head pose and "
                                                 "landmarks of rendered heads) used by `anytalk-eval synthetic`.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on fresh renders, validate on held-out renders, write safetensors")
    t.add_argument("--out", default=str(DEFAULT_ANNOTATOR_PATH), help="output .safetensors (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--size", type=int, default=64, help="input size of the network (px)")
    t.add_argument("--width", type=int, default=24)
    t.add_argument("--hidden", type=int, default=192)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--val-images", type=int, default=768)
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: at this network size one thread does the most work per CPU "
                        "second, and results depend on the thread count; 0: torch's default)")
    t.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    v = sub.add_parser("validate", help="errors of annotator weights on fresh renders (split check)")
    v.add_argument("--annotator", default=str(DEFAULT_ANNOTATOR_PATH), help="weights (default: %(default)s)")
    v.add_argument("--images", type=int, default=600)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--size", type=int, default=64, help="render size (px); the annotator resizes to its own")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from anytalk_core.io_utils import check_can_write

            check_can_write(args.out, args.overwrite)
            if args.threads:
                torch.set_num_threads(args.threads)
            net, report = train_annotator(args.seed, args.steps, args.batch, args.size, args.width, args.hidden,
                                          args.lr, args.val_images)
            report["command"] = shlex.join(["python", "-m", "anytalk_eval.annotator",
                                            *(sys.argv[1:] if argv is None else argv)])
            path = save_annotator(net, args.out, report, overwrite=args.overwrite)
            print(_table(report["validation"]))
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB; trained in {report['seconds']:.0f} s, "
                  f"{report['cpu_seconds']:.0f} CPU s)")
        else:
            net = load_annotator(args.annotator)
            data = render_annotated(args.images, args.seed, "check", args.size)
            print(_table(evaluate_annotator(net, data)))
        return 0
    except (AnnotatorError, ValueError, FileExistsError, OSError) as exc:
        print(f"anytalk-eval annotator: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
