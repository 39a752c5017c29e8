"""Model families known to the loader: how to build one, and how to read its config off tensor shapes."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .base import TalkingHeadModel
from .config import (
    AppearanceConfig,
    Convention,
    DenseMotionConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    KeypointDetectorConfig,
    ModelConfig,
    MotionEstimatorConfig,
)

StateDict = dict[str, torch.Tensor]


@dataclass
class FamilySpec:
    """One model family: builder, default config and shape-based config inference."""

    name: str
    display_name: str
    build: Callable[..., TalkingHeadModel]
    default_config: Callable[[], ModelConfig]
    infer_config: Callable[[StateDict], ModelConfig]


FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> None:
    FAMILIES[spec.name] = spec


def _ensure_builtin_families() -> None:
    """Families that register themselves with the loader (LivePortrait) are imported on first use."""
    from .. import checkpoints  # noqa: F401  (imports every built-in family and reader)


def get_family(name: str) -> FamilySpec:
    _ensure_builtin_families()
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def build_model(config: ModelConfig, with_discriminator: bool = False) -> TalkingHeadModel:
    return get_family(config.family).build(config, with_discriminator=with_discriminator)


# ------------------------------------------------------------------------------------------------
# Shape reading helpers
# ------------------------------------------------------------------------------------------------

class ShapeError(ValueError):
    """A tensor needed to infer the configuration is missing or has an unexpected shape."""


def shape_of(state: StateDict, key: str) -> tuple[int, ...]:
    if key not in state:
        raise ShapeError(f"missing tensor {key!r}")
    return tuple(state[key].shape)


def count_indexed(state: StateDict, pattern: str) -> int:
    """Number of distinct indices matched by a regex with one group, e.g. r'enc\\.down_blocks\\.(\\d+)\\.'."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state for m in [rx.match(k)] if m})


# ------------------------------------------------------------------------------------------------
# face-vid2vid
# ------------------------------------------------------------------------------------------------

