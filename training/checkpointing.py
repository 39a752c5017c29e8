"""Training-state checkpoints: one atomic ``.safetensors`` file holding everything a resume needs.

Tensors: ``model.*`` (every network, discriminator included, buffers such as BatchNorm statistics and
spectral-norm vectors), ``optim.<name>.<index>.<key>`` (Adam moments and step counts), ``rng.*`` (torch
CPU/CUDA generator states, numpy's Mersenne state). Metadata (JSON strings): format, version, step,
epoch, optimiser param groups, scheduler and AMP-scaler states, python's RNG state, the model config,
the training config, and a CRC-32 of every tensor so that a corrupt file is refused before training.
"""
from __future__ import annotations

import json
import os
import signal
import random
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from anytalk_core.safetensors_io import write_tagged

TRAIN_STATE_FORMAT = "anytalk.train_state"
TRAIN_STATE_VERSION = 1


class TrainStateError(ValueError):
    """A training checkpoint is missing, corrupt, foreign or does not fit this run; names the file."""


class EpochMultiStepLR:
    """lr = base_lr * gamma ** (number of milestones <= epoch), set on every optimiser (the authors'
    MultiStepLR stepped per epoch). Stateless apart from the epoch it was last applied at."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], base_lr: float, milestones: list[int], gamma: float):
        self.optimizers = optimizers
        self.base_lr = float(base_lr)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.last_epoch = -1

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)

    def apply(self, epoch: int) -> float:
        lr = self.lr_at(epoch)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        self.last_epoch = epoch
        return lr

    def state_dict(self) -> dict:
        return {"type": "epoch_multistep", "base_lr": self.base_lr, "milestones": self.milestones,
                "gamma": self.gamma, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state.get("last_epoch", -1))


def _crc(t: torch.Tensor) -> int:
    t = t.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return zlib.crc32(memoryview(t.numpy()).cast("B"))


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.uint32).view(np.int32).copy())
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": _py_state(random.getstate())}
    return tensors, meta


def _py_state(state) -> list:
    return [state[0], list(state[1]), state[2]]


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    if "rng.numpy" in tensors and "numpy" in meta:
        name, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((name, tensors["rng.numpy"].numpy().view(np.uint32), pos, has_gauss, cached))
    if "python" in meta:
        v, s, g = meta["python"]
        random.setstate((v, tuple(s), g))


def save_train_state(path: str | os.PathLike, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                     scheduler: EpochMultiStepLR, scaler, step: int, epoch: int, config: dict, model_config_json: str,
                     extra: dict | None = None) -> str:
    path = os.fspath(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    groups = {}
    other_state = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for idx, st in sd["state"].items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    other_state[f"{name}.{idx}.{key}"] = value
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    crc = {k: _crc(v) for k, v in tensors.items()}
    meta = {
        "format_version": str(TRAIN_STATE_VERSION),
        "step": str(step),
        "epoch": str(epoch),
        "param_groups": json.dumps(groups),
        "optimizer_other": json.dumps(other_state),
        "scheduler": json.dumps(scheduler.state_dict()),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}),
        "rng": json.dumps(rng_meta),
        "model_config": model_config_json,
        "config": json.dumps(config, sort_keys=True, default=str),
        "crc32": json.dumps(crc),
        "extra": json.dumps(extra or {}, sort_keys=True, default=str),
    }
    write_tagged(path, tensors, TRAIN_STATE_FORMAT, meta, overwrite=True)
    return path


@dataclass
class TrainState:
    path: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]
    step: int = 0
    epoch: int = 0
    extra: dict = field(default_factory=dict)

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}


def read_train_state(path: str | os.PathLike, verify: bool = True) -> TrainState:
    """Read and verify a training checkpoint (format, metadata, every tensor's CRC).

    Read with the one validating safetensors reader (header checked before anything is allocated).
    """
    from anytalk_core.safetensors_io import FileFormatError, read_safetensors

    path = os.fspath(path)
    if not os.path.exists(path):
        raise TrainStateError(f"{path}: training checkpoint not found")
    if os.path.getsize(path) == 0:
        raise TrainStateError(f"{path}: training checkpoint is empty (0 bytes)")
    try:
        tensors, meta = read_safetensors(path, "training checkpoint")
    except FileFormatError as exc:
        text = " ".join(exc.reason.split())[:200]
        raise TrainStateError(f"{path}: not a readable training checkpoint (truncated or corrupt: {text})") from None
    if meta.get("format") != TRAIN_STATE_FORMAT:
        hint = " (an inference checkpoint: start from its weights with model.init_from instead)" \
            if meta.get("format") == "anytalk" else ""
        raise TrainStateError(f"{path}: not an AnyTalk training checkpoint{hint}")
    try:
        version = int(meta["format_version"])
        step, epoch = int(meta["step"]), int(meta["epoch"])
        crc = json.loads(meta["crc32"])
        for key in ("param_groups", "scheduler", "scaler", "rng", "model_config", "config"):
            json.loads(meta[key])
    except (KeyError, ValueError) as exc:
        raise TrainStateError(f"{path}: training checkpoint with damaged metadata ({exc})") from None
    if version > TRAIN_STATE_VERSION:
        raise TrainStateError(f"{path}: written by a newer trainer (format {version} > {TRAIN_STATE_VERSION})")
    if verify:
        missing = sorted(set(crc) - set(tensors))
        if missing:
            raise TrainStateError(f"{path}: training checkpoint lacks tensors {missing[:3]}")
        bad = [k for k in crc if _crc(tensors[k]) != crc[k]]
        if bad:
            raise TrainStateError(f"{path}: training checkpoint is corrupt (checksum mismatch in {len(bad)} tensors, "
                                  f"e.g. {bad[0]})")
    return TrainState(path, tensors, meta, step, epoch, json.loads(meta.get("extra", "{}")))


def read_resume_state(path: str | os.PathLike) -> TrainState:
    """:func:`read_train_state` for ``--resume``: when the checkpoint is damaged (e.g. the disk filled up or the
    machine died while it was copied) the error names the newest intact snapshot of the same run to resume from."""
    try:
        return read_train_state(path)
    except TrainStateError as exc:
        older = intact_snapshot(os.path.dirname(os.fspath(path)) or ".", exclude=path)
        if older is None:
            raise
        raise TrainStateError(f"{exc}. An intact older snapshot of this run exists: continue from it with "
                              f"--resume-from {older[0]} (step {older[1]})") from None


def intact_snapshot(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> tuple[str, int] | None:
    """(path, step) of the newest training checkpoint in ``folder`` that reads and verifies, else None."""
    names = [n for n in _listdir(folder) if n.endswith(".safetensors") and not n.startswith(".")]
    paths = [os.path.join(os.fspath(folder), n) for n in names]
    skip = os.path.abspath(os.fspath(exclude)) if exclude is not None else None
    paths = [p for p in paths if os.path.abspath(p) != skip and os.path.isfile(p)]
    for p in sorted(paths, key=os.path.getmtime, reverse=True):
        try:
            state = read_train_state(p)
        except TrainStateError:
            continue
        return p, state.step
    return None


def _listdir(folder) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _optimizer_states(state: TrainState, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    groups = json.loads(state.meta["param_groups"])
    other = json.loads(state.meta.get("optimizer_other", "{}"))
    opt_states = {}
    for name, opt in optimizers.items():
        if name not in groups:
            raise TrainStateError(f"{state.path}: no state for optimiser {name!r}")
        current = opt.state_dict()
        if [len(g["params"]) for g in groups[name]] != [len(g["params"]) for g in current["param_groups"]]:
            raise TrainStateError(f"{state.path}: optimiser {name!r} has a different parameter layout")
        per: dict[int, dict] = {}
        prefix = f"optim.{name}."
        for k, v in state.tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix):].split(".", 1)
                per.setdefault(int(idx), {})[key] = v
        for k, v in other.items():
            n, idx, key = k.split(".", 2)
            if n == name:
                per.setdefault(int(idx), {})[key] = v
        params = [p for g in opt.param_groups for p in g["params"]]
        for idx, st in per.items():
            if idx >= len(params):
                raise TrainStateError(f"{state.path}: optimiser {name!r} state for a parameter that does not exist")
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st and tuple(st[key].shape) != tuple(params[idx].shape):
                    raise TrainStateError(f"{state.path}: optimiser {name!r} state {idx}.{key} has shape "
                                          f"{tuple(st[key].shape)}, the parameter {tuple(params[idx].shape)}")
        opt_states[name] = {"state": per, "param_groups": groups[name]}
    return opt_states


def restore_optimizers(state: TrainState, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Only the Adam moments and steps (their learning rates are set by the schedule)."""
    opt_states = _optimizer_states(state, optimizers)
    for name, opt in optimizers.items():
        lrs = [g["lr"] for g in opt.param_groups]
        opt.load_state_dict(opt_states[name])
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr


def restore_train_state(state: TrainState, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                        scheduler: EpochMultiStepLR, scaler, restore_rng_states: bool = True) -> None:
    """Load everything into freshly built objects; every mismatch is one TrainStateError before training."""
    from anytalk_core.checkpoints import CheckpointError, check_state_dict

    model_state = state.model_state()
    try:
        check_state_dict(state.path, model, model_state)
    except CheckpointError as exc:
        raise TrainStateError(f"{exc} (was it trained with another model config?)") from None
    opt_states = _optimizer_states(state, optimizers)
    model.load_state_dict(model_state, strict=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(opt_states[name])
    scheduler.load_state_dict(json.loads(state.meta["scheduler"]))
    scaler_state = json.loads(state.meta["scaler"])
    if scaler is not None and scaler.is_enabled() and scaler_state:
        scaler.load_state_dict(scaler_state)
    if restore_rng_states:
        restore_rng(state.tensors, json.loads(state.meta["rng"]))


def install_interrupt_handlers(run) -> dict | None:
    """SIGINT/SIGTERM for a training run: the first sets ``run._interrupted`` (finish the step, save a
    checkpoint, stop), the second stops at once. Returns the previous handlers (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # noqa: ARG001
        if run._interrupted:  # second signal: stop now
            raise KeyboardInterrupt
        run._interrupted = True
        run.log("interrupt received: finishing this step and saving a checkpoint (again to stop at once)")

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    return old


def restore_signal_handlers(old: dict | None) -> None:
    if old:
        for s, h in old.items():
            signal.signal(s, h)
