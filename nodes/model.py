"""AnyTalk Load Model: a checkpoint file or LivePortrait folder from ComfyUI's model folders -> ANYTALK_MODEL."""
from __future__ import annotations

import os
from pathlib import Path

from ..anytalk_core.checkpoints import CheckpointError, load_model
from ..anytalk_core.engine import PRECISION_CHOICES
from . import _comfy
from ._files import file_signature
from ._objects import CATEGORY, AnyTalkError, AnyTalkModel

#: Family choices shown to the artist -> anytalk_core.checkpoints.load_model's family argument.
FAMILIES = {
    "auto": "auto",
    "face-vid2vid": "face_vid2vid",
    "LivePortrait human": "liveportrait_human",
    "LivePortrait animal": "liveportrait_animal",
}
DEVICES = ["auto", "cpu", "cuda", "mps"]
PRECISIONS = list(PRECISION_CHOICES)
LP_PREFIX = "liveportrait/"
DEMO_PREFIX = "demo/"
LP_MODULE = "appearance_feature_extractor"  # every LivePortrait weights folder has this file
NONE_FOUND = "(no AnyTalk checkpoint found)"


def _liveportrait_entries(root: Path) -> list[str]:
    """LivePortrait weight folders (the folder above ``base_models``) and single files under ``root``."""
    if not root.is_dir():
        return []
    entries = set()
    for here, _dirs, files in _comfy.walk(root):
        stems = {os.path.splitext(f)[0] for f in files}
        if LP_MODULE in stems:
            target = here.parent if here.name.startswith("base_models") and here != root else here
            entries.add(LP_PREFIX if target == root else f"{LP_PREFIX}{target.relative_to(root).as_posix()}/")
        elif here == root:  # flattened single-file LivePortrait checkpoints at the top level
            for f in files:
                if f.lower().endswith(_comfy.CHECKPOINT_SUFFIXES):
                    entries.add(LP_PREFIX + f)
    return sorted(entries)


def checkpoint_choices() -> list[str]:
    names: list[str] = []
    for folder in _comfy.DEMO_DIRS:
        names += [DEMO_PREFIX + n for n in _comfy.list_files(Path(folder), (".safetensors",), recursive=False)]
    for folder in _comfy.model_dirs("anytalk"):
        names += _comfy.list_files(folder, _comfy.CHECKPOINT_SUFFIXES)
    for folder in _comfy.model_dirs("liveportrait"):
        names += _liveportrait_entries(folder)
    out = list(dict.fromkeys(names))
    return out or [NONE_FOUND]


def resolve_checkpoint(name: str) -> Path:
    """The file or folder a checkpoint choice names, or an error saying where to put it.

    As ComfyUI's ``folder_paths.get_full_path``: the name is normalised as written inside each model folder (``..``
    cannot leave it) and symlinks the owner placed there are followed.
    """
    try:
        _comfy.check_path_text(name, "AnyTalk Load Model: checkpoint name")
    except ValueError as exc:
        raise AnyTalkError(str(exc)) from None
    if name.startswith(DEMO_PREFIX):
        roots, rel = [Path(d) for d in _comfy.DEMO_DIRS], name[len(DEMO_PREFIX):]
    elif name.startswith(LP_PREFIX):
        roots, rel = _comfy.model_dirs("liveportrait"), name[len(LP_PREFIX):]
    else:
        roots, rel = _comfy.model_dirs("anytalk"), name
    rel = os.path.relpath(os.path.join(os.sep, rel.rstrip("/") or "."), os.sep)  # ComfyUI's own normalisation
    for root in roots:
        path = Path(os.path.normpath(os.path.join(os.path.abspath(root), rel)))
        try:
            if path.exists():
                return path
        except OSError:
            continue
    where = " or ".join(str(r) for r in roots) or "models/anytalk"
    raise AnyTalkError(
        f"AnyTalk Load Model: checkpoint {_comfy.shown(name)} not found in {where}. Put AnyTalk/face-vid2vid "
        "checkpoints in ComfyUI/models/anytalk/ and LivePortrait weight folders in ComfyUI/models/liveportrait/, "
        "then press R (refresh) in ComfyUI")


