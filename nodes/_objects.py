"""The objects behind the pack's own socket types, the per-source cache, and input checks with artist-facing errors.

=================  ==========================================================================================
ANYTALK_MODEL      :class:`AnyTalkModel`: a loaded network + engine settings (device, precision, chunk size)
ANYTALK_SOURCE     :class:`SourceImage`: the portrait, its crop (matrix, size) and a content fingerprint;
                   model-independent (the model's source work is cached per (model, source), see below)
ANYTALK_KEYPOINTS  :class:`Keypoints`: a source's state (canonical keypoints, own pose/expression, appearance
                   volume: once per source) and, after Transfer Motion, driven keypoints N x K x 3
ANYTALK_MOTION     ``anytalk_core.motion.Motion`` itself (yaw/pitch/roll/translation/expression/scale, fps)
ANYTALK_WARP       :class:`WarpPlan`: lazy 3D warp = the source state + driven keypoints; Generate computes
                   dense motion, warping and decoding chunk by chunk, so no per-frame feature volume is
                   ever held for the clip (the plan grows by K x 3 floats per frame, 180 bytes for K = 15)
=================  ==========================================================================================

Source work (appearance volume, canonical keypoints, source pose) is computed once per (model, source)
and kept in a small LRU cache on the CPU (:func:`source_state`), so neither the split graph nor the
all-in-one Animate node recomputes it when only the driving input changes.
"""
from __future__ import annotations

import functools
import hashlib
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..anytalk_core.crop import CropSpec, apply_crop
from ..anytalk_core.engine import Engine, EngineConfig, resolve_device
from ..anytalk_core.media import image_tensor_to_rgb
from ..anytalk_core.models.base import SourceState, TalkingHeadModel
from ..anytalk_core.motion import Motion
from . import _comfy

CATEGORY = "AnyTalk"


class AnyTalkError(ValueError):
    """An input problem the artist can fix; the message says what and how."""


def artist_errors(display: str):
    """Decorator: library errors (ValueError, missing/existing files) become one-line AnyTalkErrors.

    ComfyUI's own interruption (Cancel) and unexpected bugs pass through untouched.
    """
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except AnyTalkError as exc:
                if str(exc).startswith("AnyTalk "):
                    raise
                raise AnyTalkError(f"{display}: {exc}") from None
            except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, ImportError) as exc:
                raise AnyTalkError(f"{display}: {exc}") from exc
        return inner
    return wrap


# --------------------------------------------------------------------------------------------------
# ANYTALK_MODEL
# --------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class AnyTalkModel:
    """A loaded network and how to run it. ``uid`` changes whenever Load Model loads again."""

    model: TalkingHeadModel
    name: str
    path: str
    family: str  # e.g. "face_vid2vid", "liveportrait_human"
    device: str = "auto"  # "auto" = ComfyUI's device (or cuda/cpu outside ComfyUI)
    precision: str = "fp32"
    chunk_size: int = 8
    notes: list[str] = field(default_factory=list)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    patcher: object = None  # ComfyUI ModelPatcher when running inside ComfyUI with device "auto"
    _engines: dict = field(default_factory=dict, repr=False)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def num_kp(self) -> int:
        return int(self.model.num_kp)

    @property
    def weights_key(self) -> tuple:
        """Identifies the weights (not the engine settings): two loads of one file share it."""
        return (self.path, self.family)

    def describe(self) -> str:
        return f"{self.name} ({self.family}, {self.num_kp} keypoints)"

    def engine(self, chunk_size: int | None = None) -> Engine:
        """An engine on the model's device; inside ComfyUI the model is (re)loaded through its model manager."""
        if self.patcher is not None and _comfy.load_patcher(self.patcher):
            device = self.patcher.load_device
        elif self.device == "auto":
            device = _comfy.default_device()
        else:
            device = self.device
        device = str(device)
        try:
            resolve_device(device)
        except ValueError as exc:
            raise AnyTalkError(f"{exc}; choose device 'cpu' in AnyTalk Load Model") from None
        key = (device, chunk_size or self.chunk_size)
        engine = self._engines.get(key)
        if engine is None:
            config = EngineConfig(device=device, precision=self.precision, chunk_size=key[1])
            engine = Engine(self.model, config)
            self._engines[key] = engine
            _comfy.log.info("AnyTalk: %s on %s: %s", self.name, engine.device, engine.describe_precision())
        # ComfyUI may have offloaded the model (or loaded it only partly) since the last run: all of it here
        self.model.to(engine.device)
        return engine

    def __repr__(self) -> str:
        return f"AnyTalkModel({self.describe()}, device={self.device}, precision={self.precision})"


