"""File-to-file animation: source image + driving video and/or speech -> mp4/webm/gif, streamed in constant memory.

Used by ``anytalk animate`` and the demo. Pass 1 streams the driving video through the motion estimator
(its motion is tiny: N x (6 + 3K) numbers), or the audio through the model's audio-to-motion part, or
both (pose from the video, expression from the audio, as Motion Mix); pass 2 renders the driven keypoints
chunk by chunk into the video writer, which muxes the audio (the audio file's, else the driving video's)
trimmed/padded to the frame count. Audio motion is transferred relative to the network's silent face
(:func:`~anytalk_core.audio_motion.rest_motion`), not to its first frame. Every input is checked before
any work starts, and the output is written to a temporary file and renamed at the end.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import torch

from .checkpoints import load_deferred
from .crop import CropSpec, paste_back
from .demo import MAX_TILE, MIN_TILE, fit_square
from .engine import Engine, EngineConfig, StageProgressFn, stage_progress
from .io_utils import check_can_write
from .media import VIDEO_FORMATS, VideoWriter, iter_video_frames, load_image, probe_audio, probe_video, read_audio
from .media._files import check_input_file, media_error, open_media
from .models.base import TalkingHeadModel, TransferOptions
from .stages import (
    TRACK_EVERY,
    TRACKED,
    crop_spec,
    cropped_frames,
    driving_stage,
    framing_family,
    render_stage,
    source_stage,
    track_head,
    transfer_stage,
)
from .tracking import check_track_every


@dataclass
class AnimateOptions:
    """Everything ``anytalk animate`` accepts besides the paths."""

    transfer: TransferOptions = field(default_factory=TransferOptions)
    smoothing: float = 0.0
    crop: str = "full"  # full | auto | "x,y,w,h" (for the source)
    driving_crop: str = "full"  # full | auto (first frame's square) | tracked (a square per frame) | "x,y,w,h"
    track_every: int = TRACK_EVERY  # driving_crop tracked: frames between head detections
    paste_back: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)
    overwrite: bool = False
    keep_audio: bool = True
    release_networks: bool = False  # free weights once a stage no longer needs them (one-shot CLI runs)
    fps: float = 25.0  # frame rate of audio-driven output without a driving video
    upscale: int | None = None  # write the model's frames enlarged to upscale x upscale px (for viewing only)

    def __post_init__(self) -> None:
        if not (isinstance(self.smoothing, (int, float)) and 0 <= self.smoothing <= 1):
            raise ValueError(f"smoothing must be between 0 and 1, got {self.smoothing!r}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and 0 < self.fps <= 240):
            raise ValueError(f"fps must be a number in (0, 240], got {self.fps!r}")
        parse_crop(self.crop)
        parse_crop(self.driving_crop, driving=True)
        check_track_every(self.track_every)
        if self.upscale is not None:
            if not (isinstance(self.upscale, int) and MIN_TILE <= self.upscale <= MAX_TILE):
                raise ValueError(f"upscale must be a whole number of pixels in [{MIN_TILE}, {MAX_TILE}], "
                                 f"got {self.upscale!r}")
            if self.paste_back:
                raise ValueError("upscale enlarges the model's square frames; with paste-back the output already "
                                 "has the source's size: use one or the other")


def parse_crop(text: str, driving: bool = False) -> str | tuple[float, float, float, float]:
    """'full', 'auto' or 'X,Y,W,H' (pixels) -> the mode or the box; ``driving`` crops may also be 'tracked'."""
    if text in ("full", "auto") or (driving and text == TRACKED):
        return text
    parts = text.split(",")
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        modes = "full, auto, tracked" if driving else "full, auto"
        raise ValueError(f"{'driving ' if driving else ''}crop must be {modes} or X,Y,W,H with a positive width and "
                         f"height, got {text!r}")
    return box  # type: ignore[return-value]


def check_paths(source: str, driving: str | None, out: str, overwrite: bool, extra_inputs: tuple[str, ...] = (),
                audio: str | None = None) -> Path:
    """Fail before any work: missing inputs, an unsupported output format, an output that is an input."""
    if driving is None and audio is None:
        raise ValueError("nothing drives the portrait: give a driving video, an audio file, or both")
    for path, kind in ((source, "source image"), (driving, "driving video"), (audio, "audio file")):
        if path is not None and os.path.isdir(path):
            raise IsADirectoryError(f"{path}: is a folder; the {kind} must be a file")
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: {kind} not found")
    for path in extra_inputs:  # e.g. a checkpoint, which may be a LivePortrait folder
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: not found")
    out_path = Path(out)
    if out_path.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"{out}: the output must end in one of {', '.join(sorted(VIDEO_FORMATS))}")
    real_out = os.path.realpath(out)
    for path in (source, driving, audio, *extra_inputs):
        if path is not None and os.path.realpath(path) == real_out:
            raise ValueError(f"{out}: the output would replace the input {path}; choose another output name")
    check_can_write(out_path, overwrite)
    if not out_path.parent.exists():
        raise FileNotFoundError(f"{out}: the folder {out_path.parent} does not exist")
    if driving is not None:  # headers only: a clip over the bounds (length, frame size) is refused before any work
        probe_video(driving)
    if audio is not None:
        probe_audio(audio)
    return out_path


def check_inputs(source: str, driving: str | None, audio: str | None) -> None:
    """Decode what a run reads before any model is loaded: the source image, the driving video (a video stream
    and its first frame) and the audio (an audio stream and its first samples), each with the media readers.

    Raises the reader's one-line ValueError naming the file (not an image, no video stream, no audio track...).
    """
    load_image(source)
    if driving is not None:
        probe_video(driving)
    if audio is not None:
        check_audio(audio)


def animate_file(model: TalkingHeadModel, source: str, driving: str | None, out: str,
                 options: AnimateOptions | None = None, progress: StageProgressFn | None = None,
                 audio: str | None = None, say: Callable[[str], None] | None = None) -> Path:
    """Animate ``source`` with the motion of ``driving`` and/or the speech in ``audio``; returns the written path.

    With both, the head pose comes from the video and the expression from the audio (the audio's length is
    fitted to the video's frames); with the audio alone the output has ``options.fps`` frames per second.
    ``progress(stage, done, total)`` reports each stage in its frames (see :func:`.engine.stage_progress`);
    ``say(line)`` gets what a user should know: the precision that runs, how ``--crop auto`` framed the inputs,
    the output's size.
    """
    from .audio_motion import require_audio2motion

    options = options or AnimateOptions()
    out_path = check_paths(source, driving, out, options.overwrite, audio=audio)
    if audio is not None:
        require_audio2motion(model)
    info = probe_video(driving) if driving is not None else None
    sound = read_audio(audio) if audio is not None else None
    engine = Engine(model, options.engine)
    if say is not None:
        say(engine.describe_precision())
    size = model.config.image_size

    family = framing_family(model)
    portrait = source_stage(engine, load_image(source).permute(2, 0, 1).unsqueeze(0), parse_crop(options.crop))
    if say is not None and options.crop == "auto":
        say(describe_auto_crop(portrait.spec, "source", family))
    if options.release_networks:
        model.release_networks(model.source_only_modules)

    fps = info.fps if info is not None else float(options.fps)
    frames = None
    if driving is not None:
        frames = _driving_frames(driving, fps, options.driving_crop, size, say, family, options.track_every,
                                 info.frame_count, progress)
    motion = driving_stage(engine, fps, frames=frames, total=info.frame_count if info is not None else None,
                           audio=sound, progress=progress)
    keypoints = transfer_stage(engine, portrait.state, motion, options.transfer, options.smoothing, fps)
    if options.release_networks:
        model.release_networks(model.networks_not_needed_for_rendering())
    load_deferred(model)  # the rendering networks, when the loader deferred them (the CLI does)
    engine.refresh_layout()

    if sound is None and options.keep_audio and info.has_audio:
        sound = read_audio(driving)
    if say is not None:
        say(_output_size_note(tuple(portrait.original.shape[-2:]), size, options))
    with VideoWriter(out_path, fps=fps, audio=sound, overwrite=options.overwrite) as writer:
        for generated in render_stage(engine, portrait.state, keypoints, progress=progress):
            if options.paste_back:
                generated = paste_back(portrait.original, generated, portrait.spec)
            elif options.upscale is not None:
                generated = fit_square(generated, options.upscale)
            writer.write(generated.permute(0, 2, 3, 1))
    return out_path


def _driving_frames(driving: str, fps: float, crop: str, size: int, say: Callable[[str], None] | None = None,
                    family: str = "anytalk", track_every: int = TRACK_EVERY, total: int | None = None,
                    progress: StageProgressFn | None = None) -> Iterator[torch.Tensor]:
    """The driving video's frames cropped for the model, one at a time: (1, 3, size, size) in 0..1.

    Frame by frame: a full-size float copy of one frame at most (the engine makes its own chunks). ``tracked``
    reads the video twice: once for the head's squares (:func:`~.stages.track_head`), once to crop."""
    def decoded() -> Iterator[torch.Tensor]:
        return (frame for piece in iter_video_frames(driving, fps=fps) for frame in piece)

    def as_input(frames: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        return (frame.permute(2, 0, 1).unsqueeze(0).float() / 255 for frame in frames)

    if crop == TRACKED:
        uint8 = (frame.permute(2, 0, 1).unsqueeze(0) for frame in decoded())  # the tracker converts what it reads
        track = track_head(uint8, size, every=track_every, fps=fps, family=family, total=total,
                           progress=stage_progress(progress, "tracking", total))
        if say is not None:
            say(f"crop tracked: the driving video: {track.describe()} ({family} driving framing)")
        return cropped_frames(as_input(decoded()), track.spec(size))
    frames = decoded()
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{driving}: the video has no frames")
    spec = crop_spec(first.permute(2, 0, 1).unsqueeze(0).float() / 255, parse_crop(crop, driving=True), size,
                     family=family, role="driving")
    if say is not None and crop == "auto":
        say(describe_auto_crop(spec, "driving video (its first frame's box, kept for every frame)", family))
    return cropped_frames(as_input(itertools.chain([first], frames)), spec)


def check_audio(path: str) -> None:
    """An audio stream that decodes: its first frame is read (the whole track is read later, by read_audio)."""
    p = check_input_file(path, "Audio")
    with open_media(p, "audio") as container:
        if not container.streams.audio:
            raise ValueError(f"no audio track in {p}")
        try:
            frame = next(container.decode(container.streams.audio[0]), None)
        except av.FFmpegError as e:
            raise media_error(p, "audio", e) from None
    if frame is None:
        raise ValueError(f"no decodable audio in {p}")


def describe_auto_crop(spec: CropSpec, what: str, family: str | None = None,
                       fix: str = "give --crop X,Y,W,H to frame it yourself") -> str:
    """One line for an auto crop: which detector framed ``what`` (or that none found a head, and ``fix``) and
    the crop (in ``family``'s framing, when given)."""
    side = spec.box(0)[2]
    h, w = spec.original_hw
    crop = f"a {side:.0f} x {side:.0f} px square of the {w} x {h} picture"
    report = spec.reports[0] if spec.reports else None
    if report is None or report.detector == "center":
        notice = f" ({report.notice})" if report is not None and report.notice else ""
        return f"crop auto: no head found in the {what}; using the centre square instead ({crop}){notice}; {fix}"
    framing = f" ({family} framing)" if family is not None else ""
    return f"crop auto: the {what} {report.describe()}; cropped to {crop}{framing}"


def _output_size_note(source_hw: tuple[int, int], size: int, options: AnimateOptions) -> str:
    """One line: the size of the written frames, and where it comes from."""
    if options.paste_back:
        return f"output: {source_hw[1]} x {source_hw[0]} px (the source's size, the animated crop pasted back)"
    if options.upscale is not None:
        return (f"output: {options.upscale} x {options.upscale} px: the model's {size} x {size} px frames "
                "enlarged for viewing (--upscale adds no detail)")
    return (f"output: {size} x {size} px, the model's size (--upscale PX enlarges the frames for viewing; "
            "--paste-back keeps the source's size)")