class AnyTalkLoadModel:
    DESCRIPTION = ("Loads an AnyTalk / face-vid2vid checkpoint (models/anytalk) or a LivePortrait human or animal "
                   "weights folder (models/liveportrait). The model is loaded once and reused by every AnyTalk node.")
    SEARCH_ALIASES = ("talking head", "liveportrait", "face vid2vid", "lip sync model")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ANYTALK_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded talking-head model with its device and precision settings.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (checkpoint_choices(), {
                    "tooltip": "A .safetensors / .pth.tar checkpoint from models/anytalk, a LivePortrait weights "
                               "folder from models/liveportrait (liveportrait/...), or the bundled demo (demo/...)."}),
                "family": (list(FAMILIES), {
                    "default": "auto",
                    "tooltip": "Model family. auto reads it from the file; LivePortrait human and animal weights "
                               "look identical, so pick the variant here if the folder name does not say 'animal'."}),
                "device": (DEVICES, {
                    "default": "auto",
                    "tooltip": "auto: ComfyUI's device (your GPU), managed by ComfyUI so it can unload the model when "
                               "other nodes need the memory. cpu works everywhere but is slow."}),
                "precision": (PRECISIONS, {
                    "default": "auto",
                    "tooltip": "auto: bf16 on a CPU with bf16 instructions (amx_bf16 / avx512_bf16: 1.4-2.3x as "
                               "fast, frames within a grey level of fp32's), fp32 elsewhere (the log says which). "
                               "fp32 is exact; fp16/bf16 are faster on recent GPUs with small differences. "
                               "On CPUs without bf16 hardware fp32 is fastest."}),
                "chunk_size": ("INT", {
                    "default": 8, "min": 1, "max": 256, "step": 1,
                    "tooltip": "Frames processed at once. Memory use grows with it, not with the clip length; "
                               "lower it if you run out of GPU memory."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint):
        if checkpoint == NONE_FOUND:
            return ("no AnyTalk checkpoint found: put one in ComfyUI/models/anytalk/ (or a LivePortrait folder in "
                    "ComfyUI/models/liveportrait/) and refresh")
        try:
            resolve_checkpoint(checkpoint)
        except AnyTalkError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, checkpoint, **_):
        try:
            return file_signature(resolve_checkpoint(checkpoint))
        except (AnyTalkError, OSError):
            return ""

    def load(self, checkpoint, family="auto", device="auto", precision="auto", chunk_size=8):
        if family not in FAMILIES:
            raise AnyTalkError(f"AnyTalk Load Model: unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        if device not in DEVICES:
            raise AnyTalkError(f"AnyTalk Load Model: unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        if precision not in PRECISIONS:
            raise AnyTalkError(f"AnyTalk Load Model: unknown precision {precision!r}; choose auto, fp32, fp16 or bf16")
        path = resolve_checkpoint(checkpoint)
        try:
            model = load_model(str(path), family=FAMILIES[family], device="cpu")
        except CheckpointError as exc:
            raise AnyTalkError(f"AnyTalk Load Model: {exc}") from None
        except ValueError as exc:  # e.g. a family this version of the pack does not know
            raise AnyTalkError(f"AnyTalk Load Model: cannot load {checkpoint!r} as {family}: {exc}") from None
        config_family = model.config.family
        variant = model.config.extra.get("variant") if isinstance(model.config.extra, dict) else None
        family_name = f"{config_family}_{variant}" if variant and not config_family.endswith(variant) else config_family
        wrapper = AnyTalkModel(model=model, name=checkpoint, path=str(path), family=family_name, device=device,
                               precision=precision, chunk_size=int(chunk_size),
                               notes=list(getattr(model, "load_notes", []) or []))
        if device == "auto":
            wrapper.patcher = _comfy.make_patcher(model, _comfy.default_device(), _comfy.offload_device())
        return (wrapper,)
