"""Audio-to-motion network (SPEC §6): speech-feature windows -> per-video-frame expression deltas and pose.

Each video frame gets a window of feature frames around its centre time (see
:func:`anytalk_core.audio_features.frame_windows`); a small convolutional front-end turns the window into
one token, a depthwise temporal convolution adds order, and a transformer whose attention is banded (each
frame sees ``radius`` frames either side) mixes the tokens. The receptive field is therefore bounded
(:attr:`AudioToMotion.reach` frames either side): :meth:`AudioToMotion.stream` runs any length in windows
with that much overlap and keeps each window's interior, which equals one pass over the whole clip within
float rounding while memory stays that of one window.

Attention goes through :func:`attention`: xformers' memory-efficient kernel on CUDA when xformers is
installed, ``torch.nn.functional.scaled_dot_product_attention`` otherwise; the choice is made at call time.
An automatic choice logs once which kernel ran (and why xformers did not); an explicitly chosen xformers that
cannot run (not installed, no kernel for this device/shape) raises instead of switching kernels.

Inputs and outputs are normalised with stored statistics (buffers ``feature_mean``/``feature_std`` and
``target_mean``/``target_std``, set by the trainer), so the checkpoint alone maps audio to motion units.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import AudioToMotionConfig

__all__ = ["AudioToMotion", "attention", "band_mask", "last_attention_backend"]

log = logging.getLogger("anytalk")

_XFORMERS: list = []  # [module or None], looked up once
_LAST_BACKEND = ["none"]
_LOGGED: set = set()  # automatic choices already logged (once each)
_XFORMERS_ERRORS = (NotImplementedError, RuntimeError, ValueError, TypeError, AttributeError)


def _xformers_ops():
    if not _XFORMERS:
        try:
            import xformers.ops as xops  # type: ignore[import-not-found]
        except Exception:  # noqa: BLE001 - missing, or built for another torch/CUDA
            xops = None
        _XFORMERS.append(xops)
    return _XFORMERS[0]


def last_attention_backend() -> str:
    """Which kernel the most recent :func:`attention` call used: ``"xformers"`` or ``"sdpa"``."""
    return _LAST_BACKEND[0]


def band_mask(length: int, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean [L, L], True where ``|i - j| <= radius`` (query i may attend to key j)."""
    i = torch.arange(length, device=device)
    return (i[:, None] - i[None, :]).abs() <= radius


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              backend: str = "auto") -> torch.Tensor:
    """Scaled dot-product attention [B, H, L, D] -> [B, H, L, D] with an optional boolean mask [L, L].

    ``backend``: ``auto`` (xformers on CUDA when installed, else SDPA; logged once), ``xformers`` (on any
    device; RuntimeError when it is not installed or has no kernel here) or ``sdpa``.
    """
    if backend not in ("auto", "xformers", "sdpa"):
        raise ValueError(f"attention backend must be auto, xformers or sdpa, got {backend!r}")
    reason = "xformers runs only on CUDA when chosen automatically"
    if backend == "xformers" or (backend == "auto" and q.is_cuda):
        xops = _xformers_ops()
        if xops is None:
            if backend == "xformers":
                raise RuntimeError("attention backend 'xformers' was chosen but xformers is not installed (or does "
                                   "not load with this torch): install a matching xformers or choose 'sdpa'/'auto'")
            reason = "xformers is not installed"
        else:
            try:
                out = _xformers_attention(xops, q, k, v, mask)
            except _XFORMERS_ERRORS as exc:  # e.g. no CPU kernel, or a shape/dtype this build does not support
                if backend == "xformers":
                    raise RuntimeError(f"attention backend 'xformers' was chosen but xformers cannot run on "
                                       f"{q.device.type} {q.dtype} {tuple(q.shape)} ({exc}); choose 'sdpa' or "
                                       "'auto'") from exc
                reason = f"xformers failed ({type(exc).__name__}: {exc})"
            else:
                _ran("xformers", backend, "")
                return out
    _ran("sdpa", backend, reason, fallback=q.is_cuda)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _ran(kernel: str, backend: str, reason: str, fallback: bool = False) -> None:
    """Record which kernel ran; an automatic choice is logged once per kernel and reason (a fallback as a warning)."""
    _LAST_BACKEND[0] = kernel
    if backend == "auto" and (kernel, reason) not in _LOGGED:
        _LOGGED.add((kernel, reason))
        log.log(logging.WARNING if fallback else logging.INFO, "AnyTalk audio-to-motion attention: %s%s", kernel,
                f" ({reason})" if reason else "")


def _xformers_attention(xops, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None) -> torch.Tensor:
    """xformers' memory-efficient attention; it takes [B, L, H, D] and an additive float bias."""
    bias = None
    if mask is not None:
        b, h, length = q.shape[0], q.shape[1], q.shape[2]
        padded = -(-length // 8) * 8  # the kernel wants the bias rows 8-aligned: slice a wider tensor
        full = q.new_zeros(b, h, length, padded)
        full[..., :length].masked_fill_(~mask, float("-inf"))
        bias = full[..., :length]
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)


