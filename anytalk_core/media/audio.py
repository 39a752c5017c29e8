"""Audio I/O with PyAV: decode any audio file or a video's audio track, fit audio to frames, write wav.

Waveforms are float32 tensors [C, T] in -1..1 (channels first, as in ComfyUI's AUDIO without the batch).
"""
from __future__ import annotations

import os
import wave
from collections.abc import Mapping
from pathlib import Path

import av
import numpy as np
import torch

from .. import limits
from ._files import atomic_output, check_input_file, media_error, open_media

__all__ = ["read_audio", "probe_audio", "fit_audio_to_frames", "n_audio_samples", "write_wav", "as_waveform",
           "MAX_SAMPLE_RATE", "MAX_CHANNELS"]

MAX_SAMPLE_RATE = 192_000  #: highest sample rate decoded (studio audio's highest)
MAX_CHANNELS = 8  #: most channels decoded (7.1 surround)


def read_audio(
    path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False
) -> tuple[torch.Tensor, int]:
    """Decode the first audio track of ``path`` to (float32 [C, T], sample_rate).

    ``sample_rate`` resamples with PyAV's AudioResampler (libswresample); ``mono`` averages the channels.
    A track longer than ``limits.max_seconds()`` is refused: up front from the container's duration where
    it states one, else while decoding (so memory stays bounded by the limit, not by the file).
    """
    p = check_input_file(path, "Audio")
    if sample_rate is not None and not 0 < int(sample_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be between 1 and {MAX_SAMPLE_RATE} Hz, got {sample_rate}")
    with open_media(p, "audio") as container:
        stream, _ = _checked_track(container, p)
        rate = int(sample_rate or stream.codec_context.sample_rate or stream.sample_rate)
        chunks = _decode_planar(container, stream, rate, p)
        limit = _exact_length(container, stream, rate)
    if not chunks:
        raise ValueError(f"no decodable audio in {p}")
    waveform = torch.from_numpy(_joined(chunks, limit))
    if mono:
        waveform = waveform.mean(dim=0, keepdim=True)
    return waveform.contiguous(), rate


def _joined(chunks: list[np.ndarray], limit: int | None) -> np.ndarray:
    """Chunks [C, n] joined along time and cut to ``limit`` samples, each chunk freed once copied (no second full copy)."""
    total = sum(c.shape[1] for c in chunks)
    total = total if limit is None else min(total, limit)
    out = np.empty((chunks[0].shape[0], total), np.float32)
    done = 0
    chunks.reverse()
    while chunks and done < total:
        piece = chunks.pop()
        n = min(piece.shape[1], total - done)
        out[:, done:done + n] = piece[:, :n]
        done += n
    return out


def probe_audio(path: str | os.PathLike) -> float | None:
    """The first audio track's stated length in seconds (None if the file states none), without decoding.

    Raises as :func:`read_audio` would for a missing track, a sample rate or channel count out of bounds,
    or a stated length over ``limits.max_seconds()``: so callers refuse before any other work.
    """
    p = check_input_file(path, "Audio")
    with open_media(p, "audio") as container:
        return _checked_track(container, p)[1]


def _checked_track(container: av.container.InputContainer, path: Path) -> tuple[av.audio.stream.AudioStream, float | None]:
    """(first audio stream, stated seconds or None), refusing what is out of bounds before decoding."""
    if not container.streams.audio:
        raise ValueError(f"no audio track in {path}")
    stream = container.streams.audio[0]
    rate = int(stream.codec_context.sample_rate or stream.sample_rate or 0)
    if rate <= 0:
        raise ValueError(f"audio track has no sample rate: {path}")
    if rate > MAX_SAMPLE_RATE:
        raise ValueError(f"audio track at {rate} Hz: more than the {MAX_SAMPLE_RATE} Hz accepted (a damaged file?): "
                         f"{path}")
    if (stream.codec_context.channels or 0) > MAX_CHANNELS:
        raise ValueError(f"audio track with {stream.codec_context.channels} channels: more than the {MAX_CHANNELS} "
                         f"accepted: {path}")
    return stream, _check_declared_length(container, stream, path)


def n_audio_samples(n_frames: int, fps: float, sample_rate: int) -> int:
    """Number of audio samples that lasts exactly as long as ``n_frames`` at ``fps``."""
    if fps <= 0 or not np.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return int(round(n_frames / fps * sample_rate))


def fit_audio_to_frames(waveform: torch.Tensor, sample_rate: int, n_frames: int, fps: float) -> torch.Tensor:
    """Trim or zero-pad the last axis to exactly ``round(n_frames / fps * sample_rate)`` samples."""
    target = n_audio_samples(n_frames, fps, sample_rate)
    length = waveform.shape[-1]
    if length >= target:
        return waveform[..., :target]
    pad = waveform.new_zeros((*waveform.shape[:-1], target - length))
    return torch.cat([waveform, pad], dim=-1)


def write_wav(
    path: str | os.PathLike, waveform: torch.Tensor | np.ndarray, sample_rate: int, overwrite: bool = False
) -> Path:
    """Write a [C, T] (or [T]) float waveform as 16-bit PCM wav, atomically; refuses to overwrite by default."""
    audio, rate = as_waveform((waveform, sample_rate))
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    p = Path(path).expanduser()
    with atomic_output(p, overwrite=overwrite) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(pcm.shape[0])
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return p


def as_waveform(audio: object) -> tuple[np.ndarray, int]:
    """Normalise ``(waveform, sample_rate)`` or a ComfyUI AUDIO dict to (float32 numpy [C, T], rate).

    A ComfyUI batch [B, C, T] must hold one clip (B = 1); a 1-D waveform is one channel.
    """
    if isinstance(audio, Mapping):
        if "waveform" not in audio or "sample_rate" not in audio:
            raise ValueError("audio dict needs 'waveform' and 'sample_rate' keys")
        waveform, rate = audio["waveform"], audio["sample_rate"]
    else:
        try:
            waveform, rate = audio  # type: ignore[misc]
        except (TypeError, ValueError):
            raise ValueError("audio must be (waveform [C,T], sample_rate) or {'waveform', 'sample_rate'}") from None
    w = torch.as_tensor(waveform).detach().cpu()
    if w.ndim == 3:
        if w.shape[0] != 1:
            raise ValueError(f"audio batch must hold one clip, got waveform shape {tuple(w.shape)}")
        w = w[0]
    if w.ndim == 1:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[0] == 0:
        raise ValueError(f"audio waveform must be [C, T], got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"audio waveform must be float in -1..1, got dtype {w.dtype}")
    w = w.float()
    if not torch.isfinite(w).all():
        raise ValueError("audio waveform contains NaN or infinite values")
    if int(rate) != rate or int(rate) <= 0:
        raise ValueError(f"audio sample rate must be a positive integer, got {rate}")
    return w.numpy(), int(rate)


def _exact_length(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, rate: int
) -> int | None:
    """Track length in samples when the container states it exactly (MP4/MOV), else None.

    FFmpeg trims an AAC encoder's leading priming samples but not the padding of its last frame; the MP4
    sample table knows the true length, so we cut there. Other containers may only estimate a duration.
    """
    if "mp4" not in container.format.name or not stream.duration or not stream.time_base:
        return None
    return int(round(float(stream.duration * stream.time_base) * rate))


def _check_declared_length(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, path: Path
) -> float | None:
    """Refuse, before decoding, a track whose stream or container states a length over limits.max_seconds()."""
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    limits.check_seconds(seconds, f"{path}: the audio track")
    return seconds


def _decode_planar(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, rate: int, path: Path
) -> list[np.ndarray]:
    """Decode ``stream`` to a list of float32 [C, n] chunks at ``rate`` Hz (at most limits.max_seconds() long)."""
    resampler = av.AudioResampler(format="fltp", rate=rate)
    chunks: list[np.ndarray] = []
    most = int(limits.max_seconds() * rate)
    total = 0
    try:
        for frame in container.decode(stream):
            for f in resampler.resample(frame):
                chunks.append(f.to_ndarray().astype(np.float32, copy=False))
                total += chunks[-1].shape[-1]
            if total > most:
                limits.check_seconds(total / rate, f"{path}: the audio track (decoded so far)")
        chunks.extend(f.to_ndarray().astype(np.float32, copy=False) for f in resampler.resample(None))
    except av.FFmpegError as e:
        raise media_error(path, "audio", e) from None
    return [c for c in chunks if c.shape[-1] > 0]
