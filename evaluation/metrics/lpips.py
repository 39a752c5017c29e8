"""LPIPS (Zhang et al. 2018): learned perceptual distance from ImageNet features and linear heads.

Two weight files, both named by the user (nothing is downloaded):

- the **trunk**: ImageNet AlexNet or VGG16 conv layers in torchvision's key layout (``features.N.weight``,
  ``features.N.bias``; the standard files are torchvision's ``alexnet-owt-7be5be79.pth`` and
  ``vgg16-397923af.pth``; ``classifier.*`` keys are ignored). A full ``lpips.LPIPS`` state dict
  (``net.sliceK.N.weight`` + ``lin*``) is accepted too and then also provides the heads.
- the **linear heads**: the ``lpips`` package's layout ``lin0.model.1.weight`` ... ``lin4.model.1.weight``
  (shape ``(1, C, 1, 1)``), e.g. ``lpips/weights/v0.1/alex.pth``. When the ``lpips`` wheel is installed
  (``pip install --no-deps lpips``) its heads are found on disk without importing it (it imports
  torchvision) and used by default.

The forward pass follows the ``lpips`` package (version 0.1, ``lpips=True``, ``spatial=False``): inputs in
0..1 are mapped to -1..1, shifted and scaled per channel, passed through the trunk, each tapped ReLU output
is unit-normalised over channels, squared differences are weighted by the heads and averaged over space,
and the five layers are summed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._common import MetricWeightsError, package_file, read_state_dict, to_float_frames

__all__ = ["LPIPS_NETS", "ConvTrunk", "LPIPS", "default_heads_file", "load_lpips"]

# torchvision ``features`` Sequentials: ("C", in, out, kernel, stride, padding) or ("M", kernel, stride);
# every conv is followed by a ReLU at the next index. ``taps`` are the ReLU indices LPIPS reads.
LPIPS_NETS: dict[str, dict] = {
    "alex": {
        "layers": [("C", 3, 64, 11, 4, 2), ("M", 3, 2), ("C", 64, 192, 5, 1, 2), ("M", 3, 2),
                   ("C", 192, 384, 3, 1, 1), ("C", 384, 256, 3, 1, 1), ("C", 256, 256, 3, 1, 1), ("M", 3, 2)],
        "taps": (1, 4, 7, 9, 11),
        "channels": (64, 192, 384, 256, 256),
        "torchvision": "alexnet-owt-7be5be79.pth (torchvision.models.alexnet, ImageNet)",
    },
    "vgg": {
        "layers": [("C", 3, 64, 3, 1, 1), ("C", 64, 64, 3, 1, 1), ("M", 2, 2),
                   ("C", 64, 128, 3, 1, 1), ("C", 128, 128, 3, 1, 1), ("M", 2, 2),
                   ("C", 128, 256, 3, 1, 1), ("C", 256, 256, 3, 1, 1), ("C", 256, 256, 3, 1, 1), ("M", 2, 2),
                   ("C", 256, 512, 3, 1, 1), ("C", 512, 512, 3, 1, 1), ("C", 512, 512, 3, 1, 1), ("M", 2, 2),
                   ("C", 512, 512, 3, 1, 1), ("C", 512, 512, 3, 1, 1), ("C", 512, 512, 3, 1, 1), ("M", 2, 2)],
        "taps": (3, 8, 15, 22, 29),
        "channels": (64, 128, 256, 512, 512),
        "torchvision": "vgg16-397923af.pth (torchvision.models.vgg16, ImageNet)",
    },
}

# lpips.pretrained_networks ScalingLayer: inputs in -1..1 -> (x - shift) / scale
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class ConvTrunk(nn.Module):
    """AlexNet / VGG16 conv trunk with torchvision's ``features.N`` indices; returns the tapped ReLU outputs.

    ``forward``: (N, 3, H, W) normalised input -> list of 5 tensors (N, C_k, H_k, W_k).
    """

    def __init__(self, net: str):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS network must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
        spec = LPIPS_NETS[net]
        modules: list[nn.Module] = []
        for layer in spec["layers"]:
            if layer[0] == "C":
                _, cin, cout, k, s, p = layer
                modules += [nn.Conv2d(cin, cout, k, stride=s, padding=p), nn.ReLU()]
            else:
                modules.append(nn.MaxPool2d(layer[1], stride=layer[2]))
        self.features = nn.Sequential(*modules)
        self.taps = spec["taps"]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.taps:
                outs.append(x)
                if len(outs) == len(self.taps):
                    break
        return outs


class _Head(nn.Module):
    """One linear head; ``model.1`` keeps the lpips key layout (index 0 was its dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance with a trunk and five linear heads (state dict: ``trunk.features.*``, ``lin0..4.*``).

    ``forward(generated, reference)``: frames (N, 3, H, W) float in 0..1 (or anything
    :func:`~anytalk_eval.metrics._common.to_float_frames` takes) -> (N,) distances, lower is closer.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net = net
        self.trunk = ConvTrunk(net)
        for k, c in enumerate(LPIPS_NETS[net]["channels"]):
            setattr(self, f"lin{k}", _Head(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def heads(self) -> list[nn.Conv2d]:
        return [getattr(self, f"lin{k}").model[1] for k in range(len(self.trunk.taps))]

    @torch.no_grad()
    def forward(self, generated: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> torch.Tensor:
        device = self.shift.device
        a = to_float_frames(generated).to(device)
        b = to_float_frames(reference).to(device)
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs frames of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        feats = self.trunk(((torch.cat([a, b]) * 2 - 1) - self.shift) / self.scale)
        n = a.shape[0]
        total = torch.zeros(n, device=device)
        for f, head in zip(feats, self.heads()):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((f[:n] - f[n:]).pow(2)).mean((1, 2, 3))
        return total.cpu()


# --------------------------------------------------------------------------------------------- loading

def default_heads_file(net: str, version: str = "0.1") -> Path | None:
    """The linear heads shipped in the ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``), if installed."""
    return package_file("lpips", "weights", f"v{version}", f"{net}.pth")


def _trunk_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``features.N.*`` / bare ``N.*`` / lpips ``net.sliceK.N.*`` -> ``features.N.*``."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and len(parts) == 3:
            out[key] = value
        elif parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
            out[f"features.{parts[2]}.{parts[3]}"] = value
        elif len(parts) == 2 and parts[0].isdigit():
            out[f"features.{key}"] = value
    return out


def _heads_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``lin{k}.model.1.weight`` or ``lins.{k}.model.1.weight`` -> ``lin{k}.model.1.weight``."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0].startswith("lin") and parts[0][3:].isdigit() and parts[1:] == ["model", "1", "weight"]:
            out[key] = value
        elif parts[0] == "lins" and parts[2:] == ["model", "1", "weight"]:
            out.setdefault(f"lin{parts[1]}.model.1.weight", value)
    return out


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: str | os.PathLike,
                layout: str) -> None:
    """Copy every parameter of ``module`` from ``state`` (same keys and shapes), or fail naming what differs."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise MetricWeightsError(
            f"{what}: {path} does not have the expected layout ({layout}); missing {len(missing)} keys, "
            f"e.g. {', '.join(missing[:3])}")
    bad = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items() if state[k].shape != v.shape]
    if bad:
        raise MetricWeightsError(f"{what}: {path} has tensors of the wrong shape for {layout}: {'; '.join(bad[:3])}")
    module.load_state_dict({k: state[k].float() for k in own})


def load_lpips(net: str = "alex", trunk: str | os.PathLike | None = None, heads: str | os.PathLike | None = None,
               use_defaults: bool = True, device: str | torch.device = "cpu") -> LPIPS:
    """Build LPIPS with user-named weights; raise :class:`MetricWeightsError` when any are missing.

    ``trunk``: torchvision AlexNet/VGG16 state dict (or a full lpips state dict, which also has the heads).
    ``heads``: lpips linear heads; default (``use_defaults``) the installed ``lpips`` wheel's v0.1 file.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS network must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
    layout = LPIPS_NETS[net]["torchvision"]
    if trunk is None:
        raise MetricWeightsError(
            f"LPIPS ({net}) needs ImageNet {'AlexNet' if net == 'alex' else 'VGG16'} weights, which no package "
            f"here ships: pass --lpips-trunk FILE, a torchvision state dict with keys features.N.weight "
            f"(the standard file is {layout})")
    model = LPIPS(net)
    trunk_state = read_state_dict(trunk, f"LPIPS {net} trunk", "--lpips-trunk")
    _load_exact(model.trunk, _trunk_state(trunk_state), f"LPIPS {net} trunk", trunk,
                f"torchvision {layout}, keys features.N.weight/bias")
    head_state = _heads_state(trunk_state)
    source = str(trunk)
    if heads is not None:
        head_state = _heads_state(read_state_dict(heads, f"LPIPS {net} heads", "--lpips-heads"))
        source = str(heads)
    elif not head_state and use_defaults:
        found = default_heads_file(net)
        if found is not None:
            head_state = _heads_state(read_state_dict(found, f"LPIPS {net} heads", "the lpips package"))
            source = str(found)
    if not head_state:
        raise MetricWeightsError(
            f"LPIPS ({net}) needs its linear heads: pass --lpips-heads FILE (the lpips package's "
            f"weights/v0.1/{net}.pth, keys lin0.model.1.weight ... lin4.model.1.weight) or install the lpips "
            f"wheel without its dependencies (pip install --no-deps lpips) to use its heads by default")
    heads_module = nn.ModuleDict({f"lin{k}": getattr(model, f"lin{k}") for k in range(5)})
    _load_exact(heads_module, head_state, f"LPIPS {net} heads", source,
                "lpips layout lin0.model.1.weight ... lin4.model.1.weight")
    model.weights = {"trunk": str(trunk), "heads": source}  # type: ignore[attr-defined]
    return model.to(device).eval()
