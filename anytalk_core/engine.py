"""The inference engine shared by the CLI, the ComfyUI nodes and the evaluation suite.

Source work (appearance volume, canonical keypoints, source motion) is done once per portrait and kept.
Driving frames stream through the motion estimator in chunks; the driven keypoints of a whole clip are
tiny (N x K x 3), so they are computed first, smoothed if asked, and then rendered chunk by chunk through
dense motion and the generator. Frames live on the CPU between chunks, so memory is bounded by the chunk
size, not the clip length. Progress callbacks run between chunks; the cancel callback is asked before every
frame (every batch where frames are batched, the GPU default), so Cancel costs at most one frame's compute
whatever the chunk size.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import expression_edit
from .models.base import SourceState, TalkingHeadModel, TransferOptions
from .motion import Motion

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: see resolve_precision

AUDIO_CHUNK = 128  # video frames per audio-to-motion pass (a few hundred tokens: memory is tiny at any length)

ProgressFn = Callable[[int, int], None]  # (frames done, frames total)
StageProgressFn = Callable[[str, int, int], None]  # (stage: "motion", "audio" or "render", frames done, frames total)
CancelFn = Callable[[], bool]  # True to stop


class NonFiniteOutputError(RuntimeError):
    """The generator produced NaN/inf pixels (typically fp16 overflow); the message says how to avoid it."""


class EngineInterrupted(RuntimeError):
    """Raised before the next frame (or batch) when the cancel callback asks to stop."""


@dataclass
class EngineConfig:
    """Device and speed options. ``None`` means: on only where it measured faster on that device."""

    device: str = "auto"
    precision: str = "fp32"
    chunk_size: int = 8
    channels_last: bool | None = None
    compile: bool = False
    batch_frames: bool | None = None  # decode a chunk as one batch (GPU) or frame by frame (CPU default)

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if not isinstance(self.chunk_size, int) or isinstance(self.chunk_size, bool) or self.chunk_size < 1:
            raise ValueError(f"chunk size must be a whole number >= 1, got {self.chunk_size!r}")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; validate explicit names with a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def cpu_bf16_support(cpuinfo: str | None = None) -> list[str]:
    """The bf16 instruction sets this CPU has (``amx_bf16``, ``avx512_bf16`` from /proc/cpuinfo's flags), [] when
    none or unknown. Without them torch emulates bf16 on the CPU, slower than fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[-1].split())
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses and why: ``name`` itself, or for ``auto`` bf16 on a CPU with bf16 instructions
    (1.6x fp32's speed with AVX512-BF16, 2.3x with AMX; frames within 48-61 dB of fp32's: benchmarks/bench_inference.py) and fp32 elsewhere
    (GPUs included: fp16/bf16 there are a choice, README Performance)."""
    if name != "auto":
        return name, "asked for"
    if device.type == "cpu":
        flags = cpu_bf16_support()
        if flags:
            return "bf16", f"auto: this CPU has {flags[0]}"
        return "fp32", "auto: this CPU has no bf16 instructions (amx_bf16 / avx512_bf16)"
    return "fp32", f"auto on {device.type}"


def rechunk(frames: torch.Tensor | Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Re-chunk a tensor (N, ...) or an iterable of tensors (n_i, ...) into pieces of ``size`` frames."""
    if isinstance(frames, torch.Tensor):
        for start in range(0, frames.shape[0], size):
            yield frames[start:start + size]
        return
    pending: list[torch.Tensor] = []
    count = 0
    for piece in frames:
        pending.append(piece)
        count += piece.shape[0]
        while count >= size:
            joined = torch.cat(pending)
            yield joined[:size]
            rest = joined[size:]
            pending, count = ([rest] if rest.shape[0] else []), rest.shape[0]
    if count:
        yield torch.cat(pending)


