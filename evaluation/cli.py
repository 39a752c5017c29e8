"""``anytalk-eval``: evaluate talking-head models with the paper's metrics and protocols.

Subcommands are registered in :data:`SUBCOMMANDS` as ``name -> module``; each module provides
``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from anytalk_app.args import OneLineErrorParser

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module inside anytalk_eval, one-line help)
    "synthetic": ("synthetic", "synthetic ground-truth benchmark: 9 domain pairs, pose/landmark error, L1, PSNR"),
    "reconstruction": ("reconstruction", "same-identity reconstruction of real clips: L1, LPIPS, CPBD, AKD, AED (+PSNR, CSIM, FID)"),
    "reenactment": ("reenactment", "cross-identity / cross-domain reenactment: FID, CSIM, CPBD"),
    "metrics": ("compare", "metrics of frames generated elsewhere against reference frames"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (its options), so ``anytalk-eval --help`` is instant.

    ``command="*"`` imports every subcommand (the documentation and the tests list every option).
    """
    p = OneLineErrorParser(prog="anytalk-eval", description=__doc__.splitlines()[0].split(": ", 1)[1],
                           epilog="Each command's options: anytalk-eval COMMAND --help. What the protocols and "
                                  "metrics measure: evaluation/README.md.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.\n"
                            "What it measures and how: evaluation/README.md.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if command in (name, "*"):
            mod = importlib.import_module(f"{__package__}.{module}")
            mod.add_arguments(sp)
            sp.set_defaults(_module=mod)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no option with a value
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("anytalk-eval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