def infer_appearance(state: StateDict, prefix: str = "appearance.") -> AppearanceConfig:
    be, ic = shape_of(state, f"{prefix}first.conv.weight")[:2]
    n_down = count_indexed(state, rf"{re.escape(prefix)}down_blocks\.(\d+)\.conv\.weight$")
    last = shape_of(state, f"{prefix}down_blocks.{n_down - 1}.conv.weight")[0] if n_down else be
    cd = shape_of(state, f"{prefix}second.weight")[0]
    c = shape_of(state, f"{prefix}resblocks_3d.3dr0.conv1.weight")[0]
    n_res = count_indexed(state, rf"{re.escape(prefix)}resblocks_3d\.3dr(\d+)\.conv1\.weight$")
    if cd % c:
        raise ShapeError(f"{prefix}second.weight has {cd} channels, not a multiple of the volume's {c}")
    # The released encoders set max_features = C * D; any cap >= the last width describes the same network.
    return AppearanceConfig(image_channels=ic, block_expansion=be, max_features=max(last, cd), num_down_blocks=n_down,
                            feature_channels=c, reshape_depth=cd // c, num_resblocks=n_res)


def infer_dense_motion(state: StateDict, prefix: str = "dense_motion.", default_depth: int = 16) -> DenseMotionConfig:
    compress, feat = shape_of(state, f"{prefix}compress.weight")[:2]
    n = count_indexed(state, rf"{re.escape(prefix)}hourglass\.encoder\.down_blocks\.(\d+)\.conv\.weight$")
    be = shape_of(state, f"{prefix}hourglass.encoder.down_blocks.0.conv.weight")[0] // 2
    widths = [shape_of(state, f"{prefix}hourglass.encoder.down_blocks.{i}.conv.weight")[0] for i in range(n)]
    k1, out_filters = shape_of(state, f"{prefix}mask.weight")[:2]
    occlusion = f"{prefix}occlusion.weight" in state
    depth = shape_of(state, f"{prefix}occlusion.weight")[1] // out_filters if occlusion else default_depth
    return DenseMotionConfig(num_kp=k1 - 1, feature_channels=feat, block_expansion=be, max_features=max(widths),
                             num_blocks=n, reshape_depth=depth, compress=compress, estimate_occlusion_map=occlusion)


def infer_generator(state: StateDict, prefix: str = "generator.") -> GeneratorConfig:
    ic, volume_channels = shape_of(state, f"{prefix}third.conv.weight")[:2]
    d = f"{prefix}decoder."
    hidden, label_nc = shape_of(state, f"{d}G_middle_0.norm_0.mlp_shared.0.weight")[:2]
    oc = shape_of(state, f"{d}up_1.conv_1.weight_orig")[0]
    n_mid = count_indexed(state, rf"{re.escape(d)}G_middle_(\d+)\.conv_0\.weight_orig$")
    if f"{d}conv_img.weight" in state:
        upscale = 1
    else:
        out = shape_of(state, f"{d}conv_img.0.weight")[0]
        upscale = round((out / 3) ** 0.5)
    return GeneratorConfig(volume_channels=volume_channels, ic=ic, oc=oc, label_nc=label_nc, spade_hidden=hidden,
                           num_middle_blocks=n_mid, upscale=upscale)


def infer_discriminator(state: StateDict, prefix: str = "discriminator.") -> DiscriminatorConfig | None:
    rx = re.compile(rf"{re.escape(prefix)}discs\.([^.]+)\.down_blocks\.0\.conv\.(weight_orig|weight)$")
    keys = sorted({m.group(1) for k in state for m in [rx.match(k)] if m})
    if not keys:
        return None
    first = keys[0]
    sn = f"{prefix}discs.{first}.down_blocks.0.conv.weight_orig" in state
    w = "weight_orig" if sn else "weight"
    be, ic = shape_of(state, f"{prefix}discs.{first}.down_blocks.0.conv.{w}")[:2]
    n = count_indexed(state, rf"{re.escape(prefix)}discs\.{re.escape(first)}\.down_blocks\.(\d+)\.conv\.")
    widths = [shape_of(state, f"{prefix}discs.{first}.down_blocks.{i}.conv.{w}")[0] for i in range(n)]
    scales = tuple(float(k.replace("-", ".")) if "-" in k else int(k) for k in keys)
    return DiscriminatorConfig(image_channels=ic, scales=scales, block_expansion=be // 2, max_features=max(widths),
                               num_blocks=n, sn=sn)


def _antialias_scale(kernel_size: int) -> float:
    """The scale factor whose face-vid2vid anti-alias kernel has this size (1/m for an integer m)."""
    for m in range(2, 65):
        sigma = (m - 1) / 2
        if 2 * round(sigma * 4) + 1 == kernel_size:
            return 1 / m
    raise ShapeError(f"anti-aliasing kernel of size {kernel_size} matches no scale factor 1/m")


def infer_face_vid2vid(state: StateDict) -> ModelConfig:
    """Rebuild the full configuration of a face-vid2vid state dict (our prefixes) from its shapes."""
    p = "keypoints.predictor."
    n_kp = count_indexed(state, rf"{re.escape(p)}down_blocks\.down(\d+)\.conv\.weight$")
    kp_widths = [shape_of(state, f"{p}down_blocks.down{i}.conv.weight") for i in range(n_kp)]
    reshape_channel = shape_of(state, f"{p}conv.weight")[0]
    up0_in = shape_of(state, f"{p}up_blocks.up0.conv.weight")[1]
    num_kp = shape_of(state, "keypoints.kp.weight")[0]
    scale = _antialias_scale(shape_of(state, "keypoints.down.weight")[-1]) if "keypoints.down.weight" in state else 1.0
    keypoints = KeypointDetectorConfig(
        image_channels=kp_widths[0][1], num_kp=num_kp, block_expansion=kp_widths[0][0] // 2,
        max_features=max(w[0] for w in kp_widths), num_blocks=n_kp, reshape_channel=reshape_channel,
        reshape_depth=reshape_channel // up0_in, scale_factor=scale,
    )
    m = "motion."
    stage = tuple(shape_of(state, f"{m}conv{i}.weight")[0] for i in (2, 3, 4, 5))
    blocks = (
        count_indexed(state, rf"{m}block1\.b1_(\d+)\.conv1\.weight$"),
        1 + count_indexed(state, rf"{m}block3\.b3_(\d+)\.conv1\.weight$"),
        1 + count_indexed(state, rf"{m}block5\.b5_(\d+)\.conv1\.weight$"),
        1 + count_indexed(state, rf"{m}block7\.b7_(\d+)\.conv1\.weight$"),
    )
    be, ic = shape_of(state, f"{m}conv1.weight")[:2]
    motion = MotionEstimatorConfig(image_channels=ic, num_kp=shape_of(state, f"{m}fc_exp.weight")[0] // 3,
                                   block_expansion=be, stage_features=stage, stage_blocks=blocks,
                                   num_bins=shape_of(state, f"{m}fc_pitch.weight")[0])
    appearance = infer_appearance(state)
    dense = infer_dense_motion(state, default_depth=appearance.reshape_depth)
    for name, k in (("motion estimator", motion.num_kp), ("dense motion", dense.num_kp)):
        if k != num_kp:
            raise ShapeError(f"the keypoint detector has {num_kp} keypoints but the {name} network has {k}")
    return ModelConfig(family="face_vid2vid", num_kp=num_kp, convention=Convention.face_vid2vid(),
                       appearance=appearance, keypoints=keypoints, motion=motion, dense_motion=dense,
                       generator=infer_generator(state), discriminator=infer_discriminator(state))


def default_face_vid2vid() -> ModelConfig:
    return ModelConfig(discriminator=DiscriminatorConfig())


def _build_face_vid2vid(config: ModelConfig, with_discriminator: bool = False) -> TalkingHeadModel:
    from .face_vid2vid import FaceVid2VidModel

    return FaceVid2VidModel(config, with_discriminator=with_discriminator)


register_family(FamilySpec("face_vid2vid", "face-vid2vid (AnyTalk)", _build_face_vid2vid,
                           default_face_vid2vid, infer_face_vid2vid))
