"""Expression editing on a Motion: semantic sliders for LivePortrait, a per-keypoint delta scale for any
family, and LivePortrait's eye/lip retargeting with explicit target ratios.

Semantic sliders (LivePortrait, K = 21)
---------------------------------------
Each slider adds ``value x coefficient`` to fixed entries ``(keypoint, axis)`` of the expression deltas of
every frame (axis 0 = x, 1 = y, 2 = z), and some also add degrees to the head pose. The keypoints and
coefficients were chosen to mirror the behaviour of the popular ComfyUI "Expression Editor (PHM)" node
(PowerHouseMan/ComfyUI-AdvancedLivePortrait, ``ExpressionEditor.calc_fe``), including its couplings
(aaa tilts the head, wink turns it slightly, pupil_y also moves the eyelids), so that slider values carry
over between the two nodes. Two sliders take a different table for negative values (as that node does);
every slider is exactly 0 at 0 and linear on each side of 0 (``f(c v) = c f(v)`` for ``c >= 0``).
Ranges are that node's.

============  ===========  ====================================================================  ===============
slider        range        expression offsets per unit, ``keypoint.axis: coefficient``           pose (deg/unit)
============  ===========  ====================================================================  ===============
blink         -20 .. 5     11.y -0.001, 13.y +0.0003, 15.y -0.001, 16.y +0.0003,                 -
                           1.y -0.00025, 2.y +0.00025  (negative closes the eyes)
eyebrow       -10 .. 15    v > 0: 1.y +0.001, 2.y -0.001                                         -
                           v < 0: 1.x -0.001, 2.x +0.001, 1.y +0.0003, 2.y -0.0003
wink          0 .. 25      11.y +0.001, 13.y -0.0003, 17.x +0.0003, 17.y +0.0003, 3.y -0.0003    roll -0.1,
                                                                                                 yaw -0.1
pupil_x       -15 .. 15    v > 0: 11.x +0.0007, 15.x +0.001                                      -
                           v < 0: 11.x +0.001, 15.x +0.0007
pupil_y       -15 .. 15    11.y -0.0005, 15.y -0.0005, 13.y -0.00015, 16.y -0.00015,             -
                           1.y +0.000125, 2.y -0.000125  (11.y/15.y -0.001, minus blink / 2)
aaa           -30 .. 120   19.y +0.001, 19.z +0.0001, 17.y -0.0001                               pitch -0.05
eee           -20 .. 15    20.y -0.001, 20.z -0.001, 14.y -0.001                                 -
woo           -20 .. 15    14.y +0.001, 3.y -0.0005, 7.y -0.0005, 17.z -0.0005                   -
smile         -0.3 .. 1.3  20.y -0.01, 14.y -0.02, 17.y +0.0065, 17.z +0.003, 13.y -0.00275,     -
                           16.y -0.00275, 3.y -0.0035, 7.y -0.0035
rotate_pitch  -20 .. 20    -                                                                     pitch +1
rotate_yaw    -20 .. 20    -                                                                     yaw +1
rotate_roll   -20 .. 20    -                                                                     roll +1
============  ===========  ====================================================================  ===============

The rotation sliders add degrees to the motion's own pitch, yaw and roll (AnyTalk's convention, as
AnyTalk Motion Edit; they work for every family). The expression sliders need a LivePortrait motion
(21 keypoints): their keypoints mean nothing for other families, which get :func:`scale_keypoint_deltas`
(multiply chosen keypoints' expression deltas) instead. Offsets are added to the motion's expression,
so they compose with a driving motion: ``edit(driving) - driving`` is the same for every motion.

Eye and lip retargeting (LivePortrait)
--------------------------------------
The retargeting MLPs take the source keypoints x_s flattened and ratios: eye ``[source left eye, source
right eye, target eye]`` open ratios (eyelid gap / eye width), lip ``[source lip, target lip]`` open
ratios (mouth gap / mouth width), and return keypoint deltas (B, K, 3). The source's own ratios come from
a landmark backend when one is registered with :func:`register_ratio_backend`; **none is installed with
AnyTalk**, so by default they are the documented neutral values :data:`NEUTRAL_EYE_RATIO` = 0.35 (an open,
relaxed eye; the reference's measured source eye ratios are around 0.3-0.4) and :data:`NEUTRAL_LIP_RATIO`
= 0.0 (closed lips, the reference's "normalize lip" target). :func:`retargeted_keypoints` adds those
deltas to the driven keypoints before stitching, as the reference's absolute-mode retargeting does.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from . import limits
from .motion import POSE_FIELDS, Motion

LIVEPORTRAIT_NUM_KP = 21
X, Y, Z = 0, 1, 2
Offset = tuple[int, int, float]  # (keypoint index, axis 0/1/2 = x/y/z, coefficient per slider unit)


@dataclass(frozen=True)
class Slider:
    """One semantic slider: expression offsets (and pose degrees) per unit of slider value."""

    name: str
    minimum: float
    maximum: float
    step: float
    description: str
    offsets: tuple[Offset, ...] = ()
    negative_offsets: tuple[Offset, ...] | None = None  # used for values < 0 (None: ``offsets``)
    pose: tuple[tuple[str, float], ...] = ()  # (pitch|yaw|roll, degrees per unit), both signs

    @property
    def semantic(self) -> bool:
        """True when the slider moves expression keypoints (LivePortrait only)."""
        return bool(self.offsets or self.negative_offsets)

    def offsets_for(self, value: float) -> tuple[Offset, ...]:
        return self.negative_offsets if value < 0 and self.negative_offsets is not None else self.offsets

    def keypoint_axes(self) -> set[tuple[int, int]]:
        """Every (keypoint, axis) this slider can change, for either sign."""
        return {(k, a) for k, a, _ in (*self.offsets, *(self.negative_offsets or ()))}


def _merge(*groups: Iterable[Offset], scale: Sequence[float] | None = None) -> tuple[Offset, ...]:
    """Sum offsets of several groups (each scaled), one entry per (keypoint, axis), in first-seen order."""
    out: dict[tuple[int, int], float] = {}
    for group, s in zip(groups, scale or [1.0] * len(groups)):
        for k, a, c in group:
            out[(k, a)] = out.get((k, a), 0.0) + s * c
    return tuple((k, a, c) for (k, a), c in out.items())


_BLINK = ((11, Y, -0.001), (13, Y, 0.0003), (15, Y, -0.001), (16, Y, 0.0003), (1, Y, -0.00025), (2, Y, 0.00025))

SLIDERS: dict[str, Slider] = {s.name: s for s in (
    Slider("blink", -20.0, 5.0, 0.5, "Eyelids: negative closes the eyes, positive opens them wider.", _BLINK),
    Slider("eyebrow", -10.0, 15.0, 0.5, "Eyebrows: positive raises, negative lowers and frowns.",
           ((1, Y, 0.001), (2, Y, -0.001)),
           negative_offsets=((1, X, -0.001), (2, X, 0.001), (1, Y, 0.0003), (2, Y, -0.0003))),
    Slider("wink", 0.0, 25.0, 0.5, "Closes one eye (and turns the head slightly, as a wink does).",
           ((11, Y, 0.001), (13, Y, -0.0003), (17, X, 0.0003), (17, Y, 0.0003), (3, Y, -0.0003)),
           pose=(("roll", -0.1), ("yaw", -0.1))),
    Slider("pupil_x", -15.0, 15.0, 0.5, "Moves the pupils sideways without turning the head.",
           ((11, X, 0.0007), (15, X, 0.001)), negative_offsets=((11, X, 0.001), (15, X, 0.0007))),
    Slider("pupil_y", -15.0, 15.0, 0.5, "Moves the pupils up or down (the eyelids follow).",
           _merge(((11, Y, -0.001), (15, Y, -0.001)), _BLINK, scale=(1.0, -0.5))),
    Slider("aaa", -30.0, 120.0, 1.0, "Mouth shape 'aaa': opens the mouth (the chin drops slightly).",
           ((19, Y, 0.001), (19, Z, 0.0001), (17, Y, -0.0001)), pose=(("pitch", -0.05),)),
    Slider("eee", -20.0, 15.0, 0.2, "Mouth shape 'eee': spreads the lips.",
           ((20, Z, -0.001), (20, Y, -0.001), (14, Y, -0.001))),
    Slider("woo", -20.0, 15.0, 0.2, "Mouth shape 'woo': rounds and purses the lips.",
           ((14, Y, 0.001), (3, Y, -0.0005), (7, Y, -0.0005), (17, Z, -0.0005))),
    Slider("smile", -0.3, 1.3, 0.01, "Smile (negative: the corners of the mouth go down).",
           ((20, Y, -0.01), (14, Y, -0.02), (17, Y, 0.0065), (17, Z, 0.003), (13, Y, -0.00275),
            (16, Y, -0.00275), (3, Y, -0.0035), (7, Y, -0.0035))),
    Slider("rotate_pitch", -20.0, 20.0, 0.5, "Head pitch offset in degrees (positive tilts the face down).",
           pose=(("pitch", 1.0),)),
    Slider("rotate_yaw", -20.0, 20.0, 0.5, "Head yaw offset in degrees (positive turns the face towards the "
           "image's left).", pose=(("yaw", 1.0),)),
    Slider("rotate_roll", -20.0, 20.0, 0.5, "Head roll offset in degrees (positive rotates clockwise).",
           pose=(("roll", 1.0),)),
)}
SEMANTIC_SLIDERS = tuple(n for n, s in SLIDERS.items() if s.semantic)
ROTATION_SLIDERS = tuple(n for n, s in SLIDERS.items() if not s.semantic)


def is_liveportrait(motion: Motion) -> bool:
    return motion.family.startswith("liveportrait") and motion.num_kp == LIVEPORTRAIT_NUM_KP


def _check_sliders(sliders: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(sliders) - set(SLIDERS))
    if unknown:
        raise ValueError(f"unknown expression slider(s) {unknown}; the sliders are {', '.join(SLIDERS)}")
    out = {}
    for name, value in sliders.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"slider {name} must be a finite number, got {value!r}")
        out[name] = float(value)
    return out


def expression_offsets(num_kp: int = LIVEPORTRAIT_NUM_KP, **sliders: float) -> torch.Tensor:
    """Σ slider x offsets as a (K, 3) float64 tensor (zero where no slider acts)."""
    sliders = _check_sliders(sliders)
    delta = torch.zeros(num_kp, 3, dtype=torch.float64)
    for name, value in sliders.items():
        if value == 0.0:
            continue
        for k, axis, coef in SLIDERS[name].offsets_for(value):
            delta[k, axis] += value * coef
    return delta


def pose_offsets(**sliders: float) -> dict[str, float]:
    """Degrees added to pitch, yaw and roll by the sliders (rotation sliders and couplings)."""
    sliders = _check_sliders(sliders)
    out = {name: 0.0 for name in POSE_FIELDS}
    for name, value in sliders.items():
        for field, degrees in SLIDERS[name].pose:
            out[field] += value * degrees
    return out


def apply_expression_edit(motion: Motion, **sliders: float) -> Motion:
    """The motion with the sliders' offsets added to every frame (see the module's table).

    Linear in each slider (per sign), exactly unchanged with every slider at 0. Expression sliders need a
    LivePortrait motion (21 keypoints); the rotation sliders work for every family.
    """
    sliders = _check_sliders(sliders)
    active = {n: v for n, v in sliders.items() if v != 0.0}
    if not active:
        return motion
    semantic = [n for n in active if SLIDERS[n].semantic]
    out = motion
    if semantic:
        if not is_liveportrait(motion):
            raise ValueError(
                f"the expression sliders ({', '.join(semantic)}) are defined for LivePortrait motions (21 keypoints); "
                f"this motion is {motion.family} with {motion.num_kp} keypoints. Use the per-keypoint delta scale, "
                "the rotation sliders, or estimate the motion with a LivePortrait model")
        delta = expression_offsets(motion.num_kp, **{n: active[n] for n in semantic})
        delta = delta.to(dtype=motion.expression.dtype, device=motion.expression.device)
        out = out._replace(expression=motion.expression + delta)
    pose = pose_offsets(**active)
    changed = {f: getattr(out, f) + d for f, d in pose.items() if d != 0.0}
    if changed:
        out = out._replace(**changed)
    return out


# ------------------------------------------------------------------------------------------------
# Generic per-keypoint delta scale (any family)
# ------------------------------------------------------------------------------------------------

def scale_keypoint_deltas(motion: Motion, scales: dict[int, float] | Sequence[float]) -> Motion:
    """Multiply the expression deltas of chosen keypoints: ``{3: 1.5, 7: 0}`` or one factor per keypoint.

    Works for every family; keypoints not named keep their deltas. 0 freezes a keypoint at its canonical
    position, 1 keeps it, > 1 exaggerates.
    """
    k = motion.num_kp
    if isinstance(scales, dict):
        items = list(scales.items())
    else:
        items = list(enumerate(scales))
        if len(items) != k:
            raise ValueError(f"scale_keypoint_deltas: {len(items)} factors for a motion with {k} keypoints")
    factors = torch.ones(k, dtype=torch.float64)
    for index, value in items:
        if isinstance(index, bool) or not isinstance(index, int) or not -k <= index < k:
            raise ValueError(f"keypoint {index!r} does not exist: this {motion.family} motion has keypoints 0 to {k - 1}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"scale of keypoint {index} must be a finite number, got {value!r}")
        factors[index] = float(value)
    if bool((factors == 1.0).all()):
        return motion
    f = factors.to(dtype=motion.expression.dtype, device=motion.expression.device).view(1, k, 1)
    return motion._replace(expression=motion.expression * f)


_SCALE_ITEM = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?[:=]\s*([^\s,;]+)\s*$")


MAX_KEYPOINTS = limits.MAX_KEYPOINTS  #: bounds keypoint ranges parsed without a motion


def parse_keypoint_scales(text: str, num_kp: int | None = None) -> dict[int, float]:
    """``"3:1.5, 7:0, 11-13:0.5"`` -> ``{3: 1.5, 7: 0.0, 11: 0.5, 12: 0.5, 13: 0.5}`` (empty text: ``{}``).

    Every index and range end is checked against ``num_kp`` (the motion's keypoint count; without one,
    :data:`MAX_KEYPOINTS`) before a range is expanded, so a range like ``0-999999999999`` is refused at once.
    """
    limit = MAX_KEYPOINTS if num_kp is None else int(num_kp)
    out: dict[int, float] = {}
    for item in re.split(r"[,;\n]", text or ""):
        if not item.strip():
            continue
        m = _SCALE_ITEM.match(item)
        if m is None:
            raise ValueError(f"keypoint scale {_shown(item)} is not 'keypoint:factor' (e.g. '3:1.5, 7:0, 11-13:0.5')")
        try:
            value = float(m.group(3))
        except ValueError:
            raise ValueError(f"keypoint scale {_shown(item)}: {_shown(m.group(3))} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"keypoint scale {_shown(item)} must be finite")
        first = _keypoint_index(m.group(1), limit, item, num_kp)
        last = _keypoint_index(m.group(2), limit, item, num_kp) if m.group(2) is not None else first
        if last < first:
            raise ValueError(f"keypoint range {_shown(item)} runs backwards")
        for index in range(first, last + 1):
            out[index] = value
    return out


def _keypoint_index(digits: str, limit: int, item: str, num_kp: int | None) -> int:
    """One index of a keypoint scale, refused unless ``-limit <= index < limit`` (checked before any range is expanded)."""
    index = int(digits) if len(digits.lstrip("-")) <= 9 else None
    if index is None or not -limit <= index < limit:
        what = f"this motion has keypoints 0 to {limit - 1}" if num_kp is not None else \
            f"no model has more than {limit} keypoints"
        raise ValueError(f"keypoint scale {_shown(item)}: keypoint {_shown(digits)} does not exist ({what})")
    return index


def _shown(text: str, width: int = 40) -> str:
    """A user's text quoted for an error message, cut to ``width`` characters."""
    text = text.strip()
    return repr(text if len(text) <= width else text[:width] + "...")


