"""The one checkpoint loader: our single-file format and third-party layouts, strict and safe.

Our format is one ``.safetensors`` file whose keys carry module prefixes (``appearance.``, ``keypoints.``,
``motion.``, ``dense_motion.``, ``generator.``, ``discriminator.``, ...) and whose metadata holds
``format`` = ``anytalk``, ``format_version`` and ``config`` (the :class:`ModelConfig` as JSON, with the
family, convention and sizes) plus optional ``provenance`` JSON.

Third-party files are recognised by their keys and mapped by prefix rewriting; pickles are only ever
opened with ``torch.load(weights_only=True)``. Every failure is a :class:`CheckpointError` whose one-line
message names the file and what is wrong; nothing is ever partially loaded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import safetensors_io
from .dicts import deep_update
from .io_utils import atomic_output
from .models.base import TalkingHeadModel
from .models.config import FORMAT_VERSION, ModelConfig
from .models.registry import ShapeError, StateDict, build_model, get_family
from .safetensors_io import FileFormatError

FORMAT_NAME = "anytalk"
PICKLE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")


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


# ------------------------------------------------------------------------------------------------
# Reading raw files
# ------------------------------------------------------------------------------------------------

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
        raise CheckpointError(f"{path}: not a torch checkpoint ({_short(exc)})") from None
    except Exception as exc:  # the unpickler raises many types on garbage (IndexError, KeyError, ...)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt: {_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def read_file(path: str) -> tuple[dict, dict[str, str]]:
    """Read a weights file of either kind into (mapping, metadata)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path}: empty file")
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


# ------------------------------------------------------------------------------------------------
# Layout recognition: each reader maps a file (or folder) into our key layout, or returns None
# ------------------------------------------------------------------------------------------------

Reader = Callable[[str, str], "LoadedWeights | None"]  # (path, requested family) -> weights or None
READERS: list[Reader] = []


def register_reader(reader: Reader) -> None:
    """Add a layout reader (model families call this when their module is imported)."""
    READERS.append(reader)


FACE_VID2VID_MODULES = ("generator", "kp_detector", "he_estimator")
APPEARANCE_KEYS = ("first.", "down_blocks.", "second.", "resblocks_3d.")


def map_face_vid2vid(modules: dict[str, StateDict]) -> StateDict:
    """face-vid2vid state dicts {generator, kp_detector, he_estimator[, discriminator]} -> our flat keys."""
    out: StateDict = {}
    for key, value in modules["generator"].items():
        if key.startswith("dense_motion_network."):
            out["dense_motion." + key[len("dense_motion_network."):]] = value
        elif key.startswith(APPEARANCE_KEYS):
            out["appearance." + key] = value
        else:
            out["generator." + key] = value
    for key, value in modules["kp_detector"].items():
        out["keypoints." + key] = value
    for key, value in modules["he_estimator"].items():
        out["motion." + key] = value
    for key, value in modules.get("discriminator", {}).items():
        out["discriminator." + key] = value
    return out


def _strip_module_prefix(state: dict) -> dict:
    """Remove a DataParallel ``module.`` prefix when every key has it."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def read_ours(path: str, family: str) -> LoadedWeights | None:
    if os.path.isdir(path) or not path.endswith(".safetensors"):
        return None
    state, meta = read_file(path)
    if meta.get("format") != FORMAT_NAME:
        return None
    try:
        version = int(meta.get("format_version", "0"))
        config = ModelConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: AnyTalk checkpoint with unreadable config metadata ({_short(exc)})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer AnyTalk (format {version} > {FORMAT_VERSION}); update the pack")
    try:
        provenance = json.loads(meta.get("provenance", "{}") or "{}")
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: AnyTalk checkpoint with unreadable provenance metadata ({_short(exc)})") from None
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{path}: AnyTalk checkpoint whose provenance metadata is not a JSON object")
    return LoadedWeights(path, config.family, state, config, provenance)


def read_face_vid2vid(path: str, family: str) -> LoadedWeights | None:
    if os.path.isdir(path) or family not in ("auto", "face_vid2vid"):
        return None
    raw, meta = read_file(path)
    if meta.get("format") == FORMAT_NAME:
        return None
    if all(isinstance(raw.get(m), dict) for m in FACE_VID2VID_MODULES):  # the released .pth.tar dict
        modules = {m: _strip_module_prefix(raw[m]) for m in (*FACE_VID2VID_MODULES, "discriminator") if isinstance(raw.get(m), dict)}
    elif any(isinstance(k, str) and k.startswith("kp_detector.") for k in raw):  # flattened twin
        modules = {}
        for key, value in raw.items():
            head, _, rest = key.partition(".")
            modules.setdefault(head, {})[rest] = value
        if not all(m in modules for m in FACE_VID2VID_MODULES):
            missing = [m for m in FACE_VID2VID_MODULES if m not in modules]
            raise CheckpointError(f"{path}: face-vid2vid checkpoint without the {', '.join(missing)} weights")
    else:
        return None
    for name, module in modules.items():
        if not all(isinstance(v, torch.Tensor) for v in module.values()):
            raise CheckpointError(f"{path}: '{name}' is not a state dict of tensors")
    return LoadedWeights(path, "face_vid2vid", map_face_vid2vid(modules),
                         notes=["face-vid2vid checkpoint (released layout)"])


register_reader(read_ours)
register_reader(read_face_vid2vid)


def read_weights(path: str | os.PathLike, family: str = "auto") -> LoadedWeights:
    """Read any supported checkpoint into our layout (no model built yet)."""
    path = os.fspath(path)
    if family != "auto":
        get_family(family)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    for reader in READERS:
        weights = reader(path, family)
        if weights is not None:
            return _check_requested_family(weights, family)
    raise CheckpointError(
        f"{path}: not a recognised checkpoint (expected an AnyTalk .safetensors, a face-vid2vid .pth.tar with "
        "generator/kp_detector/he_estimator, or a LivePortrait folder or module file)")


def _check_requested_family(weights: LoadedWeights, family: str) -> LoadedWeights:
    """Refuse a file of another family; a ``<family>_<variant>`` request sets the variant of our own files.

    Families name variants ``family_variant`` (e.g. ``liveportrait_animal``): both variants share keys,
    so the user's request decides which pipeline a stored config uses.
    """
    if family in ("auto", weights.family):
        return weights
    base = weights.config.family if weights.config is not None else weights.family
    if family == base or weights.family.startswith(family + "_"):
        return weights
    if family.startswith(base + "_") and weights.config is not None:
        variant = family[len(base) + 1:]
        weights.config.extra["variant"] = variant
        weights.notes.append(f"{variant} variant (requested)")
        return weights
    raise CheckpointError(f"{weights.path}: holds a {weights.family} model, not the requested {family}")


# ------------------------------------------------------------------------------------------------
# Building and strict loading
# ------------------------------------------------------------------------------------------------

def check_state_dict(path: str, model: torch.nn.Module, state: StateDict) -> None:
    """Raise one CheckpointError listing missing, unexpected and mis-shaped tensors (if any)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{path}: does not fit the model ({'; '.join(problems)})")


