"""Train the shipped head detector (:mod:`anytalk_core.detection.heads`) on synthetic renders.

Data: a pool of renders of random identities of the three domains (cycled) at 64 px with random head
poses (yaw +-35, pitch +-20, roll +-15 degrees) and expressions, each with its exact landmarks and
foreground mask. Every training window (48 x 48) composites one render -- moved, scaled, rolled (+-25
degrees) and mirrored at random -- over a cluttered background: random crops of scikit-image's bundled
pictures (never ``astronaut``, ``chelsea``/``cat`` or ``coffee``: the tests use those) or procedural
clutter (noise at several scales, stripes, blobs, gradients). Positives hold a face of 22 px +-20 %
within 5 px of the window centre; negatives hold only background, a face far too small, too large or
off centre, or a head's featureless silhouette. Some faces keep the render's background inside a rectangle
that may cut into them (a close-up photo's edge) and some carry fur-like texture; colours, contrast, blur and
noise are jittered so the network does not learn the renderer's palette. All draws come from
``numpy.random.default_rng([0xA7D3, seed, split, index])``.

Command line::

    OMP_NUM_THREADS=1 python -m anytalk_core.detection.train_heads --out anytalk_core/detection/head_detector.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import synthetic as syn
from ..safetensors_io import write_tagged
from .framing import face_frame
from .heads import HEAD_DETECTOR_FORMAT, NOMINAL_FACE, NUM_POINTS, WINDOW, HeadNet, load_head_detector

TAG = 0xA7D3
SPLITS = {"train": 0, "val": 1, "check": 2}
RENDER_SIZE = 64
BACKGROUND_IMAGES = ("brick", "grass", "gravel", "rocket", "hubble_deep_field", "immunohistochemistry",
                     "retina", "colorwheel", "moon", "page", "text", "coins", "clock", "horse", "logo", "cell",
                     "binary_blobs", "checkerboard", "microaneurysms", "shepp_logan_phantom")

_N = syn.LANDMARK_INDEX
FACE_LANDMARKS = [i for i, n in enumerate(syn.LANDMARK_NAMES) if not n.startswith("ear") and n != "forehead"]


def face_points(landmarks: torch.Tensor) -> torch.Tensor:
    """The detector's four points (B, 4, 2) from renderer landmarks (B, 41, 2): right pupil, left pupil
    (image left, image right on an upright frontal face), nose tip, mouth centre."""
    lm = landmarks
    mouth = (lm[:, _N["lip_upper"]] + lm[:, _N["lip_lower"]]) / 2
    return torch.stack([lm[:, _N["pupil_r"]], lm[:, _N["pupil_l"]], lm[:, _N["nose_tip"]], mouth], dim=1)


def render_face_frame(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face centre (B, 2), size (B,), angle (B,) of renders from their landmarks (B, 41, 2)."""
    pts = face_points(landmarks)
    return face_frame(landmarks[:, FACE_LANDMARKS], pts[:, :2], pts[:, 3])


