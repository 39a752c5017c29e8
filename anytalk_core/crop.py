"""Face crop and paste-back: square crops by an affine matrix, and the exact inverse to put them back.

Images are batched tensors (B, C, H, W), float, usually in [0, 1]; outputs take the device and dtype of
the inputs. Pixel coordinates follow kornia's ``align_corners=True`` convention: the centre of pixel
(i, j) is at (x, y) = (j, i). Boxes ``(x, y, w, h)`` are continuous edge coordinates (pixel j spans
[j, j + 1)), as in PIL and COCO, so a box's centre in pixel coordinates is ``(x + w/2 - 1/2, y + h/2 - 1/2)``.

A :class:`CropSpec` holds the 2x3 matrix from original-frame pixels to crop pixels (kept in float64 on
the CPU so the inverse is exact to float rounding), the crop size and the original size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import detection  # faces_available is read through the module: tests switch the extra off
from .detection import DETECTORS, FACES_EXTRA, FRAMINGS, DetectionReport, MissingExtraError, detect_face, framing_square

__all__ = [
    "CropSpec",
    "crop_full",
    "framing_crop",
    "square_crop",
    "crop_squares",
    "crop_box",
    "crop_auto",
    "crop_auto_with_report",
    "apply_crop",
    "feather_mask",
    "paste_back",
]

MIN_CROP_SIZE = 16
_AUTO_BACKENDS = ("auto", "faces", "heads", "foreground", "center")
DETECT_SIZE = 512  # the face detectors look at pictures of at most this many pixels a side


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise ValueError(f"crop size must be an integer number of pixels, got {size!r}")
    if size < MIN_CROP_SIZE:
        raise ValueError(f"crop size must be at least {MIN_CROP_SIZE} pixels, got {size}")
    return int(size)


def _check_hw(image_hw: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_hw)
    except (TypeError, ValueError):
        raise ValueError(f"image size must be a pair (H, W), got {image_hw!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got (H, W) = ({h}, {w})")
    return h, w


def _check_image(image: torch.Tensor, name: str = "image") -> None:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (B, C, H, W), got {type(image).__name__}")
    if image.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor (values in 0..1), got {image.dtype}")
    if min(image.shape) == 0:
        raise ValueError(f"{name} must not be empty, got {tuple(image.shape)}")


@dataclass(eq=False)
class CropSpec:
    """A square crop: ``matrix`` (B, 2, 3) maps original pixel coordinates to crop pixel coordinates.

    ``size`` is the crop's side in pixels, ``original_hw`` the (H, W) of the frames it was made for.
    A batch of one applies to every frame.
    """

    matrix: torch.Tensor
    size: int
    original_hw: tuple[int, int]
    reports: tuple = ()  # crop_auto: per frame, the DetectionReport saying which detector framed it and where

    def __post_init__(self) -> None:
        m = torch.as_tensor(self.matrix).detach().to("cpu", torch.float64)
        if m.dim() == 2:
            m = m.unsqueeze(0)
        if m.dim() != 3 or m.shape[1:] != (2, 3) or m.shape[0] == 0:
            raise ValueError(f"CropSpec.matrix must have shape (B, 2, 3), got {tuple(m.shape)}")
        if not torch.isfinite(m).all():
            raise ValueError("CropSpec.matrix contains NaN or infinite values")
        if (torch.linalg.det(m[:, :, :2]).abs() < 1e-12).any():
            raise ValueError("CropSpec.matrix is singular: it must be an invertible affine map")
        self.matrix = m
        self.size = _check_size(self.size)
        self.original_hw = _check_hw(self.original_hw)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def inverse_matrix(self) -> torch.Tensor:
        """The exact inverse (B, 2, 3), crop pixels -> original pixels, in float64."""
        import kornia.geometry.transform as KT

        return KT.invert_affine_transform(self.matrix)

    def box(self, index: int = 0) -> tuple[float, float, float]:
        """Frame ``index``'s square in original pixels: (left, top, side), edges (not pixel centres)."""
        m = self.matrix[index]
        k = float(torch.linalg.det(m[:, :2]).abs().sqrt())
        corner = self.inverse_matrix()[index] @ torch.tensor([-0.5, -0.5, 1.0], dtype=torch.float64)
        return float(corner[0]) + 0.5, float(corner[1]) + 0.5, self.size / k

    def select(self, index: int | slice) -> CropSpec:
        """The spec of one frame (or a slice of frames) of a batched spec."""
        m = self.matrix[index]
        return CropSpec(m if m.dim() == 3 else m.unsqueeze(0), self.size, self.original_hw)

    def resized(self, size: int) -> CropSpec:
        """The same crop region sampled at another crop size (e.g. a model that renders 512 px)."""
        size = _check_size(size)
        r = size / self.size
        # Edge-aligned rescale of crop coordinates: x'' = r (x' + 1/2) - 1/2.
        m = self.matrix * r
        m[:, :, 2] += (r - 1) / 2
        return CropSpec(m, size, self.original_hw)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (matrix as nested lists of float64)."""
        return {
            "matrix": self.matrix.tolist(),
            "size": self.size,
            "original_hw": list(self.original_hw),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropSpec:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("matrix", "size", "original_hw") if k not in data]
        if missing:
            raise ValueError(f"CropSpec dict is missing {', '.join(missing)}; got keys {sorted(data)}")
        return cls(torch.tensor(data["matrix"], dtype=torch.float64), int(data["size"]), tuple(data["original_hw"]))


def _square_matrix(
    centers: torch.Tensor, sides: torch.Tensor, size: int, angle: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Matrices (B, 2, 3) mapping squares (centre (B, 2) in pixels, side (B,)) onto a size x size crop."""
    import kornia.geometry.transform as KT

    centers = centers.to(torch.float64)
    k = size / sides.to(torch.float64)
    angles = torch.as_tensor(angle, dtype=torch.float64).expand(centers.shape[0]).contiguous()
    m = KT.get_rotation_matrix2d(centers, angles, torch.stack([k, k], dim=1))
    # Rotation about the square's centre, then move that centre onto the crop's centre.
    m[:, :, 2] += (size - 1) / 2 - centers
    return m


