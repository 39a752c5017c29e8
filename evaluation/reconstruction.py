"""Same-identity reconstruction: each clip's first frame is the source, the rest drive it, and every
generated frame is compared with the driving frame it reproduces (the seed's Tables 2 and 4: L1, LPIPS,
CPBD, AKD, AED; plus PSNR, CSIM to the source frame, and FID against the ground-truth frames).

--videos is a video, a folder of frames, or a folder of videos and/or frame folders (one clip each).
Writes NAME.md, NAME.csv and NAME.json into --out (never overwriting) and prints the table.
"""
from __future__ import annotations

import argparse

from anytalk_core.models.base import TransferOptions

from . import _cli_common as common
from .protocols import RECONSTRUCTION_METRICS, evaluate_reconstruction, list_clips


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", required=True, metavar="PATH", help="clips to reconstruct (see above)")
    p.add_argument("--max-clips", type=common.positive_int, metavar="N", help="use only the first N clips")
    p.add_argument("--relative", action="store_true",
                   help="relative motion instead of absolute (the default for reconstruction)")
    common.add_model_arguments(p)
    common.add_metric_arguments(p, RECONSTRUCTION_METRICS)
    common.add_output_arguments(p, "reconstruction")


@common.guarded
def run(args: argparse.Namespace) -> int:
    clips = list_clips(args.videos)[: args.max_clips]
    backends = common.load_backends(args, RECONSTRUCTION_METRICS)
    engines = common.load_engines(args)
    transfer = TransferOptions(mode="relative" if args.relative else "absolute")
    results = []
    for label, engine in engines:
        values, notes, counts = evaluate_reconstruction(engine, clips, backends, transfer, args.max_frames,
                                                        common.progress_printer(args, label))
        results.append((label, values, notes, counts))
    meta = {"protocol": "same-identity reconstruction: frame 0 is the source, frames 1.. drive and are the ground truth",
            "videos": args.videos, "motion": transfer.mode,
            "frames": "compared at the model's resolution, 8-bit"
                      + (f", at most {args.max_frames} per clip" if args.max_frames else "")}
    return common.finish(args, results, backends, "Same-identity reconstruction", meta)
