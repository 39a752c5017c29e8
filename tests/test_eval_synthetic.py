"""`anytalk-eval synthetic` on a tiny random model: the 9-pair table, determinism, its oracle, the reports,
and the shipped synthetic annotator (loads, reaches its stated accuracy, fails clearly when missing)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from anytalk_core import synthetic as syn
from anytalk_core.checkpoints import save_checkpoint
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_eval import annotator as ann
from anytalk_eval import synthetic as bench
from anytalk_eval.cli import main
from anytalk_eval.metrics.pixel import psnr

FAST = dict(seed=3, identities=1, frames=3)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny networks gain nothing from more threads, and on a busy machine (a training run beside the tests)
    two threads spin-wait for each other: one thread keeps this module at seconds either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config(with_discriminator=False)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("synthetic") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def annotator():
    return ann.load_annotator()


@pytest.fixture(scope="module")
def rows(tiny, annotator):
    return bench.run_benchmark(tiny, annotator=annotator, **FAST)


def test_nine_domain_pairs_with_finite_metrics(rows):
    assert len(rows) == 9
    assert {(r["source"], r["driver"]) for r in rows} == {(a, b) for a in syn.DOMAINS for b in syn.DOMAINS}
    for r in rows:
        assert r["frames"] == FAST["frames"] * FAST["identities"]
        for key in bench.METRICS:
            assert math.isfinite(r[key]) and r[key] >= 0, (r["source"], r["driver"], key, r[key])
        assert r["pose_err_deg"] == pytest.approx((r["yaw_err"] + r["pitch_err"] + r["roll_err"]) / 3)
        assert 0 < r["l1"] < 1


def test_deterministic_for_a_seed_and_seeds_differ(model, annotator, rows):
    assert bench.run_benchmark(model, annotator=annotator, **FAST) == rows  # a loaded model, the same numbers
    a, b = (bench.driving_clip("cg_human", seed, 0, 3, 32) for seed in (3, 4))
    assert not torch.equal(a.frames, b.frames) and not torch.equal(a.pose, b.pose)
    assert torch.equal(a.frames, bench.driving_clip("cg_human", 3, 0, 3, 32).frames)


def test_oracle_gives_zero_l1_infinite_psnr_and_the_annotator_floor(model, annotator):
    seen = []

    def oracle(source, driving, target):
        seen.append((source, driving, target))
        return target.clone()

    rows = bench.run_benchmark(model, annotator=annotator, animate_fn=oracle, **FAST)
    assert len(seen) == 9
    for r in rows:
        assert r["l1"] == 0 and r["psnr_db"] == math.inf
        for key, floor in (("pose_err_deg", "floor_pose_deg"), ("lmk_err_pct", "floor_lmk_pct")):
            assert r[key] == pytest.approx(r[floor], rel=1e-4, abs=1e-4)  # same images, other batch rows
    for source, driving, target in seen:
        # relative transfer's ground truth: the source is the ground truth's first frame
        torch.testing.assert_close(source[0], target[0])
        assert source.shape == (1, 3, 64, 64) and driving.shape == target.shape == (3, 3, 64, 64)


def test_ground_truth_is_motion_transfer_target():
    clip = bench.driving_clip("animal", 0, 0, 3, 32)
    ident = bench.heldout_identity("human", 0, 0, bench.ROLE_SOURCE)
    expected = syn.motion_transfer_target(ident, clip).permute(0, 3, 1, 2)
    got = syn.render_sequence(ident, clip.pose, clip.expression, 32).images.permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(bench.source_image(ident, clip, 32)[0], expected[0])


def test_held_out_identities_are_not_the_trainers_or_the_annotators():
    held = bench.heldout_identity("human", 0, 0, bench.ROLE_SOURCE)
    driver = bench.heldout_identity("human", 0, 0, bench.ROLE_DRIVER)
    annot = syn.sample_identity("human", ann.annotator_rng(0, "train", 0))
    trainer = syn.sample_identity("human", np.random.default_rng(int(np.random.default_rng([0, 0, 0]).integers(2**62))))
    images = syn.render_batch([held, driver, annot, trainer], size=32).images
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(images[i], images[j])
    # keys of five 32-bit words ending in a non-zero role can never equal a trainer key (an int < 2**64)
    assert np.random.default_rng([0xA770, 0, 0, 0, 1]).integers(2**62) != np.random.default_rng(0xA770).integers(2**62)


def test_annotator_pose_ranges_cover_the_trainers():
    from anytalk_training.synthetic_source import POSE_RANGE

    assert ann.POSE_RANGE == POSE_RANGE and ann.RANGE_MARGIN >= 1


def test_cli_writes_md_csv_json_and_never_overwrites(tiny, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["synthetic", "--checkpoint", str(tiny), "--identities", "1", "--frames", "2", "--seed", "5",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| human | animal |" in printed and "| mean | all |" in printed
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"synthetic.md", "synthetic.csv", "synthetic.json"}
    assert main(args) == 0
    for name, data in first.items():
        assert (out / name).read_bytes() == data
    assert {p.name for p in out.iterdir()} == set(first) | {"synthetic_00001.md", "synthetic_00001.csv",
                                                            "synthetic_00001.json"}
    with open(out / "synthetic.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 10 and tuple(table[0]) == bench.COLUMNS
    payload = json.loads((out / "synthetic.json").read_text())
    assert len(payload["rows"]) == 10 and payload["meta"]["seed"] == 5
    assert json.loads((out / "synthetic_00001.json").read_text())["rows"] == payload["rows"]  # same seed, same numbers


def test_missing_or_corrupt_annotator_is_a_clear_error(tiny, tmp_path, capsys):
    base = ["synthetic", "--checkpoint", str(tiny), "--identities", "1", "--frames", "2", "--out", str(tmp_path)]
    assert main([*base, "--annotator", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "annotator weights not found" in err and "python -m anytalk_eval.annotator train" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    assert main([*base, "--annotator", str(bad)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert main([*base, "--annotator", str(tiny)]) == 2  # a model checkpoint is not an annotator
    assert "not a synthetic annotator file" in capsys.readouterr().err
    assert not any(p.suffix in (".md", ".csv", ".json") for p in tmp_path.iterdir())
    with pytest.raises(ann.AnnotatorError, match="not found"):
        ann.load_annotator(tmp_path / "nope.safetensors")


def test_missing_checkpoint_and_bad_options(tmp_path, capsys):
    assert main(["synthetic", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synthetic", "--checkpoint", "x", "--identities", "0"])
    with pytest.raises(ValueError, match="frames"):
        bench.run_benchmark("unused", frames=1)


def test_shipped_annotator_reaches_its_stated_accuracy(annotator):
    stated = annotator.report["validation"]["all"]
    data = ann.render_annotated(96, seed=11, split="check")
    got = ann.evaluate_annotator(annotator, data)["all"]
    assert got["pose_mae_deg"] <= max(1.5 * stated["pose_mae_deg"], stated["pose_mae_deg"] + 1.0)
    assert got["landmark_error_pct"] <= max(1.5 * stated["landmark_error_pct"], stated["landmark_error_pct"] + 0.5)
    assert stated["pose_mae_deg"] < 4 and stated["landmark_error_pct"] < 2.5  # what the benchmark relies on
    # the same frames at another size give the same reading (the annotator resizes to its own input)
    big = ann.render_annotated(12, seed=11, split="check", size=128)
    small = ann.render_annotated(12, seed=11, split="check", size=64)
    a, b = annotator.annotate(big.images), annotator.annotate(small.images)
    assert (a.pose - b.pose).abs().mean() < 2.0
    assert ann.landmark_error_pct(a.landmarks, b.landmarks).mean() < 1.5


def test_coordinate_conventions():
    p = torch.tensor([[0.0, 63.0], [31.5, 10.0]])
    n = ann.to_normalised(p, 64)
    torch.testing.assert_close(ann.to_pixels(n, 64), p)
    # the renderer's rule for another size: (p + 0.5) * S' / S - 0.5
    torch.testing.assert_close(ann.to_pixels(n, 256), (p + 0.5) * 256 / 64 - 0.5)
    assert ann.landmark_error_pct(n[None], (n + torch.tensor([0.02, 0.0]))[None]).item() == pytest.approx(1.0)
    torch.testing.assert_close(ann.pose_abs_error(torch.tensor([[179.0, 0, 0]]), torch.tensor([[-179.0, 0, 0]])),
                               torch.tensor([[2.0, 0, 0]]))
    assert psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).item() == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------------ following

def test_follow_stats_by_hand():
    from anytalk_eval.following import follow_stats

    driver = np.array([1.0, 3.0, -1.0, 5.0])
    same = follow_stats(driver, driver + 7)  # an offset does not matter: both are taken from their first frame
    assert same["r"] == pytest.approx(1.0) and same["gain"] == pytest.approx(1.0) and same["driver_range"] == 6.0
    half = follow_stats(driver, 0.5 * driver)
    assert half["gain"] == pytest.approx(0.5) and half["r"] == pytest.approx(1.0)
    opposite = follow_stats(driver, -driver)
    assert opposite["gain"] == pytest.approx(-1.0) and opposite["r"] == pytest.approx(-1.0)
    still = follow_stats(driver, np.full(4, 2.0))
    assert still["gain"] == 0.0 and math.isnan(still["r"])
    with pytest.raises(ValueError, match="same length"):
        follow_stats(driver, driver[:3])


def test_following_of_renders_reads_the_true_motion(annotator):
    """A render that copies the driver's pose and jaw onto another identity follows it (gain near 1, mouth r
    near 1); the source picture repeated does not (gain 0); the check fails on mismatched inputs."""
    from anytalk_core.demo import demo_motion
    from anytalk_eval.following import mouth_following, mouth_opening, pose_following

    rng = np.random.default_rng(5)
    pose, expression, _ = demo_motion(24, 8.0, rng)  # a 3 s turn, nod and tilt in 24 frames, with speech
    driver, other = syn.sample_identity("human", rng), syn.sample_identity("animal", rng)

    def both(p):
        return [syn.render_batch([who] * 24, p, expression, 64).images.permute(0, 3, 1, 2) for who in (driver, other)]

    driving, moved = both(pose)
    report = pose_following(driving, moved, annotator)
    assert set(report) == {"yaw", "pitch", "roll"}
    for name in ("yaw", "pitch"):
        assert report[name]["r"] > 0.9 and 0.8 < report[name]["gain"] < 1.2, (name, report[name])
    assert report["roll"]["r"] > 0.7, report["roll"]
    still = pose_following(driving, moved[:1].expand_as(moved), annotator)
    assert all(s["gain"] == 0 for s in still.values())

    frontal = pose.clone()
    frontal[:, :5] = 0
    talking, mouthing = both(frontal)
    assert mouth_following(talking, mouthing, annotator)["r"] > 0.9
    assert math.isnan(mouth_following(talking, mouthing[:1].expand_as(mouthing), annotator)["r"])
    jaw = expression[:, syn.EXPRESSION_FIELDS.index("jaw_open")]
    rendered = mouth_opening(mouthing, jaw, annotator)  # a render that really opens its jaw
    assert rendered > 0.02, rendered
    assert mouth_opening(mouthing[:1].expand_as(mouthing), jaw, annotator) == 0.0  # a still picture opens nothing
    assert mouth_opening(mouthing, -jaw, annotator) == pytest.approx(rendered)  # symmetric in open and closed
    with pytest.raises(ValueError, match="jaw values"):
        mouth_opening(mouthing, jaw[:5], annotator)
    with pytest.raises(ValueError, match="same N"):
        pose_following(driving, moved[:5], annotator)
