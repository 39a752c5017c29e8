"""AnyTalk Audio to Motion: speech (AUDIO) -> ANYTALK_MOTION with the model's audio-to-motion part."""
from __future__ import annotations

from ..anytalk_core.audio_features import audio_frame_count
from . import _comfy
from ._objects import CATEGORY, AnyTalkError, artist_errors


def audio_motion(model, audio, fps: float, frame_count: int = 0, expression_strength: float = 1.0,
                 pose_strength: float = 1.0):
    """(motion, rest motion) of an AUDIO at ``fps`` (``frame_count`` 0 = the audio's length)."""
    if audio is None:
        raise AnyTalkError("no audio connected")
    if not getattr(model.model, "has_audio2motion", False):
        raise AnyTalkError(f"{model.name} has no audio-to-motion weights: load a checkpoint that has them (e.g. the "
                           "bundled demo), or train them with `anytalk-train training/configs/audio2motion.toml "
                           "model.init_from=<this checkpoint>`")
    engine = model.engine()
    progress = _comfy.Progress(int(frame_count) or _frames_of(audio, fps))
    motion = engine.audio_motion(audio, float(fps), n_frames=int(frame_count) or None,
                                 expression_strength=float(expression_strength), pose_strength=float(pose_strength),
                                 progress=progress.update, cancel=progress.cancel)
    return motion, engine.rest_motion(float(fps))


def _frames_of(audio, fps: float) -> int:
    """Frames an AUDIO lasts at ``fps`` (1 if it is malformed: the core reports that properly)."""
    try:
        return audio_frame_count(int(audio["waveform"].shape[-1]), int(audio["sample_rate"]), float(fps))
    except (TypeError, KeyError, AttributeError, IndexError, ValueError, ZeroDivisionError):
        return 1


class AnyTalkAudioToMotion:
    DESCRIPTION = ("Turns speech into a motion (mouth and face movement, and head motion if the model learnt it) "
                   "with the model's audio-to-motion network. Any sample rate and channel count. Connect rest_motion "
                   "to Transfer Motion's reference_motion so the portrait's own face counts as 'silent'; mix the "
                   "motion with a video's head pose in Motion Mix.")
    SEARCH_ALIASES = ("lip sync", "lipsync", "talking head", "speech to face", "audio driven face", "audio to face")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("ANYTALK_MOTION", "ANYTALK_MOTION", "INT")
    RETURN_NAMES = ("motion", "rest_motion", "frame_count")
    OUTPUT_TOOLTIPS = ("One pose and expression per video frame, driven by the audio.",
                       "The network's face at silence (one frame): the reference for relative transfer.",
                       "Number of frames of the motion.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ANYTALK_MODEL", {"tooltip": "From AnyTalk Load Model; the checkpoint needs an "
                                                       "audio-to-motion part (the bundled demo has one)."}),
                "audio": ("AUDIO", {"tooltip": "Speech: AnyTalk Load Audio, Load Video's audio, or any AUDIO."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frame rate of the motion (and of the video you will assemble)."}),
                "frame_count": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1,
                                        "tooltip": "Frames to make (0 = as long as the audio). Connect Load Video's "
                                                   "frame_count to mix with that video's head pose."}),
                "expression_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                                  "tooltip": "How far the face moves from its silent state "
                                                             "(1 = as predicted, >1 exaggerates)."}),
                "pose_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                            "tooltip": "How much predicted head motion is kept (0 = a still head)."}),
            }
        }

    @artist_errors("AnyTalk Audio to Motion")
    def convert(self, model, audio, fps=25.0, frame_count=0, expression_strength=1.0, pose_strength=1.0):
        motion, rest = audio_motion(model, audio, fps, frame_count, expression_strength, pose_strength)
        _comfy.soft_empty_cache()
        return (motion, rest, len(motion))
