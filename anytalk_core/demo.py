"""``anytalk demo``: animate the bundled cartoon-animal portrait with the bundled synthetic human clip.

The demo model (``assets/demo/anytalk_demo.safetensors``) was trained by ``anytalk-train
training/configs/demo.toml`` on synthetic heads only (64 px, CPU). The demo writes two files and never
overwrites: a video (driving | source | result, side by side, with the driving clip's audio) and a
contact-sheet PNG (rows: driving frames, generated frames, at evenly spaced times).

:func:`make_demo_inputs` is how the bundled source image and driving clip were made (deterministic).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .crop import apply_crop, crop_full
from .engine import Engine, EngineConfig, StageProgressFn
from .io_utils import unique_path
from .media import VideoWriter, iter_video_frames, load_image, probe_video, read_audio, save_image
from .models.base import TransferOptions
from .stages import animate_clip, driving_stage, render_stage, transfer_stage

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"
DEMO_CHECKPOINT = "anytalk_demo.safetensors"
DEMO_SOURCE = "source_animal.png"
DEMO_DRIVING = "driving_human.mp4"

# Identities of the bundled inputs: a tagged seed namespace no training or benchmark run draws from.
_SOURCE_SEED = (0xDE30, 1, 7)
_DRIVER_SEED = (0xDE30, 2, 2)


@dataclass
class DemoResult:
    video: Path
    contact_sheet: Path
    frames: int
    fps: float


def demo_file(name: str) -> Path:
    """A bundled demo file; a clear error when the repository's ``assets/demo`` is not beside the package."""
    path = DEMO_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: bundled demo file not found. The demo files live in the repository's assets/demo "
            f"folder: install from a clone (pip install -e .) or pass --checkpoint/--source/--driving")
    return path


def demo_motion(n_frames: int, fps: float, rng: np.random.Generator):
    """Driving motion of the demo clip: a clear head turn, nod and tilt, speech-driven mouth and blinks.

    Returns ``(pose [N,6], expression [N,7], speech)`` in the renderer's layouts.
    """
    from .synthetic import MotionConfig, sample_motion

    config = MotionConfig(yaw=0.0, pitch=0.0, roll=0.0, translation=0.0, scale=0.0, smile=(0.0, 0.4), gaze=0.2)
    pose, expr, speech = sample_motion(n_frames, fps, rng, config, with_audio=True)
    t = torch.arange(n_frames, dtype=torch.float32) / fps
    duration = n_frames / fps
    ramp = torch.clamp(t / 0.4, max=1.0)  # start from the frontal pose, as the source
    pose[:, 0] = 25.0 * ramp * torch.sin(2 * math.pi * t / duration)
    pose[:, 1] = 10.0 * ramp * torch.sin(4 * math.pi * t / duration)
    pose[:, 2] = 8.0 * ramp * torch.sin(3 * math.pi * t / duration)
    return pose, expr, speech


def demo_driving(size: int = 256, seconds: float = 4.0, fps: float = 25.0, head_motion: bool = True):
    """The demo driver rendered directly: ``(frames (N, 3, size, size) in 0..1, true jaw opening (N,), speech)``.

    With ``head_motion=False`` the same talking face holds still (frontal), which isolates the mouth."""
    from .synthetic import EXPRESSION_FIELDS, render_sequence, sample_identity

    driver_identity = sample_identity("human", np.random.default_rng(_DRIVER_SEED))
    pose, expr, speech = demo_motion(int(round(seconds * fps)), fps, np.random.default_rng(_DRIVER_SEED))
    if not head_motion:
        pose[:, :5] = 0.0
    frames = render_sequence(driver_identity, pose, expr, size).images.permute(0, 3, 1, 2).contiguous()
    return frames, expr[:, EXPRESSION_FIELDS.index("jaw_open")].clone(), speech


