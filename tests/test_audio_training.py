"""Audio-to-motion training through ``anytalk-train`` (task = "audio2motion"): lip sync on held-out synthetic
clips after a short CPU run, motion-estimator targets cached on disk, exact resume, and an export that adds the
``audio2motion.`` part to a base checkpoint in a new file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from anytalk_core.checkpoints import load_model, save_checkpoint
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.safetensors_io import read_safetensors
from anytalk_eval.metrics.sync import pearson, sync_offset
from anytalk_training.audio2motion import AudioMotionTrainer
from anytalk_training.cli import main as train_main
from anytalk_training.config import ConfigError, load_config
from anytalk_training.trainer import SetupError

NET = """
[model.audio2motion]
n_mels = 32
dim = 32
depth = 1
heads = 2
radius = 6
context = 6
frontend_channels = 16
dropout = 0.0
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is as fast, and far faster on a busy machine
    yield
    torch.set_num_threads(threads)


def write_config(path: Path, body: str) -> Path:
    path.write_text(f'task = "audio2motion"\ndevice = "cpu"\nthreads = 1\n{body}')
    return path


def trainer(path: Path, *overrides: str, resume=False) -> AudioMotionTrainer:
    return AudioMotionTrainer(load_config(path, list(overrides)), resume=resume, log_stream=open(os.devnull, "w"))


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

def test_sync_offset_finds_a_known_delay():
    g = torch.Generator().manual_seed(0)
    truth = torch.nn.functional.avg_pool1d(torch.rand(1, 1, 300, generator=g), 5, 1, 2)[0, 0]
    late = torch.cat([truth[:1].expand(3), truth[:-3]])  # the prediction comes 3 frames late
    lag, corr = sync_offset([(late, truth)], max_lag=5)
    assert lag == 3 and len(corr) == 11
    assert sync_offset([(truth, truth)])[0] == 0 and pearson(truth, truth) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# Lip sync on held-out clips (renderer ground truth)
# --------------------------------------------------------------------------------------------------

SYNTHETIC = f"""
name = "lipsync"
[target]
kind = "synthetic"
pose = false
params = ["jaw_open"]
[train]
steps = 150
batch_size = 8
clip_frames = 48
lr = 3.0e-3
log_every = 50
eval_every = 0
checkpoint_every = 1000
progress = false
[[data.sources]]
kind = "synthetic"
num_clips = 24
frames_per_clip = 100
seed = 1
[[data.val_sources]]
kind = "synthetic"
num_clips = 6
frames_per_clip = 150
seed = 1001
{NET}"""


def test_short_cpu_training_gives_lip_sync_on_held_out_clips(tmp_path):
    cfg = write_config(tmp_path / "lipsync.toml", SYNTHETIC)
    t = trainer(cfg, f"output_dir={tmp_path / 'run'}")
    try:
        before = t.evaluate()
        result = t.fit()
    finally:
        t.close()
    held_out = result["eval"]
    # the report quotes these numbers (also in <run>/eval.json)
    print(f"\nheld-out mouth opening: r = {held_out['eval/mouth_r']:.3f}, lag = {held_out['eval/mouth_lag']} frames "
          f"(untrained r = {before['eval/mouth_r']:.3f})")
    assert held_out["eval/mouth_r"] >= 0.8 and abs(held_out["eval/mouth_lag"]) <= 1
    assert before["eval/mouth_r"] < 0.8
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["eval/mouth_r"] == held_out["eval/mouth_r"] and saved["step"] == 150
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [50, 100, 150]
    assert not (tmp_path / "run" / "model.safetensors").exists()  # nothing to export without a base model


# --------------------------------------------------------------------------------------------------
# Motion-estimator targets, resume, export
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config(), with_discriminator=True), path, provenance={"name": "base"})
    return path


def motion_config(tmp_path: Path, base: Path, steps: int = 6) -> Path:
    return write_config(tmp_path / "me.toml", f"""
name = "me"
[model]
init_from = "{base}"
[target]
params = ["jaw_open"]
[train]
steps = {steps}
batch_size = 3
clip_frames = 16
log_every = 2
eval_every = 0
checkpoint_every = 100
progress = false
[data]
cache_dir = "{tmp_path / 'cache'}"
[[data.sources]]
kind = "synthetic"
num_clips = 3
frames_per_clip = 20
seed = 1
[[data.val_sources]]
kind = "synthetic"
num_clips = 1
frames_per_clip = 20
seed = 1001
{NET}""")


