"""Driving videos tracked, and auto crops framed by the loaded checkpoint's family and role.

The clips are built here: a synthetic head (turning, nodding, talking) pasted into a wider canvas at a position
that drifts across 35 % of its width; the renderer's landmarks say where the face truly is in every frame.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from anytalk_core import synthetic as syn
from anytalk_core.crop import apply_crop, crop_auto, crop_squares, square_crop
from anytalk_core.detection import FRAMINGS
from anytalk_core.detection.train_heads import render_face_frame
from anytalk_core.checkpoints import load_model
from anytalk_core.engine import Engine, EngineConfig
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.stages import crop_spec, cropped_frames, framing_family, track_head

N, RENDER, H, W, CROP = 30, 96, 128, 224, 64
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def drifting_clip(drift: float = 1.0):
    """Frames (N, 3, H, W), the face centre in each (N, 2) px, and the same head's centre without drift (N, 2);
    ``drift`` 0 keeps the head in place (its own turning, nodding and talking only)."""
    rng = np.random.default_rng(3)
    identity = syn.sample_identity("animal", rng)
    t = torch.arange(N, dtype=torch.float32) / 25
    pose = torch.zeros(N, 6)
    pose[:, 0] = 15 * torch.sin(2 * np.pi * 0.7 * t)  # yaw
    pose[:, 1] = 8 * torch.sin(2 * np.pi * 0.5 * t + 1)  # pitch
    pose[:, 5] = 1
    expression = torch.zeros(N, 7)
    expression[:, 0] = 0.5 + 0.5 * torch.sin(2 * np.pi * 1.3 * t)  # jaw
    out = syn.render_batch(identity, pose, expression, RENDER)
    own, _, _ = render_face_frame(out.landmarks)
    x0 = np.round(10 + drift * 0.35 * W * np.arange(N) / (N - 1)).astype(int)
    y0 = np.round(16 + drift * 6 * np.sin(np.arange(N) / 5)).astype(int)
    frames = torch.empty(N, 3, H, W)
    for i in range(N):
        canvas = torch.stack([torch.full((H, W), 0.45), torch.linspace(0.3, 0.7, W).expand(H, W),
                              torch.linspace(0.6, 0.4, H)[:, None].expand(H, W)])
        img, mask = out.images[i].permute(2, 0, 1), out.mask[i][None]
        patch = canvas[:, y0[i]:y0[i] + RENDER, x0[i]:x0[i] + RENDER]
        canvas[:, y0[i]:y0[i] + RENDER, x0[i]:x0[i] + RENDER] = mask * img + (1 - mask) * patch
        frames[i] = canvas
    truth = own.double() + torch.from_numpy(np.stack([x0, y0], 1)).double()
    return frames, truth, own.double()


@pytest.fixture(scope="module")
def clip():
    return drifting_clip()


def in_crop(spec, points):
    """Points (N, 2) in frame pixels -> their place in each frame's crop, as a fraction of the crop (N, 2)."""
    m = spec.matrix.expand(points.shape[0], -1, -1)
    return torch.einsum("bij,bj->bi", m, torch.cat([points, torch.ones(len(points), 1, dtype=points.dtype)], 1))


@pytest.fixture(scope="module")
def tracked(clip):
    frames, _, _ = clip
    return track_head(iter(frames.split(7)), CROP, every=5, fps=25.0)


def test_tracked_crop_follows_the_head_where_the_first_frame_crop_loses_it(clip, tracked):
    frames, truth, _ = clip
    assert len(tracked) == N and tracked.keys == (0, 5, 10, 15, 20, 25, 29) and not tracked.missed
    framing = FRAMINGS["anytalk"]["driving"]
    expected = torch.tensor([(CROP - 1) / 2, (CROP - 1) / 2 - framing.vy_ratio * CROP], dtype=torch.float64)
    off = (in_crop(tracked.spec(CROP), truth) - expected).norm(dim=1) / CROP
    assert off.max() < 0.1, off  # the face centre stays where the framing puts it, within 10 % of the crop
    first = crop_auto(frames[:1], CROP, family="anytalk", role="driving")
    lost = (in_crop(first, truth) - expected).norm(dim=1) / CROP
    assert lost.max() > 0.5  # the first frame's square: the face centre ends up outside the crop
    # the squares are what the crop shows: cropping chunk by chunk uses each frame's own square
    crops = torch.cat(list(cropped_frames(iter(frames.split(4)), tracked.spec(CROP))))
    assert crops.shape == (N, 3, CROP, CROP)
    assert torch.equal(crops[17:18], apply_crop(frames[17:18], tracked.spec(CROP).select(17)))


