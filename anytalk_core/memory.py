"""Process memory on Linux/glibc: keep the peak resident set close to what is live (no-ops elsewhere)."""
from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt`` (parameter, value) settings in order; False where there is no glibc or one is refused."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return all(libc.mallopt(param, value) for param, value in settings)


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Serve every allocation of ``threshold`` bytes or more from its own memory map, returned to the OS when
    freed. glibc otherwise raises its threshold as large blocks are freed and serves them from the heap, where
    a frame's activations fragment it: measured on the full-size CLI run, its render stage peaked at 1.36 GiB
    with the default and 1.00 GiB with this.
    For one-shot processes (the CLI), not for a host application's shared process. True when it was set."""
    return _mallopt((_M_MMAP_THRESHOLD, int(threshold)))


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed memory there for the next frame's tensors: the opposite
    of :func:`map_large_allocations`. Mapped blocks cost the kernel fresh zero-filled pages on every allocation
    (~2 GiB per full-size frame); measured on 8 full-size frames of the CLI on a 2-core AMD EPYC: 24-27 s against
    36-40 s, with a peak of 1.10-1.36 GiB against 0.92. For one-shot processes (``anytalk animate --memory fast``),
    not for a host application's shared process. True when it was set."""
    return _mallopt((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30))
