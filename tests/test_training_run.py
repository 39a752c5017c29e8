"""The trainer end to end on CPU: the smoke config, exact resume, 2-process DDP, and clear setup errors."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from anytalk_core.engine import Engine, EngineConfig
from anytalk_core.stages import animate_clip
from anytalk_training import cli
from anytalk_training.config import load_config
from anytalk_training.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.toml"


# ------------------------------------------------------------------------------------------------ helpers

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def animate(model, source, driving):
    """Every stage in memory on the CPU: (1, 3, H, W), (N, 3, H, W) -> generated frames (N, 3, H, W)."""
    return torch.cat(list(animate_clip(Engine(model, EngineConfig(device="cpu")), source, driving)))


def write_config(path: pathlib.Path, cfg: dict) -> pathlib.Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for section, table in cfg.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if k != "sources"]
        for src in table.get("sources", []):
            lines.append(f"[[{section}.sources]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in src.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(out: pathlib.Path, regressor: str, **train) -> dict:
    return {
        "name": "t", "output_dir": str(out), "seed": 0, "threads": 1,
        "model": {"preset": "tiny"},
        "train": {"epochs": 3, "steps_per_epoch": 2, "batch_size": 2, "num_workers": 0, "progress": False,
                  "checkpoint_every": 1000, "snapshot_every_epochs": 0, "log_every": 1, "sample_every": 0,
                  "lr_milestones": [2], **train},
        "perceptual": {"fallback": "pixel_pyramid_l1"},
        "head_pose": {"source": "ground_truth"},
        "deformation_prior": {"decay_start_epoch": 1, "decay_every_epochs": 1},
        "expression": {"regressor_weights": regressor},
        "data": {"sources": [{"kind": "synthetic", "num_identities": 4, "frames_per_clip": 5, "seed": 3}]},
    }


# the trainer sets the thread count and deterministic algorithms process-wide: undo it after each test
pytestmark = pytest.mark.usefixtures("restore_torch_globals")


def train_in_process(path: pathlib.Path, *overrides: str, resume=False) -> dict:
    trainer = Trainer(load_config(path, list(overrides)), resume=resume, log_stream=open(os.devnull, "w"))
    try:
        return trainer.fit()
    finally:
        trainer.close()


def run_cli(*args: str, cwd: pathlib.Path, timeout: int = 300, launcher: list[str] | None = None
            ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(launcher or []), "-m", "anytalk_training.cli", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tensors(path: pathlib.Path, prefixes=("model.", "optim.")) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if k.startswith(prefixes)}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, regressor):
    """6 uninterrupted steps (3 epochs of 2; the lr drops x0.1 at epoch 2, the deformation prior decays)."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = write_config(tmp / "straight.toml", base_config(tmp / "run", regressor))
    result = train_in_process(cfg)
    return tmp, cfg, result


# ------------------------------------------------------------------------------------------------ tests

