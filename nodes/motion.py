"""Motion nodes: Estimate Motion (driving frames -> ANYTALK_MOTION), Edit, Mix, Smooth, Save and Load."""
from __future__ import annotations


import torch

from ..anytalk_core.crop import apply_crop
from ..anytalk_core.engine import smooth_motion
from ..anytalk_core.io_utils import unique_path
from ..anytalk_core.motion import Motion, MotionFamilyError, mix, mix_expressions, retime
from ..anytalk_core.stages import TRACK_EVERY, crop_spec, cropped_frames, track_head
from . import _comfy
from ._files import (
    TYPED_PATH_NOTE,
    file_signature,
    resolve_input_file,
    validate_save_prefix,
    validate_typed_path,
)
from ._objects import (
    CATEGORY,
    AnyTalkError,
    artist_errors,
    check_image_shape,
    check_motion,
    motion_fps,
    rgb_images,
    to_comfy_image,
)
from .source import crop_choice, crop_widgets, framing_of

TRACKED_CROP = "auto (tracked)"
DRIVING_CROPS = ["full", "auto (first frame)", TRACKED_CROP, "box"]
DRIVING_CROP_TOOLTIP = ("full: whole frames; auto (first frame): find the head in the first frame and use that "
                        f"square for every frame; auto (tracked): follow the head (found every {TRACK_EVERY} frames, "
                        "smoothed in between), a square per frame; box: the box below. auto frames the head the way "
                        "the model's checkpoint was trained on driving videos.")
MOTION_TOOLTIP = "An ANYTALK_MOTION: per-frame head pose (yaw, pitch, roll, translation) and expression."


def estimate_motion(model, images: torch.Tensor, crop: str = "full", box: tuple[int, int, int, int] = (0, 0, 256, 256),
                    crop_scale: float = 1.0, fps: float = 25.0) -> tuple[Motion, torch.Tensor]:
    """Motion of driving frames (N, H, W, C) and the first frame as the model sees it (1, 3, S, S)."""
    n, h, w = check_image_shape(images, "driving images", min_side=16)
    size = model.image_size
    first = rgb_images(images[:1], "driving images").permute(0, 3, 1, 2)
    images = images if images.dim() == 4 else images.unsqueeze(0)

    def frames():
        return (rgb_images(images[i:i + 1], "driving images").permute(0, 3, 1, 2) for i in range(n))

    family = framing_of(model)
    if crop == TRACKED_CROP:
        tracking = _comfy.Progress(n)
        track = track_head(frames(), size, fps=float(fps), family=family, total=n, progress=tracking.update,
                           cancel=tracking.cancel)
        _comfy.log.info("AnyTalk Estimate Motion: %s (%s driving framing)", track.describe(), family)
        spec = track.spec(size)
    else:
        mode = "auto" if crop.startswith("auto") else crop
        spec = crop_spec(first, crop_choice(mode, box), size, float(crop_scale), family=family, role="driving")
        if mode == "full" and h == w == size:
            spec = None  # frames already are the model's input
    preview = first if spec is None else apply_crop(first, spec.select(0))
    progress = _comfy.Progress(n)
    motion = model.engine().estimate_motion(cropped_frames(frames(), spec), total=n, progress=progress.update,
                                            cancel=progress.cancel, fps=float(fps))
    _comfy.soft_empty_cache()
    return motion, preview


class AnyTalkEstimateMotion:
    DESCRIPTION = ("Reads head pose and expression from every driving frame (a video's IMAGE batch: Load Video, "
                   "VideoHelperSuite, ...), in chunks. Any face works as a driver: person, CG or cartoon.")
    SEARCH_ALIASES = ("head pose", "face motion", "facial expression", "face tracking")
    CATEGORY = CATEGORY
    FUNCTION = "estimate"
    RETURN_TYPES = ("ANYTALK_MOTION", "IMAGE")
    RETURN_NAMES = ("motion", "crop_preview")
    OUTPUT_TOOLTIPS = ("The driving performance, one pose and expression per frame.",
                       "The first driving frame as the model sees it (after cropping).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ANYTALK_MODEL", {"tooltip": "From AnyTalk Load Model."}),
                "images": ("IMAGE", {"tooltip": "The driving frames (a video as an IMAGE batch)."}),
                "crop": (DRIVING_CROPS, {"default": "full", "tooltip": DRIVING_CROP_TOOLTIP}),
                **crop_widgets(),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.1, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frame rate of the driving frames (connect Load Video's fps); stored "
                                             "with the motion for smoothing and retiming."}),
            }
        }

    @artist_errors("AnyTalk Estimate Motion")
    def estimate(self, model, images, crop="full", box_x=0, box_y=0, box_width=256, box_height=256, crop_scale=1.0,
                 fps=25.0):
        motion, preview = estimate_motion(model, images, crop, (box_x, box_y, box_width, box_height), crop_scale, fps)
        return (motion, to_comfy_image(preview))


# --------------------------------------------------------------------------------------------------

