"""LivePortrait through the command line, end to end, on the conformance folder: ``anytalk convert`` keeps
the outputs bit for bit, and ``anytalk animate`` renders 2x the model's input size, one frame per driving
frame; a folder named for animal weights loads the animal variant by itself.

Data: ``$ANYTALK_CONFORMANCE_DIR/liveportrait`` (default ``<repo>/../shared/conformance``); skipped when
absent, except under ``CI`` where missing data fails.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from anytalk_core.checkpoints import load_model
from anytalk_app.cli import main
from anytalk_core.media import probe_video, save_image, write_video
from anytalk_core.models.liveportrait import MODULE_FILES, STITCHING_FILE, LivePortraitModel
from anytalk_core.engine import Engine, EngineConfig
from anytalk_core.stages import animate_clip

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANYTALK_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance")) / "liveportrait"
FRAMES = 2


def animate(model, source, driving):
    """Every stage in memory on the CPU: (1, 3, H, W), (N, 3, H, W) -> generated frames (N, 3, H, W)."""
    return torch.cat(list(animate_clip(Engine(model, EngineConfig(device="cpu")), source, driving)))


@pytest.fixture(scope="module", autouse=True)
def data():
    needed = [f"{m}.safetensors" for m in MODULE_FILES] + ["vectors.safetensors"]
    if not all((DATA / name).is_file() for name in needed):
        if os.environ.get("CI"):
            pytest.fail(f"LivePortrait conformance data not found in {DATA} (CI must have it)")
        pytest.skip(f"LivePortrait conformance data not found in {DATA} (set ANYTALK_CONFORMANCE_DIR)")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 4))
    yield
    torch.set_num_threads(threads)


def copy_weights(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for module in (*MODULE_FILES, STITCHING_FILE):
        src = DATA / f"{module}.safetensors"
        if src.is_file():
            shutil.copy(src, folder / src.name)
    return folder


def test_convert_round_trips_to_identical_outputs(tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "lp.safetensors"
    assert main(["convert", str(DATA), str(out)]) == 0
    assert "liveportrait" in capsys.readouterr().out
    original, converted = load_model(DATA, family="liveportrait"), load_model(out)
    assert isinstance(converted, LivePortraitModel)
    assert converted.config.to_dict() == original.config.to_dict()
    assert converted.has_stitching == original.has_stitching
    vectors = load_file(DATA / "vectors.safetensors")
    source, driving = vectors["source"], vectors["driving"][:2]
    a, b = animate(original, source, driving), animate(converted, source, driving)
    assert a.shape == (2, 3, 2 * source.shape[2], 2 * source.shape[3])
    assert torch.equal(a, b)


def test_animate_animal_folder_renders_twice_the_input_size(tmp_path):
    folder = copy_weights(tmp_path / "liveportrait_animal_weights")
    model = load_model(folder)  # family auto: the folder's name picks the animal variant
    assert model.variant == "animal" and model.config.extra["variant"] == "animal"
    assert any("animal" in note and "liveportrait_animal_weights" in note for note in model.load_notes)
    g = torch.Generator().manual_seed(0)
    save_image(torch.rand(40, 40, 3, generator=g), tmp_path / "source.png")
    frames = torch.stack([(torch.rand(32, 32, 3, generator=g) * 0.4 + i / 10).clamp(0, 1) for i in range(FRAMES)])
    write_video(tmp_path / "driving.mp4", frames, fps=25)
    out = tmp_path / "out.mp4"
    code = main(["animate", "--source", str(tmp_path / "source.png"), "--driving", str(tmp_path / "driving.mp4"),
                 "--checkpoint", str(folder), "--family", "liveportrait-animal", "--out", str(out), "--quiet",
                 "--device", "cpu"])
    assert code == 0
    info = probe_video(out)
    size = 2 * model.config.image_size
    assert (info.width, info.height, info.frame_count) == (size, size, FRAMES)
