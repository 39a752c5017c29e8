"""Reader of LivePortrait's released weights: folders of module files (.pth or .safetensors), one of those
files, or a flattened single file; mapped by prefix onto our keys and checked per file.

Our checkpoint prefixes: ``appearance.`` (appearance_feature_extractor), ``motion.`` (motion_extractor
without ``detector.``), ``dense_motion.`` (warping_module.dense_motion_network), ``generator.third/fourth``
(warping_module), ``generator.decoder.`` (spade_generator), ``stitching.`` / ``retarget_lip.`` /
``retarget_eye.`` (stitching_retargeting_module: retarget_shoulder / retarget_mouth / retarget_eye).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ...weights import FORMAT_NAME, CheckpointError, LoadedWeights, StateDict, read_file
from ..config import ModelConfig
from ..shape_inference import ShapeError
from .config import infer_liveportrait
from .model import LivePortraitModel
from .options import FAMILY_NAMES

MODULE_FILES = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")
STITCHING_FILE = "stitching_retargeting_module"
STITCHING_GROUPS = {"retarget_shoulder": "stitching", "retarget_mouth": "retarget_lip", "retarget_eye": "retarget_eye"}
SUFFIXES = (".safetensors", ".pth")
# (LivePortrait module, its key prefix, our prefix); both lookups take the first matching row.
KEY_MAP = (
    ("appearance_feature_extractor", "", "appearance."),
    ("motion_extractor", "detector.", "motion."),
    ("motion_extractor", "", "motion."),
    ("warping_module", "dense_motion_network.", "dense_motion."),
    ("spade_generator", "", "generator.decoder."),
    ("warping_module", "", "generator."),
    ("retarget_shoulder", "", "stitching."),
    ("retarget_eye", "", "retarget_eye."),
    ("retarget_mouth", "", "retarget_lip."),
)


@dataclass
class _Source:
    """One LivePortrait module's state dict and where it was read from (for error messages)."""

    module: str  # appearance_feature_extractor, ..., retarget_shoulder / retarget_mouth / retarget_eye
    label: str  # the file (and group) it came from
    state: StateDict


def to_our_key(module: str, key: str) -> str:
    """A released LivePortrait key of one module -> our checkpoint key."""
    return next(ours + key[len(theirs):] for mod, theirs, ours in KEY_MAP if mod == module and key.startswith(theirs))


def from_our_key(key: str) -> tuple[str, str]:
    """Our checkpoint key -> (LivePortrait module, released key)."""
    for module, theirs, ours in KEY_MAP:
        if key.startswith(ours):
            return module, theirs + key[len(ours):]
    return "?", key


def _strip_ddp(state: dict) -> dict:
    """The reference loader removes the substring ``module.`` wherever it occurs in a key."""
    return {k.replace("module.", ""): v for k, v in state.items()}


def _tensor_dict(path: str, obj: object, what: str) -> StateDict:
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path}: {what} is not a state dict of tensors")
    return dict(obj)


def _split_stitching(path: str, raw: dict) -> dict[str, StateDict]:
    """A stitching file (nested .pth dict, or flat ``<group>_module.<key>`` / ``<group>.<key>``) -> groups."""
    if raw and all(isinstance(v, dict) for v in raw.values()):
        groups = {g: _tensor_dict(path, v, f"group {g!r}") for g, v in raw.items()}
    else:
        groups: dict[str, dict] = {}
        rx = re.compile(rf"^({'|'.join(STITCHING_GROUPS)})(?:_module)?\.(.+)$")
        for key, value in raw.items():
            m = rx.match(key) if isinstance(key, str) else None
            if m is None:
                raise CheckpointError(
                    f"{path}: key {key!r} is not a stitching/retargeting weight (expected keys "
                    "retarget_shoulder_module.*, retarget_mouth_module.*, retarget_eye_module.*)")
            groups.setdefault(m.group(1), {})[m.group(2)] = value
        groups = {g: _tensor_dict(path, v, f"group {g!r}") for g, v in groups.items()}
    unknown = sorted(set(groups) - set(STITCHING_GROUPS))
    if unknown or not groups:
        raise CheckpointError(f"{path}: not a LivePortrait stitching_retargeting_module (groups {sorted(groups)}; "
                                   f"expected {', '.join(STITCHING_GROUPS)})")
    return {g: _strip_ddp(v) for g, v in groups.items()}


def _find(folder: str, name: str, prefer: str | None) -> str | None:
    order = (prefer, *SUFFIXES) if prefer else SUFFIXES
    for suffix in order:
        candidate = os.path.join(folder, name + suffix)
        if os.path.isfile(candidate):
            return candidate
    return None


