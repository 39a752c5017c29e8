"""Synthetic clips: smooth known motion (pose + expression), optional speech-like audio driving the jaw,
chunked rendering, and ground-truth motion-transfer targets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .audio import SAMPLE_RATE, frame_envelope, synth_speech
from .params import EXPRESSION_FIELDS, POSE_FIELDS, Identity, RngLike, expression_tensor, make_rng, pose_tensor
from .renderer import BatchRenderResult, render_batch

__all__ = ["MotionConfig", "Clip", "sample_motion", "render_sequence", "render_clip", "motion_transfer_target"]


@dataclass
class MotionConfig:
    """Amplitudes and rates of the random smooth motion of :func:`sample_motion`.

    Pose components are sums of three sinusoids with random frequencies in ``pose_freq`` (Hz), phases and
    weights, bounded by the amplitudes below (degrees; normalised image units; scale deviation).
    """

    yaw: float = 25.0
    pitch: float = 12.0
    roll: float = 8.0
    translation: float = 0.04
    scale: float = 0.04
    pose_freq: tuple[float, float] = (0.05, 0.5)
    talking: bool = True              # jaw_open follows a speech envelope (the audio's, when made)
    syllable_rate: float = 4.0        # syllables per second
    jaw_gain: float = 1.0             # jaw_open = clamp(gain * frame envelope)
    smile: tuple[float, float] = (-0.2, 0.7)
    brow: float = 0.5
    blink_rate: float = 0.35          # blinks per second (Poisson)
    blink_duration: float = 0.22      # seconds, close + open
    wink_prob: float = 0.1            # chance that a blink closes one eye only
    gaze: float = 0.5


@dataclass
class Clip:
    """A rendered clip with its ground truth.

    frames float32 [N,H,W,3] in 0..1; pose [N,6] (POSE_FIELDS); expression [N,7] (EXPRESSION_FIELDS);
    landmarks [N,L,2] pixels; visible bool [N,L]; fps; identity; audio float32 [1,T] at ``sample_rate``
    (or None) with ``envelope`` [T] its syllable energy envelope.
    """

    frames: torch.Tensor
    pose: torch.Tensor
    expression: torch.Tensor
    landmarks: torch.Tensor
    visible: torch.Tensor
    fps: float
    identity: Identity
    audio: torch.Tensor | None = None
    envelope: torch.Tensor | None = None
    sample_rate: int = SAMPLE_RATE
    mask: torch.Tensor | None = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def audio_dict(self) -> dict[str, Any] | None:
        """ComfyUI AUDIO: {"waveform": [1,C,T], "sample_rate": int}, or None without audio."""
        if self.audio is None:
            return None
        return {"waveform": self.audio[None], "sample_rate": self.sample_rate}


def _smooth(n: int, fps: float, g: np.random.Generator, fmin: float, fmax: float, n_comp: int = 3) -> np.ndarray:
    """A smooth random signal in [-1, 1] (sum of sinusoids, bounded by the sum of weights)."""
    t = np.arange(n) / fps
    f = g.uniform(fmin, fmax, n_comp)
    ph = g.uniform(0, 2 * np.pi, n_comp)
    w = g.uniform(0.3, 1.0, n_comp)
    s = (w[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0)
    return s / w.sum()


def _blinks(n: int, fps: float, g: np.random.Generator, cfg: MotionConfig) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n) / fps
    left = np.zeros(n)
    right = np.zeros(n)
    dur = cfg.blink_duration
    tc = float(g.exponential(1.0 / max(cfg.blink_rate, 1e-6))) * 0.5 if cfg.blink_rate > 0 else math.inf
    total = n / fps
    while tc < total + dur:
        # closing takes 40 % of the blink, opening 60 %
        close = 0.4 * dur
        prof = np.where(t < tc, 1 - (tc - t) / close, 1 - (t - tc) / (dur - close))
        prof = np.clip(prof, 0, 1)
        prof = prof * prof * (3 - 2 * prof)
        if g.uniform() < cfg.wink_prob:
            target = left if g.uniform() < 0.5 else right
            target[:] = np.maximum(target, prof)
        else:
            left[:] = np.maximum(left, prof)
            right[:] = np.maximum(right, prof)
        tc += dur + float(g.exponential(1.0 / cfg.blink_rate))
    return left, right


def sample_motion(n_frames: int, fps: float = 25.0, rng: RngLike = None, config: MotionConfig | None = None,
                  with_audio: bool = False, sample_rate: int = SAMPLE_RATE):
    """Random smooth motion with known ground truth.

    Returns ``(pose [N,6], expression [N,7], speech)`` where ``speech`` is a :class:`SpeechTrack` (waveform
    only when ``with_audio``; its envelope drives ``jaw_open`` frame by frame when ``config.talking``) or
    None when not talking and no audio was asked for.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    cfg = config or MotionConfig()
    g = make_rng(rng)
    lo, hi = cfg.pose_freq
    pose = np.zeros((n_frames, len(POSE_FIELDS)))
    pose[:, 0] = cfg.yaw * _smooth(n_frames, fps, g, lo, hi)
    pose[:, 1] = cfg.pitch * _smooth(n_frames, fps, g, lo, hi)
    pose[:, 2] = cfg.roll * _smooth(n_frames, fps, g, lo, hi)
    pose[:, 3] = cfg.translation * _smooth(n_frames, fps, g, lo, hi)
    pose[:, 4] = cfg.translation * _smooth(n_frames, fps, g, lo, hi)
    pose[:, 5] = 1.0 + cfg.scale * _smooth(n_frames, fps, g, lo, hi)
    expr = np.zeros((n_frames, len(EXPRESSION_FIELDS)))
    s_lo, s_hi = cfg.smile
    expr[:, 1] = s_lo + (s_hi - s_lo) * 0.5 * (1 + _smooth(n_frames, fps, g, 0.05, 0.3))
    expr[:, 2], expr[:, 3] = _blinks(n_frames, fps, g, cfg)
    expr[:, 4] = cfg.brow * _smooth(n_frames, fps, g, 0.1, 0.6)
    expr[:, 5] = cfg.gaze * _smooth(n_frames, fps, g, 0.1, 0.8)
    expr[:, 6] = 0.6 * cfg.gaze * _smooth(n_frames, fps, g, 0.1, 0.8)
    speech = None
    if cfg.talking or with_audio:
        n_samples = int(round(n_frames * sample_rate / fps))
        speech = synth_speech(n_samples, g, sample_rate=sample_rate, with_waveform=with_audio,
                              rate=cfg.syllable_rate)
        if cfg.talking:
            env = frame_envelope(speech.envelope, n_frames, fps, sample_rate).numpy()
            expr[:, 0] = np.clip(cfg.jaw_gain * env, 0.0, 1.0)
    return (torch.from_numpy(pose.astype(np.float32)), expression_tensor(torch.from_numpy(expr.astype(np.float32))),
            speech)


