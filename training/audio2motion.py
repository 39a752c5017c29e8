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

import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anytalk_core.audio_features import (
    HOP,
    SAMPLE_RATE,
    feature_extractor,
    frame_windows,
    padded_slice,
    prepare_audio,
)
from anytalk_core.audio_motion import attach_audio2motion, predict_outputs
from anytalk_core.models.audio2motion import AudioToMotion
from anytalk_core.models.config import AudioToMotionConfig, ModelConfig
from anytalk_core.motion import Motion
from anytalk_eval.metrics.sync import mouth_metrics

from .checkpointing import (EpochMultiStepLR, TrainStateError, install_interrupt_handlers, read_resume_state,
                            restore_signal_handlers, restore_train_state, save_train_state)
from .config import ConfigError, config_hash, output_dir, public
from .data import DataError
from .trainer import SetupError, free_path, seed_for

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
_SYNTH_KEYS = {"kind", "name", "domains", "num_clips", "frames_per_clip", "seed", "fps"}
_VIDEO_KEYS = {"kind", "name", "path", "max_clips"}

__all__ = ["AudioMotionTrainer", "AudioClip", "export_from_checkpoint"]


# ------------------------------------------------------------------------------------------------
# Clips and their targets
# ------------------------------------------------------------------------------------------------

@dataclass
class AudioClip:
    """One talking clip: prepared audio (mono 16 kHz [T]), fps, targets [N, output_size] in motion units
    (NaN where a source has no value), and the true jaw opening [N] when known."""

    name: str
    waveform: torch.Tensor
    fps: float
    target: torch.Tensor
    jaw: torch.Tensor | None = None

    @property
    def n_frames(self) -> int:
        return int(self.target.shape[0])


def normalise_audio_source(spec: dict, index: int, default_fps: float, origin: str) -> dict:
    where = f"{origin}[{index}]"
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected a table, got {spec!r}")
    s = dict(spec)
    kind = s.get("kind", "video_folder")
    s["kind"] = kind
    if kind == "synthetic":
        from . import synthetic_source as syn

        unknown = set(s) - _SYNTH_KEYS
        if unknown:
            raise DataError(f"{where}: unknown keys {sorted(unknown)} for a synthetic source (known: {sorted(_SYNTH_KEYS)})")
        s.setdefault("domains", list(syn.DOMAINS))
        s.setdefault("num_clips", 64)
        s.setdefault("frames_per_clip", 100)
        s.setdefault("seed", 0)
        s.setdefault("fps", default_fps)
        try:
            syn.check_domains(s["domains"], where)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if int(s["num_clips"]) < 1 or int(s["frames_per_clip"]) < 2 or not float(s["fps"]) > 0:
            raise DataError(f"{where}: num_clips must be >= 1, frames_per_clip >= 2 and fps > 0")
    elif kind == "video_folder":
        unknown = set(s) - _VIDEO_KEYS
        if unknown:
            raise DataError(f"{where}: unknown keys {sorted(unknown)} for a video_folder source (known: {sorted(_VIDEO_KEYS)})")
        if not s.get("path"):
            raise DataError(f"{where}: a video_folder source needs a 'path' (a folder of talking videos with sound)")
        s["path"] = os.path.expanduser(str(s["path"]))
        s.setdefault("max_clips", 0)
    else:
        raise DataError(f"{where}: unknown source kind {kind!r} (synthetic or video_folder)")
    s.setdefault("name", f"{kind}{index}")
    return s


