"""ComfyUI node classes of the AnyTalk pack: thin adapters over ``anytalk_core`` (no model math here).

Imported only relatively, from the pack's root ``__init__.py`` (ComfyUI owns the top-level name ``nodes``).
ComfyUI services (folder_paths, ProgressBar, model management, VIDEO) are looked up lazily in ``_comfy``
with fallbacks, so the pack imports and runs without ComfyUI (tests, scripts).

Graph (split): Load Model, Load Source -> Detect Canonical Keypoints -> Transfer Motion (<- Estimate Motion
<- Load Video; Motion Edit / Mix / Smooth / Expression Edit; Save / Load Motion) -> 3D Warp -> Generate -> Paste Back ->
Assemble Video. All in one: Animate. Audio to Motion (<- Load Audio / Load Video's audio) outputs an
ANYTALK_MOTION into Motion Mix / Transfer Motion (with its rest motion as reference) / Animate's
``driving_motion``; Animate also takes speech alone.
"""
from . import _comfy
from .animate import AnyTalkAnimate
from .audio import AnyTalkAudioToMotion
from .expression import AnyTalkExpressionEdit
from .media import AnyTalkAssembleVideo, AnyTalkLoadAudio, AnyTalkLoadVideo
from .model import AnyTalkLoadModel
from .motion import (
    AnyTalkEstimateMotion,
    AnyTalkLoadMotion,
    AnyTalkMotionEdit,
    AnyTalkMotionMix,
    AnyTalkMotionSmooth,
    AnyTalkSaveMotion,
)
from .render import AnyTalkGenerate, AnyTalkPasteBack, AnyTalkTransferMotion, AnyTalkWarp3D
from .source import AnyTalkDetectKeypoints, AnyTalkLoadSource

_NODES = [
    (AnyTalkLoadModel, "AnyTalk Load Model"),
    (AnyTalkLoadSource, "AnyTalk Load Source"),
    (AnyTalkDetectKeypoints, "AnyTalk Detect Canonical Keypoints"),
    (AnyTalkEstimateMotion, "AnyTalk Estimate Motion"),
    (AnyTalkAudioToMotion, "AnyTalk Lip Sync (Audio to Motion)"),
    (AnyTalkMotionEdit, "AnyTalk Motion Edit"),
    (AnyTalkMotionMix, "AnyTalk Motion Mix"),
    (AnyTalkMotionSmooth, "AnyTalk Motion Smooth"),
    (AnyTalkExpressionEdit, "AnyTalk Expression Edit"),
    (AnyTalkTransferMotion, "AnyTalk Transfer Motion"),
    (AnyTalkWarp3D, "AnyTalk 3D Warp"),
    (AnyTalkGenerate, "AnyTalk Generate"),
    (AnyTalkPasteBack, "AnyTalk Paste Back"),
    (AnyTalkLoadVideo, "AnyTalk Load Video"),
    (AnyTalkLoadAudio, "AnyTalk Load Audio"),
    (AnyTalkSaveMotion, "AnyTalk Save Motion"),
    (AnyTalkLoadMotion, "AnyTalk Load Motion"),
    (AnyTalkAssembleVideo, "AnyTalk Assemble Video"),
    (AnyTalkAnimate, "AnyTalk Animate Talking Head (all-in-one)"),
]

# The front end's node search matches class and display names (fuzzy, near the start of the name), so the two
# nodes people look for as "talking head" and "lip sync" carry those words early in their display names; newer
# front ends also match each class's SEARCH_ALIASES.
NODE_CLASS_MAPPINGS: dict[str, type] = {cls.__name__: cls for cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {cls.__name__: name for cls, name in _NODES}

_comfy.register_model_folders()  # inside ComfyUI: models/anytalk and models/liveportrait; a no-op elsewhere

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
