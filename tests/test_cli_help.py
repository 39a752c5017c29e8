"""Every command line of the project: help written for users, and one error line for every usage error."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from anytalk_app.cli import main as anytalk_main
from anytalk_eval.cli import SUBCOMMANDS as EVAL_COMMANDS
from anytalk_eval.cli import main as eval_main
from anytalk_training.cli import main as train_main

MAINS = {"anytalk": anytalk_main, "anytalk-train": train_main, "anytalk-eval": eval_main}
HELP_PAGES = [("anytalk", []), ("anytalk", ["convert"]), ("anytalk", ["animate"]), ("anytalk", ["demo"]),
              ("anytalk-train", []), ("anytalk-eval", []), *[("anytalk-eval", [c]) for c in EVAL_COMMANDS]]
MARKUP = re.compile(r"``|:(func|class|mod|data|meth|attr|ref):`")


def help_page(prog: str, words: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        MAINS[prog]([*words, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("prog,words", HELP_PAGES, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_help_is_plain_text_for_users(prog, words, capsys):
    page = help_page(prog, words, capsys)
    assert page.startswith(f"usage: {' '.join([prog, *words])}")
    assert not MARKUP.search(page), MARKUP.search(page)
    assert len(page.splitlines()) < 90  # options and examples; the long explanations live in the READMEs


def test_animate_help_shows_defaults_and_explains_every_option(capsys):
    page = " ".join(help_page("anytalk", ["animate"], capsys).split())
    for default in ("(default: full)", "(default: 8)", "(default: 0.0)", "(default: auto)"):
        assert default in page
    assert page.count("(default: 1.0)") == 3  # the three strengths
    for option in ("--pose-strength", "--expression-strength", "--translation-strength", "--precision"):
        described = re.search(re.escape(option) + r" \S+ (\S+)", page.split(" options: ", 1)[1])
        assert described and described.group(1) != "(default", option
    assert "--upscale PX" in page and "no detail" in page


def test_precision_choices_are_the_engines():
    """The CLI spells the engine's choices out (its --help imports no torch): the two lists stay one."""
    from anytalk_app import cli
    from anytalk_core.engine import PRECISION_CHOICES

    assert cli.PRECISION_CHOICES == PRECISION_CHOICES


def test_demo_help_names_the_training_stages(capsys):
    page = " ".join(help_page("anytalk", ["demo"], capsys).split())
    for config in ("demo.toml", "demo_stage2.toml", "demo_stage3.toml", "demo128.toml"):
        assert config in page
    assert "(default: 256)" in page and "created if missing" in page


def test_eval_help_imports_no_subcommand():
    """``anytalk-eval --help`` lists the commands without importing them (torch and the metrics take seconds)."""
    code = ("import sys\nfrom anytalk_eval.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('anytalk_eval.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['anytalk_eval.cli']"


USAGE_ERRORS = [
    ("anytalk", []),
    ("anytalk", ["fly"]),
    ("anytalk", ["--bogus"]),
    ("anytalk", ["convert"]),
    ("anytalk", ["convert", "a", "b", "--family"]),
    ("anytalk", ["animate", "--source", "s.png", "--checkpoint", "c", "--out", "o.mp4", "--chunk", "0"]),
    ("anytalk", ["animate", "--source", "s.png", "--checkpoint", "c", "--out", "o.mp4", "--smooth", "x"]),
    ("anytalk", ["animate", "--source", "s.png", "--checkpoint", "c", "--out", "o.mp4", "--precision", "fp8"]),
    ("anytalk", ["animate", "--source", "s.png", "--checkpoint", "c", "--out", "o.mp4", "--relative", "--absolute"]),
    ("anytalk", ["animate", "--source", "s.png", "--checkpoint", "c", "--out", "o.mp4", "--upscale", "-3"]),
    ("anytalk", ["animate", "--out", "o.mp4"]),
    ("anytalk", ["demo", "--tile", "0"]),
    ("anytalk", ["demo", "--format", "avi"]),
    ("anytalk-train", []),
    ("anytalk-train", ["config.toml", "--bogus"]),
    ("anytalk-eval", []),
    ("anytalk-eval", ["bogus"]),
    ("anytalk-eval", ["synthetic"]),
    ("anytalk-eval", ["synthetic", "--checkpoint", "c", "--frames", "x"]),
    ("anytalk-eval", ["reconstruction", "--bogus"]),
    ("anytalk-eval", ["reenactment"]),
    ("anytalk-eval", ["metrics", "--size", "0"]),
]


@pytest.mark.parametrize("prog,words", USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_usage_error_is_one_line_and_exit_status_2(prog, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        MAINS[prog](words)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    assert "usage:" not in captured.err
