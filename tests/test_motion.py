"""The motion record and transfer: strengths, offsets, mixing across families, persistence."""
from __future__ import annotations

import pytest
import torch

from anytalk_core.models import TransferOptions
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.motion import Motion, MotionFamilyError, interpolate, mix, mix_expressions, retime


def random_motion(n: int, k: int = 15, family: str = "face_vid2vid", seed: int = 0, scale: bool = False) -> Motion:
    g = torch.Generator().manual_seed(seed)
    return Motion(
        yaw=torch.rand(n, generator=g) * 40 - 20, pitch=torch.rand(n, generator=g) * 30 - 15,
        roll=torch.rand(n, generator=g) * 20 - 10, translation=torch.rand(n, 3, generator=g) * 0.1,
        expression=torch.rand(n, k, 3, generator=g) * 0.05, scale=torch.rand(n, generator=g) + 0.5 if scale else None,
        family=family,
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config(with_discriminator=False)).eval()


@pytest.fixture(scope="module")
def source(model):
    with torch.no_grad():
        return model.prepare_source(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)))


def test_shape_validation_has_clear_messages():
    m = random_motion(3)
    with pytest.raises(ValueError, match="translation"):
        Motion(m.yaw, m.pitch, m.roll, torch.zeros(3, 2), m.expression)
    with pytest.raises(ValueError, match="expression"):
        Motion(m.yaw, m.pitch, m.roll, m.translation, torch.zeros(3, 45))


def test_relative_transfer_of_the_reference_frame_returns_source_keypoints(model, source):
    driving = random_motion(4)
    kp = model.driven_keypoints(source, driving, TransferOptions("relative"))
    assert torch.allclose(kp[0], source.keypoints[0], atol=1e-6)


def test_zero_strengths_freeze_the_head(model, source):
    driving = random_motion(5)
    still = TransferOptions("relative", pose_strength=0, expression_strength=0, translation_strength=0)
    kp = model.driven_keypoints(source, driving, still)
    assert torch.allclose(kp, source.keypoints.expand_as(kp), atol=1e-6)
    absolute = model.driven_keypoints(source, driving, TransferOptions("absolute", 0, 0, 0))
    assert torch.allclose(absolute, source.keypoints.expand_as(kp), atol=1e-6)


def test_expression_strength_is_linear_in_keypoint_space(model, source):
    driving = random_motion(3)
    driving = driving._replace(yaw=driving.yaw[:1].expand(3).clone(), pitch=driving.pitch[:1].expand(3).clone(),
                               roll=driving.roll[:1].expand(3).clone(),
                               translation=driving.translation[:1].expand(3, 3).clone())
    half = model.driven_keypoints(source, driving, TransferOptions("relative", expression_strength=0.5))
    full = model.driven_keypoints(source, driving, TransferOptions("relative"))
    assert torch.allclose(half - source.keypoints, 0.5 * (full - source.keypoints), atol=1e-6)


def test_transfer_options_reject_nonsense():
    with pytest.raises(ValueError, match="mode"):
        TransferOptions("sideways")
    with pytest.raises(ValueError, match="pose_strength"):
        TransferOptions(pose_strength=float("nan"))


def test_offsets_and_free_view():
    m = random_motion(3)
    moved = m.with_offsets(yaw=10, roll=-5, translation=(0.1, 0, 0))
    assert torch.allclose(moved.yaw, m.yaw + 10) and torch.allclose(moved.roll, m.roll - 5)
    assert torch.allclose(moved.translation[:, 0], m.translation[:, 0] + 0.1)
    fixed = m.with_pose(yaw=0.0)
    assert torch.equal(fixed.yaw, torch.zeros(3)) and torch.equal(fixed.pitch, m.pitch)


def test_mix_takes_pose_across_families_but_not_expressions():
    lp = random_motion(4, k=21, family="liveportrait", scale=True, seed=1)
    fv = random_motion(4, seed=2)
    mixed = mix(pose_from=fv, expression_from=lp)
    assert mixed.family == "liveportrait" and mixed.num_kp == 21
    assert torch.equal(mixed.yaw, fv.yaw) and torch.equal(mixed.expression, lp.expression)
    with pytest.raises(MotionFamilyError, match="21 keypoints"):
        mix_expressions(fv, lp, 0.5)
    with pytest.raises(MotionFamilyError):
        interpolate(fv, lp)


def test_interpolate_endpoints():
    a, b = random_motion(4, seed=1, scale=True), random_motion(4, seed=2, scale=True)
    same = interpolate(a, b)
    assert all(torch.equal(x, y) for x, y in zip(same.tensors().values(), b.tensors().values()))
    start = interpolate(a, b, pose=0, expression=0, translation=0)
    for x, y in zip(start.tensors().values(), a.tensors().values()):
        assert torch.allclose(x, y)


def test_retime_keeps_duration_and_endpoints():
    m = random_motion(25)
    r = retime(m, fps=25, target_fps=30)
    assert len(r) == 30 and r.fps == 30
    assert torch.allclose(r.yaw[0], m.yaw[0])


def test_save_load_round_trip_and_no_overwrite(tmp_path):
    m = random_motion(6, scale=True)
    m.fps = 25.0
    path = tmp_path / "performance.motion.safetensors"
    m.save(path)
    back = Motion.load(path)
    assert back.fps == 25.0 and back.family == m.family
    assert all(torch.equal(x, y) for x, y in zip(back.tensors().values(), m.tensors().values()))
    with pytest.raises(FileExistsError):
        m.save(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="bad.safetensors"):
        Motion.load(bad)


def test_cat_and_indexing():
    m = random_motion(4)
    both = Motion.cat([m[0:2], m[2:4]])
    assert torch.equal(both.expression, m.expression)
    assert len(m[-1]) == 1 and torch.equal(m[-1].yaw, m.yaw[-1:])