def square_crop(image_hw: tuple[int, int], centers: torch.Tensor, sides: torch.Tensor, size: int,
                angles: torch.Tensor | float = 0.0) -> CropSpec:
    """A crop per square: centres (B, 2) and sides (B,) in pixels, angles (B,) in degrees (kornia's: positive
    turns the content counter-clockwise in the crop) -> spec of batch B. Inverse of :func:`crop_squares`."""
    sides = torch.as_tensor(sides, dtype=torch.float64).reshape(-1)
    if not (torch.isfinite(sides).all() and (sides > 0).all()):
        raise ValueError("square sides must be positive and finite")
    centers = torch.as_tensor(centers, dtype=torch.float64).reshape(-1, 2)
    return CropSpec(_square_matrix(centers, sides, _check_size(size), angles), size, _check_hw(image_hw))


def crop_squares(spec: CropSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The squares of a spec: centres (B, 2) and sides (B,) in pixels, angles (B,) in degrees (float64)."""
    m = spec.matrix
    k = torch.linalg.det(m[:, :, :2]).abs().sqrt()
    middle = torch.tensor([(spec.size - 1) / 2, (spec.size - 1) / 2, 1.0], dtype=torch.float64)
    centers = spec.inverse_matrix() @ middle
    return centers, spec.size / k, torch.rad2deg(torch.atan2(m[:, 0, 1], m[:, 0, 0]))


def framing_crop(
    image_hw: tuple[int, int],
    center: torch.Tensor,
    size: torch.Tensor,
    angle: torch.Tensor,
    crop_size: int,
    family: str = "liveportrait",
    role: str = "source",
):
    """A :class:`~anytalk_core.crop.CropSpec` (batch B) framing faces (centre (B, 2), size (B,), angle
    (B,) degrees) the way ``family`` (``liveportrait``, ``face_vid2vid`` or ``anytalk``) was trained,
    for a ``source`` image or a ``driving`` video. The crop is turned so the eye line is level."""
    if family not in FRAMINGS:
        raise ValueError(f"unknown framing family {family!r}; choose one of {', '.join(FRAMINGS)}")
    if role not in ("source", "driving"):
        raise ValueError(f"framing role must be 'source' or 'driving', got {role!r}")
    hw = _check_hw(image_hw)
    crop_size = _check_size(crop_size)
    center = torch.as_tensor(center, dtype=torch.float64).reshape(-1, 2)
    size = torch.as_tensor(size, dtype=torch.float64).reshape(-1)
    angle = torch.as_tensor(angle, dtype=torch.float64).reshape(-1)
    if not (torch.isfinite(size).all() and (size > 0).all()):
        raise ValueError(f"face sizes must be positive and finite, got {size.tolist()}")
    c, side, a = framing_square(center, size, angle, FRAMINGS[family][role])
    # kornia's positive angle turns the content counter-clockwise: undo a clockwise face roll.
    return CropSpec(_square_matrix(c, side, crop_size, a), crop_size, hw)


def crop_full(image_hw: tuple[int, int], size: int) -> CropSpec:
    """The whole image fitted into a square crop: the longer side fills it, the shorter is padded.

    The image keeps its aspect ratio and sits centred; the padding repeats the edge pixels
    (``padding_mode="border"``), which models see as a plain extension of the background.
    """
    h, w = _check_hw(image_hw)
    size = _check_size(size)
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], dtype=torch.float64)
    side = torch.tensor([float(max(h, w))], dtype=torch.float64)
    return CropSpec(_square_matrix(center, side, size), size, (h, w))


def crop_box(
    image_hw: tuple[int, int],
    box: tuple[float, float, float, float],
    size: int,
    scale: float = 1.0,
    angle: float = 0.0,
) -> CropSpec:
    """A manual box ``(x, y, w, h)`` made square around its centre: side ``max(w, h) * scale``.

    The square may extend beyond the image; outside pixels repeat the border. ``angle`` (degrees,
    kornia's convention: positive turns the content counter-clockwise in the crop) rotates the crop.
    """
    h_img, w_img = _check_hw(image_hw)
    size = _check_size(size)
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be (x, y, w, h), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"box must be finite, got {box!r}")
    if w <= 0 or h <= 0:
        raise ValueError(f"box must have positive width and height, got (x, y, w, h) = {box!r}")
    if x >= w_img or y >= h_img or x + w <= 0 or y + h <= 0:
        raise ValueError(
            f"box (x, y, w, h) = {box!r} lies entirely outside the image of (H, W) = ({h_img}, {w_img})"
        )
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive, got {scale!r}")
    center = torch.tensor([[x + w / 2 - 0.5, y + h / 2 - 0.5]], dtype=torch.float64)
    side = torch.tensor([max(w, h) * scale], dtype=torch.float64)
    return CropSpec(_square_matrix(center, side, size, angle), size, (h_img, w_img))


def _to_rgb_and_alpha(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, C, H, W) with C in {1, 2, 3, 4} -> RGB (B, 3, H, W) and alpha (B, 1, H, W) or None."""
    c = image.shape[1]
    if c in (1, 2):
        return image[:, :1].expand(-1, 3, -1, -1), image[:, 1:2] if c == 2 else None
    if c in (3, 4):
        return image[:, :3], image[:, 3:4] if c == 4 else None
    raise ValueError(f"image must have 1 to 4 channels (gray, gray+alpha, RGB, RGBA), got {c}")


def _background_distance(rgb: np.ndarray) -> np.ndarray:
    """Colour distance (h, w) of every pixel from a planar background model fitted to the border."""
    h, w, _ = rgb.shape
    band = max(2, round(0.03 * min(h, w)))
    border = np.zeros((h, w), dtype=bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    yy, xx = np.mgrid[0:h, 0:w]
    design = np.stack([np.ones(h * w), xx.ravel() / w, yy.ravel() / h], axis=1)
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    keep = border.ravel().copy()
    # Trimmed least squares: a subject touching the border (shoulders) must not bias the fit.
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], pixels[keep], rcond=None)
        resid = np.linalg.norm(pixels - design @ coef, axis=1)
        keep = border.ravel() & (resid <= np.quantile(resid[border.ravel()], 0.6) + 1e-9)
    return resid.reshape(h, w)


def _head_box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Box (x, y, w, h) of the top part of a foreground blob that looks like a head."""
    from scipy.ndimage import uniform_filter1d

    rows = np.flatnonzero(mask.any(axis=1))
    y0, y1 = int(rows[0]), int(rows[-1])
    sub = mask[y0 : y1 + 1]
    cols = np.arange(mask.shape[1])
    has = sub.any(axis=1)
    left = np.where(has, np.where(sub, cols, mask.shape[1]).min(axis=1), 0)
    right = np.where(has, np.where(sub, cols, -1).max(axis=1), -1)
    extent = uniform_filter1d((right - left + 1).astype(np.float64), size=5, mode="nearest")
    running = np.maximum.accumulate(extent)
    depth = np.arange(len(extent))
    # The head ends where the blob narrows well below its widest part so far (chin), at the
    # narrowest row just after (neck or the blob's end); the minimum depth keeps ears or a hat
    # from ending it early. Without a neck (a body merging into the head), it ends once the blob is
    # 1.2 times as deep as it has been wide: a head is about that tall.
    chin = np.flatnonzero((depth >= 0.5 * running) & (extent < 0.6 * running))
    tall = np.flatnonzero(depth >= 1.2 * running)
    if len(chin):
        start = int(chin[0])
        stop = min(len(extent), start + int(math.ceil(0.3 * running[start])) + 1)
        bottom = y0 + start + int(np.argmin(extent[start:stop]))
    elif len(tall):
        bottom = y0 + int(tall[0])
    else:
        bottom = y1
    head = mask[y0 : bottom + 1]
    hc = np.flatnonzero(head.any(axis=0))
    return float(hc[0]), float(y0), float(hc[-1] + 1 - hc[0]), float(bottom + 1 - y0)


def _detect_foreground(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[float, float, float, float] | None:
    """Head box (x, y, w, h) from the largest non-background blob of an (h, w, 3) image, or None."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if alpha is not None and alpha.min() < 0.5 <= alpha.max():
        fg = alpha >= 0.5
    else:
        dist = _background_distance(rgb)
        if dist.max() < 0.05:
            return None
        fg = dist > max(threshold_otsu(dist), 0.02)
    fg = ndimage.binary_opening(fg, structure=np.ones((3, 3), dtype=bool))
    fg = ndimage.binary_fill_holes(fg)
    labels, n = ndimage.label(fg)
    if n == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    biggest = int(np.argmax(areas)) + 1
    # A tiny blob is noise; a blob that is a small share of the foreground means the border model
    # failed (a cluttered photo): the centre square is then the safer guess.
    if areas[biggest - 1] < 0.002 * fg.size or areas[biggest - 1] < 0.4 * areas.sum():
        return None
    return _head_box_from_mask(labels == biggest)


def crop_auto_with_report(
    image: torch.Tensor,
    size: int,
    backend: str = "auto",
    scale: float | None = None,
    analysis_size: int = 256,
    family: str = "anytalk",
    role: str = "source",
) -> tuple[CropSpec, list]:
    """:func:`crop_auto` and, per frame, the :class:`~anytalk_core.detection.DetectionReport` saying which
    detector framed it and the face box it found."""
    _check_image(image)
    size = _check_size(size)
    if backend not in _AUTO_BACKENDS:
        raise ValueError(f"unknown crop backend {backend!r}; choose one of {', '.join(_AUTO_BACKENDS)}")
    if family not in FRAMINGS:
        raise ValueError(f"unknown framing family {family!r}; choose one of {', '.join(FRAMINGS)}")
    if role not in ("source", "driving"):
        raise ValueError(f"framing role must be 'source' or 'driving', got {role!r}")
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive, got {scale!r}")
    if backend == "faces" and not detection.faces_available():
        raise MissingExtraError(f"crop backend 'faces' needs the human face detector: {FACES_EXTRA}")

    framing = FRAMINGS[family][role]
    if scale is not None:
        framing = replace(framing, scale=float(scale))
    rgb_t, alpha_t = _to_rgb_and_alpha(image.detach())
    b, _, h, w = image.shape

    def small_copy(limit: int) -> tuple[torch.Tensor, float, float]:
        k = min(1.0, limit / max(h, w))
        hw = (max(1, round(h * k)), max(1, round(w * k)))
        out = rgb_t.to(torch.float32)
        if hw != (h, w):
            out = F.interpolate(out, size=hw, mode="bilinear", align_corners=False, antialias=True)
        return out, h / hw[0], w / hw[1]

    # Analyse small copies: detectors at up to DETECT_SIZE px, the blob and its outline at analysis_size.
    small, fy, fx = small_copy(analysis_size)
    detect_small, dy, dx = small_copy(DETECT_SIZE) if backend in DETECTORS else (None, 1.0, 1.0)
    small_alpha = None
    if alpha_t is not None:
        small_alpha = F.interpolate(alpha_t.to(torch.float32), size=small.shape[-2:], mode="bilinear", align_corners=False)

    centers, sides, angles, reports = [], [], [], []
    for i in range(b):
        report = None
        notice = None
        if backend in DETECTORS:
            report = detect_face(detect_small[i], backend)
            if report is not None:
                # Pixel centres scale as (p + 1/2) k - 1/2 between resolutions.
                cx, cy = (report.center[0] + 0.5) * dx - 0.5, (report.center[1] + 0.5) * dy - 0.5
                face = report.size * (dx + dy) / 2
                report = DetectionReport(report.detector, (cx + 0.5 - face / 2, cy + 0.5 - face / 2, face, face),
                                         (cx, cy), face, report.angle, report.score, report.notice)
                c, side, angle = framing_square(torch.tensor([[cx, cy]], dtype=torch.float64),
                                                torch.tensor([face], dtype=torch.float64),
                                                torch.tensor([report.angle], dtype=torch.float64), framing)
                centers.append(tuple(c[0].tolist()))
                sides.append(float(side[0]))
                angles.append(float(angle[0]))
                reports.append(report)
                continue
            if backend == "auto" and not detection.faces_available():
                notice = f"no human face detector: {FACES_EXTRA}"
        box = None
        if backend in ("auto", "foreground"):
            rgb = small[i].permute(1, 2, 0).cpu().numpy()
            alpha = small_alpha[i, 0].cpu().numpy() if small_alpha is not None else None
            found = _detect_foreground(rgb, alpha)
            if found is not None:
                # Edge coordinates scale exactly between the two resolutions.
                box = (found[0] * fx, found[1] * fy, found[2] * fx, found[3] * fy)
        if box is None:
            side = float(min(h, w)) * (1.0 if scale is None else scale)
            centers.append(((w - 1) / 2, (h - 1) / 2))
            sides.append(side)
            face = float(min(h, w))
            reports.append(DetectionReport("center", ((w - face) / 2, (h - face) / 2, face, face), notice=notice))
        else:
            x, y, bw, bh = box
            sides.append(max(bw, bh) * (1.4 if scale is None else scale))
            centers.append((x + bw / 2 - 0.5, y + bh / 2 - 0.5))
            reports.append(DetectionReport("foreground", box, notice=notice))
        angles.append(0.0)
    matrix = _square_matrix(
        torch.tensor(centers, dtype=torch.float64), torch.tensor(sides, dtype=torch.float64), size,
        torch.tensor(angles, dtype=torch.float64),
    )
    return CropSpec(matrix, size, (h, w)), reports


def crop_auto(
    image: torch.Tensor,
    size: int,
    backend: str = "auto",
    scale: float | None = None,
    analysis_size: int = 256,
    family: str = "anytalk",
    role: str = "source",
) -> CropSpec:
    """Find the face in each frame and return the square crop its checkpoint family expects:
    (B, C, H, W) -> spec of batch B. ``spec.reports`` holds one
    :class:`~anytalk_core.detection.DetectionReport` per frame (which detector framed it, the face box).

    Backends: ``"faces"`` (human faces: dlib's HOG detector, the optional ``faces`` extra -- an error
    names it when missing), ``"heads"`` (animal, cartoon, CG and human heads: a small CNN trained on the
    synthetic renderer, shipped with the package), ``"foreground"`` (model-free last resort: background
    colour fitted on the image border as a plane per channel, Otsu threshold of the colour distance,
    largest connected blob, its top part down to where it narrows (chin/neck) as the head, squared with
    ``scale=1.4``; an alpha channel, if present, is used as the foreground instead), ``"center"`` (the
    centre square) and ``"auto"`` (faces when installed, then heads, then foreground, then the centre).
    A face found by a detector is framed by ``family``'s convention for ``role`` (``"source"`` or
    ``"driving"``; see :mod:`anytalk_core.detection.framing`), turned so the eye line is level; ``scale``
    overrides the convention's side / face size ratio. Frames where nothing is found take the centre square.
    """
    spec, reports = crop_auto_with_report(image, size, backend, scale, analysis_size, family, role)
    spec.reports = tuple(reports)
    return spec


def _broadcast_batch(*sizes: int) -> int:
    b = max(sizes)
    if any(s not in (1, b) for s in sizes):
        raise ValueError(f"batch sizes must be equal or 1 to broadcast, got {sizes}")
    return b


def _warp(
    image: torch.Tensor, matrix: torch.Tensor, dsize: tuple[int, int], mode: str, padding_mode: str
) -> torch.Tensor:
    """kornia ``warp_affine`` (align_corners=True: pixel centres at integers) with batch broadcasting."""
    import kornia.geometry.transform as KT

    b = _broadcast_batch(image.shape[0], matrix.shape[0])
    matrix = matrix.to(device=image.device, dtype=image.dtype)
    image = image.expand(b, -1, -1, -1)
    return KT.warp_affine(image, matrix, dsize=dsize, mode=mode, padding_mode=padding_mode, align_corners=True)


def _clamp_to_range(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Bicubic overshoots; keep each result within the values its source actually had.
    dims = tuple(range(1, ref.dim()))
    return torch.maximum(torch.minimum(x, ref.amax(dim=dims, keepdim=True)), ref.amin(dim=dims, keepdim=True))


def apply_crop(image: torch.Tensor, spec: CropSpec, mode: str = "bicubic") -> torch.Tensor:
    """Cut the crop out of each frame: (B, C, H, W) -> (B, C, size, size), border padding outside.

    ``mode`` is ``"bicubic"`` (default, sharper; clamped to the input's value range) or ``"bilinear"``.
    """
    _check_image(image)
    if tuple(image.shape[-2:]) != spec.original_hw:
        raise ValueError(
            f"image is {tuple(image.shape[-2:])} (H, W) but the crop spec was made for {spec.original_hw}"
        )
    out = _warp(image, spec.matrix, (spec.size, spec.size), mode, "border")
    return _clamp_to_range(out, image) if mode == "bicubic" else out


def feather_mask(
    size: int, feather: float = 0.1, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Blend mask (1, 1, size, size): 0 on the outermost pixels, smoothstep up to 1 over ``feather * size``."""
    if not (0.0 <= feather <= 0.5):
        raise ValueError(f"feather must be a fraction of the crop size in [0, 0.5], got {feather!r}")
    i = torch.arange(size, device=device, dtype=torch.float64)
    dist = torch.minimum(i, size - 1 - i)
    # Outer ring exactly 0: bilinear warping then never spreads the crop past its footprint.
    t = (dist / max(feather * size, 1.0)).clamp(0, 1)
    ramp = t * t * (3 - 2 * t)
    return torch.minimum(ramp.view(-1, 1), ramp.view(1, -1)).to(dtype).view(1, 1, size, size)


def paste_back(
    original: torch.Tensor,
    crop: torch.Tensor,
    spec: CropSpec,
    feather: float = 0.1,
    mask: torch.Tensor | None = None,
    mode: str = "bicubic",
) -> torch.Tensor:
    """Put (generated) crops back into the frames they came from with the exact inverse affine.

    original (B or 1, C, H, W), crop (B or 1, C, s, s), spec of batch B or 1 -> (B, C, H, W).
    A crop of another size than ``spec.size`` is taken to cover the same region. The blend mask is
    :func:`feather_mask` times ``mask`` (B or 1, 1, s, s) if given, warped like the crop: pixels
    outside the crop's footprint are returned unchanged bit for bit, fully masked pixels take the crop.
    """
    _check_image(original, "original")
    _check_image(crop, "crop")
    if tuple(original.shape[-2:]) != spec.original_hw:
        raise ValueError(
            f"original is {tuple(original.shape[-2:])} (H, W) but the crop spec was made for {spec.original_hw}"
        )
    if crop.shape[-1] != crop.shape[-2]:
        raise ValueError(f"crop must be square, got {tuple(crop.shape)}")
    if crop.shape[1] != original.shape[1]:
        raise ValueError(f"crop has {crop.shape[1]} channels but original has {original.shape[1]}")
    b = _broadcast_batch(original.shape[0], crop.shape[0], len(spec))
    s = crop.shape[-1]
    if s != spec.size:
        spec = spec.resized(s)
    crop = crop.to(device=original.device, dtype=original.dtype)
    blend = feather_mask(s, feather, original.device, original.dtype)
    if mask is not None:
        if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (s, s):
            raise ValueError(f"mask must have shape (B, 1, {s}, {s}), got {tuple(mask.shape)}")
        _broadcast_batch(b, mask.shape[0])
        blend = blend * mask.to(device=original.device, dtype=original.dtype).clamp(0, 1)
    inverse = spec.inverse_matrix()
    hw = spec.original_hw
    pasted = _warp(crop, inverse, hw, mode, "border")
    if mode == "bicubic":
        pasted = _clamp_to_range(pasted, crop)
    weight = _warp(blend, inverse, hw, "bilinear", "zeros").expand(b, -1, -1, -1)
    frames = original.expand(b, -1, -1, -1)
    mixed = frames * (1 - weight) + pasted * weight
    return torch.where(weight > 0, mixed, frames)
