"""The talking-head model a run trains: its configuration from ``model.*`` and the weights ``model.init_from`` names."""
from __future__ import annotations

import json
import os

import torch
import torch.nn as nn

from anytalk_core.checkpoints import CheckpointError, check_state_dict, read_weights
from anytalk_core.dicts import deep_update
from anytalk_core.models.config import DiscriminatorConfig, ModelConfig, tiny_config
from anytalk_core.models.registry import get_family
from anytalk_core.safetensors_io import FileFormatError, read_header

from .checkpointing import TRAIN_STATE_FORMAT, read_train_state
from .config import GENERATOR_MODULES, ConfigError
from .runloop import SetupError
from .settings import TalkingHeadModel

__all__ = ["build_model_config", "read_initial_weights", "load_initial_weights", "derived_kernel_buffers"]


def build_model_config(config: dict) -> ModelConfig:
    m = TalkingHeadModel.of(config)
    if m.preset == "tiny":
        base = tiny_config(num_kp=m.num_kp, with_discriminator=True)
    else:
        base = get_family("face_vid2vid").default_config()
        if m.num_kp != base.num_kp:
            d = base.to_dict()
            d["num_kp"] = m.num_kp
            for sub in ("keypoints", "motion", "dense_motion"):
                d[sub]["num_kp"] = m.num_kp
            base = ModelConfig.from_dict(d)
    if m.overrides:
        d = base.to_dict()
        deep_update(d, json.loads(json.dumps(m.overrides)))
        try:
            base = ModelConfig.from_dict(d)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model.overrides: {exc}") from None
    if base.discriminator is None:
        base.discriminator = DiscriminatorConfig()
    return base


def read_initial_weights(path: str) -> tuple[dict, "object | None"]:
    """The weights ``model.init_from`` names: (state dict, training state or None). Read before any other set-up
    work, so a file that cannot be used (missing, a pickle that needs code, garbage) fails at once."""
    fmt = ""
    if path.endswith(".safetensors") and os.path.isfile(path):
        try:
            fmt = read_header(path)[1].get("format", "")
        except FileFormatError:  # read_weights names the fault below
            fmt = ""
    train_state = None
    if fmt == TRAIN_STATE_FORMAT:
        train_state = read_train_state(path)
        return train_state.model_state(), train_state
    if not os.path.exists(path):
        raise SetupError(f"model.init_from: {path}: file not found")
    try:
        return dict(read_weights(path, "face_vid2vid").state), None
    except CheckpointError as exc:
        raise SetupError(f"model.init_from: {exc}") from None


def load_initial_weights(model: nn.Module, path: str, log, weights: tuple | None = None) -> tuple[dict, "object | None"]:
    """Start from existing weights: an inference checkpoint / face-vid2vid file, or a training state
    (returned too, for its optimiser moments). ``weights``: what :func:`read_initial_weights` read already."""
    state, train_state = weights if weights is not None else read_initial_weights(path)
    # An audio-to-motion part predicts this model's current motion estimator: it is not carried over (retrain it
    # on the new model with training/configs/audio2motion.toml).
    dropped_audio = any(k.startswith("audio2motion.") for k in state)
    gen_state = {k: v for k, v in state.items() if not k.startswith(("discriminator.", "audio2motion."))}
    holder = nn.Module()
    for name in GENERATOR_MODULES:
        setattr(holder, name, getattr(model, name))
    # Anti-aliasing kernels are derived from the config, not learned: a model continued at another image size
    # (a 64 px model at 128 px with the keypoint detector's scale_factor halved) keeps its own.
    derived = derived_kernel_buffers(holder)
    rebuilt = sorted(k for k in derived if k in gen_state and not torch.equal(gen_state[k], derived[k]))
    gen_state.update({k: v for k, v in derived.items() if k in gen_state})
    try:
        check_state_dict(path, holder, gen_state)
    except CheckpointError as exc:
        raise SetupError(f"model.init_from: {exc}") from None
    disc_state = {k[len("discriminator."):]: v for k, v in state.items() if k.startswith("discriminator.")}
    holder.load_state_dict(gen_state, strict=True)
    note = "generator side loaded"
    if disc_state and hasattr(model, "discriminator"):
        try:
            check_state_dict(path, model.discriminator, disc_state)
            model.discriminator.load_state_dict(disc_state, strict=True)
            note += ", discriminator loaded"
        except CheckpointError:
            note += ", discriminator does not fit: initialised fresh"
    else:
        note += ", no discriminator in the file: initialised fresh"
    if rebuilt:
        note += f", anti-aliasing kernels {', '.join(rebuilt)} rebuilt for this config"
    if dropped_audio:
        note += ", audio-to-motion part not carried over (retrain it: training/configs/audio2motion.toml)"
    log(f"init_from {path}: {note}")
    return {"path": os.path.abspath(path), "note": note}, train_state


def derived_kernel_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """The stored buffers of ``module`` that its config determines (AntiAliasDownsample kernels), by state-dict key."""
    from anytalk_core.models.keypoint_detector import AntiAliasDownsample

    keys = set(module.state_dict())
    return {f"{name}.weight": sub.weight for name, sub in module.named_modules()
            if isinstance(sub, AntiAliasDownsample) and f"{name}.weight" in keys}
