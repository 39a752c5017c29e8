"""Video I/O with PyAV: probe, stream frames at a constant rate, read clips, write mp4/webm/gif with audio.

Reading. Frames come out as uint8 RGB tensors [n, H, W, 3], display rotation applied. Output frames are on
a constant time grid: frame ``i`` is shown at ``t_i = t_0 + i / fps`` (``t_0`` = first frame's timestamp)
and is the latest decoded frame whose timestamp is ``<= t_i`` (a tolerance of half a stream tick, at most
half an output frame, absorbs the muxer's timestamp rounding). The grid runs until the last frame's
timestamp plus its duration. Without ``fps`` the grid uses the stream's average rate, so a constant-rate
video comes out frame for frame and a variable-rate one is resampled to its average rate.

Writing. ``.mp4``: H.264 (libx264, CRF 18) yuv420p + AAC; ``.webm``: VP9 (VP8 if missing, CRF 30) +
Opus (Vorbis if missing); ``.gif``: an adaptive 256-colour palette per frame, no audio. yuv420p needs even
sizes, so for mp4 an odd width/height is padded by one row/column replicating the edge (webm and gif keep
odd sizes). Audio is trimmed or zero-padded to the written frame count, so audio and video durations
agree within a frame. Files are written to a hidden temp file beside the target and moved into place
at the end; on any error the temp file is deleted. Existing files are never replaced unless
``overwrite=True``; ``unique_path`` gives new ``name_00001.mp4`` names.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from ._files import (
    check_can_write,
    check_input_file,
    commit,
    discard,
    media_error,
    new_temp_path,
    open_media,
    unique_path,
)
from .. import limits
from .audio import as_waveform, n_audio_samples, read_audio
from .image import image_tensor_to_rgb

__all__ = [
    "VideoInfo",
    "VideoClip",
    "probe_video",
    "iter_video_frames",
    "read_video",
    "VideoWriter",
    "write_video",
    "unique_path",
    "VIDEO_FORMATS",
    "scaled_size",
]

VIDEO_FORMATS = {".mp4": "mp4", ".webm": "webm", ".gif": "gif"}
_DEFAULT_FPS = Fraction(25)


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` learns from the headers (and the first frame: size after rotation)."""

    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    has_audio: bool
    audio_sample_rate: int | None
    codec: str = ""
    rotation: int = 0


@dataclass
class VideoClip:
    """A whole clip in memory: frames uint8 [N, H, W, 3], fps, optional audio float32 [C, T]."""

    frames: torch.Tensor
    fps: float
    audio: torch.Tensor | None = None
    sample_rate: int | None = None

    @property
    def duration(self) -> float:
        """Video duration in seconds (frame count / fps)."""
        return self.frames.shape[0] / self.fps


# ----------------------------------------------------------------------------------------------- reading


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, average fps, frame count (estimated if the container has none), audio info; decodes one frame."""
    p = check_input_file(path, "Video")
    with open_media(p, "video") as container:
        stream = _video_stream(container, p)
        rate, counted = _stream_rate(container, stream, p)
        duration = _duration_seconds(container, stream)
        count = counted or stream.frames or int(round(duration * rate))
        audio = container.streams.audio[0] if container.streams.audio else None
        codec = stream.codec_context.name
        _check_length(duration, p)
        first = _first_frame(container, stream, p)  # the display rotation lives on frames only
        limits.check_pixels(first.width, first.height, f"{p}: the video's frames")
        rotation = int(round((first.rotation or 0) / 90.0)) % 4 * 90
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
        return VideoInfo(
            width=width,
            height=height,
            fps=float(rate),
            frame_count=max(int(count), 1),
            duration=duration,
            has_audio=audio is not None,
            audio_sample_rate=(audio.codec_context.sample_rate or None) if audio is not None else None,
            codec=codec,
            rotation=rotation,
        )


def iter_video_frames(
    path: str | os.PathLike, fps: float | None = None, chunk: int = 16, max_size: int = 0
) -> Iterator[torch.Tensor]:
    """Yield uint8 [n <= chunk, H, W, 3] tensors on a constant ``fps`` grid (module notes); memory is O(chunk).

    ``max_size`` (> 0) downscales in the decoder (FFmpeg's area filter) so the longer side is at most that
    many pixels: a full-resolution frame is never converted to RGB. The clip's length (from the headers,
    and from the timestamps while decoding) is bounded by ``limits.max_seconds()``, a frame's size by
    ``limits.max_pixels()`` and the file's own frame rate must be at least ``limits.MIN_FPS``. The path
    and arguments are checked when called; the file is opened on the first ``next``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size}")
    rate = _as_rate(limits.check_fps(fps, "requested")) if fps is not None else None
    return _iter_chunks(check_input_file(path, "Video"), rate, chunk, int(max_size))


