"""Training configuration: TOML files in ``training/configs/`` plus ``key=value`` command-line overrides.

A configuration is a nested dict. :data:`DEFAULTS` lists every key with the seed's values (AnyTalk
supplementary §B.2/§C.1 and the authors' ``config/vox-256-emo.yaml``); a file only states what differs.
Unknown keys are errors (a typo must not silently fall back to a default). ``model.overrides`` is
free-form (it is merged into :class:`anytalk_core.models.config.ModelConfig`, which rejects unknown keys
itself) and each entry of ``data.sources`` is checked by :mod:`.data`.
"""
from __future__ import annotations

import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "AUDIO2MOTION_DEFAULTS", "ConfigError", "load_config", "apply_overrides", "parse_override", "config_hash"]


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message says which key and why."""


GENERATOR_MODULES: tuple[str, ...] = ("appearance", "keypoints", "motion", "dense_motion", "generator")

DEFAULTS: dict[str, Any] = {
    "name": "anytalk",
    "output_dir": "",  # "" -> runs/<name> (relative paths are relative to the working directory)
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N (under torchrun each rank uses cuda:LOCAL_RANK)
    "threads": 0,  # torch intra-op threads per process; 0 = torch's default
    "deterministic": True,  # deterministic kernels (CPU runs are bit-reproducible; see README of the trainer)
    "model": {
        "preset": "default",  # default (face-vid2vid released layout, 256, K=15) | tiny (64 px tests/smoke)
        "num_kp": 15,
        "overrides": {},  # merged into ModelConfig, e.g. {discriminator = {scales = [1, 0.5]}} for 512 px
        "init_from": "",  # weights to start from: an inference checkpoint, a face-vid2vid .pth.tar or a training state
        "init_optimizers": False,  # with a training state in init_from: also take its Adam moments (as the authors' stage 2)
    },
    "train": {
        "epochs": 200,
        "epoch_offset": 0,  # schedules (lr milestones, deformation-prior decay) see epoch + offset (stage 2: 200)
        "steps_per_epoch": 0,  # 0 = data.samples_per_epoch // batch_size
        "batch_size": 36,  # global batch per optimiser step, across all processes and accumulation steps
        "accumulate": 1,  # micro-batches per optimiser step (per process batch = batch_size / world / accumulate)
        "lr": 2.0e-4,  # every network (generator side and discriminator)
        "betas": [0.5, 0.999],
        "lr_milestones": [180],  # epochs at which the learning rate is multiplied by lr_gamma
        "lr_gamma": 0.1,
        "amp": "auto",  # auto (CUDA: bf16 where supported, else fp16; CPU: bf16 with amx_bf16/avx512_bf16, else off) | off | fp16 | bf16
        "sync_batchnorm": "auto",  # auto: on for multi-GPU DDP (the authors used synchronised BN); off on CPU
        "stop_after": 0,  # stop after this many optimiser steps in total (0 = run the whole schedule)
        # stop cleanly (checkpoint saved, --resume continues) once this many seconds have passed since the run
        # started, set-up included (0 = no limit): a session or a GPU lease of known length ends the run itself
        "max_wall_seconds": 0.0,
        "checkpoint_every": 1000,  # steps between atomic training-state checkpoints (always at the end)
        "snapshot_every_epochs": 10,  # also keep checkpoints/epoch_NNNN.safetensors every N epochs (0 = never)
        "log_every": 10,  # steps between JSONL metric lines
        "sample_every": 1000,  # steps between PNG sample grids (0 = only at the end)
        "num_workers": 4,  # data loader processes per training process
        "progress": True,  # tqdm progress bar with ETA (rank 0)
        "tensorboard": False,  # also write TensorBoard scalars (needs the tensorboard package)
        "export": True,  # write an inference checkpoint (model.safetensors) when the schedule ends
        "export_include_discriminator": False,
        "check_sync_every": 0,  # DDP: compare parameter checksums across ranks every N steps (0 = at the end only)
        # networks kept as loaded (model.init_from): no gradients, batch norm in eval mode; any of appearance,
        # keypoints, motion, dense_motion, generator (fine-tuning, as LivePortrait's second stage)
        "freeze": [],
    },
    "perceptual": {
        "weights": [10.0, 10.0, 10.0, 10.0, 10.0],  # lambda_P per VGG-19 layer (relu1_1 .. relu5_1)
        "scales": [1.0, 0.5, 0.25, 0.125],  # image pyramid 256/128/64/32 at 256 px
        "vgg19_weights": "",  # file with torchvision's VGG-19 state dict (features.N.weight keys)
        "fallback": "",  # when no VGG-19 file is named: must say "pixel_pyramid_l1" (never a random VGG)
    },
    "gan": {
        "mode": "hinge",
        "generator": 1.0,  # lambda_G
        "discriminator": 1.0,
        "feature_matching": [10.0, 10.0, 10.0, 10.0],  # per discriminator block
    },
    "equivariance": {
        "weight": 10.0,  # lambda_E
        "sigma_affine": 0.05,
        "sigma_tps": 0.005,
        "points_tps": 5,
    },
    "keypoint_supervision": {
        # NOT a loss of the paper (0 = off, as the seed): weight * mean |(x, y) of keypoint k - landmark k|
        # on data with ground-truth landmarks (the synthetic renderer; training/synthetic_source.py
        # SUPERVISED_LANDMARKS), for source and driving keypoints. Anchors keypoints semantically in short runs.
        "weight": 0.0,
    },
    "warp": {
        # NOT a loss of the paper (0 = off, as the seed): weight * L1 between the source image warped by the dense
        # motion network's deformation and the driving frame, over blurred scales (training/losses.py warp_loss).
        "weight": 0.0,
        "scales": [1.0, 0.5, 0.25],
    },
    "lip_region": {
        # NOT a loss of the seed (0 = off): LivePortrait's cascaded loss on the lip region. weight * the perceptual
        # loss (or its pixel fallback) between the generated and driving frames cropped around the driving frame's
        # lip landmarks (mouth corners, upper and lower lip) and resampled to size px, on data with landmarks. The
        # mouth is a few percent of the image, so the full-frame loss barely sees it open and close.
        "weight": 0.0,
        "size": 32,  # crop side in pixels
        "margin": 0.5,  # padding on each side, times the lips' larger extent
        "min_extent": 0.25,  # smallest box side, in normalised image units (the image is 2 wide)
    },
    "motion_warmup": {
        # NOT a stage of the paper (0 steps = off, as the seed): before the GAN training, the motion estimator
        # (and, with keypoints = true, the canonical keypoint detector) fits the renderer's ground truth on fresh
        # synthetic stills: head pose, keypoint supervision (its weight above), deformation prior. training/warmup.py
        "steps": 0,
        "batch_size": 32,
        "lr": 1.0e-3,
        "keypoints": True,
        "head_pose_weight": -1.0,  # < 0: head_pose.weight
        # > 0: weight * mean |(x, y) of the expression deltas of the first L keypoints - how far the renderer's
        # expression moved landmark k from the neutral face at the same pose|. The other losses hardly teach the
        # deltas (the deformation prior pulls them to 0 and the landmark motion they should carry is a few pixels),
        # so without it the motion estimator reads no mouth and neither audio nor driving moves it.
        "expression_weight": 0.0,
        "log_every": 100,
        "val_images": 128,
    },
    "keypoint_prior": {
        "weight": 10.0,  # lambda_dist
        "distance_threshold": 0.1,  # D_t
        "depth_target": 0.33,  # z_t
    },
    "head_pose": {
        "weight": 20.0,  # lambda_M
        "source": "auto",  # auto | ground_truth | hopenet | none
        "hopenet_weights": "",  # Hopenet (ResNet-50, 66 bins) state dict, e.g. hopenet_robust_alpha1.pkl
        "ground_truth_signs": [1.0, 1.0, 1.0],  # multiply renderer (yaw, pitch, roll) to match the estimator's convention
    },
    "deformation_prior": {
        "weight": 5.0,  # lambda_Delta
        # the authors' schedule: from epoch 100, weight - (epoch - 100) // 50 - 2, never below the floor
        "decay_start_epoch": 100,
        "decay_every_epochs": 50,
        "decay_initial_drop": 2.0,
        "floor": 1.0,
    },
    "expression": {
        "weight": 0.1,  # lambda_exp
        "encoder": "auto",  # auto | emonet | synthetic_regressor | none
        "emonet_weights": "",  # EmoNet (8 classes, AffectNet) state dict, e.g. emonet_8.pth
        "emonet_code": "features",  # features (pooled 256-d, as the authors) | logits
        "regressor_weights": "",  # a previously trained synthetic expression regressor (else one is trained)
        "regressor_code": "params",  # params (7 expression values) | features (pooled)
        "regressor_steps": 1500,
        "regressor_batch": 32,
        "regressor_size": 64,
        "regressor_width": 16,
        "regressor_crop": 0.5,  # centred face crop (fraction of the frame) the regressor looks at
        "regressor_lr": 2.0e-3,
        "regressor_train_images": 8192,
        "regressor_val_images": 128,
        "regressor_domains": ["human", "cg_human", "animal"],
    },
    "data": {
        "image_size": 0,  # 0 = the model's image size
        "horizontal_flip": True,
        "time_flip": True,
        "color_jitter": 0.1,  # brightness, contrast, saturation and hue, as the authors
        "samples_per_epoch": 0,  # 0 = sum over sources of their item count * repeats
        "repeats": 1,  # the authors repeat VoxCeleb 75 times per epoch (num_repeats)
        "manifest": "",  # optional file (toml/json/jsonl/csv) listing more sources
        "sources": [],  # list of tables, see training/data.py
    },
}

# The audio-to-motion task (``task = "audio2motion"`` at the top of a config; training/audio2motion.py):
# (audio, motion) pairs -> the ``audio2motion.`` part of an inference checkpoint.
AUDIO2MOTION_DEFAULTS: dict[str, Any] = {
    "task": "audio2motion",
    "name": "audio2motion",
    "output_dir": "",  # "" -> runs/<name>
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "threads": 0,
    "deterministic": True,
    "model": {
        # the inference checkpoint whose motion estimator gives the targets (target.kind = motion_estimator);
        # the export writes it again with the audio-to-motion part added, into a new file
        "init_from": "",
        "audio2motion": {},  # AudioToMotionConfig fields: dim, depth, heads, radius, context, n_mels, features, ...
    },
    "target": {
        "kind": "motion_estimator",  # motion_estimator (the base model's M over the clips' frames) | synthetic
        "pose": True,  # also predict head pose (yaw, pitch, roll, translation)
        "params": [],  # renderer expression fields predicted as well (synthetic sources), e.g. ["jaw_open"]
    },
    "train": {
        "steps": 2000,
        "batch_size": 16,  # clips per step
        "clip_frames": 64,  # video frames per training clip
        "lr": 1.0e-3,
        "weight_decay": 0.01,
        "lr_milestones": [],  # steps at which the learning rate is multiplied by lr_gamma
        "lr_gamma": 0.1,
        "stop_after": 0,  # stop after this many steps in total (0 = the whole schedule)
        "checkpoint_every": 500,
        "log_every": 25,
        "eval_every": 500,  # steps between held-out evaluations (0 = only at the end)
        "progress": True,
        "export": True,  # write <run>/model.safetensors (model.init_from + audio2motion) at the end
    },
    "loss": {
        "expression": 1.0,
        "pose": 0.1,
        "params": 1.0,
        "velocity": 0.5,  # L1 on frame-to-frame differences (crisp mouth movement)
    },
    "augment": {
        "noise": 0.01,  # largest RMS of added white noise (the audio is normalised to RMS ~0.1)
        "gain_db": 6.0,  # random gain +- this many dB
    },
    "data": {
        "fps": 25.0,  # frame rate of synthetic clips (videos keep their own)
        "cache_dir": "",  # motion-estimator targets per clip; "" -> <output_dir>/motion_cache
        "sources": [],  # [[data.sources]]: kind = "synthetic" or "video_folder" (see training/audio2motion.py)
        "val_sources": [],  # held-out clips, same kinds: evaluated every train.eval_every steps and at the end
    },
}

TASKS = {"talking_head": DEFAULTS, "audio2motion": AUDIO2MOTION_DEFAULTS}

# Keys whose value is a free-form table (not checked against DEFAULTS).
_FREE_FORM = {("model", "overrides"), ("model", "audio2motion")}


def _check_keys(config: dict, defaults: dict, path: tuple[str, ...] = ()) -> None:
    for key, value in config.items():
        where = ".".join(path + (key,))
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"unknown config key {where!r} (known here: {known})")
        default = defaults[key]
        if path + (key,) in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table")
            continue
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table, got {value!r}")
            _check_keys(value, default, path + (key,))
        elif key in ("sources", "val_sources"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where} must be a list of tables ([[data.{key}]])")
        else:
            _check_type(where, value, default)


def _check_type(where: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            ok = value.is_integer()
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where} must be of type {type(default).__name__} (like {default!r}), got {value!r}")


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "overrides":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); value parsed as a TOML literal, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings: output_dir=runs/x
    return key.split("."), value


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (list items addressed by index: ``data.sources.0.weight=2``)."""
    config = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = config
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = _list_item(node, part, where)
            elif isinstance(node, dict):
                if part not in node:
                    node[part] = {}
                node = node[part]
            else:
                raise ConfigError(f"override {text!r}: {where} is not a table")
        last = parts[-1]
        if isinstance(node, list):
            idx = _index(last, ".".join(parts), len(node))
            node[idx] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(parts[:-1])} is not a table")
    return config


