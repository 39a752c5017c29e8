"""How well the detectors find faces placed at random in cluttered pictures (the detection test's data).

Every picture is built here: a subject -- scikit-image's astronaut (human) or chelsea (cat) photo, or a
held-out render of one of the synthetic domains cut out by its mask -- is scaled so its face is 10-60 %
of the canvas side, rolled by up to +-20 degrees and placed at a random position on a cluttered canvas
(procedural clutter and pieces of scikit-image's coffee photo). The truth moves with it: the face centre,
face size (see :func:`anytalk_core.detection.framing.face_frame`) and roll.

The photos' truths are hand-measured constants (:data:`PHOTO_TRUTH`; the astronaut's agrees with dlib's
68-point landmarks to 2 px); the renders' come from their landmarks.

Command line (prints recall, centre error / face size, size error, ms per picture for every domain)::

    OMP_NUM_THREADS=1 python -m anytalk_core.detection.evaluate [--pictures 20]
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import synthetic as syn
from . import detect_face
from .train_heads import _procedural, render_face_frame, rng_for

__all__ = ["PHOTO_TRUTH", "DOMAINS", "Placed", "placed_subjects", "evaluate_domain", "main"]

DOMAINS = ("astronaut", "chelsea", *syn.DOMAINS)


@dataclass(frozen=True)
class FaceTruth:
    """Face centre (x, y) px, face size px, roll degrees of a picture."""

    center: tuple[float, float]
    size: float
    angle: float


# Hand-measured on the original pictures (pixel centres at integers).
# astronaut (512 x 512): eye centres (203.5, 101.5) and (246.5, 104), nose tip (225, 127), mouth
# (223, 148); brows' top y 87, chin y 179, cheeks x 179..272 -> face size 93; eye line rolled 3 deg.
# chelsea (451 x 300, a close-up cut by the frame): eye centres (172, 115) and (315, 132), nose (262,
# 235), mouth (257, 255); the face runs from beyond the left edge (x ~ -10) to the right cheek (x ~ 390)
# and from the brows (y ~ 50) to below the bottom edge (y ~ 310) -> face size 400, centre (190, 180);
# eye line rolled 7 deg.
PHOTO_TRUTH = {
    "astronaut": FaceTruth((224.5, 133.0), 93.0, 3.0),
    "chelsea": FaceTruth((190.0, 180.0), 400.0, 7.0),
}


@dataclass
class Placed:
    """A built picture (3, S, S) and its truth."""

    image: torch.Tensor
    truth: FaceTruth


def _clutter(rng: np.random.Generator, size: int, coffee: torch.Tensor) -> torch.Tensor:
    canvas = _procedural(rng, 1, size)[0]
    for _ in range(int(rng.integers(1, 4))):  # pieces of a real photo
        h, w = coffee.shape[-2:]
        ph, pw = int(rng.integers(size // 6, size // 2)), int(rng.integers(size // 6, size // 2))
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        ty, tx = int(rng.integers(0, size - ph)), int(rng.integers(0, size - pw))
        canvas[:, ty:ty + ph, tx:tx + pw] = coffee[:, y0:y0 + ph, x0:x0 + pw]
    return canvas


def _place(subject: torch.Tensor, alpha: torch.Tensor, truth: FaceTruth, canvas: torch.Tensor,
           rng: np.random.Generator, face_range=(0.10, 0.60), roll_range=20.0) -> Placed:
    import kornia.geometry.transform as KT

    s = canvas.shape[-1]
    face = rng.uniform(*face_range) * s
    roll = rng.uniform(-roll_range, roll_range)
    k = face / truth.size
    target = rng.uniform(face / 2, s - face / 2, 2)
    c = torch.tensor([truth.center], dtype=torch.float64)
    m = KT.get_rotation_matrix2d(c, torch.tensor([roll], dtype=torch.float64),
                                 torch.tensor([[k, k]], dtype=torch.float64))
    m[0, :, 2] += torch.from_numpy(target) - c[0]
    src = subject[None].float()
    a = alpha[None].float()
    if k < 0.5:  # antialias before a strong reduction
        f = min(1.0, 2 * k)
        src = torch.nn.functional.interpolate(src, scale_factor=f, mode="bilinear", antialias=True)
        a = torch.nn.functional.interpolate(a, scale_factor=f, mode="bilinear", antialias=True)
        m[:, :, :2] /= f
    fg = KT.warp_affine(src, m.float(), (s, s), align_corners=True, padding_mode="zeros")[0]
    cover = KT.warp_affine(a, m.float(), (s, s), align_corners=True, padding_mode="zeros")[0]
    image = (cover * fg + (1 - cover) * canvas).clamp(0, 1)
    # kornia's positive angle turns the content counter-clockwise: the face's roll decreases by it.
    return Placed(image, FaceTruth((float(target[0]), float(target[1])), face, truth.angle - roll))


def _photo(name: str) -> torch.Tensor:
    import skimage.data as data

    return torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).permute(2, 0, 1).float() / 255


def placed_subjects(domain: str, n: int, seed: int = 0, canvas: int = 384) -> list[Placed]:
    """``n`` pictures of ``domain`` (a photo name or a synthetic domain) placed on cluttered canvases."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    rng = np.random.default_rng([0xA7D4, seed, DOMAINS.index(domain)])
    coffee = _photo("coffee")
    if domain in PHOTO_TRUTH:
        photo = _photo(domain)
        subjects = [(photo, torch.ones(1, *photo.shape[-2:]), PHOTO_TRUTH[domain])] * n
    else:  # held-out identities: the "check" split never seen in training
        ids = [syn.sample_identity(domain, rng_for(seed, "check", 7 + i)) for i in range(n)]
        pose = torch.from_numpy(np.stack([rng.uniform(-25, 25, n), rng.uniform(-12, 12, n), np.zeros(n),
                                          np.zeros(n), np.zeros(n), np.ones(n)], 1).astype(np.float32))
        out = syn.render_batch(ids, pose, None, 160)
        c, size, angle = render_face_frame(out.landmarks)
        subjects = [(out.images[i].permute(2, 0, 1), out.mask[i][None],
                     FaceTruth(tuple(c[i].tolist()), float(size[i]), float(angle[i]))) for i in range(n)]
    return [_place(img, a, t, _clutter(rng, canvas, coffee), rng) for img, a, t in subjects]


