"""Compact training snapshots: what a long run commits to the repository so a fresh clone can continue it.

A training state (``checkpoints/last.safetensors``: every network, both Adam moments, RNG states) of the
128 px demo run is ~60 MB; committed once per session over many sessions it would outgrow the repository.
A snapshot keeps what continuing needs, smaller:

* the networks that train (generator side minus ``train.freeze``, and the discriminator): tensors of 1,024
  or more values in fp16 (rounding moves a weight by at most 2^-11 of itself, less than one Adam step of
  lr 2e-4 for weights above ~0.4), smaller ones (batch-norm statistics, biases, spectral-norm vectors) as saved;
* the frozen networks are not stored: they are ``model.init_from``'s, checked by a CRC-32 per tensor;
* Adam: the first moments are dropped (with beta1 = 0.5 they are the last few gradients and return within a
  few steps); the second moments (beta2 = 0.999, a thousand steps of memory) are kept factored as Adafactor
  does (Shazeer & Stern 2018): for a tensor seen as (rows, rest) the mean over each row and each column,
  rebuilt as ``row_i * col_j / mean``; 1-D ones whole. The step counts are kept, so bias correction does not
  restart;
* the step, epoch, schedule, configs and RNG states.

A continuation from a snapshot is therefore close to, not bit-identical with, the uninterrupted run (a resume
from ``checkpoints/last.safetensors`` stays exact). ``anytalk-train <config> --resume-from <snapshot>`` continues
from one (:class:`~.trainer.Trainer` loads ``model.init_from`` first, then the snapshot over it)::

    python -m anytalk_training.snapshot runs/demo128/checkpoints/last.safetensors \\
        assets/demo/training_state/demo128.safetensors --replace --logs-to assets/demo/training_log/demo128
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from anytalk_core.safetensors_io import write_tagged

from .checkpointing import TrainState, TrainStateError, _crc, read_train_state
from .model_init import derived_kernel_buffers

SNAPSHOT_FORMAT = "anytalk.train_snapshot"
SNAPSHOT_VERSION = 1
HALF_MIN_NUMEL = 1024  # float tensors with at least this many values are stored in fp16

__all__ = ["SNAPSHOT_FORMAT", "is_snapshot", "write_snapshot", "read_snapshot", "main"]


def is_snapshot(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file with the snapshot format tag (only the header is read)."""
    from anytalk_core.safetensors_io import FileFormatError, read_header

    try:
        return read_header(path)[1].get("format") == SNAPSHOT_FORMAT
    except FileFormatError:  # not a readable safetensors file: the ordinary readers report it
        return False


def frozen_networks(config: dict) -> tuple[str, ...]:
    """The networks a run keeps as loaded (its ``train.freeze``)."""
    return tuple(config.get("train", {}).get("freeze", []))


def _frozen_prefixes(config: dict) -> tuple[str, ...]:
    return tuple(f"{name}." for name in frozen_networks(config))


def _to_half(t: torch.Tensor) -> torch.Tensor:
    if not t.is_floating_point() or t.numel() < HALF_MIN_NUMEL:
        return t
    half = t.to(torch.float16)
    return half if bool(torch.isfinite(half).all()) else t  # out of fp16's range: keep it as it is


