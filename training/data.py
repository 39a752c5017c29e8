"""Training data: video folders, multi-domain manifests and the synthetic renderer, mixed by weight.

Sources (``[[data.sources]]`` tables in the config, or rows of a manifest file):

``kind = "video_folder"``
    ``path`` to a folder of clips, VoxCeleb style: ``id/clip/0001.png ...`` (a folder of frames is one
    clip) or video files anywhere below (``.mp4 .webm .mov .avi .mkv .gif``). ``domain`` label (e.g.
    ``human``, ``cg_human``, ``animal``), ``weight`` (sampling weight, default 1), ``id_sampling``
    (default true: an item is an identity — the first folder below ``path`` — and a random clip of it,
    as the authors), ``subset`` (fraction in (0, 1] of the identities/clips, drawn with ``seed``; the
    stage-2 "subset of the first stage's data"), ``split`` (optional sub-folder, e.g. ``train``).
    Frames are expected to be face crops; non-square frames are centre-cropped, then resized.
``kind = "synthetic"``
    the procedural renderer: ``domains`` (subset of human, cg_human, animal), ``num_identities``,
    ``frames_per_clip``, ``seed``, ``weight``. Items carry ground-truth head pose and expression.

A manifest (``data.manifest``: .toml with ``[[sources]]``, .json / .jsonl, or .csv with a header
``path,domain,weight[,kind][,id_sampling][,subset]``) lists more sources; its relative paths are relative
to the manifest's folder.

Sampling is stateless and reproducible: epoch ``e`` is a fixed list of ``samples_per_epoch`` items in
which source ``j`` has a share proportional to its weight (items cycle through a per-epoch permutation of
the source), shuffled with ``(seed, e)``; sample ``p`` of epoch ``e`` draws its frames and augmentation
from ``(seed, e, p)`` alone. Any number of loader workers, processes or a resume mid-epoch therefore see
the same data.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import synthetic_source as syn
from .settings import TalkingHeadData

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

__all__ = ["DataError", "build_dataset", "MixedDataset", "StepBatchSampler", "load_manifest", "collate"]


class DataError(ValueError):
    """A data source is unusable (missing folder, no clips, unreadable frames, bad manifest)."""


# ------------------------------------------------------------------------------------------------
# Source specifications
# ------------------------------------------------------------------------------------------------

_VIDEO_KEYS = {"kind", "name", "path", "domain", "weight", "id_sampling", "subset", "split", "seed"}
_SYNTH_KEYS = {"kind", "name", "domains", "num_identities", "frames_per_clip", "seed", "weight", "cache_frames",
               "independent_pairs"}


def _resolve(path: str, base: Path | None) -> str:
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


def check_source_keys(spec: dict, known: set[str], where: str) -> None:
    """Refuse keys a source of kind ``spec["kind"]`` does not have (a typo must not fall back to a default)."""
    unknown = set(spec) - known
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)} for a {spec['kind']} source (known: {sorted(known)})")


def normalise_source(spec: dict, index: int, base: Path | None = None, origin: str = "data.sources") -> dict:
    """Check one source table and fill its defaults; raises DataError naming the entry."""
    where = f"{origin}[{index}]"
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected a table, got {spec!r}")
    kind = spec.get("kind", "video_folder")
    s = dict(spec)
    s["kind"] = kind
    if kind == "video_folder":
        check_source_keys(s, _VIDEO_KEYS, where)
        if not s.get("path"):
            raise DataError(f"{where}: a video_folder source needs a 'path'")
        if not s.get("domain"):
            raise DataError(f"{where}: a video_folder source needs a 'domain' label (e.g. human, cg_human, animal)")
        s["path"] = _resolve(str(s["path"]), base)
        s.setdefault("id_sampling", True)
        s.setdefault("subset", 1.0)
        s.setdefault("split", "")
        s.setdefault("seed", 0)
        if not 0 < float(s["subset"]) <= 1:
            raise DataError(f"{where}: subset must be in (0, 1], got {s['subset']}")
    elif kind == "synthetic":
        check_source_keys(s, _SYNTH_KEYS, where)
        s.setdefault("domains", list(syn.DOMAINS))
        s.setdefault("num_identities", 64)
        s.setdefault("frames_per_clip", 32)
        s.setdefault("seed", 0)
        s.setdefault("cache_frames", 8192)
        s.setdefault("independent_pairs", 0.0)  # share of pairs whose driving frame is an unrelated random pose
        try:
            syn.check_domains(s["domains"], where)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if int(s["num_identities"]) < 1 or int(s["frames_per_clip"]) < 1:
            raise DataError(f"{where}: num_identities and frames_per_clip must be >= 1")
        if not 0.0 <= float(s["independent_pairs"]) <= 1.0:
            raise DataError(f"{where}: independent_pairs must be between 0 and 1, got {s['independent_pairs']!r}")
    else:
        raise DataError(f"{where}: unknown source kind {kind!r} (video_folder or synthetic)")
    s.setdefault("weight", 1.0)
    s.setdefault("name", f"{kind}{index}")
    try:
        weight = float(s["weight"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: weight must be a number, got {s['weight']!r}") from None
    if not weight > 0 or math.isinf(weight):
        raise DataError(f"{where}: weight must be a positive number, got {s['weight']!r}")
    s["weight"] = weight
    return s


def load_manifest(path: str | os.PathLike) -> list[dict]:
    """Sources listed in a manifest file (toml / json / jsonl / csv), paths relative to its folder."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: manifest file not found")
    base = p.parent
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8")
        if suffix == ".toml":
            rows = tomllib.loads(text).get("sources", [])
        elif suffix == ".json":
            data = json.loads(text)
            rows = data.get("sources", []) if isinstance(data, dict) else data
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            rows = []
            for row in csv.DictReader(text.splitlines()):
                r = {k.strip(): v.strip() for k, v in row.items() if k is not None and v is not None and v.strip() != ""}
                for key in ("weight", "subset"):
                    if key in r:
                        r[key] = float(r[key])
                if "id_sampling" in r:
                    r["id_sampling"] = r["id_sampling"].lower() in ("1", "true", "yes")
                rows.append(r)
        else:
            raise DataError(f"{p}: manifest must be .toml, .json, .jsonl or .csv")
    except (ValueError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p}: unreadable manifest ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{p}: the manifest lists no sources")
    return [normalise_source(r, i, base, origin=str(p)) for i, r in enumerate(rows)]