def render_sequence(identity: Identity, pose: Any, expression: Any, size: int = 128, batch_size: int = 64,
                    return_parts: bool = False) -> BatchRenderResult:
    """Render identity at per-frame poses [N,6] and expressions [N,7] in chunks of ``batch_size``."""
    pose = pose_tensor(pose)
    expr = expression_tensor(expression)
    n = max(pose.shape[0], expr.shape[0])
    pose = pose.expand(n, -1) if pose.shape[0] == 1 else pose
    expr = expr.expand(n, -1) if expr.shape[0] == 1 else expr
    if pose.shape[0] != expr.shape[0]:
        raise ValueError(f"pose has {pose.shape[0]} frames, expression {expr.shape[0]}")
    outs = [render_batch(identity, pose[i:i + batch_size], expr[i:i + batch_size], size, return_parts)
            for i in range(0, n, max(1, int(batch_size)))]
    parts = None
    if return_parts:
        parts = {k: torch.cat([o.parts[k] for o in outs]) for k in outs[0].parts}  # type: ignore[union-attr]
    return BatchRenderResult(torch.cat([o.images for o in outs]), torch.cat([o.landmarks for o in outs]),
                             torch.cat([o.visible for o in outs]), torch.cat([o.mask for o in outs]), parts)


def render_clip(identity: Identity, n_frames: int = 50, fps: float = 25.0, size: int = 128,
                rng: RngLike = None, with_audio: bool = False, config: MotionConfig | None = None,
                batch_size: int = 64) -> Clip:
    """Render a clip of ``identity`` with random smooth motion (see :func:`sample_motion`)."""
    pose, expr, speech = sample_motion(n_frames, fps, rng, config, with_audio)
    out = render_sequence(identity, pose, expr, size, batch_size)
    return Clip(out.images, pose, expr, out.landmarks, out.visible, float(fps), identity,
                audio=None if speech is None else speech.waveform,
                envelope=None if speech is None else speech.envelope, mask=out.mask)


def motion_transfer_target(identity_b: Identity, clip_a: Clip, size: int | None = None,
                           batch_size: int = 64) -> torch.Tensor:
    """Ground truth for cross-identity reenactment: identity B rendered with clip A's pose and expression
    (frame by frame). Returns frames float32 [N,H,W,3] (H = W = ``size`` or clip A's size)."""
    return render_sequence(identity_b, clip_a.pose, clip_a.expression, size or clip_a.size, batch_size).images
