"""benchmarks/bench_gpu.py runs its whole table on a machine without CUDA (tiny model) and checks each row."""
from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import torch

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("anytalk_bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_table_on_cpu(capsys):
    bench = load_bench()
    rows = bench.main(["--device", "cpu", "--frames", "2", "--chunk", "2", "--repeats", "1",
                       "--memory-frames", "6", "--audio-seconds", "1"])
    printed = capsys.readouterr().out
    by_label = {r.label: r for r in rows}
    assert "tiny model 64 px" in printed.splitlines()[0]
    reference = by_label["fp32 (reference)"]
    assert reference.ms > 0 and reference.psnr == math.inf  # the reference against itself
    for label in ("fp16", "bf16", "fp16 + channels_last", "bf16 + channels_last"):
        row = by_label[label]
        # half precision ran and was compared with fp32: close, but not identical
        assert row.ms > 0 and 25 < row.psnr < math.inf, (label, row)
    # rows that need CUDA say so instead of printing a number
    for label in ("fp16 + torch.compile (generator)", "fp16 + CUDA graph (render)"):
        assert by_label[label].ms is None and by_label[label].note.startswith("skipped"), by_label[label]
    sdpa = by_label["audio-to-motion, sdpa"]
    assert sdpa.ms > 0 and sdpa.unit == "ms/s audio"
    xformers = by_label["audio-to-motion, xformers"]
    assert (xformers.ms is None and "not available here: attention backend 'xformers' was chosen" in xformers.note) \
        or xformers.ms > 0
    memory = by_label["fp32, 6 frames streamed"]
    assert memory.peak_mib > 0 and memory.ms > 0
    for row in rows:  # every row is printed
        assert row.label in printed


def test_bench_gpu_refuses_cuda_without_cuda(capsys):
    if torch.cuda.is_available():
        return
    bench = load_bench()
    try:
        bench.main(["--device", "cuda"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("--device cuda without CUDA must be refused")
    assert "CUDA is not available" in capsys.readouterr().err
