"""Expression Edit: semantic sliders on a LivePortrait motion, a per-keypoint delta scale for any family."""
from __future__ import annotations

from ..anytalk_core.expression_edit import SLIDERS, apply_expression_edit, parse_keypoint_scales, scale_keypoint_deltas
from ._objects import CATEGORY, artist_errors, check_motion
from .motion import MOTION_TOOLTIP

#: Widget order: head rotation first, then eyes, then mouth (as the Expression Editor (PHM) node).
SLIDER_ORDER = ("rotate_pitch", "rotate_yaw", "rotate_roll", "blink", "eyebrow", "wink", "pupil_x", "pupil_y",
                "aaa", "eee", "woo", "smile")
LIVEPORTRAIT_ONLY = " LivePortrait motions only (non-zero values are refused for other families)."


def _slider_widget(name: str) -> tuple:
    s = SLIDERS[name]
    tip = s.description + ("" if not s.semantic else LIVEPORTRAIT_ONLY)
    return ("FLOAT", {"default": 0.0, "min": float(s.minimum), "max": float(s.maximum), "step": float(s.step),
                      "tooltip": tip})


class AnyTalkExpressionEdit:
    DESCRIPTION = ("Edits the face of a motion with sliders, on every frame: head rotation, blink, eyebrows, wink, "
                   "pupils, the mouth shapes aaa / eee / woo and smile (LivePortrait motions; the same sliders and "
                   "ranges as the Expression Editor (PHM) node). Offsets add to the motion, so they work on a still "
                   "source motion or on top of a driving performance. For other model families: scale chosen "
                   "keypoints' expression with keypoint_scales. All 0 = unchanged.")
    CATEGORY = CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = ("ANYTALK_MOTION",)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The edited motion.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": ("ANYTALK_MOTION", {"tooltip": MOTION_TOOLTIP + " A one-frame motion (Detect Canonical "
                                                                          "Keypoints' source_motion) edits a still."}),
                **{name: _slider_widget(name) for name in SLIDER_ORDER},
                "keypoint_scales": ("STRING", {"default": "",
                                               "tooltip": "Any family: multiply the expression of chosen keypoints, "
                                                          "'keypoint:factor' separated by commas, e.g. '3:1.5, 7:0, "
                                                          "11-13:0.5' (0 = freeze, >1 = exaggerate). Applied before "
                                                          "the sliders. Empty = none."}),
            }
        }

    @artist_errors("AnyTalk Expression Edit")
    def edit(self, motion, keypoint_scales="", **sliders):
        motion = check_motion(motion, "AnyTalk Expression Edit")
        scales = parse_keypoint_scales(keypoint_scales, motion.num_kp)
        if scales:
            motion = scale_keypoint_deltas(motion, scales)
        values = {name: float(sliders.get(name, 0.0)) for name in SLIDER_ORDER}
        unknown = sorted(set(sliders) - set(SLIDER_ORDER))
        if unknown:
            raise ValueError(f"unknown inputs {unknown}")
        return (apply_expression_edit(motion, **values),)
