"""The paper's evaluation protocols on real videos, streamed in constant memory.

- **Same-identity reconstruction** (:func:`evaluate_reconstruction`): for every clip, frame 0 is the source
  and frames 1..N-1 drive it (absolute motion by default, as face-vid2vid/FOMM evaluate reconstruction);
  each generated frame is compared with the driving frame it reproduces: L1, LPIPS, CPBD, AKD, AED (the
  seed's Table 2 columns), plus PSNR, CSIM (to the source frame) and FID (generated vs ground-truth frames).
- **Cross-identity / cross-domain reenactment** (:func:`evaluate_reenactment`): source portraits x driving
  clips (relative motion by default); no ground truth, so FID (generated frames vs the real source
  portraits, or the driving frames), CSIM (to the source) and CPBD (the seed's Tables 1 and 3).
- **Paired folders** (:func:`evaluate_folders`): frames generated elsewhere (e.g. by a baseline) against
  reference frames.

Frames are compared at the model's resolution after the same full-frame square crop the CLI uses, and as
8-bit images (generated frames are rounded as if saved as PNG). A clip is read twice (motion, then frames
in step with rendering); per-frame metrics are summed as they come and FID keeps running feature sums,
so memory does not grow with clip length or dataset size.

Network metrics whose weights are missing are reported as "—" with the reason in the table's notes;
``strict=True`` makes that an error instead.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anytalk_core.crop import apply_crop, crop_full
from anytalk_core.engine import Engine, rechunk
from anytalk_core.media import iter_video_frames, load_image
from anytalk_core.models.base import TransferOptions
from anytalk_core.stages import Driving, aligned, render_stage, transfer_stage

from .metrics import (
    METRICS,
    FeatureStats,
    MetricWeightsError,
    average_euclidean_distance,
    average_keypoint_distance,
    cosine_similarity,
    cpbd,
    fid_from_stats,
    l1_distance,
    load_identity,
    load_inception,
    load_landmarks,
    load_lpips,
    psnr,
)
from .metrics._common import to_uint8_frames

__all__ = [
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "Clip",
    "list_clips",
    "list_images",
    "iter_clip",
    "MetricOptions",
    "Backends",
    "MetricAccumulator",
    "RECONSTRUCTION_METRICS",
    "REENACTMENT_METRICS",
    "FOLDER_METRICS",
    "evaluate_reconstruction",
    "evaluate_reenactment",
    "evaluate_folders",
    "columns_for",
]

VIDEO_SUFFIXES = {".mp4", ".webm", ".gif", ".mov", ".avi", ".mkv", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

# the seed's columns first, in its order, then the extras this suite adds
RECONSTRUCTION_METRICS = ("l1", "lpips", "cpbd", "akd", "aed", "psnr", "csim", "fid")
REENACTMENT_METRICS = ("fid", "csim", "cpbd")
FOLDER_METRICS = ("l1", "lpips", "cpbd", "akd", "aed", "psnr", "csim", "fid")
NETWORK_METRICS = {"lpips": "lpips", "fid": "inception", "csim": "identity", "aed": "identity", "akd": "landmarks"}

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- inputs

def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Clip:
    """One driving clip: a video file or a folder of frames (sorted by name, numbers in natural order)."""

    name: str
    path: Path
    kind: str  # "video" | "frames"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in natural name order."""
    p = Path(folder)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: folder not found")
    return sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda f: _natural_key(f.name))


def list_clips(path: str | os.PathLike) -> list[Clip]:
    """Clips in ``path``: a video file, a folder of frames, or a folder of videos and/or frame folders."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"{p}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder")
        return [Clip(p.stem, p, "video")]
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such video or folder")
    entries = sorted(p.iterdir(), key=lambda f: _natural_key(f.name))
    clips = [Clip(f.stem, f, "video") for f in entries if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES]
    clips += [Clip(f.name, f, "frames") for f in entries if f.is_dir() and list_images(f)]
    if not clips and list_images(p):
        return [Clip(p.name, p, "frames")]
    if not clips:
        raise ValueError(f"{p}: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) or folders of frames found")
    return sorted(clips, key=lambda c: _natural_key(c.name))


def iter_clip(clip: Clip, chunk: int = 8, max_frames: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 frames (n <= chunk, H, W, 3) of a clip, at most ``max_frames`` in all; memory O(chunk)."""
    if clip.kind == "video":
        source: Iterable[torch.Tensor] = iter_video_frames(clip.path, chunk=chunk)
    else:
        def frames() -> Iterator[torch.Tensor]:
            files = list_images(clip.path)
            for start in range(0, len(files), chunk):
                batch = [load_image(f) for f in files[start:start + chunk]]
                shapes = {tuple(b.shape) for b in batch}
                if len(shapes) > 1:
                    raise ValueError(f"{clip.path}: frames differ in size ({sorted(shapes)})")
                yield (torch.stack(batch) * 255).round().to(torch.uint8)
        source = frames()
    left = max_frames
    for piece in source:
        if left is not None:
            piece = piece[:left]
            left -= piece.shape[0]
        if piece.shape[0]:
            yield piece
        if left is not None and left <= 0:
            return


