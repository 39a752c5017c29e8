"""AnyTalk Load Source (portrait + crop) and Detect Canonical Keypoints (the model's once-per-source work)."""
from __future__ import annotations

import colorsys
import json

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..anytalk_core.crop import apply_crop
from ..anytalk_core.pipeline import describe_auto_crop
from ..anytalk_core.stages import crop_spec, framing_family
from . import _comfy
from ._objects import (
    CATEGORY,
    AnyTalkError,
    AnyTalkModel,
    Keypoints,
    SourceImage,
    artist_errors,
    check_image_shape,
    fingerprint,
    rgb_images,
    source_state,
    to_comfy_image,
)

CROP_MODES = ["full", "auto", "box"]
BOX_TOOLTIP = "Manual crop box in pixels of the input image (crop = box); made square around its centre."


def crop_widgets() -> dict:
    """The crop widgets shared by Load Source and Estimate Motion."""
    return {
        "box_x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1, "tooltip": BOX_TOOLTIP + " Left edge."}),
        "box_y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1, "tooltip": BOX_TOOLTIP + " Top edge."}),
        "box_width": ("INT", {"default": 256, "min": 1, "max": 16384, "step": 1, "tooltip": BOX_TOOLTIP + " Width."}),
        "box_height": ("INT", {"default": 256, "min": 1, "max": 16384, "step": 1, "tooltip": BOX_TOOLTIP + " Height."}),
        "crop_scale": ("FLOAT", {"default": 1.0, "min": 0.25, "max": 4.0, "step": 0.05,
                                 "tooltip": "crop = box only: the square's side is the box's longer side times this "
                                            "(above 1 adds margin around the head)."}),
    }


def crop_choice(mode: str, box: tuple[int, int, int, int]) -> str | tuple[int, int, int, int]:
    """A crop widget's mode as the Source stage takes it: "full", "auto" or the box."""
    if mode not in CROP_MODES:
        raise AnyTalkError(f"unknown crop mode {mode!r}; choose full, auto or box")
    return box if mode == "box" else mode


def framing_of(model) -> str:
    """The framing an ANYTALK_MODEL's checkpoint was trained with; ours (``anytalk``) without a model."""
    if model is None:
        return "anytalk"
    if not isinstance(model, AnyTalkModel):
        raise AnyTalkError(f"expected an ANYTALK_MODEL from AnyTalk Load Model, got {type(model).__name__}")
    return framing_family(model.model)


def load_source(image: torch.Tensor, crop: str = "auto", box: tuple[int, int, int, int] = (0, 0, 256, 256),
                crop_scale: float = 1.0, size: int = 256, batch_index: int = 0,
                family: str = "anytalk") -> SourceImage:
    """An IMAGE batch's portrait (B, H, W, C) cropped to a square of ``size``: the nodes' Source stage; crop
    auto frames the head the way ``family`` was trained (:func:`framing_of`)."""
    b = check_image_shape(image, "source image", min_side=16)[0]
    if not 0 <= batch_index < b:
        raise AnyTalkError(f"batch_index {batch_index} is out of range: the source batch has {b} image(s) "
                           f"(0 to {b - 1})")
    rgb = rgb_images(image[batch_index:batch_index + 1], "source image")
    original = rgb.permute(0, 3, 1, 2).contiguous()
    spec = crop_spec(original, crop_choice(crop, box), int(size), float(crop_scale), family=family)
    if crop == "auto":
        say_auto_crop(spec, "source")
    preview = apply_crop(original, spec)
    key = json.dumps({"matrix": spec.matrix.tolist(), "hw": list(spec.original_hw)})
    return SourceImage(original=original, spec=spec, crop=preview, fingerprint=fingerprint(original, extra=key),
                       framing=family if crop == "auto" else None)


def say_auto_crop(spec, what: str) -> str:
    """Log (and return) the command's line for crop auto: info when a detector framed ``what``, else a warning."""
    found = bool(spec.reports) and spec.reports[0].detector != "center"
    line = "AnyTalk " + describe_auto_crop(spec, what, fix="choose crop = box to frame it yourself")
    (_comfy.log.info if found else _comfy.log.warning)("%s", line)
    return line


def source_keypoints(model, source: SourceImage) -> Keypoints:
    """The portrait's keypoints for this model (its cached once-per-portrait work)."""
    if not isinstance(source, SourceImage):
        raise AnyTalkError(f"expected an ANYTALK_SOURCE from AnyTalk Load Source, got {type(source).__name__}")
    if source.framing is not None and source.framing != framing_of(model):
        _comfy.log.warning("AnyTalk: the source was cropped with %s framing but %s was trained on %s framing: "
                           "connect the model to AnyTalk Load Source's model input", source.framing,
                           model.name, framing_of(model))
    return Keypoints(model=model, source_fingerprint=source.fingerprint, state=source_state(model, source))