def _base_folder(folder: str) -> str:
    """The folder holding the four module files: the given one, a ``base_models*`` subfolder, or, from
    ``retargeting_models``, its sibling ``base_models*`` (the released directory tree)."""
    def has_modules(d: str) -> bool:
        return any(_find(d, m, None) for m in MODULE_FILES)

    if has_modules(folder):
        return folder
    parents = [folder]
    if os.path.basename(os.path.normpath(folder)) == "retargeting_models":
        parents.append(os.path.dirname(os.path.normpath(folder)))
    for parent in parents:
        subs = sorted(d for d in os.listdir(parent) if d.startswith("base_models")
                      and os.path.isdir(os.path.join(parent, d)))
        for sub in subs:
            if has_modules(os.path.join(parent, sub)):
                return os.path.join(parent, sub)
    return folder


def _stitching_file(base: str, folder: str, prefer: str | None) -> str | None:
    candidates = [base, folder, os.path.join(os.path.dirname(os.path.normpath(base)), "retargeting_models"),
                  os.path.join(folder, "retargeting_models")]
    for d in candidates:
        if os.path.isdir(d):
            found = _find(d, STITCHING_FILE, prefer)
            if found:
                return found
    return None


def _read_folder(path: str, folder: str, prefer: str | None, required: bool) -> tuple[list[_Source], str, list[str]] | None:
    base = _base_folder(folder)
    files = {m: _find(base, m, prefer) for m in MODULE_FILES}
    if not any(files.values()):
        if not required:
            return None
        raise CheckpointError(
            f"{path}: no LivePortrait module files here (expected {', '.join(m + '.pth|.safetensors' for m in MODULE_FILES)})")
    missing = [m for m, f in files.items() if f is None]
    if missing:
        raise CheckpointError(
            f"{base}: LivePortrait folder without {', '.join(missing)} (.pth or .safetensors); it needs "
            f"{', '.join(MODULE_FILES)}, and optionally {STITCHING_FILE}")
    sources = [_Source(m, f, _tensor_dict(f, read_file(f)[0], "the file")) for m, f in files.items()]
    notes = [f"LivePortrait modules from {base}: " + ", ".join(os.path.basename(f) for f in files.values())]
    stitching = _stitching_file(base, folder, prefer)
    if stitching:
        raw = read_file(stitching)[0]
        prefixed = any(isinstance(v, dict) and any(str(k).startswith("module.") for k in v) for v in raw.values())
        sources += [_Source(g, f"{stitching} [{g}]", s) for g, s in _split_stitching(stitching, raw).items()]
        notes.append(f"stitching/retargeting from {os.path.basename(stitching)}"
                     + (" (DDP 'module.' prefixes removed)" if prefixed else ""))
    else:
        notes.append(f"no {STITCHING_FILE} file: stitching and eye/lip retargeting are off")
    return sources, base, notes


def _read_flat(path: str, raw: dict) -> list[_Source] | None:
    """A single file holding all modules: ``<module>.<key>`` (or a dict of module state dicts)."""
    if all(isinstance(raw.get(m), dict) for m in MODULE_FILES):
        modules = {k: v for k, v in raw.items()}
    elif any(isinstance(k, str) and k.split(".", 1)[0] in MODULE_FILES for k in raw):
        modules: dict[str, dict] = {}
        for key, value in raw.items():
            head, _, rest = key.partition(".")
            if head in MODULE_FILES or head == STITCHING_FILE:
                modules.setdefault(head, {})[rest] = value
            else:
                modules.setdefault(STITCHING_FILE, {})[key] = value
    else:
        return None
    missing = [m for m in MODULE_FILES if m not in modules]
    if missing:
        raise CheckpointError(f"{path}: flattened LivePortrait checkpoint without the {', '.join(missing)} weights")
    unknown = sorted(set(modules) - {*MODULE_FILES, STITCHING_FILE})
    if unknown:
        raise CheckpointError(f"{path}: unexpected groups {unknown} in a flattened LivePortrait checkpoint")
    sources = [_Source(m, f"{path} [{m}]", _tensor_dict(path, modules[m], m)) for m in MODULE_FILES]
    if STITCHING_FILE in modules:
        sources += [_Source(g, f"{path} [{g}]", s)
                    for g, s in _split_stitching(path, modules[STITCHING_FILE]).items()]
    return sources


