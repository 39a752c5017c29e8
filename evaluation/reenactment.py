"""Cross-identity / cross-domain reenactment: source portraits driven by other clips (no ground truth), the
seed's Tables 1 and 3: FID (generated frames vs the real source portraits, or the driving frames), CSIM
(identity kept from the source) and CPBD (sharpness).

--sources is a folder of images; --drivers a video, a folder of frames, or a folder of clips. Pairing
`cycle` (default) makes max(sources, drivers) pairs, each source and driver used in turn; `all` pairs every
source with every driver. Writes NAME.md/.csv/.json into --out (never overwriting) and prints the table.
"""
from __future__ import annotations

import argparse

from anytalk_core.models.base import TransferOptions

from . import _cli_common as common
from .protocols import REENACTMENT_METRICS, evaluate_reenactment, list_clips, list_images


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sources", required=True, metavar="DIR", help="folder of source portrait images")
    p.add_argument("--drivers", required=True, metavar="PATH", help="driving clips (see above)")
    p.add_argument("--pairing", default="cycle", choices=["cycle", "all"], help="how sources meet drivers")
    p.add_argument("--fid-reference", default="sources", choices=["sources", "drivers"],
                   help="FID's real set: the source portraits (default) or the driving frames")
    p.add_argument("--absolute", action="store_true", help="absolute motion instead of relative (the default)")
    p.add_argument("--adapt-scale", action="store_true", help="relative motion scaled by the keypoint hulls' ratio")
    common.add_model_arguments(p)
    common.add_metric_arguments(p, REENACTMENT_METRICS)
    common.add_output_arguments(p, "reenactment")


@common.guarded
def run(args: argparse.Namespace) -> int:
    sources = list_images(args.sources)
    if not sources:
        raise ValueError(f"{args.sources}: no images found")
    drivers = list_clips(args.drivers)
    backends = common.load_backends(args, REENACTMENT_METRICS)
    engines = common.load_engines(args)
    transfer = TransferOptions(mode="absolute" if args.absolute else "relative", adapt_scale=args.adapt_scale)
    results = []
    for label, engine in engines:
        values, notes, counts = evaluate_reenactment(engine, sources, drivers, backends, transfer, args.pairing,
                                                     args.fid_reference, args.max_frames,
                                                     common.progress_printer(args, label))
        results.append((label, values, notes, counts))
    meta = {"protocol": "cross-identity reenactment: source portraits x driving clips, no ground truth",
            "sources": f"{args.sources} ({len(sources)} images)", "drivers": f"{args.drivers} ({len(drivers)} clips)",
            "pairing": args.pairing, "motion": transfer.mode, "FID real set": args.fid_reference}
    return common.finish(args, results, backends, "Cross-identity reenactment", meta)
