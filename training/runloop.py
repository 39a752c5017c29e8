"""The run loop both trainers share: set-up checks, the run folder's logs, resume, the fit loop, signals, close.

A trainer subclasses :class:`RunLoop` and supplies ``_init_device``, ``_setup`` (every check before the first
step), ``_steps`` (the batch source), ``_step`` (one optimiser step -> values to log), ``_log_window`` (a
metrics line), ``save`` and ``export``; the hooks ``_after_step``, ``_after_save``, ``_finish`` and
``_final_export`` add what only one trainer does (samples, held-out evaluation, epoch snapshots, DDP checks).
The typed settings (:mod:`.settings`) are ``self.run``; the validated config dict, kept for what is written
to disk, is ``self.cfg``.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from anytalk_core.io_utils import atomic_output, unique_path

from .checkpointing import install_interrupt_handlers, restore_signal_handlers, restore_train_state
from .config import output_dir
from .settings import LoopSettings, RunSettings

__all__ = ["RunLoop", "SetupError", "DistInfo", "seed_for", "free_path"]


class SetupError(ValueError):
    """Anything that stops training before it starts; the message is one actionable line."""


@dataclass
class DistInfo:
    """This process's place in a (torchrun) process group; one process: rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def seed_for(*parts: int | str) -> int:
    """A 63-bit seed from a key (stable across processes and Python runs)."""
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & (2**63 - 1)


def free_path(path: str | os.PathLike) -> str:
    """``path`` when it is free, else the next numbered name beside it (nothing is ever overwritten)."""
    path = os.fspath(path)
    return path if not os.path.exists(path) else os.fspath(unique_path(path))


def end_step(train: LoopSettings, total_steps: int) -> int:
    """The step this invocation stops at: the schedule's end, or ``train.stop_after`` when set."""
    return min(total_steps, train.stop_after) if train.stop_after > 0 else total_steps


