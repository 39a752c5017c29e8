"""Our checkpoint format, shape-based config inference at any width, and clear errors for bad files."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from anytalk_core import checkpoints
from anytalk_core.checkpoints import CheckpointError
from anytalk_app.cli import main as cli_main
from anytalk_core.models.base import TransferOptions
from anytalk_core.models.config import ModelConfig, tiny_config
from anytalk_core.models.face_vid2vid.reader import released_modules
from anytalk_core.models.registry import build_model
from anytalk_core.engine import Engine, EngineConfig
from anytalk_core.stages import animate_clip


def animate(model, source, driving):
    """Every stage in memory on the CPU: (1, 3, H, W), (N, 3, H, W) -> generated frames (N, 3, H, W)."""
    return torch.cat(list(animate_clip(Engine(model, EngineConfig(device="cpu")), source, driving)))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(1)
    return build_model(tiny_config(), with_discriminator=True).eval()


def released_layout(model) -> dict:
    """Our state dict split back into the face-vid2vid .pth.tar layout."""
    return released_modules(model.state_dict())


def frames(n: int = 2, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, size, size, generator=g)


def test_our_format_round_trip_keeps_config_and_outputs(tiny_model, tmp_path):
    path = tmp_path / "tiny.safetensors"
    checkpoints.save_checkpoint(tiny_model, path, provenance={"trained_on": "synthetic"})
    loaded = checkpoints.load_model(path, with_discriminator=True)
    assert loaded.config == tiny_model.config
    assert loaded.provenance == {"trained_on": "synthetic"}
    src, drv = frames(1), frames(3)
    assert torch.equal(animate(loaded, src, drv), animate(tiny_model, src, drv))
    with pytest.raises(FileExistsError):
        checkpoints.save_checkpoint(tiny_model, path)


@pytest.mark.parametrize("widths", [dict(), dict(num_kp=10)])
def test_released_layout_of_any_width_loads_by_shape(widths, tmp_path):
    torch.manual_seed(2)
    config = tiny_config(**widths)
    config.generator.oc = 8
    config.motion.stage_blocks = (2, 3, 2, 2)
    model = build_model(config, with_discriminator=True).eval()
    path = tmp_path / "00000099-checkpoint.pth.tar"
    torch.save({**released_layout(model), "epoch": 99}, path)
    loaded = checkpoints.load_model(path, with_discriminator=True)
    assert loaded.config.num_kp == config.num_kp
    assert loaded.config.motion.stage_blocks == (2, 3, 2, 2)
    assert loaded.config.generator.oc == 8
    assert torch.equal(animate(loaded, frames(1), frames(2)), animate(model, frames(1), frames(2)))


def test_dataparallel_module_prefix_is_accepted(tiny_model, tmp_path):
    layout = {k: {"module." + kk: vv for kk, vv in v.items()} for k, v in released_layout(tiny_model).items()}
    path = tmp_path / "dp.pth.tar"
    torch.save(layout, path)
    assert checkpoints.load_model(path).config.num_kp == 15


class Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"generator": Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pth.tar.*code"):
        checkpoints.load_model(path)


@pytest.mark.parametrize("suffix", [".pth.tar", ".safetensors"])
def test_random_bytes_give_one_line_error(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError) as err:
        checkpoints.load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_files_are_rejected(tiny_model, tmp_path):
    good = tmp_path / "good.safetensors"
    checkpoints.save_checkpoint(tiny_model, good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        checkpoints.load_model(bad)
    pth = tmp_path / "truncated.pth.tar"
    torch.save(released_layout(tiny_model), pth)
    pth.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pth.tar"):
        checkpoints.load_model(pth)


def test_missing_unexpected_and_misshaped_tensors_are_listed(tiny_model, tmp_path):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    meta = {"format": "anytalk", "format_version": "1", "config": tiny_model.config.to_json()}
    broken = dict(state)
    del broken["generator.fourth.bias"]
    broken["generator.extra.weight"] = torch.zeros(1)
    broken["keypoints.kp.bias"] = torch.zeros(7)
    path = tmp_path / "broken.safetensors"
    save_file(broken, str(path), metadata=meta)
    with pytest.raises(CheckpointError) as err:
        checkpoints.load_model(path, with_discriminator=True)
    msg = str(err.value)
    for part in ("broken.safetensors", "1 missing: generator.fourth.bias", "1 unexpected: generator.extra.weight",
                 "1 wrong shape: keypoints.kp.bias"):
        assert part in msg


def test_incomplete_third_party_checkpoint_names_what_is_missing(tiny_model, tmp_path):
    layout = released_layout(tiny_model)
    del layout["he_estimator"]
    path = tmp_path / "partial.pth.tar"
    torch.save(layout, path)
    with pytest.raises(CheckpointError, match="partial.pth.tar: not a recognised checkpoint"):
        checkpoints.load_model(path)
    layout = released_layout(tiny_model)
    del layout["generator"]["dense_motion_network.mask.weight"]
    torch.save(layout, path)
    with pytest.raises(CheckpointError, match="partial.pth.tar.*mask.weight"):
        checkpoints.load_model(path)


def test_foreign_safetensors_and_missing_files(tmp_path):
    path = tmp_path / "sd15_unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(CheckpointError, match="sd15_unet.safetensors: not a recognised checkpoint"):
        checkpoints.load_model(path)
    with pytest.raises(CheckpointError, match="nope.safetensors: checkpoint not found"):
        checkpoints.load_model(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: empty file"):
        checkpoints.load_model(empty)


def test_config_json_rejects_unknown_keys():
    data = tiny_config().to_dict()
    data["appearance"]["block_expansoin"] = 3
    with pytest.raises(ValueError, match="block_expansoin"):
        ModelConfig.from_dict(data)


def test_cli_convert_writes_once_and_reports_errors(tiny_model, tmp_path, capsys):
    src = tmp_path / "fv2v.pth.tar"
    torch.save(released_layout(tiny_model), src)
    dst = tmp_path / "out.safetensors"
    assert cli_main(["convert", str(src), str(dst)]) == 0
    before = dst.read_bytes()
    assert cli_main(["convert", str(src), str(dst)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert dst.read_bytes() == before
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"\x80\x02not really a pickle")
    assert cli_main(["convert", str(garbage), str(tmp_path / "x.safetensors")]) != 0
    assert not (tmp_path / "x.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "anytalk_app.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "anytalk" in result.stdout


def test_registry_lists_every_family_and_its_transfer_options():
    from anytalk_core.models.base import TransferOptions
    from anytalk_core.models.face_vid2vid import FaceVid2VidModel
    from anytalk_core.models.liveportrait import LivePortraitModel, LivePortraitOptions
    from anytalk_core.models.registry import FAMILIES, get_family

    assert set(FAMILIES) == {"face_vid2vid", "liveportrait", "liveportrait_human", "liveportrait_animal"}
    assert FaceVid2VidModel.transfer_options_type is TransferOptions
    assert LivePortraitModel.transfer_options_type is LivePortraitOptions
    assert get_family("liveportrait_animal").default_config().extra["variant"] == "animal"
    with pytest.raises(ValueError, match="unknown model family 'sadtalker'; known: face_vid2vid, liveportrait"):
        get_family("sadtalker")


@pytest.mark.parametrize("layout", ["ours", "released"])
def test_deferred_networks_are_read_only_when_asked_and_give_the_same_frames(tiny_model, tmp_path, layout):
    """``load_model(defer=...)`` checks the deferred networks against the file but reads them only at
    ``load_deferred``, after the other networks may already be released (what the CLI does for its peak memory)."""
    if layout == "ours":
        path = tmp_path / "tiny.safetensors"
        checkpoints.save_checkpoint(tiny_model, path)
    else:
        path = tmp_path / "tiny.pth.tar"
        torch.save(released_layout(tiny_model), path)
    full = checkpoints.load_model(path)
    lazy = checkpoints.load_model(path, defer=full.render_modules)
    assert lazy.unloaded_networks == {"dense_motion", "generator"}
    assert all(p.is_meta for p in lazy.generator.parameters()) and not any(p.is_meta for p in lazy.motion.parameters())
    engine = Engine(lazy, EngineConfig(device="cpu"))  # moving a model leaves unread networks alone
    src, drv = frames(1), frames(3)
    source = engine.prepare_source(src)
    keypoints = engine.driven_keypoints(source, engine.estimate_motion(drv), TransferOptions())
    lazy.release_networks(lazy.networks_not_needed_for_rendering())
    checkpoints.load_deferred(lazy)
    assert lazy.unloaded_networks == set(lazy.networks_not_needed_for_rendering())  # released ones stay released
    assert not any(p.is_meta for p in lazy.dense_motion.parameters())
    engine.refresh_layout()
    assert torch.equal(torch.cat(list(engine.render(source, keypoints))), animate(full, src, drv))
    checkpoints.load_deferred(lazy)  # nothing left to read: a no-op


def test_a_checkpoint_changed_before_its_deferred_networks_are_read_is_refused(tiny_model, tmp_path):
    path = tmp_path / "tiny.safetensors"
    checkpoints.save_checkpoint(tiny_model, path)
    lazy = checkpoints.load_model(path, defer=("generator",))
    os.utime(path, ns=(1, 1))
    with pytest.raises(CheckpointError, match="changed while it was in use"):
        checkpoints.load_deferred(lazy)


def test_skipped_safetensors_entries_are_validated_but_not_read(tiny_model, tmp_path):
    from anytalk_core.safetensors_io import read_safetensors

    path = tmp_path / "tiny.safetensors"
    checkpoints.save_checkpoint(tiny_model, path)
    everything, _ = read_safetensors(path)
    some, _ = read_safetensors(path, skip=lambda key: key.startswith("generator."))
    assert some.keys() == everything.keys()
    for key, value in some.items():
        assert value.shape == everything[key].shape and value.dtype == everything[key].dtype
        assert value.is_meta == key.startswith("generator."), key
        if not value.is_meta:
            assert torch.equal(value, everything[key])
