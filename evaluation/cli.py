"""``anytalk-eval``: evaluate talking-head models with the paper's metrics and protocols.

Subcommands are registered in :data:`SUBCOMMANDS` as ``name -> module``; each module provides
``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module inside anytalk_eval, one-line help)
    "synthetic": ("synthetic", "synthetic ground-truth benchmark: 9 domain pairs, pose/landmark error, L1, PSNR"),
    "reconstruction": ("reconstruction", "same-identity reconstruction of real clips: L1, LPIPS, CPBD, AKD, AED (+PSNR, CSIM, FID)"),
    "reenactment": ("reenactment", "cross-identity / cross-domain reenactment: FID, CSIM, CPBD"),
    "metrics": ("compare", "metrics of frames generated elsewhere against reference frames"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anytalk-eval", description=__doc__.splitlines()[0].split(": ", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(f"{__package__}.{module}")
        sp = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_module=mod)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("anytalk-eval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
