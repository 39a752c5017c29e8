"""Transfer Motion -> 3D Warp -> Generate -> Paste Back: from a motion to animated frames, chunk by chunk."""
from __future__ import annotations

import torch

from ..anytalk_core.crop import paste_back
from ..anytalk_core.expression_edit import NEUTRAL_EYE_RATIO, NEUTRAL_LIP_RATIO
from ..anytalk_core.stages import transfer_options
from . import _comfy
from ._objects import (
    CATEGORY,
    AnyTalkError,
    Keypoints,
    SourceImage,
    WarpPlan,
    artist_errors,
    check_image_shape,
    check_motion,
    check_same_model,
    check_same_source,
    rgb_images,
)

TRANSFER_MODES = ["relative", "absolute"]


def ratio(default: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 0.8, "step": 0.01, "tooltip": tooltip})


def strength(tooltip: str) -> tuple:
    return ("FLOAT", {"default": 1.0, "min": -1.0, "max": 3.0, "step": 0.05, "tooltip": tooltip})


def transfer_keypoints(keypoints: Keypoints, motion, mode: str = "relative", pose_strength: float = 1.0,
                       expression_strength: float = 1.0, translation_strength: float = 1.0, adapt_scale: bool = False,
                       reference_frame: int = 0, stitching: bool = True, eye_ratio: float | None = None,
                       lip_ratio: float | None = None, reference_motion=None) -> Keypoints:
    """The nodes' Transfer stage: the source's keypoints moved by a motion (retargeting and stitching in the engine).

    ``eye_ratio`` / ``lip_ratio``: None leaves the eyes / lips as driven."""
    if not isinstance(keypoints, Keypoints):
        raise AnyTalkError(f"expected ANYTALK_KEYPOINTS, got {type(keypoints).__name__}")
    if keypoints.driven is not None:
        raise AnyTalkError("these keypoints are already driven; connect the output of AnyTalk Detect Canonical "
                           "Keypoints (the source's keypoints), not another Transfer Motion")
    motion = check_motion(motion, "AnyTalk Transfer Motion")
    own = keypoints.state.motion
    if motion.family != own.family or motion.num_kp != own.num_kp:
        raise AnyTalkError(
            f"the motion comes from a {motion.family} model ({motion.num_kp} keypoints) but the source keypoints "
            f"from a {own.family} model ({own.num_kp} keypoints); estimate the motion with the same AnyTalk Load "
            "Model, or take only its pose: AnyTalk Motion Mix (pose from the motion, expression from Detect "
            "Canonical Keypoints' source_motion)")
    ref_source = motion
    if reference_motion is not None:
        ref_source = check_motion(reference_motion, "AnyTalk Transfer Motion")
        if ref_source.family != motion.family or ref_source.num_kp != motion.num_kp:
            raise AnyTalkError(f"the reference_motion comes from a {ref_source.family} model ({ref_source.num_kp} "
                               f"keypoints) but the motion from a {motion.family} model ({motion.num_kp}); connect "
                               "motions of the same AnyTalk Load Model")
        if len(ref_source) == 1:
            reference_frame = 0
    if mode == "relative" and reference_frame >= len(ref_source):
        which = "reference_motion" if reference_motion is not None else "motion"
        raise AnyTalkError(f"reference_frame {reference_frame} is past the end of the {which} "
                           f"({len(ref_source)} frames, 0 to {len(ref_source) - 1})")
    model = keypoints.model
    if mode not in TRANSFER_MODES:
        raise AnyTalkError(f"unknown transfer mode {mode!r}; choose relative or absolute")
    options = transfer_options(model.model, mode, pose_strength, expression_strength, translation_strength,
                               adapt_scale, stitching=bool(stitching))
    engine = model.engine()
    state = keypoints.state.to(engine.device)
    reference = ref_source[int(reference_frame)] if mode == "relative" else None
    driven = engine.retargeted_keypoints(state, motion, options, reference=reference, eye_ratio=eye_ratio,
                                         lip_ratio=lip_ratio)
    out = Keypoints(model=model, source_fingerprint=keypoints.source_fingerprint, state=keypoints.state,
                    driven=driven.to("cpu", torch.float32), fps=motion.fps)
    return out