def environment() -> dict:
    """The software a run used and when it started (part of run_info.json)."""
    return {"torch": torch.__version__, "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


class RunLoop(abc.ABC):
    """``Subclass(config, resume=...).fit()``; every check happens in the constructor."""

    start_step: int
    end_step: int
    total_steps: int

    def __init__(self, config: dict, resume: bool | str = False, log_stream=None):
        self.cfg = config
        self.stream = log_stream or sys.stderr
        self.t0 = time.time()
        self._interrupted = False
        self._log_file = None
        self.tb = None
        self.run = RunSettings.from_config(config)
        if self.run.threads:
            torch.set_num_threads(self.run.threads)
        self.dist = self._init_device(self.run)
        self.device = self.dist.device
        self.run_dir = output_dir(config)
        self.ckpt_dir = self.run_dir / "checkpoints"
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    @classmethod
    def export_from_checkpoint(cls, config: dict, checkpoint: str | None, out: str | None) -> str | None:
        """Export the inference checkpoint of a run's training state without training."""
        trainer = cls(config, resume=checkpoint or True)
        try:
            return trainer.export(out, step=trainer.start_step)
        finally:
            trainer.close()

    # ----- what a trainer supplies -------------------------------------------------------------------
    @abc.abstractmethod
    def _init_device(self, run: RunSettings) -> DistInfo:
        """The device and process group of this run."""

    @abc.abstractmethod
    def _setup(self, resume: bool | str) -> None:
        """Every check and the model, data and optimiser set-up before the first step."""

    def _steps(self):
        """What ``_step`` draws its batches from (None when a step makes its own)."""
        return None

    @abc.abstractmethod
    def _step(self, step: int, batches) -> dict[str, float]:
        """One optimiser step -> the values to log."""

    @abc.abstractmethod
    def _log_window(self, step: int, window: dict[str, list[float]], rate: float) -> None:
        """One metrics line for the steps of a logging window."""

    def _after_step(self, step: int, result: dict) -> bool:
        """Work after a step before the checkpoint; True stops the run (saved, like an interrupt)."""
        return False

    def _after_save(self, step: int) -> None:
        """Work after the checkpoint of a step."""

    def _finish(self, step: int, result: dict) -> None:
        """Work once the loop has ended, before the export."""

    def _final_export(self, step: int, result: dict) -> str | None:
        """The export at the end of the schedule."""
        return self.export(step=step)

    @abc.abstractmethod
    def save(self, step: int) -> None:
        """The training checkpoint of ``step``."""

    @abc.abstractmethod
    def export(self, path: str | os.PathLike | None = None, step: int | None = None) -> str | None:
        """The inference checkpoint; returns its path."""

    # ----- logging -----------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.dist.is_main:
            return
        line = f"[anytalk-train] {message}"
        bar = getattr(self, "bar", None)
        if bar is not None and not bar.disable:
            bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
        if self._log_file is not None:
            self._log_file.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
            self._log_file.flush()

    def barrier(self) -> None:
        if self.dist.distributed:
            dist.barrier()

    def _write_metrics(self, line: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _write_json(self, name: str, doc: dict) -> None:
        with atomic_output(self.run_dir / name, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")

    # ----- set-up ------------------------------------------------------------------------------------
    def _resume_path(self, resume: bool | str) -> Path | None:
        """The checkpoint to continue from (None: a new run); refuses a missing one and a run already there."""
        last = self.ckpt_dir / "last.safetensors"
        if resume:
            path = Path(resume) if isinstance(resume, str) else last
            if not path.exists():
                raise SetupError(f"--resume: no training checkpoint at {path} (nothing to resume; "
                                 "start without --resume)")
            return path
        if last.exists():
            raise SetupError(f"{self.run_dir} already holds a training run ({last}); pass --resume to continue it "
                             "or choose another output_dir / name")
        return None

    def _open_run_dir(self, *subdirs: str) -> None:
        """Create the run folder (and ``subdirs`` in it) and open train.log for appending."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in subdirs:
            (self.run_dir / name).mkdir(exist_ok=True)
        self._log_file = open(self.run_dir / "train.log", "a", encoding="utf-8")

    def _reset_metrics(self, resumed: bool) -> None:
        """metrics.jsonl: a new run moves an aborted attempt's file aside; a resumed one drops lines past its step."""
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if not resumed and self.metrics_path.exists():
            os.replace(self.metrics_path, unique_path(self.metrics_path))
        if resumed and self.metrics_path.exists():  # the steps after the checkpoint will be redone
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
            keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= self.start_step]
            with atomic_output(self.metrics_path, overwrite=True) as tmp:
                Path(tmp).write_text("".join(k + "\n" for k in keep), encoding="utf-8")

    def _restore(self, state, module: torch.nn.Module, optimizers: dict, scheduler, scaler) -> None:
        """Load a training state into ``module`` and its optimisers, on this run's device."""
        restore_train_state(state, module, optimizers, scheduler, scaler)
        module.to(self.device)
        for opt in optimizers.values():  # Adam moments follow their parameters
            for st in opt.state.values():
                for k, v in st.items():
                    if isinstance(v, torch.Tensor) and k != "step":
                        st[k] = v.to(self.device)
        self.start_step = state.step

    def _any_rank(self, flag: bool) -> bool:
        if not self.dist.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    # ----- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Run from the current step to the end of the schedule (or ``train.stop_after``)."""
        from tqdm import tqdm

        t = self.run.train
        result = {"run_dir": str(self.run_dir), "start_step": self.start_step}
        self.bar = tqdm(total=self.end_step, initial=self.start_step, desc=self.run.name, unit="step",
                        disable=not (self.dist.is_main and t.progress), dynamic_ncols=True, file=self.stream)
        old_handlers = install_interrupt_handlers(self)
        step = self.start_step
        log_every, ckpt_every = max(1, t.log_every), t.checkpoint_every
        window: dict[str, list[float]] = {}
        window_t, window_n, timing = time.time(), 0, []
        try:
            batches = self._steps()
            while step < self.end_step:
                ts = time.time()
                values = self._step(step, batches)
                step += 1
                timing.append(time.time() - ts)
                window_n += 1
                for k, v in values.items():
                    window.setdefault(k, []).append(v)
                self.bar.update(1)
                if step % log_every == 0 or step == self.end_step:
                    now = time.time()
                    self._log_window(step, window, window_n / max(now - window_t, 1e-9))
                    window, window_t, window_n = {}, now, 0
                stop = self._after_step(step, result)
                interrupted = self._any_rank(self._interrupted) or stop
                if (ckpt_every and step % ckpt_every == 0) or step == self.end_step or interrupted:
                    self.save(step)
                self._after_save(step)
                if interrupted:
                    self.log(f"interrupted: saved step {step}; continue with --resume")
                    result["interrupted"] = True
                    break
        finally:
            self.bar.close()
            restore_signal_handlers(old_handlers)
        result["end_step"] = step
        steady = timing[1:] if len(timing) > 1 else timing
        if steady:
            result["steps_per_s"] = len(steady) / sum(steady)
        self._finish(step, result)
        if step >= self.total_steps and step > self.start_step and t.export and not result.get("interrupted"):
            result["export"] = self._final_export(step, result)
        self.log(f"done at step {step}" + (f", {result['steps_per_s']:.2f} steps/s" if "steps_per_s" in result else ""))
        return result

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
