"""Input-file helpers shared by the nodes that read files (video, audio, motion, checkpoints)."""
from __future__ import annotations

from pathlib import Path

from . import _comfy
from ._objects import AnyTalkError

#: Tooltip text of the load nodes' ``path`` widget.
TYPED_PATH_NOTE = ("It must lie in ComfyUI's input, output or temp folder (absolute, or relative to input/), or in a "
                   "folder the server's owner lists in ANYTALK_EXTRA_INPUT_ROOTS.")


def resolve_input_file(name: str, path: str, kind: str) -> Path:
    """The file a load node reads: a typed ``path`` wins over the ``name`` chosen from ComfyUI's input folder.

    Every node that reads a file goes through here. The nodes run inside ComfyUI, where whoever queues a prompt
    may not be the server's owner, so a typed path (absolute, ``~`` or relative to the input folder) is normalised
    as written and must lie in ComfyUI's input, output or temp folder or one the owner lists in
    ``$ANYTALK_EXTRA_INPUT_ROOTS`` (symlinks placed inside those folders are followed). A path outside gets the
    same refusal whether or not the file exists. The CLI and the Python API read any path.
    """
    try:
        if path and path.strip():
            p, shown_name = _comfy.confined_path(path, f"{kind} path"), path.strip()
        else:
            if not name or name.startswith("(no "):
                raise AnyTalkError(f"no {kind} file chosen: put one in ComfyUI's input folder (or upload it) or "
                                   "type a path")
            p, shown_name = _comfy.annotated_path(name), name
        is_file = p.is_file()
    except AnyTalkError:
        raise
    except ValueError as exc:
        raise AnyTalkError(str(exc)) from None
    except OSError as exc:
        raise AnyTalkError(f"cannot read {kind} file {_comfy.shown(shown_name)}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    if not is_file:
        raise AnyTalkError(f"{kind} file not found: {_comfy.shown(shown_name)}")
    return p


def validate_typed_path(path: str, kind: str) -> bool | str:
    """VALIDATE_INPUTS of a load node: checks only the typed ``path`` (when set), so one problem is reported once.

    ComfyUI reports a VALIDATE_INPUTS message against every input the method names; the file list beside the path
    keeps ComfyUI's own check (the chosen name must be one of the listed files).
    """
    if not path or not path.strip():
        return True
    try:
        resolve_input_file("", path, kind)
    except AnyTalkError as exc:
        return str(exc)
    return True


def validate_save_prefix(filename_prefix) -> bool | str:
    """VALIDATE_INPUTS of a saving node: a ``filename_prefix`` that would fail at the save is refused when the
    prompt is queued, before any upstream node runs. A prefix fed by a link (not given here) is checked at the save."""
    if not isinstance(filename_prefix, str):
        return True
    try:
        _comfy.check_save_prefix(filename_prefix)
    except ValueError as exc:
        return str(exc)
    return True


def file_signature(path: Path) -> str:
    """Changes whenever the file (or any file in the folder) changes: for ComfyUI's IS_CHANGED."""
    if path.is_dir():
        stats = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.rglob("*")) if p.is_file()]
        return f"{path}:{stats!r}"
    st = path.stat()
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"