def factor_second_moment(v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Adam's exp_avg_sq (any shape) -> {"row", "col"} means of its (shape[0], rest) view; 1-D: {"full"}."""
    v = v.float()
    if v.dim() < 2:
        return {"full": v}
    m = v.reshape(v.shape[0], -1)
    return {"row": m.mean(1), "col": m.mean(0)}


def rebuild_second_moment(parts: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`factor_second_moment`: ``row_i * col_j / mean(row)`` (exact for rank-one moments)."""
    if "full" in parts:
        return parts["full"].float().reshape(shape).clone()
    row, col = parts["row"].float(), parts["col"].float()
    mean = row.mean()
    v = torch.outer(row, col) / mean if mean > 0 else torch.zeros(row.numel(), col.numel())
    return v.reshape(shape)


def write_snapshot(train_state: str | os.PathLike, out: str | os.PathLike, replace: bool = False) -> dict:
    """Write the snapshot of a training state (``checkpoints/last.safetensors``); returns sizes and the step."""
    out = os.fspath(out)
    if os.path.exists(out) and not replace:
        raise FileExistsError(f"{out} exists: pass --replace to replace the snapshot (git keeps the earlier one)")
    state = read_train_state(train_state)
    config = json.loads(state.meta["config"])
    frozen = _frozen_prefixes(config)
    tensors: dict[str, torch.Tensor] = {}
    frozen_crc: dict[str, int] = {}
    for key, value in state.model_state().items():
        if key.startswith(frozen):
            frozen_crc[key] = _crc(value)
        else:
            tensors[f"model.{key}"] = _to_half(value).contiguous()
    for key, value in state.tensors.items():
        if key.startswith("rng."):
            tensors[key] = value
        elif key.startswith("optim."):
            if key.endswith(".exp_avg_sq"):
                for part, t in factor_second_moment(value).items():
                    tensors[f"{key}.{part}"] = t.contiguous()
            elif not key.endswith(".exp_avg"):  # step counts (and anything else small) as they are
                tensors[key] = value
    shapes = {k: list(v.shape) for k, v in state.tensors.items() if k.endswith(".exp_avg_sq")}
    meta = {k: v for k, v in state.meta.items() if k not in ("format", "format_version", "crc32")}
    meta.update({
        "format_version": str(SNAPSHOT_VERSION),
        "frozen_crc32": json.dumps(frozen_crc), "moment_shapes": json.dumps(shapes),
        "crc32": json.dumps({k: _crc(v) for k, v in tensors.items()}),
        "source": os.path.basename(os.fspath(train_state)),
    })
    write_tagged(out, tensors, SNAPSHOT_FORMAT, meta, overwrite=True)
    return {"path": out, "step": state.step, "bytes": os.path.getsize(out),
            "train_state_bytes": os.path.getsize(train_state), "frozen_tensors_not_stored": len(frozen_crc)}


def read_snapshot(path: str | os.PathLike, model: torch.nn.Module) -> TrainState:
    """The full training state a snapshot stands for. ``model`` already holds ``model.init_from``'s weights;
    its frozen networks must be the ones the snapshot was trained with (CRC-32 per tensor)."""
    from anytalk_core.safetensors_io import FileFormatError, read_safetensors

    path = os.fspath(path)
    try:
        tensors, meta = read_safetensors(path, "training snapshot")
    except FileFormatError as exc:
        raise TrainStateError(str(exc)) from None
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise TrainStateError(f"{path}: not an AnyTalk training snapshot")
    try:
        if int(meta["format_version"]) > SNAPSHOT_VERSION:
            raise TrainStateError(f"{path}: written by a newer trainer (snapshot format {meta['format_version']})")
        crc, frozen_crc = json.loads(meta["crc32"]), json.loads(meta["frozen_crc32"])
        shapes = json.loads(meta["moment_shapes"])
        step, epoch = int(meta["step"]), int(meta["epoch"])
    except (KeyError, ValueError) as exc:
        raise TrainStateError(f"{path}: training snapshot with damaged metadata ({exc})") from None
    bad = [k for k in crc if k not in tensors or _crc(tensors[k]) != crc[k]]
    if bad:
        raise TrainStateError(f"{path}: training snapshot is corrupt (checksum mismatch or missing: {bad[0]})")
    current = model.state_dict()
    # Anti-aliasing kernels are recomputed from the config on every machine (their last bits differ between
    # platforms and torch builds): they are not learned weights, so they are not held to the snapshot's CRC.
    derived = set(derived_kernel_buffers(model))
    missing = sorted(k for k in frozen_crc if k not in current)
    differing = sorted(k for k in frozen_crc if k in current and k not in derived and _crc(current[k]) != frozen_crc[k])
    if missing or differing:
        name = (missing or differing)[0]
        raise TrainStateError(f"{path}: the frozen networks it was trained with are not those of model.init_from "
                              f"({len(missing) + len(differing)} tensors differ, e.g. {name}): set model.init_from to "
                              "the file the run started from (its config names it)")
    full: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.startswith("model."):
            saved = current.get(key[len("model."):])
            full[key] = value.to(saved.dtype) if saved is not None and value.is_floating_point() else value
        elif key.startswith("rng.") or not key.startswith("optim."):
            full[key] = value
        elif not key.endswith((".row", ".col", ".full")):
            full[key] = value
    for key in frozen_crc:
        full[f"model.{key}"] = current[key].detach().cpu().clone()
    for key, shape in shapes.items():
        parts = {p: tensors[f"{key}.{p}"] for p in ("row", "col", "full") if f"{key}.{p}" in tensors}
        full[key] = rebuild_second_moment(parts, tuple(shape))
        full[key[: -len("_sq")]] = torch.zeros(tuple(shape))  # exp_avg: dropped, restarts at 0
    meta = dict(meta, format="anytalk.train_state")
    return TrainState(path, full, meta, step, epoch, json.loads(meta.get("extra", "{}")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anytalk_training.snapshot",
                                     description="Write the compact snapshot of a training state (for the repository).")
    parser.add_argument("train_state", help="a run's checkpoints/last.safetensors")
    parser.add_argument("out", help="the snapshot to write, e.g. assets/demo/training_state/demo128.safetensors")
    parser.add_argument("--replace", action="store_true", help="replace an existing snapshot")
    parser.add_argument("--logs-to", metavar="DIR", default=None,
                        help="also copy the run's metrics.jsonl, train.log and run_info.json (beside checkpoints/) here")
    args = parser.parse_args(argv)
    try:
        info = write_snapshot(args.train_state, args.out, replace=args.replace)
    except (TrainStateError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.logs_to:
        import shutil
        from pathlib import Path

        run_dir, logs = Path(args.train_state).resolve().parent.parent, Path(args.logs_to)
        logs.mkdir(parents=True, exist_ok=True)
        copied = [name for name in ("metrics.jsonl", "train.log", "run_info.json") if (run_dir / name).is_file()]
        for name in copied:
            shutil.copyfile(run_dir / name, logs / name)
        print(f"copied {', '.join(copied) or 'no logs'} from {run_dir} to {logs}")
    print(f"snapshot of step {info['step']}: {info['path']} ({info['bytes'] / 1e6:.1f} MB; the training state is "
          f"{info['train_state_bytes'] / 1e6:.1f} MB; {info['frozen_tensors_not_stored']} frozen tensors come from "
          "model.init_from)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
