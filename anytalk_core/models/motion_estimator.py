"""Motion estimator M (face-vid2vid head-pose/expression network): image -> pose bins, t, expression."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MotionEstimatorConfig
from .keypoint_detector import AntiAliasDownsample


class ResBottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck with BN; a strided block projects its skip with 1x1 + BN."""

    def __init__(self, features: int, stride: int):
        super().__init__()
        mid = features // 4
        self.conv1 = nn.Conv2d(features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(features, features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class MotionEstimator(nn.Module):
    """Returns a dict of ``yaw``/``pitch``/``roll`` logits (B, bins), ``t`` (B, 3), ``exp`` (B, 3K).

    The released network names its yaw head ``fc_roll`` and its roll head ``fc_yaw``; the layer names are
    kept for the weights and the outputs follow the returned semantics.
    """

    def __init__(self, cfg: MotionEstimatorConfig):
        super().__init__()
        self.cfg = cfg
        s1, s2, s3, s4 = cfg.stage_features
        n1, n2, n3, n4 = cfg.stage_blocks
        self.conv1 = nn.Conv2d(cfg.image_channels, cfg.block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(cfg.block_expansion, affine=True)
        self.conv2 = nn.Conv2d(cfg.block_expansion, s1, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(s1, affine=True)
        self.block1 = self._stage("b1", s1, n1)
        self.conv3 = nn.Conv2d(s1, s2, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(s2, affine=True)
        self.block2 = ResBottleneck(s2, stride=2)
        self.block3 = self._stage("b3", s2, n2 - 1)
        self.conv4 = nn.Conv2d(s2, s3, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(s3, affine=True)
        self.block4 = ResBottleneck(s3, stride=2)
        self.block5 = self._stage("b5", s3, n3 - 1)
        self.conv5 = nn.Conv2d(s3, s4, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(s4, affine=True)
        self.block6 = ResBottleneck(s4, stride=2)
        self.block7 = self._stage("b7", s4, n4 - 1)
        self.fc_roll = nn.Linear(s4, cfg.num_bins)
        self.fc_pitch = nn.Linear(s4, cfg.num_bins)
        self.fc_yaw = nn.Linear(s4, cfg.num_bins)
        self.fc_t = nn.Linear(s4, 3)
        self.fc_exp = nn.Linear(s4, 3 * cfg.num_kp)
        if cfg.scale_factor != 1:  # a fixed kernel derived from the config: not stored in checkpoints
            self.down = AntiAliasDownsample(cfg.image_channels, cfg.scale_factor, persistent=False)

    @staticmethod
    def _stage(prefix: str, features: int, count: int) -> nn.Sequential:
        stage = nn.Sequential()
        for i in range(count):
            stage.add_module(f"{prefix}_{i}", ResBottleneck(features, stride=1))
        return stage

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.scale_factor != 1:
            image = self.down(image)
        out = F.max_pool2d(F.relu(self.norm1(self.conv1(image))), kernel_size=3, stride=2, padding=1)
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return {
            "yaw": self.fc_roll(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_yaw(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }
