"""Give a run's training state other frozen networks, between two schedules.

A run that keeps networks frozen (``train.freeze``; the 128 px demo keeps its motion estimator and canonical
keypoint detector as the 64 px stages left them) can have them improved apart from it: a motion warm-up
(training/warmup.py) on fresh stills refines the estimator in minutes, where the GAN steps cost seconds each.
To go on with the GAN steps from the run's own state and the better estimator, this writes a copy of the
training state whose frozen networks are another inference checkpoint's: every network that trains, both Adam
moments, the schedule, the step and the RNG states stay as they were; the per-tensor CRCs are recomputed.

Only frozen networks can be swapped: a trained network's Adam moments belong to its old weights. The output is
never written over an existing file::

    python -m anytalk_training.frozen runs/demo128/checkpoints/last.safetensors runs/warm/model.safetensors \\
        runs/demo128_new_estimator.safetensors [--networks motion]
    anytalk-train training/configs/demo128.toml --resume-from runs/demo128_new_estimator.safetensors ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .checkpointing import TRAIN_STATE_FORMAT, TrainStateError, _crc, read_train_state
from .snapshot import frozen_networks

__all__ = ["replace_frozen_networks", "main"]


def replace_frozen_networks(state_path: str | os.PathLike, donor_path: str | os.PathLike,
                            out_path: str | os.PathLike, networks: list[str] | None = None) -> dict:
    """Write ``out_path``: the training state at ``state_path`` with the frozen ``networks`` (default: every
    network in the run's ``train.freeze``) taken from the inference checkpoint ``donor_path``. Returns
    ``{"step", "networks", "tensors"}`` (tensors: how many were replaced)."""
    from anytalk_core.safetensors_io import FileFormatError, read_safetensors, write_tagged

    if os.path.exists(out_path):
        raise FileExistsError(f"{os.fspath(out_path)} exists: name a new file (nothing is written over)")
    state = read_train_state(state_path)
    frozen = list(frozen_networks(json.loads(state.meta["config"])))
    networks = list(frozen if networks is None else networks)
    if not networks:
        raise TrainStateError(f"{os.fspath(state_path)}: the run freezes no network (train.freeze is empty): "
                              "nothing to replace")
    trained = [n for n in networks if n not in frozen]
    if trained:
        raise TrainStateError(f"{trained[0]!r} trains in this run (train.freeze = {frozen}): its Adam moments belong "
                              "to its current weights, so only frozen networks can be replaced")
    try:
        donor, _ = read_safetensors(donor_path, "checkpoint")
    except (FileFormatError, OSError) as exc:
        raise TrainStateError(f"{os.fspath(donor_path)}: not a readable checkpoint ({exc})") from None
    tensors = dict(state.tensors)
    meta = {k: v for k, v in state.meta.items() if k != "format"}
    crc = json.loads(meta["crc32"])
    replaced = 0
    for net in networks:
        keys = [k for k in tensors if k.startswith(f"model.{net}.")]
        if not keys:
            raise TrainStateError(f"{os.fspath(state_path)}: the model has no network {net!r}")
        for key in keys:
            name = key[len("model."):]
            new = donor.get(name)
            if new is None:
                raise TrainStateError(f"{os.fspath(donor_path)}: lacks {name} (not the same kind of model?)")
            old = tensors[key]
            if new.shape != old.shape or new.dtype != old.dtype:
                raise TrainStateError(f"{os.fspath(donor_path)}: {name} is {tuple(new.shape)} {new.dtype}, the run's "
                                      f"is {tuple(old.shape)} {old.dtype} (another model width?)")
            tensors[key] = new.contiguous()
            crc[key] = _crc(tensors[key])
            replaced += 1
    meta["crc32"] = json.dumps(crc)
    write_tagged(out_path, tensors, TRAIN_STATE_FORMAT, meta)
    return {"step": state.step, "networks": networks, "tensors": replaced}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anytalk_training.frozen",
                                     description="Copy a training state with its frozen networks taken from another "
                                                 "checkpoint (e.g. a motion estimator refined by a warm-up).")
    parser.add_argument("train_state", help="a run's checkpoints/last.safetensors")
    parser.add_argument("donor", help="an inference checkpoint (e.g. a warm-up run's model.safetensors)")
    parser.add_argument("out", help="the training state to write (a new file)")
    parser.add_argument("--networks", nargs="+", default=None, metavar="NET",
                        help="which frozen networks to replace (default: all of train.freeze)")
    args = parser.parse_args(argv)
    try:
        info = replace_frozen_networks(args.train_state, args.donor, args.out, args.networks)
    except (TrainStateError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: step {info['step']}, {', '.join(info['networks'])} from {args.donor} "
          f"({info['tensors']} tensors); continue with --resume-from {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
