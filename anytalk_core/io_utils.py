"""File-safety helpers shared by every writer: atomic writes and never overwriting a user's file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is False, before anything is written.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: already exists; choose another name or allow overwriting")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: the folder {directory} does not exist")
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def unique_path(path: str | os.PathLike) -> str:
    """``path`` if it does not exist, else the first free ``name_00001.ext``, ``name_00002.ext``, ..."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return path
    base, ext = os.path.splitext(path)
    i = 1
    while os.path.exists(f"{base}_{i:05d}{ext}"):
        i += 1
    return f"{base}_{i:05d}{ext}"
