"""Long runs across sessions (issue 24): CPU bf16 autocast, the wall-clock budget, a 64 px model continued at
128 px, and compact snapshots committed to the repository that a fresh clone continues from."""
from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch

from anytalk_training import cli
from anytalk_training.checkpointing import TrainStateError, read_train_state
from anytalk_training.config import load_config
from anytalk_training.snapshot import (factor_second_moment, is_snapshot, read_snapshot, rebuild_second_moment,
                                       write_snapshot)
from anytalk_training.trainer import SetupError, Trainer, cpu_bf16_support

from test_training_run import ROOT, base_config, write_config

DEMO128 = ROOT / "training" / "configs" / "demo128.toml"
SNAPSHOT = ROOT / "assets" / "demo" / "training_state" / "demo128.safetensors"


# the trainer sets the thread count and deterministic algorithms process-wide: undo it after each test
pytestmark = pytest.mark.usefixtures("restore_torch_globals")


def quiet(config: dict, resume=False) -> Trainer:
    return Trainer(config, resume=resume, log_stream=open(os.devnull, "w"))


def fit(config: dict, resume=False) -> tuple[dict, Trainer]:
    t = quiet(config, resume)
    try:
        return t.fit(), t
    finally:
        t.close()


# ------------------------------------------------------------------------------------------------ precision

def test_cpu_bf16_support_reads_the_flags_line():
    intel = "processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n"
    assert cpu_bf16_support(intel) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bf16_support("flags : fpu sse avx2 fma\n") == []
    assert cpu_bf16_support("") == []


def test_cpu_precision_auto_bf16_and_fp16(tmp_path, regressor, monkeypatch):
    """auto: fp32 without bf16 instructions, bf16 with them (logged either way); an explicit bf16 without them
    runs emulated with a warning; fp16 on a CPU is refused. A bf16 step keeps fp32 master weights."""
    import anytalk_training.trainer as tr

    cfg = write_config(tmp_path / "c.toml", base_config(tmp_path / "run", regressor))
    monkeypatch.setattr(tr, "cpu_bf16_support", lambda: [])
    t = quiet(load_config(cfg))
    assert (t.amp_mode, t.describe()["amp_note"]) == ("off", "fp32 on CPU (no amx_bf16 / avx512_bf16 in /proc/cpuinfo; "
                                                             "amp = 'auto')")
    t.close()
    t = quiet(load_config(cfg, ["train.amp=bf16", f"output_dir={tmp_path / 'run2'}"]))
    assert t.amp_mode == "bf16" and t.amp_note.startswith("WARNING: train.amp = 'bf16' on a CPU without amx_bf16")
    t.close()
    monkeypatch.setattr(tr, "cpu_bf16_support", lambda: ["amx_bf16"])
    config = load_config(cfg, ["train.stop_after=1", f"output_dir={tmp_path / 'run3'}"])
    result, t = fit(config)
    assert t.amp_mode == "bf16" and t.amp_note == "bf16 autocast on CPU (amx_bf16)" and result["end_step"] == 1
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    info = json.loads((tmp_path / "run3" / "run_info.json").read_text())
    assert info["run"]["amp"] == "bf16" and "amx_bf16" in info["run"]["amp_note"]
    with pytest.raises(SetupError, match="train.amp = 'fp16' needs a CUDA device"):
        quiet(load_config(cfg, ["train.amp=fp16", f"output_dir={tmp_path / 'run4'}"]))


# ------------------------------------------------------------------------------------------------ wall clock

def test_wall_clock_budget_stops_cleanly_with_a_checkpoint_and_resumes(tmp_path, regressor):
    cfg = write_config(tmp_path / "c.toml", base_config(tmp_path / "run", regressor))
    result, _ = fit(load_config(cfg, ["train.max_wall_seconds=0.001"]))
    assert result["end_step"] == 1 and result["budget_spent"] and result["interrupted"] and "export" not in result
    assert read_train_state(tmp_path / "run" / "checkpoints" / "last.safetensors").step == 1
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert "wall-clock budget spent" in (tmp_path / "run" / "train.log").read_text()
    result, _ = fit(load_config(cfg, ["train.stop_after=2"]), resume=True)
    assert (result["start_step"], result["end_step"]) == (1, 2)
    with pytest.raises(Exception, match="train.max_wall_seconds must be >= 0"):
        load_config(cfg, ["train.max_wall_seconds=-1"])