class AnyTalkLoadSource:
    DESCRIPTION = ("The portrait to animate, from any IMAGE output (Load Image, VAE Decode, ...). Crops the head "
                   "to a square: the whole image (full), found automatically (auto: works on people, CG characters "
                   "and cartoon animals) or a box you give.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ANYTALK_SOURCE", "IMAGE")
    RETURN_NAMES = ("source", "crop_preview")
    OUTPUT_TOOLTIPS = ("The portrait and its crop, for Detect Canonical Keypoints, 3D Warp, Generate and Paste Back.",
                       "The cropped square the model sees.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The portrait. With a batch, batch_index picks one image."}),
                "crop": (CROP_MODES, {"default": "auto",
                                      "tooltip": "full: the whole image (padded to a square); auto: find the head; "
                                                 "box: the box below."}),
                **crop_widgets(),
                "size": ("INT", {"default": 256, "min": 16, "max": 2048, "step": 8,
                                 "tooltip": "Side of the crop preview in pixels. The model re-samples the same region "
                                            "at its own resolution, so this does not change the animation."}),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095, "step": 1,
                                        "tooltip": "Which image of a batch to use as the source."}),
            },
            "optional": {
                "model": ("ANYTALK_MODEL", {"tooltip": "Optional: the model this portrait is for. crop auto then "
                                                       "frames the head as its checkpoint was trained (LivePortrait: "
                                                       "2.3 x the face, raised; face-vid2vid: 1.2 x the face box); "
                                                       "without it, AnyTalk's own framing."}),
            },
        }

    @artist_errors("AnyTalk Load Source")
    def load(self, image, crop="auto", box_x=0, box_y=0, box_width=256, box_height=256, crop_scale=1.0, size=256,
             batch_index=0, model=None):
        source = load_source(image, crop, (box_x, box_y, box_width, box_height), crop_scale, size, batch_index,
                             framing_of(model))
        return (source, to_comfy_image(source.crop))


# --------------------------------------------------------------------------------------------------

OVERLAYS = ["source keypoints", "canonical keypoints", "both"]


def _colours(k: int) -> list[tuple[int, int, int]]:
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(k, 1), 0.85, 1.0)) for i in range(k)]


def draw_keypoints(image_hw3: torch.Tensor, points: list[tuple[torch.Tensor, str]]) -> torch.Tensor:
    """Draw keypoint sets (K, 3) in normalised [-1, 1] coordinates (x right, y down) on an image (H, W, 3)."""
    h, w = image_hw3.shape[:2]
    canvas = Image.fromarray((image_hw3.clamp(0, 1).numpy() * 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    r = max(1.5, min(h, w) / 64)
    for kp, style in points:
        kp = kp.detach().to("cpu", torch.float32)
        for (x, y, _z), colour in zip(kp.tolist(), _colours(kp.shape[0])):
            px, py = (x + 1) / 2 * (w - 1), (y + 1) / 2 * (h - 1)
            box = [px - r, py - r, px + r, py + r]
            if style == "filled":
                draw.ellipse(box, fill=colour, outline=(0, 0, 0))
            else:
                draw.ellipse(box, outline=colour, width=max(1, int(r / 2)))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)


class AnyTalkDetectKeypoints:
    DESCRIPTION = ("Runs the model's once-per-portrait work: canonical 3D keypoints, the portrait's own head pose and "
                   "expression, and its appearance features. Cached: changing only the driving video never "
                   "recomputes it.")
    CATEGORY = CATEGORY
    FUNCTION = "detect"
    RETURN_TYPES = ("ANYTALK_KEYPOINTS", "IMAGE", "ANYTALK_MOTION")
    RETURN_NAMES = ("keypoints", "overlay", "source_motion")
    OUTPUT_TOOLTIPS = ("The source's keypoints, for Transfer Motion.",
                       "The keypoints drawn on the crop (preview).",
                       "The portrait's own pose and expression (one frame), e.g. to keep its pose in Motion Mix.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ANYTALK_MODEL", {"tooltip": "From AnyTalk Load Model."}),
                "source": ("ANYTALK_SOURCE", {"tooltip": "From AnyTalk Load Source."}),
                "overlay": (OVERLAYS, {"default": "source keypoints",
                                       "tooltip": "What the overlay shows: the keypoints in the portrait's pose "
                                                  "(filled), the pose-free canonical ones (rings), or both."}),
            }
        }

    @artist_errors("AnyTalk Detect Canonical Keypoints")
    def detect(self, model, source, overlay="source keypoints"):
        keypoints = source_keypoints(model, source)
        state = keypoints.state
        sets = []
        if overlay in ("canonical keypoints", "both"):
            sets.append((state.canonical[0], "ring"))
        if overlay in ("source keypoints", "both"):
            sets.append((state.keypoints[0], "filled"))
        preview = draw_keypoints(to_comfy_image(source.crop)[0], sets).unsqueeze(0)
        return (keypoints, preview, state.motion.to("cpu"))