def test_relative_motion_has_no_jump_where_the_crop_moves(clip, tracked):
    """What relative transfer adds to the portrait frame by frame is the change of the head's place in the crop
    (the motion estimator reads it as head translation). Tracking must add no step to it: every frame-to-frame
    change stays within the head's own largest move (the same renders without drift, at the crop's scale) plus
    1 % of the crop. A crop that jumps to each new detection (no interpolation) breaks this at the jumps."""
    frames, truth, own = clip
    side = float(tracked.sides.mean())
    own_step = (own.diff(dim=0).norm(dim=1) / side).max()
    place = in_crop(tracked.spec(CROP), truth) / CROP
    step = place.diff(dim=0).norm(dim=1)
    assert step.max() <= own_step + 0.01, (step.max(), own_step)

    keys = list(tracked.keys)
    held = torch.tensor([max(k for k in keys if k <= i) for i in range(N)])  # each detection's square, held
    raw = track_head(iter(frames.split(7)), CROP, every=5, smoothing=0.0)
    jumpy = square_crop((H, W), raw.centers[held], raw.sides[held], CROP, raw.angles[held])
    jumps = (in_crop(jumpy, truth) / CROP).diff(dim=0).norm(dim=1)
    assert jumps.max() > own_step + 0.05  # the criterion sees a crop that jumps


def test_a_trained_model_reads_no_jump_from_tracked_crops(clip, tracked):
    """A checkpoint trained on the renders at the crops' 64 px (the 64 px demo the 128 px one started from; the
    128 px demo reads these 64 px crops upsampled and hardly sees any translation) reads the head's translation
    from the crops: tracked,
    its frame-to-frame change stays within that of the same renders without drift (one square) plus 1 % of the
    crop (0.02 in the model's -1..1 units); a crop that jumps to each detection gives steps several times that."""
    frames, _, _ = clip
    still, _, _ = drifting_clip(drift=0.0)
    trained_64px = REPO_ROOT / "assets" / "demo" / "training_state" / "demo128_base.safetensors"
    engine = Engine(load_model(trained_64px), EngineConfig(device="cpu"))

    def steps(spec, video):
        motion = engine.estimate_motion(cropped_frames(iter(video.split(8)), spec), total=N, fps=25.0)
        return motion.translation[:, :2].diff(dim=0).norm(dim=1)

    own = steps(crop_auto(still[:1], CROP), still).max()
    assert steps(tracked.spec(CROP), frames).max() <= own + 0.02
    raw = track_head(iter(frames.split(7)), CROP, every=5, smoothing=0.0)
    held = torch.tensor([max(k for k in tracked.keys if k <= i) for i in range(N)])
    jumpy = square_crop((H, W), raw.centers[held], raw.sides[held], CROP, raw.angles[held])
    assert steps(jumpy, frames).max() > own + 0.1


def test_tracking_is_the_same_whatever_the_chunks_and_smoothing_is_zero_lag(clip, tracked):
    frames, _, _ = clip
    again = track_head((f[None] for f in frames), CROP, every=5, fps=25.0)
    assert torch.equal(again.centers, tracked.centers) and torch.equal(again.sides, tracked.sides)
    raw = track_head(iter(frames.split(7)), CROP, every=5, smoothing=0.0)
    # interpolated linearly between detections: at a detection frame the square is the detection's
    det, _, _ = crop_squares(crop_auto(frames[10:11], CROP, family="anytalk", role="driving"))
    assert torch.allclose(raw.centers[10], det[0], atol=1e-6)
    # smoothing removes jitter, not the drift: no lag behind the head over the clip
    assert (tracked.centers[:, 0] - raw.centers[:, 0]).mean().abs() < 1.0


def test_a_frame_without_a_head_keeps_the_last_square(clip):
    frames, _, _ = clip
    blank = frames.clone()
    blank[8:13] = blank[8:13, :, :, :1].expand(-1, -1, -1, W).clone()  # frames 8-12: the background only
    track = track_head(iter(blank.split(5)), CROP, every=5, smoothing=0.0)
    assert track.missed == (10,)
    assert torch.equal(track.centers[10], track.centers[5]) and torch.equal(track.sides[10], track.sides[5])
    assert "nothing found on frame(s) 10: each kept the last square found" in track.describe()
    empty = track_head(iter(frames[:6, :, :, :1].expand(-1, -1, -1, W).split(3)), CROP, every=5)
    assert empty.missed == (0, 5) and "no head found on any of the 2 frames" in empty.describe()
    assert torch.equal(empty.centers[0], empty.centers[-1])


