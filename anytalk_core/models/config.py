"""Model configuration as dataclasses, serialised as JSON into checkpoint metadata.

Defaults are the released face-vid2vid layout (``config/vox-256.yaml`` with the SPADE generator) at
256x256 with K = 15 keypoints, whose full-size weights load strictly into modules built from them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1


@dataclass
class Convention:
    """How a family turns head-pose outputs into a keypoint transform (see conformance/README.md)."""

    name: str = "face_vid2vid"
    bin_offset: float = 99.0  # degrees = 3 * E[bin] - offset
    pi: float = 3.14  # face-vid2vid converts degrees to radians with 3.14
    rotation_order: str = "xyz"  # column-vector R = R_x(pitch) R_y(yaw) R_z(roll)
    translate_z: bool = True
    uses_scale: bool = False

    @classmethod
    def face_vid2vid(cls) -> "Convention":
        return cls()

    @classmethod
    def liveportrait(cls) -> "Convention":
        return cls(name="liveportrait", bin_offset=97.5, pi=math.pi, rotation_order="zyx", translate_z=False, uses_scale=True)


@dataclass
class AppearanceConfig:
    """Appearance encoder E_a: image -> feature volume (C = feature_channels, D = reshape_depth)."""

    image_channels: int = 3
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    feature_channels: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


@dataclass
class KeypointDetectorConfig:
    """Canonical keypoint detector L (face-vid2vid)."""

    image_channels: int = 3
    num_kp: int = 15
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_channel: int = 16384
    reshape_depth: int = 16
    temperature: float = 0.1
    scale_factor: float = 0.25


@dataclass
class MotionEstimatorConfig:
    """Head-pose / expression estimator M: ResNet-50-like with 66-bin angle classifiers."""

    image_channels: int = 3
    num_kp: int = 15
    block_expansion: int = 64
    stage_features: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    stage_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)  # including the strided first block of stages 2-4
    num_bins: int = 66
    # < 1: the image is low-passed and subsampled by this factor first (as the keypoint detector's scale_factor);
    # a model trained at 64 px and continued at 128 px keeps reading pose from the image it learned on (0.5)
    scale_factor: float = 1.0


@dataclass
class DenseMotionConfig:
    """Dense motion network D: 3D hourglass predicting K+1 masks, deformation and occlusion."""

    num_kp: int = 15
    feature_channels: int = 32
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
    estimate_occlusion_map: bool = True
    kp_variance: float = 0.01


@dataclass
class GeneratorConfig:
    """Warped volume -> image: ``third``/``fourth`` convolutions then the SPADE decoder."""

    volume_channels: int = 512  # C * D of the warped volume
    ic: int = 256
    oc: int = 64
    label_nc: int = 256
    spade_hidden: int = 128
    num_middle_blocks: int = 6
    upscale: int = 1  # LivePortrait: 2 (PixelShuffle)


@dataclass
class DiscriminatorConfig:
    """Multi-scale patch discriminator (training only)."""

    image_channels: int = 3
    scales: tuple[float, ...] = (1,)
    block_expansion: int = 32
    max_features: int = 512
    num_blocks: int = 4
    sn: bool = True


@dataclass
class AudioToMotionConfig:
    """Audio-to-motion network (SPEC §6): speech features -> per-video-frame expression deltas and head pose.

    Features are ``feature_dim`` values at ``feature_rate`` per second (log-mel by default, or a speech
    encoder's hidden states); each video frame sees ``context`` feature frames either side of its centre.
    A banded transformer (each frame attends to ``radius`` frames either side) gives a bounded receptive
    field, so long audio streams in windows with exactly the same result. Outputs per frame: expression
    deltas (``num_kp`` x 3), optionally head pose (yaw, pitch, roll in degrees and translation; plus scale
    when ``with_scale``) and optionally named scalar ``params`` (e.g. the synthetic renderer's ``jaw_open``).
    """

    family: str = "face_vid2vid"
    num_kp: int = 15
    predict_pose: bool = True
    with_scale: bool = False
    params: tuple[str, ...] = ()
    features: str = "log_mel"  # log_mel | speech_encoder
    n_mels: int = 80
    encoder_path: str = ""  # speech_encoder: a local Hugging Face model folder (wav2vec 2.0 / HuBERT)
    encoder_layer: int = -1
    feature_dim: int = 80
    feature_rate: float = 100.0  # feature frames per second
    context: int = 8
    frontend_channels: int = 64
    dim: int = 128
    depth: int = 2
    heads: int = 4
    radius: int = 12  # attention reaches this many video frames either side
    ff_mult: int = 2
    dropout: float = 0.1
    position_kernel: int = 5

    def __post_init__(self) -> None:
        self.params = tuple(self.params)

    @property
    def pose_size(self) -> int:
        return (7 if self.with_scale else 6) if self.predict_pose else 0

    @property
    def output_size(self) -> int:
        return 3 * self.num_kp + self.pose_size + len(self.params)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored as JSON in checkpoint metadata."""

    family: str = "face_vid2vid"
    image_size: int = 256
    num_kp: int = 15
    convention: Convention = field(default_factory=Convention)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    keypoints: KeypointDetectorConfig = field(default_factory=KeypointDetectorConfig)
    motion: MotionEstimatorConfig = field(default_factory=MotionEstimatorConfig)
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig | None = None
    audio2motion: AudioToMotionConfig | None = None  # optional part (checkpoint prefix ``audio2motion.``)
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific settings

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["audio2motion"] is None:  # files without the audio part stay readable by earlier versions
            del out["audio2motion"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return dataclass_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) dataclass, rejecting unknown keys so typos surface."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    hints = {name: f.type for name, f in fields.items()}
    for name, value in data.items():
        target = _NESTED.get((cls.__name__, name))
        if target is not None and value is not None:
            value = dataclass_from_dict(target, value)
        elif isinstance(value, list) and "tuple" in str(hints[name]):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


_NESTED = {
    ("ModelConfig", "convention"): Convention,
    ("ModelConfig", "appearance"): AppearanceConfig,
    ("ModelConfig", "keypoints"): KeypointDetectorConfig,
    ("ModelConfig", "motion"): MotionEstimatorConfig,
    ("ModelConfig", "dense_motion"): DenseMotionConfig,
    ("ModelConfig", "generator"): GeneratorConfig,
    ("ModelConfig", "discriminator"): DiscriminatorConfig,
    ("ModelConfig", "audio2motion"): AudioToMotionConfig,
}


def tiny_config(num_kp: int = 15, with_discriminator: bool = True) -> ModelConfig:
    """A face-vid2vid configuration a few hundred times smaller than the default, for 64x64 tests and smoke runs."""
    return ModelConfig(
        image_size=64,
        num_kp=num_kp,
        appearance=AppearanceConfig(block_expansion=4, max_features=16, feature_channels=4, reshape_depth=4),
        keypoints=KeypointDetectorConfig(num_kp=num_kp, block_expansion=8, max_features=32, num_blocks=4,
                                         reshape_channel=256, reshape_depth=8),
        motion=MotionEstimatorConfig(num_kp=num_kp, block_expansion=8, stage_features=(16, 32, 64, 128)),
        dense_motion=DenseMotionConfig(num_kp=num_kp, feature_channels=4, block_expansion=4, max_features=32,
                                       num_blocks=4, reshape_depth=4, compress=2),
        generator=GeneratorConfig(volume_channels=16, ic=16, oc=4, label_nc=16, spade_hidden=8),
        discriminator=DiscriminatorConfig(block_expansion=4, max_features=32) if with_discriminator else None,
    )
