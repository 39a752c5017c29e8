"""Audio -> :class:`~anytalk_core.motion.Motion` with a model's audio-to-motion part (SPEC §6).

The result is an ordinary motion record at the requested fps (expression deltas in the model's keypoint
space, head pose, the model's family), so Motion Mix, smoothing, Save Motion and the renderer use it as
they use a video's motion. Its natural reference for relative transfer is :func:`rest_motion`, the
network's output for silence (a closed, neutral mouth), not the first frame, which may be mid-word.

Long audio streams: features and the network run window by window (``chunk`` video frames plus the
network's receptive field), so memory does not grow with the length beyond the waveform and the motion
record themselves.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from . import limits
from .audio_features import SAMPLE_RATE, audio_frame_count, feature_extractor, frame_windows, prepare_audio
from .models.audio2motion import AudioToMotion
from .models.base import NO_AUDIO2MOTION_FIX, TalkingHeadModel
from .motion import Motion, interpolate

__all__ = ["require_audio2motion", "attach_audio2motion", "predict_outputs", "outputs_to_motion", "rest_motion",
           "audio_to_motion"]


def require_audio2motion(model: TalkingHeadModel) -> AudioToMotion:
    """The model's audio-to-motion network, or a ValueError that says how to get one."""
    net = getattr(model, "audio2motion", None)
    if not isinstance(net, AudioToMotion):
        where = getattr(model, "source_path", None)
        name = f"{where}: " if where else ""
        raise ValueError(f"{name}this checkpoint has no audio-to-motion weights; {NO_AUDIO2MOTION_FIX}")
    if net.config.num_kp == 0:
        raise ValueError("this audio-to-motion network predicts only renderer parameters "
                         f"{list(net.config.params)}, not keypoint motion; train it against a model's motion estimator")
    return net


def attach_audio2motion(model: TalkingHeadModel, net: AudioToMotion) -> TalkingHeadModel:
    """Make ``net`` the model's audio-to-motion part (config and weights, saved under ``audio2motion.``)."""
    c = net.config
    if c.num_kp != model.num_kp or c.family != model.config.family:
        raise ValueError(f"the audio-to-motion network predicts {c.num_kp} keypoints of a {c.family} model, but the "
                         f"model is a {model.config.family} model with {model.num_kp} keypoints")
    model.config.audio2motion = c
    model.audio2motion = net.to(next(model.parameters()).device)
    return model


def predict_outputs(net: AudioToMotion, waveform: torch.Tensor, fps: float, n_frames: int, chunk: int = 64,
                    extractor=None, progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], None] | None = None) -> torch.Tensor:
    """Network outputs in motion units [n_frames, output_size] for prepared mono 16 kHz audio [T].

    ``cancel()`` is called between windows and stops the work by raising.
    """
    extractor = extractor or feature_extractor(net.config, net.feature_mean.device)
    context = net.config.context

    def windows(first: int, count: int) -> torch.Tensor:
        return frame_windows(extractor, waveform, first, count, fps, context)

    return net.stream(windows, n_frames, chunk=chunk, progress=progress, cancel=cancel)


def outputs_to_motion(net: AudioToMotion, y: torch.Tensor, fps: float | None) -> Motion:
    """Outputs [N, output_size] -> Motion (no pose head: a still, frontal head)."""
    parts = net.split(y)
    n = y.shape[0]
    pose = parts.get("pose")
    zeros = y.new_zeros(n)
    return Motion(
        yaw=pose[:, 0] if pose is not None else zeros, pitch=pose[:, 1] if pose is not None else zeros.clone(),
        roll=pose[:, 2] if pose is not None else zeros.clone(),
        translation=pose[:, 3:6] if pose is not None else y.new_zeros(n, 3),
        expression=parts["expression"].contiguous(),
        scale=pose[:, 6] if pose is not None and net.config.with_scale else None,
        family=net.config.family, fps=fps,
    )


@torch.no_grad()
def rest_motion(model: TalkingHeadModel, fps: float | None = None) -> Motion:
    """The network's motion for silence (one frame): the reference for relative transfer of audio motion."""
    net = require_audio2motion(model)
    n = 2 * net.reach + 1
    silence = torch.zeros(1)
    y = predict_outputs(net, silence, 25.0, n, chunk=n)
    return outputs_to_motion(net, y[net.reach:net.reach + 1], fps)


@torch.no_grad()
def audio_to_motion(model: TalkingHeadModel, audio: object, fps: float, n_frames: int | None = None,
                    sample_rate: int | None = None, expression_strength: float = 1.0, pose_strength: float = 1.0,
                    chunk: int = 64, progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], None] | None = None) -> Motion:
    """Motion of ``fps`` frames per second driven by speech.

    ``audio``: a ComfyUI AUDIO dict, ``(waveform [C, T], rate)`` or a waveform with ``sample_rate``; any
    channel count and rate. ``n_frames`` defaults to ceil(duration x fps) (audio shorter than that is padded
    with silence). Strengths scale each frame's difference from :func:`rest_motion` (0 = rest, 1 = as
    predicted, > 1 exaggerates).
    """
    net = require_audio2motion(model)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    limits.check_fps(fps, "audio to motion")
    if n_frames is not None:
        limits.check_seconds(int(n_frames) / fps, f"the motion ({n_frames} frames at {fps:g} fps)")
    seconds = _audio_seconds(audio, sample_rate)
    if seconds is not None:  # before the waveform is converted: the conversion copies it
        limits.check_seconds(seconds, "the speech")
    waveform = prepare_audio(audio, sample_rate)
    if n_frames is None:
        n_frames = audio_frame_count(waveform.shape[0], SAMPLE_RATE, fps)
    limits.check_seconds(n_frames / fps, f"the motion ({n_frames} frames at {fps:g} fps)")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    y = predict_outputs(net, waveform, float(fps), int(n_frames), chunk=chunk, progress=progress, cancel=cancel)
    motion = outputs_to_motion(net, y, float(fps))
    if expression_strength != 1.0 or pose_strength != 1.0:
        rest = rest_motion(model, float(fps))
        motion = interpolate(rest, motion, pose=float(pose_strength), expression=float(expression_strength),
                             translation=float(pose_strength))
        motion.fps = float(fps)
    return motion


def _audio_seconds(audio: object, sample_rate: int | None) -> float | None:
    """Length of any accepted audio form in seconds, without touching its samples (None if malformed)."""
    try:
        if isinstance(audio, Mapping):
            waveform, rate = audio["waveform"], audio["sample_rate"]
        elif isinstance(audio, tuple):
            waveform, rate = audio
        else:
            waveform, rate = audio, sample_rate
        return int(waveform.shape[-1]) / int(rate)
    except (TypeError, KeyError, ValueError, AttributeError, IndexError, ZeroDivisionError):
        return None
