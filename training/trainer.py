"""The headless trainer: setup (every check before the first step), the training loop, checkpoints, export.

One optimiser step (the authors' order): the generator side (appearance encoder, keypoint detector,
motion estimator, dense motion, generator) takes a step on the sum of the weighted generator losses over
``train.accumulate`` micro-batches, then the discriminator takes a step on the hinge loss of the same
micro-batches' real and (detached) generated frames. Under ``torchrun`` both sides are wrapped in
DistributedDataParallel; micro-batch m of rank r is the (m * world + r)-th slice of the global batch, so
the data seen does not depend on how the global batch is split over processes and accumulation.

Randomness is keyed, not sequential: the data of sample p in epoch e depends on (seed, e, p) only and the
equivariance transform of a micro-batch on (seed, step, global micro index). With the checkpointed
networks, optimiser moments, AMP scaler and the step counter, a resumed CPU run continues bit-identically.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from anytalk_core.checkpoints import CheckpointError, save_checkpoint
from anytalk_core.engine import cpu_bf16_support
from anytalk_core.models.registry import build_model

from . import losses as L
from .checkpointing import EpochMultiStepLR, TrainStateError, read_resume_state, save_train_state
from .config import GENERATOR_MODULES, ConfigError, config_hash, public
from .data import DataError, StepBatchSampler, build_dataset, collate
from .gan import DiscriminatorSide, GeneratorSide, setup_losses
from .model_init import build_model_config, load_initial_weights, read_initial_weights
from .pretrained import WeightsError, load_vgg19
from .runloop import DistInfo, RunLoop, SetupError, end_step, environment, free_path, seed_for
from .settings import RunSettings

SETUP_ERRORS = (SetupError, ConfigError, DataError, WeightsError, TrainStateError, CheckpointError, FileExistsError)


def init_distributed(run: RunSettings) -> DistInfo:
    """This process's rank and device (under torchrun: joins the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = run.device
    if want == "auto":
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    elif want == "cuda":
        if not torch.cuda.is_available():
            raise SetupError("device = 'cuda' but no CUDA device is available (use device = 'auto' or 'cpu')")
        device = torch.device(f"cuda:{local}")
    else:
        device = torch.device(want)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SetupError(f"device = {want!r} but no CUDA device is available")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, device)



