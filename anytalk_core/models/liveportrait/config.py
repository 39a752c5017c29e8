"""LivePortrait's configuration: the released default and the one read off tensor shapes (our prefixes).

Network sizes not held by :class:`ModelConfig`'s typed fields live in ``config.extra``: ``variant``
("human" / "animal"), ``motion_extractor`` (:class:`ConvNeXtV2Config`) and the three MLP configs.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ...weights import StateDict
from ..config import (
    AppearanceConfig,
    Convention,
    DenseMotionConfig,
    GeneratorConfig,
    KeypointDetectorConfig,
    ModelConfig,
    MotionEstimatorConfig,
)
from ..shape_inference import ShapeError, count_indexed, infer_appearance, infer_dense_motion, infer_generator, shape_of
from .convnextv2 import ConvNeXtV2Config
from .options import FAMILY, check_variant
from .stitching import RETARGET_EYE, RETARGET_LIP, STITCHING, MLPConfig, mlp_config_from_state

MLP_NAMES = ("stitching", "retarget_eye", "retarget_lip")


def make_config(appearance: AppearanceConfig, motion: ConvNeXtV2Config, dense_motion: DenseMotionConfig,
                generator: GeneratorConfig, mlps: dict[str, MLPConfig | None], variant: str = "human",
                image_size: int = 256) -> ModelConfig:
    """A LivePortrait ModelConfig; ``keypoints`` and ``motion`` keep their (unused) face-vid2vid defaults."""
    return ModelConfig(
        family=FAMILY, image_size=image_size, num_kp=motion.num_kp, convention=Convention.liveportrait(),
        appearance=appearance, keypoints=KeypointDetectorConfig(), motion=MotionEstimatorConfig(),
        dense_motion=dense_motion, generator=generator, discriminator=None,
        extra={"variant": check_variant(variant), "motion_extractor": motion.to_dict(),
               **{name: (cfg.to_dict() if cfg is not None else None) for name, cfg in mlps.items()}},
    )


def default_config(variant: str = "human") -> ModelConfig:
    """The released full-size LivePortrait (``src/config/models.yaml``), 256x256 in, 512x512 out."""
    return make_config(
        appearance=AppearanceConfig(image_channels=3, block_expansion=64, max_features=512, num_down_blocks=2,
                                    feature_channels=32, reshape_depth=16, num_resblocks=6),
        motion=ConvNeXtV2Config(image_channels=3, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), num_kp=21,
                                num_bins=66),
        dense_motion=DenseMotionConfig(num_kp=21, feature_channels=32, block_expansion=32, max_features=1024,
                                       num_blocks=5, reshape_depth=16, compress=4, estimate_occlusion_map=True),
        generator=GeneratorConfig(volume_channels=512, ic=256, oc=64, label_nc=256, spade_hidden=128,
                                  num_middle_blocks=6, upscale=2),
        mlps={"stitching": STITCHING, "retarget_eye": RETARGET_EYE, "retarget_lip": RETARGET_LIP},
        variant=variant,
    )


def motion_extractor_config(config: ModelConfig) -> ConvNeXtV2Config:
    data = config.extra.get("motion_extractor")
    return ConvNeXtV2Config(num_kp=config.num_kp) if data is None else ConvNeXtV2Config.from_dict(data)


def mlp_config(config: ModelConfig, name: str) -> MLPConfig | None:
    data = config.extra.get(name)
    return None if data is None else MLPConfig.from_dict(data)


def infer_convnext(state: StateDict, prefix: str = "motion.") -> ConvNeXtV2Config:
    p = re.escape(prefix)
    n = count_indexed(state, rf"{p}downsample_layers\.(\d+)\.")
    stem = shape_of(state, f"{prefix}downsample_layers.0.0.weight")
    dims = [stem[0]] + [shape_of(state, f"{prefix}downsample_layers.{i}.1.weight")[0] for i in range(1, n)]
    depths = [count_indexed(state, rf"{p}stages\.{i}\.(\d+)\.dwconv\.weight$") for i in range(n)]
    kp3 = shape_of(state, f"{prefix}fc_kp.weight")[0]
    if kp3 % 3:
        raise ShapeError(f"{prefix}fc_kp.weight gives {kp3} outputs, not 3 per keypoint")
    return ConvNeXtV2Config(image_channels=stem[1], dims=tuple(dims), depths=tuple(depths), num_kp=kp3 // 3,
                            num_bins=shape_of(state, f"{prefix}fc_pitch.weight")[0])


def infer_liveportrait(state: StateDict, variant: str = "human") -> ModelConfig:
    """Rebuild a LivePortrait configuration (our prefixes) from tensor shapes; stitching MLPs optional."""
    appearance = infer_appearance(state, "appearance.")
    volume = shape_of(state, "appearance.second.weight")[0]
    if volume >= appearance.max_features:  # LivePortrait's `second` outputs exactly max_features channels
        appearance = replace(appearance, max_features=volume)
    motion = infer_convnext(state)
    dense = infer_dense_motion(state, "dense_motion.", default_depth=appearance.reshape_depth)
    generator = infer_generator(state, "generator.")
    mlps = {}
    for name in MLP_NAMES:
        try:
            mlps[name] = mlp_config_from_state(state, f"{name}.")
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
    k = motion.num_kp
    hourglass_in = shape_of(state, "dense_motion.hourglass.encoder.down_blocks.0.conv.weight")[1]
    checks = [
        (shape_of(state, "motion.fc_exp.weight")[0] == 3 * k,
         f"motion.fc_exp.weight gives {shape_of(state, 'motion.fc_exp.weight')[0]} expression values for {k} keypoints"),
        (dense.num_kp == k, f"dense_motion.mask.weight is for {dense.num_kp} keypoints, the motion extractor has {k}"),
        (hourglass_in == (k + 1) * (dense.compress + 1),
         f"dense_motion.hourglass.encoder.down_blocks.0.conv.weight reads {hourglass_in} channels, but "
         f"dense_motion.compress.weight gives {dense.compress} per keypoint: {(k + 1) * (dense.compress + 1)} "
         f"for {k} keypoints"),
        (dense.feature_channels == appearance.feature_channels,
         f"dense_motion.compress.weight reads {dense.feature_channels} channels, the appearance volume has "
         f"{appearance.feature_channels} (appearance.resblocks_3d.3dr0.conv1.weight)"),
        (dense.reshape_depth == appearance.reshape_depth,
         f"dense_motion.occlusion.weight is for depth {dense.reshape_depth}, the appearance volume has depth "
         f"{appearance.reshape_depth}"),
        (generator.volume_channels == volume,
         f"generator.third.conv.weight reads {generator.volume_channels} channels, the appearance volume has "
         f"{volume} (appearance.second.weight)"),
    ]
    sizes = {"stitching": (6 * k, 3 * k + 2), "retarget_eye": (None, 3 * k), "retarget_lip": (None, 3 * k)}
    for name, cfg in mlps.items():
        if cfg is None:
            continue
        fin, fout = sizes[name]
        checks.append((cfg.output_size == fout and (cfg.input_size == fin if fin else cfg.input_size > 3 * k),
                       f"{name}.mlp maps {cfg.input_size} -> {cfg.output_size} features, which does not fit "
                       f"{k} keypoints"))
    for ok, message in checks:
        if not ok:
            raise ShapeError(message)
    return make_config(appearance, motion, dense, generator, mlps, variant=variant)
