"""Synthetic ground-truth benchmark: motion transfer across the 9 domain pairs of the procedural renderer.

For every (source domain, driver domain) pair of human / cg_human / animal and every held-out identity
pair, a driving clip of the driver identity is rendered with smooth random motion
(:func:`anytalk_core.synthetic.render_clip`); the source image is the source identity rendered with the
driver's first-frame pose and expression, so relative motion transfer (``anytalk animate``'s default) has
the driving clip's absolute motion as its ground truth: the source identity rendered with the driving pose
and expression, frame by frame (:func:`anytalk_core.synthetic.motion_transfer_target`). The model animates
the source through :class:`anytalk_core.engine.Engine` at its own image size, and each pair reports

* ``pose_err_deg``: mean absolute yaw/pitch/roll error (degrees) of the generated frames against the
  renderer's ground truth (and per angle: ``yaw_err``, ``pitch_err``, ``roll_err``);
* ``lmk_err_pct``: mean L2 distance of the visible landmarks, % of the image size (contour, brows, lids,
  pupils, nose, lips, ears: expression transfer shows here);
* ``l1`` (pixels in 0..1) and ``psnr_db`` (mean over frames) against the ground-truth render;
* ``floor_pose_deg``, ``floor_lmk_pct``: the same errors of the annotator on the ground-truth render
  itself -- the error of the measuring instrument, below which models cannot be told apart;
* ``static_pose_deg``, ``static_lmk_pct``: the same errors for the source image shown unchanged in every
  frame -- what a model that does not move the portrait would score (the size of the motion).

Pose and landmarks of a frame are read by the synthetic annotator
(:mod:`anytalk_eval.annotator`), a small CNN trained only on renders and never on any model's outputs,
keypoints or motion estimator. Errors are averaged over all frames of all identities of a pair (frame 0,
the source's own pose, included). Driving clips are sampled at :data:`CLIP_FPS` = 8 frames per second of
the renderer's smooth motion, so the default 16 frames span 2 s (head turns of about 10 degrees from the
first frame on average, against 5 at 25 fps).

Held-out identities and motion come from ``numpy.random.default_rng([0xA770, seed, domain, i, role])``
(domain: index in DOMAINS; role 1 source identity, 2 driver identity, 3 driver motion), disjoint from
the trainer's identities and the annotator's training renders (see :mod:`anytalk_eval.annotator`). The
run is deterministic for a seed.

Example::

    anytalk-eval synthetic --checkpoint assets/demo/anytalk_demo.safetensors --seed 0 --identities 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from anytalk_core import synthetic as syn
from anytalk_app.args import positive_int

from .annotator import (DEFAULT_ANNOTATOR_PATH, AnnotatorError, SyntheticAnnotator, load_annotator,
                        landmark_error_pct, pose_abs_error, to_normalised)
from .metrics.pixel import l1_distance, mse, psnr_from_mse

__all__ = ["BENCHMARK_TAG", "COLUMNS", "benchmark_rng", "heldout_identity", "driving_clip", "source_image",
           "pair_metrics", "run_benchmark", "mean_row", "add_arguments", "run"]

BENCHMARK_TAG = 0xA770
ROLE_SOURCE, ROLE_DRIVER, ROLE_MOTION = 1, 2, 3
CLIP_FPS = 8.0  # motion sampling rate of the driving clips: 16 frames = 2 s of motion

COLUMNS = ("source", "driver", "frames", "pose_err_deg", "yaw_err", "pitch_err", "roll_err", "lmk_err_pct",
           "l1", "psnr_db", "floor_pose_deg", "floor_lmk_pct", "static_pose_deg", "static_lmk_pct")
METRICS = COLUMNS[3:]

# (source image (1, 3, S, S), driving frames (N, 3, S, S), ground truth (N, 3, S, S)) -> generated (N, 3, S, S)
AnimateFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------
# Held-out data
# ------------------------------------------------------------------------------------------------

def benchmark_rng(seed: int, domain: str, index: int, role: int) -> np.random.Generator:
    """``default_rng([0xA770, seed, DOMAINS.index(domain), index, role])`` (role 1 source, 2 driver, 3 motion)."""
    if domain not in syn.DOMAINS:
        raise ValueError(f"domain must be one of {list(syn.DOMAINS)}, got {domain!r}")
    if role not in (ROLE_SOURCE, ROLE_DRIVER, ROLE_MOTION):
        raise ValueError(f"role must be {ROLE_SOURCE}, {ROLE_DRIVER} or {ROLE_MOTION}, got {role}")
    for name, v in (("seed", seed), ("index", index)):
        if not 0 <= int(v) < 2**32:
            raise ValueError(f"{name} must be in 0 .. 2**32 - 1, got {v}")
    return np.random.default_rng([BENCHMARK_TAG, int(seed), syn.DOMAINS.index(domain), int(index), role])


def heldout_identity(domain: str, seed: int, index: int, role: int) -> syn.Identity:
    """Held-out identity ``index`` of a domain, as a source (role 1) or a driver (role 2)."""
    return syn.sample_identity(domain, benchmark_rng(seed, domain, index, role))


def driving_clip(domain: str, seed: int, index: int, frames: int, size: int) -> syn.Clip:
    """The driving clip of driver identity ``index`` of ``domain``: smooth motion sampled at
    :data:`CLIP_FPS`, ``size`` px."""
    ident = heldout_identity(domain, seed, index, ROLE_DRIVER)
    return syn.render_clip(ident, n_frames=frames, fps=CLIP_FPS, size=size,
                           rng=benchmark_rng(seed, domain, index, ROLE_MOTION))


def source_image(identity: syn.Identity, clip: syn.Clip, size: int) -> torch.Tensor:
    """``identity`` rendered with the clip's first-frame pose and expression: (1, 3, size, size)."""
    out = syn.render_batch(identity, clip.pose[:1], clip.expression[:1], size)
    return out.images.permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------