# ------------------------------------------------------------------------------------------------ 64 px -> 128 px

def test_motion_estimator_scale_factor_reads_the_downsampled_image():
    from anytalk_core.models.config import MotionEstimatorConfig
    from anytalk_core.models.keypoint_detector import AntiAliasDownsample
    from anytalk_core.models.motion_estimator import MotionEstimator

    small = dict(num_kp=3, block_expansion=8, stage_features=(16, 16, 16, 16), stage_blocks=(1, 1, 1, 1))
    torch.manual_seed(0)
    plain = MotionEstimator(MotionEstimatorConfig(**small)).eval()
    scaled = MotionEstimator(MotionEstimatorConfig(**small, scale_factor=0.5)).eval()
    assert set(plain.state_dict()) == set(scaled.state_dict())  # the kernel is derived, not stored
    scaled.load_state_dict(plain.state_dict())
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = scaled(image), plain(AntiAliasDownsample(3, 0.5)(image))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_64px_model_continues_at_128px(tmp_path, regressor):
    """The shipped demo's path to 128 px: the same weights load into a model twice the size (convolutions), the
    keypoint detector's anti-aliasing kernel is rebuilt for its halved scale factor, and it trains."""
    cfg = write_config(tmp_path / "c.toml", base_config(tmp_path / "small", regressor))
    fit(load_config(cfg, ["train.epochs=1", "train.steps_per_epoch=1"]))  # a 64 px model, exported
    small = tmp_path / "small" / "model.safetensors"
    big = ["model.overrides={image_size = 128, keypoints = {scale_factor = 0.125}, motion = {scale_factor = 0.5}}",
           f"model.init_from={small}", "train.stop_after=1", f"output_dir={tmp_path / 'big'}"]
    result, t = fit(load_config(cfg, big))
    assert t.image_size == 128 and result["end_step"] == 1
    assert "anti-aliasing kernels keypoints.down.weight rebuilt for this config" in t.init_info["note"]
    assert t.model.keypoints.down.weight.shape != read_train_state(
        tmp_path / "small" / "checkpoints" / "last.safetensors").tensors["model.keypoints.down.weight"].shape


# ------------------------------------------------------------------------------------------------ snapshots

def test_factored_second_moments_round_trip():
    rank_one = torch.outer(torch.rand(6) + 0.1, torch.rand(12) + 0.1).reshape(6, 3, 2, 2)
    parts = factor_second_moment(rank_one)
    assert set(parts) == {"row", "col"} and parts["row"].shape == (6,) and parts["col"].shape == (12,)
    assert torch.allclose(rebuild_second_moment(parts, tuple(rank_one.shape)), rank_one, rtol=1e-5)
    v = torch.rand(5)
    assert torch.equal(rebuild_second_moment(factor_second_moment(v), (5,)), v)
    general = torch.rand(8, 9)
    rebuilt = rebuild_second_moment(factor_second_moment(general), (8, 9))
    assert torch.allclose(rebuilt.mean(1), general.mean(1), rtol=1e-5)  # the row means are kept exactly


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, regressor):
    """A base model, then 2 steps of a run from it with the motion estimator frozen (as demo128.toml)."""
    tmp = tmp_path_factory.mktemp("snap")
    cfg = write_config(tmp / "c.toml", base_config(tmp / "base", regressor))
    fit(load_config(cfg, ["train.epochs=1", "train.steps_per_epoch=1"]))
    overrides = [f"model.init_from={tmp / 'base' / 'model.safetensors'}", "train.freeze=['motion', 'keypoints']",
                 f"output_dir={tmp / 'run'}", "train.export=false"]
    fit(load_config(cfg, [*overrides, "train.stop_after=2"]))
    return tmp, cfg, overrides


