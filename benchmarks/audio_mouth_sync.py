"""Audio-driven lip sync measured on rendered frames (not a test): does speech move the generated mouth?

    python benchmarks/audio_mouth_sync.py CHECKPOINT [--clips 6] [--seconds 5] [--threads 1]

For held-out synthetic portraits (one per clip, frontal, mouth closed; the three domains in turn) and
synthetic speech whose energy envelope is the renderer's true jaw opening, the checkpoint's audio-to-motion
part drives the portrait (relative to its silent face) through the whole renderer. The mouth region's mean
absolute change from the undriven portrait, frame by frame, is compared with the true jaw opening: Pearson
r over all frames and the lag (frames) at the peak of their cross-correlation (positive = the mouth moves
late). The training run's own held-out numbers (``eval.json``) measure the network's outputs; this one the
pictures a user sees, so it also depends on how well the base model renders mouth movement.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from anytalk_core.checkpoints import load_model  # noqa: E402
from anytalk_eval.following import audio_mouth_following  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pose-strength", type=float, default=0.0,
                   help="how much of the audio-predicted head motion to apply (default 0: the mouth box then sees "
                        "the mouth alone; 1 moves the head too, which the box also sees)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    m = audio_mouth_following(load_model(args.checkpoint), args.clips, args.seconds, pose_strength=args.pose_strength)
    print(f"rendered mouth change vs. true jaw opening over {args.clips} held-out clips (pose strength "
          f"{args.pose_strength:g}): r = {m['r']:.3f}, "
          f"lag = {m['lag']} frames (r at that lag {m['r_at_lag']:.3f})")


if __name__ == "__main__":
    main()