def test_smoke_config_runs_end_to_end_and_exports_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "smoke"
    proc = run_cli(str(SMOKE), f"output_dir={out}", "train.epochs=1", "train.steps_per_epoch=2", "train.sample_every=1",
                   "expression.regressor_train_images=48", "expression.regressor_val_images=12",
                   "expression.regressor_steps=2", "data.sources.0.num_identities=3", "data.sources.0.frames_per_clip=4",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FALLBACK pixel_pyramid_l1" in proc.stderr  # the stand-ins are announced, not silent
    assert "exported inference checkpoint" in proc.stderr
    from anytalk_core.checkpoints import load_model, read_weights

    model = load_model(out / "model.safetensors")
    prov = read_weights(out / "model.safetensors").provenance
    assert prov["losses"]["perceptual"]["backend"] == "pixel_pyramid_l1"
    assert prov["losses"]["head_pose"]["mode"] == "ground_truth"
    assert prov["losses"]["expression"]["encoder"] == "synthetic_regressor"
    assert prov["step"] == 2 and not any(k.startswith("discriminator.") for k in model.state_dict())
    frames = animate(model, torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert frames.shape == (2, 3, 64, 64) and torch.isfinite(frames).all()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2]  # smoke logs every 2 steps
    for key in ("perceptual", "gen_gan", "feature_matching", "equivariance", "keypoint_prior", "head_pose",
                "deformation_prior", "expression", "discriminator", "steps_per_s", "eta_s", "lr"):
        assert key in metrics[0], key
    assert all(torch.isfinite(torch.tensor(float(metrics[0][k]))) for k in ("generator_total", "discriminator"))
    pngs = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step_00000001.png", "step_00000002.png"]
    from PIL import Image

    assert Image.open(pngs[0]).size == (4 * 68, 4 * 68)  # source | driving | generated | keypoints; 4 rows
    info = json.loads((out / "run_info.json").read_text())
    assert info["run"]["losses"]["expression"]["validation"]["val_images"] == 12


def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(tmp_path, straight_run, regressor):
    _, _, straight = straight_run
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "split.toml", base_config(run, regressor))
    first = train_in_process(cfg, "train.stop_after=3")  # "interrupted" mid-epoch 1
    assert first["end_step"] == 3 and not (run / "model.safetensors").exists()
    proc = run_cli(str(cfg), "--resume", cwd=tmp_path)  # a new process picks it up
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = tensors(pathlib.Path(straight["run_dir"]) / "checkpoints" / "last.safetensors")
    b = tensors(run / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # the exported inference checkpoints agree too, and the metrics log has one line per step
    from safetensors.torch import load_file

    ea = load_file(str(pathlib.Path(straight["run_dir"]) / "model.safetensors"))
    eb = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path, regressor):
    """torchrun, 2 CPU processes (gloo), per-process batch 2, versus one process accumulating 2 x 2.

    Micro-batch m of rank r is the (m * world + r)-th slice of the global batch with its own keyed
    equivariance transform, and spectral normalisation advances once per pass and step: so after two
    steps every parameter, spectral-norm vector and Adam moment is bit-identical. Only BatchNorm running
    statistics differ (DDP keeps rank 0's, accumulation updates them per micro-batch); they do not enter
    training-mode forwards.
    """
    ddp_cfg = write_config(tmp_path / "ddp.toml", base_config(tmp_path / "ddp", regressor, epochs=1, batch_size=4))
    acc_cfg = write_config(tmp_path / "acc.toml", base_config(tmp_path / "acc", regressor, epochs=1, batch_size=4,
                                                              accumulate=2))
    proc = run_cli(str(ddp_cfg), cwd=tmp_path,
                   launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    train_in_process(acc_cfg)
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    sync = [m for m in lines if "ranks_in_sync" in m]
    assert sync and sync[-1]["step"] == 2 and sync[-1]["ranks_in_sync"] is True and sync[-1]["world_size"] == 2
    assert set(sync[-1]["buffers_differing_kinds"]) <= {"running_mean", "running_var", "num_batches_tracked"}
    ddp = tensors(tmp_path / "ddp" / "checkpoints" / "last.safetensors")
    acc = tensors(tmp_path / "acc" / "checkpoints" / "last.safetensors")
    assert ddp.keys() == acc.keys()
    differing = {k for k in acc if not torch.equal(acc[k], ddp[k])}
    assert differing and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in differing), \
        sorted(differing)[:5]
    assert any(k.startswith("optim.") for k in acc) and not any(k.startswith("optim.") for k in differing)
    acc_lines = [json.loads(line) for line in (tmp_path / "acc" / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in lines if "generator_total" in m]
    assert [m["generator_total"] for m in losses] == pytest.approx([m["generator_total"] for m in acc_lines], rel=1e-6)


def test_setup_errors_are_one_clear_line_before_training(tmp_path, straight_run, regressor, capsys):
    tmp, straight_cfg, _ = straight_run
    cfg = write_config(tmp_path / "c.toml", base_config(tmp_path / "run", regressor))

    def fails(*args, match):
        rc = cli.main([str(args[0]), *args[1:]])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "anytalk-train: error:" in err and match in err, err
        assert "Traceback" not in err
        return err

    fails(cfg, "perceptual.vgg19_weights=weights/missing_vgg19.pth", match="missing_vgg19.pth: VGG-19 weights file not found")
    fails(cfg, "perceptual.fallback=", match="perceptual.fallback = 'pixel_pyramid_l1'")
    fails(cfg, "head_pose.source=hopenet", "head_pose.hopenet_weights=nope.pkl", match="nope.pkl: Hopenet weights file not found")
    fails(cfg, "expression.encoder=emonet", "expression.emonet_weights=emonet_8.pth", match="emonet_8.pth: EmoNet weights file not found")
    fails(cfg, "expression.regressor_weights=phi.safetensors", match="phi.safetensors")
    fails(cfg, "model.init_from=stage1.safetensors", match="stage1.safetensors")
    fails(cfg, "data.sources.0.kind=video_folder", f"data.sources.0.path={tmp_path / 'no_such_vox'}",
          "data.sources.0.domain=human", "data.sources.0.num_identities=1",
          match="unknown keys")  # a synthetic-only key on a video folder
    vox = tmp_path / "vox"
    vox.mkdir()
    bad = write_config(tmp_path / "vox.toml", {**base_config(tmp_path / "run", regressor),
                                              "data": {"sources": [{"kind": "video_folder", "path": str(vox / "train"),
                                                                    "domain": "human"}]}})
    fails(bad, match="folder not found")
    (vox / "train").mkdir()
    fails(bad, match="no clips found")
    from PIL import Image

    (vox / "train" / "id1" / "c1").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(vox / "train" / "id1" / "c1" / "0001.png")
    fails(bad, match="no ground-truth pose")  # real video and no Hopenet: the pose loss has no target
    fails(cfg, "--resume", match="no training checkpoint")
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        fails(cfg, "train.tensorboard=true", match="tensorboard package is not installed")
    # an existing run is never overwritten without --resume
    fails(straight_cfg, match="already holds a training run")
    # corrupt / truncated / foreign resume checkpoints
    last = tmp / "run" / "checkpoints" / "last.safetensors"
    run2 = tmp_path / "run2" / "checkpoints"
    run2.mkdir(parents=True)
    cfg2 = write_config(tmp_path / "c2.toml", base_config(tmp_path / "run2", regressor))
    data = bytearray(last.read_bytes())
    data[-100] ^= 0xFF  # flip bits inside a tensor
    (run2 / "last.safetensors").write_bytes(bytes(data))
    fails(cfg2, "--resume", match="corrupt (checksum mismatch")
    (run2 / "last.safetensors").write_bytes(last.read_bytes()[: len(data) // 2])
    fails(cfg2, "--resume", match="not a readable training checkpoint (truncated or corrupt")
    # ... with an intact older snapshot of the run beside it: the error names it
    shutil.copy(last, run2 / "epoch_0002.safetensors")
    err = fails(cfg2, "--resume", match="not a readable training checkpoint (truncated or corrupt")
    assert f"--resume-from {run2 / 'epoch_0002.safetensors'} (step 6)" in err
    (run2 / "epoch_0002.safetensors").unlink()
    shutil.copy(tmp / "run" / "model.safetensors", run2 / "last.safetensors")
    fails(cfg2, "--resume", match="not an AnyTalk training checkpoint (an inference checkpoint")
    shutil.copy(last, run2 / "last.safetensors")
    fails(cfg2, "--resume", "model.overrides={generator = {num_middle_blocks = 2}}", match="another model configuration")
    assert not (tmp_path / "run2" / "model.safetensors").exists()


def test_weight_files_are_checked_before_the_data_and_networks_are_built(tmp_path, regressor, capsys):
    """A pickle that needs code to load (model.init_from, perceptual.vgg19_weights) is refused first: the data
    folder named in the same config does not exist, and that is not what the error is about."""
    import pickle

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(os.getcwd))  # loading it would call into the os module
    cfg = write_config(tmp_path / "c.toml", {**base_config(tmp_path / "run", regressor),
                                             "data": {"sources": [{"kind": "video_folder", "domain": "human",
                                                                   "path": str(tmp_path / "no_such_vox")}]}})
    for override, match in ((f"model.init_from={evil}", "model.init_from: "),
                            (f"perceptual.vgg19_weights={evil}", "evil.pth")):
        rc = cli.main([str(cfg), override])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "refusing to load" in err and "no_such_vox" not in err, err
    rc = cli.main([str(cfg)])
    assert rc == 2 and "no_such_vox" in capsys.readouterr().err  # the data folder would have failed next


def test_export_only_writes_a_new_file_next_to_an_existing_one(straight_run):
    tmp, cfg, _ = straight_run
    rc = cli.main([str(cfg), "--export"])
    assert rc == 0
    assert (tmp / "run" / "model.safetensors").exists() and (tmp / "run" / "model_00001.safetensors").exists()


def test_init_from_an_inference_checkpoint_or_a_training_state(straight_run, tmp_path, regressor):
    """Stage 2 starts from stage 1: weights from either file kind, Adam moments from a training state."""
    tmp, _, _ = straight_run
    from safetensors.torch import load_file

    exported = load_file(str(tmp / "run" / "model.safetensors"))
    last = tmp / "run" / "checkpoints" / "last.safetensors"
    state = load_file(str(last))
    cfg = write_config(tmp_path / "ft.toml", base_config(tmp_path / "ft", regressor))
    a = Trainer(load_config(cfg, [f"model.init_from={tmp / 'run' / 'model.safetensors'}"]), log_stream=open(os.devnull, "w"))
    try:
        sd = a.model.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in exported.items())  # generator side taken over
        assert "no discriminator in the file" in a.init_info["note"] and not a.opt_g.state
    finally:
        a.close()
    b = Trainer(load_config(cfg, [f"model.init_from={last}", "model.init_optimizers=true", "train.epoch_offset=200"]),
                log_stream=open(os.devnull, "w"))
    try:
        sd = b.model.state_dict()
        assert all(torch.equal(sd[k[len("model."):]], v) for k, v in state.items() if k.startswith("model."))
        assert "optimiser moments loaded" in b.init_info["note"] and b.opt_g.state and b.start_step == 0
        assert b.scheduler.lr_at(200) == pytest.approx(2e-5)  # the schedules continue past epoch 180
    finally:
        b.close()
    with pytest.raises(Exception, match="init_optimizers = true needs a training checkpoint"):
        Trainer(load_config(cfg, [f"model.init_from={tmp / 'run' / 'model.safetensors'}", "model.init_optimizers=true"]),
                log_stream=open(os.devnull, "w"))


def test_frozen_networks_stay_as_loaded(straight_run, tmp_path, regressor):
    """train.freeze keeps the named networks exactly as init_from gave them (weights and batch-norm statistics)
    while the others train; a bad name is refused."""
    tmp, _, _ = straight_run
    from safetensors.torch import load_file

    exported = load_file(str(tmp / "run" / "model.safetensors"))
    cfg = write_config(tmp_path / "fz.toml", base_config(tmp_path / "fz", regressor))
    t = Trainer(load_config(cfg, [f"model.init_from={tmp / 'run' / 'model.safetensors'}", "train.freeze=['motion']",
                                  "train.stop_after=2"]), log_stream=open(os.devnull, "w"))
    try:
        t.fit()
        sd = t.model.state_dict()
    finally:
        t.close()
    assert all(torch.equal(sd[k], v) for k, v in exported.items() if k.startswith("motion."))
    assert not all(torch.equal(sd[k], v) for k, v in exported.items() if k.startswith("generator."))
    for bad in ("['motion', 'typo']", "['appearance', 'keypoints', 'motion', 'dense_motion', 'generator']"):
        with pytest.raises(Exception, match="train.freeze must list some of"):
            load_config(cfg, [f"train.freeze={bad}"])


def test_motion_warmup_trains_only_the_motion_side_is_seeded_and_survives_resume(tmp_path, regressor):
    """The warm-up (not in the paper) fits M and the canonical keypoints to renderer ground truth, the same way
    for a seed; the rest of the model is untouched; a resumed run neither repeats it nor loses its report."""
    from anytalk_core.models.registry import build_model
    from anytalk_training.model_init import build_model_config
    from anytalk_training.warmup import warm_up_motion

    cfg = load_config(write_config(tmp_path / "w.toml", base_config(tmp_path / "unused", regressor)),
                      ["motion_warmup.steps=3", "motion_warmup.batch_size=2", "motion_warmup.val_images=3",
                       "keypoint_supervision.weight=5"])

    def warmed(keypoints: bool, **options):
        torch.manual_seed(0)
        model = build_model(build_model_config(cfg))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        c = dict(cfg, motion_warmup=dict(cfg["motion_warmup"], keypoints=keypoints, **options))
        report = warm_up_motion(model, c, ["human", "animal"], 64, torch.device("cpu"), log=lambda m: None)
        return before, model.state_dict(), report

    before, after, report = warmed(True)
    changed = {k.split(".")[0] for k in after if not torch.equal(before[k], after[k])}
    assert changed == {"motion", "keypoints"}
    assert report["steps"] == 3 and report["images"] == 6 and len(report["held_out"]["pose_mae_deg_after"]) == 3
    _, again, report_again = warmed(True)
    assert all(torch.equal(after[k], again[k]) for k in after)
    assert report_again["held_out"] == report["held_out"]
    _, motion_only, _ = warmed(False)
    assert all(torch.equal(before[k], motion_only[k]) for k in before if k.startswith("keypoints."))
    assert report["weights"] == {"head_pose": 20.0, "keypoint_supervision": 5.0, "deformation_prior": 5.0, "expression": 0.0}
    _, supervised, report_expr = warmed(True, expression_weight=50.0, head_pose_weight=2.0)
    assert report_expr["weights"]["expression"] == 50.0 and report_expr["weights"]["head_pose"] == 2.0
    assert -1 <= report_expr["held_out"]["expression_r_after"] <= 1
    assert any(not torch.equal(after[k], supervised[k]) for k in after if k.startswith("motion.fc_exp"))

    run = tmp_path / "run"
    path = write_config(tmp_path / "r.toml", base_config(run, regressor, epochs=1))
    overrides = ["motion_warmup.steps=2", "motion_warmup.batch_size=2", "motion_warmup.val_images=2"]
    train_in_process(path, *overrides, "train.stop_after=1")
    first = json.loads((run / "run_info.json").read_text())["run"]["motion_warmup"]
    assert first["steps"] == 2
    train_in_process(path, *overrides, resume=True)
    assert json.loads((run / "run_info.json").read_text())["run"]["motion_warmup"] == first

    video_only = base_config(tmp_path / "v", regressor)
    video_only["data"] = {"sources": [{"kind": "video_folder", "path": str(tmp_path)}]}
    with pytest.raises(Exception, match="motion_warmup.steps > 0 needs renderer ground truth"):
        load_config(write_config(tmp_path / "v.toml", video_only), overrides)
    with pytest.raises(Exception, match="motion_warmup: steps must be >= 0"):
        load_config(path, ["motion_warmup.steps=-1"])


def test_warmup_stills_carry_the_offsets_the_expression_caused():
    """Landmarks no expression moves have no offset; the lower lip's offset goes down with the jaw."""
    from anytalk_training import synthetic_source as syn
    from anytalk_training.warmup import still_batch

    data = still_batch(["human", "cg_human", "animal"], 24, 64, np.random.default_rng(3))
    offsets, jaw = data["expression_offsets"], data["expression"][:, syn.EXPRESSION_FIELDS.index("jaw_open")]
    names = syn.SUPERVISED_LANDMARKS
    for still in ("nose_tip", "contour_r2", "ear_l_tip"):
        assert offsets[:, names.index(still)].abs().max() < 1e-6
    lip = offsets[:, names.index("lip_lower"), 1]
    assert (lip > 0).float().mean() > 0.9 and np.corrcoef(lip.numpy(), jaw.numpy())[0, 1] > 0.8


@pytest.mark.parametrize("path", sorted((ROOT / "training" / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    config = load_config(path)
    assert config["name"] and config["data"]["sources"]


def test_lip_region_loss_is_logged_and_needs_the_perceptual_loss(tmp_path, regressor):
    """lip_region (LivePortrait's cascaded lip loss, not in the seed) shows in the metrics and the run's loss
    report; without a perceptual loss to apply to the crops, or with a bad crop size, the run is refused."""
    run = tmp_path / "lip"
    path = write_config(tmp_path / "lip.toml", base_config(run, regressor, epochs=1))
    train_in_process(path, "lip_region.weight=2.0", "train.stop_after=1")
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert line["lip_region"] > 0
    info = json.loads((run / "run_info.json").read_text())["run"]["losses"]["lip_region"]
    assert info == {"weight": 2.0, "size": 32, "backend": "pixel_pyramid_l1"}
    with pytest.raises(Exception, match="lip_region.weight > 0 uses the perceptual loss"):
        Trainer(load_config(path, ["lip_region.weight=1", "perceptual.weights=[0, 0, 0, 0, 0]",
                                   f"output_dir={tmp_path / 'refused'}"]),
                log_stream=open(os.devnull, "w"))
    with pytest.raises(Exception, match="lip_region: weight and margin must be >= 0, size >= 8"):
        load_config(path, ["lip_region.size=4"])