class Trainer(RunLoop):
    """``Trainer(config, resume=...).fit()``; every check happens in the constructor."""

    def _init_device(self, run: RunSettings) -> DistInfo:
        if run.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        return init_distributed(run)

    # ----- setup -----------------------------------------------------------------------------------
    def _setup(self, resume: bool | str) -> None:
        cfg, main = self.cfg, self.dist.is_main
        if self.run.train.tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise SetupError("train.tensorboard = true but the tensorboard package is not installed "
                                 "(pip install tensorboard, or set train.tensorboard = false)")
        resume_path = self._resume_path(resume)
        if main:
            self._open_run_dir("checkpoints", "samples")
        self.barrier()
        if self.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if self.device.type == "cuda":  # some CUDA backward kernels (grid_sample) have no deterministic form
                import warnings

                warnings.filterwarnings("once", message=".*does not have a deterministic implementation.*")
                torch.backends.cudnn.benchmark = False
                torch.backends.cudnn.deterministic = True
        self._setup_amp()

        # model configuration (the network itself is built once the cheap checks have passed)
        self.model_config = build_model_config(cfg)
        self.image_size = int(self.run.data.image_size or self.model_config.image_size)
        if self.image_size != self.model_config.image_size:
            raise SetupError(f"data.image_size={self.image_size} differs from the model's image size "
                             f"{self.model_config.image_size} (set model.overrides.image_size too)")
        # a compact snapshot (training/snapshot.py) holds only the trained networks: the frozen ones come from init_from
        from .snapshot import is_snapshot

        from_snapshot = resume_path is not None and is_snapshot(resume_path)
        use_init = bool(self.run.model.init_from) and (resume_path is None or from_snapshot)
        init_from = os.path.expanduser(self.run.model.init_from) if use_init else ""
        if init_from and not os.path.isfile(init_from):
            raise SetupError(f"model.init_from: {init_from}: file not found")
        # every file the config names is read before the data and the networks are built: a bad one fails at once
        init_weights = read_initial_weights(init_from) if init_from else None
        self._resume_state = read_resume_state(resume_path) if resume_path is not None and not from_snapshot else None
        self._vgg19 = None
        vgg_path = self.run.losses.perceptual.vgg19_weights
        if vgg_path and any(float(w) for w in self.run.losses.perceptual.weights):
            self._vgg19 = load_vgg19(os.path.expanduser(vgg_path))

        # data (a bad folder fails here)
        self.dataset = build_dataset(cfg, self.image_size)
        t = self.run.train
        self.global_batch = t.batch_size
        self.accumulate = t.accumulate
        if self.global_batch % (self.dist.world * self.accumulate):
            raise SetupError(f"train.batch_size={self.global_batch} must be divisible by processes "
                             f"({self.dist.world}) x train.accumulate ({self.accumulate})")
        self.micro_batch = self.global_batch // (self.dist.world * self.accumulate)
        spe = t.steps_per_epoch or self.dataset.samples_per_epoch // self.global_batch
        if spe < 1:
            raise SetupError(f"an epoch of {self.dataset.samples_per_epoch} samples is smaller than one batch of "
                             f"{self.global_batch}: lower train.batch_size or raise data.samples_per_epoch")
        self.dataset.set_samples_per_epoch(spe * self.global_batch)
        self.steps_per_epoch = spe
        self.total_steps = spe * t.epochs
        self.end_step = end_step(t, self.total_steps)

        # losses and the frozen networks they need (missing files fail here)
        self.losses = setup_losses(self)

        # the networks (identical initialisation on every rank)
        torch.manual_seed(self.run.seed)
        self.model = build_model(self.model_config, with_discriminator=True)
        self.init_info, init_state = None, None
        if use_init:
            self.init_info, init_state = load_initial_weights(self.model, init_from, self.log, init_weights)
            del init_weights
            if self.run.model.init_optimizers and init_state is None:
                raise SetupError("model.init_optimizers = true needs a training checkpoint (checkpoints/*.safetensors "
                                 "of a run) in model.init_from, not an inference checkpoint")
        self.warmup_report = self._motion_warmup(resume_path)
        self.sync_bn = self._want_sync_bn()
        if self.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device).train()
        self.frozen = t.freeze
        for name in self.frozen:  # fixed as loaded: no gradients, and batch norm keeps its learned statistics
            getattr(self.model, name).requires_grad_(False).eval()
        if self.frozen:
            self.log(f"frozen (kept as loaded, not trained): {', '.join(self.frozen)}")

        # optimisers, schedule
        gen_params = [p for name in GENERATOR_MODULES if name not in self.frozen
                      for p in getattr(self.model, name).parameters()]
        betas = tuple(float(b) for b in t.betas)
        self.opt_g = torch.optim.Adam(gen_params, lr=t.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=t.lr, betas=betas)
        self.optimizers = {"generator": self.opt_g, "discriminator": self.opt_d}
        self.scheduler = EpochMultiStepLR([self.opt_g, self.opt_d], t.lr, list(t.lr_milestones), t.lr_gamma)
        self.start_step = 0
        if init_state is not None and self.run.model.init_optimizers:
            from .checkpointing import restore_optimizers

            restore_optimizers(init_state, self.optimizers)
            self.init_info["note"] += ", optimiser moments loaded"
        if resume_path is not None:
            self._resume(resume_path)
        if self.start_step >= self.end_step and self.start_step < self.total_steps and t.stop_after > 0:
            raise SetupError(f"the checkpoint is at step {self.start_step}, already at train.stop_after="
                             f"{self.cfg['train']['stop_after']}: raise or clear stop_after to continue")

        # DDP wrappers
        self.gen_side = GeneratorSide(self.model, self.losses, self.run.losses)
        self.disc_side = DiscriminatorSide(self.model.discriminator, self.run.losses.gan.discriminator)
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.gen_ddp = DDP(self.gen_side, device_ids=ids, broadcast_buffers=True)
            self.disc_ddp = DDP(self.disc_side, device_ids=ids, broadcast_buffers=True)
        else:
            self.gen_ddp, self.disc_ddp = self.gen_side, self.disc_side

        self._setup_logging_outputs(resume_path is not None)
        self._write_run_info()


    def _motion_warmup(self, resume_path: Path | None) -> dict | None:
        """Run the motion warm-up (training/warmup.py) on a new run; a resumed run keeps its first report."""
        if self.run.motion_warmup.steps <= 0:
            return None
        if resume_path is not None:
            try:
                return json.loads((self.run_dir / "run_info.json").read_text(encoding="utf-8"))["run"]["motion_warmup"]
            except (OSError, ValueError, KeyError):
                return None
        from .warmup import warm_up_motion

        domains: list[str] = []  # config validation made sure there is a synthetic source
        for source in self.dataset.sources:
            if source.spec["kind"] == "synthetic":
                domains += [d for d in source.domains if d not in domains]

        torch.manual_seed(self.run.seed)
        self.model.to(self.device)
        return warm_up_motion(self.model, self.cfg, domains, self.image_size, self.device, self.log)

    def _setup_amp(self) -> None:
        """Autocast precision (fp32 master weights either way). CUDA: bf16 where supported, else fp16 with a
        GradScaler. CPU: bf16 only where the CPU has bf16 instructions (``cpu_bf16_support``; "auto"), else fp32;
        an explicit bf16 without them runs emulated, which is slower, and says so."""
        amp = self.run.train.amp
        self.amp_dtype = None
        self.amp_note = ""
        if self.device.type == "cuda":
            if amp == "auto":
                amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            if amp == "bf16":
                self.amp_dtype = torch.bfloat16
            elif amp == "fp16":
                self.amp_dtype = torch.float16
        elif amp == "fp16":
            raise SetupError(f"train.amp = 'fp16' needs a CUDA device; this run is on {self.device} "
                             "(on a CPU use amp = 'bf16', 'auto' or 'off')")
        elif amp in ("auto", "bf16"):
            flags = cpu_bf16_support()
            if flags:
                self.amp_dtype = torch.bfloat16
                self.amp_note = f"bf16 autocast on CPU ({', '.join(flags)})"
            elif amp == "bf16":
                self.amp_dtype = torch.bfloat16
                self.amp_note = ("WARNING: train.amp = 'bf16' on a CPU without amx_bf16 / avx512_bf16: bf16 is "
                                 "emulated and runs slower than fp32 (use amp = 'auto' or 'off')")
            else:
                self.amp_note = "fp32 on CPU (no amx_bf16 / avx512_bf16 in /proc/cpuinfo; amp = 'auto')"
        self.amp_mode = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "off")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _want_sync_bn(self) -> bool:
        s = self.run.train.sync_batchnorm
        if s in (True, "on"):
            if self.device.type != "cuda":
                raise SetupError("train.sync_batchnorm = on needs CUDA devices (torch's SyncBatchNorm is GPU only)")
            return self.dist.distributed
        if s in (False, "off"):
            return False
        return self.dist.distributed and self.device.type == "cuda"

    def _resume(self, path: Path) -> None:
        from .snapshot import is_snapshot, read_snapshot

        snapshot = is_snapshot(path)
        if snapshot:
            state = read_snapshot(path, self.model)
        else:
            state, self._resume_state = self._resume_state or read_resume_state(path), None
        saved_model = json.loads(state.meta["model_config"])
        if saved_model != json.loads(self.model_config.to_json()):
            diff = sorted(k for k in set(saved_model) | set(json.loads(self.model_config.to_json()))
                          if saved_model.get(k) != json.loads(self.model_config.to_json()).get(k))
            raise TrainStateError(f"{path}: trained with another model configuration (differs in {diff}); resume "
                                  "with the run's own config")
        saved_cfg = json.loads(state.meta["config"])
        saved_t = saved_cfg.get("train", {})
        for key in ("batch_size", "accumulate"):
            if saved_t.get(key) != self.cfg["train"][key]:
                self.log(f"warning: train.{key} changed since the checkpoint ({saved_t.get(key)} -> "
                         f"{self.cfg['train'][key]}): the resumed run will not match an uninterrupted one")
        phi = state.extra.get("expression_weights_crc")
        if phi is not None and phi != self._phi_crc():
            raise TrainStateError(f"{path}: the expression encoder differs from the one this run was trained with")
        self._restore(state, self.model, self.optimizers, self.scheduler, self.scaler)
        self.log(f"resumed from {path} at step {state.step} (epoch {state.epoch})"
                 + (": a compact snapshot (fp16 weights, factored Adam second moments, first moments restart at 0; "
                    "close to, not bit-identical with, the uninterrupted run)" if snapshot else ""))

    def _phi_crc(self):
        if self.losses.expression is None:
            return None
        from .checkpointing import _crc

        return [_crc(v) for v in self.losses.expression.state_dict().values()]

    def _setup_logging_outputs(self, resumed: bool) -> None:
        if not self.dist.is_main:
            self.metrics_path = self.run_dir / "metrics.jsonl"
            return
        self._reset_metrics(resumed)
        if self.run.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def describe(self) -> dict:
        return {
            "device": str(self.device), "world_size": self.dist.world, "amp": self.amp_mode, "amp_note": self.amp_note,
            "sync_batchnorm": self.sync_bn, "global_batch": self.global_batch, "accumulate": self.accumulate,
            "micro_batch": self.micro_batch, "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "image_size": self.image_size, "data": self.dataset.describe(), "domains": self.dataset.domains,
            "losses": self.losses.info, "init_from": self.init_info, "motion_warmup": self.warmup_report,
            "model_parameters": sum(p.numel() for n in GENERATOR_MODULES for p in getattr(self.model, n).parameters()),
            "discriminator_parameters": sum(p.numel() for p in self.model.discriminator.parameters()),
        }

    def _write_run_info(self) -> None:
        info = self.describe()
        if self.amp_note:
            self.log(f"precision: {self.amp_note}")
        self.log(f"device {info['device']} x{info['world_size']}, AMP {info['amp']}, global batch {self.global_batch} "
                 f"({self.micro_batch} per micro-batch, accumulate {self.accumulate}), {self.steps_per_epoch} steps/epoch, "
                 f"{self.total_steps} steps in total")
        for s in info["data"]:
            self.log(f"data {s['name']}: {s['kind']} {s['domains']} {s['items']} items, weight {s['weight']}, "
                     f"{s['per_epoch']} per epoch{', ground truth' if s['ground_truth'] else ''}")
        for name, value in self.losses.info.items():
            self.log(f"{name}: {json.dumps(value, default=str)}")
        if self.dist.is_main:
            self._write_json("run_info.json", {"config": public(self.cfg), "run": info, **environment()})

    # ----- the loop ---------------------------------------------------------------------------------
    def _loader(self):
        sampler = StepBatchSampler(self.steps_per_epoch, self.global_batch, self.accumulate, self.dist.world,
                                   self.dist.rank, self.start_step, self.end_step)
        workers = self.run.train.num_workers
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init if workers else None,
            persistent_workers=False, prefetch_factor=4 if workers else None)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _transform(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        e = self.run.losses.equivariance
        g = torch.Generator().manual_seed(seed_for(self.cfg["seed"], "equivariance", step, micro * self.dist.world + self.dist.rank))
        t = L.EquivarianceTransform.random(self.micro_batch, e.sigma_affine, e.sigma_tps, e.points_tps, generator=g)
        cp = t.control_params.to(self.device) if t.control_params is not None else None
        return t.theta.to(self.device), cp

    def _power_iteration_state(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Spectral-norm vectors before a pass over the micro-batches (None without accumulation).

        Each forward in training mode advances spectral normalisation's power iteration. So that every
        micro-batch of a step sees the same normalised weights -- as the processes of a DDP step do -- the
        vectors are reset to their value at the start of the pass before each further micro-batch; they
        advance once per pass and step however the global batch is split.
        """
        if self.accumulate == 1:
            return None
        bufs = [b for n, b in self.model.named_buffers() if n.endswith(("weight_u", "weight_v"))]
        return [(b, b.detach().clone()) for b in bufs]

    @staticmethod
    def _restore_power_iteration(state) -> None:
        if state:
            with torch.no_grad():
                for buf, saved in state:
                    buf.copy_(saved)

    def _set_disc_grad(self, flag: bool) -> None:
        for p in self.model.discriminator.parameters():
            p.requires_grad_(flag)

    def train_step(self, step: int, batches) -> dict:
        epoch = step // self.steps_per_epoch + self.run.train.epoch_offset  # the schedules' epoch
        if epoch != self.scheduler.last_epoch:
            self.scheduler.apply(epoch)
        acc = self.accumulate
        sums: dict[str, float] = {}
        kept = []
        per_domain: dict[int, list[float]] = {}
        # generator side
        self._set_disc_grad(False)
        self.opt_g.zero_grad(set_to_none=True)
        power = self._power_iteration_state()
        for m in range(acc):
            if m:
                self._restore_power_iteration(power)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            theta, control = self._transform(step, m)
            sync = contextlib.nullcontext() if (m == acc - 1 or not self.dist.distributed) else self.gen_ddp.no_sync()
            with sync:
                with self._autocast():
                    losses, out = self.gen_ddp(batch, theta, control, epoch)
                total = sum(v.float() for v in losses.values())
                self.scaler.scale(total / acc).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / acc
            sums["generator_total"] = sums.get("generator_total", 0.0) + float(total.detach()) / acc
            with torch.no_grad():
                l1 = (out["prediction"].float() - batch["driving"]).abs().mean(dim=(1, 2, 3))
                for d, v in zip(batch["domain"].tolist(), l1.tolist()):
                    per_domain.setdefault(d, []).append(v)
            kept.append((batch, out["prediction"].detach(), out["kp_driving"].detach()))
        self.scaler.step(self.opt_g)
        # discriminator side
        self._set_disc_grad(True)
        gan = self.run.losses.gan
        if gan.discriminator and (gan.generator or any(gan.feature_matching)):
            self.opt_d.zero_grad(set_to_none=True)
            power = self._power_iteration_state()
            for m, (batch, pred, _) in enumerate(kept):
                if m:
                    self._restore_power_iteration(power)
                sync = contextlib.nullcontext() if (m == acc - 1 or not self.dist.distributed) else self.disc_ddp.no_sync()
                with sync:
                    with self._autocast():
                        d_loss = self.disc_ddp(batch["driving"], pred)
                    self.scaler.scale(d_loss.float() / acc).backward()
                sums["discriminator"] = sums.get("discriminator", 0.0) + float(d_loss.detach()) / acc
            self.scaler.step(self.opt_d)
        self.scaler.update()
        for i, name in enumerate(self.dataset.domains):  # every domain on every rank: reductions need the same keys
            vals = per_domain.get(i, [])
            sums[f"l1_sum/{name}"] = float(sum(vals))
            sums[f"l1_count/{name}"] = float(len(vals))
        self._last = kept[-1]
        return sums

    def _summarise(self, window: dict[str, list[float]]) -> dict:
        """Means over the logging window and the ranks; reconstruction L1 per data domain."""
        keys = sorted(window)
        local = [sum(window[k]) if k.startswith("l1_") else sum(window[k]) / len(window[k]) for k in keys]
        t = torch.tensor(local, dtype=torch.float64, device=self.device)
        if self.dist.distributed:
            dist.all_reduce(t)
        total = dict(zip(keys, t.tolist()))
        out = {k: v / self.dist.world for k, v in total.items() if not k.startswith("l1_")}
        for k, v in total.items():
            if k.startswith("l1_sum/"):
                n = total[k.replace("l1_sum/", "l1_count/")]
                if n:
                    out["l1/" + k[len("l1_sum/"):]] = v / n
        return out

    def _steps(self):
        return iter(self._loader())

    def _step(self, step: int, batches) -> dict[str, float]:
        try:
            return self.train_step(step, batches)
        except DataError as exc:  # a clip that cannot be read: keep the progress, say which one
            if step > self.start_step:
                self.save(step)
            raise DataError(f"{exc} (at step {step}; progress saved: fix or drop the clip and --resume)") from None

    def _log_window(self, step: int, window: dict[str, list[float]], rate: float) -> None:
        means = self._summarise(window)
        self._log_metrics(step, means, rate)
        self.bar.set_postfix(G=f"{means['generator_total']:.3f}", D=f"{means.get('discriminator', 0):.3f}")

    def _after_step(self, step: int, result: dict) -> bool:
        """Sample grids, and the wall-clock budget (True once it is spent)."""
        t = self.run.train
        if t.sample_every and step % t.sample_every == 0:
            self._save_samples(step)
            self._last_sample = step
        budget = t.max_wall_seconds
        over_budget = bool(budget) and self._any_rank(time.time() - self.t0 >= budget)
        if over_budget and not self._interrupted:
            self.log(f"wall-clock budget spent (train.max_wall_seconds = {budget:g}, {time.time() - self.t0:.0f} s "
                     f"since the start): saving step {step}")
            result["budget_spent"] = True
        return over_budget

    def _after_save(self, step: int) -> None:
        """Epoch snapshots and, under DDP, the parameter check across ranks."""
        t = self.run.train
        if t.snapshot_every_epochs and step % self.steps_per_epoch == 0:
            epoch = step // self.steps_per_epoch
            if epoch % t.snapshot_every_epochs == 0:
                self.save(step, self.ckpt_dir / f"epoch_{epoch:04d}.safetensors")
        check = t.check_sync_every
        if self.dist.distributed and check and step % check == 0:
            self.check_sync(step)

    def _finish(self, step: int, result: dict) -> None:
        if step == self.start_step:
            self.log("nothing to do: the checkpoint is already at the end of the schedule")
        if step > self.start_step and getattr(self, "_last_sample", -1) != step:
            self._save_samples(step)
        if self.dist.distributed:
            result["ranks_in_sync"] = self.check_sync(step)

    # ----- outputs ---------------------------------------------------------------------------------
    def _log_metrics(self, step: int, values: dict, rate: float) -> None:
        if not self.dist.is_main:
            return
        epoch = (step - 1) // self.steps_per_epoch
        remaining = self.end_step - step
        line = {"step": step, "epoch": epoch, "lr": self.opt_g.param_groups[0]["lr"],
                "steps_per_s": round(rate, 4), "eta_s": round(remaining / rate, 1) if rate > 0 else None,
                "time": round(time.time() - self.t0, 2),
                **{k: round(v, 6) for k, v in values.items()}}
        if self.scaler.is_enabled():
            line["grad_scale"] = float(self.scaler.get_scale())
        self._write_metrics(line)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            self.tb.add_scalar("lr", line["lr"], step)
            self.tb.add_scalar("steps_per_s", rate, step)

    def _save_samples(self, step: int) -> None:
        if not self.dist.is_main or not hasattr(self, "_last"):
            return
        from .visualize import sample_grid, save_png

        batch, pred, kp = self._last
        grid = sample_grid(batch["source"], batch["driving"], pred.float(), kp.float())
        save_png(grid, self.run_dir / "samples" / f"step_{step:08d}.png")

    def save(self, step: int, path: Path | None = None) -> None:
        if self.dist.is_main:
            path = path or self.ckpt_dir / "last.safetensors"
            epoch = step // self.steps_per_epoch
            save_train_state(path, self.model, self.optimizers, self.scheduler, self.scaler, step, epoch,
                             public(self.cfg), self.model_config.to_json(),
                             extra={"expression_weights_crc": self._phi_crc(), "world_size": self.dist.world,
                                    "config_hash": config_hash(public(self.cfg))})
        self.barrier()

    def check_sync(self, step: int) -> bool:
        """Compare a CRC of every parameter across ranks (exact); logs and returns whether all agree.

        Buffers are reported but not required to agree: BatchNorm running statistics are per process
        under DDP without SyncBatchNorm (each rank sees its own batches; rank 0's are saved), as in DDP.
        """
        from .checkpointing import _crc

        names = [n for n, _ in self.model.named_parameters()]
        buffers = [n for n, _ in self.model.named_buffers()]
        state = self.model.state_dict()
        crcs = torch.tensor([_crc(state[n]) for n in names + buffers], dtype=torch.int64)
        gathered = [torch.zeros_like(crcs) for _ in range(self.dist.world)]
        if self.device.type == "cuda":
            out = [g.to(self.device) for g in gathered]
            dist.all_gather(out, crcs.to(self.device))
            gathered = [g.cpu() for g in out]
        else:
            dist.all_gather(gathered, crcs)
        n = len(names)
        same = all(torch.equal(gathered[0][:n], g[:n]) for g in gathered[1:])
        differing = sorted({buffers[i] for g in gathered[1:] for i in range(len(buffers))
                            if g[n + i] != gathered[0][n + i]})
        if self.dist.is_main:
            self.log(f"step {step}: parameters identical on all {self.dist.world} ranks: {same}"
                     + (f" ({len(differing)} per-process buffers, e.g. {differing[0]})" if differing else ""))
            self._write_metrics({"step": step, "ranks_in_sync": same, "world_size": self.dist.world,
                                 "buffers_differing": len(differing),
                                 "buffers_differing_kinds": sorted({b.rsplit(".", 1)[1] for b in differing})})
        return same

    def provenance(self, step: int) -> dict:
        return {
            "trainer": "anytalk-train", "config": self.cfg.get("_config_path", ""), "name": self.cfg["name"],
            "step": step, "epoch": step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
            "global_batch": self.global_batch, "seed": self.cfg["seed"], "domains": self.dataset.domains,
            "data": [{k: s[k] for k in ("name", "kind", "domains", "items", "weight")} for s in self.dataset.describe()],
            "losses": self.losses.info, "init_from": self.init_info,
            "loss_weights": {"perceptual": self.cfg["perceptual"]["weights"], "gan": self.cfg["gan"]["generator"],
                             "feature_matching": self.cfg["gan"]["feature_matching"],
                             "equivariance": self.cfg["equivariance"]["weight"],
                             "keypoint_prior": self.cfg["keypoint_prior"]["weight"],
                             "head_pose": self.cfg["head_pose"]["weight"],
                             "deformation_prior": self.cfg["deformation_prior"]["weight"],
                             "expression": self.cfg["expression"]["weight"]},
        }

    def export(self, path: str | os.PathLike | None = None, step: int | None = None) -> str | None:
        """Write the inference checkpoint (our format; Load Model and ``anytalk`` read it) and check it loads."""
        if not self.dist.is_main:
            self.barrier()
            return None
        from anytalk_core.checkpoints import load_model
        step = self.end_step if step is None else step
        target = free_path(path or self.run_dir / "model.safetensors")
        model = self.model
        if self.sync_bn:  # plain BatchNorm modules for export (identical state-dict keys)
            model = build_model(self.model_config, with_discriminator=True)
            model.load_state_dict({k: v.cpu() for k, v in self.model.state_dict().items()})
        save_checkpoint(model, target, provenance=self.provenance(step),
                        include_discriminator=self.run.train.export_include_discriminator)
        load_model(target)  # the file must load with the library's own loader
        self.log(f"exported inference checkpoint {target}")
        self.barrier()
        return target


def _worker_init(worker_id: int) -> None:  # noqa: ARG001
    torch.set_num_threads(1)