def test_cli_default_is_the_library_default():
    from anytalk_app.cli import build_parser

    from anytalk_core.stages import TRACK_EVERY

    args = build_parser().parse_args(["animate", "--source", "s.png", "--checkpoint", "c", "--out", "o.mp4"])
    assert args.track_every == TRACK_EVERY and args.driving_crop == "full"


def test_tracking_inputs_are_checked():
    frames = torch.rand(3, 3, 32, 32)
    for bad in (0, 251, 2.5, True):
        with pytest.raises(ValueError, match="track every must be a whole number"):
            track_head(iter([frames]), CROP, every=bad)
    with pytest.raises(ValueError, match="no driving frames"):
        track_head(iter([]), CROP)
    with pytest.raises(ValueError, match="change size"):
        track_head(iter([frames, torch.rand(1, 3, 40, 32)]), CROP)
    with pytest.raises(ValueError, match="driving crop"):
        crop_spec(frames[:1], "tracked", CROP)
    from anytalk_core.pipeline import AnimateOptions

    assert AnimateOptions(driving_crop="tracked", track_every=1).driving_crop == "tracked"
    with pytest.raises(ValueError, match="^crop must be full, auto or X,Y,W,H"):
        AnimateOptions(crop="tracked")  # a portrait is one picture: nothing to track
    with pytest.raises(ValueError, match="driving crop must be full, auto, tracked or X,Y,W,H"):
        AnimateOptions(driving_crop="follow")
    with pytest.raises(ValueError, match="track every must be a whole number of frames from 1 to 250"):
        AnimateOptions(driving_crop="tracked", track_every=0)


# --------------------------------------------------------------------------------------------------
# Framing by the loaded checkpoint's family and the role
# --------------------------------------------------------------------------------------------------

def tiny_lp():
    from test_expression_edit import tiny_liveportrait

    return tiny_liveportrait()


def portrait_image():
    identity = syn.sample_identity("human", np.random.default_rng(11))
    out = syn.render_batch(identity, None, None, 96)
    canvas = torch.full((1, 3, 160, 200), 0.5)
    canvas[0, :, 30:126, 60:156] = out.images[0].permute(2, 0, 1)
    return canvas


def test_framing_family_follows_the_checkpoint():
    fv = build_model(tiny_config(with_discriminator=False))
    assert framing_family(fv) == "face_vid2vid"
    fv.provenance = {"trainer": "anytalk-train", "step": 10}
    assert framing_family(fv) == "anytalk"
    assert framing_family(tiny_lp()) == "liveportrait"


def test_source_and_driving_framing_per_family_through_the_stage():
    image = portrait_image()
    sides = {}
    for family in ("liveportrait", "face_vid2vid", "anytalk"):
        for role in ("source", "driving"):
            sides[family, role] = float(crop_squares(crop_spec(image, "auto", 64, family=family, role=role))[1][0])
    for (family, role), side in sides.items():
        assert side / sides["anytalk", "source"] == pytest.approx(
            FRAMINGS[family][role].scale / FRAMINGS["anytalk"]["source"].scale, rel=1e-9)
    assert sides["liveportrait", "driving"] < sides["liveportrait", "source"]


def test_cli_frames_a_liveportrait_source_unlike_a_face_vid2vid_one(tmp_path, capsys):
    from anytalk_app.cli import main
    from anytalk_core.checkpoints import save_checkpoint
    from anytalk_core.media import probe_video, save_image, write_video

    save_image(portrait_image()[0].permute(1, 2, 0), tmp_path / "source.png")
    frames = _small_drift()
    write_video(tmp_path / "driving.mp4", frames, fps=25)
    save_checkpoint(tiny_lp(), tmp_path / "lp.safetensors")
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), tmp_path / "fv.safetensors")
    lines, sides = {}, {}
    for name in ("lp", "fv"):
        out = tmp_path / f"{name}.mp4"
        assert main(["animate", "--source", str(tmp_path / "source.png"), "--driving", str(tmp_path / "driving.mp4"),
                     "--checkpoint", str(tmp_path / f"{name}.safetensors"), "--out", str(out), "--quiet",
                     "--crop", "auto", "--driving-crop", "tracked", "--track-every", "3"]) == 0
        err = capsys.readouterr().err
        lines[name] = err
        sides[name] = int(re.search(r"a (\d+) x \d+ px square of the 200 x 160 picture", err).group(1))
        assert probe_video(out).frame_count == len(frames)
    assert "(liveportrait framing)" in lines["lp"] and "(face_vid2vid framing)" in lines["fv"]
    assert "crop tracked: the driving video: tracked the head through 8 frames: detected on 4 of them" in lines["lp"]
    assert sides["lp"] / sides["fv"] == pytest.approx(2.3 / 1.2, rel=0.05)


