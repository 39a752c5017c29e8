"""Generate ``docs/nodes.md``, the node reference, from the node pack's own definitions.

Usage::

    python docs/make_node_reference.py            # (re)write docs/nodes.md
    python docs/make_node_reference.py --check    # exit 1 if docs/nodes.md is out of date

The pack is loaded the way ComfyUI loads it (``spec_from_file_location`` on the repository root
``__init__.py`` with ``submodule_search_locations=[repo root]``, under a path-like module name), so
ComfyUI itself is not needed. Every entry of ``NODE_CLASS_MAPPINGS`` gets a section, sorted by its
display name: display name, class name, category, description, an inputs table (from ``INPUT_TYPES()``,
in widget order) and an outputs table (``RETURN_TYPES`` with ``RETURN_NAMES`` and ``OUTPUT_TOOLTIPS``).

The output is deterministic: no timestamps, no machine paths, and no file listings. Rule for combos whose
choices come from files on disk (checkpoints, videos, audio, motion files): a combo input is treated as a
file list, and rendered as a fixed description instead of its current choices, when

1. its input name is in ``FILE_COMBOS`` (the description given there is used), or
2. its options carry an upload flag (``image_upload``, ``video_upload``, ``audio_upload``, ...), or
3. any of its choices looks like a file name: contains ``/`` or ``\\``, ends in a file extension
   (``.safetensors``, ``.mp4``, ...), or is a "nothing found" entry such as ``(no video ...)``.

Cases 2 and 3 without an entry in ``FILE_COMBOS`` get the generic description ``GENERIC_FILE_COMBO``;
add the input name to ``FILE_COMBOS`` to say where its files come from. The default of a file combo is not
shown either (it is whatever is listed first).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "docs" / "nodes.md"
SCRIPT = "docs/make_node_reference.py"

#: Combo inputs whose choices are files on disk, by input name -> fixed description.
FILE_COMBOS = {
    "checkpoint": "file from models/anytalk/ (.safetensors, .pth.tar, ...), a LivePortrait weights folder from "
                  "models/liveportrait/ (liveportrait/...), or the bundled demo (demo/...)",
    "video": "video file from ComfyUI's input folder (mp4, webm, mov, mkv, avi, m4v, gif; upload supported)",
    "audio": "audio or video file from ComfyUI's input folder (wav, mp3, flac, m4a, aac, ogg, opus or a video; "
             "upload supported)",
    "motion_file": ".safetensors motion file from ComfyUI's input folder or output/anytalk_motion/",
}
GENERIC_FILE_COMBO = "file from disk (the list depends on the installation)"
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
_FILE_EXT = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,11}(\s*\[[^\]]*\])?$")  # name.ext, name.ext [output]
_PLACEHOLDER = re.compile(r"^\(no .*\)$")


# ------------------------------------------------------------------------------------------------
# Loading the pack (as ComfyUI does; see tests/comfy_harness.py)
# ------------------------------------------------------------------------------------------------

def load_pack():
    """Import the pack from the repository folder under a path-like module name of its own.

    The name differs from the one ``tests/comfy_harness.load_pack`` uses so that both can live in one
    process (a pytest session) without one copy replacing the other's submodules.
    """
    name = "anytalk_docs_x_" + str(REPO_ROOT).replace(os.sep, "_x_").replace(".", "_x_").strip("_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------

def _cell(text) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return f"`{text}`" if text else '`""`'


def _value(value) -> str:
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def _looks_like_file(choice) -> bool:
    text = str(choice)
    return "/" in text or "\\" in text or bool(_FILE_EXT.search(text)) or bool(_PLACEHOLDER.match(text))


def is_file_combo(name: str, choices, options: dict) -> bool:
    """The rule of the module docstring: name in FILE_COMBOS, an upload flag, or file-like choices."""
    return (name in FILE_COMBOS or any(options.get(flag) for flag in UPLOAD_FLAGS)
            or any(_looks_like_file(c) for c in choices))


def _input_row(name: str, required: bool, spec) -> str:
    kind = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    default = "–"
    if isinstance(kind, (list, tuple)):
        if is_file_combo(name, kind, options):
            type_text = "COMBO: " + _cell(FILE_COMBOS.get(name, GENERIC_FILE_COMBO))
        else:
            type_text = "COMBO: " + ", ".join(_code(c) for c in kind)
            if "default" in options:
                default = _value(options["default"])
            elif kind:
                default = _value(kind[0])
    else:
        type_text = f"`{kind}`"
        if "default" in options:
            default = _value(options["default"])
    flags = [f for f in ("multiline", "forceInput", "lazy") if options.get(f)]
    if flags:
        type_text += " (" + ", ".join(flags) + ")"
    bounds = [options.get(k) for k in ("min", "max", "step")]
    range_text = " / ".join("–" if b is None else json.dumps(b) for b in bounds) if any(
        b is not None for b in bounds) else "–"
    return (f"| `{name}` | {'required' if required else 'optional'} | {type_text} | {default} | {range_text} | "
            f"{_cell(options.get('tooltip', '')) or '–'} |")


def _slug(title: str) -> str:
    """GitHub's heading anchor."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _node_section(class_name: str, cls, display: str) -> list[str]:
    lines = [f"## {display}", "", f"- Class: `{class_name}`", f"- Category: `{getattr(cls, 'CATEGORY', '')}`"]
    if getattr(cls, "OUTPUT_NODE", False):
        lines.append("- Output node: yes")
    aliases = getattr(cls, "SEARCH_ALIASES", ())
    if aliases:
        lines.append("- Also found by searching: " + ", ".join(f"*{a}*" for a in aliases))
    lines.append("")
    description = getattr(cls, "DESCRIPTION", "")
    if description:
        lines += [" ".join(str(description).split()), ""]

    inputs = cls.INPUT_TYPES()
    rows = []
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (inputs.get(section) or {}).items():
            rows.append(_input_row(name, required, spec))
    lines += ["### Inputs", ""]
    if rows:
        lines += ["| Name | Required | Type / choices | Default | Min / max / step | Tooltip |",
                  "| --- | --- | --- | --- | --- | --- |", *rows]
    else:
        lines.append("None.")
    lines.append("")

    types = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    names = tuple(getattr(cls, "RETURN_NAMES", ()) or ())
    tips = tuple(getattr(cls, "OUTPUT_TOOLTIPS", ()) or ())
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", ()) or ())
    lines += ["### Outputs", ""]
    if types:
        lines += ["| # | Name | Type | Tooltip |", "| --- | --- | --- | --- |"]
        for i, kind in enumerate(types):
            name = names[i] if i < len(names) else str(kind).lower()
            type_text = f"`{kind}`" + (" (list)" if i < len(is_list) and is_list[i] else "")
            tip = _cell(tips[i]) if i < len(tips) else ""
            lines.append(f"| {i} | `{name}` | {type_text} | {tip or '–'} |")
    else:
        lines.append("None.")
    lines.append("")
    return lines