# ------------------------------------------------------------------------------------------------
# Eye and lip retargeting (LivePortrait)
# ------------------------------------------------------------------------------------------------

NEUTRAL_EYE_RATIO = 0.35  # an open, relaxed eye (eyelid gap / eye width)
NEUTRAL_LIP_RATIO = 0.0  # closed lips (mouth gap / mouth width)

#: Optional landmark backend: ``fn(image (1, 3, H, W) in 0..1) -> (eye ratios (2,), lip ratio (1,))`` of the
#: source. None is installed with AnyTalk; a pack or script that has a face-landmark detector registers one.
RatioBackend = Callable[[torch.Tensor], tuple[Sequence[float], Sequence[float]]]
_ratio_backend: RatioBackend | None = None


def register_ratio_backend(backend: RatioBackend | None) -> None:
    """Install (or, with None, remove) the landmark backend that measures a source's own eye/lip ratios."""
    global _ratio_backend
    _ratio_backend = backend


def ratio_backend() -> RatioBackend | None:
    return _ratio_backend


def source_ratios(image: torch.Tensor | None = None) -> tuple[list[float], list[float], str]:
    """(source eye ratios [left, right], source lip ratio [lip], where they came from).

    From the registered landmark backend when there is one and an image is given, else the neutral defaults.
    """
    if image is not None and _ratio_backend is not None:
        eyes, lip = _ratio_backend(image)
        eyes, lip = [float(v) for v in eyes], [float(v) for v in lip]
        if len(eyes) != 2 or len(lip) != 1:
            raise ValueError(f"the ratio backend returned {len(eyes)} eye and {len(lip)} lip ratios; expected 2 and 1")
        return eyes, lip, "landmark backend"
    return [NEUTRAL_EYE_RATIO] * 2, [NEUTRAL_LIP_RATIO], "neutral defaults (no landmark backend installed)"