def _index(part: str, where: str, n: int) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"{where}: list items are addressed by index, got {part!r}") from None
    if not 0 <= idx < n:
        raise ConfigError(f"{where}: index {idx} out of range (the list has {n} items)")
    return idx


def _list_item(node: list, part: str, where: str) -> Any:
    return node[_index(part, where, len(node))]


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> dict:
    """Read a TOML config, merge it over :data:`DEFAULTS`, apply overrides, validate keys and types.

    The returned dict has ``_config_path`` and ``_config_dir`` (relative data and weight paths in the
    file resolve against the working directory, as a user typing them on the command line expects).
    """
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not a valid TOML file ({exc})") from None
    task = str(data.get("task", "talking_head"))
    for text in overrides or []:
        parts, value = parse_override(text)
        if parts == ["task"]:
            task = str(value)
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    defaults = TASKS[task]
    if task == "talking_head":
        data.pop("task", None)  # the talking-head config has no task key (its stored form is unchanged)
    _check_keys(data, defaults)
    config = _merge(defaults, data)
    if overrides:
        config = apply_overrides(config, [o for o in overrides if parse_override(o)[0] != ["task"]])
        _check_keys(config, defaults)
    config["_config_path"] = str(path) if path is not None else ""
    (_validate if task == "talking_head" else _validate_audio2motion)(config)
    return config


