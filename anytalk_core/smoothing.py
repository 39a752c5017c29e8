"""Temporal smoothing of motion components: tensors (N, ...) filtered along time (dim 0).

Every channel (each trailing index) is filtered independently; device and dtype come from the input
(half precision is computed in float32 and cast back). Two filters:

- :func:`one_euro_filter`: the 1€ filter (Casiez, Roussel, Vogel, CHI 2012), causal, an exponential
  low-pass whose cutoff grows with the signal's speed: steady poses lose their jitter, fast moves keep
  up. Suited to streaming; it lags a little.
- :func:`kalman_smooth`: a constant-velocity Kalman filter and a Rauch–Tung–Striebel backward pass,
  offline and zero-lag (a linear ramp passes unchanged).

:func:`smooth` maps one ``strength`` in [0, 1] to either filter's parameters.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "STRONGEST_CUTOFF_HZ",
    "unwrap_degrees",
    "one_euro_filter",
    "kalman_smooth",
    "smooth",
]

#: Cutoff frequency (Hz) of :func:`smooth` at strength 1; strength s uses ``STRONGEST_CUTOFF_HZ / s``.
STRONGEST_CUTOFF_HZ = 1.5
#: One-euro speed coefficient of :func:`smooth`, in Hz per (channel standard deviation per second).
RELATIVE_BETA = 0.05
_METHODS = ("one_euro", "kalman")


def _check_series(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor (N, ...), got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1 frames along dim 0, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating point tensor, got {x.dtype}")
    bad = ~torch.isfinite(x)
    if bad.any():
        frame = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"x contains NaN or infinite values (first at frame {frame}); fill or drop those frames before smoothing"
        )


def _work(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def unwrap_degrees(x: torch.Tensor) -> torch.Tensor:
    """Remove 360-degree jumps along time, like ``numpy.unwrap(period=360)``: (N, ...) -> (N, ...).

    Frames before the first jump are returned exactly; later ones are shifted by multiples of 360.
    """
    _check_series(x)
    d = x.diff(dim=0)
    dd = torch.remainder(d + 180, 360) - 180
    dd = torch.where((dd == -180) & (d > 0), torch.full_like(dd, 180), dd)
    correction = torch.where(d.abs() < 180, torch.zeros_like(d), dd - d)
    out = x.clone()
    out[1:] += correction.cumsum(dim=0)
    return out


def _alpha(cutoff: torch.Tensor | float, te: float) -> torch.Tensor | float:
    """Smoothing factor of an exponential low-pass: ``1 / (1 + tau / Te)``, ``tau = 1 / (2 pi f_c)``."""
    r = 2 * math.pi * cutoff * te
    return r / (r + 1)


def one_euro_filter(
    x: torch.Tensor,
    fps: float,
    min_cutoff: float,
    beta: float | torch.Tensor,
    d_cutoff: float = 1.0,
) -> torch.Tensor:
    """1€ filter along dim 0: (N, ...) -> (N, ...).

    ``X̂_i = X̂_{i-1} + α_i (X_i - X̂_{i-1})`` with ``α = 1 / (1 + 1 / (2π f_c Te))``, ``Te = 1 / fps``,
    cutoff ``f_c = min_cutoff + beta |dX̂_i|`` (Hz) and the speed ``dX̂_i`` an exponential low-pass at
    ``d_cutoff`` of ``(X_i - X̂_{i-1}) / Te`` (the paper's pseudo-code). ``beta`` is in Hz per
    (unit per second); a tensor broadcasts over the channels (x.shape[1:]).
    """
    _check_series(x)
    te = 1.0 / _check_positive("fps", fps)
    min_cutoff = _check_positive("min_cutoff", min_cutoff)
    d_alpha = _alpha(_check_positive("d_cutoff", d_cutoff), te)
    if isinstance(beta, torch.Tensor):
        beta = beta.to(device=x.device, dtype=_work(x).dtype)
        if (beta < 0).any():
            raise ValueError("beta must be non-negative")
    elif not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be non-negative and finite, got {beta!r}")
    xs = _work(x)
    out = torch.empty_like(xs)
    x_hat = xs[0]
    dx_hat = torch.zeros_like(x_hat)
    out[0] = x_hat
    for i in range(1, xs.shape[0]):
        dx = (xs[i] - x_hat) / te
        dx_hat = dx_hat + d_alpha * (dx - dx_hat)
        a = _alpha(min_cutoff + beta * dx_hat.abs(), te)
        # Update form X̂ + α (X - X̂): a constant signal stays bit-exact.
        x_hat = x_hat + a * (xs[i] - x_hat)
        out[i] = x_hat
    return out.to(x.dtype)


def _kalman_gains(n: int, q: float, r: float) -> tuple[list[tuple[float, float]], list[tuple[float, float, float, float]]]:
    """Forward Kalman gains and RTS gains of the constant-velocity model (dt = 1 frame).

    The covariances never depend on the data, so they are computed once, in float64, for all channels.
    """
    # Posterior after the first measurement: position known to r, velocity unknown (diffuse).
    a, b, c = r, 0.0, 1e8 * (r + q)
    filtered = [(a, b, c)]
    predicted = [(a, b, c)]
    gains = [(1.0, 0.0)]
    for _ in range(1, n):
        # P- = F P F^T + Q, with F = [[1, 1], [0, 1]], Q = q [[1/3, 1/2], [1/2, 1]] (white acceleration).
        pa = a + 2 * b + c + q / 3
        pb = b + c + q / 2
        pc = c + q
        s = pa + r
        k0, k1 = pa / s, pb / s
        a, b, c = (1 - k0) * pa, (1 - k0) * pb, pc - k1 * pb
        predicted.append((pa, pb, pc))
        filtered.append((a, b, c))
        gains.append((k0, k1))
    rts = []
    for i in range(n - 1):
        a, b, c = filtered[i]
        pa, pb, pc = predicted[i + 1]
        det = pa * pc - pb * pb
        # C = P_i F^T (P-_{i+1})^{-1}
        m00, m01, m10, m11 = a + b, b, b + c, c
        rts.append(
            (
                (m00 * pc - m01 * pb) / det,
                (m01 * pa - m00 * pb) / det,
                (m10 * pc - m11 * pb) / det,
                (m11 * pa - m10 * pb) / det,
            )
        )
    return gains, rts


def kalman_smooth(x: torch.Tensor, process_noise: float, measurement_noise: float) -> torch.Tensor:
    """Constant-velocity Kalman filter + Rauch–Tung–Striebel smoother along dim 0: (N, ...) -> (N, ...).

    State (position, velocity) per channel, one step per frame; ``process_noise`` q is the white
    acceleration spectral density (units^2 / frame^3), ``measurement_noise`` r the observation variance
    (units^2). Only q / r matters: the result is a zero-lag low-pass of gain about ``1 / (1 + (w / w_c)^4)``
    with ``w_c = (q / r)^(1/4)`` radians per frame.
    """
    _check_series(x)
    q = _check_positive("process_noise", process_noise)
    r = _check_positive("measurement_noise", measurement_noise)
    xs = _work(x)
    n = xs.shape[0]
    if n == 1:
        return x.clone()
    gains, rts = _kalman_gains(n, q, r)
    pos = torch.empty_like(xs)
    vel = torch.empty_like(xs)
    p, v = xs[0], torch.zeros_like(xs[0])
    pos[0], vel[0] = p, v
    for i in range(1, n):
        p = p + v  # predict; v is unchanged
        e = xs[i] - p
        k0, k1 = gains[i]
        p, v = p + k0 * e, v + k1 * e
        pos[i], vel[i] = p, v
    sp, sv = pos[-1], vel[-1]
    out = torch.empty_like(xs)
    out[-1] = sp
    for i in range(n - 2, -1, -1):
        dp = sp - (pos[i] + vel[i])
        dv = sv - vel[i]
        c00, c01, c10, c11 = rts[i]
        sp, sv = pos[i] + c00 * dp + c01 * dv, vel[i] + c10 * dp + c11 * dv
        out[i] = sp
    return out.to(x.dtype)


def smooth(
    x: torch.Tensor,
    fps: float,
    strength: float,
    method: str = "one_euro",
    angles: bool = False,
) -> torch.Tensor:
    """Smooth a motion component along time with one knob: (N, ...) -> (N, ...).

    ``strength`` 0 returns a copy of the input; s in (0, 1] sets a cutoff ``f_c = 1.5 Hz / s``
    (so 1 is strongest and the effect is the same at any fps, approaching the identity as s -> 0):

    - ``"one_euro"``: ``min_cutoff = f_c``, ``beta = 0.05 / std`` with std the channel's standard
      deviation over time (so degrees and normalised units behave alike), ``d_cutoff = 1 Hz``.
    - ``"kalman"``: ``q / r = (2 pi f_c / fps)^4`` (r = 1): the smoother's gain is about
      ``1 / (1 + (f / f_c)^4)``, one half at f_c.

    ``angles=True`` treats x as degrees that may wrap: it smooths the unwrapped series and shifts
    each frame back by the same multiple of 360 its input had, so outputs stay next to their inputs.
    """
    _check_series(x)
    if method not in _METHODS:
        raise ValueError(f"unknown smoothing method {method!r}; choose one of {', '.join(_METHODS)}")
    strength = float(strength)
    if not (0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    fps = _check_positive("fps", fps)
    if strength == 0.0 or x.shape[0] == 1:
        return x.clone()
    if angles:
        unwrapped = unwrap_degrees(x)
        return smooth(unwrapped, fps, strength, method) - (unwrapped - x)
    cutoff = STRONGEST_CUTOFF_HZ / strength
    if method == "kalman":
        return kalman_smooth(x, process_noise=(2 * math.pi * cutoff / fps) ** 4, measurement_noise=1.0)
    xs = _work(x)
    spread = xs.std(dim=0, unbiased=False).clamp_min(torch.finfo(xs.dtype).tiny ** 0.5)
    return one_euro_filter(x, fps, min_cutoff=cutoff, beta=RELATIVE_BETA / spread, d_cutoff=1.0)
