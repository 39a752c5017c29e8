"""Typed views of a validated training config: the run's top-level keys and its ``train`` table, per task.

:func:`.config.load_config` merges the TOML file and the ``key=value`` overrides and validates them (its
messages are the ones users see); :meth:`RunSettings.from_config` turns that dict into frozen dataclasses the
trainers read by attribute. The dict stays the on-disk form (run_info.json, checkpoint metadata).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["LoopSettings", "TalkingHeadTrain", "AudioTrain", "RunSettings"]


_CAST = {"int": int, "float": float}


def _value(annotation: str, value: Any) -> Any:
    """A validated config value as its field's type (2.0 -> 2 for an int; lists become tuples: immutable)."""
    if isinstance(value, list):
        return tuple(value)
    cast = _CAST.get(annotation)
    return cast(value) if cast is not None else value


def _section(cls, table: dict) -> Any:
    """``cls`` from the keys of ``table`` it names."""
    return cls(**{f.name: _value(f.type, table[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class LoopSettings:
    """The ``train`` keys the shared run loop reads (both tasks)."""

    batch_size: int
    lr: float
    lr_milestones: tuple[int, ...]
    lr_gamma: float
    stop_after: int
    checkpoint_every: int
    log_every: int
    progress: bool
    export: bool


@dataclass(frozen=True)
class TalkingHeadTrain(LoopSettings):
    """``train`` of the talking-head task (training/config.py DEFAULTS documents each key)."""

    epochs: int
    epoch_offset: int
    steps_per_epoch: int
    accumulate: int
    betas: tuple[float, float]
    amp: str
    sync_batchnorm: str | bool
    max_wall_seconds: float
    snapshot_every_epochs: int
    sample_every: int
    num_workers: int
    tensorboard: bool
    export_include_discriminator: bool
    check_sync_every: int
    freeze: tuple[str, ...]


@dataclass(frozen=True)
class AudioTrain(LoopSettings):
    """``train`` of the audio-to-motion task (training/config.py AUDIO2MOTION_DEFAULTS)."""

    steps: int
    clip_frames: int
    weight_decay: float
    eval_every: int


@dataclass(frozen=True)
class RunSettings:
    """A run's top-level keys and its typed ``train`` table."""

    task: str
    name: str
    seed: int
    device: str
    threads: int
    deterministic: bool
    train: TalkingHeadTrain | AudioTrain

    @classmethod
    def from_config(cls, config: dict) -> RunSettings:
        """The settings of a config :func:`.config.load_config` returned (validated already)."""
        task = str(config.get("task", "talking_head"))
        train = _section(AudioTrain if task == "audio2motion" else TalkingHeadTrain, config["train"])
        return cls(task=task, name=str(config["name"]), seed=int(config["seed"]), device=str(config["device"]),
                   threads=int(config["threads"]), deterministic=bool(config["deterministic"]), train=train)