ANGLE_MODES = ["add", "set"]


class AnyTalkMotionEdit:
    DESCRIPTION = ("Edits a motion: pose offsets or a fixed free-view pose, translation offsets, expression "
                   "strength, a frame range and a new frame rate.")
    CATEGORY = CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = ("ANYTALK_MOTION",)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The edited motion.",)

    @classmethod
    def INPUT_TYPES(cls):
        angle = {"default": 0.0, "min": -90.0, "max": 90.0, "step": 0.5}
        shift = {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "motion": ("ANYTALK_MOTION", {"tooltip": MOTION_TOOLTIP}),
                "angle_mode": (ANGLE_MODES, {"default": "add",
                                             "tooltip": "add: turn the head by these degrees on top of the motion; "
                                                        "set: hold the head at exactly these angles (free view)."}),
                "yaw": ("FLOAT", {**angle, "tooltip": "Degrees; positive turns the face towards the image's left."}),
                "pitch": ("FLOAT", {**angle, "tooltip": "Degrees; positive tilts the face down."}),
                "roll": ("FLOAT", {**angle, "tooltip": "Degrees; positive rotates the head clockwise."}),
                "shift_x": ("FLOAT", {**shift, "tooltip": "Horizontal head offset (image width = 2)."}),
                "shift_y": ("FLOAT", {**shift, "tooltip": "Vertical head offset (image height = 2)."}),
                "shift_z": ("FLOAT", {**shift, "tooltip": "Depth offset (towards or away from the camera)."}),
                "expression_scale": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 3.0, "step": 0.05,
                                               "tooltip": "Multiplies the expression: 0 = neutral, 1 = as driven, "
                                                          ">1 exaggerates."}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1,
                                        "tooltip": "First frame kept."}),
                "frame_count": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1,
                                        "tooltip": "Frames kept (0 = to the end). A one-frame motion is repeated "
                                                   "to this length."}),
                "target_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                         "tooltip": "Resample the motion to this frame rate (0 = keep)."}),
            }
        }

    @artist_errors("AnyTalk Motion Edit")
    def edit(self, motion, angle_mode="add", yaw=0.0, pitch=0.0, roll=0.0, shift_x=0.0, shift_y=0.0, shift_z=0.0,
             expression_scale=1.0, start_frame=0, frame_count=0, target_fps=0.0):
        motion = check_motion(motion, "AnyTalk Motion Edit")
        n = len(motion)
        if n == 1 and frame_count > 1:
            if start_frame:
                raise AnyTalkError(f"start_frame {start_frame} is past the end of a one-frame motion")
            motion = motion.repeat_to(int(frame_count))
        else:
            if start_frame >= n:
                raise AnyTalkError(f"start_frame {start_frame} is past the end of the motion ({n} frames, 0 to {n - 1})")
            stop = n if frame_count == 0 else min(n, start_frame + frame_count)
            motion = motion[int(start_frame):stop]
        if target_fps:
            motion = retime(motion, motion_fps(motion), float(target_fps))
        if angle_mode == "set":
            motion = motion.with_pose(yaw=yaw, pitch=pitch, roll=roll)
            motion = motion.with_offsets(translation=(shift_x, shift_y, shift_z))
        elif angle_mode == "add":
            motion = motion.with_offsets(yaw=yaw, pitch=pitch, roll=roll, translation=(shift_x, shift_y, shift_z))
        else:
            raise AnyTalkError(f"unknown angle_mode {angle_mode!r}; choose add or set")
        if expression_scale != 1.0:
            motion = motion.scaled_expression(float(expression_scale))
        return (motion,)


MIX_MODES = ["pose from A, expression from B", "blend expressions"]


class AnyTalkMotionMix:
    DESCRIPTION = ("Combines two motions: the head pose of A with the expression of B (pose mixes across model "
                   "families; e.g. a video's head motion with speech from AnyTalk Audio to Motion), or a weighted "
                   "blend of both expressions (same model family only). One-frame motions are repeated to the "
                   "other's length.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = ("ANYTALK_MOTION",)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The combined motion.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion_a": ("ANYTALK_MOTION", {"tooltip": "Motion A (gives the pose)."}),
                "motion_b": ("ANYTALK_MOTION", {"tooltip": "Motion B (gives the expression)."}),
                "mode": (MIX_MODES, {"default": MIX_MODES[0],
                                     "tooltip": "pose from A, expression from B; or blend the expressions of A and "
                                                "B (pose stays A's)."}),
                "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "blend expressions: 0 = A's expression, 1 = B's."}),
            }
        }

    @artist_errors("AnyTalk Motion Mix")
    def mix(self, motion_a, motion_b, mode=MIX_MODES[0], weight=0.5):
        a = check_motion(motion_a, "AnyTalk Motion Mix")
        b = check_motion(motion_b, "AnyTalk Motion Mix")
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            raise AnyTalkError(f"motion A has {len(a)} frames and motion B {len(b)}: make them the same length with "
                               "AnyTalk Motion Edit (frame_count / target_fps) or AnyTalk Audio to Motion's "
                               "frame_count (connect Load Video's frame_count), or use a one-frame motion")
        n = max(len(a), len(b))
        a = a.repeat_to(n) if len(a) == 1 and n > 1 else a
        b = b.repeat_to(n) if len(b) == 1 and n > 1 else b
        try:
            if mode == MIX_MODES[0]:
                out = mix(a, b)
            elif mode == MIX_MODES[1]:
                out = mix_expressions(a, b, float(weight))
            else:
                raise AnyTalkError(f"unknown mode {mode!r}")
        except MotionFamilyError as exc:
            raise AnyTalkError(f"{exc}. Use mode '{MIX_MODES[0]}' to combine motions of different models") from None
        out.fps = a.fps or b.fps
        return (out,)


