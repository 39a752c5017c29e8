"""Metrics of the evaluation suite; each network-based metric has pluggable, user-named weights.

``get_metric(name, **options)`` returns the metric's function or loaded backend:

========  =========================================  ===========================================================
name      returns                                    weights
========  =========================================  ===========================================================
l1        ``l1_distance(gen, ref) -> (N,)``          none
psnr      ``psnr(gen, ref) -> (N,)``                 none
cpbd      ``cpbd(image) -> float``                   none
lpips     :class:`~.lpips.LPIPS` ``(gen, ref)``      ``trunk=`` torchvision AlexNet/VGG16, ``heads=`` lpips heads
fid       :class:`~.fid.FIDInceptionV3` ``(frames)``  ``inception=`` pytorch-fid pt_inception / TF TorchScript
csim/aed  identity embedder ``.embed(frames)``       ``arcface=`` insightface backbone.pth, or dlib models
akd       :class:`~.landmarks.DlibFace` ``.landmarks``  dlib 68-point shape predictor
========  =========================================  ===========================================================

A network metric without weights raises :class:`MetricWeightsError` with what is needed; none ever runs
with random weights. ``use_defaults=False`` turns off the offline defaults found in installed packages.
"""
from __future__ import annotations

from typing import Any

from ._common import MetricWeightsError
from .cpbd import cpbd
from .fid import FeatureStats, fid_from_stats, frechet_distance, load_inception
from .identity import average_euclidean_distance, cosine_similarity, load_identity
from .landmarks import average_keypoint_distance, load_landmarks, read_landmarks
from .lpips import load_lpips
from .pixel import l1_distance, psnr

__all__ = [
    "METRICS",
    "MetricWeightsError",
    "get_metric",
    "l1_distance",
    "psnr",
    "cpbd",
    "load_lpips",
    "load_inception",
    "FeatureStats",
    "frechet_distance",
    "fid_from_stats",
    "load_identity",
    "cosine_similarity",
    "average_euclidean_distance",
    "load_landmarks",
    "average_keypoint_distance",
    "read_landmarks",
]

# name -> (column header as in the seed's tables, lower is better, one-line description)
METRICS: dict[str, tuple[str, bool, str]] = {
    "l1": ("L1↓", True, "mean absolute error to the ground-truth frame, pixels in 0..1"),
    "lpips": ("LPIPS↓", True, "learned perceptual distance to the ground-truth frame (AlexNet LPIPS v0.1)"),
    "psnr": ("PSNR↑", False, "peak signal-to-noise ratio to the ground-truth frame, dB"),
    "fid": ("FID↓", True, "Fréchet distance of InceptionV3 pool features, generated vs real frames"),
    "csim": ("CSIM↑", False, "cosine similarity of identity embeddings, generated frame vs source"),
    "cpbd": ("CPBD↑", False, "no-reference sharpness of the generated frames"),
    "akd": ("AKD↓", True, "mean landmark distance to the driving frame, pixels of a 256 px frame"),
    "aed": ("AED↓", True, "Euclidean distance of normalised identity embeddings to the ground-truth frame"),
}


def get_metric(name: str, **options: Any) -> Any:
    """The function or loaded backend of metric ``name`` (see the module table for ``options``)."""
    key = name.lower()
    if key == "l1":
        return l1_distance
    if key == "psnr":
        return psnr
    if key == "cpbd":
        return cpbd
    if key == "lpips":
        return load_lpips(net=options.get("net", "alex"), trunk=options.get("trunk"), heads=options.get("heads"),
                          use_defaults=options.get("use_defaults", True), device=options.get("device", "cpu"))
    if key == "fid":
        return load_inception(options.get("inception"), use_defaults=options.get("use_defaults", True),
                              device=options.get("device", "cpu"))
    if key in ("csim", "aed"):
        return load_identity(options.get("backend", "auto"), arcface=options.get("arcface"),
                             dlib_models=options.get("dlib_models"), use_defaults=options.get("use_defaults", True),
                             device=options.get("device", "cpu"))
    if key == "akd":
        return load_landmarks(options.get("backend", "auto"), dlib_models=options.get("dlib_models"),
                              use_defaults=options.get("use_defaults", True))
    raise ValueError(f"unknown metric {name!r}: choose from {', '.join(METRICS)}")
