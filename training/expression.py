"""The frozen expression encoder phi of the expression-consistency loss (SPEC §5).

phi is never a random network. It is either

* EmoNet (8-class AffectNet) loaded from the user's weights file — the authors' choice, pooled features; or
* :class:`ExpressionRegressor`, a small CNN the trainer first trains on the synthetic renderer's images
  against their ground-truth expression parameters (jaw open, smile, blinks, brows, gaze), validates on
  held-out renders (its error is logged and stored with its weights), and then freezes. The code it
  gives the loss is the 7 predicted expression values (``regressor_code = "params"``) or its pooled
  features (``"features"``).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import synthetic_source as syn
from .pretrained import WeightsError, freeze, load_emonet
from .settings import ExpressionSettings

REGRESSOR_FORMAT = "anytalk.expression_regressor"


CROP_CENTRE = (0.0, -0.03)  # normalised image coordinates of the face centre in renderer framing


class ExpressionRegressor(nn.Module):
    """Images (B, 3, H, W) in 0..1 -> expression parameters (B, 7).

    The face is taken from a fixed centred crop (``crop`` of the image size around :data:`CROP_CENTRE`,
    where talking-head crops and the renderer put the face), resized to ``size``; four stride-2
    convolutions keep a 4 x 4 map whose flattened layout lets the head tell eyes from mouth.
    """

    def __init__(self, width: int = 32, size: int = 64, crop: float = 0.5, outputs: int = syn.NUM_EXPRESSION):
        super().__init__()
        self.size, self.width, self.crop = size, width, crop
        w = width
        chans = [3, w, 2 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        cells = (size // 16) ** 2
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * cells, 8 * w), nn.ReLU())
        self.head = nn.Linear(8 * w, outputs)
        self.code = "params"

    def face(self, images: torch.Tensor) -> torch.Tensor:
        """The centred face crop at ``size`` (a no-op resize for renders made by :func:`render_expression_set`)."""
        if self.crop < 1:
            b = images.shape[0]
            c = torch.tensor(CROP_CENTRE, dtype=images.dtype, device=images.device)
            theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
            theta[:, 0, 0] = theta[:, 1, 1] = self.crop
            theta[:, :, 2] = c
            grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
            src = images
            if images.shape[-1] * self.crop > 2 * self.size:  # low-pass big inputs before sampling
                f = int(images.shape[-1] * self.crop // self.size)
                src = F.avg_pool2d(images, f)
            return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True)
        return images

    def features_of_face(self, face: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.body(face * 2 - 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_of_face(self.face(images))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images) if self.code == "params" else self.features(images)


class EmoNetCode(nn.Module):
    """EmoNet as phi: pooled features (default) or the 10 head outputs."""

    def __init__(self, emonet: nn.Module, code: str = "features"):
        super().__init__()
        self.emonet = emonet
        self.code = code

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.emonet(images) if self.code == "features" else self.emonet.logits(images)


# ------------------------------------------------------------------------------------------------
# Training the regressor on renders
# ------------------------------------------------------------------------------------------------

def render_expression_set(n: int, size: int, domains: list[str], seed: int, crop: float = 0.5,
                          pose_scale: float = 0.5, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """n renders of random identities, poses and expressions -> face crops (n, 3, size, size), expressions (n, 7).

    Rendered directly at the crop's framing: zoom 1/crop about :data:`CROP_CENTRE` (the renderer's scale
    multiplies about each identity's head origin, so the translation is corrected per identity), which is
    the crop :meth:`ExpressionRegressor.face` takes from a full frame. Poses are drawn at ``pose_scale``
    of the clip motion ranges (moderate head turns).
    """
    rng = np.random.default_rng([seed, 101])
    pose, expr = syn.random_still(rng, n)
    pose[:, :5] *= pose_scale
    zoom = 1.0 / crop
    idents = [syn.identity(domains[i % len(domains)], int(rng.integers(2**62))) for i in range(n)]
    tx = syn.POSE_FIELDS.index("tx")
    ty = syn.POSE_FIELDS.index("ty")
    sc = syn.POSE_FIELDS.index("scale")
    for i, ident in enumerate(idents):
        t0x, t0y = float(ident.params.get("tx0", 0.0)), float(ident.params.get("ty0", 0.0))
        pose[i, tx] = zoom * (pose[i, tx] + t0x - CROP_CENTRE[0]) - t0x
        pose[i, ty] = zoom * (pose[i, ty] + t0y - CROP_CENTRE[1]) - t0y
        pose[i, sc] = pose[i, sc] * zoom
    images = torch.empty(n, 3, size, size)
    for a in range(0, n, batch):
        b = min(n, a + batch)
        images[a:b] = syn.render(idents[a:b], pose[a:b], expr[a:b], size)
    return images, expr


def _augment(images: torch.Tensor, expr: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror (with the labels), brightness/contrast jitter and a random blur: generated frames are softer."""
    flip = torch.rand(images.shape[0], generator=g) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    expr = torch.where(flip.view(-1, 1), syn.mirror_expression(expr), expr)
    b = 1 + (torch.rand(images.shape[0], 1, 1, 1, generator=g) - 0.5) * 0.3
    c = 1 + (torch.rand(images.shape[0], 1, 1, 1, generator=g) - 0.5) * 0.3
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * c + mean) * b
    blur = torch.rand(images.shape[0], generator=g) < 0.5
    soft = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    images = torch.where(blur.view(-1, 1, 1, 1), soft, images)
    return images.clamp(0, 1), expr