class _Block(nn.Module):
    """Pre-norm transformer block with banded self-attention."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"audio2motion dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, backend: str) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = attention(q, k, v, mask, backend).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.proj(att))
        return x + self.drop(self.ff(self.norm2(x)))


class AudioToMotion(nn.Module):
    """Feature windows [B, L, 2 context + 1, feature_dim] -> normalised outputs [B, L, output_size]."""

    def __init__(self, config: AudioToMotionConfig):
        super().__init__()
        c = config
        if c.num_kp < 0 or c.context < 0 or c.radius < 0 or c.depth < 0 or c.position_kernel % 2 == 0:
            raise ValueError("audio2motion: num_kp, context, radius and depth must be >= 0 and position_kernel odd")
        if c.output_size == 0:
            raise ValueError("audio2motion predicts nothing: set num_kp > 0, predict_pose or params")
        self.config = config
        width = 2 * c.context + 1
        self.register_buffer("feature_mean", torch.zeros(c.feature_dim))
        self.register_buffer("feature_std", torch.ones(c.feature_dim))
        self.register_buffer("target_mean", torch.zeros(c.output_size))
        self.register_buffer("target_std", torch.ones(c.output_size))
        ch = c.frontend_channels
        self.frontend = nn.Sequential(nn.Conv1d(c.feature_dim, ch, 3, padding=1), nn.GELU(),
                                      nn.Conv1d(ch, ch, 3, stride=2, padding=1), nn.GELU())
        self.project = nn.Linear(ch * ((width + 1) // 2), c.dim)
        # replicate padding: a steady input (e.g. silence) gives the same output at the ends as inside
        self.position = nn.Conv1d(c.dim, c.dim, c.position_kernel, padding=c.position_kernel // 2, groups=c.dim,
                                  padding_mode="replicate")
        self.blocks = nn.ModuleList(_Block(c.dim, c.heads, c.ff_mult, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.output_size)
        self.attention_backend = "auto"

    @property
    def reach(self) -> int:
        """Frames either side that can influence a frame's output (the receptive radius)."""
        return self.config.position_kernel // 2 + self.config.depth * self.config.radius

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b, n, w, f = windows.shape
        x = (windows - self.feature_mean) / self.feature_std
        x = self.frontend(x.reshape(b * n, w, f).transpose(1, 2))  # [B*L, ch, ceil(w/2)]
        x = self.project(x.flatten(1)).view(b, n, -1)
        x = x + self.position(x.transpose(1, 2)).transpose(1, 2)
        mask = band_mask(n, self.config.radius, x.device)
        for block in self.blocks:
            x = block(x, mask, self.attention_backend)
        return self.head(self.norm(x))

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised outputs -> motion units (expression deltas, degrees, translation, params)."""
        return y * self.target_std + self.target_mean

    def normalize_target(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.target_mean) / self.target_std

    @torch.no_grad()
    def stream(self, windows: Callable[[int, int], torch.Tensor], n_frames: int, chunk: int = 64,
               progress: Callable[[int, int], None] | None = None,
               cancel: Callable[[], None] | None = None) -> torch.Tensor:
        """Outputs in motion units [n_frames, output_size] (CPU), ``chunk`` frames at a time.

        ``windows(first, count)`` gives the feature windows [count, 2 context + 1, feature_dim] of video
        frames ``first .. first + count - 1``. Each pass adds :attr:`reach` frames of context either side
        and keeps its interior, so results do not depend on ``chunk`` (float rounding aside).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 frame, got {chunk}")
        device = self.feature_mean.device
        dtype = self.feature_mean.dtype
        out = torch.empty(n_frames, self.config.output_size)
        reach = self.reach
        for start in range(0, n_frames, chunk):
            if cancel is not None:
                cancel()
            stop = min(n_frames, start + chunk)
            lo, hi = max(0, start - reach), min(n_frames, stop + reach)
            feats = windows(lo, hi - lo).to(device, dtype)
            y = self.denormalize(self(feats[None]))[0]
            out[start:stop] = y[start - lo:stop - lo].float().cpu()
            if progress is not None:
                progress(stop, n_frames)
        return out

    def split(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs [..., output_size] -> ``expression`` [..., K, 3], ``pose`` [..., 6 or 7], ``params`` [..., P]."""
        c = self.config
        k3, p = 3 * c.num_kp, c.pose_size
        out = {"expression": y[..., :k3].reshape(*y.shape[:-1], c.num_kp, 3)}
        if p:
            out["pose"] = y[..., k3:k3 + p]
        if c.params:
            out["params"] = y[..., k3 + p:]
        return out


def output_names(config: AudioToMotionConfig) -> list[str]:
    """A name per output channel (for logs): ``exp.<k>.<xyz>``, pose fields, params."""
    names = [f"exp.{k}.{a}" for k in range(config.num_kp) for a in "xyz"]
    if config.predict_pose:
        names += ["yaw", "pitch", "roll", "tx", "ty", "tz"] + (["scale"] if config.with_scale else [])
    return names + [f"param.{p}" for p in config.params]