class AnyTalkTransferMotion:
    DESCRIPTION = ("Moves the source's keypoints with a motion. relative: the source keeps its own pose and follows "
                   "the driver's changes from a reference frame (best across identities and domains); absolute: the "
                   "source takes the driver's pose and expression.")
    CATEGORY = CATEGORY
    FUNCTION = "transfer"
    RETURN_TYPES = ("ANYTALK_KEYPOINTS",)
    RETURN_NAMES = ("driven_keypoints",)
    OUTPUT_TOOLTIPS = ("One keypoint set per frame, for AnyTalk 3D Warp.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "keypoints": ("ANYTALK_KEYPOINTS", {"tooltip": "The source's keypoints (AnyTalk Detect Canonical "
                                                               "Keypoints)."}),
                "motion": ("ANYTALK_MOTION", {"tooltip": "The driving motion."}),
                "mode": (TRANSFER_MODES, {"default": "relative",
                                          "tooltip": "relative: follow the driver's movement relative to the "
                                                     "reference frame; absolute: copy the driver's pose and "
                                                     "expression."}),
                "pose_strength": strength("How much of the driver's head rotation is applied (1 = all)."),
                "expression_strength": strength("How much of the driver's expression is applied (>1 exaggerates)."),
                "translation_strength": strength("How much of the driver's head translation is applied."),
                "adapt_scale": ("BOOLEAN", {"default": False,
                                            "tooltip": "relative: scale the movement by the size of the source's face "
                                                       "relative to the driver's (helps across identities/domains)."}),
                "reference_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1,
                                            "tooltip": "relative: the driving frame that counts as 'no movement' "
                                                       "(ideally a neutral face like the source's)."}),
            },
            "optional": {
                "stitching": ("BOOLEAN", {"default": True,
                                          "tooltip": "LivePortrait: keep the animated face stitched to the source's "
                                                     "shoulders (best for Paste Back). Ignored by face-vid2vid and by "
                                                     "LivePortrait weights without the stitching module."}),
                "retarget_eyes": ("BOOLEAN", {"default": False,
                                              "tooltip": "LivePortrait: open or close the eyes to eye_ratio with the "
                                                         "eye retargeting network. Ignored by face-vid2vid."}),
                "eye_ratio": ratio(NEUTRAL_EYE_RATIO,
                                   "LivePortrait, retarget_eyes: target eye-open ratio (eyelid gap / eye width); "
                                   f"0 = closed, {NEUTRAL_EYE_RATIO} = neutral open eye, higher = wide open. The "
                                   "source's own ratios are taken as neutral (no landmark detector installed)."),
                "retarget_lips": ("BOOLEAN", {"default": False,
                                              "tooltip": "LivePortrait: open or close the mouth to lip_ratio with the "
                                                         "lip retargeting network. Ignored by face-vid2vid."}),
                "lip_ratio": ratio(NEUTRAL_LIP_RATIO,
                                   "LivePortrait, retarget_lips: target lip-open ratio (mouth gap / mouth width); "
                                   "0 = closed, higher = more open."),
                "reference_motion": ("ANYTALK_MOTION", {
                    "tooltip": "relative: the motion that counts as 'no movement' instead of the driving motion's "
                               "reference_frame (its frame reference_frame, or its only frame), e.g. AnyTalk Audio "
                               "to Motion's rest_motion."}),
            },
        }

    @artist_errors("AnyTalk Transfer Motion")
    def transfer(self, keypoints, motion, mode="relative", pose_strength=1.0, expression_strength=1.0,
                 translation_strength=1.0, adapt_scale=False, reference_frame=0, stitching=True, retarget_eyes=False,
                 eye_ratio=NEUTRAL_EYE_RATIO, retarget_lips=False, lip_ratio=NEUTRAL_LIP_RATIO, reference_motion=None):
        return (transfer_keypoints(keypoints, motion, mode, pose_strength, expression_strength, translation_strength,
                                   adapt_scale, reference_frame, stitching,
                                   float(eye_ratio) if retarget_eyes else None,
                                   float(lip_ratio) if retarget_lips else None, reference_motion),)