def _validate_audio2motion(config: dict) -> None:
    t = config["train"]
    for key in ("steps", "batch_size", "clip_frames"):
        if t[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")
    if config["target"]["kind"] not in ("motion_estimator", "synthetic"):
        raise ConfigError(f"target.kind must be motion_estimator or synthetic, got {config['target']['kind']!r}")
    if not config["data"]["fps"] > 0:
        raise ConfigError(f"data.fps must be positive, got {config['data']['fps']}")
    if not config["data"]["sources"]:
        raise ConfigError("no training data: add [[data.sources]] tables (kind = \"synthetic\" or \"video_folder\")")


def _validate(config: dict) -> None:
    t = config["train"]
    for key in ("epochs", "batch_size", "accumulate"):
        if t[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")
    if t["max_wall_seconds"] < 0:
        raise ConfigError(f"train.max_wall_seconds must be >= 0 (0 = no limit), got {t['max_wall_seconds']}")
    if t["amp"] not in ("auto", "off", "fp16", "bf16"):
        raise ConfigError(f"train.amp must be auto, off, fp16 or bf16, got {t['amp']!r}")
    if t["sync_batchnorm"] not in ("auto", True, False, "on", "off"):
        raise ConfigError("train.sync_batchnorm must be auto, on or off")
    if len(t["betas"]) != 2:
        raise ConfigError("train.betas must be two numbers")
    if config["model"]["preset"] not in ("default", "tiny"):
        raise ConfigError(f"model.preset must be 'default' or 'tiny', got {config['model']['preset']!r}")
    if config["gan"]["mode"] != "hinge":
        raise ConfigError("gan.mode: only the seed's hinge loss is implemented")
    if config["head_pose"]["source"] not in ("auto", "ground_truth", "hopenet", "none"):
        raise ConfigError("head_pose.source must be auto, ground_truth, hopenet or none")
    if config["expression"]["encoder"] not in ("auto", "emonet", "synthetic_regressor", "none"):
        raise ConfigError("expression.encoder must be auto, emonet, synthetic_regressor or none")
    if config["perceptual"]["fallback"] not in ("", "pixel_pyramid_l1"):
        raise ConfigError("perceptual.fallback must be '' or 'pixel_pyramid_l1'")
    if not config["perceptual"]["scales"] or any(not 0 < s <= 1 for s in config["perceptual"]["scales"]):
        raise ConfigError("perceptual.scales must be a non-empty list of factors in (0, 1]")
    freeze = config["train"]["freeze"]
    if any(name not in GENERATOR_MODULES for name in freeze) or set(GENERATOR_MODULES) <= set(freeze):
        raise ConfigError(f"train.freeze must list some of {list(GENERATOR_MODULES)} (not all), got {freeze!r}")
    w = config["motion_warmup"]
    if w["steps"] < 0 or w["batch_size"] < 1 or w["val_images"] < 1 or not w["lr"] > 0:
        raise ConfigError("motion_warmup: steps must be >= 0, batch_size and val_images >= 1, lr > 0")
    if w["steps"] > 0 and not any(s.get("kind") == "synthetic" for s in config["data"]["sources"]):
        raise ConfigError("motion_warmup.steps > 0 needs renderer ground truth: add a [[data.sources]] table with "
                          "kind = \"synthetic\", or set motion_warmup.steps = 0")
    if config["warp"]["weight"] < 0 or not config["warp"]["scales"] \
            or any(not 0 < s <= 1 for s in config["warp"]["scales"]):
        raise ConfigError("warp: weight must be >= 0 and scales a non-empty list of factors in (0, 1]")
    lip = config["lip_region"]
    if lip["weight"] < 0 or lip["size"] < 8 or lip["margin"] < 0 or not 0 < lip["min_extent"] <= 2:
        raise ConfigError("lip_region: weight and margin must be >= 0, size >= 8 px and min_extent in (0, 2]")
    if len(config["head_pose"]["ground_truth_signs"]) != 3:
        raise ConfigError("head_pose.ground_truth_signs must be three numbers (yaw, pitch, roll)")


def output_dir(config: dict) -> Path:
    return Path(config["output_dir"] or os.path.join("runs", config["name"]))


def public(config: dict) -> dict:
    """The config without private ``_`` keys (what is stored in checkpoints and logs)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def config_hash(section: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:16]