def to_model_input(frames: torch.Tensor) -> torch.Tensor:
    """uint8 or float frames (n, H, W, 3) or (n, 3, H, W) -> float32 (n, 3, H, W) in 0..1."""
    if frames.dim() != 4:
        raise ValueError(f"frames must have 4 dimensions (n, H, W, 3), got shape {tuple(frames.shape)}")
    if frames.shape[-1] == 3 and frames.shape[1] != 3:
        frames = frames.permute(0, 3, 1, 2)
    if frames.shape[1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255
    frames = frames.float()
    if not torch.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite values")
    return frames


class Engine:
    """Runs a loaded model efficiently: cached source work, chunked streaming, optional reduced precision."""

    def __init__(self, model: TalkingHeadModel, config: EngineConfig | None = None):
        self.config = config or EngineConfig()
        self.device = resolve_device(self.config.device)
        self.precision, self.precision_reason = resolve_precision(self.config.precision, self.device)
        self.dtype = PRECISIONS[self.precision]
        self.model = model.eval()
        self.channels_last = self._default_channels_last() if self.config.channels_last is None else self.config.channels_last
        self.refresh_layout()
        self._decode = torch.compile(self.model.decode) if self.config.compile else self.model.decode
        # On the CPU one frame already fills the GEMMs at full size, and frame-by-frame decoding makes the
        # output independent of the chunk size bit for bit; on GPUs batching pays.
        self.batch_frames = self.device.type != "cpu" if self.config.batch_frames is None else self.config.batch_frames

    def describe_precision(self) -> str:
        """One line for the user: which precision runs and why (``precision bf16 (auto: this CPU has avx512_bf16)``)."""
        return f"precision {self.precision} ({self.precision_reason})"

    def refresh_layout(self) -> None:
        """Put the model's loaded networks on the engine's device and the generator's maps (on CUDA its weights too)
        in the engine's memory layout (again after networks were read late: ``checkpoints.load_deferred``)."""
        self.model.to(self.device)
        self.model.generator.channels_last = self.channels_last
        if self.device.type == "cuda" and "generator" not in self.model.unloaded_networks:
            # On the CPU the weights keep their layout: converting them would copy every weight, and a memory-mapped
            # checkpoint's pages would stay resident beside the copies (+0.2 GiB); oneDNN reorders them per call anyway.
            self.model.generator.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _default_channels_last(self) -> bool:
        # CPU: oneDNN runs the decoder's wide-map convolutions up to 2.5x faster on channels-last maps, measured on
        # AVX-512 and with oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2), fp32 and bf16 (benchmarks/bench_inference.py).
        # CUDA: measured slower in fp16 and bf16 on an H200 (11.4 against 9.4 ms/frame, benchmarks/bench_gpu.py).
        return self.device.type == "cpu"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        # No cache of cast weights: it would hold a bf16/fp16 copy of every weight for the whole frame (peak memory
        # +0.12 GiB at full size on the CPU); without it each layer casts its weight as it runs, as often as with it.
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, cache_enabled=False)

    # --- source ------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_source(self, image: torch.Tensor) -> SourceState:
        """One source image (1, 3, H, W) / (H, W, 3) -> cached source state on the engine's device (fp32)."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        image = to_model_input(image)
        if image.shape[0] != 1:
            raise ValueError(f"prepare_source takes one image, got a batch of {image.shape[0]}")
        return self.model.prepare_source(image.to(self.device))

    # --- motion ------------------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_motion(self, frames: torch.Tensor | Iterable[torch.Tensor], total: int | None = None,
                        progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                        fps: float | None = None) -> Motion:
        """Motion of every driving frame, streamed in chunks (frames in any layout accepted by to_model_input)."""
        total = total if total is not None else (frames.shape[0] if isinstance(frames, torch.Tensor) else 0)
        parts, done = [], 0
        for chunk in rechunk(frames, self.config.chunk_size):
            for piece in self._pieces(chunk):
                self._check_cancel(cancel)
                parts.append(self.model.estimate_motion(to_model_input(piece).to(self.device)).to("cpu"))
            done += chunk.shape[0]
            if progress:
                progress(done, max(total, done))
        if not parts:
            raise ValueError("no driving frames: the video or image batch is empty")
        motion = Motion.cat(parts)
        motion.fps = fps
        return motion

    @torch.no_grad()
    def audio_motion(self, audio: object, fps: float, n_frames: int | None = None, expression_strength: float = 1.0,
                     pose_strength: float = 1.0, progress: ProgressFn | None = None,
                     cancel: CancelFn | None = None) -> Motion:
        """Motion at ``fps`` from speech with the model's audio-to-motion part (see :mod:`.audio_motion`)."""
        from .audio_motion import audio_to_motion

        return audio_to_motion(self.model, audio, fps, n_frames, expression_strength=expression_strength,
                               pose_strength=pose_strength, chunk=AUDIO_CHUNK,
                               progress=progress, cancel=lambda: self._check_cancel(cancel))

    @torch.no_grad()
    def rest_motion(self, fps: float | None = None) -> Motion:
        """The audio-to-motion network's silent face (one frame), the reference for relative transfer."""
        from .audio_motion import rest_motion

        return rest_motion(self.model, fps)

    @torch.no_grad()
    def driven_keypoints(self, source: SourceState, driving: Motion, options: TransferOptions | None = None,
                         reference: Motion | None = None) -> torch.Tensor:
        """Driven keypoints (N, K, 3) of the whole clip; small, so computed at once and returned on the CPU.

        A motion holding NaN or infinite values is refused here, as bad input, before the generator runs.
        """
        for label, motion in (("driving motion", driving), ("reference motion", reference)):
            if motion is None:
                continue
            for name, values in motion.tensors().items():
                if not bool(torch.isfinite(values).all()):
                    first = int((~torch.isfinite(values)).reshape(values.shape[0], -1).any(dim=1).nonzero()[0])
                    raise ValueError(f"the {label} holds NaN or infinite values ({name}, frame {first}): it is bad "
                                     "input, not a precision problem; check the file or node it came from")
        ref = reference.to(self.device) if reference is not None else None
        return self.model.driven_keypoints(source, driving.to(self.device), options, ref).to("cpu")

    @torch.no_grad()
    def retargeted_keypoints(self, source: SourceState, driving: Motion, options: TransferOptions | None = None,
                             reference: Motion | None = None, eye_ratio: float | None = None,
                             lip_ratio: float | None = None) -> torch.Tensor:
        """Driven keypoints (N, K, 3) with the eyes / lips retargeted to these open ratios before stitching.

        Families without retargeting networks (face-vid2vid) ignore the ratios: their plain driven keypoints."""
        if (eye_ratio is None and lip_ratio is None) or not hasattr(self.model, "retarget_eye"):
            return self.driven_keypoints(source, driving, options, reference=reference)
        delta = expression_edit.retarget(self.model, source.keypoints, eye_ratios=eye_ratio, lip_ratios=lip_ratio,
                                         eyes=eye_ratio is not None, lips=lip_ratio is not None)
        ref = reference.to(self.device) if reference is not None else None
        return expression_edit.retargeted_keypoints(self.model, source, driving.to(self.device), options,
                                                    reference=ref, retarget_delta=delta).to("cpu")

    # --- rendering ---------------------------------------------------------------------------------
    @torch.no_grad()
    def render(self, source: SourceState, keypoints: torch.Tensor, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None) -> Iterator[torch.Tensor]:
        """Yield generated frames (n, 3, H, W) float32 on the CPU, chunk by chunk, for driven keypoints (N, K, 3)."""
        total = keypoints.shape[0]
        done = 0
        for kp in rechunk(keypoints, self.config.chunk_size):
            frames = self.decode_chunk(source, kp, cancel=cancel)
            done += kp.shape[0]
            if progress:
                progress(done, total)
            yield frames

    def decode_chunk(self, source: SourceState, keypoints: torch.Tensor,
                     cancel: CancelFn | None = None) -> torch.Tensor:
        """Dense motion + generator for one chunk of driven keypoints (n, K, 3) -> CPU float32 frames.

        ``cancel`` is asked before each frame (each batch when frames are batched)."""
        keypoints = keypoints.to(self.device, source.keypoints.dtype)
        frames = []
        for kp in self._pieces(keypoints):
            self._check_cancel(cancel)
            n = kp.shape[0]
            volume = source.volume.expand(n, *source.volume.shape[1:])
            kp_source = source.keypoints.expand(n, *source.keypoints.shape[1:])
            with torch.no_grad(), self._autocast():
                out = self._decode(volume, kp, kp_source)
            prediction = out["prediction"].float()
            if not bool(torch.isfinite(prediction).all()):
                raise NonFiniteOutputError(
                    f"the generator produced NaN/inf pixels (precision {self.precision} on {self.device}); "
                    "run with precision bf16 or fp32 (README.md, Troubleshooting: black frames in fp16)")
            frames.append(prediction.clamp_(0, 1).to("cpu"))
        return torch.cat(frames)

    def _pieces(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """A chunk as the engine computes it: one batch (GPU default) or frame by frame (CPU default)."""
        return [batch] if self.batch_frames else list(batch.split(1))

    @staticmethod
    def _check_cancel(cancel: CancelFn | None) -> None:
        if cancel is not None and cancel():
            raise EngineInterrupted("interrupted by the user")


def stage_progress(progress: StageProgressFn | None, stage: str, total: int | None = None) -> ProgressFn | None:
    """The engine's ``(done, total)`` callback of one stage of a run, reported as ``progress(stage, done, total)``.

    A run (``anytalk animate``, ``anytalk demo``) reports each stage in its own frames: ``motion`` and ``audio``
    count driving frames, ``render`` counts output frames. With ``total``, the stage's start is reported at
    once as ``(stage, 0, total)``, so a progress bar's rate and time estimate count from the stage's start.
    """
    if progress is None:
        return None
    if total is not None:
        progress(stage, 0, total)
    return lambda done, total: progress(stage, done, total)


def smooth_motion(motion: Motion, fps: float, strength: float, method: str = "one_euro") -> Motion:
    """Temporal smoothing of every motion component (angles unwrapped) with one strength knob in [0, 1]."""
    from .smoothing import smooth

    if not 0 <= strength <= 1:
        raise ValueError(f"smoothing strength must be between 0 and 1, got {strength}")
    if strength == 0 or len(motion) < 2:
        return motion
    out = {}
    for name, value in motion.tensors().items():
        out[name] = smooth(value, fps, strength, method=method, angles=name in ("yaw", "pitch", "roll"))
    return motion._replace(**out)