def _iter_chunks(path: Path, rate: Fraction | None, chunk: int, max_size: int = 0) -> Iterator[torch.Tensor]:
    """Generator behind ``iter_video_frames``."""
    with open_media(path, "video") as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        _check_length(_duration_seconds(container, stream), path)
        if rate is None:
            rate = _stream_rate(container, stream, path)[0]
            if rate < limits.MIN_FPS:
                raise limits.LimitError(f"{path}: the video's frame rate {float(rate):g} fps is below "
                                        f"{limits.MIN_FPS:g} fps (broken timing?); resample it with a frame rate "
                                        "of your choice (Load Video's frame_rate, or fps=...)")
        # muxers round timestamps to their tick, so allow half a tick (never more than half a frame)
        grid = _ConstantRateGrid(rate, tolerance=min(Fraction(stream.time_base or 0) / 2, 1 / (2 * rate)))
        buffer: list[np.ndarray] = []
        for image in _sampled(container, stream, grid, path, max_size):
            buffer.append(image)
            if len(buffer) == chunk:
                yield torch.from_numpy(np.stack(buffer))
                buffer = []
        if buffer:
            yield torch.from_numpy(np.stack(buffer))
        if grid.emitted == 0:
            raise ValueError(f"no decodable video frames in {path}")


def read_video(
    path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None, audio: bool = True
) -> VideoClip:
    """Read a whole clip (at most ``max_frames``) with its audio track, trimmed to the frames read if cut short."""
    p = check_input_file(path, "Video")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    info = probe_video(p)
    rate = float(_as_rate(fps)) if fps is not None else info.fps
    chunks: list[torch.Tensor] = []
    count = 0
    for frames in iter_video_frames(p, fps=fps, chunk=32):
        chunks.append(frames)
        count += frames.shape[0]
        if max_frames is not None and count >= max_frames:
            break
    video = torch.cat(chunks)[:max_frames]
    waveform, sample_rate = (read_audio(p) if audio and info.has_audio else (None, None))
    if waveform is not None and max_frames is not None and count >= max_frames:
        waveform = waveform[:, : n_audio_samples(video.shape[0], rate, sample_rate)]
    return VideoClip(frames=video, fps=rate, audio=waveform, sample_rate=sample_rate)


class _ConstantRateGrid:
    """Output frame i (time t0 + i/fps) is the latest input frame with timestamp <= its time."""

    def __init__(self, rate: Fraction, tolerance: Fraction):
        self.rate = rate
        self.tolerance = tolerance
        self.start: Fraction | None = None
        self.emitted = 0
        self.latest: np.ndarray | None = None

    def time(self, i: int) -> Fraction:
        """Timestamp of output frame ``i``."""
        return self.start + i / self.rate

    def push(self, timestamp: Fraction, image: np.ndarray) -> Iterator[np.ndarray]:
        """Take a decoded frame; yield the outputs that the previous frame covers up to ``timestamp``."""
        if self.start is None:
            self.start = timestamp
        while self.latest is not None and self.time(self.emitted) + self.tolerance < timestamp:
            self.emitted += 1
            yield self.latest
        self.latest = image

    def finish(self, end: Fraction) -> Iterator[np.ndarray]:
        """Yield the outputs the last frame covers until ``end`` (at least one frame overall)."""
        while self.latest is not None and (self.time(self.emitted) + self.tolerance < end or self.emitted == 0):
            self.emitted += 1
            yield self.latest


