"""Generator G: warp the source volume, project it to 2D and decode it with SPADE residual blocks."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import warp_volume
from .blocks import SameBlock2d, SPADEResBlock, full_precision_under_bf16
from .config import GeneratorConfig


class SPADEDecoder(nn.Module):
    """fc, middle SPADE blocks, two 2x nearest upsamplings with SPADE blocks, image conv, sigmoid."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        ic, oc, nc, hid = cfg.ic, cfg.oc, cfg.label_nc, cfg.spade_hidden
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(cfg.num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResBlock(2 * ic, 2 * ic, nc, hid))
        self.num_middle_blocks = cfg.num_middle_blocks
        self.up_0 = SPADEResBlock(2 * ic, ic, nc, hid)
        self.up_1 = SPADEResBlock(ic, oc, nc, hid)
        if cfg.upscale > 1:
            self.conv_img = nn.Sequential(
                nn.Conv2d(oc, 3 * cfg.upscale ** 2, 3, padding=1), nn.PixelShuffle(cfg.upscale)
            )
        else:
            self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)

    def middle(self, feature: torch.Tensor) -> torch.Tensor:
        """Low-resolution part: fc and the middle blocks (B, ic, h, w) -> (B, 2ic, h, w)."""
        x = self.fc(feature)
        for i in range(self.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        return x

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (B, ic, h, w) -> image (B, 3, 4h * upscale, 4w * upscale) in 0..1."""
        x = self.middle(feature)
        x = self.up_0(x, feature, upsample=2)
        x = self.up_1(x, feature, upsample=2)
        with full_precision_under_bf16(x):  # bf16's steps near 1 are a grey level: the image itself stays fp32
            x = F.leaky_relu(x, 0.2).to(next(self.conv_img.parameters()).dtype)
            return torch.sigmoid(self.conv_img(x))


class Generator(nn.Module):
    """Warped feature volume -> image. ``third``/``fourth`` are the 2D projection convolutions."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.third = SameBlock2d(cfg.volume_channels, cfg.ic, kernel_size=3, lrelu=True)
        self.fourth = nn.Conv2d(cfg.ic, cfg.ic, kernel_size=1)
        self.decoder = SPADEDecoder(cfg)
        # The layout of the maps (the weights keep theirs): the engine sets it; channels-last maps let oneDNN run
        # the decoder's wide-map convolutions much faster on CPUs (Engine._default_channels_last).
        self.channels_last = False

    def decoder_input(self, volume: torch.Tensor, deformation: torch.Tensor, occlusion_map: torch.Tensor | None) -> torch.Tensor:
        """Warp (B, C, D, h, w) by (B, D, h, w, 3), flatten depth, project, apply occlusion -> (B, ic, h, w)."""
        out = warp_volume(volume, deformation)
        b, c, d, h, w = out.shape
        out = out.reshape(b, c * d, h, w)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)  # every later map follows this one's layout
        out = self.fourth(self.third(out))
        if occlusion_map is not None:
            if occlusion_map.shape[2:] != out.shape[2:]:
                occlusion_map = F.interpolate(occlusion_map, size=out.shape[2:], mode="bilinear")
            out = out * occlusion_map
        return out

    def forward(self, volume: torch.Tensor, deformation: torch.Tensor, occlusion_map: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.decoder_input(volume, deformation, occlusion_map))
