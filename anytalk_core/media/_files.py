"""Path helpers of the media readers and writers: input checks and FFmpeg errors (file safety is io_utils')."""
from __future__ import annotations

import os
from pathlib import Path

import av

from ..io_utils import atomic_output, check_can_write, commit, discard, new_temp_path, unique_path

__all__ = [
    "check_input_file",
    "open_media",
    "media_error",
    "unique_path",
    "check_can_write",
    "atomic_output",
    "new_temp_path",
    "commit",
    "discard",
]


def check_input_file(path: str | os.PathLike, kind: str) -> Path:
    """Return ``path`` as a Path, raising FileNotFoundError/ValueError naming it if it cannot be read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{kind} file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{kind} path is a directory, not a file: {p}")
    if p.stat().st_size == 0:
        raise ValueError(f"{kind} file is empty: {p}")
    return p


def open_media(path: Path, kind: str) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning FFmpeg's errors into one ValueError line that names the file."""
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as e:
        raise media_error(path, kind, e) from None


def media_error(path: Path, kind: str, error: BaseException) -> ValueError:
    """A one-line ValueError for an FFmpeg failure on ``path``."""
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return ValueError(f"not a readable {kind} file: {path} ({reason})")


