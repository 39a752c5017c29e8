"""The ``anytalk`` command line: ``anytalk convert`` (and more subcommands as they land).

Every failure prints one line ``anytalk: error: ...`` and exits with a non-zero status; nothing is written.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__


def _convert(args: argparse.Namespace) -> int:
    from .checkpoints import convert, read_weights

    family = args.family.replace("-", "_")
    dst = convert(args.src, args.dst, family=family, overwrite=args.overwrite)
    weights = read_weights(dst)
    print(f"wrote {dst} ({weights.family}, {len(weights.state)} tensors)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anytalk", description="AnyTalk talking-head tools")
    parser.add_argument("--version", action="version", version=f"anytalk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="convert a face-vid2vid / LivePortrait checkpoint to AnyTalk .safetensors")
    p.add_argument("src", help="checkpoint file (.pth.tar, .pth, .safetensors) or LivePortrait folder")
    p.add_argument("dst", help="output .safetensors path (never overwritten unless --overwrite)")
    p.add_argument("--family", default="auto",
                   help="auto (default), face-vid2vid, liveportrait-human or liveportrait-animal")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        print(f"anytalk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anytalk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
