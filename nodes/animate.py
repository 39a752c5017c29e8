"""AnyTalk Animate: the whole pipeline in one node, from the same stage functions as the stage nodes."""
from __future__ import annotations

from ..anytalk_core.engine import smooth_motion
from ..anytalk_core.stages import Driving, mix_speech
from ._objects import CATEGORY, AnyTalkError, artist_errors, check_image_shape, check_motion, motion_fps
from .audio import audio_motion
from .media import fit_audio, silence
from .motion import TRACKED_CROP, estimate_motion
from .render import TRANSFER_MODES, paste_frames, render_frames, strength, transfer_keypoints, warp_plan
from .source import framing_of, load_source, source_keypoints

SOURCE_CROPS = ["auto", "full"]
DRIVING_CROPS = ["full", "auto (first frame)", TRACKED_CROP]


class AnyTalkAnimate:
    DESCRIPTION = ("Animates a portrait with driving frames (a video's IMAGE batch), a ready motion, or speech alone, "
                   "in one node: crop, keypoints, motion, transfer, warp, generate and optional paste-back. The "
                   "portrait's work is cached, so trying another driving video does not redo it. Without driving "
                   "frames or motion the audio drives the face (the checkpoint's audio-to-motion part); with them it "
                   "passes through, fitted to the result's length, or drives the expression when "
                   "audio_drives_expression is on.")
    SEARCH_ALIASES = ("talking head", "lip sync", "lipsync", "face animation", "portrait animation", "animate face",
                      "face reenactment", "liveportrait", "face vid2vid")
    CATEGORY = CATEGORY
    FUNCTION = "animate"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("frames", "audio", "fps")
    OUTPUT_TOOLTIPS = ("The animated frames (the crop, or the full picture with paste_back).",
                       "The audio input fitted to the frames (silence when none is connected).",
                       "Frame rate of the result.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ANYTALK_MODEL", {"tooltip": "From AnyTalk Load Model."}),
                "source_image": ("IMAGE", {"tooltip": "The portrait to animate (any IMAGE: Load Image, VAE Decode, "
                                                      "...)."}),
                "source_crop": (SOURCE_CROPS, {"default": "auto", "tooltip": "auto: find the head; full: the whole "
                                                                             "image."}),
                "driving_crop": (DRIVING_CROPS, {"default": "full",
                                                 "tooltip": "full: whole driving frames; auto (first frame): the "
                                                            "head's square in the first driving frame, kept for "
                                                            "every frame; auto (tracked): follow the head, a "
                                                            "square per frame."}),
                "mode": (TRANSFER_MODES, {"default": "relative",
                                          "tooltip": "relative: keep the portrait's pose and follow the driver's "
                                                     "movement; absolute: copy the driver's pose."}),
                "pose_strength": strength("How much of the driver's head rotation is applied."),
                "expression_strength": strength("How much of the driver's expression is applied."),
                "translation_strength": strength("How much of the driver's head translation is applied."),
                "smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Temporal smoothing of the motion (0 = off)."}),
                "paste_back": ("BOOLEAN", {"default": False,
                                           "tooltip": "Put the animated crop back into the full source image."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.1, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frame rate of the driving frames (connect Load Video's fps)."}),
            },
            "optional": {
                "driving_images": ("IMAGE", {"tooltip": "Driving frames (e.g. AnyTalk Load Video)."}),
                "driving_motion": ("ANYTALK_MOTION", {"tooltip": "A ready motion instead of driving frames (Load "
                                                                 "Motion, Motion Edit/Mix, or an audio-to-motion "
                                                                 "node)."}),
                "audio": ("AUDIO", {"tooltip": "Sound for the result, fitted to the frame count. Alone (no driving "
                                               "frames or motion) it drives the face; needs a checkpoint with an "
                                               "audio-to-motion part, like the bundled demo."}),
                "audio_drives_expression": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "With driving frames or a motion and audio: the expression (mouth) comes from the audio, "
                               "only the head pose from the driver."}),
            },
        }

    @artist_errors("AnyTalk Animate")
    def animate(self, model, source_image, source_crop="auto", driving_crop="full", mode="relative",
                pose_strength=1.0, expression_strength=1.0, translation_strength=1.0, smoothing=0.0,
                paste_back=False, fps=25.0, driving_images=None, driving_motion=None, audio=None,
                audio_drives_expression=False):
        if driving_images is None and driving_motion is None and audio is None:
            raise AnyTalkError("connect driving_images (a video's frames), a driving_motion or speech audio")
        if driving_images is not None and driving_motion is not None:
            raise AnyTalkError("connect either driving_images or driving_motion, not both")
        check_image_shape(source_image, "source image", min_side=16)
        source = load_source(source_image, crop=source_crop, size=model.image_size, family=framing_of(model))
        keypoints = source_keypoints(model, source)
        driving = _driving(model, float(fps), driving_images, driving_crop, driving_motion, audio,
                           audio_drives_expression)
        rate = motion_fps(driving.motion, float(fps))
        motion = driving.motion
        if smoothing > 0:
            motion = smooth_motion(motion, rate, float(smoothing))
        driven = transfer_keypoints(keypoints, motion, mode=mode, pose_strength=pose_strength,
                                    expression_strength=expression_strength,
                                    translation_strength=translation_strength, reference_motion=driving.reference)
        frames = render_frames(model, warp_plan(model, source, driven))
        if paste_back:
            frames = paste_frames(frames, source)
        n = frames.shape[0]
        sound = fit_audio(audio, n, rate) if audio is not None else silence(n, rate)
        return (frames, sound, rate)


def _driving(model, fps: float, images, crop: str, motion, audio, audio_drives_expression: bool) -> Driving:
    """The Driving stage of the node: frames or a motion, speech alone, or either with speech (one mix rule)."""
    if images is not None:
        motion, _ = estimate_motion(model, images, crop=crop, fps=fps)
    elif motion is not None:
        motion = check_motion(motion, "AnyTalk Animate")
    else:  # speech alone drives the face, relative to the network's silent face
        return Driving(*audio_motion(model, audio, fps))
    if audio is None or not audio_drives_expression:
        return Driving(motion)
    speech, rest = audio_motion(model, audio, motion_fps(motion, fps), frame_count=len(motion))
    return mix_speech(motion, speech, rest)
