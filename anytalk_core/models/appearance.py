"""Appearance encoder E_a: source image -> 3D feature volume f_s (B, C, D, H/2^n, W/2^n)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import DownBlock2d, ResBlock3d, SameBlock2d
from .config import AppearanceConfig


class AppearanceEncoder(nn.Module):
    """2D encoder, 1x1 projection, reshape to a volume, 3D residual blocks (face-vid2vid / LivePortrait)."""

    def __init__(self, cfg: AppearanceConfig):
        super().__init__()
        self.cfg = cfg
        self.first = SameBlock2d(cfg.image_channels, cfg.block_expansion, kernel_size=3)
        widths = [min(cfg.max_features, cfg.block_expansion * 2 ** i) for i in range(cfg.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(cfg.num_down_blocks))
        self.second = nn.Conv2d(widths[-1], cfg.feature_channels * cfg.reshape_depth, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.feature_channels))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) in 0..1 -> feature volume (B, C, D, h, w)."""
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        return self.resblocks_3d(out.view(b, self.cfg.feature_channels, self.cfg.reshape_depth, h, w))