def rng_for(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([TAG, int(seed), SPLITS[split], int(index)])


def render_pool(n: int, seed: int, split: str, size: int = RENDER_SIZE, chunk: int = 64):
    """n renders (images (n, 3, S, S), masks (n, 1, S, S), landmarks (n, 41, 2), domains)."""
    imgs, masks, lms, doms = [], [], [], []
    for index in range(0, n, chunk):
        rng = rng_for(seed, split, 1000 + index // chunk)
        m = min(chunk, n - index)
        names = [syn.DOMAINS[(index + i) % 3] for i in range(m)]
        ids = [syn.sample_identity(d, rng) for d in names]
        pose = np.zeros((m, 6), np.float32)
        for j, r in enumerate((35, 20, 15, 0.1, 0.1, 0.15)):
            pose[:, j] = rng.uniform(-r, r, m)
        pose[:, 5] += 1
        expr = np.zeros((m, len(syn.EXPRESSION_FIELDS)), np.float32)
        for j, f in enumerate(syn.EXPRESSION_FIELDS):
            lo, hi = syn.EXPRESSION_RANGES[f]
            expr[:, j] = rng.uniform(lo, hi, m)
        out = syn.render_batch(ids, torch.from_numpy(pose), torch.from_numpy(expr), size)
        imgs.append(out.images.permute(0, 3, 1, 2).clamp(0, 1))
        masks.append(out.mask[:, None])
        lms.append(out.landmarks)
        doms += names
    return torch.cat(imgs), torch.cat(masks), torch.cat(lms), doms


def background_bank() -> list[torch.Tensor]:
    """scikit-image's bundled pictures (not the test photos) as float (3, H, W) tensors."""
    import skimage.data as data

    bank = []
    for name in BACKGROUND_IMAGES:
        try:
            # binary_blobs is drawn at random on each call: fix its seed (the 5th argument, ``seed`` before
            # scikit-image 0.23 and ``rng`` since) so every process trains on the same data
            a = np.asarray(data.binary_blobs(512, 0.1, 2, 0.5, 0) if name == "binary_blobs" else getattr(data, name)())
        except Exception as exc:  # a picture this scikit-image cannot provide offline (fetched data, a missing extra)
            warnings.warn(f"head-detector training: scikit-image picture {name!r} is unavailable ({exc}); "
                          "training without it", RuntimeWarning, stacklevel=2)
            continue
        a = a.astype(np.float32)
        a = a / (255.0 if a.max() > 1.5 else 1.0)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        bank.append(torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1))
    return bank


def _procedural(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """Clutter (n, 3, size, size): multi-scale coloured noise, stripes, discs and gradients."""
    out = torch.empty(n, 3, size, size)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    for i in range(n):
        kind = rng.integers(4)
        base = torch.from_numpy(rng.uniform(0, 1, (3, 1, 1)).astype(np.float32))
        if kind == 0:
            cells = int(rng.integers(2, 16))
            noise = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 3, cells, cells)).astype(np.float32))
            img = base + F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0]
        elif kind == 1:
            th = rng.uniform(0, math.pi)
            f = rng.uniform(0.1, 1.2)
            s = torch.sin((xx * math.cos(th) + yy * math.sin(th)) * f)
            col = torch.from_numpy(rng.uniform(-0.4, 0.4, (3, 1, 1)).astype(np.float32))
            img = base + col * s
        elif kind == 2:
            img = base.expand(3, size, size).clone()
            for _ in range(int(rng.integers(2, 9))):
                cx, cy = rng.uniform(0, size, 2)
                r = rng.uniform(2, size * 0.6)
                col = torch.from_numpy(rng.uniform(0, 1, (3, 1, 1)).astype(np.float32))
                if rng.uniform() < 0.5:
                    inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
                else:
                    inside = ((xx - cx).abs() < r) & ((yy - cy).abs() < rng.uniform(2, size * 0.5))
                img = torch.where(inside, col, img)
        else:
            g = torch.from_numpy(rng.uniform(-0.5, 0.5, (3, 1, 1)).astype(np.float32))
            img = base + g * (xx / size - 0.5) + torch.from_numpy(
                rng.uniform(-0.5, 0.5, (3, 1, 1)).astype(np.float32)) * (yy / size - 0.5)
        out[i] = img
    return (out + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.05), out.shape).astype(np.float32))).clamp(0, 1)


def backgrounds(rng: np.random.Generator, bank: list[torch.Tensor], n: int, size: int = WINDOW) -> torch.Tensor:
    """n background windows: 60 % random crops of bank pictures (random scale), 40 % procedural."""
    import kornia.geometry.transform as KT

    out = _procedural(rng, n, size)
    for i in range(n):
        if rng.uniform() < 0.6 and bank:
            pic = bank[int(rng.integers(len(bank)))]
            h, w = pic.shape[-2:]
            side = rng.uniform(size * 0.5, min(h, w))
            x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
            k = size / side
            m = torch.tensor([[[k, 0, -x0 * k], [0, k, -y0 * k]]], dtype=torch.float32)
            src = pic[None]
            if k < 0.5:
                src = F.interpolate(src, scale_factor=min(1.0, 2 * k), mode="bilinear", antialias=True)
                m[:, :, :2] /= min(1.0, 2 * k)
            out[i] = KT.warp_affine(src, m, (size, size), align_corners=True, padding_mode="reflection")[0]
    return out


