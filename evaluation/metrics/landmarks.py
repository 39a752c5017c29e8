"""AKD (average keypoint distance, FOMM's protocol): mean L2 distance between facial landmarks detected on
generated frames and on the corresponding driving frames. Lower means the motion was transferred better.

Backends:

- ``dlib``: dlib's frontal face detector (HOG) + the 68-point shape predictor
  ``shape_predictor_68_face_landmarks.dat`` (iBUG 300-W annotation). The file comes from a folder named with
  ``--dlib-models DIR`` or, by default, from the ``face-recognition-models`` package (found on disk without
  importing it). FOMM and the papers after it measure AKD with Bulat et al.'s ``face-alignment`` network,
  also 68 points of the same annotation scheme, so numbers are close in kind but not identical.
- landmark arrays computed elsewhere (``(N, P, 2)`` ``.npy``/``.npz`` files): :func:`read_landmarks`.

When no face is detected the whole frame is taken as the face box (frames are face crops) and the frame
is counted in :attr:`DlibFace.fallbacks`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import MetricWeightsError, package_file, to_uint8_frames

__all__ = ["average_keypoint_distance", "read_landmarks", "DlibFace", "find_dlib_model", "load_landmarks",
           "DLIB_LANDMARKS", "DLIB_RECOGNITION"]

DLIB_LANDMARKS = "shape_predictor_68_face_landmarks.dat"
DLIB_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
_INSTALL = "pip install dlib-bin face-recognition-models"


def average_keypoint_distance(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame mean Euclidean distance between matching landmarks: (N, P, 2) x2 -> (N,) float64.

    A frame where either set has a NaN coordinate gives NaN (not detected); the caller averages the rest.
    """
    a, b = np.asarray(predicted, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 2:
        raise ValueError(f"landmarks must both be (N, P, 2), got {a.shape} and {b.shape}")
    return np.linalg.norm(a - b, axis=-1).mean(-1)


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """Landmarks (N, P, 2) in pixels from a ``.npy`` file or an ``.npz`` file (key ``landmarks`` or its only array)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: landmark file not found")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{p}: not a .npy/.npz landmark file ({exc})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = data.files
            key = "landmarks" if "landmarks" in names else (names[0] if len(names) == 1 else None)
            if key is None:
                raise ValueError(f"{p}: an .npz file must hold one array or one named 'landmarks', found {names}")
            data = data[key]
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{p}: landmarks must have shape (frames, points, 2), got {arr.shape}")
    return arr


def find_dlib_model(name: str, folder: str | os.PathLike | None = None, use_defaults: bool = True) -> Path | None:
    """``folder/name`` if given, else the file inside the ``face-recognition-models`` package, else None."""
    if folder is not None:
        candidate = Path(folder).expanduser() / name
        if not candidate.is_file():
            raise MetricWeightsError(f"{candidate} not found: --dlib-models must name a folder holding {name}")
        return candidate
    return package_file("face_recognition_models", "models", name) if use_defaults else None


def _import_dlib():
    try:
        import dlib  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return dlib


class DlibFace:
    """dlib face detector + 68-point shape predictor (+ optional 128-D face recognition ResNet).

    ``landmarks(frames)``: uint8/float frames (N, H, W, 3) -> (N, 68, 2) pixel coordinates (x, y).
    ``embed(frames)``: -> (N, 128) dlib face descriptors (needs ``recognition``).
    """

    name = "dlib"

    def __init__(self, landmarks_file: str | os.PathLike, recognition_file: str | os.PathLike | None = None,
                 upsample: int = 1):
        dlib = _import_dlib()
        if dlib is None:
            raise MetricWeightsError(f"the dlib backend needs the dlib module: {_INSTALL}")
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(landmarks_file))
        self.recognizer = dlib.face_recognition_model_v1(str(recognition_file)) if recognition_file else None
        self.files = {"landmarks": str(landmarks_file), "recognition": str(recognition_file) if recognition_file else None}
        self.upsample = upsample
        self.frames = 0
        self.fallbacks = 0

    def _shape(self, image: np.ndarray):
        h, w = image.shape[:2]
        faces = list(self.detector(image, self.upsample))
        self.frames += 1
        if faces:  # the largest detection: talking-head frames show one main face
            box = max(faces, key=lambda r: r.width() * r.height())
        else:
            self.fallbacks += 1
            box = self._dlib.rectangle(0, 0, w - 1, h - 1)
        return self.predictor(image, box)

    def landmarks(self, frames) -> np.ndarray:
        images = to_uint8_frames(frames)
        out = np.empty((len(images), 68, 2), dtype=np.float64)
        for i, image in enumerate(images):
            shape = self._shape(image)
            out[i] = [(shape.part(k).x, shape.part(k).y) for k in range(shape.num_parts)]
        return out

    def embed(self, frames) -> np.ndarray:
        if self.recognizer is None:
            raise MetricWeightsError(f"dlib identity embeddings need {DLIB_RECOGNITION}")
        images = to_uint8_frames(frames)
        out = np.empty((len(images), 128), dtype=np.float64)
        for i, image in enumerate(images):
            out[i] = np.asarray(self.recognizer.compute_face_descriptor(image, self._shape(image)))
        return out


def load_landmarks(backend: str = "auto", dlib_models: str | os.PathLike | None = None,
                   use_defaults: bool = True) -> DlibFace:
    """A landmark detector for AKD; raises :class:`MetricWeightsError` naming what is missing."""
    if backend not in ("auto", "dlib"):
        raise ValueError(f"landmark backend must be auto or dlib, got {backend!r}")
    path = find_dlib_model(DLIB_LANDMARKS, dlib_models, use_defaults)
    if path is None or _import_dlib() is None:
        raise MetricWeightsError(
            f"AKD needs a 68-point landmark detector: install dlib and its models ({_INSTALL}), or pass "
            f"--dlib-models DIR with {DLIB_LANDMARKS}; precomputed landmarks (N, 68, 2) can be given to "
            "`anytalk-eval metrics --landmarks-generated/--landmarks-reference`")
    return DlibFace(path)
