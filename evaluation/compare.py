"""Metrics of frames generated elsewhere (e.g. by a baseline) against reference frames: L1, LPIPS, CPBD,
AKD, AED, PSNR, CSIM and FID, one table row.

--generated and --reference are each a video, a folder of frames, or a folder of clips matched by name.
Frames are compared as they are (pass --size N to compare both at N x N after the full-frame square crop).
CSIM compares with --source when given, else with the reference frames. AKD may come from landmark arrays
computed elsewhere (--landmarks-generated/--landmarks-reference, (N, P, 2) .npy/.npz, pixels).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import _cli_common as common
from .metrics import read_landmarks
from .protocols import FOLDER_METRICS, evaluate_folders, list_clips


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generated", required=True, metavar="PATH", help="generated frames or clips")
    p.add_argument("--reference", required=True, metavar="PATH", help="reference (ground-truth) frames or clips")
    p.add_argument("--label", metavar="NAME", help="row name (default: the --generated folder's name)")
    p.add_argument("--source", metavar="IMAGE", help="source portrait for CSIM")
    p.add_argument("--size", type=common.positive_int, metavar="N", help="compare at N x N")
    p.add_argument("--chunk", type=common.positive_int, default=8, help="frames read at a time")
    p.add_argument("--device", default="auto", help="device for the metric networks")
    p.add_argument("--landmarks-generated", metavar="FILE", help="(N, P, 2) landmarks of the generated frames")
    p.add_argument("--landmarks-reference", metavar="FILE", help="(N, P, 2) landmarks of the reference frames")
    common.add_metric_arguments(p, FOLDER_METRICS)
    common.add_output_arguments(p, "metrics")


@common.guarded
def run(args: argparse.Namespace) -> int:
    if bool(args.landmarks_generated) != bool(args.landmarks_reference):
        raise ValueError("give both --landmarks-generated and --landmarks-reference, or neither")
    generated, reference = list_clips(args.generated), list_clips(args.reference)
    landmarks = None
    if args.landmarks_generated:
        landmarks = (read_landmarks(args.landmarks_generated), read_landmarks(args.landmarks_reference))
    # AKD from landmark arrays needs no detector
    backends = common.load_backends(args, FOLDER_METRICS, provided=("akd",) if landmarks is not None else ())
    if landmarks is not None and "akd" in backends.metrics:
        backends.described["akd"] = "landmark arrays given on the command line"
    label = args.label or Path(args.generated).stem
    values, notes, counts = evaluate_folders(generated, reference, backends, args.size, args.source, landmarks,
                                             args.chunk, common.progress_printer(args, label))
    meta = {"protocol": "paired frames", "generated": args.generated, "reference": args.reference,
            "frames": f"compared at {args.size} x {args.size}" if args.size else "compared at their own size"}
    return common.finish(args, [(label, values, notes, counts)], backends, "Paired frame metrics", meta)
