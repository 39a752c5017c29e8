"""Synthetic speech-like audio whose energy envelope is known (it drives the rendered jaw).

The "speech" is babble: syllables (~4 per second, grouped in phrases separated by pauses) with a raised-
cosine energy envelope; each syllable is a vowel made by additive synthesis of a glottal harmonic series
(intonation contour on f0) shaped by three formant resonances of that vowel, normalised so that the
signal's short-time RMS follows the envelope; plus faint consonant noise bursts at syllable onsets.
Pure numpy, deterministic given the generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .params import RngLike, make_rng

__all__ = [
    "SAMPLE_RATE",
    "SpeechTrack",
    "syllable_envelope",
    "synth_speech",
    "frame_envelope",
    "frame_energy",
]

SAMPLE_RATE = 16000

# formant centre frequencies (Hz) of five vowels (a, e, i, o, u) and their relative openness
_VOWELS = np.array([
    [730.0, 1090.0, 2440.0],
    [530.0, 1840.0, 2480.0],
    [300.0, 2290.0, 3010.0],
    [570.0, 840.0, 2410.0],
    [320.0, 870.0, 2240.0],
])
_BANDWIDTHS = np.array([90.0, 120.0, 180.0])
_FORMANT_GAINS = np.array([1.0, 0.55, 0.3])


@dataclass
class SpeechTrack:
    """waveform: float32 [1,T] in [-1,1]; envelope: float32 [T] in [0,1] (the syllable energy envelope the
    waveform's RMS follows); sample_rate; syllables: list of (start_s, duration_s, vowel index, amplitude)."""

    waveform: torch.Tensor | None
    envelope: torch.Tensor
    sample_rate: int
    syllables: list[tuple[float, float, int, float]]


def syllable_envelope(n_samples: int, sample_rate: int, rng: np.random.Generator,
                      rate: float = 4.0, pause_prob: float = 0.12, silence_start: float = 0.1):
    """Energy envelope [T] in [0,1] of syllables at ~``rate`` per second with phrase pauses; also returns
    the syllable list (start_s, duration_s, vowel, amplitude)."""
    env = np.zeros(n_samples)
    syl: list[tuple[float, float, int, float]] = []
    duration = n_samples / sample_rate
    t = float(rng.uniform(0.0, silence_start * 2))
    in_phrase = 0
    phrase_len = int(rng.integers(3, 8))
    while t < duration:
        if in_phrase >= phrase_len or rng.uniform() < pause_prob * 0.5:
            t += float(rng.uniform(0.15, 0.5))
            in_phrase = 0
            phrase_len = int(rng.integers(3, 8))
            continue
        dur = float(rng.uniform(0.8, 1.25)) / rate
        amp = float(rng.uniform(0.45, 1.0))
        vowel = int(rng.integers(len(_VOWELS)))
        i0 = int(round(t * sample_rate))
        i1 = min(n_samples, int(round((t + dur) * sample_rate)))
        if i1 > i0:
            tau = (np.arange(i0, i1) - i0) / max(1, int(round(dur * sample_rate)))
            shape = amp * np.sin(np.pi * np.clip(tau, 0, 1)) ** 2
            env[i0:i1] = np.maximum(env[i0:i1], shape)
        syl.append((t, dur, vowel, amp))
        t += dur * float(rng.uniform(0.8, 1.05))
        in_phrase += 1
    return env, syl


def synth_speech(n_samples: int, rng: RngLike = None, sample_rate: int = SAMPLE_RATE,
                 f0: float | None = None, with_waveform: bool = True, rate: float = 4.0) -> SpeechTrack:
    """Speech-like babble of ``n_samples`` samples. ``with_waveform=False`` only draws the envelope."""
    g = make_rng(rng)
    env, syl = syllable_envelope(n_samples, sample_rate, g, rate=rate)
    f0_base = float(g.uniform(95.0, 230.0)) if f0 is None else float(f0)
    intonation = (float(g.uniform(0.3, 1.0)), float(g.uniform(0, 2 * math.pi)), float(g.uniform(0.0, 0.1)))
    seeds = g.integers(0, 2**31 - 1, 2)
    if not with_waveform:
        return SpeechTrack(None, torch.from_numpy(env.astype(np.float32)), sample_rate, syl)
    T = n_samples
    t = np.arange(T) / sample_rate
    f0_t = f0_base * (1.0 + intonation[2] * np.sin(2 * np.pi * intonation[0] * t + intonation[1])
                      + 0.04 * np.sin(2 * np.pi * 3.1 * t))
    phase = 2 * np.pi * np.cumsum(f0_t) / sample_rate
    # formant tracks: piecewise-constant vowel targets, smoothed (~30 ms)
    hop = 80
    n_ctl = T // hop + 2
    tc = np.arange(n_ctl) * hop / sample_rate
    vidx = np.zeros(n_ctl, dtype=int)
    for (s0, dur, v, _a) in syl:
        m = (tc >= s0 - 0.02) & (tc < s0 + dur)
        vidx[m] = v
    F = _VOWELS[vidx]                                                   # [n_ctl, 3]
    k = 7
    kern = np.ones(k) / k
    F = np.stack([np.convolve(np.pad(F[:, i], (k // 2, k // 2), mode="edge"), kern, "valid") for i in range(3)], 1)
    f0_c = np.interp(tc, t, f0_t)
    n_harm = int(min(60, math.floor(4500.0 / (f0_base * 0.85))))
    harm = np.arange(1, n_harm + 1)[None, :] * f0_c[:, None]           # [n_ctl, K]
    amp = np.zeros_like(harm)
    for i in range(3):
        amp += _FORMANT_GAINS[i] / np.sqrt(1.0 + ((harm - F[:, i:i + 1]) / (_BANDWIDTHS[i] / 2)) ** 2)
    amp *= np.arange(1, n_harm + 1)[None, :] ** -0.5
    amp *= (harm < 0.45 * sample_rate)
    amp /= np.sqrt((amp ** 2).sum(1, keepdims=True) / 2.0) + 1e-9      # unit RMS voiced signal
    voiced = np.zeros(T)
    idx = np.arange(T) / hop
    for h in range(n_harm):
        a_h = np.interp(idx, np.arange(n_ctl), amp[:, h])
        voiced += a_h * np.sin((h + 1) * phase)
    noise_rng = np.random.default_rng(int(seeds[0]))
    out = env * voiced
    # consonant bursts at syllable onsets (short, faint, high-passed noise)
    burst = np.zeros(T)
    for (s0, _dur, _v, a) in syl:
        if noise_rng.uniform() < 0.6:
            i0 = int(s0 * sample_rate)
            n = int(noise_rng.uniform(0.015, 0.035) * sample_rate)
            i1 = min(T, i0 + n)
            if i1 > i0:
                w = noise_rng.normal(size=i1 - i0)
                w = np.diff(w, prepend=0.0) * np.hanning(i1 - i0)
                burst[i0:i1] += 0.08 * a * w
    out += burst + 0.003 * noise_rng.normal(size=T)
    out *= 0.5 / max(1e-6, float(np.abs(out).max()))
    wav = torch.from_numpy(out.astype(np.float32))[None]
    return SpeechTrack(wav, torch.from_numpy(env.astype(np.float32)), sample_rate, syl)


def _frame_bounds(n_frames: int, fps: float, sample_rate: int, T: int) -> list[tuple[int, int]]:
    spf = sample_rate / fps
    out = []
    for n in range(n_frames):
        i0 = min(T, int(round(n * spf)))
        i1 = min(T, max(i0 + 1, int(round((n + 1) * spf))))
        out.append((i0, i1))
    return out


def frame_envelope(envelope: torch.Tensor, n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mean envelope over each video frame's audio window: [T] -> float32 [n_frames]."""
    T = int(envelope.shape[-1])
    e = envelope.reshape(-1)
    return torch.stack([e[i0:i1].mean() if i1 > i0 else e.new_zeros(()) for i0, i1 in
                        _frame_bounds(n_frames, fps, sample_rate, T)]).to(torch.float32)


def frame_energy(waveform: torch.Tensor, n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """RMS of the (mono-mixed) waveform over each video frame's audio window: [C,T] or [T] -> [n_frames]."""
    w = waveform.reshape(-1, waveform.shape[-1]).mean(0) if waveform.dim() > 1 else waveform
    T = int(w.shape[-1])
    return torch.stack([w[i0:i1].pow(2).mean().sqrt() if i1 > i0 else w.new_zeros(()) for i0, i1 in
                        _frame_bounds(n_frames, fps, sample_rate, T)]).to(torch.float32)
