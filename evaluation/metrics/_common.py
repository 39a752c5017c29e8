"""Shared pieces of the metrics: the weights error, safe weight-file reading, frame conversions.

Every network-based metric takes its weights from a file the user names (or from a registry package that
ships them, located on disk without importing it). A metric never runs with random weights: when no
weights are found it raises :class:`MetricWeightsError`, whose message says which file is needed, in
which layout, and which option or package provides it.
"""
from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from anytalk_core.media.image import to_unit_frames
from anytalk_core.weights import CheckpointError, read_file

__all__ = [
    "MetricWeightsError",
    "read_state_dict",
    "package_file",
    "to_float_frames",
    "to_uint8_frames",
    "is_torchscript",
]


class MetricWeightsError(RuntimeError):
    """A network metric has no usable weights; the message names the file, its layout and the option."""


def is_torchscript(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (a zip with a ``code/`` folder), which ``torch.load`` cannot read safely."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.split("/", 2)[1:2] == ["code"] for name in z.namelist())
    except (zipfile.BadZipFile, OSError, IndexError):
        return False


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | os.PathLike, what: str, option: str) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (safetensors, or a torch pickle read with ``weights_only=True``).

    A ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and a DataParallel ``module.`` prefix are removed.
    TorchScript archives are read with ``torch.jit.load`` and only their tensors are kept. ``what`` names
    the expected content and ``option`` the command-line option, for the error message.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MetricWeightsError(f"{what}: {p} not found (given with {option})")
    if is_torchscript(p):
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise MetricWeightsError(f"{what}: {p} is a TorchScript file that cannot be loaded ({exc})") from None
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    else:
        try:
            obj, _meta = read_file(str(p))
        except CheckpointError as exc:
            raise MetricWeightsError(f"{what}: {exc} (given with {option})") from None
        for key in ("state_dict", "model", "net", "params"):
            if isinstance(obj.get(key), dict) and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
                obj = obj[key]
                break
        state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    state = _strip_prefix(state, "module.")
    if not state:
        raise MetricWeightsError(f"{what}: {p} holds no tensors (given with {option})")
    return state


def package_file(package: str, *parts: str) -> Path | None:
    """Path of a data file inside an installed package, found without importing the package.

    Some packages that ship weights import heavy or broken dependencies (``lpips`` imports torchvision,
    ``face_recognition_models`` imports ``pkg_resources``); only their files are needed.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root, *parts)
        if candidate.is_file():
            return candidate
    return None


def to_float_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Frames (N, H, W, 3) or (N, 3, H, W), uint8 or float in 0..1 -> float32 (N, 3, H, W) in 0..1."""
    t = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    return to_unit_frames(t.unsqueeze(0) if t.dim() == 3 else t)


def to_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Frames in any layout accepted by :func:`to_float_frames` -> uint8 numpy (N, H, W, 3), rounded."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
        return np.ascontiguousarray(frames)
    t = to_float_frames(frames)
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
