"""Canonical keypoint detector L (face-vid2vid): image -> K canonical 3D keypoints (B, K, 3)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import heatmap_to_keypoints
from .blocks import DownBlock2d, UpBlock3d
from .config import KeypointDetectorConfig


def antialias_kernel(channels: int, scale: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised Gaussian low-pass kernel (channels, 1, k, k) with sigma = (1/scale - 1) / 2."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    kernel = g.view(-1, 1) * g.view(1, -1)
    kernel = kernel / kernel.sum()
    return kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1)


class AntiAliasDownsample(nn.Module):
    """Depthwise Gaussian blur then subsampling by 1/scale; the kernel is a stored buffer ``weight``."""

    def __init__(self, channels: int, scale: float, persistent: bool = True):
        super().__init__()
        self.scale = scale
        self.channels = channels
        self.register_buffer("weight", antialias_kernel(channels, scale), persistent=persistent)

    def reset_buffers(self) -> None:
        """Recompute the kernel (for a module built on the meta device whose kernel is not stored)."""
        self.weight = antialias_kernel(self.channels, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[-1]
        pad_a = k // 2
        pad_b = pad_a - 1 if k % 2 == 0 else pad_a
        out = F.pad(x, (pad_a, pad_b, pad_a, pad_b))
        out = F.conv2d(out, self.weight, groups=x.shape[1])
        step = int(1 / self.scale)
        return out[:, :, ::step, ::step]


class KeypointHourglass(nn.Module):
    """2D encoder -> 1x1 conv -> reshape to a volume -> 3D decoder without skips."""

    def __init__(self, cfg: KeypointDetectorConfig):
        super().__init__()
        be, mf, n = cfg.block_expansion, cfg.max_features, cfg.num_blocks
        self.down_blocks = nn.Sequential()
        for i in range(n):
            cin = cfg.image_channels if i == 0 else min(mf, be * 2 ** i)
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, min(mf, be * 2 ** (i + 1))))
        self.conv = nn.Conv2d(min(mf, be * 2 ** n), cfg.reshape_channel, kernel_size=1)
        self.up_blocks = nn.Sequential()
        cin = cfg.reshape_channel // cfg.reshape_depth
        for i in range(n):
            cout = min(mf, be * 2 ** (n - i - 1))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
            cin = cout
        self.reshape_depth = cfg.reshape_depth
        self.out_filters = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        return self.up_blocks(out.view(b, c // self.reshape_depth, self.reshape_depth, h, w))


class KeypointDetector(nn.Module):
    """Soft-argmax over K 3D heatmaps of a low-passed, subsampled image."""

    def __init__(self, cfg: KeypointDetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.predictor = KeypointHourglass(cfg)
        self.kp = nn.Conv3d(self.predictor.out_filters, cfg.num_kp, kernel_size=3, padding=1)
        if cfg.scale_factor != 1:
            self.down = AntiAliasDownsample(cfg.image_channels, cfg.scale_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) -> canonical keypoints (B, K, 3), last axis (x, y, z)."""
        x = self.down(image) if self.cfg.scale_factor != 1 else image
        prediction = self.kp(self.predictor(x))
        shape = prediction.shape
        heatmap = F.softmax(prediction.view(shape[0], shape[1], -1) / self.cfg.temperature, dim=2)
        return heatmap_to_keypoints(heatmap.view(*shape))
