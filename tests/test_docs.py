"""Documentation checks: the generated node reference is current, and the CLI help has descriptions and examples."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from anytalk_app import cli
from anytalk_core import __version__

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "docs" / "make_node_reference.py"
REFERENCE = REPO_ROOT / "docs" / "nodes.md"


@pytest.fixture(scope="module")
def make_ref():
    name = "anytalk_make_node_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_node_reference_is_up_to_date(make_ref):
    expected = make_ref.render()
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert committed == expected, (
        "docs/nodes.md is out of date with the node definitions: run `python docs/make_node_reference.py` "
        "and commit docs/nodes.md")


def test_node_reference_covers_every_node_and_hides_file_lists(make_ref):
    pack = make_ref.load_pack()
    text = make_ref.render(pack)
    for key, display in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        assert f"## {display}\n" in text and f"`{key}`" in text
    assert "(no AnyTalk checkpoint found)" not in text and "(no video in the input folder)" not in text
    assert "file from models/anytalk/" in text
    assert make_ref.render(pack) == text  # deterministic


def test_file_combo_rule(make_ref):
    assert make_ref.is_file_combo("checkpoint", ["a"], {})
    assert make_ref.is_file_combo("clip", ["x/y.mp4"], {})
    assert make_ref.is_file_combo("clip", ["a.safetensors"], {})
    assert make_ref.is_file_combo("clip", ["m.safetensors [output]"], {})
    assert make_ref.is_file_combo("clip", ["(no clip found)"], {})
    assert make_ref.is_file_combo("clip", ["a"], {"video_upload": True})
    assert not make_ref.is_file_combo("mode", ["relative", "absolute", "auto (first frame)", "0.5"], {})


def test_node_reference_check_mode(make_ref, tmp_path, capsys):
    out = tmp_path / "nodes.md"
    assert make_ref.main(["--check", "--output", str(out)]) == 1  # missing
    assert make_ref.main(["--output", str(out)]) == 0
    assert make_ref.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert make_ref.main(["--check", "--output", str(out)]) == 1
    assert "make_node_reference.py" in capsys.readouterr().err


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv, options", [
    (["--help"], ["convert", "animate", "--version"]),
    (["convert", "--help"], ["src", "dst", "--family", "--overwrite"]),
    (["animate", "--help"], ["--source", "--driving", "--checkpoint", "--out", "--family", "--absolute", "--crop",
                             "--driving-crop", "--paste-back", "--smooth", "--chunk", "--precision", "--device"]),
])
def test_help_has_description_examples_and_options(argv, options, capsys):
    text = _help(argv, capsys)
    assert "examples:" in text
    examples = text.split("examples:", 1)[1]
    command = argv[0] if argv[0] != "--help" else ""
    assert examples.count(f"anytalk {command}".rstrip()) >= 2
    for option in options:
        assert option in text
    # RawDescriptionHelpFormatter keeps the examples' line breaks and continuation backslashes
    assert "\\\n      --" in examples or argv == ["convert", "--help"]


def test_version(capsys):
    assert _help(["--version"], capsys).strip() == f"anytalk {__version__}"