def _skip_first(pieces: Iterable[torch.Tensor], n: int = 1) -> Iterator[torch.Tensor]:
    for piece in pieces:
        if n > 0:
            drop = min(n, piece.shape[0])
            piece, n = piece[drop:], n - drop
        if piece.shape[0]:
            yield piece


def to_model_frames(frames_u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, size, size): the CLI's full-frame square crop, resized."""
    x = frames_u8.permute(0, 3, 1, 2).float() / 255
    if x.shape[-2:] == (size, size):
        return x
    return apply_crop(x, crop_full(tuple(x.shape[-2:]), size))


# ----------------------------------------------------------------------------------------------- backends

@dataclass
class MetricOptions:
    """Which weights the network metrics use (command-line options of the same names)."""

    lpips_net: str = "alex"
    lpips_trunk: str | None = None
    lpips_heads: str | None = None
    inception: str | None = None
    identity: str = "auto"  # auto | arcface | dlib
    arcface: str | None = None
    dlib_models: str | None = None
    use_defaults: bool = True  # offline defaults found in installed packages
    device: str = "cpu"
    akd_size: int = 256  # AKD in pixels of a frame this wide
    aed_normalize: bool = True


@dataclass
class Backends:
    """The loaded networks of the requested metrics, and for each metric that cannot run, the reason."""

    metrics: tuple[str, ...]
    options: MetricOptions = field(default_factory=MetricOptions)
    lpips: object = None
    inception: object = None
    identity: object = None
    landmarks: object = None
    skipped: dict[str, str] = field(default_factory=dict)
    described: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, metrics: Iterable[str], options: MetricOptions | None = None, strict: bool = False) -> "Backends":
        """Load what ``metrics`` need; missing weights skip the metric (or raise, with ``strict``)."""
        metrics = tuple(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}: choose from {', '.join(METRICS)}")
        b = cls(metrics, options or MetricOptions())
        o = b.options
        loaders = {
            "lpips": lambda: load_lpips(o.lpips_net, o.lpips_trunk, o.lpips_heads, o.use_defaults, o.device),
            "inception": lambda: load_inception(o.inception, o.use_defaults, o.device),
            "identity": lambda: load_identity(o.identity, o.arcface, o.dlib_models, o.use_defaults, o.device),
            "landmarks": lambda: load_landmarks("auto", o.dlib_models, o.use_defaults),
        }
        for slot in dict.fromkeys(NETWORK_METRICS[m] for m in metrics if m in NETWORK_METRICS):
            try:
                setattr(b, slot, loaders[slot]())
            except MetricWeightsError as exc:
                if strict:
                    raise
                for m in metrics:
                    if NETWORK_METRICS.get(m) == slot:
                        b.skipped[m] = str(exc)
        if b.lpips is not None:
            w = b.lpips.weights
            b.described["lpips"] = f"LPIPS v0.1 {o.lpips_net}: trunk {w['trunk']}, heads {w['heads']}"
        if b.inception is not None:
            b.described["fid"] = f"FID InceptionV3 (pytorch-fid layout) from {b.inception.weights}"
        if b.identity is not None:
            for m in ("csim", "aed"):
                if m in metrics:
                    b.described[m] = b.identity.description
        if b.landmarks is not None and "akd" in metrics:
            b.described["akd"] = (f"dlib 68-point landmarks ({b.landmarks.files['landmarks']}), "
                                  f"pixels at {o.akd_size} px")
        return b

    def active(self, metric: str) -> bool:
        """Requested, not skipped, and (for a network metric) its network loaded."""
        if metric not in self.metrics or metric in self.skipped:
            return False
        return metric not in NETWORK_METRICS or getattr(self, NETWORK_METRICS[metric]) is not None

    def embed(self, frames: np.ndarray) -> np.ndarray:
        return self.identity.embed(frames)  # type: ignore[union-attr]


