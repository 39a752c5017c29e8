"""The demo's and the workflows' example inputs, rendered (deterministic), and fitting frames into squares.

:func:`make_demo_inputs` is how the bundled source image and driving clip of ``anytalk demo`` (the application,
``anytalk_app.demo``) were made; :func:`make_workflow_inputs` renders the example inputs of ``workflows/``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .crop import apply_crop, crop_full
from .io_utils import unique_path
from .media import VideoWriter, save_image

DEMO_SOURCE = "source_animal.png"
DEMO_DRIVING = "driving_human.mp4"

# Identities of the bundled inputs: a tagged seed namespace no training or benchmark run draws from.
_SOURCE_SEED = (0xDE30, 1, 7)
_DRIVER_SEED = (0xDE30, 2, 2)


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
