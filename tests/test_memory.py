"""The process-memory helpers the one-shot CLI uses (anytalk_core.memory)."""
from __future__ import annotations

import subprocess
import sys


def test_large_allocations_are_mapped_and_returned_in_a_fresh_process():
    """On Linux/glibc the CLI's setting applies and a tensor freed afterwards leaves the resident set at once; the
    helpers are no-ops that say so elsewhere. Run in a child: the setting is process-wide and permanent."""
    code = (
        "import torch\n"
        "from anytalk_core.memory import map_large_allocations\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
        "ok = map_large_allocations()\n"
        "torch.ones(1 << 20).sum()  # a large block freed: glibc would raise its threshold past 4 MiB\n"
        "before = rss()\n"
        "big, small = [], []\n"
        "for _ in range(32):  # 4 MiB blocks between small ones that stay: a fragmented heap\n"
        "    big.append(torch.ones(1 << 20)); small.append(torch.ones(4096))\n"
        "held = rss()\n"
        "del big\n"
        "print(ok, (held - before) // 1024, (rss() - before) // 1024)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ok, held_mib, after_mib = result.stdout.split()
    if not sys.platform.startswith("linux"):
        assert ok == "False"
        return
    assert ok == "True"
    assert int(held_mib) >= 100 and int(after_mib) <= 8, result.stdout  # 128 MiB held, then given back


def test_fast_memory_keeps_freed_blocks_in_a_fresh_process():
    """``--memory fast``: every block comes from the heap and freed blocks stay resident for the next frame's
    tensors (where the lean setting gives them back at once: the test above)."""
    code = (
        "import torch\n"
        "from anytalk_core.memory import keep_freed_memory\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
        "ok = keep_freed_memory()\n"
        "before = rss()\n"
        "big = [torch.ones(1 << 23) for _ in range(4)]  # 4 x 32 MiB, above glibc's largest mapping threshold\n"
        "del big\n"
        "print(ok, (rss() - before) // 1024)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ok, kept_mib = result.stdout.split()
    if not sys.platform.startswith("linux"):
        assert ok == "False"
        return
    assert ok == "True"
    assert int(kept_mib) >= 100, result.stdout  # 128 MiB freed and kept (glibc would map and unmap them)
