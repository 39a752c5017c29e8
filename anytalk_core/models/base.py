"""Interface every model family implements, and the source state the engine caches per portrait."""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..geometry import convex_hull_volume, euler_to_rotation_matrix, transform_keypoints
from ..memory import return_freed_memory
from ..motion import Motion, interpolate
from .audio2motion import AudioToMotion
from .config import ModelConfig
from .blocks import Unavailable

NO_AUDIO2MOTION_FIX = ("train one with `anytalk-train training/configs/audio2motion.toml model.init_from=<this "
                       "checkpoint>`, or use a checkpoint that has one (e.g. the bundled demo)")


def build_audio2motion(config: ModelConfig) -> nn.Module:
    """The optional audio-to-motion part a config describes, or a stand-in that explains how to get one."""
    if config.audio2motion is None:
        return Unavailable("audio-to-motion", NO_AUDIO2MOTION_FIX)
    return AudioToMotion(config.audio2motion)


@dataclass
class SourceState:
    """Everything computed once per source portrait (batch of 1 or more sources)."""

    volume: torch.Tensor  # (B, C, D, h, w) appearance feature volume
    canonical: torch.Tensor  # (B, K, 3) canonical keypoints
    motion: Motion  # the source's own pose and expression (B frames)
    keypoints: torch.Tensor  # (B, K, 3) canonical keypoints moved by the source motion

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SourceState":
        return SourceState(self.volume.to(device=device, dtype=dtype), self.canonical.to(device=device, dtype=dtype),
                           self.motion.to(device, dtype), self.keypoints.to(device=device, dtype=dtype))