class _Mean:
    """Running mean of per-frame values; NaN values (e.g. no face found) are counted, not averaged."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.missing = 0

    def add(self, values: np.ndarray | torch.Tensor) -> None:
        v = np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values, np.float64).reshape(-1)
        ok = ~np.isnan(v)
        self.total += float(v[ok].sum())
        self.count += int(ok.sum())
        self.missing += int((~ok).sum())

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class MetricAccumulator:
    """Per-frame metrics summed chunk by chunk, FID as running feature statistics."""

    def __init__(self, backends: Backends):
        self.b = backends
        self.means = {m: _Mean() for m in backends.metrics if m != "fid"}
        self.fid_generated = FeatureStats() if backends.active("fid") else None
        self.fid_reference = FeatureStats() if backends.active("fid") else None
        self.fid_paired = True  # the ground-truth frames are FID's real set (reconstruction, folders)
        self.frames = 0
        for detector in self._detectors().values():  # count missed detections per evaluation
            detector.frames = detector.fallbacks = 0

    def _detectors(self) -> dict[str, object]:
        """The dlib face detectors in use: for AKD, and for CSIM/AED (dlib embeddings or ArcFace alignment)."""
        found = {}
        if self.b.landmarks is not None:
            found["akd"] = self.b.landmarks
        face = getattr(self.b.identity, "face", None) or getattr(self.b.identity, "aligner", None)
        if face is not None:
            found["identity"] = face
        return found

    def update(self, generated: np.ndarray, reference: np.ndarray | None = None,
               source_embedding: np.ndarray | None = None) -> None:
        """Add generated frames (n, H, W, 3) uint8, with their ground truth when there is one.

        CSIM compares with ``source_embedding`` when given, else with the reference frames.
        """
        b, m = self.b, self.means
        self.frames += generated.shape[0]
        if reference is not None:
            if reference.shape != generated.shape:
                raise ValueError(f"generated frames {generated.shape} and reference frames {reference.shape} differ")
            if "l1" in m:
                m["l1"].add(l1_distance(generated, reference))
            if "psnr" in m:
                m["psnr"].add(psnr(generated, reference))
            if b.active("lpips"):
                m["lpips"].add(b.lpips(generated, reference))  # type: ignore[operator]
            if b.active("akd"):
                scale = b.options.akd_size / generated.shape[2]
                lm_gen = b.landmarks.landmarks(generated)  # type: ignore[union-attr]
                lm_ref = b.landmarks.landmarks(reference)  # type: ignore[union-attr]
                m["akd"].add(average_keypoint_distance(lm_gen * scale, lm_ref * scale))
        if "cpbd" in m:
            m["cpbd"].add(np.array([cpbd(frame) for frame in generated]))
        need_gen_embedding = b.active("csim") or (b.active("aed") and reference is not None)
        if need_gen_embedding:
            emb = b.embed(generated)
            ref_emb = b.embed(reference) if reference is not None and (
                b.active("aed") or source_embedding is None) else None
            if b.active("aed") and ref_emb is not None:
                m["aed"].add(average_euclidean_distance(emb, ref_emb, b.options.aed_normalize))
            if b.active("csim"):
                target = source_embedding if source_embedding is not None else ref_emb
                if target is not None:
                    m["csim"].add(cosine_similarity(emb, target))
        if self.fid_generated is not None:
            self.fid_generated.update(b.inception(generated))  # type: ignore[operator]
            if reference is not None and self.fid_paired:
                self.fid_reference.update(b.inception(reference))  # type: ignore[operator, union-attr]

    def add_fid_reference(self, frames: np.ndarray) -> None:
        """Real frames for FID's reference statistics (cross-identity: source portraits or driving frames)."""
        if self.fid_reference is not None:
            self.fid_reference.update(self.b.inception(frames))  # type: ignore[operator]

    def results(self) -> tuple[dict[str, float | None], dict[str, str]]:
        """(metric -> value or None, metric -> note for values that are missing or partial)."""
        values: dict[str, float | None] = {}
        notes: dict[str, str] = {}
        for metric in self.b.metrics:
            if metric in self.b.skipped:
                values[metric] = None
                notes[metric] = f"not computed: {self.b.skipped[metric]}"
                continue
            if metric == "fid":
                g, r = self.fid_generated, self.fid_reference
                if g is None or r is None or g.count < 2 or r.count < 2:
                    values[metric] = None
                    notes[metric] = (f"not computed: FID needs at least 2 generated and 2 real frames "
                                     f"(got {g.count if g else 0} and {r.count if r else 0})")
                else:
                    values[metric] = fid_from_stats(g, r)
                    if min(g.count, r.count) < 2048:
                        notes[metric] = (f"from {g.count} generated and {r.count} real frames, fewer than the 2048 "
                                         "feature dimensions: biased high, compare only like with like")
                continue
            mean = self.means[metric]
            values[metric] = mean.value if mean.count else None
            if not mean.count:
                notes[metric] = "not computed: no frame could be measured" + (
                    f" ({mean.missing} frames without a detection)" if mean.missing else "")
            elif mean.missing:
                notes[metric] = f"{mean.missing} of {mean.count + mean.missing} frames had no measurement"
        for key, detector in self._detectors().items():
            if detector.fallbacks:
                text = (f"no face detected in {detector.fallbacks} of {detector.frames} frames: the whole frame was "
                        "used as the face box")
                for metric in (("akd",) if key == "akd" else ("csim", "aed")):
                    if self.b.active(metric):
                        notes[metric] = f"{notes[metric]}; {text}" if metric in notes else text
        return values, notes


