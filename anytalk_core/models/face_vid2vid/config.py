"""face-vid2vid's configuration: the default and the one read off a state dict's tensor shapes (our prefixes)."""
from __future__ import annotations

import re

from ...weights import StateDict
from ..config import (
    Convention,
    DiscriminatorConfig,
    KeypointDetectorConfig,
    ModelConfig,
    MotionEstimatorConfig,
)
from ..shape_inference import (
    ShapeError,
    count_indexed,
    infer_appearance,
    infer_dense_motion,
    infer_generator,
    shape_of,
)


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


def default_config() -> ModelConfig:
    """The released full-size face-vid2vid with a discriminator."""
    return ModelConfig(discriminator=DiscriminatorConfig())