def sample_backgrounds(windows: torch.Tensor, rng: np.random.Generator, n: int) -> torch.Tensor:
    """n windows drawn from a precomputed bank (N, 3, 48, 48), randomly mirrored and turned by quarters."""
    x = windows[torch.from_numpy(rng.integers(0, windows.shape[0], n))]
    x = torch.where(torch.from_numpy(rng.uniform(0, 1, n) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where(torch.from_numpy(rng.uniform(0, 1, n) < 0.5).view(-1, 1, 1, 1), x.transpose(-1, -2), x)


def make_batch(pool, bg_windows: torch.Tensor, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """Training windows (n, 3, 48, 48) with targets: label (n,) 1 face / 0 none / -1 ignore, reg (n, 11)
    (centre offset / 48, log size ratio, points / 48) and reg_weight (n,)."""
    import kornia.geometry.transform as KT

    images, masks, lms, _ = pool
    bg = sample_backgrounds(bg_windows, rng, n)
    idx = torch.from_numpy(rng.integers(0, images.shape[0], n))
    kind = rng.uniform(0, 1, n)  # < 0.45 positive, < 0.7 near/hard, < 0.85 far face, else background only
    size = np.where(kind < 0.45, NOMINAL_FACE * np.exp(rng.uniform(-0.2, 0.2, n)),
                    np.where(kind < 0.7, NOMINAL_FACE * np.exp(rng.uniform(-0.55, 0.55, n)),
                             NOMINAL_FACE * np.exp(np.where(rng.uniform(0, 1, n) < 0.4, -rng.uniform(0.6, 1.3, n),
                                                            rng.uniform(0.6, 2.1, n)))))
    off = np.where(kind[:, None] < 0.45, rng.uniform(-5, 5, (n, 2)),
                   np.where(kind[:, None] < 0.7, rng.uniform(-12, 12, (n, 2)),
                            rng.uniform(-0.7, 0.7, (n, 2)) * np.maximum(size, 30)[:, None]))
    roll = rng.uniform(-25, 25, n)
    flip = rng.uniform(0, 1, n) < 0.5
    lm = lms[idx].clone()
    img, msk = images[idx].clone(), masks[idx].clone()
    # mirror: image and landmarks; the point order stays "image-left eye first"
    s = RENDER_SIZE
    img[flip] = img[flip].flip(-1)
    msk[flip] = msk[flip].flip(-1)
    lm[flip, :, 0] = s - 1 - lm[flip, :, 0]
    c, fs, ang = render_face_frame(lm)
    k = torch.from_numpy(size).float() / fs
    target = torch.from_numpy((WINDOW - 1) / 2 + off).float()
    m = KT.get_rotation_matrix2d(c, torch.from_numpy(roll).float() + ang, torch.stack([k, k], 1))
    m[:, :, 2] += target - c
    fg = KT.warp_affine(img, m, (WINDOW, WINDOW), align_corners=True, padding_mode="border")
    alpha = KT.warp_affine(msk, m, (WINDOW, WINDOW), align_corners=True, padding_mode="zeros")
    # a quarter keep the render's own background inside its square footprint
    keep = torch.from_numpy(rng.uniform(0, 1, n) < 0.25)
    square = KT.warp_affine(torch.ones_like(msk), m, (WINDOW, WINDOW), align_corners=True, padding_mode="zeros")
    alpha = torch.where(keep.view(-1, 1, 1, 1), square, alpha)
    # a fifth are a photo's edge: the render's background inside a rectangle that may cut into the face
    # (a close-up whose face runs out of the picture, pasted on clutter); the targets stay the whole face
    cut = torch.from_numpy(rng.uniform(0, 1, n) < 0.2)
    alpha = torch.where(cut.view(-1, 1, 1, 1), KT.warp_affine(_cut_rectangles(c, fs, rng), m, (WINDOW, WINDOW),
                                                              align_corners=True, padding_mode="zeros"), alpha)
    # a tenth lose their features: the head's silhouette in its mean colour is not a face (a blob with ears
    # is framed by the foreground heuristic, not by this detector)
    face = torch.from_numpy(kind < 0.85)
    blank = torch.from_numpy(rng.uniform(0, 1, n) < 0.1) & face
    flat = (fg * alpha).sum((2, 3), keepdim=True) / alpha.sum((2, 3), keepdim=True).clamp_min(1e-3)
    fg = torch.where(blank.view(-1, 1, 1, 1), flat.expand_as(fg), fg)
    # a third get fur-, skin- or paint-like texture: real faces are not the renderer's smooth shading
    fg = _texture(fg, bg_windows, rng)
    x = torch.where(face.view(-1, 1, 1, 1), alpha * fg + (1 - alpha) * bg, bg)
    x = _jitter(x, rng)
    # targets from the warped landmarks
    lw = lm @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]
    pts = face_points(lw)
    pts[flip] = pts[flip][:, [1, 0, 2, 3]]
    cw, sw, _ = face_frame(lw[:, FACE_LANDMARKS], pts[:, :2], pts[:, 3])
    centre = (WINDOW - 1) / 2
    reg = torch.cat([(cw - centre) / WINDOW, torch.log(sw / NOMINAL_FACE)[:, None],
                     ((pts - centre) / WINDOW).reshape(n, -1)], dim=1)
    offmax = (cw - centre).abs().amax(1)
    ratio = torch.log(sw / NOMINAL_FACE).abs()
    label = torch.full((n,), -1.0)
    label[face & (offmax <= 5.5) & (ratio <= 0.22)] = 1.0
    label[~face | (offmax > 12) | (ratio > 0.6)] = 0.0
    label[blank] = 0.0
    reg_w = (face & ~blank & (offmax <= 14) & (ratio <= 0.6)).float()
    return {"x": x, "label": label, "reg": reg, "reg_w": reg_w}


def _cut_rectangles(center: torch.Tensor, size: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Masks (n, 1, S, S) in render pixels: a rectangle around each face (centre (n, 2), size (n,)) whose
    sides lie 0.3-1.4 half face sizes from the centre, clipped to the render."""
    n, s = center.shape[0], RENDER_SIZE
    reach = torch.from_numpy(rng.uniform(0.3, 1.4, (n, 4)).astype(np.float32)) * size[:, None] / 2
    x0, x1 = center[:, 0] - reach[:, 0], center[:, 0] + reach[:, 1]
    y0, y1 = center[:, 1] - reach[:, 2], center[:, 1] + reach[:, 3]
    ax = torch.arange(s, dtype=torch.float32)
    inside_x = (ax[None] >= x0[:, None]) & (ax[None] <= x1[:, None])  # (n, S)
    inside_y = (ax[None] >= y0[:, None]) & (ax[None] <= y1[:, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]


def _texture(fg: torch.Tensor, bank: torch.Tensor, rng: np.random.Generator, share: float = 0.35) -> torch.Tensor:
    """Modulate a ``share`` of the images (n, 3, 48, 48) by the grey detail of random background windows."""
    n = fg.shape[0]
    t = sample_backgrounds(bank, rng, n).mean(1, keepdim=True)
    t = t - t.mean((2, 3), keepdim=True)
    amount = torch.from_numpy(rng.uniform(0.3, 1.0, (n, 1, 1, 1)).astype(np.float32))
    amount = amount * torch.from_numpy(rng.uniform(0, 1, (n, 1, 1, 1)) < share).float()
    return (fg * (1 + amount * t)).clamp(0, 1)


def _jitter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    n = x.shape[0]
    gains = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 3, 1, 1)).astype(np.float32))
    x = x * gains
    gray = torch.from_numpy(rng.uniform(0, 1, n) < 0.2).view(-1, 1, 1, 1)
    x = torch.where(gray, x.mean(1, keepdim=True).expand_as(x), x)
    perm = torch.from_numpy(rng.uniform(0, 1, n) < 0.15).view(-1, 1, 1, 1)
    x = torch.where(perm, x[:, [2, 0, 1]], x)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32)) + mean
    x = x + torch.from_numpy(rng.uniform(-0.2, 0.2, (n, 1, 1, 1)).astype(np.float32))
    blur = rng.uniform(0, 1, n)
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k = (k1[:, None] * k1[None]).expand(3, 1, 5, 5).contiguous()
    soft = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=3)
    x = torch.where(torch.from_numpy(blur < 0.3).view(-1, 1, 1, 1), soft, x)
    x = x + torch.from_numpy(rng.uniform(0, 0.06, (n, 1, 1, 1)).astype(np.float32)) * torch.from_numpy(
        rng.normal(0, 1, x.shape).astype(np.float32))
    return x.clamp(0, 1)


def loss_fn(raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    raw = raw[:, :, 0, 0]
    lab = batch["label"]
    known = lab >= 0
    cls = F.binary_cross_entropy_with_logits(raw[known, 0], lab[known])
    w = batch["reg_w"]
    err = (raw[:, 1:] - batch["reg"]).abs()
    reg = (err[:, :3].sum(1) * 4 + err[:, 3:].sum(1)) * w
    reg = reg.sum() / w.sum().clamp_min(1)
    return cls + reg, {"cls": float(cls.detach()), "reg": float(reg.detach())}


def train(seed: int = 0, minutes: float = 22.0, batch: int = 192, pool_size: int = 6000, width: int = 16, bg_count: int = 6000,
          lr: float = 3e-3, log=print, init: HeadNet | None = None) -> tuple[HeadNet, dict]:
    t0, c0 = time.time(), time.process_time()
    torch.manual_seed(seed)
    log(f"rendering {pool_size} training heads at {RENDER_SIZE} px ...")
    pool = render_pool(pool_size, seed, "train")
    bank = background_bank()
    bg_windows = backgrounds(rng_for(seed, "train", 10**6), bank, bg_count)
    log(f"  {time.time() - t0:.0f} s; {len(bank)} background pictures, {bg_count} background windows")
    net = HeadNet(width) if init is None else init
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    budget = minutes * 60 - (time.time() - t0)
    step, last = 0, time.time()
    start = time.time()
    net.train()
    while True:
        frac = (time.time() - start) / budget
        if frac >= 1:
            break
        for g in opt.param_groups:  # warm-up then cosine by wall time
            g["lr"] = lr * min(1.0, frac / 0.05) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        data = make_batch(pool, bg_windows, rng_for(seed, "train", step), batch)
        loss, parts = loss_fn(net(data["x"]), data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if time.time() - last > 60:
            last = time.time()
            log(f"  step {step} ({frac:.0%}) loss {float(loss.detach()):.3f} cls {parts['cls']:.3f} "
                f"reg {parts['reg']:.3f}")
    net.eval()
    report = {"seed": seed, "steps": step, "batch": batch, "pool": pool_size, "render_size": RENDER_SIZE,
              "wall_s": round(time.time() - t0), "cpu_s": round(time.process_time() - c0),
              "threads": torch.get_num_threads(), "validation": validate(net, seed)}
    log(json.dumps(report["validation"]))
    return net, report


@torch.no_grad()
def validate(net: HeadNet, seed: int = 0, n: int = 768) -> dict:
    """Window-level figures on held-out renders and backgrounds: accuracy, centre / size / point errors."""
    pool = render_pool(min(n, 300), seed, "val")
    bank = background_bank()
    data = make_batch(pool, backgrounds(rng_for(seed, "val", 10**6), bank, n), rng_for(seed, "val", 0), n)
    raw = net(data["x"])[:, :, 0, 0]
    lab = data["label"]
    pred = raw[:, 0] > 0
    pos, neg = lab == 1, lab == 0
    w = data["reg_w"] > 0
    err = (raw[:, 1:] - data["reg"]).abs()
    return {
        "recall": round(float(pred[pos].float().mean()), 4),
        "false_positive_rate": round(float(pred[neg].float().mean()), 4),
        "centre_error_px": round(float(err[w, :2].norm(dim=1).mean() * WINDOW), 3),
        "size_error_pct": round(float((err[w, 2].exp() - 1).mean() * 100), 2),
        "point_error_px": round(float(err[w, 3:].reshape(-1, NUM_POINTS, 2).norm(dim=-1).mean() * WINDOW), 3),
    }


def save(net: HeadNet, path: str | os.PathLike, report: dict) -> Path:
    """Write the weights (float32) with config and report as metadata, atomically, replacing ``path``."""
    meta = {"config": json.dumps({"width": net.width}), "report": json.dumps(report)}
    state = {k: v.float() for k, v in net.state_dict().items()}
    return write_tagged(path, state, HEAD_DETECTOR_FORMAT, meta, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anytalk_core.detection.train_heads", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=22.0)
    ap.add_argument("--batch", type=int, default=192)
    ap.add_argument("--pool", type=int, default=6000)
    ap.add_argument("--init", help="continue training these weights (a second stage)")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args(argv)
    if Path(args.out).exists():
        print(f"{args.out} exists; not overwriting", file=sys.stderr)
        return 2
    init = None
    if args.init:
        init = load_head_detector(args.init)
    net, report = train(args.seed, args.minutes, args.batch, args.pool, lr=args.lr,
                        log=lambda s: print(s, flush=True), init=init)
    if init is not None:
        report["previous_stages"] = [*init.report.get("previous_stages", []), {k: v for k, v in init.report.items() if k != "previous_stages"}]
    save(net, args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
