"""``anytalk demo``: animate the bundled cartoon-animal portrait with the bundled synthetic human clip.

The demo model (``assets/demo/anytalk_demo.safetensors``) was trained by ``anytalk-train
training/configs/demo.toml`` on synthetic heads only (64 px, CPU). The demo writes two files and never
overwrites: a video (driving | source | result, side by side, with the driving clip's audio) and a
contact-sheet PNG (rows: driving frames, generated frames, at evenly spaced times). The demo is its own
Assemble stage: it runs the core's stages (:mod:`anytalk_core.stages`) and lays the panels out.

The bundled inputs were made by :func:`anytalk_core.demo.make_demo_inputs` (deterministic).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from anytalk_core.demo import DEMO_DRIVING, DEMO_SOURCE, MAX_TILE, MIN_TILE, fit_square
from anytalk_core.engine import Engine, EngineConfig, StageProgressFn
from anytalk_core.io_utils import unique_path
from anytalk_core.media import VideoWriter, iter_video_frames, load_image, probe_video, read_audio, save_image
from anytalk_core.models.base import TransferOptions
from anytalk_core.stages import aligned, animate_clip, driving_stage, render_stage, transfer_stage

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"
DEMO_CHECKPOINT = "anytalk_demo.safetensors"


@dataclass
class DemoResult:
    video: Path
    contact_sheet: Path
    frames: int
    fps: float
    precision: str = ""  # which precision ran, and why (Engine.describe_precision)


def demo_file(name: str) -> Path:
    """A bundled demo file; a clear error when the repository's ``assets/demo`` is not beside the package."""
    path = DEMO_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: bundled demo file not found. The demo files live in the repository's assets/demo "
            f"folder: install from a clone (pip install -e .) or pass --checkpoint/--source/--driving")
    return path


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
    from anytalk_core.checkpoints import load_model

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
    from anytalk_core.checkpoints import load_model

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
    return DemoResult(video_path, sheet_path, len(keypoints), info.fps, engine.describe_precision())


def _demo_assemble(video_path: Path, fps: float, audio: dict | None, source_image: torch.Tensor, size: int, tile: int,
                   drivers: Iterator[torch.Tensor], rendered: Iterator[torch.Tensor]):
    """The demo's Assemble: write driving | source | result rows of ``tile`` px; returns the frames for the sheet.

    Returns ``(generated, driving)``: lists of (n, 3, S, S) chunks at the model's size."""
    generated_all, driving_all = [], []
    source_tile = fit_square(source_image, tile)
    with VideoWriter(video_path, fps=fps, audio=audio) as writer:
        for generated, drv in aligned(rendered, drivers):
            generated = generated.float().cpu().clamp(0, 1)
            big = fit_square(generated, tile)
            row = torch.cat([drv, source_tile.expand_as(big), big], dim=-1)
            writer.write(row.permute(0, 2, 3, 1))
            generated_all.append(generated)
            driving_all.append(fit_square(drv, size))
    return generated_all, driving_all
