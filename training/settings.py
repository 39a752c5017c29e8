"""Typed views of a validated training config: the run's top-level keys and its tables, per task.

:func:`.config.load_config` merges the TOML file and the ``key=value`` overrides and validates them (its
messages are the ones users see); :meth:`RunSettings.from_config` turns that dict into frozen dataclasses the
trainers read by attribute. The dict stays the on-disk form (run_info.json, checkpoint metadata).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["LoopSettings", "TalkingHeadTrain", "AudioTrain", "LossWeights", "AudioTask", "TalkingHeadModel", "AudioModel",
           "TalkingHeadData", "AudioData", "ExpressionSettings", "MotionWarmup", "RunSettings"]


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
class Perceptual:
    weights: tuple[float, ...]
    scales: tuple[float, ...]
    vgg19_weights: str
    fallback: str


@dataclass(frozen=True)
class Gan:
    mode: str
    generator: float
    discriminator: float
    feature_matching: tuple[float, ...]


@dataclass(frozen=True)
class Equivariance:
    weight: float
    sigma_affine: float
    sigma_tps: float
    points_tps: int


@dataclass(frozen=True)
class Weight:
    weight: float


@dataclass(frozen=True)
class Warp:
    weight: float
    scales: tuple[float, ...]


@dataclass(frozen=True)
class LipRegion:
    weight: float
    size: int
    margin: float
    min_extent: float


@dataclass(frozen=True)
class KeypointPrior:
    weight: float
    distance_threshold: float
    depth_target: float


@dataclass(frozen=True)
class HeadPose:
    weight: float
    source: str
    hopenet_weights: str
    ground_truth_signs: tuple[float, ...]


@dataclass(frozen=True)
class DeformationPrior:
    weight: float
    decay_start_epoch: int
    decay_every_epochs: int
    decay_initial_drop: float
    floor: float


@dataclass(frozen=True)
class LossWeights:
    """The talking-head task's loss tables (training/config.py DEFAULTS documents each key)."""

    perceptual: Perceptual
    gan: Gan
    equivariance: Equivariance
    keypoint_supervision: Weight
    warp: Warp
    lip_region: LipRegion
    keypoint_prior: KeypointPrior
    head_pose: HeadPose
    deformation_prior: DeformationPrior
    expression: Weight

    @classmethod
    def from_config(cls, config: dict) -> LossWeights:
        return cls(**{f.name: _section(_TYPES[f.type], config[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class Target:
    kind: str
    pose: bool
    params: tuple[str, ...]


@dataclass(frozen=True)
class AudioLoss:
    expression: float
    pose: float
    params: float
    velocity: float


@dataclass(frozen=True)
class Augment:
    noise: float
    gain_db: float


@dataclass(frozen=True)
class AudioTask:
    """The audio-to-motion task's target, loss weights and augmentation (training/config.py AUDIO2MOTION_DEFAULTS)."""

    target: Target
    loss: AudioLoss
    augment: Augment

    @classmethod
    def from_config(cls, config: dict) -> AudioTask:
        return cls(**{f.name: _section(_TYPES[f.type], config[f.name]) for f in fields(cls)})


class _Table:
    """A table of the config read whole: ``cls.of(config)`` is ``config[cls.KEY]`` as ``cls``."""

    KEY: ClassVar[str]

    @classmethod
    def of(cls, config: dict) -> Any:
        return _section(cls, config[cls.KEY])


@dataclass(frozen=True)
class TalkingHeadModel(_Table):
    """``model`` of the talking-head task (training/config.py DEFAULTS documents each key)."""

    KEY: ClassVar[str] = "model"
    preset: str
    num_kp: int
    overrides: dict  # free form (merged into ModelConfig, which checks it); also written out as given
    init_from: str
    init_optimizers: bool


@dataclass(frozen=True)
class AudioModel(_Table):
    """``model`` of the audio-to-motion task (training/config.py AUDIO2MOTION_DEFAULTS)."""

    KEY: ClassVar[str] = "model"
    init_from: str
    audio2motion: dict  # free form: AudioToMotionConfig fields


@dataclass(frozen=True)
class TalkingHeadData(_Table):
    """``data`` of the talking-head task; ``sources`` are the raw tables training/data.py checks."""

    KEY: ClassVar[str] = "data"
    image_size: int
    horizontal_flip: bool
    time_flip: bool
    color_jitter: float
    samples_per_epoch: int
    repeats: int
    manifest: str
    sources: tuple[dict, ...]


@dataclass(frozen=True)
class AudioData(_Table):
    """``data`` of the audio-to-motion task; the source tables are checked by training/audio_data.py."""

    KEY: ClassVar[str] = "data"
    fps: float
    cache_dir: str
    sources: tuple[dict, ...]
    val_sources: tuple[dict, ...]


@dataclass(frozen=True)
class ExpressionSettings(_Table):
    """``expression``: the expression-consistency loss's weight and its encoder phi (training/expression.py)."""

    KEY: ClassVar[str] = "expression"
    weight: float
    encoder: str
    emonet_weights: str
    emonet_code: str
    regressor_weights: str
    regressor_code: str
    regressor_steps: int
    regressor_batch: int
    regressor_size: int
    regressor_width: int
    regressor_crop: float
    regressor_lr: float
    regressor_train_images: int
    regressor_val_images: int
    regressor_domains: tuple[str, ...]


@dataclass(frozen=True)
class MotionWarmup(_Table):
    """``motion_warmup`` (training/warmup.py); ``head_pose_weight`` < 0 means ``head_pose.weight``."""

    KEY: ClassVar[str] = "motion_warmup"
    steps: int
    batch_size: int
    lr: float
    keypoints: bool
    head_pose_weight: float
    expression_weight: float
    log_every: int
    val_images: int


_TYPES = {c.__name__: c for c in (Perceptual, Gan, Equivariance, Weight, Warp, LipRegion, KeypointPrior, HeadPose,
                                  DeformationPrior, Target, AudioLoss, Augment)}


@dataclass(frozen=True)
class RunSettings:
    """A run's top-level keys and its typed tables."""

    task: str
    name: str
    seed: int
    device: str
    threads: int
    deterministic: bool
    train: TalkingHeadTrain | AudioTrain
    losses: LossWeights | None  # the talking-head task's; None for audio2motion
    audio: AudioTask | None  # the audio-to-motion task's; None for talking_head
    model: TalkingHeadModel | AudioModel
    data: TalkingHeadData | AudioData
    expression: ExpressionSettings | None  # the talking-head task's; None for audio2motion
    motion_warmup: MotionWarmup | None  # the talking-head task's; None for audio2motion

    @classmethod
    def from_config(cls, config: dict) -> RunSettings:
        """The settings of a config :func:`.config.load_config` returned (validated already)."""
        task = str(config.get("task", "talking_head"))
        audio = task == "audio2motion"
        train = _section(AudioTrain if audio else TalkingHeadTrain, config["train"])
        return cls(task=task, name=str(config["name"]), seed=int(config["seed"]), device=str(config["device"]),
                   threads=int(config["threads"]), deterministic=bool(config["deterministic"]), train=train,
                   losses=None if audio else LossWeights.from_config(config),
                   audio=AudioTask.from_config(config) if audio else None,
                   model=(AudioModel if audio else TalkingHeadModel).of(config),
                   data=(AudioData if audio else TalkingHeadData).of(config),
                   expression=None if audio else ExpressionSettings.of(config),
                   motion_warmup=None if audio else MotionWarmup.of(config))