def pair_metrics(annotator: SyntheticAnnotator, generated: torch.Tensor, target: torch.Tensor, source: torch.Tensor,
                 pose: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-frame errors of generated frames against the ground truth, the annotator's floor and the static source.

    generated, target: (N, 3, S, S) in 0..1; source (1, 3, S, S); pose (N, >=3) of the ground truth
    (degrees); landmarks (N, L, 2) in pixels at S; visible (N, L). Returns per-frame tensors ``pose``,
    ``floor_pose``, ``static_pose`` (N, 3) absolute angle errors (degrees), ``lmk``, ``floor_lmk``,
    ``static_lmk`` (N,) (% of image size), ``l1`` (N,), ``psnr`` (N,) (dB).
    """
    size = target.shape[-1]
    n = generated.shape[0]
    gt_lmk = to_normalised(landmarks, size)
    read = annotator.annotate(torch.cat([generated, target, source]))
    out: dict[str, torch.Tensor] = {}
    for prefix, idx in (("", torch.arange(n)), ("floor_", torch.arange(n, 2 * n)), ("static_", torch.full((n,), 2 * n))):
        out[prefix + "pose"] = pose_abs_error(read.pose[idx], pose)
        out[prefix + "lmk"] = landmark_error_pct(read.landmarks[idx], gt_lmk, visible)
    out["l1"] = l1_distance(generated, target, torch.float32)  # the benchmark's numbers: float32 arithmetic
    out["psnr"] = psnr_from_mse(mse(generated, target, torch.float32).double()).float()
    return out


def _summarise(source: str, driver: str, per_frame: list[dict[str, torch.Tensor]]) -> dict:
    cat = {k: torch.cat([p[k] for p in per_frame]) for k in per_frame[0]}
    pose, floor = cat["pose"].double(), cat["floor_pose"].double()
    row = {"source": source, "driver": driver, "frames": int(pose.shape[0]),
           "pose_err_deg": float(pose.mean()),
           "yaw_err": float(pose[:, 0].mean()), "pitch_err": float(pose[:, 1].mean()),
           "roll_err": float(pose[:, 2].mean()),
           "lmk_err_pct": float(cat["lmk"].double().nanmean()),
           "l1": float(cat["l1"].double().mean()), "psnr_db": float(cat["psnr"].double().mean()),
           "floor_pose_deg": float(floor.mean()), "floor_lmk_pct": float(cat["floor_lmk"].double().nanmean()),
           "static_pose_deg": float(cat["static_pose"].double().mean()),
           "static_lmk_pct": float(cat["static_lmk"].double().nanmean())}
    return row


def mean_row(rows: list[dict]) -> dict:
    """The mean of every metric over the pair rows (a table footer): source = driver = 'mean'."""
    out: dict = {"source": "mean", "driver": "all", "frames": sum(int(r["frames"]) for r in rows)}
    for key in METRICS:
        out[key] = float(np.mean([r[key] for r in rows]))
    return out


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------

def _engine_animate(model, device: str, precision: str, chunk: int) -> AnimateFn:
    from anytalk_core.engine import Engine, EngineConfig
    from anytalk_core.models.base import TransferOptions
    from anytalk_core.stages import animate_clip

    engine = Engine(model, EngineConfig(device=device, precision=precision, chunk_size=chunk))
    options = TransferOptions()  # relative to the first driving frame, all strengths 1: `anytalk animate`'s default

    def animate(source: torch.Tensor, driving: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(animate_clip(engine, source, driving, options, fps=CLIP_FPS)))

    return animate


def run_benchmark(checkpoint, seed: int = 0, identities: int = 2, frames: int = 16, device: str = "cpu",
                  precision: str = "fp32", annotator: SyntheticAnnotator | str | os.PathLike | None = None,
                  family: str = "auto", chunk: int = 8, animate_fn: AnimateFn | None = None,
                  progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run the benchmark; returns 9 rows (source, driver, frames and the metrics of :data:`COLUMNS`).

    ``checkpoint``: a path (any format ``anytalk animate`` reads) or a loaded
    :class:`~anytalk_core.models.base.TalkingHeadModel`. ``annotator``: weights path, a loaded
    :class:`SyntheticAnnotator` or None (the shipped file). ``animate_fn`` replaces the model's animation
    (source (1, 3, S, S), driving (N, 3, S, S), ground truth (N, 3, S, S)) -> (N, 3, S, S); for checks such
    as an oracle that returns the ground truth. Deterministic for a seed.
    """
    from anytalk_core.checkpoints import load_model

    if not isinstance(identities, int) or identities < 1:
        raise ValueError(f"identities must be a whole number >= 1, got {identities!r}")
    if not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be a whole number >= 2, got {frames!r}")
    if not isinstance(annotator, SyntheticAnnotator):
        annotator = load_annotator(annotator)
    model = checkpoint if isinstance(checkpoint, torch.nn.Module) else load_model(checkpoint, family=family)
    size = int(model.config.image_size)
    animate = animate_fn or _engine_animate(model, device, precision, chunk)

    clips = {(d, i): driving_clip(d, seed, i, frames, size) for d in syn.DOMAINS for i in range(identities)}
    rows = []
    for src_domain in syn.DOMAINS:
        sources = [heldout_identity(src_domain, seed, i, ROLE_SOURCE) for i in range(identities)]
        for drv_domain in syn.DOMAINS:
            per_frame = []
            for i, ident in enumerate(sources):
                clip = clips[(drv_domain, i)]
                gt = syn.render_sequence(ident, clip.pose, clip.expression, size)  # = motion_transfer_target
                target = gt.images.permute(0, 3, 1, 2).contiguous()
                driving = clip.frames.permute(0, 3, 1, 2).contiguous()
                source = source_image(ident, clip, size)
                generated = animate(source, driving, target)
                if tuple(generated.shape) != tuple(target.shape):
                    raise ValueError(f"the animation returned frames of shape {tuple(generated.shape)}, "
                                     f"expected {tuple(target.shape)}")
                per_frame.append(pair_metrics(annotator, generated.float().cpu(), target, source, clip.pose,
                                              gt.landmarks, gt.visible))
            rows.append(_summarise(src_domain, drv_domain, per_frame))
            if progress:
                progress(f"{src_domain} <- {drv_domain}: pose {rows[-1]['pose_err_deg']:.2f} deg, "
                         f"landmarks {rows[-1]['lmk_err_pct']:.2f} %, PSNR {rows[-1]['psnr_db']:.2f} dB")
    return rows


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="model to evaluate: AnyTalk .safetensors, face-vid2vid .pth.tar or LivePortrait folder")
    parser.add_argument("--family", default="auto", help="auto, face-vid2vid, liveportrait-human or liveportrait-animal")
    parser.add_argument("--seed", type=_seed, default=0, help="held-out identities and motion (default 0)")
    parser.add_argument("--identities", type=positive_int, default=2, help="identity pairs per domain pair (default 2)")
    parser.add_argument("--frames", type=positive_int, default=16, help="frames per driving clip, >= 2 (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--chunk", type=positive_int, default=8, help="frames per engine chunk (default 8)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is the most efficient on a busy machine)")
    parser.add_argument("--annotator", default=None,
                        help=f"synthetic annotator weights (default: the shipped {DEFAULT_ANNOTATOR_PATH.name})")
    parser.add_argument("--out", default="eval_results",
                        help="folder for synthetic.md/.csv/.json (never overwritten; default eval_results)")
    parser.add_argument("--quiet", action="store_true", help="no per-pair progress lines")