# --------------------------------------------------------------------------------------------------
# ANYTALK_SOURCE
# --------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class SourceImage:
    """One portrait: the full image (1, 3, H, W), the square crop spec and its preview (1, 3, s, s)."""

    original: torch.Tensor
    spec: CropSpec
    crop: torch.Tensor
    fingerprint: str
    framing: str | None = None  # crop auto: the family whose framing cut it (see anytalk_core.stages.framing_family)

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def original_hw(self) -> tuple[int, int]:
        return self.spec.original_hw

    def model_input(self, size: int) -> torch.Tensor:
        """The same crop region sampled at a model's input size (1, 3, size, size)."""
        if size == self.spec.size:
            return self.crop
        return apply_crop(self.original, self.spec.resized(size))

    def __repr__(self) -> str:
        h, w = self.original_hw
        return f"SourceImage({w}x{h} -> crop {self.size}px, {self.fingerprint[:8]})"


def fingerprint(*tensors: torch.Tensor, extra: str = "") -> str:
    h = hashlib.sha1(extra.encode())
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Per-(model, source) state cache
# --------------------------------------------------------------------------------------------------

class _SourceCache:
    """LRU of SourceStates on the CPU keyed by (model uid, source fingerprint); counts its misses."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.items: OrderedDict[tuple[str, str], SourceState] = OrderedDict()
        self.computed = 0
        self.lock = threading.Lock()

    def get(self, model: AnyTalkModel, source: SourceImage) -> SourceState:
        key = (model.uid, source.fingerprint)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        engine = model.engine()
        state = engine.prepare_source(source.model_input(model.image_size)).to("cpu")
        with self.lock:
            self.computed += 1
            self.items[key] = state
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        return state

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


SOURCE_CACHE = _SourceCache()


def source_state(model: AnyTalkModel, source: SourceImage) -> SourceState:
    """The model's source work for this portrait, computed once and reused (CPU tensors)."""
    return SOURCE_CACHE.get(model, source)


# --------------------------------------------------------------------------------------------------
# ANYTALK_KEYPOINTS and ANYTALK_WARP
# --------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Keypoints:
    """A source's keypoints for one model; ``driven`` (N, K, 3) once Transfer Motion has moved them."""

    model: AnyTalkModel  # a reference to the loaded model (Transfer Motion needs its keypoint maths)
    source_fingerprint: str
    state: SourceState  # shared with the cache, never copied per frame
    driven: torch.Tensor | None = None
    fps: float | None = None

    @property
    def num_kp(self) -> int:
        return int(self.state.canonical.shape[1])

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def weights_key(self) -> tuple:
        return self.model.weights_key

    @property
    def frames(self) -> torch.Tensor:
        """The keypoints that drive the generator: (N, K, 3) (the source's own for an undriven set)."""
        return self.driven if self.driven is not None else self.state.keypoints.to("cpu")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __repr__(self) -> str:
        kind = f"{len(self)} driven frames" if self.driven is not None else "source keypoints"
        return f"Keypoints({self.family}, K={self.num_kp}, {kind})"


