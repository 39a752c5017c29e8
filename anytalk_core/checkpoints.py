"""The one checkpoint loader: our single-file format and third-party layouts, strict and safe.

Our format is one ``.safetensors`` file whose keys carry module prefixes (``appearance.``, ``keypoints.``,
``motion.``, ``dense_motion.``, ``generator.``, ``discriminator.``, ...) and whose metadata holds
``format`` = ``anytalk``, ``format_version`` and ``config`` (the :class:`ModelConfig` as JSON, with the
family, convention and sizes) plus optional ``provenance`` JSON.

Third-party files are recognised by their keys and mapped by prefix rewriting, each by its family's reader
(``models.registry.READERS``); files are read by :mod:`.weights`, and pickles are only ever opened with
``torch.load(weights_only=True)``. Every failure is a :class:`CheckpointError` whose one-line
message names the file and what is wrong; nothing is ever partially loaded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .dicts import deep_update
from .models.base import TalkingHeadModel
from .models.config import FORMAT_VERSION, ModelConfig
from .models.registry import READERS, build_model, get_family
from .models.shape_inference import ShapeError
from .safetensors_io import read_tagged, write_tagged
from .weights import FORMAT_NAME, CheckpointError, LoadedWeights, StateDict, read_safetensors_meta, short_error


# ------------------------------------------------------------------------------------------------
# Reading: our format first, then each family's released layouts (models.registry.READERS)
# ------------------------------------------------------------------------------------------------

def read_ours(path: str, family: str, skip: Callable[[str], bool] | None = None) -> LoadedWeights | None:
    """Our single-file format (``format`` = ``anytalk`` metadata); None for any other file. Keys ``skip``
    accepts are not read (meta tensors of their shape)."""
    if os.path.isdir(path) or not path.endswith(".safetensors"):
        return None
    if read_safetensors_meta(path).get("format") != FORMAT_NAME:  # another layout: left to the family readers
        return None
    state, meta = read_tagged(path, FORMAT_NAME, "AnyTalk checkpoint", error=CheckpointError, skip=skip)
    try:
        version = int(meta.get("format_version", "0"))
        config = ModelConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: AnyTalk checkpoint with unreadable config metadata ({short_error(exc)})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer AnyTalk (format {version} > {FORMAT_VERSION}); update the pack")
    try:
        provenance = json.loads(meta.get("provenance", "{}") or "{}")
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: AnyTalk checkpoint with unreadable provenance metadata ({short_error(exc)})") from None
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{path}: AnyTalk checkpoint whose provenance metadata is not a JSON object")
    return LoadedWeights(path, config.family, state, config, provenance)


def _in_networks(names: tuple[str, ...]) -> Callable[[str], bool]:
    prefixes = tuple(f"{name}." for name in names)
    return lambda key: key.startswith(prefixes)


def read_weights(path: str | os.PathLike, family: str = "auto", defer: tuple[str, ...] = ()) -> LoadedWeights:
    """Read any supported checkpoint into our layout (no model built yet). The weights of the networks named
    in ``defer`` are not read: they are meta tensors of their shape (torch files are memory-mapped, so their
    pages are never touched either)."""
    path = os.fspath(path)
    if family != "auto":
        get_family(family)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    skip = _in_networks(defer) if defer else None
    weights = read_ours(path, family, skip)
    for reader in READERS:
        if weights is not None:
            break
        weights = reader(path, family)
    if weights is not None:
        if skip is not None:
            weights.state = {k: v.to("meta") if skip(k) else v for k, v in weights.state.items()}
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
        raise CheckpointError(f"{weights.path}: its config describes no buildable model ({short_error(exc)})") from None
    check_state_dict(weights.path, model, state)
    weights.state = {}
    deferred = {key.partition(".")[0] for key, value in state.items() if value.is_meta}
    model.load_state_dict(_adopted(state), strict=True, assign=True)
    model.unloaded_networks = set(deferred)
    _reset_derived_buffers(model, skip=deferred)
    model.provenance = weights.provenance
    model.load_notes = list(weights.notes)
    model.source_path = weights.path
    model.deferred_weights = _DeferredWeights(weights.path, weights.family, _file_stamp(weights.path), deferred)
    return model.eval()


@dataclass
class _DeferredWeights:
    """Where the networks :func:`load_model` left unread come from, to read them later (:func:`load_deferred`)."""

    path: str
    family: str
    stamp: tuple[int, int]
    networks: set[str]


def _file_stamp(path: str) -> tuple[int, int]:
    """(size, modification time) of a file, or of the newest file in a checkpoint folder."""
    paths = [os.path.join(path, name) for name in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
    stats = [os.stat(p) for p in paths if os.path.isfile(p)]
    return sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)


def _adopted(state: StateDict) -> StateDict:
    """Each tensor as a parameter needs it: already fresh float32 memory is taken as is (the file's copy was
    released), anything else is copied once; meta tensors (networks not read yet) stay meta."""
    for key in list(state):
        value = state.pop(key)
        if not value.is_meta and not _fresh_float32(value):
            value = value.to(torch.float32, copy=True) if value.is_floating_point() else value.clone()
        state[key] = value
    return state


def _reset_derived_buffers(model: torch.nn.Module, skip: set[str] = frozenset()) -> None:
    """Rebuild derived, non-persistent buffers (e.g. image-pyramid kernels) left on the meta device."""
    for name, module in model.named_modules():
        if name.partition(".")[0] in skip:
            continue
        if any(b.is_meta for b in module.buffers(recurse=False)):
            module.reset_buffers()


def _fresh_float32(t: torch.Tensor) -> bool:
    """Already in the form a parameter needs: float32 (or integer), contiguous, own 64-byte-aligned storage."""
    ok_dtype = t.dtype == torch.float32 or not t.is_floating_point()
    return ok_dtype and t.is_contiguous() and t.storage_offset() == 0 and t.data_ptr() % 64 == 0


def load_model(path: str | os.PathLike, family: str = "auto", with_discriminator: bool = False,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               config_overrides: dict | None = None, defer: tuple[str, ...] = ()) -> TalkingHeadModel:
    """Load any supported checkpoint (file or LivePortrait folder) into an eval-mode model.

    The networks named in ``defer`` (e.g. ``model.render_modules``) are checked against the file but not read:
    they stay on the meta device until :func:`load_deferred`, so a one-shot run never holds every stage's
    weights at once."""
    weights = read_weights(path, family, defer=defer)
    model = model_from_weights(weights, with_discriminator=with_discriminator, config_overrides=config_overrides)
    return model.to(device=device, dtype=dtype)


def load_deferred(model: TalkingHeadModel) -> None:
    """Read the networks :func:`load_model` deferred from the same file, on the device and in the dtype of the
    model's other weights. The file must not have changed since (CheckpointError otherwise)."""
    deferred = getattr(model, "deferred_weights", None)
    if deferred is None or not deferred.networks:
        return
    if _file_stamp(deferred.path) != deferred.stamp:
        raise CheckpointError(f"{deferred.path}: the checkpoint changed while it was in use; run again")
    others = tuple(name for name, _ in model.named_children() if name not in deferred.networks)
    state = read_weights(deferred.path, deferred.family, defer=others).state
    loaded = next((p for p in model.parameters() if not p.is_meta), None)
    for name in sorted(deferred.networks):
        network = getattr(model, name)
        part = {k[len(name) + 1:]: state.pop(k) for k in list(state) if k.startswith(f"{name}.")}
        check_state_dict(deferred.path, network, part)
        network.load_state_dict(_adopted(part), strict=True, assign=True)
        _reset_derived_buffers(network)
        if loaded is not None:
            network.to(device=loaded.device, dtype=loaded.dtype)
        model.unloaded_networks.discard(name)
    deferred.networks = set()


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def save_checkpoint(model: TalkingHeadModel, path: str | os.PathLike, provenance: dict | None = None,
                    overwrite: bool = False, include_discriminator: bool = True) -> str:
    """Write our single-file format atomically; refuses to replace an existing file unless asked."""
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise CheckpointError(f"{path}: AnyTalk checkpoints are written as .safetensors files")
    state = {k: v for k, v in model.state_dict().items() if include_discriminator or not k.startswith("discriminator.")}
    meta = {
        "format_version": str(FORMAT_VERSION),
        "family": model.config.family,
        "config": model.config.to_json(),
        "provenance": json.dumps(provenance or getattr(model, "provenance", {}) or {}, sort_keys=True),
    }
    write_tagged(path, state, FORMAT_NAME, meta, overwrite=overwrite)
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
