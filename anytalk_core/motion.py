"""The motion record: per-frame head pose and expression, and the operations artists and trainers need.

A :class:`Motion` holds N frames of yaw, pitch, roll (degrees), translation t (N, 3), expression deltas
(N, K, 3) and an optional scale (N,). It is the one motion type passed between the engine, the nodes,
the CLI, the audio model and the trainer, and saved to small ``.safetensors`` files to reuse a performance.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

import torch

from . import limits
from .safetensors_io import FileFormatError, read_tagged, write_tagged

POSE_FIELDS = ("yaw", "pitch", "roll")
MOTION_FORMAT = "anytalk.motion"


class MotionFamilyError(ValueError):
    """Expression deltas of two model families (different keypoint sets) cannot be combined."""


@dataclass
class Motion:
    """N frames of motion of one model family. Angles in degrees, shapes (N,), (N, 3), (N, K, 3)."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    translation: torch.Tensor
    expression: torch.Tensor
    scale: torch.Tensor | None = None
    family: str = "face_vid2vid"
    fps: float | None = None

    def __post_init__(self) -> None:
        n = self.yaw.shape[0]
        for name in POSE_FIELDS:
            t = getattr(self, name)
            if t.dim() != 1 or t.shape[0] != n:
                raise ValueError(f"Motion.{name} must have shape (N,) with N={n}, got {tuple(t.shape)}")
        if self.translation.shape != (n, 3):
            raise ValueError(f"Motion.translation must have shape ({n}, 3), got {tuple(self.translation.shape)}")
        if self.expression.dim() != 3 or self.expression.shape[0] != n or self.expression.shape[2] != 3:
            raise ValueError(f"Motion.expression must have shape ({n}, K, 3), got {tuple(self.expression.shape)}")
        if self.scale is not None and self.scale.shape != (n,):
            raise ValueError(f"Motion.scale must have shape ({n},), got {tuple(self.scale.shape)}")

    # ----- container behaviour -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.yaw.shape[0]

    @property
    def num_kp(self) -> int:
        return self.expression.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll,
               "translation": self.translation, "expression": self.expression}
        if self.scale is not None:
            out["scale"] = self.scale
        return out

    def _replace(self, **tensors: torch.Tensor | None) -> "Motion":
        return dataclasses.replace(self, **tensors)

    def map(self, fn) -> "Motion":
        """Apply ``fn`` to every tensor (e.g. indexing, device moves)."""
        return self._replace(**{k: fn(v) for k, v in self.tensors().items()})

    def __getitem__(self, index: int | slice | torch.Tensor) -> "Motion":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self.map(lambda t: t[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Motion":
        return self.map(lambda t: t.to(device=device, dtype=dtype))

    def repeat_to(self, n: int) -> "Motion":
        """Tile a one-frame motion to n frames (e.g. a still source pose for a whole clip)."""
        if len(self) != 1:
            raise ValueError(f"repeat_to needs a one-frame motion, got {len(self)} frames")
        return self.map(lambda t: t.expand(n, *t.shape[1:]).clone())

    @staticmethod
    def cat(motions: list["Motion"]) -> "Motion":
        if not motions:
            raise ValueError("Motion.cat needs at least one motion")
        first = motions[0]
        for m in motions[1:]:
            check_same_family(first, m)
            if (m.scale is None) != (first.scale is None):
                raise ValueError("Motion.cat: some motions have a scale and some do not")
        keys = first.tensors().keys()
        return first._replace(**{k: torch.cat([m.tensors()[k] for m in motions]) for k in keys})

    # ----- editing -------------------------------------------------------------------------------
    def with_offsets(self, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                     translation: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> "Motion":
        """Add constant pose offsets (degrees, normalised translation units)."""
        t = self.translation + torch.tensor(translation, dtype=self.translation.dtype, device=self.translation.device)
        return self._replace(yaw=self.yaw + yaw, pitch=self.pitch + pitch, roll=self.roll + roll, translation=t)

    def with_pose(self, yaw: float | None = None, pitch: float | None = None, roll: float | None = None) -> "Motion":
        """Free view: replace the given angles by constants on every frame."""
        out = {}
        for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
            if value is not None:
                out[name] = torch.full_like(getattr(self, name), float(value))
        return self._replace(**out)

    def scaled_expression(self, strength: float) -> "Motion":
        return self._replace(expression=self.expression * strength)

    # ----- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write a small safetensors file (atomically; never over an existing file unless asked)."""
        write_tagged(path, self.tensors(), MOTION_FORMAT, {"family": self.family, "fps": json.dumps(self.fps)},
                     overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Motion":
        """Read a motion file, every field validated (see :func:`validate_motion_file`); MotionFileError if bad."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: motion file not found")
        tensors, meta = read_tagged(path, MOTION_FORMAT, "AnyTalk motion file", error=MotionFileError)
        return validate_motion_file(path, tensors, meta)


class MotionFileError(FileFormatError):
    """A motion file is malformed or out of bounds; the message names the file and the field."""


MOTION_TENSORS = (*POSE_FIELDS, "translation", "expression", "scale")
MAX_ABS_VALUE = 1e4  # degrees, normalised translation and expression units: real motions stay far below
_FAMILY_NAME = re.compile(r"^[a-z0-9_]{1,64}$")


def validate_motion_file(path: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Motion:
    """The Motion a tagged file's tensors and metadata describe, or one MotionFileError naming the faulty field.

    Checked (the format tag was checked on reading): the family name, fps (JSON null or a number in limits.MIN_FPS..MAX_FPS), the
    tensor names (exactly the motion's fields), dtypes (floating point; stored as float32), shapes (N >= 1
    frames, K >= 1 keypoints), finite values of magnitude at most MAX_ABS_VALUE, and the duration
    N / fps against limits.max_seconds().
    """
    def bad(message: str) -> MotionFileError:
        return MotionFileError(f"{path}: {message}")

    family = meta.get("family", "face_vid2vid")
    if not _FAMILY_NAME.match(family):
        raise bad(f"motion file with an invalid family name {_shown(family)}")
    fps = _file_fps(meta.get("fps", "null"), bad)
    unknown = sorted(set(tensors) - set(MOTION_TENSORS))
    if unknown:
        raise bad(f"motion file holds unexpected tensors {', '.join(_shown(k) for k in unknown[:3])} "
                  f"(a motion has {', '.join(MOTION_TENSORS)})")
    missing = [k for k in MOTION_TENSORS[:-1] if k not in tensors]
    if missing:
        raise bad(f"motion file lacks tensors {missing}")
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise bad(f"motion tensor {name!r} has dtype {t.dtype}; motion values are floating point")
        tensors[name] = t.to(torch.float32)
        if not bool(torch.isfinite(tensors[name]).all()):
            raise bad(f"motion tensor {name!r} holds NaN or infinite values (a damaged or edited file)")
        if t.numel() and float(tensors[name].abs().max()) > MAX_ABS_VALUE:
            raise bad(f"motion tensor {name!r} holds values beyond +-{MAX_ABS_VALUE:g} (a damaged or edited file)")
    try:
        motion = Motion(family=family, fps=fps, **tensors)
    except ValueError as exc:
        raise bad(f"motion file with inconsistent shapes: {exc}") from None
    if len(motion) == 0 or not 1 <= motion.num_kp <= limits.MAX_KEYPOINTS:
        raise bad(f"motion file with {len(motion)} frames of {motion.num_kp} keypoints; a motion needs at least one "
                  f"frame and 1 to {limits.MAX_KEYPOINTS} keypoints")
    if fps is not None:
        try:
            limits.check_seconds(len(motion) / fps, f"{path}: the motion ({len(motion)} frames at {fps:g} fps)")
        except limits.LimitError as exc:
            raise MotionFileError(str(exc)) from None
    return motion


def _file_fps(text: str, bad) -> float | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise bad(f"motion file whose fps metadata {_shown(text)} is not JSON") from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"motion file whose fps metadata {_shown(text)} is not a number")
    try:
        return limits.check_fps(value, "motion file")
    except limits.LimitError as exc:
        raise bad(str(exc)) from None


def _shown(value: object, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def check_same_family(a: Motion, b: Motion) -> None:
    """Expression deltas only combine within one family (same keypoint set)."""
    if a.family != b.family or a.num_kp != b.num_kp:
        raise MotionFamilyError(
            f"cannot combine expressions of a {a.family} motion ({a.num_kp} keypoints) and a {b.family} motion "
            f"({b.num_kp} keypoints): mix only their poses, or estimate both motions with the same model"
        )


def interpolate(reference: Motion, target: Motion, pose: float = 1.0, expression: float = 1.0,
                translation: float = 1.0) -> Motion:
    """Per-component blend ``reference + strength * (target - reference)``; strengths 1 give ``target``.

    ``reference`` may have one frame (broadcast). Scale follows the pose strength (in log space).
    """
    check_same_family(reference, target)
    n = len(target)
    ref = reference.repeat_to(n) if len(reference) == 1 and n != 1 else reference

    def lerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
        return b if w == 1.0 else a + w * (b - a)

    scale = None
    if target.scale is not None and ref.scale is not None:
        scale = target.scale if pose == 1.0 else ref.scale * (target.scale / ref.scale) ** pose
    return target._replace(
        yaw=lerp(ref.yaw, target.yaw, pose),
        pitch=lerp(ref.pitch, target.pitch, pose),
        roll=lerp(ref.roll, target.roll, pose),
        translation=lerp(ref.translation, target.translation, translation),
        expression=lerp(ref.expression, target.expression, expression),
        scale=scale if scale is not None else target.scale,
    )


def mix(pose_from: Motion, expression_from: Motion, expression_family_check: bool = True) -> Motion:
    """Pose (angles, translation, scale) of one motion with the expression of another.

    The pose may come from any family; the result belongs to the expression's family. Lengths must
    match, or one of them must be a single frame (broadcast).
    """
    n = max(len(pose_from), len(expression_from))
    pose = pose_from.repeat_to(n) if len(pose_from) == 1 and n > 1 else pose_from
    expr = expression_from.repeat_to(n) if len(expression_from) == 1 and n > 1 else expression_from
    if len(pose) != len(expr):
        raise ValueError(f"cannot mix motions of {len(pose_from)} and {len(expression_from)} frames: "
                         "retime one of them or use a one-frame motion")
    scale = pose.scale if expr.scale is not None and pose.scale is not None else expr.scale
    return expr._replace(yaw=pose.yaw, pitch=pose.pitch, roll=pose.roll, translation=pose.translation, scale=scale)


def mix_expressions(a: Motion, b: Motion, weight: float) -> Motion:
    """Blend the expressions of two motions of the same family: ``(1 - w) a + w b``."""
    check_same_family(a, b)
    return a._replace(expression=(1 - weight) * a.expression + weight * b.expression)


def retime(motion: Motion, fps: float, target_fps: float) -> Motion:
    """Resample a motion to another frame rate by linear interpolation in time."""
    if fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {fps} and {target_fps}")
    n = len(motion)
    duration = n / fps
    m = max(1, round(duration * target_fps))
    t = torch.arange(m, dtype=torch.float64) / target_fps * fps
    t = t.clamp(max=n - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (t - lo).to(motion.yaw.dtype)

    def resample(x: torch.Tensor) -> torch.Tensor:
        wv = w.view(-1, *([1] * (x.dim() - 1))).to(x.device)
        return x[lo] * (1 - wv) + x[hi] * wv

    out = motion.map(resample)
    out.fps = target_fps
    return out
