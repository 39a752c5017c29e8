"""Face detection and framing: conventions by hand, rotated crops that paste back exactly, and the
detectors finding real and synthetic faces placed at random on cluttered canvases."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from anytalk_core import synthetic as syn
from anytalk_core.crop import apply_crop, crop_auto, crop_auto_with_report, framing_crop, paste_back
from anytalk_core.detection import (
    FACES_EXTRA, FRAMINGS, DetectionReport, MissingExtraError, detect_face, face_frame, faces_available,
)
from anytalk_core.detection.evaluate import PHOTO_TRUTH, evaluate_domain
from anytalk_core.detection.heads import HEAD_DETECTOR_PATH, HeadNet, load_head_detector
from anytalk_core.detection.train_heads import render_face_frame


def _to_crop(spec, x, y, index=0):
    m = spec.matrix[index]
    return (float(m[0, 0] * x + m[0, 1] * y + m[0, 2]), float(m[1, 0] * x + m[1, 1] * y + m[1, 2]))


def _to_frame(spec, u, v, index=0):
    m = spec.inverse_matrix()[index]
    return (float(m[0, 0] * u + m[0, 1] * v + m[0, 2]), float(m[1, 0] * u + m[1, 1] * v + m[1, 2]))


def _face(center=(100.0, 80.0), size=40.0, roll=0.0):
    """Landmarks of a square face (B=1): contour corners, eyes, mouth, rolled clockwise by ``roll`` degrees."""
    a = math.radians(roll)
    ux, uy = torch.tensor([math.cos(a), math.sin(a)]), torch.tensor([-math.sin(a), math.cos(a)])
    c = torch.tensor(center)
    local = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.2, -0.15), (0.2, -0.15), (0.0, 0.25)]
    pts = torch.stack([c + size * (x * ux + y * uy) for x, y in local])[None]
    return pts, pts[:, 4:6], pts[:, 6]


@pytest.mark.parametrize("roll", [0.0, 17.0, -30.0])
def test_face_frame_reads_centre_size_and_roll(roll):
    pts, eyes, mouth = _face(roll=roll)
    center, size, angle = face_frame(pts, eyes, mouth)
    assert center[0].tolist() == pytest.approx([100.0, 80.0], abs=1e-4)
    assert float(size[0]) == pytest.approx(40.0, abs=1e-4)
    assert float(angle[0]) == pytest.approx(roll, abs=1e-4)


@pytest.mark.parametrize("roll", [0.0, 12.0, -20.0])
def test_liveportrait_framing_levels_the_eyes_and_follows_its_config(roll):
    pts, eyes, mouth = _face(roll=roll)
    center, size, angle = face_frame(pts, eyes, mouth)
    spec = framing_crop((200, 240), center, size, angle, 512, "liveportrait", "source")
    (ex1, ey1), (ex2, ey2) = (_to_crop(spec, *eyes[0, i].tolist()) for i in range(2))
    assert ey1 == pytest.approx(ey2, abs=1e-4) and ex1 < ex2  # eye line level, left eye on the left
    # side = 2.3 x face size; the square moves up (along the face axis) by 0.125 of its side
    side = math.dist(_to_frame(spec, -0.5, -0.5), _to_frame(spec, 511.5, -0.5))
    assert side == pytest.approx(2.3 * 40.0, rel=1e-6)
    u, v = _to_crop(spec, 100.0, 80.0)
    assert (u, v) == pytest.approx((255.5, 255.5 + 0.125 * 512), abs=1e-3)
    drv = framing_crop((200, 240), center, size, angle, 512, "liveportrait", "driving")
    assert _to_crop(drv, 100.0, 80.0) == pytest.approx((255.5, 255.5 + 0.1 * 512), abs=1e-3)
    fv = framing_crop((200, 240), center, size, angle, 256, "face_vid2vid")
    assert _to_crop(fv, 100.0, 80.0) == pytest.approx((127.5, 127.5), abs=1e-3)
    assert float(fv.matrix[0, 0, 1]) == 0.0  # face-vid2vid crops stay upright
    with pytest.raises(ValueError, match="unknown framing family"):
        framing_crop((200, 240), center, size, angle, 256, "sadtalker")


def test_anytalk_framing_matches_the_renders():
    """Our convention reproduces the framing of the renders AnyTalk checkpoints are trained on: on
    average over the three domains, and within 12 % (side) and 5 % (centre) for each."""
    rng = np.random.default_rng(5)
    all_sides = []
    for domain in syn.DOMAINS:
        ids = [syn.sample_identity(domain, rng) for _ in range(8)]
        out = syn.render_batch(ids, None, None, 64)
        c, s, a = render_face_frame(out.landmarks)
        spec = framing_crop((64, 64), c, s, a, 64, "anytalk")
        centres = torch.tensor([_to_frame(spec, 31.5, 31.5, i) for i in range(8)])
        sides = torch.tensor([math.dist(_to_frame(spec, -0.5, -0.5, i), _to_frame(spec, 63.5, -0.5, i))
                              for i in range(8)]) / 64
        assert (sides.mean() - 1).abs() < 0.12, domain
        assert (centres - 31.5).norm(dim=1).mean() / 64 < 0.05, domain
        all_sides.append(sides)
    assert (torch.cat(all_sides).mean() - 1).abs() < 0.03


def test_rotated_crop_pastes_back_exactly():
    yy, xx = torch.meshgrid(torch.arange(120.0), torch.arange(160.0), indexing="ij")
    image = torch.stack([0.5 + 0.4 * torch.sin(xx / 13), 0.5 + 0.4 * torch.cos(yy / 11),
                         0.5 + 0.3 * torch.sin((xx + yy) / 17)])[None].double()
    pts, eyes, mouth = _face((80.0, 60.0), 30.0, 18.0)
    center, size, angle = face_frame(pts, eyes, mouth)
    spec = framing_crop((120, 160), center, size, angle, 96, "liveportrait")
    ident = spec.matrix[0] @ torch.cat([spec.inverse_matrix()[0], torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    assert torch.allclose(ident, torch.eye(3, dtype=torch.float64)[:2], atol=1e-12)
    crop = apply_crop(image, spec, mode="bilinear")
    back = paste_back(image, crop, spec, feather=0.0, mode="bilinear")
    # inside the footprint (away from its edge) the crop's content lands where it came from
    inside = torch.zeros(120, 160, dtype=torch.bool)
    for y in range(120):
        for x in range(160):
            u, v = _to_crop(spec, x, y)
            inside[y, x] = 2 <= u <= 93 and 2 <= v <= 93
    assert inside.sum() > 2000
    assert (back - image)[..., inside].abs().max() < 2e-3
    assert torch.equal(back[..., ~inside & ~_near_footprint(spec)], image[..., ~inside & ~_near_footprint(spec)])


def _near_footprint(spec):
    m = torch.zeros(120, 160, dtype=torch.bool)
    for y in range(120):
        for x in range(160):
            u, v = _to_crop(spec, x, y)
            m[y, x] = -1.5 <= u <= 96.5 and -1.5 <= v <= 96.5
    return m


def test_head_detector_ships_small_and_loads():
    assert HEAD_DETECTOR_PATH.is_file() and HEAD_DETECTOR_PATH.stat().st_size < 2_000_000
    net = load_head_detector()
    assert isinstance(net, HeadNet) and net.report["steps"] > 0
    # one output cell per 8 pixels, window 48
    assert net(torch.rand(1, 3, 48, 48)).shape == (1, 12, 1, 1)
    assert net(torch.rand(1, 3, 48 + 8 * 5, 48 + 8 * 3)).shape == (1, 12, 6, 4)


def test_faces_backend_names_the_extra_when_missing(monkeypatch):
    import anytalk_core.detection as det
    import anytalk_core.detection.faces as faces

    monkeypatch.setattr(faces, "faces_available", lambda: False)
    monkeypatch.setattr(det, "faces_available", lambda: False)
    image = torch.rand(1, 3, 64, 64)
    with pytest.raises(MissingExtraError, match=r'pip install "comfyui-anytalk\[faces\]"'):
        crop_auto(image, 32, backend="faces")
    # auto still frames the picture, and says which detector ran and why the human one did not
    spec, reports = crop_auto_with_report(image, 32, backend="auto")
    assert len(spec) == 1 and reports[0].detector in ("heads", "foreground", "center")
    assert FACES_EXTRA in reports[0].describe()


def test_crop_auto_reports_every_frame_and_rejects_unknown_backends():
    plain = torch.full((2, 3, 100, 180), 0.4)
    spec = crop_auto(plain, 64, backend="auto")
    assert len(spec.reports) == 2 and all(isinstance(r, DetectionReport) for r in spec.reports)
    assert spec.reports[0].detector == "center" and spec.reports[0].describe().startswith("framed by the centre")
    with pytest.raises(ValueError, match="unknown crop backend 'mediapipe'"):
        crop_auto(plain, 64, backend="mediapipe")


# Pictures built per domain (face 10-60 % of a cluttered 384 px canvas, rolled +-20 deg) and the share
# that must meet the bar (centre within 10 % of the face size, size within 15 %). The shipped head
# detector (84 CPU-minutes of training) does not meet it on the real cat photo (8-21 % of placements) nor
# on every animal render of every seed (96-100 %): those domains have a floor here and the full bar as an
# expected failure below.
PICTURES = 6
BAR_FLOOR = {"astronaut": 1.0, "human": 1.0, "cg_human": 1.0, "animal": 0.8, "chelsea": 0.0}


@functools.lru_cache(maxsize=None)
def _measured(domain: str) -> dict:
    return evaluate_domain(domain, PICTURES, seed=1)


def _summary(r: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if not k.endswith("errors")}


@pytest.mark.skipif(not faces_available(), reason=f"the human detector needs dlib: {FACES_EXTRA}")
def test_human_detector_finds_the_astronaut_anywhere():
    """Real photo, face 10-60 % of a cluttered canvas, rolled +-20 deg: every picture within the bar."""
    r = _measured("astronaut")
    assert r["detector"] == "faces" and r["recall"] == 1.0 and r["within_bar"] == 1.0, _summary(r)


@pytest.mark.parametrize("domain", ["chelsea", "human", "cg_human", "animal"])
def test_head_detector_finds_faces_anywhere(domain):
    r = _measured(domain)
    assert r["detector"] == "heads" and r["recall"] == 1.0, _summary(r)
    assert r["within_bar"] >= BAR_FLOOR[domain], _summary(r)


@pytest.mark.xfail(reason="the head detector misses the bar on most placements of the real cat photo and on a few "
                          "animal renders", strict=False)
@pytest.mark.parametrize("domain", ["chelsea", "animal"])
def test_head_detector_meets_the_bar_everywhere(domain):
    r = _measured(domain)
    assert r["within_bar"] == 1.0, _summary(r)


def test_auto_crop_frames_the_astronaut_head():
    from anytalk_core.detection.evaluate import _photo

    image = _photo("astronaut")[None]
    spec, reports = crop_auto_with_report(image, 256, backend="auto", family="liveportrait")
    truth = PHOTO_TRUTH["astronaut"]
    assert reports[0].detector in ("faces", "heads")
    assert math.dist(reports[0].center, truth.center) < 0.1 * truth.size
    side = math.dist(_to_frame(spec, -0.5, -0.5), _to_frame(spec, 255.5, -0.5))
    assert side == pytest.approx(2.3 * truth.size, rel=0.15)


def test_head_detector_training_windows_are_a_function_of_the_seed():
    """Two builds of the training data (background pictures included) give the same windows bit for bit."""
    from anytalk_core.detection.train_heads import background_bank, backgrounds, make_batch, render_pool, rng_for

    pool = render_pool(6, 0, "train")

    def batch():
        bg = backgrounds(rng_for(0, "train", 10**6), background_bank(), 24)
        return make_batch(pool, bg, rng_for(0, "train", 1), 32)

    first, second = batch(), batch()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert set(first["label"].tolist()) <= {-1.0, 0.0, 1.0}