def warp_plan(model, source: SourceImage, keypoints: Keypoints) -> WarpPlan:
    """The source's appearance bound to driven keypoints: what Render decodes chunk by chunk."""
    if not isinstance(source, SourceImage):
        raise AnyTalkError(f"expected an ANYTALK_SOURCE, got {type(source).__name__}")
    if not isinstance(keypoints, Keypoints):
        raise AnyTalkError(f"expected ANYTALK_KEYPOINTS, got {type(keypoints).__name__}")
    check_same_model("keypoints", keypoints.weights_key, model, "AnyTalk 3D Warp")
    check_same_source("keypoints", keypoints.source_fingerprint, source, "AnyTalk 3D Warp")
    plan = WarpPlan(model_uid=model.uid, weights_key=model.weights_key, source_fingerprint=source.fingerprint,
                    state=keypoints.state, keypoints=keypoints.frames.to("cpu", torch.float32),
                    fps=keypoints.fps)
    return plan


class AnyTalkWarp3D:
    DESCRIPTION = ("Binds the source's appearance features to the driven keypoints: a lazy 3D warp. The dense motion "
                   "and the warped feature volume of each frame are computed chunk by chunk inside Generate, so no "
                   "per-frame volume is ever kept for the whole clip (long clips use constant memory).")
    CATEGORY = CATEGORY
    FUNCTION = "warp"
    RETURN_TYPES = ("ANYTALK_WARP",)
    RETURN_NAMES = ("warp",)
    OUTPUT_TOOLTIPS = ("The warp plan for AnyTalk Generate (size: one feature volume + 3 numbers per keypoint and "
                       "frame).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ANYTALK_MODEL", {"tooltip": "From AnyTalk Load Model."}),
                "source": ("ANYTALK_SOURCE", {"tooltip": "From AnyTalk Load Source."}),
                "keypoints": ("ANYTALK_KEYPOINTS", {"tooltip": "Driven keypoints from AnyTalk Transfer Motion (the "
                                                               "source's own keypoints give one still frame)."}),
            }
        }

    @artist_errors("AnyTalk 3D Warp")
    def warp(self, model, source, keypoints):
        return (warp_plan(model, source, keypoints),)


def render_frames(model, plan: WarpPlan, progress: _comfy.Progress | None = None) -> torch.Tensor:
    """Decode a warp plan chunk by chunk into a preallocated IMAGE (N, H, W, 3)."""
    engine = model.engine()
    n = len(plan)
    progress = progress or _comfy.Progress(n)
    state = plan.state.to(engine.device)
    out, done = None, 0
    for frames in engine.render(state, plan.keypoints, progress=progress.update, cancel=progress.cancel):
        k = frames.shape[0]
        if out is None:
            out = torch.empty((n, frames.shape[2], frames.shape[3], 3), dtype=torch.float32)
        out[done:done + k] = frames.permute(0, 2, 3, 1)
        done += k
    del state
    _comfy.soft_empty_cache()
    return out


