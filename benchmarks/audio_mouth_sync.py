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

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from anytalk_core import synthetic  # noqa: E402
from anytalk_core.checkpoints import load_model  # noqa: E402
from anytalk_core.engine import Engine, EngineConfig  # noqa: E402
from anytalk_training.audio2motion import mouth_metrics  # noqa: E402

MOUTH = [i for i, n in enumerate(synthetic.LANDMARK_NAMES) if n.startswith(("mouth", "lip"))]


def mouth_box(landmarks: torch.Tensor, size: int) -> tuple[slice, slice]:
    """Rows and columns around the mouth landmarks [L, 2] (pixels), with room for an open jaw below."""
    pts = landmarks[MOUTH]
    x0, y0 = (int(v) for v in pts.min(0).values.floor())
    x1, y1 = (int(v) for v in pts.max(0).values.ceil())
    return slice(max(0, y0 - 2), min(size, y1 + 6)), slice(max(0, x0 - 2), min(size, x1 + 3))


def clip_pairs(engine: Engine, clips: int, seconds: float, fps: float = 25.0,
               pose_strength: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    size = int(engine.model.config.image_size)
    n = int(round(seconds * fps))
    rest = engine.rest_motion(fps)
    pairs = []
    for i in range(clips):
        identity = synthetic.sample_identity(synthetic.DOMAINS[i % 3], 50_000 + i)
        portrait = synthetic.render_batch(identity, torch.tensor([[0, 0, 0, 0, 0, 1.0]]), torch.zeros(1, 7), size)
        _pose, expression, speech = synthetic.sample_motion(n, fps, np.random.default_rng([60_000, i]), with_audio=True)
        state = engine.prepare_source(portrait.images[0].permute(2, 0, 1)[None])
        motion = engine.audio_motion((speech.waveform, speech.sample_rate), fps, n_frames=n, pose_strength=pose_strength)
        frames = torch.cat(list(engine.render(state, engine.driven_keypoints(state, motion, reference=rest))))
        still = torch.cat(list(engine.render(state, state.keypoints.cpu())))
        rows, cols = mouth_box(portrait.landmarks[0], size)
        change = (frames[:, :, rows, cols] - still[:, :, rows, cols]).abs().mean(dim=(1, 2, 3))
        pairs.append((change, expression[:, 0]))
    return pairs


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
    engine = Engine(load_model(args.checkpoint), EngineConfig(device="cpu"))
    m = mouth_metrics(clip_pairs(engine, args.clips, args.seconds, pose_strength=args.pose_strength))
    print(f"rendered mouth change vs. true jaw opening over {args.clips} held-out clips (pose strength "
          f"{args.pose_strength:g}): r = {m['r']:.3f}, "
          f"lag = {m['lag']} frames (r at that lag {m['r_at_lag']:.3f})")


if __name__ == "__main__":
    main()