def _ratio_tensor(value, source: list[float], size: int, what: str, like: torch.Tensor) -> torch.Tensor:
    """Full MLP ratio input (B, size): a full vector as given, or a target appended to the source's ratios."""
    if value is None:
        value = [*source, NEUTRAL_EYE_RATIO if what == "eye" else NEUTRAL_LIP_RATIO]
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.view(1, 1)
    elif t.dim() == 1:
        t = t.view(1, -1)
    if t.dim() != 2 or t.shape[1] not in (1, size):
        raise ValueError(f"{what} ratios must be a target ratio or {size} numbers per row "
                         f"({'source left, source right, target' if what == 'eye' else 'source, target'}), "
                         f"got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} ratios must be finite")
    if t.shape[1] == 1 and size != 1:
        src = torch.as_tensor(source, dtype=like.dtype, device=like.device).view(1, -1).expand(t.shape[0], -1)
        t = torch.cat([src, t], dim=1)
    return t


def _network(model, name: str, what: str):
    from .models.liveportrait.stitching import RetargetingNetwork

    net = getattr(model, name, None)
    if not isinstance(net, RetargetingNetwork):
        family = getattr(model, "family", type(model).__name__)
        if net is None:
            raise ValueError(f"{what} retargeting needs a LivePortrait model; this is a {family} model")
        raise ValueError(f"this {family} model has no {what} retargeting weights: load the LivePortrait folder with "
                         "its stitching_retargeting_module file (.pth or .safetensors)")
    return net


