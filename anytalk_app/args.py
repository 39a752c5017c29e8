"""Command-line helpers shared by every command line of the project (``anytalk``, ``anytalk-train``,
``anytalk-eval``): the one-line-error parser, the help formatter and argument types."""
from __future__ import annotations

import argparse
import math
from typing import NoReturn


def finite(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (shared by every command line of the project)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with the project's error promise: a usage error is one line, ``PROG: error: MESSAGE (see ...)``,
    and exit status 2, without the usage block. Every command line of the project uses it; the parsers of
    subcommands inherit it (``add_subparsers`` builds them with the parent's class)."""

    def error(self, message: str) -> NoReturn:
        root = self.prog.split()[0]
        self.exit(2, f"{root}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples as written; every option that has a value by default says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)