@dataclass
class TransferOptions:
    """How driving motion moves the source keypoints."""

    mode: str = "relative"  # "relative" (to a reference driving frame) or "absolute"
    pose_strength: float = 1.0
    expression_strength: float = 1.0
    translation_strength: float = 1.0
    adapt_scale: bool = False  # relative mode: scale movement by the keypoint hulls' volume ratio

    def __post_init__(self) -> None:
        if self.mode not in ("relative", "absolute"):
            raise ValueError(f"transfer mode must be 'relative' or 'absolute', got {self.mode!r}")
        for name in ("pose_strength", "expression_strength", "translation_strength"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
                raise ValueError(f"{name} must be a finite number, got {value!r}")


class TalkingHeadModel(nn.Module, abc.ABC):
    """A model family: appearance encoder, keypoints, motion estimator, dense motion and generator.

    Subclasses set the submodules and implement :meth:`estimate_motion_raw`, :meth:`motion_from_raw`,
    :meth:`canonical_keypoints` and :meth:`decode`; transfer and keypoint maths live here, driven by
    ``config.convention``.
    """

    family: str = ""
    transfer_options_type: type[TransferOptions] = TransferOptions  # the family's options (a subclass may add switches)
    source_only_modules: tuple[str, ...] = ("appearance",)  # networks that only ever see the source image

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.audio2motion = build_audio2motion(config)
        # child networks whose weights are not in memory (on the meta device): released after use, or not yet
        # read (``checkpoints.load_model(defer=...)``); moving the model leaves them where they are
        self.unloaded_networks: set[str] = set()

    def _apply(self, fn, recurse: bool = True):
        if not recurse or not self.unloaded_networks:
            return super()._apply(fn, recurse)
        for name, child in self.named_children():
            if name not in self.unloaded_networks:
                child._apply(fn)
        return super()._apply(fn, recurse=False)

    @property
    def has_audio2motion(self) -> bool:
        """Whether the checkpoint carried an audio-to-motion part (``audio2motion.`` weights)."""
        return isinstance(self.audio2motion, AudioToMotion)

    # --- family hooks ------------------------------------------------------------------------------
    @abc.abstractmethod
    def canonical_keypoints(self, image: torch.Tensor) -> torch.Tensor:
        """Canonical keypoints of each image: (B, 3, H, W) -> (B, K, 3)."""

    @abc.abstractmethod
    def estimate_motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The motion network's raw outputs (angle logits, translation, expression, ...)."""

    @abc.abstractmethod
    def motion_from_raw(self, raw: dict[str, torch.Tensor]) -> Motion:
        """Raw motion outputs -> a Motion record in degrees."""

    @abc.abstractmethod
    def decode(self, volume: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense motion + generator: returns at least ``prediction`` (B, 3, H, W)."""

    # --- shared ------------------------------------------------------------------------------------
    @property
    def convention(self):
        return self.config.convention

    @property
    def num_kp(self) -> int:
        return self.config.num_kp

    def encode_appearance(self, image: torch.Tensor) -> torch.Tensor:
        return self.appearance(image)

    def estimate_motion(self, image: torch.Tensor) -> Motion:
        """Pose and expression of each frame (B, 3, H, W) -> Motion of B frames."""
        return self.motion_from_raw(self.estimate_motion_raw(image))

    def rotation(self, motion: Motion) -> torch.Tensor:
        """Column-vector rotation matrices (N, 3, 3) of a motion in this family's convention."""
        c = self.convention
        return euler_to_rotation_matrix(motion.yaw, motion.pitch, motion.roll, order=c.rotation_order, pi=c.pi)

    def motion_keypoints(self, canonical: torch.Tensor, motion: Motion) -> torch.Tensor:
        """Canonical keypoints (1 or N, K, 3) moved by each frame of a motion -> (N, K, 3)."""
        n = len(motion)
        if canonical.shape[0] == 1 and n != 1:
            canonical = canonical.expand(n, *canonical.shape[1:])
        c = self.convention
        return transform_keypoints(canonical, self.rotation(motion), motion.translation, motion.expression,
                                   scale=motion.scale if c.uses_scale else None, translate_z=c.translate_z)

    def prepare_source(self, image: torch.Tensor) -> SourceState:
        """All per-source work, done once: appearance volume, canonical keypoints, source motion."""
        canonical = self.canonical_keypoints(image)
        motion = self.estimate_motion(image)
        return SourceState(self.encode_appearance(image), canonical, motion, self.motion_keypoints(canonical, motion))

    render_modules: tuple[str, ...] = ("dense_motion", "generator")  # all that rendering driven keypoints needs

    def release_networks(self, names: tuple[str, ...] | list[str]) -> None:
        """Free the weights of the named child networks (one-shot runs that no longer need them).

        They move to the meta device: the model can still do what needs only the other networks, but a
        call into a released one raises. The CLI frees the source-only networks after preparing the source,
        and everything but :attr:`render_modules` once the driven keypoints are known; it reads the
        render modules only then (``checkpoints.load_model(defer=...)``, ``checkpoints.load_deferred``), so
        no two stages' weights are in memory at once.
        """
        for name in names:
            getattr(self, name).to("meta")
            self.unloaded_networks.add(name)
        return_freed_memory()

    def networks_not_needed_for_rendering(self) -> list[str]:
        return [name for name, _ in self.named_children() if name not in self.render_modules]

    def movement_scale(self, source_kp: torch.Tensor, reference_kp: torch.Tensor) -> float:
        """sqrt(hull volume of the source keypoints) / sqrt(that of the reference driving keypoints)."""
        return convex_hull_volume(source_kp[0]) ** 0.5 / convex_hull_volume(reference_kp[0]) ** 0.5

    def driven_keypoints(self, source: SourceState, driving: Motion, options: TransferOptions | None = None,
                         reference: Motion | None = None) -> torch.Tensor:
        """Keypoints that drive the source, one set per driving frame: (N, K, 3).

        absolute: the source canonical keypoints moved by the driving motion.
        relative: ``x_s + (x_d,i - x_d,ref) * m`` with the reference driving frame (default: frame 0).
        Strengths blend each component from the reference (relative) or the source (absolute) motion
        towards the driving one; with all strengths 1 both modes are the reference implementations'.
        """
        options = options or TransferOptions()
        if source.canonical.shape[0] != 1:
            raise ValueError("driven_keypoints takes one source; loop over sources for a batch")
        strengths = dict(pose=options.pose_strength, expression=options.expression_strength,
                         translation=options.translation_strength)
        if options.mode == "absolute":
            return self.motion_keypoints(source.canonical, interpolate(source.motion, driving, **strengths))
        reference = driving[0] if reference is None else reference
        kp_driving = self.motion_keypoints(source.canonical, interpolate(reference, driving, **strengths))
        kp_reference = self.motion_keypoints(source.canonical, reference)
        diff = kp_driving - kp_reference
        if options.adapt_scale:
            diff = diff * self.movement_scale(source.keypoints, kp_reference)
        return diff + source.keypoints
