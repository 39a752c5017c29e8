"""Pixel metrics on paired frames: L1 (the seed's L1, mean absolute error in 0..1) and PSNR."""
from __future__ import annotations

import numpy as np
import torch

from ._common import to_float_frames

__all__ = ["l1_distance", "mse", "psnr", "psnr_from_mse"]


def _pair(generated: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray,
          dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = to_float_frames(generated), to_float_frames(reference)
    if a.shape != b.shape:
        raise ValueError(f"generated frames {tuple(a.shape)} and reference frames {tuple(b.shape)} differ in shape")
    return a.to(dtype), b.to(dtype)


def l1_distance(generated: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Mean absolute difference per frame, pixel values in 0..1: (N, H, W, 3) x2 -> (N,) in ``dtype``.

    The seed's ``L1`` column (0.0387 for AnyTalk on VoxCeleb) is this value averaged over all frames.
    """
    a, b = _pair(generated, reference, dtype)
    return (a - b).abs().flatten(1).mean(1)


def mse(generated: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray,
        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Mean squared difference per frame, pixel values in 0..1: (N, H, W, 3) x2 -> (N,) in ``dtype``."""
    a, b = _pair(generated, reference, dtype)
    return (a - b).pow(2).flatten(1).mean(1)


def psnr_from_mse(error: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """``10 log10(max^2 / MSE)`` in dB, elementwise; an MSE of 0 gives +inf."""
    return 10 * torch.log10(max_value**2 / error)


def psnr(generated: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame in dB: ``10 log10(max^2 / MSE)``; identical frames give +inf."""
    return psnr_from_mse(mse(generated, reference), max_value)
