"""Input-file helpers shared by the nodes that read files (video, audio, motion, checkpoints)."""
from __future__ import annotations

import os
from pathlib import Path

from . import _comfy
from ._objects import AnyTalkError


def resolve_input_file(name: str, path: str, kind: str) -> Path:
    """A typed path wins over the chosen name from ComfyUI's input folder; either must be an existing file."""
    if path and path.strip():
        p = Path(os.path.expanduser(path.strip()))
    else:
        if not name or name.startswith("(no "):
            raise AnyTalkError(f"no {kind} file chosen: put one in ComfyUI's input folder (or upload it) or type a path")
        try:
            p = _comfy.annotated_path(name)
        except ValueError as exc:
            raise AnyTalkError(str(exc)) from None
    if not p.is_file():
        raise AnyTalkError(f"{kind} file not found: {p}")
    return p


def file_signature(path: Path) -> str:
    """Changes whenever the file (or any file in the folder) changes: for ComfyUI's IS_CHANGED."""
    if path.is_dir():
        stats = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.rglob("*")) if p.is_file()]
        return f"{path}:{stats!r}"
    st = path.stat()
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"
