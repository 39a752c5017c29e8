"""The audio-to-motion trainer's clips: sources, each clip's prepared audio and its targets (SPEC §6).

Sources (``[[data.sources]]`` and held-out ``[[data.val_sources]]``) are described in :mod:`.audio2motion`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anytalk_core.audio_features import prepare_audio
from anytalk_core.models.config import AudioToMotionConfig
from anytalk_core.motion import Motion

from .data import DataError, check_source_keys

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
_SYNTH_KEYS = {"kind", "name", "domains", "num_clips", "frames_per_clip", "seed", "fps"}
_VIDEO_KEYS = {"kind", "name", "path", "max_clips"}

__all__ = ["AudioClip", "normalise_audio_source", "video_files", "file_digest", "MotionTeacher", "build_target",
           "load_clips"]


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

        check_source_keys(s, _SYNTH_KEYS, where)
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
        check_source_keys(s, _VIDEO_KEYS, where)
        if not s.get("path"):
            raise DataError(f"{where}: a video_folder source needs a 'path' (a folder of talking videos with sound)")
        s["path"] = os.path.expanduser(str(s["path"]))
        s.setdefault("max_clips", 0)
    else:
        raise DataError(f"{where}: unknown source kind {kind!r} (synthetic or video_folder)")
    s.setdefault("name", f"{kind}{index}")
    return s


def video_files(spec: dict) -> list[Path]:
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
            for path in video_files(spec):
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
