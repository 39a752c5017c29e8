"""Multi-scale patch discriminator (training only), spectral-normalised as released."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import SpectralNormConv2d
from .config import DiscriminatorConfig
from .keypoint_detector import AntiAliasDownsample


def scale_key(scale: float) -> str:
    """State-dict key of a scale: 1 -> '1', 0.5 -> '0-5' (as the released trainer names them)."""
    value = int(scale) if float(scale).is_integer() else scale
    return str(value).replace(".", "-")


class DiscriminatorBlock(nn.Module):
    """4x4 conv without padding, optional affine instance norm, LeakyReLU 0.2, optional 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool, pool: bool, sn: bool):
        super().__init__()
        self.conv = SpectralNormConv2d(in_features, out_features, 4) if sn else nn.Conv2d(in_features, out_features, 4)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, (2, 2)) if self.pool else out


class PatchDiscriminator(nn.Module):
    """One scale: returns the block feature maps and the 1-channel patch prediction map."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        be, mf, n = cfg.block_expansion, cfg.max_features, cfg.num_blocks
        self.down_blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.image_channels if i == 0 else min(mf, be * 2 ** i), min(mf, be * 2 ** (i + 1)),
                               norm=i != 0, pool=i != n - 1, sn=cfg.sn)
            for i in range(n)
        )
        last = min(mf, be * 2 ** n)
        self.conv = SpectralNormConv2d(last, 1, 1) if cfg.sn else nn.Conv2d(last, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        for block in self.down_blocks:
            x = block(x)
            features.append(x)
        return features, self.conv(x)


class MultiScaleDiscriminator(nn.Module):
    """A patch discriminator per image scale; scale s sees the image anti-aliased and resized by s."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.discs = nn.ModuleDict({scale_key(s): PatchDiscriminator(cfg) for s in cfg.scales})
        # The pyramid kernels are derived, not learned: kept out of checkpoints.
        self.pyramid = nn.ModuleDict(
            {scale_key(s): AntiAliasDownsample(cfg.image_channels, s, persistent=False) for s in cfg.scales if s != 1}
        )

    def forward(self, image: torch.Tensor) -> dict[str, tuple[list[torch.Tensor], torch.Tensor]]:
        out = {}
        for key, disc in self.discs.items():
            x = self.pyramid[key](image) if key in self.pyramid else image
            out[key] = disc(x)
        return out