def _small_drift():
    identity = syn.sample_identity("animal", np.random.default_rng(2))
    out = syn.render_batch(identity, None, None, 48)
    frames = torch.full((8, 64, 96, 3), 0.4)
    for i in range(8):
        frames[i, 8:56, 4 + 4 * i:52 + 4 * i] = out.images[0]
    return frames


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """The pack, its Load Model'ed tiny LivePortrait and face-vid2vid (random weights, no provenance)."""
    from comfy_harness import load_pack, pack_submodule

    from anytalk_core.checkpoints import save_checkpoint

    pack = load_pack()
    base = tmp_path_factory.mktemp("track_nodes")
    (base / "models" / "anytalk").mkdir(parents=True)
    save_checkpoint(tiny_lp(), base / "models" / "anytalk" / "tiny_lp.safetensors")
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), base / "models" / "anytalk" / "tiny_fv.safetensors")
    pack_submodule(pack, "nodes._comfy").configure_fallback_dirs(base)
    load = pack.NODE_CLASS_MAPPINGS["AnyTalkLoadModel"]()
    models = {name: load.load(f"tiny_{name}.safetensors", family="auto", device="cpu")[0] for name in ("lp", "fv")}
    return pack, models


def run_node(pack, name, **inputs):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_load_source_frames_by_the_connected_model(nodes, caplog):
    pack, models = nodes
    image = portrait_image().permute(0, 2, 3, 1)
    sides = {name: run_node(pack, "AnyTalkLoadSource", image=image, crop="auto", size=64, model=model)[0].spec.box(0)[2]
             for name, model in (*models.items(), ("none", None))}
    base = FRAMINGS["anytalk"]["source"].scale
    assert sides["lp"] / sides["none"] == pytest.approx(FRAMINGS["liveportrait"]["source"].scale / base, rel=1e-9)
    assert sides["fv"] / sides["none"] == pytest.approx(FRAMINGS["face_vid2vid"]["source"].scale / base, rel=1e-9)
    # Load Source without a model keeps today's crop (ours), bit for bit; a model of another framing says so
    plain, _ = run_node(pack, "AnyTalkLoadSource", image=image, crop="auto", size=64)
    assert torch.equal(plain.spec.matrix, crop_auto(image.permute(0, 3, 1, 2), 64).matrix)
    with caplog.at_level(logging.WARNING, logger="anytalk"):
        run_node(pack, "AnyTalkDetectKeypoints", model=models["lp"], source=plain)
    assert "cropped with anytalk framing but tiny_lp.safetensors was trained on liveportrait framing" in caplog.text


def test_estimate_motion_and_animate_track_the_driving_head(nodes, clip):
    pack, models = nodes
    frames = clip[0][:12]
    images = frames.permute(0, 2, 3, 1).contiguous()
    motion, preview = run_node(pack, "AnyTalkEstimateMotion", model=models["lp"], images=images,
                               crop="auto (tracked)", fps=25.0)
    assert len(motion) == 12
    track = track_head(iter([frames]), 64, family="liveportrait")  # LivePortrait's driving framing
    expected = apply_crop(frames[:1], track.spec(64).select(0))
    # (the node reads channels-last frames: the detectors' resampling differs in the last float bits)
    assert (preview.permute(0, 3, 1, 2) - expected).abs().max() < 1e-3
    first, _ = run_node(pack, "AnyTalkEstimateMotion", model=models["lp"], images=images,
                        crop="auto (first frame)", fps=25.0)
    assert not torch.equal(first.translation, motion.translation)
    out, _, _ = run_node(pack, "AnyTalkAnimate", model=models["fv"], source_image=portrait_image().permute(0, 2, 3, 1),
                         driving_images=images, driving_crop="auto (tracked)")
    assert out.shape == (12, 64, 64, 3)