SMOOTH_METHODS = ["one_euro", "kalman"]


class AnyTalkMotionSmooth:
    DESCRIPTION = ("Removes jitter from a motion. one_euro follows fast moves with little lag; kalman is a zero-lag "
                   "offline smoother for steadier results.")
    CATEGORY = CATEGORY
    FUNCTION = "smooth"
    RETURN_TYPES = ("ANYTALK_MOTION",)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The smoothed motion.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": ("ANYTALK_MOTION", {"tooltip": MOTION_TOOLTIP}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "0 = unchanged, 1 = strongest smoothing."}),
                "method": (SMOOTH_METHODS, {"default": "one_euro", "tooltip": "Filter used on every pose and "
                                                                              "expression channel."}),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frame rate of the motion (0 = the rate stored with it, else 25)."}),
            }
        }

    @artist_errors("AnyTalk Motion Smooth")
    def smooth(self, motion, strength=0.5, method="one_euro", fps=0.0):
        motion = check_motion(motion, "AnyTalk Motion Smooth")
        rate = float(fps) if fps else motion_fps(motion)
        out = smooth_motion(motion, rate, float(strength), method=method)
        out.fps = motion.fps or rate
        return (out,)


# --------------------------------------------------------------------------------------------------

MOTION_SUBFOLDER = "anytalk_motion"


class AnyTalkSaveMotion:
    DESCRIPTION = ("Saves a motion as a small .safetensors file in ComfyUI's output folder (anytalk_motion/), to "
                   "reuse a performance with AnyTalk Load Motion. Never overwrites: each save gets a new number.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved motion file.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": ("ANYTALK_MOTION", {"tooltip": MOTION_TOOLTIP}),
                "filename_prefix": ("STRING", {"default": f"{MOTION_SUBFOLDER}/performance",
                                               "tooltip": "File name (and sub-folder) in the output folder; a "
                                                          "number is appended."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return validate_save_prefix(filename_prefix)

    @artist_errors("AnyTalk Save Motion")
    def save(self, motion, filename_prefix=f"{MOTION_SUBFOLDER}/performance"):
        motion = check_motion(motion, "AnyTalk Save Motion")
        folder, name, subfolder = _comfy.save_location(filename_prefix)
        path = unique_path(folder / f"{name}.safetensors")
        motion.save(path)
        rel = f"{subfolder}/{path.name}" if subfolder else path.name
        return {"ui": {"text": [f"saved {len(motion)} frames to {rel} (load it as '{rel} [output]')"]},
                "result": (str(path),)}


NO_MOTION_FILE = "(no motion file found)"


def motion_file_choices() -> list[str]:
    names = _comfy.list_files(_comfy.input_dir(), (".safetensors",))
    out_root = _comfy.output_dir() / MOTION_SUBFOLDER
    names += [f"{MOTION_SUBFOLDER}/{n} [output]" for n in _comfy.list_files(out_root, (".safetensors",))]
    return names or [NO_MOTION_FILE]


class AnyTalkLoadMotion:
    DESCRIPTION = "Loads a motion saved by AnyTalk Save Motion (from the input folder, output/anytalk_motion, or a path)."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ANYTALK_MOTION", "FLOAT", "INT")
    RETURN_NAMES = ("motion", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("The saved motion.", "Its frame rate (25 if it has none).", "Its number of frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "", "tooltip": "Optional path of a motion file; when set it is used "
                                                              "instead of the list below. " + TYPED_PATH_NOTE}),
                "motion_file": (motion_file_choices(), {"tooltip": "A motion file from the input folder or from "
                                                                   "output/anytalk_motion."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path):
        return validate_typed_path(path, "motion")

    @classmethod
    def IS_CHANGED(cls, path, motion_file):
        try:
            return file_signature(resolve_input_file(motion_file, path, "motion"))
        except (AnyTalkError, OSError):
            return ""

    @artist_errors("AnyTalk Load Motion")
    def load(self, path, motion_file):
        p = resolve_input_file(motion_file, path, "motion")
        motion = Motion.load(p)
        return (motion, motion_fps(motion), len(motion))
