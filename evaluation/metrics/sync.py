"""Lip-sync metrics on per-frame series: Pearson r and the lag at the peak of the cross-correlation."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["pearson", "sync_offset", "mouth_metrics"]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two series [N] (0 when either is constant)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def sync_offset(pairs: list[tuple[torch.Tensor, torch.Tensor]], max_lag: int = 5) -> tuple[int, list[float]]:
    """Lag (frames) at the peak of the normalised cross-correlation of prediction and truth over clips.

    ``pairs``: (prediction [N], truth [N]) per clip. At lag d, ``prediction[t + d]`` is compared with
    ``truth[t]``: a positive result means the prediction comes late. Returns (lag, correlation per lag).
    """
    corr = []
    for d in range(-max_lag, max_lag + 1):
        p = torch.cat([x[max(0, d):x.shape[0] + min(0, d)] for x, _ in pairs])
        t = torch.cat([y[max(0, -d):y.shape[0] - max(0, d)] for _, y in pairs])
        corr.append(pearson(p, t))
    return int(np.argmax(corr)) - max_lag, corr


def mouth_metrics(pairs: list[tuple[torch.Tensor, torch.Tensor]], max_lag: int = 5) -> dict:
    """Pearson r over all frames and the lip-sync lag of predicted vs. true mouth opening."""
    r = pearson(torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs]))
    lag, corr = sync_offset(pairs, max_lag)
    return {"r": r, "lag": lag, "r_at_lag": max(corr)}