def render(pack=None) -> str:
    """The full text of docs/nodes.md."""
    pack = pack or load_pack()
    classes = pack.NODE_CLASS_MAPPINGS
    displays = getattr(pack, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {}
    order = sorted(classes, key=lambda k: (str(displays.get(k, k)).casefold(), k))
    lines = [
        "# AnyTalk node reference",
        "",
        f"<!-- Generated by {SCRIPT} from the node definitions; do not edit by hand. -->",
        f"<!-- Regenerate with: python {SCRIPT} -->",
        "",
        f"{len(order)} nodes, sorted by display name. Inputs are listed in widget order; a combo whose choices "
        "are files on disk is described instead of listed.",
        "",
    ]
    for key in order:
        display = str(displays.get(key, key))
        lines.append(f"- [{display}](#{_slug(display)})")
    lines.append("")
    for key in order:
        lines += _node_section(key, classes[key], str(displays.get(key, key)))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/nodes.md from the node definitions.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be generated")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"file to write or check (default: {OUTPUT})")
    args = parser.parse_args(argv)

    pack = load_pack()
    text = render(pack)
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{args.output} is out of date: run `python {SCRIPT}`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    atomic_output = importlib.import_module(f"{pack.__name__}.anytalk_core.io_utils").atomic_output
    with atomic_output(args.output, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
