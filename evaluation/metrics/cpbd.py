"""CPBD: cumulative probability of blur detection (Narvekar & Karam, IEEE TIP 2011), a no-reference
sharpness measure (higher is sharper).

The published algorithm, vectorised in numpy, with the choices of the reference Python port (the ``cpbd``
package, itself a port of the authors' MATLAB code), so that values agree with it:

1. Edge blocks: Canny edges (scikit-image defaults, on the grey image in 0..255 as float); a 64 x 64
   block is an edge block when more than 0.2 % of its pixels are edges. Only whole blocks count.
2. Edge widths (Marziliano et al.): Octave-style Sobel edges of the vertical-gradient filter
   ``[[1,0,-1],[2,0,-2],[1,0,-1]] / 8`` (squared response, threshold ``2 sqrt(mean)``, thinned to local
   maxima along rows or columns). At each such pixel whose gradient angle (``atan2(gy, gx)`` of
   ``np.gradient``, quantised to 45 degrees) is 0 or +-180, the width is the number of pixels over which
   the intensity keeps rising (or falling) on each side, each side at most 101.
3. Probability of blur detection per edge: ``1 - exp(-(w / w_JNB)^3.6)`` with the just-noticeable width
   ``w_JNB`` 5 for block contrast (max - min, truncated to an integer) up to 50 and 3 above.
4. CPBD is the fraction of edges whose probability, rounded to a percent, is at most 63 %.

Colour frames are converted to grey with the MATLAB ``rgb2gray`` weights (0.2989, 0.5870, 0.1140) in 0..255.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve
from skimage.feature import canny

__all__ = ["cpbd", "to_gray255"]

_BLOCK = 64
_EDGE_FRACTION = 0.002
_BETA = 3.6
_MAX_MARGIN = 100
_SOBEL = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0
_RGB2GRAY = np.array([0.2989, 0.5870, 0.1140])


def to_gray255(image: np.ndarray) -> np.ndarray:
    """An image (H, W), (H, W, 3) or (3, H, W), uint8 or float in 0..1 -> grey float64 (H, W) in 0..255.

    A float grey image (H, W) is taken as already in 0..255 when its maximum exceeds 1.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = np.moveaxis(a, 0, -1)
    scale = 1.0 if a.dtype == np.uint8 or (a.ndim == 2 and a.size and np.nanmax(a) > 1) else 255.0
    a = a.astype(np.float64) * scale
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a @ _RGB2GRAY
    if a.ndim != 2:
        raise ValueError(f"CPBD takes one grey (H, W) or RGB (H, W, 3) image, got shape {np.shape(image)}")
    return a


def _sobel_edges(image: np.ndarray) -> np.ndarray:
    """Octave ``edge(I, 'sobel')`` for vertical edges: thresholded, thinned squared response -> bool (H, W)."""
    strength = np.square(convolve(image, _SOBEL))
    strength[strength <= 2 * np.sqrt(strength.mean())] = 0
    padded_x = np.pad(strength, ((0, 0), (1, 1)))
    padded_y = np.pad(strength, ((1, 1), (0, 0)))
    along_x = (strength > padded_x[:, :-2]) & (strength > padded_x[:, 2:])
    along_y = (strength > padded_y[:-2]) & (strength > padded_y[2:])
    return along_x | along_y


def _run_left(steps: np.ndarray) -> np.ndarray:
    """For boolean steps (H, M): length of the run of True ending at each column (0 where False)."""
    idx = np.arange(steps.shape[1])
    last_false = np.maximum.accumulate(np.where(steps, -1, idx), axis=1)
    return idx - last_false


def _run_right(steps: np.ndarray) -> np.ndarray:
    """Length of the run of True starting at each column, going right."""
    return _run_left(steps[:, ::-1])[:, ::-1]


def _edge_widths(image: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano edge widths (H, W), 0 off the measured edges (see the module notes, step 2)."""
    h, w = image.shape
    widths = np.zeros((h, w))
    gy, gx = np.gradient(image)
    with np.errstate(divide="ignore", invalid="ignore"):
        angles = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), np.where(gy == np.pi / 2, 90.0, 0.0))
    if not angles.any() or w < 3:
        return widths
    quantized = 45 * np.round(angles / 45)
    rising = image[:, :-1] < image[:, 1:]   # pair j: I[j] < I[j + 1]
    falling = image[:, :-1] > image[:, 1:]
    inner = np.zeros((h, w), dtype=bool)
    inner[1:-1, 1:-1] = True
    for angle_mask, steps in (((quantized == 0), rising), ((np.abs(quantized) == 180), falling)):
        rows, cols = np.nonzero(edges & inner & angle_mask)
        if not rows.size:
            continue
        # the walk left of column c looks at pairs c-2, c-3, ...; the walk right at pairs c+1, c+2, ...
        left = _run_left(steps)[rows, np.maximum(cols - 2, 0)] * (cols >= 2)
        right = _run_right(steps)[rows, np.minimum(cols + 1, w - 2)] * (cols <= w - 3)
        widths[rows, cols] = np.minimum(left, _MAX_MARGIN) + np.minimum(right, _MAX_MARGIN) + 2
    return widths


def cpbd(image: np.ndarray) -> float:
    """CPBD sharpness of one image (grey (H, W) in 0..255, or RGB uint8 / float 0..1): a float in 0..1.

    Images smaller than one 64 x 64 block, or with no edge block, give 0.0 (as the reference).
    """
    gray = to_gray255(image)
    canny_edges = canny(gray)
    widths = _edge_widths(gray, _sobel_edges(gray))
    h, w = gray.shape
    nby, nbx = h // _BLOCK, w // _BLOCK
    buckets = []
    for i in range(nby):
        for j in range(nbx):
            rows = slice(i * _BLOCK, (i + 1) * _BLOCK)
            cols = slice(j * _BLOCK, (j + 1) * _BLOCK)
            if np.count_nonzero(canny_edges[rows, cols]) <= _BLOCK * _BLOCK * _EDGE_FRACTION:
                continue
            block_widths = widths[rows, cols]
            block_widths = block_widths[block_widths != 0]
            block = gray[rows, cols]
            contrast = int(block.max() - block.min())
            jnb = 5.0 if contrast <= 50 else 3.0
            probability = 1 - np.exp(-np.abs(block_widths / jnb) ** _BETA)
            buckets.append(np.round(probability * 100).astype(np.int64))
    if not buckets:
        return 0.0
    all_buckets = np.concatenate(buckets)
    if not all_buckets.size:
        return 0.0
    return float(np.count_nonzero(all_buckets <= 63) / all_buckets.size)
