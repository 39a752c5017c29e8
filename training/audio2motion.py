"""Audio-to-motion training (``task = "audio2motion"``, SPEC §6): (audio, motion) pairs -> ``audio2motion.``.

``anytalk-train training/configs/audio2motion.toml model.init_from=BASE.safetensors`` trains the audio-to-motion
network of :mod:`anytalk_core.models.audio2motion` and exports BASE with that part added, into a new file.

Targets (``target.kind``):

``motion_estimator``
    the motion estimator M of the base checkpoint (``model.init_from``) run over each clip's frames: the
    expression deltas, head pose and translation the model itself would read from that video. Frames are
    streamed in chunks and each clip's motion is cached on disk (``data.cache_dir``, default
    ``<run>/motion_cache/<checkpoint hash>/<clip key>.safetensors``; the key holds the video's path, size and
    modification time, or a synthetic clip's seeds), so later runs and resumes skip the estimator.
``synthetic``
    the renderer's ground truth (head pose and the expression fields in ``target.params``, default
    ``jaw_open``); no base model and no export (the network does not predict keypoints). Used to measure
    lip sync directly.

Sources (``[[data.sources]]`` and held-out ``[[data.val_sources]]``):

``kind = "synthetic"``: ``domains``, ``num_clips``, ``frames_per_clip``, ``seed``, optional ``fps`` (default
``data.fps``): talking clips of the procedural renderer whose jaw follows a synthetic speech track;
frames are rendered only when the estimator needs them (a cache miss). Ground-truth ``jaw_open`` is kept
for evaluation.
``kind = "video_folder"``: ``path`` to talking-head videos with sound (``.mp4 .webm .mov .mkv .avi .m4v``,
searched recursively), optional ``max_clips``. Frames are taken whole (``anytalk animate``'s ``full``
crop), so use face-cropped clips as for the talking-head trainer.

Run folder: ``checkpoints/last.safetensors`` (atomic training state: network, AdamW moments, schedule, RNG,
step, CRC-32s; ``--resume`` continues exactly), ``metrics.jsonl`` (losses, lr, steps/s, ETA; held-out
``eval/*`` lines), ``train.log``, ``run_info.json``, ``eval.json`` and ``model.safetensors``.

Held-out metrics (on ``val_sources``; on the streamed inference path): ``eval/loss``; where ground-truth
mouth opening exists, ``eval/mouth_r`` (Pearson r between predicted and true jaw opening over all frames)
and ``eval/mouth_lag`` (frames at the peak of their cross-correlation; positive = prediction late). The
predicted mouth opening is the ``jaw_open`` output when trained, otherwise a linear read-out of the
predicted expression deltas fitted on the training clips' targets against their true jaw opening
(``eval/readout_r`` also reports it for M's own motion, the ceiling).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anytalk_core.audio_features import HOP, SAMPLE_RATE, feature_extractor, frame_windows, padded_slice
from anytalk_core.audio_motion import attach_audio2motion, predict_outputs
from anytalk_core.models.audio2motion import AudioToMotion
from anytalk_core.models.config import AudioToMotionConfig, ModelConfig
from anytalk_eval.metrics.sync import mouth_metrics

from .audio_data import AudioClip, MotionTeacher, load_clips, normalise_audio_source, video_files
from .checkpointing import EpochMultiStepLR, TrainStateError, read_resume_state, save_train_state
from .config import ConfigError, config_hash, public
from .runloop import DistInfo, RunLoop, SetupError, end_step, environment, free_path, seed_for
from .settings import RunSettings

__all__ = ["AudioMotionTrainer"]


class AudioMotionTrainer(RunLoop):
    """``AudioMotionTrainer(config, resume=...).fit()``; every check happens in the constructor."""

    def _init_device(self, run: RunSettings) -> DistInfo:
        want = run.device
        if want == "auto":
            return DistInfo(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        device = torch.device(want)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SetupError(f"device = {want!r} but no CUDA device is available (use device = 'auto' or 'cpu')")
        return DistInfo(device=device)

    def _setup(self, resume: bool | str) -> None:
        t = self.run.train
        resume_path = self._resume_path(resume)
        if self.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        target = self.run.audio.target
        self.init_from = os.path.expanduser(self.run.model.init_from)
        if target.kind == "motion_estimator" and not self.init_from:
            raise SetupError("target.kind = 'motion_estimator' needs model.init_from: the inference checkpoint whose "
                             "motion estimator gives the targets (and which the export extends), e.g. "
                             "model.init_from=assets/demo/anytalk_demo.safetensors")
        if self.init_from and os.path.isdir(self.init_from):
            raise SetupError(f"model.init_from: {self.init_from} is a folder; convert it to one file first: "
                             f"anytalk convert {self.init_from} model.safetensors")
        if self.init_from and not os.path.isfile(self.init_from):
            raise SetupError(f"model.init_from: {self.init_from}: file not found")
        # a damaged resume checkpoint fails before the clips are loaded (naming an intact older snapshot)
        self._resume_state = read_resume_state(resume_path) if resume_path is not None else None
        data = self.run.data
        self.sources = [normalise_audio_source(s, i, data.fps, "data.sources") for i, s in enumerate(data.sources)]
        self.val_sources = [normalise_audio_source(s, i, data.fps, "data.val_sources")
                            for i, s in enumerate(data.val_sources)]
        if target.kind == "synthetic" and any(s["kind"] != "synthetic" for s in self.sources + self.val_sources):
            raise SetupError("target.kind = 'synthetic' needs synthetic sources only (videos have no ground truth); "
                             "use target.kind = 'motion_estimator' with model.init_from for videos")
        for s in self.sources + self.val_sources:  # a bad folder fails before any work
            if s["kind"] == "video_folder":
                video_files(s)
        self._open_run_dir("checkpoints")

        # the network's configuration
        base_config = _base_config(self.init_from) if self.init_from else None
        self.net_config = self._net_config(base_config)
        teacher = None
        if target.kind == "motion_estimator":
            cache = Path(os.path.expanduser(data.cache_dir)) if data.cache_dir else \
                self.run_dir / "motion_cache"
            try:
                teacher = MotionTeacher(self.init_from, cache, self.device, self.log)
            except ValueError as exc:
                raise SetupError(f"model.init_from: {exc}") from None
        self.clips = load_clips(self.sources, self.net_config, teacher, self.log)
        self.val_clips = load_clips(self.val_sources, self.net_config, teacher, self.log)
        if teacher is not None:
            self.log(f"motion estimator targets: {teacher.hits} clips from the cache, {teacher.misses} computed "
                     f"({teacher.cache})")
            self.teacher_digest = teacher.digest
            del teacher
        self.extractor = feature_extractor(self.net_config, self.device)

        # network, optimiser, schedule
        torch.manual_seed(self.run.seed)
        self.net = AudioToMotion(self.net_config).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.optimizers = {"audio2motion": self.opt}
        self.scheduler = EpochMultiStepLR([self.opt], t.lr, list(t.lr_milestones), t.lr_gamma)
        self.total_steps = t.steps
        self.end_step = end_step(t, self.total_steps)
        self.start_step = 0
        if resume_path is not None:
            self._resume(resume_path)
        else:
            self._set_statistics()
        self.readout = self._fit_readout()
        self._setup_outputs(resume_path is not None)


    def _net_config(self, base: ModelConfig | None) -> AudioToMotionConfig:
        target = self.run.audio.target
        params = list(target.params) or (["jaw_open"] if target.kind == "synthetic" else [])
        from anytalk_core.synthetic import EXPRESSION_FIELDS

        bad = [p for p in params if p not in EXPRESSION_FIELDS]
        if bad:
            raise ConfigError(f"target.params: unknown fields {bad} (known: {list(EXPRESSION_FIELDS)})")
        if target.kind == "motion_estimator":
            fields = dict(family=base.family, num_kp=base.num_kp, with_scale=base.convention.uses_scale)
        else:
            fields = dict(family="synthetic", num_kp=0, with_scale=False)
        data = {**fields, "predict_pose": target.pose, "params": params}
        extra = dict(self.run.model.audio2motion)
        clash = sorted(set(extra) & {"family", "num_kp", "predict_pose", "params", "with_scale", "feature_dim",
                                      "feature_rate"})
        if clash:
            raise ConfigError(f"model.audio2motion: {clash} follow from the base model and target.* (remove them)")
        try:
            config = AudioToMotionConfig(**{**data, **extra})
        except TypeError as exc:
            raise ConfigError(f"model.audio2motion: {exc}") from None
        try:
            extractor = feature_extractor(config, "cpu")
        except (ImportError, OSError, ValueError) as exc:
            raise ConfigError(f"model.audio2motion: {exc}") from None
        config.feature_dim, config.feature_rate = int(extractor.dim), float(extractor.rate)
        try:
            AudioToMotion(config)
        except ValueError as exc:
            raise ConfigError(f"model.audio2motion: {exc}") from None
        return config

    @torch.no_grad()
    def _set_statistics(self) -> None:
        """Feature and target normalisation from the training clips (stored in the network's buffers)."""
        feats = []
        for clip in self.clips[:256]:
            n_feat = int(clip.waveform.shape[0] / SAMPLE_RATE * self.extractor.rate)
            feats.append(self.extractor(clip.waveform, 0, max(1, n_feat)))
        f = torch.cat(feats)
        self.net.feature_mean.copy_(f.mean(0))
        self.net.feature_std.copy_(f.std(0).clamp(min=1e-3))
        y = torch.cat([c.target for c in self.clips]).double()
        known = torch.isfinite(y)
        y0 = torch.where(known, y, torch.zeros_like(y))
        count = known.sum(0).clamp(min=1)
        mean = y0.sum(0) / count
        std = (((y0 - mean) * known).square().sum(0) / count).sqrt()
        self.net.target_mean.copy_(mean.float())
        self.net.target_std.copy_(torch.where(std > 1e-4, std, torch.ones_like(std)).float())

    def _fit_readout(self) -> torch.Tensor | None:
        """Least-squares map from expression deltas (+1) to the true jaw opening, on the training clips."""
        if not self.net_config.num_kp:
            return None
        rows = [(c.target[:, :3 * self.net_config.num_kp], c.jaw) for c in self.clips if c.jaw is not None]
        if not rows:
            return None
        x = torch.cat([r[0] for r in rows]).double()
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        y = torch.cat([r[1] for r in rows]).double()[:, None]
        return torch.linalg.lstsq(x, y).solution[:, 0].float()

    def _resume(self, path: Path) -> None:
        state, self._resume_state = self._resume_state or read_resume_state(path), None
        saved = json.loads(state.meta["model_config"])
        if saved != json.loads(_net_config_json(self.net_config)):
            raise TrainStateError(f"{path}: trained with another audio-to-motion configuration; resume with the run's "
                                  "own config")
        self._restore(state, self.net, self.optimizers, self.scheduler, None)
        self.log(f"resumed from {path} at step {state.step}")

    def _setup_outputs(self, resumed: bool) -> None:
        self._reset_metrics(resumed)
        frames = sum(c.n_frames for c in self.clips)
        info = {"config": public(self.cfg), "device": str(self.device), **environment(),
                "network": json.loads(_net_config_json(self.net_config)),
                "parameters": sum(p.numel() for p in self.net.parameters()),
                "train_clips": len(self.clips), "train_frames": frames, "val_clips": len(self.val_clips)}
        self._write_json("run_info.json", info)
        self.log(f"audio2motion: {info['parameters']} parameters, {len(self.clips)} training clips ({frames} frames), "
                 f"{len(self.val_clips)} held-out clips, {self.total_steps} steps, device {self.device}")

    # ----- batches ---------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature windows [B, L, W, F] and targets [B, L, out] of a step (keyed by (seed, step) alone)."""
        t, aug = self.run.train, self.run.audio.augment
        g = np.random.default_rng(seed_for(self.cfg["seed"], "batch", step))
        length = t.clip_frames
        context = self.net_config.context
        windows, targets = [], []
        for _ in range(t.batch_size):
            clip = self.clips[int(g.integers(len(self.clips)))]
            start = int(g.integers(max(1, clip.n_frames - length + 1)))
            # the audio this crop needs (HOP-aligned so features equal those of the whole clip)
            margin = (context + 2) / self.extractor.rate + getattr(self.extractor, "margin", 0.0) + 0.05
            first = int(math.floor((start / clip.fps - margin) * SAMPLE_RATE / HOP)) * HOP
            last = int(math.ceil(((start + length) / clip.fps + margin) * SAMPLE_RATE))
            segment = padded_slice(clip.waveform, first, last)
            gain = 10 ** (float(g.uniform(-1, 1)) * aug.gain_db / 20)
            noise = float(g.uniform(0, aug.noise))
            if noise > 0:
                segment = segment * gain + noise * torch.from_numpy(g.standard_normal(segment.shape[0]).astype(np.float32))
            else:
                segment = segment * gain
            windows.append(frame_windows(self.extractor, segment, start, length, clip.fps, context, start_sample=first))
            y = clip.target[start:start + length]
            if y.shape[0] < length:  # a clip shorter than the crop: the rest is not trained on
                y = torch.cat([y, torch.full((length - y.shape[0], y.shape[1]), float("nan"))])
            targets.append(y)
        return torch.stack(windows), torch.stack(targets)

    def losses(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted smooth-L1 per output group on normalised values, plus a velocity term."""
        lw = self.run.audio.loss
        c = self.net_config
        t = self.net.normalize_target(target)
        known = torch.isfinite(t)
        t = torch.where(known, t, torch.zeros_like(t))
        err = F.smooth_l1_loss(pred, t, reduction="none", beta=0.5) * known
        groups = {"expression": slice(0, 3 * c.num_kp), "pose": slice(3 * c.num_kp, 3 * c.num_kp + c.pose_size),
                  "params": slice(3 * c.num_kp + c.pose_size, c.output_size)}
        out = {}
        for name, sl in groups.items():
            if sl.stop > sl.start and getattr(lw, name):
                out[name] = getattr(lw, name) * err[..., sl].sum() / known[..., sl].sum().clamp(min=1)
        if lw.velocity:
            both = known[:, 1:] & known[:, :-1]
            dv = (pred[:, 1:] - pred[:, :-1]) - (t[:, 1:] - t[:, :-1])
            out["velocity"] = lw.velocity * (dv.abs() * both).sum() / both.sum().clamp(min=1)
        return out

    # ----- loop ------------------------------------------------------------------------------------
    def _step(self, step: int, batches) -> dict[str, float]:
        self.scheduler.apply(step)
        self.net.train()
        windows, target = self.batch(step)
        pred = self.net(windows.to(self.device))
        losses = self.losses(pred, target.to(self.device))
        total = sum(losses.values())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        return {k: float(v.detach()) for k, v in {**losses, "total": total}.items()}

    def _log_window(self, step: int, window: dict[str, list[float]], rate: float) -> None:
        means = {f"loss/{k}" if k != "total" else "loss": sum(v) / len(v) for k, v in window.items()}
        self._write_metrics({"step": step, "lr": self.opt.param_groups[0]["lr"], "steps_per_s": round(rate, 3),
                             "eta_s": round((self.end_step - step) / rate, 1) if rate > 0 else None,
                             "time": round(time.time() - self.t0, 2),
                             **{k: round(v, 6) for k, v in means.items()}})
        self.bar.set_postfix(loss=f"{means['loss']:.4f}")

    def _after_step(self, step: int, result: dict) -> bool:
        eval_every = self.run.train.eval_every
        if self.val_clips and eval_every and step % eval_every == 0 and step != self.end_step:
            self._write_metrics({"step": step, **self.evaluate()})
        return False

    def _finish(self, step: int, result: dict) -> None:
        if self.val_clips and not result.get("interrupted"):
            result["eval"] = self.evaluate()
            self._write_metrics({"step": step, **result["eval"]})
            self._write_json("eval.json", {"step": step, **result["eval"]})
            self.log("held-out: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in result["eval"].items()))

    def _final_export(self, step: int, result: dict) -> str | None:
        return self.export(step=step, metrics=result.get("eval"))

    @torch.no_grad()
    def predict(self, clip: AudioClip) -> torch.Tensor:
        """Outputs [N, output_size] of a whole clip on the streamed inference path."""
        self.net.eval()
        return predict_outputs(self.net, clip.waveform, clip.fps, clip.n_frames, chunk=128, extractor=self.extractor)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out loss and, where the true jaw opening is known, mouth r and lip-sync lag."""
        c = self.net_config
        out: dict = {}
        losses, pairs, readout_pairs, teacher_pairs = [], [], [], []
        jaw_index = (3 * c.num_kp + c.pose_size + list(c.params).index("jaw_open")) if "jaw_open" in c.params else None
        for clip in self.val_clips:
            y = self.predict(clip)
            t = self.net.normalize_target(clip.target.to(self.net.target_mean.device)).cpu()
            p = self.net.normalize_target(y.to(self.net.target_mean.device)).cpu()
            known = torch.isfinite(t)
            losses.append(float(((p - torch.where(known, t, p)) ** 2).sum() / known.sum().clamp(min=1)))
            if clip.jaw is None:
                continue
            if jaw_index is not None:
                pairs.append((y[:, jaw_index], clip.jaw))
            if self.readout is not None:
                k3 = 3 * c.num_kp
                readout_pairs.append((y[:, :k3] @ self.readout[:k3] + self.readout[k3], clip.jaw))
                teacher_pairs.append((clip.target[:, :k3] @ self.readout[:k3] + self.readout[k3], clip.jaw))
        out["eval/loss"] = sum(losses) / max(1, len(losses))
        if pairs:
            m = mouth_metrics(pairs)
            out.update({"eval/mouth_r": m["r"], "eval/mouth_lag": m["lag"]})
        if readout_pairs:
            m = mouth_metrics(readout_pairs)
            out.update({"eval/readout_r": m["r"], "eval/readout_lag": m["lag"],
                        "eval/readout_r_teacher": mouth_metrics(teacher_pairs)["r"]})
            if not pairs:
                out.update({"eval/mouth_r": m["r"], "eval/mouth_lag": m["lag"]})
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}

    # ----- outputs ---------------------------------------------------------------------------------
    def save(self, step: int) -> None:
        save_train_state(self.ckpt_dir / "last.safetensors", self.net, self.optimizers, self.scheduler, None, step,
                         0, public(self.cfg), _net_config_json(self.net_config),
                         extra={"task": "audio2motion", "config_hash": config_hash(public(self.cfg))})

    def export(self, path: str | os.PathLike | None = None, step: int | None = None, metrics: dict | None = None) -> str | None:
        """Write ``model.init_from`` with this audio-to-motion part into a new file (never over an existing one)."""
        from anytalk_core.checkpoints import load_model, model_from_weights, read_weights, save_checkpoint

        if not self.init_from or not self.net_config.num_kp:
            self.log("nothing to export: a network trained on renderer ground truth predicts renderer parameters, "
                     "not a model's keypoint motion (its weights stay in checkpoints/last.safetensors)")
            return None
        weights = read_weights(self.init_from)
        has_disc = any(k.startswith("discriminator.") for k in weights.state)
        replaced = any(k.startswith("audio2motion.") for k in weights.state)
        if weights.config is not None:
            weights.config.audio2motion = None
        weights.state = {k: v for k, v in weights.state.items() if not k.startswith("audio2motion.")}
        base = model_from_weights(weights, with_discriminator=has_disc)
        net = AudioToMotion(self.net_config)
        net.load_state_dict({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
        attach_audio2motion(base, net.eval())
        provenance = dict(getattr(base, "provenance", {}) or {})
        provenance["audio2motion"] = {
            "trainer": "anytalk-train (task audio2motion)", "config": self.cfg.get("_config_path", ""),
            "name": self.cfg["name"], "step": self.end_step if step is None else step, "target": self.cfg["target"],
            "data": [{k: v for k, v in s.items()} for s in self.sources],
            "base": {"path": os.path.abspath(self.init_from), "sha256": getattr(self, "teacher_digest", None)},
            "held_out": metrics or {}, "readout": None if self.readout is None else self.readout.tolist(),
        }
        target = free_path(path or self.run_dir / "model.safetensors")
        save_checkpoint(base, target, provenance=provenance, include_discriminator=has_disc)
        load_model(target)  # the file must load with the library's own loader
        self.log(f"exported {target} ({os.path.basename(self.init_from)} + audio2motion"
                 + (", replacing its earlier audio-to-motion part" if replaced else "") + ")")
        return target



def _net_config_json(config: AudioToMotionConfig) -> str:
    import dataclasses

    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def _base_config(path: str) -> ModelConfig:
    from anytalk_core.checkpoints import CheckpointError, read_weights
    from anytalk_core.models.registry import get_family

    try:
        weights = read_weights(path)
        return weights.config if weights.config is not None else get_family(weights.family).infer_config(weights.state)
    except (CheckpointError, ValueError) as exc:
        raise SetupError(f"model.init_from: {exc}") from None
