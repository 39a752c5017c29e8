"""LivePortrait motion extractor: a ConvNeXt-V2 backbone with head-pose, expression, scale and keypoint heads.

One image gives the canonical keypoints ``kp`` and the motion (pitch/yaw/roll bins, translation ``t``,
expression ``exp``, ``scale``). Attribute names follow the released ``motion_extractor.pth`` without its
``detector.`` prefix (``downsample_layers``, ``stages``, ``norm``, ``fc_*``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import dataclass_from_dict

LAYER_NORM_EPS = 1e-6


@dataclass
class ConvNeXtV2Config:
    """Widths and depths of the four stages (``convnextv2_tiny``: 96..768 and 3, 3, 9, 3), K and bins."""

    image_channels: int = 3
    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (3, 3, 9, 3)
    num_kp: int = 21
    num_bins: int = 66

    def __post_init__(self) -> None:
        self.dims, self.depths = tuple(self.dims), tuple(self.depths)
        if not self.dims or len(self.dims) != len(self.depths):
            raise ValueError(f"ConvNeXtV2Config: dims {self.dims} and depths {self.depths} must be non-empty "
                             "and of equal length (one per stage)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples), as stored in ``ModelConfig.extra["motion_extractor"]``."""
        data = dataclasses.asdict(self)
        data["dims"], data["depths"] = list(self.dims), list(self.depths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConvNeXtV2Config":
        return dataclass_from_dict(cls, data)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an (B, C, H, W) tensor, written out as the reference computes it."""

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation on channels-last (B, H, W, C): ``gamma * (x * N) + beta + x``."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    """7x7 depthwise conv, LayerNorm, linear x4, exact GELU, GRN, linear back, residual add."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(out)))))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """Image (B, 3, H, W) -> dict of raw outputs (see :meth:`forward`)."""

    def __init__(self, cfg: ConvNeXtV2Config):
        super().__init__()
        self.cfg = cfg
        dims = cfg.dims
        stem = nn.Sequential(nn.Conv2d(cfg.image_channels, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList(nn.Sequential(*(Block(d) for _ in range(n))) for d, n in zip(dims, cfg.depths))
        self.norm = nn.LayerNorm(dims[-1], eps=LAYER_NORM_EPS)
        self.fc_kp = nn.Linear(dims[-1], 3 * cfg.num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_yaw = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_roll = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * cfg.num_kp)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled, normalised features (B, dims[-1])."""
        x = image
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.mean([-2, -1]))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw heads: ``pitch``/``yaw``/``roll`` logits (B, bins), ``t`` (B, 3), ``exp`` (B, 3K),
        ``scale`` (B, 1) and canonical keypoints ``kp`` (B, 3K), both flat and point-major."""
        x = self.features(image)
        return {
            "pitch": self.fc_pitch(x),
            "yaw": self.fc_yaw(x),
            "roll": self.fc_roll(x),
            "t": self.fc_t(x),
            "exp": self.fc_exp(x),
            "scale": self.fc_scale(x),
            "kp": self.fc_kp(x),
        }
