"""Weight files as the loader reads them: safetensors (validated header) or pickles of plain tensors only.

Every family reader and the loader in :mod:`.checkpoints` read files through :func:`read_file`; every failure
is a :class:`CheckpointError` whose one-line message names the file and what is wrong.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from . import safetensors_io
from .models.config import ModelConfig
from .safetensors_io import FileFormatError

FORMAT_NAME = "anytalk"  # __metadata__["format"] of our single-file checkpoints
PICKLE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")

StateDict = dict[str, torch.Tensor]


class CheckpointError(FileFormatError):
    """A checkpoint could not be read or does not fit the model; the message names the file."""


@dataclass
class LoadedWeights:
    """A checkpoint read into our key layout, before a model is built."""

    path: str
    family: str
    state: StateDict
    config: ModelConfig | None = None  # from metadata, when the file is ours
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the loader decided (shown to the user)


def read_safetensors(path: str) -> tuple[StateDict, dict[str, str]]:
    """All tensors and the metadata of a safetensors file (header validated before anything is allocated).

    See :mod:`.safetensors_io`: plain reads into fresh memory, every offset, size and shape checked first.
    """
    try:
        return safetensors_io.read_safetensors(path)
    except FileFormatError as exc:
        raise CheckpointError(str(exc)) from None


def read_pickle(path: str) -> object:
    """``torch.load(weights_only=True)``: plain tensors and containers only, never code."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notices about files we may refuse anyway
            try:  # memory-mapped: optimizer states and other unused entries never reach memory
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc) and "zip" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{path}: refusing to load: the pickle needs code to run to load it (only plain tensors are "
                "accepted); convert it where you trust it, or use a .safetensors file") from None
        raise CheckpointError(f"{path}: not a torch checkpoint ({short_error(exc)})") from None
    except Exception as exc:  # the unpickler raises many types on garbage (IndexError, KeyError, ...)
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt: {short_error(exc)})") from None


def short_error(exc: BaseException) -> str:
    """One line of at most 160 characters describing ``exc``."""
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def _file_head(path: str) -> bytes:
    """The first 16 bytes of an existing, non-empty file; CheckpointError otherwise."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path}: empty file")
    return head


def read_safetensors_meta(path: str) -> dict[str, str]:
    """The metadata of a ``.safetensors`` weights file, from its validated header alone (no tensor is read)."""
    if not _looks_like_safetensors(_file_head(path)):
        raise CheckpointError(f"{path}: not a safetensors file (bad header)")
    try:
        return safetensors_io.read_header(path)[1]
    except FileFormatError as exc:
        raise CheckpointError(str(exc)) from None


def read_file(path: str) -> tuple[dict, dict[str, str]]:
    """Read a weights file of either kind into (mapping, metadata)."""
    head = _file_head(path)
    if path.endswith(".safetensors") or not path.endswith(PICKLE_SUFFIXES):
        if _looks_like_safetensors(head):
            return read_safetensors(path)
        if not path.endswith(".safetensors") and (head[:2] == b"PK" or head[:1] == b"\x80"):
            obj = read_pickle(path)
            return (obj if isinstance(obj, dict) else {}), {}
        raise CheckpointError(f"{path}: not a safetensors file (bad header)")
    obj = read_pickle(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: a torch file holding a {type(obj).__name__}, not a dict of state dicts")
    return obj, {}


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= safetensors_io.MAX_HEADER_BYTES and head[8:9] == b"{"