def test_snapshot_is_small_and_stands_for_the_training_state(frozen_run, tmp_path):
    tmp, cfg, overrides = frozen_run
    last = tmp / "run" / "checkpoints" / "last.safetensors"
    out = tmp_path / "snap.safetensors"
    info = write_snapshot(last, out)
    assert is_snapshot(out) and not is_snapshot(last) and info["step"] == 2
    assert info["bytes"] < 0.45 * info["train_state_bytes"]  # no frozen networks, fp16, no first moments
    with pytest.raises(FileExistsError, match="pass --replace"):
        write_snapshot(last, out)
    full = read_train_state(last)
    t = quiet(load_config(cfg, [*overrides, f"output_dir={tmp_path / 'probe'}"]))  # init_from loaded, not trained
    try:
        state = read_snapshot(out, t.model)
    finally:
        t.close()
    assert state.step == 2 and set(state.tensors) == set(full.tensors)
    for key, value in full.tensors.items():
        got = state.tensors[key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        if key.startswith(("model.motion.", "model.keypoints.")):
            assert torch.equal(got, value), key  # frozen: exactly init_from's
        elif key.startswith("model.") and value.is_floating_point():
            assert torch.allclose(got, value, rtol=2 ** -10, atol=1e-7), key
        elif key.endswith(".exp_avg"):
            assert not got.any()
        elif key.endswith(".exp_avg_sq") and value.dim() >= 2:
            assert torch.allclose(got.reshape(value.shape[0], -1).mean(1), value.reshape(value.shape[0], -1).mean(1),
                                  rtol=1e-4, atol=1e-12), key
        elif not key.endswith(".exp_avg_sq") or value.dim() < 2:
            assert torch.equal(got, value), key


def test_a_snapshot_accepts_anti_aliasing_kernels_recomputed_on_another_machine(frozen_run, tmp_path):
    """The anti-aliasing kernels are rebuilt from the config on every machine, and their last bits differ between
    platforms and torch builds (a CUDA machine with torch 2.11 refused the CPU-made demo128 snapshot): they are not
    held to the snapshot's CRC, while every learned frozen weight still is (the next test)."""
    from anytalk_training.model_init import derived_kernel_buffers

    tmp, cfg, overrides = frozen_run
    snap = tmp_path / "snap.safetensors"
    write_snapshot(tmp / "run" / "checkpoints" / "last.safetensors", snap)
    t = quiet(load_config(cfg, [*overrides, f"output_dir={tmp_path / 'probe'}"]))
    try:
        kernels = derived_kernel_buffers(t.model)
        assert kernels, "the tiny keypoint detector downsamples through an anti-aliasing kernel"
        with torch.no_grad():
            for kernel in kernels.values():  # one ulp off, as another platform's exp() gives
                kernel.copy_(torch.nextafter(kernel, torch.full_like(kernel, 2.0)))
        assert read_snapshot(snap, t.model).step == 2
    finally:
        t.close()


def test_a_run_continues_from_a_snapshot_and_refuses_other_frozen_networks(frozen_run, tmp_path, capsys):
    tmp, cfg, overrides = frozen_run
    snap = tmp_path / "snap.safetensors"
    rc = cli.main([str(cfg), "--resume-from", str(snap)] + overrides[:-2])  # missing file: one clear line
    assert rc == 2 and "--resume: no training checkpoint at" in capsys.readouterr().err
    from anytalk_training.snapshot import main as snapshot_main

    assert snapshot_main([str(tmp / "run" / "checkpoints" / "last.safetensors"), str(snap),
                          "--logs-to", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "snapshot of step 2" in out and "copied metrics.jsonl, train.log, run_info.json" in out
    assert (tmp_path / "logs" / "metrics.jsonl").read_bytes() == (tmp / "run" / "metrics.jsonl").read_bytes()
    config = load_config(cfg, [*overrides[:2], f"output_dir={tmp_path / 'fresh'}", "train.stop_after=3"])
    result, t = fit(config, resume=str(snap))
    assert (result["start_step"], result["end_step"]) == (2, 3)
    assert "a compact snapshot" in (tmp_path / "fresh" / "train.log").read_text()
    assert read_train_state(tmp_path / "fresh" / "checkpoints" / "last.safetensors").step == 3
    other = load_config(cfg, [f"model.init_from={tmp / 'run' / 'checkpoints' / 'last.safetensors'}", overrides[1],
                              f"output_dir={tmp_path / 'other'}"])
    with torch.no_grad():  # a base whose frozen motion estimator differs
        from safetensors.torch import load_file, save_file

        base = load_file(str(tmp / "base" / "model.safetensors"))
        base["motion.fc_t.bias"] += 1.0
        save_file(base, str(tmp_path / "changed.safetensors"), metadata=_metadata(tmp / "base" / "model.safetensors"))
    other = load_config(cfg, [f"model.init_from={tmp_path / 'changed.safetensors'}", overrides[1],
                              f"output_dir={tmp_path / 'other'}"])
    with pytest.raises(TrainStateError, match="the frozen networks it was trained with are not those of model.init_from"):
        quiet(other, resume=str(snap))


def _metadata(path: pathlib.Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_the_committed_demo128_snapshot_continues_for_one_step(tmp_path, monkeypatch):
    """The snapshot committed with the 128 px demo run (assets/demo/training_state/) continues, at its own config,
    with the documented command's arguments."""
    assert SNAPSHOT.is_file(), f"{SNAPSHOT} is committed with the 128 px demo run"
    meta = _metadata(SNAPSHOT)
    step = int(meta["step"])
    monkeypatch.chdir(ROOT)  # the config's paths (init_from, the expression regressor) are relative to the repository
    # at the schedule's end (demo128.toml: 40 epochs of 100 steps) a continuation asks for a longer one (README there)
    longer = [f"train.epochs={step // 100 + 1}"] if step >= 40 * 100 else []
    config = load_config(DEMO128, [f"output_dir={tmp_path / 'demo128'}", f"train.stop_after={step + 1}",
                                   "train.progress=false", "train.sample_every=0", "train.export=false", *longer])
    result, t = fit(config, resume=str(SNAPSHOT))
    assert (result["start_step"], result["end_step"]) == (step, step + 1)
    assert t.image_size == 128 and t.frozen == ("motion", "keypoints")
    line = json.loads((tmp_path / "demo128" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["step"] == step + 1 and all(v == v for v in line.values() if isinstance(v, float))  # no NaN


def test_a_warmed_up_estimator_replaces_the_frozen_one_in_a_training_state(frozen_run, tmp_path, capsys):
    """Between schedules a refined frozen network goes into the run's state; what trains is left as it was."""
    from safetensors.torch import load_file, save_file

    from anytalk_training.frozen import main as frozen_main

    tmp, cfg, overrides = frozen_run
    last = tmp / "run" / "checkpoints" / "last.safetensors"
    donor = load_file(str(tmp / "base" / "model.safetensors"))
    donor = {k: v * 1.01 if k.startswith("motion.") and v.is_floating_point() else v for k, v in donor.items()}
    save_file(donor, str(tmp_path / "warm.safetensors"), metadata=_metadata(tmp / "base" / "model.safetensors"))
    out = tmp_path / "swapped.safetensors"
    assert frozen_main([str(last), str(tmp_path / "warm.safetensors"), str(out), "--networks", "motion"]) == 0
    assert "continue with --resume-from" in capsys.readouterr().out
    before, after = read_train_state(last), read_train_state(out)  # CRCs verified
    assert set(before.tensors) == set(after.tensors) and (after.step, after.epoch) == (before.step, before.epoch)
    for key, value in before.tensors.items():
        if key.startswith("model.motion."):
            assert torch.equal(after.tensors[key], donor[key[len("model."):]]), key
        else:
            assert torch.equal(after.tensors[key], value), key
    # never over a file; only frozen networks (a trained one's Adam moments belong to its weights)
    assert frozen_main([str(last), str(tmp_path / "warm.safetensors"), str(out)]) == 2
    assert "nothing is written over" in capsys.readouterr().err
    assert frozen_main([str(last), str(tmp_path / "warm.safetensors"), str(tmp_path / "g.safetensors"),
                        "--networks", "generator"]) == 2
    assert "'generator' trains in this run" in capsys.readouterr().err
    # the run goes on from it, with the new estimator
    config = load_config(cfg, [*overrides[:2], f"output_dir={tmp_path / 'next'}", "train.stop_after=3"])
    result, t = fit(config, resume=str(out))
    assert (result["start_step"], result["end_step"]) == (2, 3)
    state = read_train_state(tmp_path / "next" / "checkpoints" / "last.safetensors")
    assert torch.equal(state.tensors["model.motion.fc_t.bias"], donor["motion.fc_t.bias"])