def test_motion_estimator_targets_are_cached_resume_is_exact_and_export_adds_the_part(tmp_path, base):
    cfg = motion_config(tmp_path, base)
    before = base.read_bytes()
    whole = trainer(cfg, f"output_dir={tmp_path / 'whole'}")
    try:
        assert whole.net_config.num_kp == 15 and whole.net_config.params == ("jaw_open",)
        result = whole.fit()
    finally:
        whole.close()
    cached = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached) == 4  # 3 training + 1 held-out clip, keyed by the base checkpoint's hash
    stamps = [p.stat().st_mtime_ns for p in cached]

    part = trainer(cfg, f"output_dir={tmp_path / 'part'}", "train.stop_after=3")
    try:
        part.fit()
    finally:
        part.close()
    assert not (tmp_path / "part" / "model.safetensors").exists()
    resumed = trainer(cfg, f"output_dir={tmp_path / 'part'}", resume=True)
    try:
        assert resumed.start_step == 3
        resumed.fit()
        assert all(torch.equal(resumed.net.state_dict()[k], v) for k, v in whole.net.state_dict().items())
    finally:
        resumed.close()
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # later runs read the cache, never recompute

    out = Path(result["export"])
    assert out == tmp_path / "whole" / "model.safetensors" and base.read_bytes() == before
    model = load_model(out, with_discriminator=True)
    assert model.has_audio2motion and model.config.audio2motion == whole.net_config
    state, meta = read_safetensors(str(out))
    base_state, _ = read_safetensors(str(base))
    assert all(torch.equal(state[k], v) for k, v in base_state.items())  # the base, discriminator included
    assert {k for k in state if k not in base_state} == {f"audio2motion.{k}" for k in whole.net.state_dict()}
    provenance = json.loads(meta["provenance"])
    assert provenance["name"] == "base" and provenance["audio2motion"]["step"] == 6
    assert "eval/readout_r" in provenance["audio2motion"]["held_out"]

    # exporting again (CLI --export) never overwrites
    assert train_main([str(cfg), f"output_dir={tmp_path / 'whole'}", "--export"]) == 0
    assert (tmp_path / "whole" / "model_00001.safetensors").is_file()


def test_video_folder_targets_come_from_the_videos_and_follow_file_changes(tmp_path, base):
    from anytalk_core.media import read_video, write_video
    from anytalk_core.synthetic import render_clip, sample_identity

    folder = tmp_path / "talking"
    folder.mkdir()
    for i in range(2):
        clip = render_clip(sample_identity("human", i), n_frames=12, fps=25, size=64, rng=i, with_audio=True)
        write_video(folder / f"clip{i}.mp4", clip.frames, fps=25, audio=(clip.audio, 16000))
    cfg = write_config(tmp_path / "v.toml", f"""
[model]
init_from = "{base}"
[train]
steps = 2
batch_size = 2
clip_frames = 8
progress = false
export = false
[data]
cache_dir = "{tmp_path / 'cache'}"
[[data.sources]]
kind = "video_folder"
path = "{folder}"
{NET}""")
    t = trainer(cfg, f"output_dir={tmp_path / 'v1'}")
    t.close()
    assert [c.n_frames for c in t.clips] == [12, 12] and all(c.jaw is None for c in t.clips)
    frames = read_video(folder / "clip0.mp4").frames.permute(0, 3, 1, 2).float() / 255
    expected = load_model(base).estimate_motion(frames)  # the frames are the model's size: the full crop is exact
    assert torch.allclose(t.clips[0].target[:, :45], expected.expression.reshape(12, 45), atol=1e-3)
    first = sorted((tmp_path / "cache").rglob("*.safetensors"))
    os.utime(folder / "clip0.mp4", ns=(1, 1))  # a changed file: its motion is computed again
    t2 = trainer(cfg, f"output_dir={tmp_path / 'v2'}")
    t2.close()
    assert len(sorted((tmp_path / "cache").rglob("*.safetensors"))) == len(first) + 1


def test_setup_errors_name_the_problem(tmp_path, base, capsys):
    cfg = write_config(tmp_path / "bad.toml", f"[[data.sources]]\nkind = \"synthetic\"\nnum_clips = 1\n{NET}")
    with pytest.raises(SetupError, match="needs model.init_from"):
        trainer(cfg, f"output_dir={tmp_path / 'a'}")
    with pytest.raises(ConfigError, match="unknown config key 'train.epochs'"):
        load_config(cfg, ["train.epochs=3"])
    with pytest.raises(ConfigError, match="follow from the base model"):
        trainer(cfg, f"output_dir={tmp_path / 'b'}", f"model.init_from={base}", "model.audio2motion.num_kp=3")
    empty = write_config(tmp_path / "empty.toml", "")
    with pytest.raises(ConfigError, match="no training data"):
        load_config(empty)
    silent = tmp_path / "silent"
    silent.mkdir()
    from anytalk_core.media import write_video

    write_video(silent / "a.mp4", torch.rand(4, 32, 32, 3), fps=25)
    videos = write_config(tmp_path / "videos.toml", f"[[data.sources]]\nkind = \"video_folder\"\npath = \"{silent}\"\n")
    assert train_main([str(videos), f"output_dir={tmp_path / 'c'}", f"model.init_from={base}"]) == 2
    assert "has no sound track" in capsys.readouterr().err


def test_talking_head_training_from_a_checkpoint_with_an_audio_part_drops_it_with_a_note(tmp_path):
    from anytalk_core.audio_motion import attach_audio2motion
    from anytalk_core.models.audio2motion import AudioToMotion
    from anytalk_core.models.config import AudioToMotionConfig
    from anytalk_training.model_init import load_initial_weights

    torch.manual_seed(0)
    model = build_model(tiny_config(), with_discriminator=True)
    attach_audio2motion(model, AudioToMotion(AudioToMotionConfig(n_mels=8, feature_dim=8, frontend_channels=4, dim=8,
                                                                 depth=1, heads=1, context=2)))
    path = tmp_path / "with_audio.safetensors"
    save_checkpoint(model, path)
    fresh = build_model(tiny_config(), with_discriminator=True)
    info, _ = load_initial_weights(fresh, str(path), lambda message: None)
    assert "audio-to-motion part not carried over" in info["note"]
    assert torch.equal(fresh.motion.fc_exp.weight, model.motion.fc_exp.weight) and not fresh.has_audio2motion
