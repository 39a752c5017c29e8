"""The process-memory helpers the one-shot CLI uses (anytalk_core.memory)."""
from __future__ import annotations

import subprocess
import sys

import pytest

_PRELUDE = (
    "import torch\n"
    "from anytalk_core.memory import keep_freed_memory, map_large_allocations\n"
    "def rss():\n"
    "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
)


def _in_child(code: str) -> list[int] | None:
    """Run ``code`` (whose first printed word is the helper's result) in a fresh process: the settings are
    process-wide and permanent. The other printed numbers on Linux/glibc; None elsewhere, where the helpers are
    no-ops that say so."""
    result = subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ok, *numbers = result.stdout.split()
    if not sys.platform.startswith("linux"):
        assert ok == "False"
        return None
    assert ok == "True"
    return [int(n) for n in numbers]


def test_large_allocations_are_mapped_and_returned_in_a_fresh_process():
    """On Linux/glibc the CLI's lean setting applies and a tensor freed afterwards leaves the resident set at once."""
    mib = _in_child(
        "ok = map_large_allocations()\n"
        "torch.ones(1 << 20).sum()  # a large block freed: glibc would raise its threshold past 4 MiB\n"
        "before = rss()\n"
        "big, small = [], []\n"
        "for _ in range(32):  # 4 MiB blocks between small ones that stay: a fragmented heap\n"
        "    big.append(torch.ones(1 << 20)); small.append(torch.ones(4096))\n"
        "held = rss()\n"
        "del big\n"
        "print(ok, (held - before) // 1024, (rss() - before) // 1024)\n")
    if mib is None:
        pytest.skip("not Linux/glibc: the helper is a no-op")
    held, after = mib
    assert held >= 100 and after <= 8, mib  # 128 MiB held, then given back


def test_fast_memory_keeps_freed_blocks_in_a_fresh_process():
    """``--memory fast``: every block comes from the heap and freed blocks stay resident for the next frame's
    tensors (where the lean setting gives them back at once: the test above)."""
    mib = _in_child(
        "ok = keep_freed_memory()\n"
        "before = rss()\n"
        "big = [torch.ones(1 << 23) for _ in range(4)]  # 4 x 32 MiB, above glibc's largest mapping threshold\n"
        "del big\n"
        "print(ok, (rss() - before) // 1024)\n")
    if mib is None:
        pytest.skip("not Linux/glibc: the helper is a no-op")
    assert mib[0] >= 100, mib  # 128 MiB freed and kept (glibc would map and unmap them)