# ----------------------------------------------------------------------------------------------- running

def _u8(frames: torch.Tensor) -> np.ndarray:
    return to_uint8_frames(frames)


def _motion(engine: Engine, clip: Clip, size: int, skip: int, max_frames: int | None):
    chunks = (to_model_frames(c, size) for c in _skip_first(iter_clip(clip, max_frames=max_frames), skip))
    return engine.estimate_motion(chunks)


def evaluate_reconstruction(engine: Engine, clips: list[Clip], backends: Backends,
                            transfer: TransferOptions | None = None, max_frames: int | None = None,
                            progress: Progress | None = None) -> tuple[dict, dict[str, str], dict]:
    """Same-identity reconstruction over ``clips``; returns (metric values, notes, counts)."""
    transfer = transfer or TransferOptions(mode="absolute")
    size = engine.model.config.image_size
    acc = MetricAccumulator(backends)
    used, skipped_clips = 0, []
    for clip in clips:
        reader = iter_clip(clip, 1, 1)
        first = next(reader, None)
        reader.close()
        if first is None:
            skipped_clips.append(f"{clip.name} (no frames)")
            continue
        source_frame = to_model_frames(first, size)
        try:
            motion = _motion(engine, clip, size, 1, max_frames)
        except ValueError as exc:
            if "no driving frames" not in str(exc):
                raise
            skipped_clips.append(f"{clip.name} (a single frame: nothing to reconstruct)")
            continue
        state = engine.prepare_source(source_frame)
        keypoints = transfer_stage(engine, state, Driving(motion), transfer)
        source_embedding = None
        if backends.active("csim"):
            source_embedding = backends.embed(_u8(source_frame))[0]
        truth = _skip_first(iter_clip(clip, max_frames=max_frames), 1)
        for generated, real in aligned(render_stage(engine, state, keypoints), truth):
            acc.update(_u8(generated), _u8(to_model_frames(real, size)), source_embedding)
        used += 1
        if progress:
            progress(f"{clip.name}: {keypoints.shape[0]} frames")
    values, notes = acc.results()
    if skipped_clips:
        notes["clips"] = "skipped " + ", ".join(skipped_clips)
    return values, notes, {"clips": used, "frames": acc.frames}


def pair_up(sources: list, drivers: list, pairing: str) -> list[tuple[int, int]]:
    """Index pairs: ``all`` (every source with every driver) or ``cycle`` (max(S, D) pairs, both cycled)."""
    if pairing == "all":
        return list(itertools.product(range(len(sources)), range(len(drivers))))
    if pairing == "cycle":
        n = max(len(sources), len(drivers))
        return [(k % len(sources), k % len(drivers)) for k in range(n)]
    raise ValueError(f"pairing must be all or cycle, got {pairing!r}")