def _choose_variant(family: str, names: list[str]) -> tuple[str, str]:
    if family in ("liveportrait_human", "liveportrait_animal"):
        variant = family.split("_")[1]
        return variant, f"LivePortrait {variant} variant (requested)"
    hit = next((n for n in names if "animal" in n.lower()), None)
    if hit:
        return "animal", (f"LivePortrait animal variant: the name {hit!r} contains 'animal' "
                          "(load with family 'liveportrait_human' to override)")
    return "human", ("LivePortrait human variant by default (the name has no 'animal'; "
                     "load with family 'liveportrait_animal' for animal weights)")


def _name_files(message: str, labels: dict[str, str]) -> str:
    """Rewrite our keys in a message as ``[file: released key]``."""
    def describe(match: re.Match) -> str:
        module, theirs = from_our_key(match.group(1))
        return f"[{labels.get(module, module)}: {theirs}]"

    ours = "|".join(re.escape(p) for p in sorted({row[2] for row in KEY_MAP}))
    return re.sub(rf"'?\b((?:{ours})[\w.]+)'?", describe, message)


def _variant_names(path: str, base: str) -> list[str]:
    """The names that may say 'animal': the path given, the weights folder, and above a generic subfolder."""
    names = [os.path.basename(os.path.normpath(path)), os.path.basename(os.path.normpath(base))]
    if re.match(r"(base_models|retargeting_models)", names[-1]):
        names.append(os.path.basename(os.path.dirname(os.path.normpath(base))))
    return names


def _check(path: str, sources: list[_Source], state: StateDict, config: ModelConfig) -> None:
    """Strict key and shape check per module file, so that an error names the file at fault."""
    # A meta-device model allocates nothing but builds slowly; small models are cheaper built for real.
    device = "meta" if sum(v.numel() for v in state.values()) > 10_000_000 else "cpu"
    with torch.device(device):
        expected = {k: tuple(v.shape) for k, v in LivePortraitModel(config).state_dict().items()}
    labels = {s.module: s.label for s in sources}
    problems: dict[str, list[str]] = {}
    for key, shape in expected.items():
        module, theirs = from_our_key(key)
        if key not in state:
            problems.setdefault(labels.get(module, module), []).append(f"missing {theirs}")
        elif tuple(state[key].shape) != shape:
            problems.setdefault(labels.get(module, path), []).append(
                f"{theirs} has shape {tuple(state[key].shape)}, expected {shape}")
    for key in state:
        if key not in expected:
            module, theirs = from_our_key(key)
            problems.setdefault(labels.get(module, path), []).append(f"unexpected {theirs}")
    if problems:
        label, items = next(iter(problems.items()))
        shown = "; ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
        others = f" (and problems in {len(problems) - 1} other file(s))" if len(problems) > 1 else ""
        raise CheckpointError(f"{label}: does not fit the LivePortrait network the other tensors describe "
                                   f"({shown}){others}; is it a LivePortrait file of this model?")


def read_liveportrait(path: str, family: str) -> LoadedWeights | None:
    """Reader for LivePortrait folders, one of their module files, or a flattened single file."""
    if family not in ("auto", *FAMILY_NAMES):
        return None
    required = family != "auto"
    stem, suffix = os.path.splitext(os.path.basename(os.path.normpath(path)))
    if os.path.isdir(path):
        found = _read_folder(path, path, None, required)
    elif stem in (*MODULE_FILES, STITCHING_FILE) and suffix in SUFFIXES:
        found = _read_folder(path, os.path.dirname(os.path.abspath(path)), suffix, True)
    else:
        raw, meta = read_file(path)
        sources = None if meta.get("format") == FORMAT_NAME else _read_flat(path, raw)
        if sources is None:
            if required:
                raise CheckpointError(
                    f"{path}: not a LivePortrait checkpoint (expected a folder with {', '.join(MODULE_FILES)}, "
                    "one of those files, or a single file with keys prefixed by those module names)")
            return None
        found = (sources, os.path.dirname(os.path.abspath(path)),
                 [f"LivePortrait modules from the single file {os.path.basename(path)}"])
    if found is None:
        return None
    sources, base, notes = found
    variant, note = _choose_variant(family, _variant_names(path, base))
    state: StateDict = {}
    for source in sources:
        for key, value in source.state.items():
            state[to_our_key(source.module, key)] = value
    try:
        config = infer_liveportrait(state, variant)
    except ShapeError as exc:
        labels = {s.module: s.label for s in sources}
        raise CheckpointError(
            f"{path}: not a complete LivePortrait checkpoint ({_name_files(str(exc), labels)})") from None
    _check(path, sources, state, config)
    return LoadedWeights(path, f"liveportrait_{variant}", state, config=config, notes=[note, *notes])