def run(args: argparse.Namespace) -> int:
    from anytalk_core.checkpoints import CheckpointError
    from anytalk_core.engine import resolve_device

    from .report import markdown_table, write_report

    t0 = time.time()
    try:
        if args.frames < 2:
            raise ValueError(f"--frames must be at least 2, got {args.frames}")
        resolve_device(args.device)
        if args.threads:
            torch.set_num_threads(args.threads)
        if not os.path.exists(args.checkpoint):
            raise FileNotFoundError(f"{args.checkpoint}: checkpoint not found")
        annotator = load_annotator(args.annotator)
        say = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
        rows = run_benchmark(args.checkpoint, seed=args.seed, identities=args.identities, frames=args.frames,
                             device=args.device, precision=args.precision, annotator=annotator,
                             family=args.family.replace("-", "_"), chunk=args.chunk, progress=say)
        table = [*rows, mean_row(rows)]
        val = getattr(annotator, "report", {}).get("validation", {}).get("all", {})
        meta = {
            "checkpoint": os.path.abspath(args.checkpoint), "seed": args.seed, "identities": args.identities,
            "frames_per_clip": args.frames, "clip_fps": CLIP_FPS, "device": args.device, "precision": args.precision,
            "transfer": "relative to the first driving frame (anytalk animate's default)",
            "annotator": os.path.abspath(args.annotator) if args.annotator else str(DEFAULT_ANNOTATOR_PATH),
            "annotator_validation": (f"pose {val.get('pose_mae_deg')} deg, landmarks {val.get('landmark_error_pct')} % "
                                     "on held-out renders") if val else "unknown",
            "units": "angles in degrees, landmarks in % of the image size, L1 of pixels in 0..1, PSNR in dB",
            "held_out": f"numpy default_rng([{BENCHMARK_TAG:#x}, seed, domain, i, role])",
            "seconds": round(time.time() - t0, 1),
        }
        title = f"Synthetic ground-truth benchmark (seed {args.seed}, {args.identities} identities, {args.frames} frames)"
        print(markdown_table(table, COLUMNS, title))
        paths = write_report(table, COLUMNS, args.out, "synthetic", title=title, meta=meta)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return 0
    except (AnnotatorError, CheckpointError, ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        print(f"anytalk-eval synthetic: error: {exc}", file=sys.stderr)
        return 2
