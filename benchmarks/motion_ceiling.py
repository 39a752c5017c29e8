"""Where a model's motion transfer loses quality (not a test): the synthetic benchmark run five ways.

    python benchmarks/motion_ceiling.py CHECKPOINT [--seed 0] [--identities 1] [--frames 8] [--threads 1]
        [--variants "estimated,true pose"]

- ``estimated``: the benchmark as ``anytalk-eval synthetic`` runs it (the model's own motion estimator reads the
  other identity's driving clip);
- ``true pose``: the same, with the head pose (yaw, pitch, roll) of the source and of every driving frame
  replaced by the renderer's ground truth: what a perfect pose estimator would give;
- ``self-driven``: the driving frames are the ground-truth frames themselves (the source identity making the
  driver's moves): no identity gap between driver and source;
- ``self-driven + true pose``: both;
- ``static source``: no animation, the source repeated: the floor every row must beat.

Each row: PSNR (the benchmark's mean over frames, and over frames 1 onwards, which the static source cannot
match exactly) and L1 against the ground truth, pose and landmark errors read by the benchmark's independent
annotator, and PSNR per frame index (frame 0 is the source's own pose; later frames turn away from it: the
last line gives the driver's mean angle from its first frame). If the rows agree, neither the pose
reading nor the identity gap limits the frames: the rendering networks (dense motion and generator) do.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from anytalk_core import synthetic as syn  # noqa: E402
from anytalk_core.checkpoints import load_model  # noqa: E402
from anytalk_core.engine import Engine, EngineConfig  # noqa: E402
from anytalk_core.motion import Motion  # noqa: E402
from anytalk_core.stages import driving_stage, render_stage, transfer_stage  # noqa: E402
from anytalk_eval import synthetic as bench  # noqa: E402
from anytalk_eval.metrics.pixel import mse, psnr_from_mse  # noqa: E402

VARIANTS = ("estimated", "true pose", "self-driven", "self-driven + true pose", "static source")


def with_pose(motion: Motion, angles: torch.Tensor) -> Motion:
    """``motion`` with its yaw, pitch, roll replaced by ``angles`` (N, 3) in degrees."""
    angles = angles.to(motion.yaw)
    return dataclasses.replace(motion, yaw=angles[:, 0], pitch=angles[:, 1], roll=angles[:, 2])


def variant_animate(engine: Engine, clips: list[syn.Clip], variant: str, per_frame_psnr: list[torch.Tensor]):
    """An ``animate_fn`` for :func:`anytalk_eval.synthetic.run_benchmark` that runs ``variant``."""
    model = engine.model
    true_pose = "true pose" in variant

    def rendered(source: torch.Tensor, driving: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        state = engine.prepare_source(source)
        drive = driving_stage(engine, bench.CLIP_FPS, frames=target if variant.startswith("self") else driving)
        if true_pose:
            # the benchmark hands over frames only: find the clip they came from to read its true pose
            clip = next(c for c in clips if torch.equal(c.frames.permute(0, 3, 1, 2), driving))
            angles = clip.pose[:, :3].float()
            drive = dataclasses.replace(drive, motion=with_pose(drive.motion, angles))
            source_motion = with_pose(state.motion, angles[:1])
            state = dataclasses.replace(state, motion=source_motion,
                                        keypoints=model.motion_keypoints(state.canonical, source_motion))
        return torch.cat(list(render_stage(engine, state, transfer_stage(engine, state, drive))))

    def animate(source: torch.Tensor, driving: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if variant == "static source":
            frames = source.expand_as(target).clone()
        else:
            frames = rendered(source, driving, target)
        per_frame_psnr.append(psnr_from_mse(mse(frames.float(), target, torch.float32).double()).float())
        return frames

    return animate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--identities", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    torch.set_num_threads(args.threads)

    model = load_model(args.checkpoint).eval()
    engine = Engine(model, EngineConfig(device="cpu", precision="fp32"))
    size = int(model.config.image_size)
    clips = [bench.driving_clip(d, args.seed, i, args.frames, size)
             for d in syn.DOMAINS for i in range(args.identities)]
    turn = torch.stack([(c.pose[:, :3] - c.pose[:1, :3]).abs().mean(1) for c in clips]).mean(0)

    print(f"{args.checkpoint}: seed {args.seed}, {args.identities} identities, {args.frames} frames, {size} px, "
          f"9 domain pairs")
    print("| variant | PSNR dB | PSNR dB, frames 1+ | L1 | pose err deg | landmark err % | PSNR per frame index |")
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        per_frame: list[torch.Tensor] = []
        rows = bench.run_benchmark(model, seed=args.seed, identities=args.identities, frames=args.frames,
                                   animate_fn=variant_animate(engine, clips, variant, per_frame))
        mean = bench.mean_row(rows)
        psnr = torch.stack(per_frame)  # (pairs x identities, frames)
        curve = " ".join(f"{float(v):.1f}" for v in psnr.mean(0))
        print(f"| {variant} | {mean['psnr_db']:.2f} | {float(psnr[:, 1:].mean()):.2f} | {mean['l1']:.4f} | "
              f"{mean['pose_err_deg']:.2f} | {mean['lmk_err_pct']:.2f} | {curve} |", flush=True)
    print("driver's mean |angle - first frame's| per frame index (deg): "
          + " ".join(f"{float(v):.1f}" for v in turn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