# ------------------------------------------------------------------------------------------------
# Frame helpers
# ------------------------------------------------------------------------------------------------

def to_square(frame: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) float -> centre-cropped to a square and resized (bilinear, antialiased) to size x size."""
    _, h, w = frame.shape
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        frame = frame[:, top:top + s, left:left + s]
    if frame.shape[-1] != size:
        frame = F.interpolate(frame.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True).squeeze(0).clamp_(0, 1)
    return frame.contiguous()


@dataclass
class Clip:
    path: str
    kind: str  # "video" or "frames"
    identity: str


def scan_clips(root: Path) -> list[Clip]:
    """Every clip below ``root``: folders holding frames (not descended further) and video files."""
    clips: list[Clip] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        here = Path(dirpath)
        images = [f for f in filenames if f.lower().endswith(IMAGE_SUFFIXES)]
        if images and here != root:
            clips.append(Clip(str(here), "frames", _identity(here.relative_to(root))))
            dirnames[:] = []
            continue
        for f in sorted(filenames):
            if f.lower().endswith(VIDEO_SUFFIXES):
                clips.append(Clip(str(here / f), "video", _identity((here / f).relative_to(root))))
    return clips


def _identity(rel: Path) -> str:
    parts = rel.parts
    if len(parts) >= 2:
        return parts[0]
    return Path(parts[0]).stem.split("#")[0]


def frame_files(folder: str) -> list[str]:
    return sorted(str(Path(folder) / f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------

class VideoFolderSource:
    """Clips of real video below one folder; no ground-truth pose or expression."""

    has_ground_truth = False

    def __init__(self, spec: dict, size: int):
        self.spec = spec
        self.name = spec["name"]
        self.size = size
        self.domains = [spec["domain"]]
        root = Path(spec["path"])
        if spec.get("split"):
            root = root / spec["split"]
        where = f"data source {self.name!r}"
        if not root.exists():
            raise DataError(f"{where}: folder not found: {root}")
        if not root.is_dir():
            raise DataError(f"{where}: not a folder: {root}")
        clips = scan_clips(root)
        if not clips:
            raise DataError(f"{where}: no clips found under {root} (expected VoxCeleb-style folders of frames "
                            f"id/clip/0001.png, or video files {' '.join(VIDEO_SUFFIXES)})")
        self.root = root
        by_id: dict[str, list[Clip]] = {}
        for c in clips:
            by_id.setdefault(c.identity, []).append(c)
        if spec["id_sampling"]:
            groups = [by_id[k] for k in sorted(by_id)]
        else:
            groups = [[c] for c in clips]
        subset = float(spec["subset"])
        if subset < 1:
            rng = np.random.default_rng([int(spec["seed"]), 17])
            keep = max(1, int(round(len(groups) * subset)))
            chosen = np.sort(rng.permutation(len(groups))[:keep])
            groups = [groups[i] for i in chosen]
        self.items = groups
        self._counts: dict[str, int] = {}
        self.probe()

    def __len__(self) -> int:
        return len(self.items)

    def probe(self) -> None:
        """Read the first clip now, so a folder of unreadable files fails before training starts."""
        clip = self.items[0][0]
        frames = self._frames(clip, [0])
        if frames.shape[0] < 1:
            raise DataError(f"data source {self.name!r}: no readable frames in {clip.path}")

    def _frames(self, clip: Clip, indices: list[int]) -> torch.Tensor:
        from anytalk_core.media import load_image, read_video

        try:
            if clip.kind == "frames":
                files = frame_files(clip.path)
                if not files:
                    raise DataError(f"data source {self.name!r}: no frames in {clip.path}")
                out = [load_image(files[min(i, len(files) - 1)]) for i in indices]
                return torch.stack([f.permute(2, 0, 1) for f in out])
            video = read_video(clip.path, audio=False, max_frames=max(indices) + 1).frames
            sel = [min(i, video.shape[0] - 1) for i in indices]
            return video[sel].permute(0, 3, 1, 2).float() / 255.0
        except DataError:
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"data source {self.name!r}: cannot read {clip.path} ({exc})") from None

    def num_frames(self, clip: Clip) -> int:
        if clip.path not in self._counts:
            if clip.kind == "frames":
                self._counts[clip.path] = len(frame_files(clip.path))
            else:
                from anytalk_core.media import probe_video

                try:
                    self._counts[clip.path] = probe_video(clip.path).frame_count
                except (OSError, ValueError) as exc:
                    raise DataError(f"data source {self.name!r}: cannot read {clip.path} ({exc})") from None
        return self._counts[clip.path]

    def sample(self, item: int, rng: np.random.Generator) -> dict:
        group = self.items[item]
        clip = group[int(rng.integers(len(group)))]
        n = max(1, self.num_frames(clip))
        idx = sorted(int(i) for i in rng.choice(n, size=2, replace=True))
        frames = self._frames(clip, idx)
        src, drv = (to_square(f, self.size) for f in frames)
        return {"source": src, "driving": drv, "domain_name": self.spec["domain"]}


class SyntheticSource:
    """Renderer clips: identity i of domain ``domains[i % len]`` moving along a smooth random trajectory.

    Only the two frames a sample needs are rendered; frames are memoised (uint8, like video data) up to
    ``cache_frames`` per process.
    """

    has_ground_truth = True

    def __init__(self, spec: dict, size: int):
        self.spec = spec
        self.name = spec["name"]
        self.size = size
        self.domains = list(spec["domains"])
        self.n = int(spec["num_identities"])
        self.frames = int(spec["frames_per_clip"])
        self.seed = int(spec["seed"])
        self._motion: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._cap = int(spec["cache_frames"])

    def __len__(self) -> int:
        return self.n

    def domain_of(self, item: int) -> str:
        return self.domains[item % len(self.domains)]

    def motion(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        if item not in self._motion:
            self._motion[item] = syn.random_clip(np.random.default_rng([self.seed, item, 1]), self.frames)
        return self._motion[item]

    def identity(self, item: int):
        return syn.identity(self.domain_of(item), int(np.random.default_rng([self.seed, item, 0]).integers(2**62)))

    def render_frames(self, item: int, indices: list[int]) -> torch.Tensor:
        found: dict[int, torch.Tensor] = {}
        for t in dict.fromkeys(indices):  # take what is cached first: rendering may evict it
            if (item, t) in self._cache:
                self._cache.move_to_end((item, t))
                found[t] = self._cache[(item, t)]
        missing = [t for t in dict.fromkeys(indices) if t not in found]
        if missing:
            pose, expr = self.motion(item)
            ident = self.identity(item)
            images = syn.render([ident] * len(missing), pose[missing], expr[missing], self.size)
            for t, img in zip(missing, images):
                found[t] = self._cache[(item, t)] = (img * 255).round_().to(torch.uint8)
                if len(self._cache) > self._cap:
                    self._cache.popitem(last=False)
        return torch.stack([found[t].float() / 255.0 for t in indices])

    def sample(self, item: int, rng: np.random.Generator) -> dict:
        idx = sorted(int(i) for i in rng.choice(self.frames, size=2, replace=True))
        pose, expr = self.motion(item)
        share = float(self.spec["independent_pairs"])
        if share > 0 and rng.random() < share:
            # the driving frame at an unrelated random pose and expression: large motion, so copying the
            # source never pays (rendered fresh, not cached)
            still_pose, still_expr = syn.random_still(rng, 1)
            pose, expr = torch.cat([pose[idx[:1]], still_pose]), torch.cat([expr[idx[:1]], still_expr])
            driving = syn.render([self.identity(item)], still_pose, still_expr, self.size)
            frames = torch.cat([self.render_frames(item, idx[:1]), (driving * 255).round_() / 255.0])
            idx = [0, 1]
        else:
            frames = self.render_frames(item, idx)
        landmarks = syn.landmark_targets(self.identity(item), pose[idx], expr[idx], self.size)
        return {"source": frames[0], "driving": frames[1], "domain_name": self.domain_of(item),
                "source_landmarks": landmarks[0], "landmarks": landmarks[1],
                "source_pose": pose[idx[0], :3].clone(), "pose": pose[idx[1], :3].clone(),
                "source_expression": expr[idx[0]].clone(), "expression": expr[idx[1]].clone()}


# ------------------------------------------------------------------------------------------------
# Augmentation
# ------------------------------------------------------------------------------------------------

def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def color_jitter(frames: list[torch.Tensor], amount: float, rng: np.random.Generator) -> list[torch.Tensor]:
    """Brightness, contrast, saturation (factors in [1 - a, 1 + a]) and hue (shift in [-a, a] turns) in a
    random order, the same for every frame of the sample (torchvision ColorJitter semantics)."""
    if amount <= 0:
        return frames
    b, c, s = (float(rng.uniform(1 - amount, 1 + amount)) for _ in range(3))
    h = float(rng.uniform(-amount, amount))
    order = rng.permutation(4)

    def apply(x: torch.Tensor) -> torch.Tensor:
        for op in order:
            if op == 0:
                x = (x * b).clamp(0, 1)
            elif op == 1:
                x = ((x - _gray(x).mean()) * c + _gray(x).mean()).clamp(0, 1)
            elif op == 2:
                g = _gray(x)
                x = ((x - g) * s + g).clamp(0, 1)
            else:
                x = _shift_hue(x, h)
        return x

    return [apply(f) for f in frames]


def _shift_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    import kornia.color as KC

    hsv = KC.rgb_to_hsv(x.unsqueeze(0))
    hue = torch.remainder(hsv[:, :1] + shift * 2 * math.pi, 2 * math.pi)
    return KC.hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)).squeeze(0).clamp(0, 1)


# ------------------------------------------------------------------------------------------------
# The mixed dataset and the step sampler
# ------------------------------------------------------------------------------------------------

@dataclass
class EpochPlan:
    source: np.ndarray
    item: np.ndarray


class MixedDataset(torch.utils.data.Dataset):
    """Indexed by ``(epoch, position)`` keys (see the module notes); returns one training pair."""

    def __init__(self, sources: list, image_size: int, samples_per_epoch: int, seed: int,
                 horizontal_flip: bool = True, time_flip: bool = True, color_jitter: float = 0.1,
                 pose_signs: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        if not sources:
            raise DataError("no data sources configured (add [[data.sources]] tables or data.manifest)")
        self.sources = sources
        self.size = image_size
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.hflip = horizontal_flip
        self.tflip = time_flip
        self.jitter = color_jitter
        self.pose_signs = torch.tensor(pose_signs, dtype=torch.float32)
        weights = np.array([s.spec["weight"] for s in sources], dtype=np.float64)
        self.shares = _shares(weights / weights.sum(), samples_per_epoch)
        names: list[str] = []
        for s in sources:
            for d in s.domains:
                if d not in names:
                    names.append(d)
        self.domains = names
        self._plans: OrderedDict[int, EpochPlan] = OrderedDict()

    def set_samples_per_epoch(self, n: int) -> None:
        """Epochs of exactly n samples (steps_per_epoch x global batch), shares by weight."""
        self.samples_per_epoch = int(n)
        weights = np.array([s.spec["weight"] for s in self.sources], dtype=np.float64)
        self.shares = _shares(weights / weights.sum(), self.samples_per_epoch)
        self._plans.clear()

    def describe(self) -> list[dict]:
        return [{"name": s.name, "kind": s.spec["kind"], "domains": s.domains, "items": len(s),
                 "weight": s.spec["weight"], "per_epoch": int(n), "ground_truth": s.has_ground_truth}
                for s, n in zip(self.sources, self.shares)]

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            src, item = [], []
            for j, (s, n) in enumerate(zip(self.sources, self.shares)):
                if n == 0:
                    continue
                rng = np.random.default_rng([self.seed, epoch, j, 3])
                reps = -(-int(n) // len(s))
                perm = np.concatenate([rng.permutation(len(s)) for _ in range(reps)])[:n]
                src.append(np.full(n, j))
                item.append(perm)
            src_a, item_a = np.concatenate(src), np.concatenate(item)
            order = np.random.default_rng([self.seed, epoch, 5]).permutation(len(src_a))
            self._plans[epoch] = EpochPlan(src_a[order], item_a[order])
            while len(self._plans) > 2:
                self._plans.popitem(last=False)
        return self._plans[epoch]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, pos = key
        plan = self.plan(epoch)
        j, item = int(plan.source[pos]), int(plan.item[pos])
        rng = np.random.default_rng([self.seed, epoch, pos, 11])
        s = self.sources[j].sample(item, rng)
        src, drv = s["source"], s["driving"]
        pose, spose = s.get("pose"), s.get("source_pose")
        expr, sexpr = s.get("expression"), s.get("source_expression")
        lm, slm = s.get("landmarks"), s.get("source_landmarks")
        if self.tflip and rng.random() < 0.5:
            src, drv, pose, spose, expr, sexpr, lm, slm = drv, src, spose, pose, sexpr, expr, slm, lm
        if self.hflip and rng.random() < 0.5:
            src, drv = src.flip(-1), drv.flip(-1)
            if pose is not None:
                pose = syn.mirror_pose(pose)
            if expr is not None:
                expr = syn.mirror_expression(expr)
            if lm is not None:
                lm, slm = syn.mirror_landmarks(lm), syn.mirror_landmarks(slm)
        src, drv = color_jitter([src, drv], self.jitter, rng)
        has_pose = pose is not None
        has_expr = expr is not None
        return {
            "source": src.float(), "driving": drv.float(),
            "domain": torch.tensor(self.domains.index(s["domain_name"]), dtype=torch.long),
            "source_id": torch.tensor(j, dtype=torch.long),
            "pose": (pose * self.pose_signs) if has_pose else torch.zeros(3),
            "has_pose": torch.tensor(has_pose),
            "expression": expr if has_expr else torch.zeros(syn.NUM_EXPRESSION),
            "has_expression": torch.tensor(has_expr),
            "landmarks": lm.float() if lm is not None else torch.zeros(len(syn.SUPERVISED_LANDMARKS), 2),
            "source_landmarks": slm.float() if slm is not None else torch.zeros(len(syn.SUPERVISED_LANDMARKS), 2),
            "has_landmarks": torch.tensor(lm is not None),
        }


def _shares(p: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to p (largest remainders)."""
    raw = p * total
    n = np.floor(raw).astype(int)
    rest = total - n.sum()
    if rest > 0:
        n[np.argsort(-(raw - n), kind="stable")[:rest]] += 1
    return n


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class StepBatchSampler:
    """Yields, for each optimiser step from ``start_step``, this rank's ``accumulate`` micro-batches of keys.

    Global batch of step s: positions ``[s' * G, (s' + 1) * G)`` of epoch ``s // steps_per_epoch`` (s' the
    step within the epoch). Micro-batch m of rank r takes the ``(m * world + r)``-th slice of size
    ``G / (world * accumulate)``: so one process with accumulation and several processes without see
    the same micro-batches in the same global order.
    """

    def __init__(self, steps_per_epoch: int, global_batch: int, accumulate: int, world: int, rank: int,
                 start_step: int, total_steps: int):
        if global_batch % (world * accumulate):
            raise DataError(f"train.batch_size={global_batch} is not divisible by processes ({world}) x "
                            f"train.accumulate ({accumulate})")
        self.spe = steps_per_epoch
        self.G = global_batch
        self.acc = accumulate
        self.world = world
        self.rank = rank
        self.start = start_step
        self.total = total_steps
        self.micro = global_batch // (world * accumulate)

    def keys(self, step: int, micro: int) -> list[tuple[int, int]]:
        epoch, within = divmod(step, self.spe)
        first = within * self.G + (micro * self.world + self.rank) * self.micro
        return [(epoch, p) for p in range(first, first + self.micro)]

    def __iter__(self):
        for step in range(self.start, self.total):
            for m in range(self.acc):
                yield self.keys(step, m)

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.acc


def build_sources(config: dict, image_size: int) -> list:
    data = TalkingHeadData.of(config)
    specs = [normalise_source(s, i) for i, s in enumerate(data.sources)]
    if data.manifest:
        specs += load_manifest(data.manifest)
    sources = []
    for s in specs:
        if s["kind"] == "synthetic":
            sources.append(SyntheticSource(s, image_size))
        else:
            sources.append(VideoFolderSource(s, image_size))
    return sources


def build_dataset(config: dict, image_size: int) -> MixedDataset:
    """All sources of the config, checked now (a bad folder fails here, before any training)."""
    sources = build_sources(config, image_size)
    if not sources:
        raise DataError("no data sources configured: add [[data.sources]] tables or set data.manifest")
    data = TalkingHeadData.of(config)
    samples = data.samples_per_epoch or sum(len(s) for s in sources) * data.repeats
    return MixedDataset(sources, image_size, samples, int(config["seed"]), data.horizontal_flip,
                        data.time_flip, data.color_jitter,
                        tuple(config["head_pose"]["ground_truth_signs"]))
