"""Reading the configuration of the shared networks (appearance encoder, dense motion, generator) off tensor shapes."""
from __future__ import annotations

import re

from ..weights import StateDict
from .config import AppearanceConfig, DenseMotionConfig, GeneratorConfig


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