def evaluate_domain(domain: str, n: int = 12, seed: int = 0, detector: str | None = None) -> dict:
    """Recall, centre error (fraction of the face size) and size error (fraction) of ``detector``
    (default: ``faces`` for the astronaut, ``heads`` otherwise) on :func:`placed_subjects`."""
    detector = detector or ("faces" if domain == "astronaut" else "heads")
    pictures = placed_subjects(domain, n, seed)
    centre, size, times, found = [], [], [], 0
    for p in pictures:
        t0 = time.perf_counter()
        r = detect_face(p.image, detector)
        times.append(time.perf_counter() - t0)
        if r is None:
            centre.append(math.inf)
            size.append(math.inf)
            continue
        found += 1
        centre.append(math.dist(r.center, p.truth.center) / p.truth.size)
        size.append(abs(r.size / p.truth.size - 1))
    ok = [c <= 0.10 and s <= 0.15 for c, s in zip(centre, size)]
    finite = [c for c in centre if math.isfinite(c)]
    fs = [s for s in size if math.isfinite(s)]
    return {
        "domain": domain, "detector": detector, "pictures": n, "recall": found / n, "within_bar": sum(ok) / n,
        "centre_error_mean": float(np.mean(finite)) if finite else math.inf,
        "centre_error_max": float(np.max(finite)) if finite else math.inf,
        "size_error_mean": float(np.mean(fs)) if fs else math.inf,
        "size_error_max": float(np.max(fs)) if fs else math.inf,
        "ms_per_picture": 1000 * float(np.median(times)),
        "centre_errors": centre, "size_errors": size,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anytalk_core.detection.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pictures", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--domains", default=",".join(DOMAINS))
    args = ap.parse_args(argv)
    print(f"{'domain':10} {'detector':8} {'recall':>6} {'in bar':>6} {'centre err':>10} {'(max)':>6} "
          f"{'size err':>8} {'(max)':>6} {'ms/pic':>7}")
    for d in args.domains.split(","):
        r = evaluate_domain(d, args.pictures, args.seed)
        print(f"{d:10} {r['detector']:8} {r['recall']:6.2f} {r['within_bar']:6.2f} {r['centre_error_mean']:10.3f} "
              f"{r['centre_error_max']:6.3f} {r['size_error_mean']:8.3f} {r['size_error_max']:6.3f} "
              f"{r['ms_per_picture']:7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