class AnyTalkGenerate:
    DESCRIPTION = ("Renders the animation: for each chunk of frames, dense 3D motion, warping of the source's "
                   "features and the image generator. Progress shows per chunk; Cancel stops after the current frame.")
    SEARCH_ALIASES = ("talking head", "face animation", "render face")
    CATEGORY = CATEGORY
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The animated crop, one image per frame (connect Paste Back, Assemble Video or any IMAGE "
                       "node).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ANYTALK_MODEL", {"tooltip": "From AnyTalk Load Model."}),
                "source": ("ANYTALK_SOURCE", {"tooltip": "From AnyTalk Load Source."}),
                "warp": ("ANYTALK_WARP", {"tooltip": "From AnyTalk 3D Warp."}),
            }
        }

    @artist_errors("AnyTalk Generate")
    def generate(self, model, source, warp):
        if not isinstance(warp, WarpPlan):
            raise AnyTalkError(f"expected an ANYTALK_WARP from AnyTalk 3D Warp, got {type(warp).__name__}")
        if not isinstance(source, SourceImage):
            raise AnyTalkError(f"expected an ANYTALK_SOURCE, got {type(source).__name__}")
        check_same_model("warp", warp.weights_key, model, "AnyTalk Generate")
        check_same_source("warp", warp.source_fingerprint, source, "AnyTalk Generate")
        return (render_frames(model, warp),)


def paste_frames(frames: torch.Tensor, source: SourceImage, feather: float = 0.1,
                 original: torch.Tensor | None = None) -> torch.Tensor:
    """Animated crops (N, S, S, 3) pasted back into the full picture: (N, H, W, 3)."""
    if not isinstance(source, SourceImage):
        raise AnyTalkError(f"expected an ANYTALK_SOURCE, got {type(source).__name__}")
    n, fh, fw = check_image_shape(frames, "frames")
    if fh != fw:
        raise AnyTalkError(f"frames must be the square crops from AnyTalk Generate, got {fw}x{fh}")
    if original is None:
        base = source.original
    else:
        b, h, w = check_image_shape(original, "original image")
        if (h, w) != source.original_hw:
            sh, sw = source.original_hw
            raise AnyTalkError(f"the original image is {w}x{h} but the source was cropped from a {sw}x{sh} image; "
                               "connect the image that went into AnyTalk Load Source")
        if b not in (1, n):
            raise AnyTalkError(f"the original has {b} images but there are {n} frames: give one image or one "
                               "per frame")
        base = None
    h, w = source.original_hw
    out = torch.empty((n, h, w, 3), dtype=torch.float32)
    chunk = 16
    progress = _comfy.Progress(n)
    for start in range(0, n, chunk):
        progress.cancel()
        crops = rgb_images(frames[start:start + chunk], "frames").permute(0, 3, 1, 2)
        if base is not None:
            full = base
        elif original.shape[0] == 1:
            full = rgb_images(original[:1], "original image").permute(0, 3, 1, 2)
        else:
            full = rgb_images(original[start:start + chunk], "original image").permute(0, 3, 1, 2)
        pasted = paste_back(full, crops, source.spec, feather=float(feather))
        out[start:start + crops.shape[0]] = pasted.permute(0, 2, 3, 1)
        progress.update(start + crops.shape[0])
    return out


class AnyTalkPasteBack:
    DESCRIPTION = ("Puts the animated crop back into the full picture with the exact inverse of the crop and a "
                   "feathered edge: everything outside the crop stays untouched.")
    CATEGORY = CATEGORY
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Full-size frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "Animated crops from AnyTalk Generate."}),
                "source": ("ANYTALK_SOURCE", {"tooltip": "The AnyTalk Load Source the crops were made from."}),
                "feather": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 0.5, "step": 0.01,
                                      "tooltip": "Width of the soft edge as a fraction of the crop (0 = hard edge)."}),
            },
            "optional": {
                "original": ("IMAGE", {"tooltip": "The full picture (one image, or one per frame). Default: the "
                                                  "image that went into Load Source."}),
            },
        }

    @artist_errors("AnyTalk Paste Back")
    def paste(self, frames, source, feather=0.1, original=None):
        return (paste_frames(frames, source, feather, original),)
