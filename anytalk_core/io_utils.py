"""File-safety helpers shared by every writer: atomic writes and never overwriting a user's file."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["unique_path", "check_can_write", "atomic_output", "new_temp_path", "remove_stale_temp_files", "commit",
           "discard"]


def unique_path(path: str | os.PathLike, digits: int = 5) -> Path:
    """A new, non-existing ``stem_00001.ext`` name beside ``path`` (numbered after the highest in use).

    The counter continues after the highest number already present, ComfyUI style, so outputs sort by
    creation order and nothing is ever overwritten.
    """
    p = Path(path).expanduser()
    stem, suffix = p.stem, p.suffix
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+){re.escape(suffix)}$")
    used = [int(m.group(1)) for f in _listdir(p.parent) if (m := pattern.match(f))]
    n = max(used, default=0) + 1
    while True:  # a file may appear between the listing and now
        candidate = p.with_name(f"{stem}_{n:0{digits}d}{suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def check_can_write(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path, raising FileExistsError if it exists and ``overwrite`` is False."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"output path is a directory: {p}")
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"refusing to overwrite existing file: {p} (choose another name, or allow overwriting: --overwrite / overwrite=True)"
        )
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place, on error delete it."""
    final = check_can_write(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_path(final)
    try:
        yield tmp
        _apply_umask(tmp)
        commit(tmp, final, overwrite)
    except BaseException:
        discard(tmp)
        raise


def _apply_umask(path: Path) -> None:
    """Give a finished file the user's usual permissions (some writers create theirs with mode 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


#: Temporary files are ``.<name>.<host>p<pid>r<random>.tmp<suffix>`` beside the file being written: the writing
#: machine (a hash of its host name) and process id tell a later writer which are left over from a killed run.
_TEMP_NAME = re.compile(r"^\..*\.([0-9a-f]{6})p(\d+)r[0-9a-f]{8}\.tmp(\.[^.]*)?$")
_TEMP_STEM_CHARS = 100


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "surrogatepass")).hexdigest()[:6]


def new_temp_path(final: Path) -> Path:
    """Create an empty hidden temp file next to ``final`` (same file system, so the rename is atomic).

    Its name carries this machine and process (``.NAME.<host>p<pid>r<hex>.tmp.EXT``); stale temp files of
    processes that no longer run (killed mid-write) in the same folder are removed first.
    """
    remove_stale_temp_files(final.parent)
    tag = f"{_host_tag()}p{os.getpid()}"
    while True:
        tmp = final.with_name(f".{final.stem[:_TEMP_STEM_CHARS]}.{tag}r{secrets.token_hex(4)}.tmp{final.suffix}")
        try:
            # open(..., "x") rather than mkstemp: the file gets the user's umask, not mode 0600.
            with open(tmp, "xb"):
                return tmp
        except FileExistsError:
            continue


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files (see :func:`new_temp_path`) in ``folder`` whose writer, a process on this machine,
    no longer runs; returns them. Temp files of live processes, of other machines (shared folders) and any other
    file are left alone."""
    removed = []
    host = _host_tag()
    for name in _listdir(Path(folder)):
        m = _TEMP_NAME.match(name)
        if m is None or m.group(1) != host or _process_alive(int(m.group(2))):
            continue
        path = Path(folder) / name
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _process_alive(pid: int) -> bool:
    """True if process ``pid`` runs on this machine (or it cannot be told, e.g. on Windows)."""
    if pid == os.getpid():
        return True
    if pid <= 0 or os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or unknown: keep its file
    return True


def commit(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``final``; without ``overwrite`` this never replaces a file, even in a race."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails with FileExistsError instead of clobbering
    except FileExistsError:
        raise FileExistsError(f"refusing to overwrite existing file: {final} (it appeared while writing)") from None
    except OSError:  # file system without hard links
        if final.exists():
            raise FileExistsError(f"refusing to overwrite existing file: {final} (it appeared while writing)") from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


def discard(tmp: Path) -> None:
    """Remove a temporary file if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _listdir(folder: Path) -> list[str]:
    """Names in ``folder``, or nothing if it does not exist yet."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
