"""LivePortrait stitching and retargeting networks: small MLPs on flattened keypoints.

Stitching: ``[x_s, x_d]`` (6K) -> K x 3 keypoint offsets plus a 2D shift (3K + 2), applied to x_d.
Retargeting: ``[x_s, ratios]`` (3K + 3 eye ratios, or 3K + 2 lip ratios) -> K x 3 keypoint offsets.
State-dict keys are the released inner keys without the DDP prefix (``mlp.0.weight``, ``mlp.2.weight``, ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..config import dataclass_from_dict


@dataclass
class MLPConfig:
    """Linear + ReLU per hidden size, then a final Linear."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(self.hidden_sizes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples), as stored in ``ModelConfig.extra``."""
        return {"input_size": self.input_size, "hidden_sizes": list(self.hidden_sizes), "output_size": self.output_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MLPConfig":
        return dataclass_from_dict(cls, data)


# The released networks (models.yaml, stitching_retargeting_module_params) for K = 21.
STITCHING = MLPConfig(126, (128, 128, 64), 65)
RETARGET_LIP = MLPConfig(65, (128, 128, 64), 63)
RETARGET_EYE = MLPConfig(66, (256, 256, 128, 128, 64), 63)


def mlp_config_from_state(state: dict[str, torch.Tensor], prefix: str) -> MLPConfig | None:
    """Read an MLP's sizes off its ``<prefix>mlp.N.weight`` shapes; None when the prefix has no MLP."""
    rx = re.compile(rf"{re.escape(prefix)}mlp\.(\d+)\.weight$")
    layers = sorted((int(m.group(1)), tuple(v.shape)) for k, v in state.items() for m in [rx.match(k)] if m)
    if not layers:
        return None
    shapes = [s for _, s in layers]
    for i, (out_in, nxt) in enumerate(zip(shapes, shapes[1:])):
        if nxt[1] != out_in[0]:
            raise ValueError(f"{prefix}mlp: layer {layers[i + 1][0]} reads {nxt[1]} features but layer "
                             f"{layers[i][0]} gives {out_in[0]}")
    if [i for i, _ in layers] != list(range(0, 2 * len(layers), 2)):
        raise ValueError(f"{prefix}mlp: linear layers at indices {[i for i, _ in layers]}, expected 0, 2, 4, ...")
    return MLPConfig(shapes[0][1], tuple(s[0] for s in shapes[:-1]), shapes[-1][0])


class StitchingRetargetingMLP(nn.Module):
    """The released ``StitchingRetargetingNetwork``: (B, input_size) -> (B, output_size)."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        sizes = (cfg.input_size, *cfg.hidden_sizes)
        layers: list[nn.Module] = []
        for fin, fout in zip(sizes, sizes[1:]):
            layers += [nn.Linear(fin, fout), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], cfg.output_size))
        self.mlp = nn.Sequential(*layers)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class StitchingNetwork(StitchingRetargetingMLP):
    """Keeps the animated face stitched to the source's shoulders (``retarget_shoulder`` in the release)."""

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """x_s (1 or B, K, 3), x_d (B, K, 3) -> delta (B, 3K + 2): keypoint offsets, then a 2D shift."""
        b = kp_driving.shape[0]
        kp_source = kp_source.expand(b, *kp_source.shape[1:])
        return self.run(torch.cat([kp_source.reshape(b, -1), kp_driving.reshape(b, -1)], dim=1))

    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stitched driving keypoints (B, K, 3) and the delta (B, 3K + 2) that moved them."""
        delta = self(kp_source, kp_driving)
        return apply_stitching_delta(kp_driving, delta), delta


def apply_stitching_delta(kp_driving: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """x_d + delta[:3K] as (K, 3), then every keypoint's x, y shifted by delta[3K:3K+2]."""
    b, k, _ = kp_driving.shape
    out = kp_driving + delta[:, : 3 * k].reshape(b, k, 3)
    shift = torch.cat([delta[:, 3 * k: 3 * k + 2], torch.zeros_like(delta[:, :1])], dim=1)
    return out + shift.view(b, 1, 3)


class RetargetingNetwork(StitchingRetargetingMLP):
    """Eye or lip retargeting: source keypoints and target open/close ratios -> keypoint offsets."""

    def forward(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """x_s (B or 1, K, 3), ratios (B or 1, R) -> delta (B, K, 3) to add to driving keypoints."""
        k = kp_source.shape[1]
        b = max(kp_source.shape[0], ratios.shape[0])
        kp_source = kp_source.expand(b, k, 3)
        ratios = ratios.reshape(ratios.shape[0], -1).expand(b, -1)
        return self.run(torch.cat([kp_source.reshape(b, -1), ratios], dim=1)).reshape(b, k, 3)
