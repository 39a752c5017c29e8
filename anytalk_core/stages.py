"""The typed stages every entry point runs: Source -> Driving -> Transfer -> Render -> (the caller's) Assemble.

- **Source**: a crop mode -> :class:`~.crop.CropSpec` (:func:`crop_spec`, the one rule, framed the way the
  model's checkpoint was trained: :func:`framing_family`) and the model's cached per-portrait work
  (:func:`source_stage` -> :class:`Source`).
- **Driving**: frames (any iterator of chunks), a ready motion, speech, or frames/motion plus speech ->
  :class:`Driving` (motion + reference); :func:`mix_speech` is the one motion-mix rule. Driving frames are
  cropped by one square (:func:`crop_spec` with ``role="driving"`` on the first frame) or one per frame
  (:func:`track_head`, the ``tracked`` mode), and :func:`cropped_frames` applies either.
- **Transfer**: per-family options (:func:`transfer_options`, from ``type(model).transfer_options_type``) and
  driven keypoints through the engine (:func:`transfer_stage`).
- **Render**: generated frames streamed chunk by chunk (:func:`render_stage`).

Chunking lives only in the engine: stages take any iterator and never pre-slice by the chunk size. Each stage
reports its own progress as ``progress(stage, done, total)`` (:func:`.engine.stage_progress`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .crop import CropSpec, apply_crop, crop_auto, crop_box, crop_full
from .engine import CancelFn, Engine, StageProgressFn, smooth_motion, stage_progress
from .models.base import SourceState, TalkingHeadModel, TransferOptions
from .motion import Motion, mix
from .tracking import TRACK_EVERY, Track, track_head

__all__ = [
    "TRACKED", "TRACK_EVERY", "Track", "track_head", "framing_family", "crop_spec", "Source", "source_stage",
    "Driving", "cropped_frames", "mix_speech", "driving_stage", "transfer_options", "transfer_stage",
    "render_stage", "aligned", "animate_clip",
]

Box = tuple[float, float, float, float]
#: The driving crop mode that follows the head: a square per frame (:func:`track_head`), not one for the clip.
TRACKED = "tracked"


# --- Source ----------------------------------------------------------------------------------------
def framing_family(model: TalkingHeadModel) -> str:
    """The framing ``model``'s checkpoint was trained with (a key of :data:`~.detection.FRAMINGS`): ``anytalk``
    for checkpoints written by ``anytalk-train`` (trained on the synthetic renders' framing), else its family's:
    ``liveportrait`` (human and animal) or ``face_vid2vid``."""
    provenance = getattr(model, "provenance", None) or {}
    if provenance.get("trainer") == "anytalk-train":
        return "anytalk"
    family = model.config.family
    if family.startswith("liveportrait"):
        return "liveportrait"
    return "face_vid2vid" if family == "face_vid2vid" else "anytalk"


def crop_spec(image: torch.Tensor, crop: str | Box, size: int, scale: float = 1.0, family: str = "anytalk",
              role: str = "source") -> CropSpec:
    """Crop of one image (1, 3, H, W): ``crop`` is "full", "auto" or a box (x, y, w, h) in pixels; "auto" frames
    the face the way ``family`` (:func:`framing_family`) was trained for ``role`` ("source" or "driving")."""
    hw = tuple(image.shape[-2:])
    if crop == "full":
        return crop_full(hw, size)
    if crop == "auto":
        return crop_auto(image, size, family=family, role=role)
    if crop == TRACKED:
        raise ValueError("crop 'tracked' follows a head through a video: it is a driving crop (track_head)")
    if isinstance(crop, str):
        raise ValueError(f"unknown crop mode {crop!r}; choose full, auto or a box (x, y, w, h)")
    return crop_box(hw, crop, size, scale=scale)


@dataclass
class Source:
    """A portrait ready to animate: the picture (1, 3, H, W) in 0..1, its crop and the model's cached work."""

    original: torch.Tensor
    spec: CropSpec
    state: SourceState


def source_stage(engine: Engine, original: torch.Tensor, crop: str | Box = "full", scale: float = 1.0) -> Source:
    """Crop the portrait (1, 3, H, W) for the model (framed as its checkpoint was trained) and run its
    once-per-portrait work."""
    spec = crop_spec(original, crop, engine.model.config.image_size, scale, family=framing_family(engine.model))
    return Source(original, spec, engine.prepare_source(apply_crop(original, spec)))


# --- Driving ---------------------------------------------------------------------------------------
@dataclass
class Driving:
    """What drives the portrait: a motion (N frames) and, where relative transfer needs one, its reference."""

    motion: Motion
    reference: Motion | None = None


def cropped_frames(chunks: Iterable[torch.Tensor], spec: CropSpec | None) -> Iterator[torch.Tensor]:
    """Driving chunks (n, 3, H, W) in 0..1 cropped for the model (``spec`` None: already the model's input).

    A spec of batch 1 crops every frame alike; a longer one (:meth:`Track.spec`) holds one crop per frame."""
    done = 0
    for piece in chunks:
        if spec is None or len(spec) == 1:
            yield piece if spec is None else apply_crop(piece, spec)
            continue
        n = piece.shape[0]
        if done + n > len(spec):
            raise ValueError(f"{done + n} driving frames but crops for {len(spec)}: the clip changed between passes")
        yield apply_crop(piece, spec.select(slice(done, done + n)))
        done += n


def mix_speech(motion: Motion, speech: Motion, rest: Motion) -> Driving:
    """The one motion-mix rule: head pose from ``motion``, expression from the speech; the reference is the
    driver's first pose with the audio network's silent face."""
    mixed = mix(motion, speech)
    mixed.fps = motion.fps or speech.fps
    return Driving(mixed, mix(motion[0], rest))


def driving_stage(engine: Engine, fps: float, frames: torch.Tensor | Iterable[torch.Tensor] | None = None,
                  total: int | None = None, motion: Motion | None = None, audio: object = None,
                  audio_drives_expression: bool = True, progress: StageProgressFn | None = None,
                  cancel: CancelFn | None = None) -> Driving:
    """Frames (chunks in any layout the engine accepts), a ready motion, speech, or one of them plus speech.

    With frames or a motion and speech (``audio_drives_expression``), the pose comes from the former and the
    expression from the speech (fitted to its length); speech alone drives the face relative to the silent face.
    """
    if frames is not None:
        count = max(total or 0, 1)
        motion = engine.estimate_motion(frames, total=count, progress=stage_progress(progress, "motion", count),
                                        cancel=cancel, fps=fps)
    if audio is None or (motion is not None and not audio_drives_expression):
        if motion is None:
            raise ValueError("nothing drives the portrait: give driving frames, a motion or speech")
        return Driving(motion)
    rate = motion.fps or fps if motion is not None else fps
    speech = engine.audio_motion(audio, rate, n_frames=len(motion) if motion is not None else None,
                                 progress=stage_progress(progress, "audio"), cancel=cancel)
    rest = engine.rest_motion(rate)
    return Driving(speech, rest) if motion is None else mix_speech(motion, speech, rest)


# --- Transfer --------------------------------------------------------------------------------------
def transfer_options(model: TalkingHeadModel, mode: str = "relative", pose_strength: float = 1.0,
                     expression_strength: float = 1.0, translation_strength: float = 1.0, adapt_scale: bool = False,
                     **family_options: object) -> TransferOptions:
    """The model family's options (``type(model).transfer_options_type``); family switches it lacks are ignored."""
    options_type = type(model).transfer_options_type
    known = {f.name for f in dataclasses.fields(options_type)}
    extra = {name: value for name, value in family_options.items() if name in known}
    return options_type(mode=mode, pose_strength=float(pose_strength), expression_strength=float(expression_strength),
                        translation_strength=float(translation_strength), adapt_scale=bool(adapt_scale), **extra)


def transfer_stage(engine: Engine, state: SourceState, driving: Driving, options: TransferOptions | None = None,
                   smoothing: float = 0.0, fps: float = 25.0) -> torch.Tensor:
    """Driven keypoints (N, K, 3) on the CPU; ``smoothing`` in [0, 1] smooths the motion at ``fps`` first."""
    motion = smooth_motion(driving.motion, fps, smoothing) if smoothing > 0 else driving.motion
    return engine.driven_keypoints(state, motion, options, reference=driving.reference)


# --- Render ----------------------------------------------------------------------------------------
def render_stage(engine: Engine, state: SourceState, keypoints: torch.Tensor,
                 progress: StageProgressFn | None = None, cancel: CancelFn | None = None) -> Iterator[torch.Tensor]:
    """Generated frames (n, 3, S, S) float32 on the CPU, streamed chunk by chunk (the engine's chunks)."""
    return engine.render(state, keypoints, progress=stage_progress(progress, "render", len(keypoints)), cancel=cancel)


# --- Assemble helpers ------------------------------------------------------------------------------
def aligned(rendered: Iterable[torch.Tensor],
            frames: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each rendered chunk (n, ...) with the next n frames of another stream of chunks (driving or true frames);
    stops when either runs out (the last pair may then be shorter on the stream's side)."""
    stream = iter(frames)
    pending: list[torch.Tensor] = []
    have = 0
    for chunk in rendered:
        n = chunk.shape[0]
        while have < n:
            piece = next(stream, None)
            if piece is None:
                break
            pending.append(piece)
            have += piece.shape[0]
        if have == 0:
            return
        joined = torch.cat(pending)
        yield chunk, joined[:n]
        pending, have = [joined[n:]], max(have - n, 0)


# --- all together, in memory ------------------------------------------------------------------------
def animate_clip(engine: Engine, source_image: torch.Tensor, driving_frames: torch.Tensor | Iterable[torch.Tensor],
                 options: TransferOptions | None = None, smoothing: float = 0.0, fps: float = 25.0,
                 total: int | None = None, progress: StageProgressFn | None = None,
                 cancel: CancelFn | None = None) -> Iterator[torch.Tensor]:
    """A source already at the model's input (1, 3, S, S) + driving frames -> generated frames (n, 3, S, S), streamed.

    The in-memory run of tests, evaluation and benchmarks: every stage, no crop, no file."""
    state = engine.prepare_source(source_image)
    if total is None and isinstance(driving_frames, torch.Tensor):
        total = driving_frames.shape[0]
    driving = driving_stage(engine, fps, frames=driving_frames, total=total, progress=progress, cancel=cancel)
    keypoints = transfer_stage(engine, state, driving, options, smoothing, fps)
    yield from render_stage(engine, state, keypoints, progress=progress, cancel=cancel)