def make_demo_inputs(out_dir: str | Path, size: int = 256, seconds: float = 4.0, fps: float = 25.0) -> tuple[Path, Path]:
    """Render the bundled source (cartoon animal, frontal, neutral) and driving clip (human, talking)."""
    from .synthetic import render, sample_identity

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source_identity = sample_identity("animal", np.random.default_rng(_SOURCE_SEED))
    source = render(source_identity, size=size).image
    source_path = unique_path(out / DEMO_SOURCE) if (out / DEMO_SOURCE).exists() else out / DEMO_SOURCE
    save_image(source, source_path)
    frames, _, speech = demo_driving(size, seconds, fps)
    frames = frames.permute(0, 2, 3, 1)
    driving_path = unique_path(out / DEMO_DRIVING) if (out / DEMO_DRIVING).exists() else out / DEMO_DRIVING
    audio = {"waveform": speech.waveform[None], "sample_rate": speech.sample_rate}
    with VideoWriter(driving_path, fps=fps, audio=audio) as writer:
        writer.write(frames)
    return source_path, driving_path


#: The example inputs the shipped ComfyUI workflows name (copied into ComfyUI's input/ folder by the user).
WORKFLOW_INPUTS = ("anytalk_portrait.png", "anytalk_cartoon_fox.png", "anytalk_photo.png", "anytalk_driving.mp4",
                   "anytalk_speech.wav")
_PORTRAIT_SEED = (0xDE30, 3, 1)
_PHOTO_SEED = (0xDE30, 4, 5)


def make_workflow_inputs(out_dir: str | Path, size: int = 256, seconds: float = 4.0,
                         fps: float = 25.0) -> list[Path]:
    """Render the example inputs of ``workflows/`` (:data:`WORKFLOW_INPUTS`) into ``out_dir``; never overwrites.

    A human portrait, the demo's cartoon animal, a "photo" (a rendered person at the right, on a
    4:3 cluttered scene, for crop + paste-back), the demo's talking driver clip and its speech as a 16 kHz wav.
    """
    from .detection.train_heads import _procedural
    from .media import write_wav
    from .synthetic import render, sample_identity

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in WORKFLOW_INPUTS}
    taken = [p for p in paths.values() if p.exists()]
    if taken:
        raise FileExistsError(f"{taken[0]} exists; remove the old example inputs first (nothing was written)")
    human = render(sample_identity("human", np.random.default_rng(_PORTRAIT_SEED)), size=size)
    save_image(human.image, paths["anytalk_portrait.png"])
    animal = render(sample_identity("animal", np.random.default_rng(_SOURCE_SEED)), size=size)
    save_image(animal.image, paths["anytalk_cartoon_fox.png"])
    rng = np.random.default_rng(_PHOTO_SEED)
    width, height = 400, 300
    scene = 0.25 + 0.5 * _procedural(rng, 1, width)[0][:, :height].clamp(0, 1)  # (3, 300, 400), muted
    person = render(sample_identity("human", rng), size=size)
    head = 170  # the render's side in the photo: the face is about a third of the picture's height
    rgb = F.interpolate(torch.as_tensor(person.image).permute(2, 0, 1)[None].float(), size=(head, head),
                        mode="area")[0]
    alpha = F.interpolate(torch.as_tensor(person.mask)[None, None].float(), size=(head, head), mode="area")[0]
    y0, x0 = height - head, 200  # shoulders on the bottom edge
    region = scene[:, y0:y0 + head, x0:x0 + head]
    scene[:, y0:y0 + head, x0:x0 + head] = alpha * rgb + (1 - alpha) * region
    save_image(scene.permute(1, 2, 0), paths["anytalk_photo.png"])
    frames, _, speech = demo_driving(size, seconds, fps)
    audio = {"waveform": speech.waveform[None], "sample_rate": speech.sample_rate}
    with VideoWriter(paths["anytalk_driving.mp4"], fps=fps, audio=audio) as writer:
        writer.write(frames.permute(0, 2, 3, 1))
    write_wav(paths["anytalk_speech.wav"], speech.waveform, speech.sample_rate)
    return list(paths.values())


