"""bf16 autocast against fp32 on this CPU: one forward + backward of a 2D and a 3D convolution of the demo's sizes.

    OMP_NUM_THREADS=1 python benchmarks/cpu_bf16.py

Prints the CPU's bf16 instruction sets (what ``train.amp = "auto"`` looks for) and, per convolution, the best of
3 times in fp32 and under ``torch.autocast("cpu", torch.bfloat16)`` (fp32 weights, as the trainer). Without
amx_bf16 / avx512_bf16 torch emulates bf16 and it is many times slower (issue 24's AMD EPYC: 22x and 110x).
"""
from __future__ import annotations

import time

import torch

from anytalk_core.engine import cpu_bf16_support


def step_time(module: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        module.zero_grad()
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = module(x)
        y.float().sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"bf16 instructions: {', '.join(cpu_bf16_support()) or 'none'}; torch threads 1")
    cases = [("conv2d 64->64 3x3 on 8x64x64x64", torch.nn.Conv2d(64, 64, 3, padding=1), (8, 64, 64, 64)),
             ("conv3d 32->32 3x3x3 on 8x32x8x32x32", torch.nn.Conv3d(32, 32, 3, padding=1), (8, 32, 8, 32, 32))]
    for name, module, shape in cases:
        x = torch.randn(shape, requires_grad=True)
        fp32, bf16 = step_time(module, x, False), step_time(module, x, True)
        print(f"{name}: fp32 {fp32 * 1e3:.0f} ms, bf16 autocast {bf16 * 1e3:.0f} ms ({bf16 / fp32:.2f}x)")


if __name__ == "__main__":
    main()