def retarget(model, source_keypoints: torch.Tensor, eye_ratios=None, lip_ratios=None, *, eyes: bool = True,
             lips: bool = True, source_image: torch.Tensor | None = None) -> torch.Tensor:
    """Keypoint deltas (B, K, 3) of LivePortrait's eye and lip retargeting MLPs for the source keypoints x_s.

    ``eye_ratios``: None (neutral: the source's ratios and a target of :data:`NEUTRAL_EYE_RATIO`), a target
    eye-open ratio (number, or (B, 1)), or the full MLP input ``[source left, source right, target]`` ((3,) or
    (B, 3)). ``lip_ratios`` likewise with ``[source, target]`` and :data:`NEUTRAL_LIP_RATIO`. The source's own
    ratios come from the landmark backend when one is registered and ``source_image`` is given, else the
    neutral defaults. ``eyes`` / ``lips`` = False leave that network out. Raises ValueError when the model
    has no retargeting weights.
    """
    if not (eyes or lips):
        raise ValueError("retarget: nothing to do (eyes and lips both off)")
    src_eyes, src_lip, _ = source_ratios(source_image)
    total = None
    if eyes:
        net = _network(model, "retarget_eye", "eye")
        delta = net(source_keypoints, _ratio_tensor(eye_ratios, src_eyes, 3, "eye", source_keypoints))
        total = delta
    if lips:
        net = _network(model, "retarget_lip", "lip")
        delta = net(source_keypoints, _ratio_tensor(lip_ratios, src_lip, 2, "lip", source_keypoints))
        total = delta if total is None else total + delta
    return total


def retargeted_keypoints(model, source, driving: Motion, options=None, reference: Motion | None = None,
                         retarget_delta: torch.Tensor | None = None) -> torch.Tensor:
    """LivePortrait driven keypoints (N, K, 3) with retargeting deltas added before stitching.

    ``model.transfer_stages`` up to the expression-friendly step, then ``+ retarget_delta`` (from
    :func:`retarget`), then stitching (when ``options.stitching`` and the model has it) and the driving
    multiplier. Without a delta it equals ``model.driven_keypoints``.
    """
    from .models.liveportrait import LivePortraitOptions
    from .models.liveportrait.stitching import apply_stitching_delta

    if options is None:
        options = LivePortraitOptions()
    elif not isinstance(options, LivePortraitOptions):
        options = LivePortraitOptions(**dataclasses.asdict(options))
    stages = model.transfer_stages(source, driving, dataclasses.replace(options, stitching=False), reference)
    kp = stages["kp_scaled"]
    if retarget_delta is not None:
        kp = kp + retarget_delta
    x_s = source.keypoints
    if options.stitching and model.has_stitching:
        kp = apply_stitching_delta(kp, model.stitching(x_s, kp))
    return x_s + (kp - x_s) * options.driving_multiplier