def model_from_weights(weights: LoadedWeights, with_discriminator: bool = False,
                       config_overrides: dict | None = None) -> TalkingHeadModel:
    """Build the model the weights describe and load them strictly (eval mode, float32, CPU)."""
    spec = get_family(weights.family)
    config = weights.config
    if config is None:
        try:
            config = spec.infer_config(weights.state)
        except ShapeError as exc:
            raise CheckpointError(f"{weights.path}: not a complete {spec.display_name} checkpoint ({exc})") from None
    if config_overrides:
        merged = config.to_dict()
        deep_update(merged, config_overrides)
        config = ModelConfig.from_dict(merged)
    state = {k: v for k, v in weights.state.items() if with_discriminator or not k.startswith("discriminator.")}
    # Build on the meta device and adopt the tensors (assign), each copied to fresh (aligned) memory as the
    # file's copy is released: the weights are held once, and results do not depend on how a file laid
    # them out. This consumes ``weights.state``.
    try:
        with torch.device("meta"):
            model = build_model(config, with_discriminator=with_discriminator)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError, OverflowError,
            RuntimeError) as exc:  # a config from a file's metadata that describes no buildable model
        raise CheckpointError(f"{weights.path}: its config describes no buildable model ({_short(exc)})") from None
    check_state_dict(weights.path, model, state)
    weights.state = {}
    for key in list(state):
        value = state.pop(key)
        if not _fresh_float32(value):
            value = value.to(torch.float32, copy=True) if value.is_floating_point() else value.clone()
        state[key] = value
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # derived, non-persistent buffers (e.g. image-pyramid kernels)
        if any(b.is_meta for b in module.buffers(recurse=False)):
            module.reset_buffers()
    model.provenance = weights.provenance
    model.load_notes = list(weights.notes)
    model.source_path = weights.path
    return model.eval()


def _fresh_float32(t: torch.Tensor) -> bool:
    """Already in the form a parameter needs: float32 (or integer), contiguous, own 64-byte-aligned storage."""
    ok_dtype = t.dtype == torch.float32 or not t.is_floating_point()
    return ok_dtype and t.is_contiguous() and t.storage_offset() == 0 and t.data_ptr() % 64 == 0


def load_model(path: str | os.PathLike, family: str = "auto", with_discriminator: bool = False,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               config_overrides: dict | None = None) -> TalkingHeadModel:
    """Load any supported checkpoint (file or LivePortrait folder) into an eval-mode model."""
    weights = read_weights(path, family)
    model = model_from_weights(weights, with_discriminator=with_discriminator, config_overrides=config_overrides)
    return model.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def save_checkpoint(model: TalkingHeadModel, path: str | os.PathLike, provenance: dict | None = None,
                    overwrite: bool = False, include_discriminator: bool = True) -> str:
    """Write our single-file format atomically; refuses to replace an existing file unless asked."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise CheckpointError(f"{path}: AnyTalk checkpoints are written as .safetensors files")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if include_discriminator or not k.startswith("discriminator.")}
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "family": model.config.family,
        "config": model.config.to_json(),
        "provenance": json.dumps(provenance or getattr(model, "provenance", {}) or {}, sort_keys=True),
    }
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(state, tmp, metadata=meta)
    return path


def convert(src: str | os.PathLike, dst: str | os.PathLike, family: str = "auto", overwrite: bool = False) -> str:
    """Read any supported checkpoint and write it in our format (never over ``dst`` unless asked)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(dst) and not overwrite:
        raise CheckpointError(f"{dst}: already exists; choose another output name (nothing was written)")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise CheckpointError(f"{dst}: the output would replace the input")
    weights = read_weights(src, family)
    has_discriminator = any(k.startswith("discriminator.") for k in weights.state)
    model = model_from_weights(weights, with_discriminator=has_discriminator)
    provenance = {"converted_from": os.path.basename(src), "source_family": weights.family, **weights.provenance}
    return save_checkpoint(model, dst, provenance=provenance, overwrite=overwrite)


from .models import liveportrait as _liveportrait  # noqa: E402,F401  (registers the LivePortrait family and reader)
