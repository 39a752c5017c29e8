"""Find the face to frame: a human face detector (dlib HOG, the ``faces`` extra), a head detector for
animals, cartoons and CG faces (a small CNN trained on the synthetic renderer, shipped), and the framing
conventions each checkpoint family was trained with (:mod:`.framing`).

:func:`detect_face` runs them in order and says which one found the face (:class:`DetectionReport`);
:func:`anytalk_core.crop.crop_auto` turns the result into a crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .faces import FACES_EXTRA, MissingExtraError, detect_human_faces, faces_available
from .framing import ANYTALK_FRAMING, FRAMINGS, Framing, face_frame, framing_square
from .heads import detect_heads, load_head_detector

__all__ = [
    "DETECTORS", "DetectionReport", "detect_face", "MissingExtraError", "FACES_EXTRA", "faces_available",
    "Framing", "FRAMINGS", "ANYTALK_FRAMING", "face_frame", "framing_square",
]

# What a caller may ask for; "auto" tries faces (when installed), then heads.
DETECTORS = ("auto", "faces", "heads")
DETECTOR_NAMES = {"faces": "human face detector (dlib HOG)", "heads": "head detector (synthetic-trained CNN)",
                  "foreground": "foreground heuristic", "center": "centre square (nothing found)"}


@dataclass(frozen=True)
class DetectionReport:
    """Which detector framed a picture and where the face is.

    ``detector``: ``"faces"``, ``"heads"``, ``"foreground"`` or ``"center"``; ``box``: the face box
    (x, y, w, h) in pixels (edge coordinates, as :func:`anytalk_core.crop.crop_box` takes); ``center``
    (pixel coordinates), ``size`` (face size, see :func:`.framing.face_frame`) and ``angle`` (roll,
    degrees) for the face detectors, None for the others; ``score`` the detector's confidence;
    ``notice``: a line for the user when a preferred detector could not run (e.g. the extra is missing).
    """

    detector: str
    box: tuple[float, float, float, float]
    center: tuple[float, float] | None = None
    size: float | None = None
    angle: float | None = None
    score: float | None = None
    notice: str | None = field(default=None)

    def describe(self) -> str:
        """One line: which detector framed the picture, and the box."""
        x, y, w, h = self.box
        text = f"framed by the {DETECTOR_NAMES.get(self.detector, self.detector)}: face box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}"
        if self.angle is not None and abs(self.angle) >= 0.5:
            text += f", roll {self.angle:+.0f} deg"
        return text if self.notice is None else f"{text} ({self.notice})"


def _face_report(detector: str, center, size: float, angle: float, score: float, notice: str | None) -> DetectionReport:
    cx, cy = float(center[0]), float(center[1])
    box = (cx + 0.5 - size / 2, cy + 0.5 - size / 2, float(size), float(size))
    return DetectionReport(detector, box, (cx, cy), float(size), float(angle), float(score), notice)


_HEAD_NET = None


def _head_net():
    global _HEAD_NET
    if _HEAD_NET is None:
        _HEAD_NET = load_head_detector()
    return _HEAD_NET


def detect_face(rgb: torch.Tensor, detector: str = "auto") -> DetectionReport | None:
    """The face of one picture (3, H, W) float in 0..1, or None when the detectors find nothing.

    ``detector``: ``"faces"`` (human faces; needs the ``faces`` extra and raises
    :class:`MissingExtraError` naming it when missing), ``"heads"`` (animals, cartoons, CG and human heads;
    shipped), ``"auto"`` (faces when installed, then heads; when the extra is missing the report's
    ``notice`` says so).
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"detect_face takes one RGB picture (3, H, W), got {tuple(rgb.shape)}")
    notice = None
    if detector == "faces" and not faces_available():
        raise MissingExtraError(f"the human face detector needs dlib: {FACES_EXTRA}")
    if detector in ("auto", "faces"):
        if faces_available():
            frame = (rgb.detach().float().clamp(0, 1).permute(1, 2, 0) * 255).round().byte().cpu().numpy()
            face = detect_human_faces(np.ascontiguousarray(frame))
            if face is not None:
                return _face_report("faces", face.center, face.size, face.angle, face.score, None)
            if detector == "faces":
                return None
        else:
            notice = f"no human face detector: {FACES_EXTRA}"
    found = detect_heads(_head_net(), rgb.detach().float()[None].cpu())[0]
    if found is None:
        return None
    return _face_report("heads", found.center.tolist(), found.size, found.angle, found.score, notice)