@dataclass(eq=False)
class WarpPlan:
    """Lazy 3D warp: everything Generate needs, nothing per frame but the driven keypoints."""

    model_uid: str
    weights_key: tuple
    source_fingerprint: str
    state: SourceState
    keypoints: torch.Tensor  # (N, K, 3), CPU
    fps: float | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def __repr__(self) -> str:
        return f"WarpPlan({len(self)} frames, K={self.keypoints.shape[1]}, lazy)"


def check_same_model(kind: str, made_with: tuple, model: AnyTalkModel, node: str) -> None:
    if made_with != model.weights_key:
        raise AnyTalkError(
            f"{node}: the {kind} was made with a different model ({made_with[0]}) than the one connected here "
            f"({model.path}); connect the same AnyTalk Load Model to every node of one animation")


def check_same_source(kind: str, fp: str, source: SourceImage, node: str) -> None:
    if fp != source.fingerprint:
        raise AnyTalkError(
            f"{node}: the {kind} belongs to a different source image than the one connected here; connect the "
            "same AnyTalk Load Source output to every node of one animation")


# --------------------------------------------------------------------------------------------------
# IMAGE / AUDIO helpers
# --------------------------------------------------------------------------------------------------

def rgb_images(image, what: str) -> torch.Tensor:
    """A ComfyUI IMAGE (B, H, W, C) -> float RGB (B, H, W, 3) in 0..1, or a clear error."""
    if image is None:
        raise AnyTalkError(f"no {what} connected")
    if not isinstance(image, torch.Tensor):
        raise AnyTalkError(f"{what} must be an IMAGE (a tensor [B, H, W, C]), got {type(image).__name__}")
    try:
        rgb = image_tensor_to_rgb(image)
    except ValueError as exc:
        raise AnyTalkError(f"{what}: {exc}") from None
    if not torch.isfinite(rgb).all():
        raise AnyTalkError(f"{what} contains NaN or infinite values; check the node that made it")
    return rgb


def check_image_shape(image, what: str, min_side: int = 8, max_side: int = 16384) -> tuple[int, int, int]:
    """Validate an IMAGE batch without copying it; returns (B, H, W)."""
    if image is None:
        raise AnyTalkError(f"no {what} connected")
    if not isinstance(image, torch.Tensor):
        raise AnyTalkError(f"{what} must be an IMAGE (a tensor [B, H, W, C]), got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise AnyTalkError(f"{what} must be an IMAGE [B, H, W, C] with 1, 3 or 4 channels, got shape "
                           f"{tuple(image.shape)}")
    b, h, w = image.shape[:3]
    if b == 0:
        raise AnyTalkError(f"{what} is an empty batch (0 images)")
    if min(h, w) < min_side:
        raise AnyTalkError(f"{what} is too small ({w}x{h} pixels); use at least {min_side}x{min_side}")
    if max(h, w) > max_side:
        raise AnyTalkError(f"{what} is too large ({w}x{h} pixels); downscale it below {max_side} pixels")
    return int(b), int(h), int(w)


def to_comfy_image(frames: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> ComfyUI IMAGE (n, H, W, 3) float32 on the CPU."""
    return frames.permute(0, 2, 3, 1).to("cpu", torch.float32).contiguous()


def motion_fps(motion: Motion, default: float = 25.0) -> float:
    fps = getattr(motion, "fps", None)
    return float(fps) if fps else float(default)


MOTION_FIELDS = ("yaw", "pitch", "roll", "translation", "expression", "family")


def check_motion(motion, node: str) -> Motion:
    """An ANYTALK_MOTION (any copy of anytalk_core's Motion record) with at least one frame."""
    if not isinstance(motion, Motion) and not all(hasattr(motion, f) for f in MOTION_FIELDS):
        raise AnyTalkError(f"{node}: expected an ANYTALK_MOTION, got {type(motion).__name__}")
    if len(motion) == 0:
        raise AnyTalkError(f"{node}: the motion has no frames")
    return motion