def train_expression_regressor(cfg: dict, seed: int, device: torch.device, log=print) -> tuple[ExpressionRegressor, dict]:
    """Train phi on renders, report its held-out error; deterministic for a given seed on one device."""
    e = cfg
    size, width = int(e["regressor_size"]), int(e["regressor_width"])
    domains = list(e["regressor_domains"])
    syn.check_domains(domains, "expression.regressor_domains")
    t0 = time.time()
    n_train, n_val = int(e["regressor_train_images"]), int(e["regressor_val_images"])
    log(f"expression encoder: training the synthetic expression regressor on {n_train} renders "
        f"({', '.join(domains)}, {size} px), {int(e['regressor_steps'])} steps")
    crop = float(e["regressor_crop"])
    x_train, y_train = render_expression_set(n_train, size, domains, seed, crop)
    x_val, y_val = render_expression_set(n_val, size, domains, seed + 1_000_003, crop)
    torch.manual_seed(seed)
    net = ExpressionRegressor(width, size, crop).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=float(e["regressor_lr"]))
    steps = int(e["regressor_steps"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    g = torch.Generator().manual_seed(seed)
    bs = min(int(e["regressor_batch"]), n_train)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n_train, (bs,), generator=g)
        x, y = _augment(x_train[idx], y_train[idx], g)
        loss = F.mse_loss(net.head(net.features_of_face(x.to(device))), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net.head(net.features_of_face(x_val[a:a + 256].to(device))).cpu()
                          for a in range(0, n_val, 256)])
    mae = (pred - y_val).abs().mean(0)
    baseline = (y_val - y_train.mean(0)).abs().mean(0)  # predicting the training mean
    report = {
        "val_mae": {f: round(float(v), 4) for f, v in zip(syn.EXPRESSION_FIELDS, mae)},
        "val_mae_mean": round(float(mae.mean()), 4),
        "mean_predictor_mae": round(float(baseline.mean()), 4),
        "train_images": n_train, "val_images": n_val, "steps": steps, "size": size, "width": width, "crop": crop,
        "domains": domains, "seed": seed, "seconds": round(time.time() - t0, 1),
    }
    log(f"expression encoder: held-out MAE {report['val_mae_mean']:.3f} "
        f"(mean predictor {report['mean_predictor_mae']:.3f}) per field {report['val_mae']}")
    return freeze(net), report


def save_regressor(net: ExpressionRegressor, path: str | os.PathLike, report: dict) -> None:
    from anytalk_core.safetensors_io import write_tagged

    meta = {"size": str(net.size), "width": str(net.width), "crop": str(net.crop),
            "report": json.dumps(report, sort_keys=True)}
    write_tagged(path, net.state_dict(), REGRESSOR_FORMAT, meta, overwrite=True)


def load_regressor(path: str | os.PathLike) -> tuple[ExpressionRegressor, dict]:
    from anytalk_core.safetensors_io import read_tagged

    path = os.fspath(path)
    state, meta = read_tagged(path, REGRESSOR_FORMAT, "expression regressor weights file", WeightsError)
    net = ExpressionRegressor(int(meta["width"]), int(meta["size"]), float(meta.get("crop", "1.0")))
    from .pretrained import load_strict

    load_strict(net, state, path, "expression regressor")
    return freeze(net), json.loads(meta.get("report", "{}"))


def build_expression_encoder(config: dict, run_dir: Path, device: torch.device, log=print,
                             is_main: bool = True, barrier=None) -> tuple[nn.Module | None, dict]:
    """phi for the config (or None when the loss is off) and a description for logs and provenance.

    The stand-in regressor is trained once per run and stored in the run folder, so a resumed run uses
    the very same phi; ``expression.regressor_weights`` reuses one from another run.
    """
    e = ExpressionSettings.of(config)
    if e.weight == 0 or e.encoder == "none":
        return None, {"encoder": "none", "note": "expression consistency loss off (lambda_exp = 0): face-vid2vid training"}
    encoder = e.encoder
    if encoder == "auto":
        encoder = "emonet" if e.emonet_weights else "synthetic_regressor"
    if encoder == "emonet":
        if not e.emonet_weights:
            raise WeightsError("expression.encoder = 'emonet' needs expression.emonet_weights (an EmoNet 8-class "
                               "state dict such as emonet_8.pth)")
        net = load_emonet(e.emonet_weights)
        code = EmoNetCode(net, e.emonet_code).to(device)
        return freeze(code), {"encoder": "emonet", "weights": os.path.abspath(e.emonet_weights), "code": e.emonet_code}
    # the synthetic stand-in
    if e.regressor_weights:
        net, report = load_regressor(e.regressor_weights)
        source = os.path.abspath(e.regressor_weights)
    else:
        path = run_dir / "expression_regressor.safetensors"
        if not path.exists():
            if is_main:
                net, report = train_expression_regressor(config["expression"], int(config["seed"]), device, log)
                net.cpu()
                save_regressor(net, path, report)
            if barrier is not None:
                barrier()
        net, report = load_regressor(path)
        source = str(path)
    net.code = e.regressor_code
    return freeze(net.to(device)), {"encoder": "synthetic_regressor", "weights": source, "code": e.regressor_code,
                                    "validation": report}
