"""Reader of the released face-vid2vid checkpoints: {generator, kp_detector, he_estimator[, discriminator]}."""
from __future__ import annotations

import os

import torch

from ...weights import FORMAT_NAME, CheckpointError, LoadedWeights, StateDict, read_file

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


def released_modules(state: StateDict) -> dict[str, StateDict]:
    """Our flat keys -> face-vid2vid's state dicts {generator, kp_detector, he_estimator, discriminator}: the
    inverse of :func:`map_face_vid2vid` (the released ``.pth.tar`` layout, for tests and benchmarks)."""
    names = {"appearance": "generator", "dense_motion": "generator", "generator": "generator",
             "keypoints": "kp_detector", "motion": "he_estimator", "discriminator": "discriminator"}
    out: dict[str, StateDict] = {name: {} for name in ("generator", "kp_detector", "he_estimator", "discriminator")}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in names:
            out[names[head]][("dense_motion_network." if head == "dense_motion" else "") + rest] = value
    return out


def _strip_module_prefix(state: dict) -> dict:
    """Remove a DataParallel ``module.`` prefix when every key has it."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def read_face_vid2vid(path: str, family: str) -> LoadedWeights | None:
    """The released face-vid2vid ``.pth.tar`` dict (or its flattened twin) in our layout; None for other files."""
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
