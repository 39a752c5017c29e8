"""Sample grids: one row per example, columns source | driving | generated | keypoints (PNG)."""
from __future__ import annotations

import colorsys
import os

import numpy as np
import torch

COLUMNS = ("source", "driving", "generated", "keypoints")


def keypoint_colours(k: int) -> torch.Tensor:
    return torch.tensor([colorsys.hsv_to_rgb(i / max(k, 1), 0.9, 1.0) for i in range(k)], dtype=torch.float32)


def draw_keypoints(image: torch.Tensor, kp: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """image (3, H, W) in 0..1, kp (K, >=2) in [-1, 1] (x, y) -> copy with a coloured dot per keypoint."""
    out = image.detach().float().cpu().clone()
    _, h, w = out.shape
    r = radius if radius is not None else max(1, round(min(h, w) / 64))
    colours = keypoint_colours(kp.shape[0])
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for i, p in enumerate(kp.detach().float().cpu()):
        x = (p[0] + 1) / 2 * (w - 1)
        y = (p[1] + 1) / 2 * (h - 1)
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        ring = (d2 <= (r + 1) ** 2)
        dot = d2 <= r ** 2
        out[:, ring] = 0.0
        out[:, dot] = colours[i].view(3, 1)
    return out


def sample_grid(source: torch.Tensor, driving: torch.Tensor, generated: torch.Tensor, kp_driving: torch.Tensor,
                max_rows: int = 4, border: int = 2) -> np.ndarray:
    """uint8 (rows*H, 4*W, 3) image: source | driving | generated | generated with the driving keypoints."""
    n = min(max_rows, source.shape[0])
    rows = []
    for i in range(n):
        cells = [source[i], driving[i], generated[i], draw_keypoints(generated[i], kp_driving[i])]
        cells = [torch.nn.functional.pad(c.detach().float().cpu().clamp(0, 1), (border,) * 4, value=1.0) for c in cells]
        rows.append(torch.cat(cells, dim=2))
    grid = torch.cat(rows, dim=1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(array: np.ndarray, path: str | os.PathLike) -> str:
    from PIL import Image

    from anytalk_core.io_utils import atomic_output, unique_path

    path = os.fspath(path)
    if os.path.exists(path):
        path = os.fspath(unique_path(path))
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
