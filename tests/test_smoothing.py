"""Temporal smoothing: identity at strength 0, constants and ramps kept, noise removed, shapes and dtypes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anytalk_core.smoothing import kalman_smooth, one_euro_filter, smooth, unwrap_degrees

FPS = 30.0
METHODS = ("one_euro", "kalman")


def _noisy_sine(seed: int, n: int = 300, freq: float = 0.5, amplitude: float = 10.0, sigma: float = 1.0):
    t = torch.arange(n, dtype=torch.float64) / FPS
    g = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(n, generator=g, dtype=torch.float64)
    return t, amplitude * torch.sin(2 * math.pi * freq * t), noise


def _fit_sinusoid(t: torch.Tensor, y: torch.Tensor, freq: float) -> tuple[float, torch.Tensor]:
    """Amplitude of the best-fitting sinusoid at ``freq`` (any phase) and the residual around it."""
    w = 2 * math.pi * freq * t
    basis = torch.stack([torch.sin(w), torch.cos(w), torch.ones_like(t)], dim=1)
    coef = torch.linalg.lstsq(basis, y[:, None]).solution[:, 0]
    return float(coef[:2].norm()), y - basis @ coef


@pytest.mark.parametrize("method", METHODS)
def test_strength_zero_is_identity(method):
    x = torch.randn(50, 15, 3)
    y = smooth(x, FPS, 0.0, method)
    assert torch.equal(y, x)
    assert y.dtype == x.dtype


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_constant_signal_unchanged(method, strength):
    x = torch.full((80, 4), 12.345, dtype=torch.float64)
    torch.testing.assert_close(smooth(x, FPS, strength, method), x, rtol=0, atol=1e-12)


def test_kalman_preserves_ramp():
    x = 3.0 + 0.7 * torch.arange(120, dtype=torch.float64)
    for q in (1e-4, 1e-2, 1.0):
        assert (kalman_smooth(x, q, 1.0) - x).abs().max() < 1e-6
    ramp32 = x.float()
    assert (smooth(ramp32, FPS, 1.0, "kalman") - ramp32).abs().max() < 1e-3


def test_one_euro_high_beta_lags_little():
    slope = 0.7
    x = slope * torch.arange(120, dtype=torch.float64)
    lag = lambda beta: float(((x - one_euro_filter(x, FPS, 1.0, beta)) / slope)[20:].max())  # noqa: E731
    assert lag(1.0) < 0.25  # frames
    assert lag(0.0) > 4 * lag(1.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_removed_amplitude_kept(method, seed):
    freq = 0.5
    t, sine, noise = _noisy_sine(seed, freq=freq)
    y = smooth(sine + noise, FPS, 1.0, method)
    keep = slice(30, None)  # the causal filter's first second is its warm-up
    amplitude, residual = _fit_sinusoid(t[keep], y[keep], freq)
    # Phase-free measures: the causal one-euro lags, which is neither noise nor lost amplitude.
    assert abs(amplitude / 10.0 - 1) < 0.10
    assert float(noise[keep].var() / residual.var()) > 4.0


def test_kalman_is_zero_lag_on_sine():
    t, sine, noise = _noisy_sine(3)
    y = smooth(sine + noise, FPS, 1.0, "kalman")
    assert float(noise.var() / (y - sine)[30:-30].var()) > 4.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(40,), (40, 3), (40, 15, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(method, shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    y = smooth(x, FPS, 0.7, method)
    assert y.shape == x.shape and y.dtype == dtype


@pytest.mark.parametrize("method", METHODS)
def test_channels_are_independent(method):
    x = torch.randn(60, 5, 3, dtype=torch.float64)
    y = smooth(x, FPS, 0.8, method)
    torch.testing.assert_close(y[:, 2, 1], smooth(x[:, 2, 1].clone(), FPS, 0.8, method))
    z = x.clone()
    z[:, 0] += 100.0
    torch.testing.assert_close(smooth(z, FPS, 0.8, method)[:, 1:], y[:, 1:])


@pytest.mark.parametrize("method", METHODS)
def test_single_frame(method):
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(smooth(x, FPS, 1.0, method), x)
    assert torch.equal(one_euro_filter(x, FPS, 1.0, 0.0), x)
    assert torch.equal(kalman_smooth(x, 1e-3, 1.0), x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_raises(bad):
    x = torch.zeros(10, 3)
    x[4, 1] = bad
    for fn in (lambda: smooth(x, FPS, 0.5), lambda: smooth(x, FPS, 0.5, "kalman"), lambda: unwrap_degrees(x)):
        with pytest.raises(ValueError, match="NaN or infinite.*frame 4"):
            fn()


def test_argument_errors():
    x = torch.zeros(10)
    with pytest.raises(ValueError, match="strength"):
        smooth(x, FPS, 1.5)
    with pytest.raises(ValueError, match="method"):
        smooth(x, FPS, 0.5, "median")
    with pytest.raises(ValueError, match="fps"):
        smooth(x, 0.0, 0.5)
    with pytest.raises(ValueError, match="floating"):
        smooth(torch.zeros(10, dtype=torch.int64), FPS, 0.5)
    with pytest.raises(ValueError, match=r"\(N, \.\.\.\)"):
        smooth(torch.tensor(1.0), FPS, 0.5)


def test_unwrap_matches_numpy():
    rng = np.random.default_rng(0)
    angles = np.cumsum(rng.normal(0, 40, size=200))
    wrapped = (angles + 180) % 360 - 180
    got = unwrap_degrees(torch.from_numpy(wrapped))
    np.testing.assert_allclose(got.numpy(), np.unwrap(wrapped, period=360), atol=1e-9)
    # no jumps: returned exactly
    x = torch.linspace(-170, 170, 30)
    assert torch.equal(unwrap_degrees(x), x)


@pytest.mark.parametrize("method", METHODS)
def test_angles_across_the_wrap(method):
    true = 175.0 + 10.0 * torch.linspace(0, 1, 90, dtype=torch.float64)  # 175 -> 185 degrees
    g = torch.Generator().manual_seed(0)
    noisy = true + 0.3 * torch.randn(90, generator=g, dtype=torch.float64)
    wrapped = torch.remainder(noisy + 180, 360) - 180
    y = smooth(wrapped, FPS, 1.0, method, angles=True)
    # Each output stays on its input's branch, and is close to the truth modulo 360.
    assert (y - wrapped).abs().max() < 5.0
    err = torch.remainder(y - true + 180, 360) - 180
    assert err[30:].abs().max() < 1.5
    # Smoothing the wrapped values naively would drag frames across the jump by ~360 degrees.
    naive = smooth(wrapped, FPS, 1.0, method)
    assert (torch.remainder(naive - true + 180, 360) - 180).abs().max() > 30