def _sampled(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, grid: _ConstantRateGrid, path: Path,
    max_size: int = 0,
) -> Iterator[np.ndarray]:
    """Decode ``stream`` and put its frames on ``grid`` (bounded: timestamps within max_seconds, frame sizes)."""
    fallback = 1 / _nominal_rate(stream)
    timestamp = end = None
    longest = Fraction(limits.max_seconds())
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                timestamp = Fraction(frame.pts) * Fraction(frame.time_base)
            else:  # no timestamp: assume the nominal rate
                timestamp = Fraction(0) if timestamp is None else timestamp + fallback
            has_duration = frame.duration and frame.time_base
            duration = Fraction(frame.duration) * Fraction(frame.time_base) if has_duration else fallback
            end = timestamp + duration
            if end - (grid.start if grid.start is not None else timestamp) > longest:
                limits.check_seconds(float(end - (grid.start if grid.start is not None else timestamp)),
                                     f"{path}: by its timestamps, the video")
            limits.check_pixels(frame.width, frame.height, f"{path}: a video frame")
            yield from grid.push(timestamp, _frame_rgb(frame, max_size))
    except av.FFmpegError as e:
        raise media_error(path, "video", e) from None
    if end is not None:
        yield from grid.finish(end)


def _frame_rgb(frame: av.VideoFrame, max_size: int = 0) -> np.ndarray:
    """Decoded frame as uint8 RGB [H, W, 3], rotated as its display matrix says, the longer side <= ``max_size``."""
    width, height = scaled_size(frame.width, frame.height, max_size)
    if (width, height) != (frame.width, frame.height):
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    turns = int(round((frame.rotation or 0) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def scaled_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(width, height) with the longer side reduced to ``max_size`` (0 = unchanged), as the decoder scales frames."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    k = max_size / max(width, height)
    return max(1, round(width * k)), max(1, round(height * k))


def _check_length(seconds: float, path: Path) -> None:
    """Refuse, from the headers, a video longer than limits.max_seconds() (0 = unknown: checked while decoding)."""
    if seconds and math.isfinite(seconds):
        limits.check_seconds(seconds, f"{path}: the video")


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """First video stream, or a ValueError naming the file."""
    if not container.streams.video:
        raise ValueError(f"no video stream in {path}")
    return container.streams.video[0]


def _stream_rate(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> tuple[Fraction, int | None]:
    """Average frame rate and, where it had to be counted, the frame count.

    GIF stores per-frame delays in centiseconds and FFmpeg reports the first delay as the rate, so for
    GIF the packets are counted (no decoding) and the rate is frames / duration, snapped to a whole
    number within 1% (30 fps is stored as 3,3,4 cs delays).
    """
    if container.format.name != "gif":
        return _nominal_rate(stream), None
    with open_media(path, "video") as scan:
        video = scan.streams.video[0]
        times = [(packet.pts, packet.duration or 0) for packet in scan.demux(video) if packet.pts is not None]
    if not times or not video.time_base:
        return _nominal_rate(stream), None
    span = (times[-1][0] + times[-1][1] - times[0][0]) * Fraction(video.time_base)
    if span <= 0:
        return _nominal_rate(stream), len(times)
    rate = len(times) / span
    nearest = round(rate)
    if nearest > 0 and abs(rate - nearest) <= rate / 100:
        rate = Fraction(nearest)
    return rate, len(times)


def _nominal_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """Average frame rate from the headers, falling back to FFmpeg's guess, then 25 fps."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate < 1000:
            return Fraction(rate)
    return _DEFAULT_FPS


def _duration_seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    """Stream duration, else container duration, else 0."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _first_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> av.VideoFrame:
    """First decodable frame, or a ValueError naming the file."""
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError as e:
        raise media_error(path, "video", e) from None
    if frame is None:
        raise ValueError(f"no decodable video frames in {path}")
    return frame


def _as_rate(fps: float | Fraction | int) -> Fraction:
    """A positive frame rate as an exact fraction (29.97 -> 2997/100, 30000/1001 kept)."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        value = float(fps)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"fps must be a positive number, got {fps}")
        rate = Fraction(value).limit_denominator(1001000)
    if rate <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    return rate


# ----------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Format:
    """Container plus codec preferences for one output suffix."""

    container: str
    video_codecs: tuple[str, ...]
    audio_codecs: tuple[str, ...]
    even_size: bool


_PRESETS = {
    "mp4": _Format("mp4", ("libx264", "h264", "mpeg4"), ("aac",), even_size=True),
    "webm": _Format("webm", ("libvpx-vp9", "libvpx"), ("libopus", "opus", "libvorbis", "vorbis"), even_size=False),
    "gif": _Format("gif", ("gif",), (), even_size=False),
}


class VideoWriter:
    """Context manager that encodes frames chunk by chunk and muxes audio fitted to the frame count.

    Any error inside ``write``/``close`` or the ``with`` block aborts the writer: the temp file is deleted
    and the target path is left as it was. ``audio`` is ``(waveform [C, T], sample_rate)`` or a ComfyUI
    AUDIO dict; ``crf`` is the codec's quality (lower is better), ``options`` extra FFmpeg codec options.

    ``with VideoWriter("out.mp4", fps=25, audio=(waveform, 16000)) as w: w.write(frames)``
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        format: str | None = None,
        audio: object | None = None,
        crf: int | None = None,
        overwrite: bool = False,
        options: dict[str, str] | None = None,
    ):
        self.path = check_can_write(path, overwrite)
        self.fps = _as_rate(fps)
        self.format = _resolve_format(self.path, format)
        self.overwrite = overwrite
        self.frames_written = 0
        self._preset = _PRESETS[self.format]
        self._crf = crf
        self._options = dict(options or {})
        self._audio = _writable_audio(audio) if audio is not None else None
        if self._audio is not None and not self._preset.audio_codecs:
            warnings.warn(f"{self.format} has no audio; the audio track is not written to {self.path}", stacklevel=2)
            self._audio = None
        self._audio_pos = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = new_temp_path(self.path)
        self._container: av.container.OutputContainer | None = None
        self._video: av.video.stream.VideoStream | None = None
        self._audio_stream: av.audio.stream.AudioStream | None = None
        self._size: tuple[int, int] | None = None
        self._closed = False
        try:
            options = _container_options(self.format)
            self._container = av.open(str(self._tmp), "w", format=self._preset.container, container_options=options)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.abort()

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Encode frames [n, H, W, C] or one [H, W, C]: uint8 or float 0..1; C = 1 or 4 as ``image_tensor_to_rgb``."""
        self._check_open()
        if frames.ndim == 4 and frames.shape[0] == 0:  # an empty chunk from a stream is harmless
            return
        try:
            images = _to_uint8(frames)
            self._ensure_streams(images.shape[2], images.shape[1])
            for image in images:
                self._encode_video(image)
            self._encode_audio_until(self._audio_target())
        except BaseException:
            self.abort()
            raise

    def close(self) -> Path:
        """Flush the encoders, add the rest of the audio (padded with silence), and move the file into place."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written; nothing was saved to {self.path}")
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._encode_audio_until(self._audio_target())
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
            self._container = None
            commit(self._tmp, self.path, self.overwrite)
            self._closed = True
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temp file; the target path is left untouched."""
        self._closed = True
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away; its trailer does not matter
                pass
        if getattr(self, "_tmp", None) is not None:
            discard(self._tmp)

    def _check_open(self) -> None:
        """Raise if the writer was closed or aborted."""
        if self._closed:
            raise ValueError(f"VideoWriter for {self.path} is closed")

    def _ensure_streams(self, width: int, height: int) -> None:
        """Create the streams on the first write; later frames must have the same size."""
        if self._size is not None:
            if (width, height) != self._size:
                old = f"{self._size[0]}x{self._size[1]}"
                raise ValueError(f"frame size changed from {old} to {width}x{height}: {self.path}")
            return
        self._size = (width, height)
        self._video = self._add_video_stream(width, height)
        if self._audio is not None:
            self._audio_stream = self._add_audio_stream(self._audio[0].shape[0], self._audio[1])

    def _add_video_stream(self, width: int, height: int) -> av.video.stream.VideoStream:
        """Video stream for this format with its quality options."""
        codec = _first_encoder(self._preset.video_codecs, "video", self.format)
        stream = self._container.add_stream(codec, rate=self.fps)
        stream.width, stream.height = _encoded_size(width, height, self._preset.even_size)
        stream.pix_fmt = "pal8" if codec == "gif" else "yuv420p"
        stream.options = {**_quality_options(codec, self._crf), **self._options}
        stream.thread_type = "AUTO"
        return stream

    def _add_audio_stream(self, channels: int, rate: int) -> av.audio.stream.AudioStream:
        """Audio stream: mono or stereo, at the waveform's rate if the encoder supports it, else 48 kHz."""
        codec = _first_encoder(self._preset.audio_codecs, "audio", self.format)
        supported = av.Codec(codec, "w").audio_rates
        if supported and rate not in supported:
            rate = 48000 if 48000 in supported else max(supported)
        stream = self._container.add_stream(codec, rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        if codec in ("vorbis", "opus"):  # FFmpeg's native encoders are marked experimental
            stream.codec_context.options = {"strict": "experimental"}
        return stream

    def _encode_video(self, image: np.ndarray) -> None:
        """Encode one uint8 RGB image."""
        if self.format == "gif":
            frame = _palette_frame(image)
        else:
            width, height = self._video.width, self._video.height
            frame = av.VideoFrame.from_ndarray(_pad_edge(image, height, width), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def _audio_target(self) -> int:
        """Audio samples that last as long as the frames written so far."""
        return n_audio_samples(self.frames_written, float(self.fps), self._audio[1]) if self._audio else 0

    def _encode_audio_until(self, target: int) -> None:
        """Encode audio samples up to ``target``, padding with silence past the end of the waveform."""
        if self._audio is None or target <= self._audio_pos:
            return
        waveform, rate = self._audio
        block = waveform[:, self._audio_pos : target]
        if block.shape[1] < target - self._audio_pos:
            silence = np.zeros((waveform.shape[0], target - self._audio_pos - block.shape[1]), np.float32)
            block = np.concatenate([block, silence], axis=1)
        layout = self._audio_stream.layout.name
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = self._audio_pos
        frame.time_base = Fraction(1, rate)
        for packet in self._audio_stream.encode(frame):
            self._container.mux(packet)
        self._audio_pos = target


def _writable_audio(audio: object) -> tuple[np.ndarray, int]:
    """Waveform [C, T] and rate to mux; more than two channels are averaged to mono (layouts are unknown)."""
    waveform, rate = as_waveform(audio)
    if waveform.shape[0] > 2:
        waveform = waveform.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(waveform, dtype=np.float32), rate


def write_video(
    path: str | os.PathLike,
    frames: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    fps: float,
    audio: object | None = None,
    format: str | None = None,
    crf: int | None = None,
    overwrite: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Write frames [N, H, W, 3] (or an iterable of such chunks) with optional audio; returns the path."""
    chunks = _chunks(frames, 64) if isinstance(frames, (torch.Tensor, np.ndarray)) else frames
    with VideoWriter(path, fps, format=format, audio=audio, crf=crf, overwrite=overwrite, options=options) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.path


def _chunks(frames: torch.Tensor | np.ndarray, size: int) -> Iterator[torch.Tensor | np.ndarray]:
    """Split a [N, ...] array into pieces of ``size`` (a 3-D array is a single frame)."""
    if frames.ndim == 3:
        yield frames
        return
    for start in range(0, frames.shape[0], size):
        yield frames[start : start + size]


def _resolve_format(path: Path, format: str | None) -> str:
    """Output format from ``format`` or the file suffix."""
    name = (format or VIDEO_FORMATS.get(path.suffix.lower(), "")).lower().lstrip(".")
    if name not in _PRESETS:
        known = ", ".join(VIDEO_FORMATS)
        raise ValueError(f"unsupported video format for {path}: use one of {known} (or format='mp4'/'webm'/'gif')")
    return name


def _first_encoder(names: tuple[str, ...], kind: str, format: str) -> str:
    """First encoder in ``names`` that this FFmpeg build has; a later one than the first is announced (once)."""
    for name in names:
        try:
            av.Codec(name, "w")
        except Exception:  # noqa: BLE001 - UnknownCodecError and friends
            continue
        if name != names[0]:
            warnings.warn(f"this PyAV/FFmpeg build has no {names[0]} encoder: {format} {kind} is encoded with {name}"
                          + (" (no CRF mode: crf is ignored, 10 Mbit/s instead)" if name == "mpeg4" else ""),
                          stacklevel=3)
        return name
    raise ValueError(f"this PyAV/FFmpeg build has no {kind} encoder for {format} (tried {', '.join(names)})")


def _quality_options(codec: str, crf: int | None) -> dict[str, str]:
    """Codec options for a constant-quality encode (lower crf = better)."""
    if codec in ("libx264", "h264"):
        return {"crf": str(18 if crf is None else crf), "preset": "medium"}
    if codec == "libvpx-vp9":
        return {"crf": str(30 if crf is None else crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    if codec == "libvpx":  # VP8 treats the bitrate as a cap in CRF mode
        return {"crf": str(10 if crf is None else crf), "b": "20M", "deadline": "good", "cpu-used": "4"}
    if codec == "mpeg4":  # last-resort fallback; it has no CRF mode
        return {"b": "10M"}
    return {}


def _container_options(format: str) -> dict[str, str]:
    """Muxer options: mp4 gets its index at the front so browsers can start playing before the download ends."""
    return {"movflags": "+faststart"} if format == "mp4" else {}


def _encoded_size(width: int, height: int, even: bool) -> tuple[int, int]:
    """Encoded size: rounded up to even for yuv420p codecs that need it."""
    return (width + width % 2, height + height % 2) if even else (width, height)


def _pad_edge(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad an image at the bottom/right to (height, width) by repeating the last row/column."""
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _palette_frame(image: np.ndarray) -> av.VideoFrame:
    """A pal8 frame with this image's own 256-colour median-cut palette."""
    quantized = Image.fromarray(image, "RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    rgb = np.zeros((256, 3), np.uint8)
    used = np.asarray(quantized.getpalette() or [], np.uint8).reshape(-1, 3)[:256]
    rgb[: len(used)] = used
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)
    return av.VideoFrame.from_ndarray((np.asarray(quantized, np.uint8), argb), format="pal8")


def _to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Frames [n, H, W, C] or [H, W, C] -> contiguous uint8 RGB numpy [n, H, W, 3]."""
    t = torch.as_tensor(frames).detach().cpu()
    if t.dtype == torch.uint8 and t.ndim in (3, 4) and t.shape[-1] == 3:
        return np.ascontiguousarray((t if t.ndim == 4 else t.unsqueeze(0)).numpy())
    rgb = image_tensor_to_rgb(t)
    return (rgb * 255.0).round().to(torch.uint8).numpy()