MIN_TILE, MAX_TILE = 16, 4096  # pixel side of an enlarged frame (demo --tile, animate --upscale)


def fit_square(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in 0..1 -> (B, 3, size, size), area down / nearest-exact up (crisp pixels).

    A frame that is not square is fitted whole first, as ``anytalk animate --crop full`` does: centred, the
    shorter side padded with its edge pixels, so faces keep their proportions."""
    h, w = frames.shape[-2:]
    if h != w:
        frames = apply_crop(frames, crop_full((h, w), max(h, w)), mode="bilinear")
    if frames.shape[-1] == size and frames.shape[-2] == size:
        return frames
    mode = "nearest-exact" if frames.shape[-1] < size else "area"
    return F.interpolate(frames, size=(size, size), mode=mode).clamp_(0, 1)


def contact_sheet(driving: torch.Tensor, generated: torch.Tensor, source: torch.Tensor, columns: int = 8,
                  tile: int = 128, gap: int = 4) -> torch.Tensor:
    """A PNG-ready (H, W, 3) sheet: source tile, then ``columns`` evenly spaced driving and generated frames.

    ``driving`` and ``generated``: (N, 3, h, w) in 0..1; ``source``: (1, 3, h, w).
    """
    n = generated.shape[0]
    idx = torch.linspace(0, n - 1, steps=min(columns, n)).round().long()
    rows = [fit_square(driving[idx], tile), fit_square(generated[idx], tile)]
    width = (len(idx) + 1) * (tile + gap) + gap
    sheet = torch.ones(3, 2 * (tile + gap) + gap, width)
    src = fit_square(source, tile)[0]
    sheet[:, gap + (tile + gap) // 2: gap + (tile + gap) // 2 + tile, gap:gap + tile] = src
    for r, row in enumerate(rows):
        y = gap + r * (tile + gap)
        for c in range(len(idx)):
            x = gap + (c + 1) * (tile + gap)
            sheet[:, y:y + tile, x:x + tile] = row[c]
    return sheet.permute(1, 2, 0)


def demo_frames(checkpoint: "str | Path | torch.nn.Module | None" = None, source: str | Path | None = None,
                driving: str | Path | torch.Tensor | None = None, device: str = "cpu",
                fps: float = 25.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo in memory at the model's own size: ``(driving, generated)``, each (N, 3, S, S) in 0..1.

    ``checkpoint``: a file (default: the bundled model) or a loaded model; ``driving``: a video file (default:
    the bundled clip) or frames (N, 3, H, W) in 0..1 at ``fps``."""
    from .checkpoints import load_model

    if isinstance(checkpoint, torch.nn.Module):
        model = checkpoint
    else:
        model = load_model(str(Path(checkpoint) if checkpoint else demo_file(DEMO_CHECKPOINT)))
    size = model.config.image_size
    engine = Engine(model, EngineConfig(device=device))
    source_image = load_image(Path(source) if source else demo_file(DEMO_SOURCE)).permute(2, 0, 1).unsqueeze(0)
    if isinstance(driving, torch.Tensor):
        frames = fit_square(driving.float(), size)
    else:
        driving = Path(driving) if driving else demo_file(DEMO_DRIVING)
        fps = probe_video(driving).fps
        frames = torch.cat(list(_fitted_frames(driving, fps, size)))
    clip = animate_clip(engine, fit_square(source_image, size), frames, TransferOptions(), fps=fps)
    generated = torch.cat(list(clip))
    return frames, generated


def _fitted_frames(driving: Path, fps: float, size: int) -> Iterator[torch.Tensor]:
    """The driving video's frames fitted whole into squares of ``size``: (n, 3, size, size) in 0..1."""
    for chunk in iter_video_frames(driving, fps=fps):
        yield fit_square(chunk.permute(0, 3, 1, 2).float() / 255, size)


def run_demo(out_dir: str | Path = ".", checkpoint: str | Path | None = None, source: str | Path | None = None,
             driving: str | Path | None = None, device: str = "auto", precision: str = "fp32", tile: int = 256,
             video_format: str = "mp4", progress: StageProgressFn | None = None) -> DemoResult:
    """Animate the source with the driving clip; write ``anytalk_demo_NNNNN.<video_format>`` and ``..._sheet.png``.

    ``tile``: pixel size of each of the three panels of the video (the model itself runs at its own size).
    """
    from .checkpoints import load_model

    checkpoint = Path(checkpoint) if checkpoint else demo_file(DEMO_CHECKPOINT)
    source = Path(source) if source else demo_file(DEMO_SOURCE)
    driving = Path(driving) if driving else demo_file(DEMO_DRIVING)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: is a file; --out-dir must be a folder (a missing one is created)")
    if video_format not in ("mp4", "webm", "gif"):
        raise ValueError(f"video format must be mp4, webm or gif, got {video_format!r}")
    if not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile must be between {MIN_TILE} and {MAX_TILE} pixels, got {tile}")
    # Every input is read before the model is loaded, and the folder made only once the model has loaded.
    source_image = load_image(source).permute(2, 0, 1).unsqueeze(0)
    info = probe_video(driving)
    model = load_model(str(checkpoint))
    out.mkdir(parents=True, exist_ok=True)
    n = int(unique_path(out / f"anytalk_demo.{video_format}").stem.rsplit("_", 1)[1])
    while (out / f"anytalk_demo_{n:05d}.{video_format}").exists() or (out / f"anytalk_demo_{n:05d}_sheet.png").exists():
        n += 1  # a video of another format took this number's sheet
    video_path = out / f"anytalk_demo_{n:05d}.{video_format}"
    sheet_path = out / f"anytalk_demo_{n:05d}_sheet.png"

    size = model.config.image_size
    engine = Engine(model, EngineConfig(device=device, precision=precision))
    state = engine.prepare_source(fit_square(source_image, size))
    driving_motion = driving_stage(engine, info.fps, frames=_fitted_frames(driving, info.fps, size),
                                   total=info.frame_count, progress=progress)
    keypoints = transfer_stage(engine, state, driving_motion, TransferOptions())
    audio = read_audio(driving) if info.has_audio and video_format != "gif" else None
    generated_all, driving_all = _demo_assemble(video_path, info.fps, audio, source_image, size, tile,
                                                _fitted_frames(driving, info.fps, tile),
                                                render_stage(engine, state, keypoints, progress=progress))
    sheet = contact_sheet(torch.cat(driving_all), torch.cat(generated_all), fit_square(source_image, size))
    save_image(sheet, sheet_path)
    return DemoResult(video_path, sheet_path, len(keypoints), info.fps)


def _demo_assemble(video_path: Path, fps: float, audio: dict | None, source_image: torch.Tensor, size: int, tile: int,
                   drivers: Iterator[torch.Tensor], rendered: Iterator[torch.Tensor]):
    """The demo's Assemble: write driving | source | result rows of ``tile`` px; returns the frames for the sheet.

    Returns ``(generated, driving)``: lists of (n, 3, S, S) chunks at the model's size."""
    generated_all, driving_all = [], []
    source_tile = fit_square(source_image, tile)
    with VideoWriter(video_path, fps=fps, audio=audio) as writer:
        pending = torch.empty(0, 3, tile, tile)
        for generated in rendered:
            generated = generated.float().cpu().clamp(0, 1)
            while pending.shape[0] < generated.shape[0]:
                pending = torch.cat([pending, next(drivers)])
            drv, pending = pending[: generated.shape[0]], pending[generated.shape[0]:]
            big = fit_square(generated, tile)
            row = torch.cat([drv, source_tile.expand_as(big), big], dim=-1)
            writer.write(row.permute(0, 2, 3, 1))
            generated_all.append(generated)
            driving_all.append(fit_square(drv, size))
    return generated_all, driving_all