def evaluate_reenactment(engine: Engine, sources: list[Path], drivers: list[Clip], backends: Backends,
                         transfer: TransferOptions | None = None, pairing: str = "cycle",
                         fid_reference: str = "sources", max_frames: int | None = None,
                         progress: Progress | None = None) -> tuple[dict, dict[str, str], dict]:
    """Cross-identity / cross-domain reenactment: every pair renders a clip; FID, CSIM, CPBD."""
    if fid_reference not in ("sources", "drivers"):
        raise ValueError(f"fid_reference must be sources or drivers, got {fid_reference!r}")
    if not sources or not drivers:
        raise ValueError("reenactment needs at least one source image and one driving clip")
    transfer = transfer or TransferOptions(mode="relative")
    size = engine.model.config.image_size
    acc = MetricAccumulator(backends)
    acc.fid_paired = False
    motions: dict[int, object] = {}
    embeddings: dict[int, np.ndarray | None] = {}
    pairs = pair_up(sources, drivers, pairing)
    for si, di in pairs:
        src = to_model_frames((load_image(sources[si]) * 255).round().to(torch.uint8)[None], size)
        if si not in embeddings:
            embeddings[si] = backends.embed(_u8(src))[0] if backends.active("csim") else None
            if fid_reference == "sources":
                acc.add_fid_reference(_u8(src))
        if di not in motions:
            motions[di] = _motion(engine, drivers[di], size, 0, max_frames)
            if fid_reference == "drivers" and acc.fid_reference is not None:
                for chunk in iter_clip(drivers[di], max_frames=max_frames):
                    acc.add_fid_reference(_u8(to_model_frames(chunk, size)))
        state = engine.prepare_source(src)
        keypoints = transfer_stage(engine, state, Driving(motions[di]), transfer)  # type: ignore[arg-type]
        for generated in render_stage(engine, state, keypoints):
            acc.update(_u8(generated), None, embeddings[si])
        if progress:
            progress(f"{sources[si].name} x {drivers[di].name}: {keypoints.shape[0]} frames")
    values, notes = acc.results()
    return values, notes, {"pairs": len(pairs), "frames": acc.frames}


def evaluate_folders(generated: list[Clip], reference: list[Clip], backends: Backends, size: int | None = None,
                     source_image: str | os.PathLike | None = None, landmarks: tuple[np.ndarray, np.ndarray] | None = None,
                     chunk: int = 8, progress: Progress | None = None) -> tuple[dict, dict[str, str], dict]:
    """Paired metrics of frames made elsewhere: clips matched by name (or the only clip of each side)."""
    if len(generated) == 1 and len(reference) == 1:
        pairs = [(generated[0], reference[0])]
    else:
        ref_by_name = {c.name: c for c in reference}
        missing = [c.name for c in generated if c.name not in ref_by_name]
        if missing:
            raise ValueError(f"no reference clip named like the generated clip(s) {', '.join(missing[:5])}")
        pairs = [(c, ref_by_name[c.name]) for c in generated]
    acc = MetricAccumulator(backends)
    source_embedding = None
    if source_image is not None and backends.active("csim"):
        img = (load_image(source_image) * 255).round().to(torch.uint8)[None]
        source_embedding = backends.embed(_u8(to_model_frames(img, size)) if size else img.numpy())[0]
    akd_manual = _Mean() if landmarks is not None else None
    if landmarks is not None:
        lm_gen, lm_ref = landmarks
        if lm_gen.shape != lm_ref.shape:
            raise ValueError(f"landmark arrays differ in shape: {lm_gen.shape} and {lm_ref.shape}")
        akd_manual.add(average_keypoint_distance(lm_gen, lm_ref))  # type: ignore[union-attr]
    for gen_clip, ref_clip in pairs:
        gen_iter = rechunk(iter_clip(gen_clip, chunk), chunk)
        ref_iter = rechunk(iter_clip(ref_clip, chunk), chunk)
        n = 0
        for g, r in itertools.zip_longest(gen_iter, ref_iter):
            if g is None or r is None or g.shape[0] != r.shape[0]:
                raise ValueError(f"{gen_clip.path} and {ref_clip.path} have different frame counts")
            if size:
                g, r = _u8(to_model_frames(g, size)), _u8(to_model_frames(r, size))
            else:
                g, r = g.numpy(), r.numpy()
                if g.shape != r.shape:
                    raise ValueError(f"{gen_clip.path} frames are {g.shape[1:3]} but {ref_clip.path} frames are "
                                     f"{r.shape[1:3]} (H, W): pass --size N to compare both at N x N")
            acc.update(g, r, source_embedding)
            n += g.shape[0]
        if progress:
            progress(f"{gen_clip.name}: {n} frames")
    values, notes = acc.results()
    if akd_manual is not None and "akd" in backends.metrics:
        values["akd"] = akd_manual.value if akd_manual.count else None
        notes["akd"] = "from the given landmark arrays (pixels as given)"
    return values, notes, {"clips": len(pairs), "frames": acc.frames}


# ----------------------------------------------------------------------------------------------- tables

def columns_for(metrics: Iterable[str]) -> list[str]:
    """Table headers in the seed's style (``L1↓``, ``CSIM↑``, ...)."""
    return [METRICS[m][0] for m in metrics]


def table_row(label: str, values: dict, counts: dict, metrics: Iterable[str]) -> dict:
    """One table row: ``Method`` then one header per metric, then the counts."""
    row: dict = {"Method": label}
    for m in metrics:
        v = values.get(m)
        row[METRICS[m][0]] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    for k, v in counts.items():
        row[k.capitalize()] = v
    return row