def _video_files(spec: dict) -> list[Path]:
    root = Path(spec["path"])
    where = f"data source {spec['name']!r}"
    if not root.is_dir():
        raise DataError(f"{where}: folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if spec["max_clips"]:
        files = files[: int(spec["max_clips"])]
    if not files:
        raise DataError(f"{where}: no videos ({' '.join(VIDEO_SUFFIXES)}) under {root}")
    return files


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (read in blocks): the cache key of a base checkpoint."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _key(data: dict) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


class MotionTeacher:
    """The base model's motion estimator with an on-disk cache of each clip's motion."""

    def __init__(self, path: str, cache_dir: Path, device: torch.device, log):
        from anytalk_core.checkpoints import load_model
        from anytalk_core.engine import Engine, EngineConfig

        self.path = path
        self.digest = file_digest(path)
        self.model = load_model(path)
        self.engine = Engine(self.model, EngineConfig(device=str(device), chunk_size=16))
        self.cache = cache_dir / self.digest[:16]
        self.log = log
        self.hits = self.misses = 0

    @property
    def size(self) -> int:
        return int(self.model.config.image_size)

    def motion(self, key: dict, frames_fn, fps: float) -> Motion:
        """The cached motion of a clip, or M over ``frames_fn()`` (an iterable of (n, 3, H, W) chunks)."""
        path = self.cache / f"{_key(key)}.safetensors"
        if path.exists():
            try:
                motion = Motion.load(path)
                self.hits += 1
                return motion
            except ValueError:
                path.unlink()  # a damaged cache file: compute it again
        self.misses += 1
        motion = self.engine.estimate_motion(frames_fn(), fps=fps)
        self.cache.mkdir(parents=True, exist_ok=True)
        motion.save(path, overwrite=True)
        return motion


def build_target(config: AudioToMotionConfig, n: int, motion: Motion | None, pose_gt: torch.Tensor | None,
                 expression_gt: torch.Tensor | None) -> torch.Tensor:
    """Target rows [n, output_size] in the network's output layout (NaN where unknown)."""
    from anytalk_core.synthetic import EXPRESSION_FIELDS

    parts = []
    nan = torch.full((n, 1), float("nan"))
    if config.num_kp:
        parts.append(motion.expression.reshape(n, -1).float())
    if config.predict_pose:
        if motion is not None:
            cols = [motion.yaw, motion.pitch, motion.roll, *motion.translation.unbind(1)]
            if config.with_scale:
                cols.append(motion.scale if motion.scale is not None else torch.ones(n))
        else:  # renderer ground truth: yaw, pitch, roll, tx, ty, (no depth), scale
            cols = [pose_gt[:, 0], pose_gt[:, 1], pose_gt[:, 2], pose_gt[:, 3], pose_gt[:, 4], torch.zeros(n)]
            if config.with_scale:
                cols.append(pose_gt[:, 5])
        parts.append(torch.stack([c.float() for c in cols], 1))
    for name in config.params:
        parts.append(expression_gt[:, EXPRESSION_FIELDS.index(name)].float()[:, None] if expression_gt is not None else nan)
    return torch.cat(parts, 1)


def load_clips(sources: list[dict], config: AudioToMotionConfig, teacher: MotionTeacher | None, log) -> list[AudioClip]:
    """Every clip of the sources with its prepared audio and targets."""
    from anytalk_core import synthetic
    from anytalk_core.crop import apply_crop, crop_full
    from anytalk_core.media import iter_video_frames, probe_video, read_audio

    clips: list[AudioClip] = []
    for spec in sources:
        t0 = time.time()
        if spec["kind"] == "synthetic":
            fps, n = float(spec["fps"]), int(spec["frames_per_clip"])
            for c in range(int(spec["num_clips"])):
                domain = spec["domains"][c % len(spec["domains"])]
                pose, expr, speech = synthetic.sample_motion(n, fps, np.random.default_rng([int(spec["seed"]), c]),
                                                              with_audio=True)
                motion = None
                if teacher is not None:
                    identity = synthetic.sample_identity(domain, np.random.default_rng([int(spec["seed"]), c, 1]))
                    key = {"kind": "synthetic", "domain": domain, "seed": int(spec["seed"]), "clip": c, "n": n,
                           "fps": fps, "size": teacher.size, "version": 1}

                    def frames(identity=identity, pose=pose, expr=expr):
                        for i in range(0, n, 32):
                            out = synthetic.render_sequence(identity, pose[i:i + 32], expr[i:i + 32], teacher.size)
                            yield out.images.permute(0, 3, 1, 2)

                    motion = teacher.motion(key, frames, fps)
                wave = prepare_audio((speech.waveform, speech.sample_rate))
                target = build_target(config, n, motion, pose, expr)
                clips.append(AudioClip(f"{spec['name']}/{c}", wave, fps, target, expr[:, 0].clone()))
        else:
            for path in _video_files(spec):
                where = f"data source {spec['name']!r}: {path}"
                try:
                    info = probe_video(path)
                    if not info.has_audio:
                        raise DataError(f"{where}: the video has no sound track")
                    waveform, rate = read_audio(path)
                    fps = float(info.fps)
                    stat = path.stat()
                    key = {"kind": "video", "path": str(path.resolve()), "size": stat.st_size,
                           "mtime_ns": stat.st_mtime_ns, "crop": "full", "version": 1}

                    def frames(path=path):
                        spec_crop = None
                        for chunk in iter_video_frames(path, chunk=32):
                            x = chunk.permute(0, 3, 1, 2).float() / 255
                            spec_crop = spec_crop or crop_full(tuple(x.shape[-2:]), teacher.size)
                            yield apply_crop(x, spec_crop)

                    motion = teacher.motion(key, frames, fps)
                except (OSError, ValueError) as exc:
                    if isinstance(exc, DataError):
                        raise
                    raise DataError(f"{where}: cannot read it ({exc})") from None
                n = len(motion)
                target = build_target(config, n, motion, None, None)
                clips.append(AudioClip(f"{spec['name']}/{path.name}", prepare_audio((waveform, rate)), fps, target))
        log(f"data {spec['name']}: {spec['kind']}, {sum(1 for c in clips if c.name.startswith(spec['name'] + '/'))} "
            f"clips ready in {time.time() - t0:.1f} s")
    return clips


# ------------------------------------------------------------------------------------------------
# Trainer
# ------------------------------------------------------------------------------------------------

class AudioMotionTrainer:
    """``AudioMotionTrainer(config, resume=...).fit()``; every check happens in the constructor."""

    def __init__(self, config: dict, resume: bool | str = False, log_stream=None):
        self.cfg = config
        self.stream = log_stream or sys.stderr
        self.t0 = time.time()
        self._log_file = None
        self._interrupted = False
        if config["threads"]:
            torch.set_num_threads(int(config["threads"]))
        want = str(config["device"])
        if want == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(want)
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise SetupError(f"device = {want!r} but no CUDA device is available (use device = 'auto' or 'cpu')")
        self.run_dir = output_dir(config)
        self.ckpt_dir = self.run_dir / "checkpoints"
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    # ----- setup -----------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[anytalk-train] {message}"
        bar = getattr(self, "bar", None)
        if bar is not None and not bar.disable:
            bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
        if self._log_file is not None:
            self._log_file.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
            self._log_file.flush()

    def _setup(self, resume: bool | str) -> None:
        cfg, t = self.cfg, self.cfg["train"]
        last = self.ckpt_dir / "last.safetensors"
        resume_path = None
        if resume:
            resume_path = Path(resume) if isinstance(resume, str) else last
            if not resume_path.exists():
                raise SetupError(f"--resume: no training checkpoint at {resume_path} (nothing to resume; start "
                                 "without --resume)")
        elif last.exists():
            raise SetupError(f"{self.run_dir} already holds a training run ({last}); pass --resume to continue it "
                             "or choose another output_dir / name")
        if cfg["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        target = cfg["target"]
        self.init_from = os.path.expanduser(cfg["model"]["init_from"])
        if target["kind"] == "motion_estimator" and not self.init_from:
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
        fps = float(cfg["data"]["fps"])
        self.sources = [normalise_audio_source(s, i, fps, "data.sources") for i, s in enumerate(cfg["data"]["sources"])]
        self.val_sources = [normalise_audio_source(s, i, fps, "data.val_sources")
                            for i, s in enumerate(cfg["data"]["val_sources"])]
        if target["kind"] == "synthetic" and any(s["kind"] != "synthetic" for s in self.sources + self.val_sources):
            raise SetupError("target.kind = 'synthetic' needs synthetic sources only (videos have no ground truth); "
                             "use target.kind = 'motion_estimator' with model.init_from for videos")
        for s in self.sources + self.val_sources:  # a bad folder fails before any work
            if s["kind"] == "video_folder":
                _video_files(s)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        self._log_file = open(self.run_dir / "train.log", "a", encoding="utf-8")

        # the network's configuration
        base_config = _base_config(self.init_from) if self.init_from else None
        self.net_config = self._net_config(base_config)
        teacher = None
        if target["kind"] == "motion_estimator":
            cache = Path(os.path.expanduser(cfg["data"]["cache_dir"])) if cfg["data"]["cache_dir"] else \
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
        torch.manual_seed(int(cfg["seed"]))
        self.net = AudioToMotion(self.net_config).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
        self.optimizers = {"audio2motion": self.opt}
        self.scheduler = EpochMultiStepLR([self.opt], float(t["lr"]), list(t["lr_milestones"]), float(t["lr_gamma"]))
        self.total_steps = int(t["steps"])
        self.end_step = min(self.total_steps, int(t["stop_after"])) if int(t["stop_after"]) > 0 else self.total_steps
        self.start_step = 0
        if resume_path is not None:
            self._resume(resume_path)
        else:
            self._set_statistics()
        self.readout = self._fit_readout()
        self._setup_outputs(resume_path is not None)

    def _net_config(self, base: ModelConfig | None) -> AudioToMotionConfig:
        target = self.cfg["target"]
        params = list(target["params"]) or (["jaw_open"] if target["kind"] == "synthetic" else [])
        from anytalk_core.synthetic import EXPRESSION_FIELDS

        bad = [p for p in params if p not in EXPRESSION_FIELDS]
        if bad:
            raise ConfigError(f"target.params: unknown fields {bad} (known: {list(EXPRESSION_FIELDS)})")
        if target["kind"] == "motion_estimator":
            fields = dict(family=base.family, num_kp=base.num_kp, with_scale=base.convention.uses_scale)
        else:
            fields = dict(family="synthetic", num_kp=0, with_scale=False)
        data = {**fields, "predict_pose": bool(target["pose"]), "params": params}
        extra = dict(self.cfg["model"]["audio2motion"])
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
        restore_train_state(state, self.net, self.optimizers, self.scheduler, None)
        self.net.to(self.device)
        for st in self.opt.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    st[k] = v.to(self.device)
        self.start_step = state.step
        self.log(f"resumed from {path} at step {state.step}")

    def _setup_outputs(self, resumed: bool) -> None:
        from anytalk_core.io_utils import atomic_output, unique_path

        self.metrics_path = self.run_dir / "metrics.jsonl"
        if not resumed and self.metrics_path.exists():
            os.replace(self.metrics_path, unique_path(self.metrics_path))
        if resumed and self.metrics_path.exists():
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
            keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= self.start_step]
            with atomic_output(self.metrics_path, overwrite=True) as tmp:
                Path(tmp).write_text("".join(k + "\n" for k in keep), encoding="utf-8")
        frames = sum(c.n_frames for c in self.clips)
        info = {"config": public(self.cfg), "device": str(self.device), "torch": torch.__version__,
                "python": platform.python_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "network": json.loads(_net_config_json(self.net_config)),
                "parameters": sum(p.numel() for p in self.net.parameters()),
                "train_clips": len(self.clips), "train_frames": frames, "val_clips": len(self.val_clips)}
        with atomic_output(self.run_dir / "run_info.json", overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
        self.log(f"audio2motion: {info['parameters']} parameters, {len(self.clips)} training clips ({frames} frames), "
                 f"{len(self.val_clips)} held-out clips, {self.total_steps} steps, device {self.device}")

    # ----- batches ---------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature windows [B, L, W, F] and targets [B, L, out] of a step (keyed by (seed, step) alone)."""
        t, aug = self.cfg["train"], self.cfg["augment"]
        g = np.random.default_rng(seed_for(self.cfg["seed"], "batch", step))
        length = int(t["clip_frames"])
        context = self.net_config.context
        windows, targets = [], []
        for _ in range(int(t["batch_size"])):
            clip = self.clips[int(g.integers(len(self.clips)))]
            start = int(g.integers(max(1, clip.n_frames - length + 1)))
            # the audio this crop needs (HOP-aligned so features equal those of the whole clip)
            margin = (context + 2) / self.extractor.rate + getattr(self.extractor, "margin", 0.0) + 0.05
            first = int(math.floor((start / clip.fps - margin) * SAMPLE_RATE / HOP)) * HOP
            last = int(math.ceil(((start + length) / clip.fps + margin) * SAMPLE_RATE))
            segment = padded_slice(clip.waveform, first, last)
            gain = 10 ** (float(g.uniform(-1, 1)) * float(aug["gain_db"]) / 20)
            noise = float(g.uniform(0, float(aug["noise"])))
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
        lw = self.cfg["loss"]
        c = self.net_config
        t = self.net.normalize_target(target)
        known = torch.isfinite(t)
        t = torch.where(known, t, torch.zeros_like(t))
        err = F.smooth_l1_loss(pred, t, reduction="none", beta=0.5) * known
        groups = {"expression": slice(0, 3 * c.num_kp), "pose": slice(3 * c.num_kp, 3 * c.num_kp + c.pose_size),
                  "params": slice(3 * c.num_kp + c.pose_size, c.output_size)}
        out = {}
        for name, sl in groups.items():
            if sl.stop > sl.start and float(lw[name]):
                out[name] = float(lw[name]) * err[..., sl].sum() / known[..., sl].sum().clamp(min=1)
        if float(lw["velocity"]):
            both = known[:, 1:] & known[:, :-1]
            dv = (pred[:, 1:] - pred[:, :-1]) - (t[:, 1:] - t[:, :-1])
            out["velocity"] = float(lw["velocity"]) * (dv.abs() * both).sum() / both.sum().clamp(min=1)
        return out

    # ----- loop ------------------------------------------------------------------------------------
    def fit(self) -> dict:
        from tqdm import tqdm

        t = self.cfg["train"]
        result = {"run_dir": str(self.run_dir), "start_step": self.start_step}
        self.bar = tqdm(total=self.end_step, initial=self.start_step, desc=self.cfg["name"], unit="step",
                        disable=not t["progress"], dynamic_ncols=True, file=self.stream)
        old = self._install_signal_handlers()
        step = self.start_step
        log_every, ckpt_every, eval_every = max(1, int(t["log_every"])), int(t["checkpoint_every"]), int(t["eval_every"])
        window: dict[str, list[float]] = {}
        window_t, window_n, timing = time.time(), 0, []
        try:
            while step < self.end_step:
                ts = time.time()
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
                step += 1
                timing.append(time.time() - ts)
                window_n += 1
                for k, v in {**losses, "total": total}.items():
                    window.setdefault(k, []).append(float(v.detach()))
                self.bar.update(1)
                if step % log_every == 0 or step == self.end_step:
                    now = time.time()
                    rate = window_n / max(now - window_t, 1e-9)
                    means = {f"loss/{k}" if k != "total" else "loss": sum(v) / len(v) for k, v in window.items()}
                    self._write_metrics({"step": step, "lr": self.opt.param_groups[0]["lr"], "steps_per_s": round(rate, 3),
                                         "eta_s": round((self.end_step - step) / rate, 1) if rate > 0 else None,
                                         "time": round(time.time() - self.t0, 2),
                                         **{k: round(v, 6) for k, v in means.items()}})
                    self.bar.set_postfix(loss=f"{means['loss']:.4f}")
                    window, window_t, window_n = {}, now, 0
                if self.val_clips and eval_every and step % eval_every == 0 and step != self.end_step:
                    self._write_metrics({"step": step, **self.evaluate()})
                interrupted = self._interrupted
                if (ckpt_every and step % ckpt_every == 0) or step == self.end_step or interrupted:
                    self.save(step)
                if interrupted:
                    self.log(f"interrupted: saved step {step}; continue with --resume")
                    result["interrupted"] = True
                    break
        finally:
            self.bar.close()
            self._restore_signal_handlers(old)
        result["end_step"] = step
        steady = timing[1:] if len(timing) > 1 else timing
        if steady:
            result["steps_per_s"] = len(steady) / sum(steady)
        if self.val_clips and not result.get("interrupted"):
            result["eval"] = self.evaluate()
            self._write_metrics({"step": step, **result["eval"]})
            from anytalk_core.io_utils import atomic_output

            with atomic_output(self.run_dir / "eval.json", overwrite=True) as tmp:
                Path(tmp).write_text(json.dumps({"step": step, **result["eval"]}, indent=2), encoding="utf-8")
            self.log("held-out: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in result["eval"].items()))
        if step >= self.total_steps and step > self.start_step and t["export"] and not result.get("interrupted"):
            result["export"] = self.export(step=step, metrics=result.get("eval"))
        self.log(f"done at step {step}" + (f", {result['steps_per_s']:.2f} steps/s" if "steps_per_s" in result else ""))
        return result

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
    def _write_metrics(self, line: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

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

    # ----- signals ---------------------------------------------------------------------------------
    def _install_signal_handlers(self):
        return install_interrupt_handlers(self)

    _restore_signal_handlers = staticmethod(restore_signal_handlers)

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


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


def export_from_checkpoint(config: dict, checkpoint: str | None, out: str | None) -> str | None:
    """Export the inference checkpoint of a run's training state without training."""
    trainer = AudioMotionTrainer(config, resume=checkpoint or True)
    try:
        return trainer.export(out, step=trainer.start_step)
    finally:
        trainer.close()
