"""Geometry against independent computations: rotations, transforms, grids, heatmaps, warps."""
from __future__ import annotations

import logging
import math
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from anytalk_core import geometry as G

angles = st.floats(min_value=-179, max_value=179, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(yaw=angles, pitch=angles, roll=angles)
def test_rotation_orders_match_scipy(yaw, pitch, roll):
    y, p, r = (torch.tensor([v], dtype=torch.float64) for v in (yaw, pitch, roll))
    # scipy: intrinsic 'XYZ' with angles (pitch, yaw, roll) is R_x R_y R_z.
    xyz = Rotation.from_euler("XYZ", [pitch, yaw, roll], degrees=True).as_matrix()
    zyx = Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()
    np.testing.assert_allclose(G.euler_to_rotation_matrix(y, p, r, "xyz")[0].numpy(), xyz, atol=1e-12)
    np.testing.assert_allclose(G.euler_to_rotation_matrix(y, p, r, "zyx")[0].numpy(), zyx, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(yaw=angles, pitch=angles, roll=angles)
def test_rotations_are_orthonormal_with_unit_determinant(yaw, pitch, roll):
    args = [torch.tensor([v], dtype=torch.float64) for v in (yaw, pitch, roll)]
    for order in ("xyz", "zyx", "yxz"):
        rot = G.euler_to_rotation_matrix(*args, order=order, pi=3.14)[0]
        assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert torch.det(rot).item() == pytest.approx(1.0, abs=1e-12)


def test_known_rotations_and_face_vid2vid_pi():
    z = torch.zeros(1, dtype=torch.float64)
    quarter = torch.tensor([90.0], dtype=torch.float64)
    # yaw 90 (true pi) maps x to -z and z to x about the y axis.
    rot = G.euler_to_rotation_matrix(quarter, z, z)[0]
    assert torch.allclose(rot @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 0, -1.0], dtype=torch.float64), atol=1e-12)
    # face-vid2vid converts with 3.14: a 180 degree roll is not quite a half turn.
    rot = G.euler_to_rotation_matrix(z, z, torch.tensor([180.0], dtype=torch.float64), pi=3.14)[0]
    assert rot[0, 0].item() == pytest.approx(math.cos(3.14), abs=1e-15)


def test_inverse_rotation_is_transpose_and_undoes_transform():
    g = torch.Generator().manual_seed(0)
    yaw, pitch, roll = (torch.rand(4, generator=g, dtype=torch.float64) * 120 - 60 for _ in range(3))
    rot = G.euler_to_rotation_matrix(yaw, pitch, roll)
    kp = torch.rand(4, 15, 3, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.rand(4, 3, generator=g, dtype=torch.float64)
    moved = G.transform_keypoints(kp, rot, t, torch.zeros_like(kp))
    back = torch.einsum("bij,bkj->bki", rot.transpose(1, 2), moved - t[:, None])
    assert torch.allclose(back, kp, atol=1e-12)


def test_transform_with_scale_ignores_z_translation():
    kp = torch.rand(2, 21, 3, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    t = torch.tensor([[0.1, 0.2, 5.0], [0.0, 0.0, -3.0]], dtype=torch.float64)
    delta = torch.rand_like(kp)
    s = torch.tensor([2.0, 0.5], dtype=torch.float64)
    out = G.transform_keypoints(kp, eye, t, delta, scale=s, translate_z=False)
    expected = s.view(2, 1, 1) * (kp + delta) + torch.cat([t[:, :2], torch.zeros(2, 1, dtype=torch.float64)], 1)[:, None]
    assert torch.allclose(out, expected)


def test_bins_to_degrees_of_one_hot_logits():
    logits = torch.full((2, 66), -1e4, dtype=torch.float64)
    logits[0, 33] = 0
    logits[1, 0] = 0
    assert G.bins_to_degrees(logits).tolist() == pytest.approx([0.0, -99.0])
    assert G.bins_to_degrees(logits, offset=97.5).tolist() == pytest.approx([1.5, -97.5])


def test_coordinate_grid_layout():
    grid = G.coordinate_grid_3d(3, 4, 5, dtype=torch.float64)
    assert grid.shape == (3, 4, 5, 3)
    assert grid[0, 0, 0].tolist() == [-1, -1, -1] and grid[-1, -1, -1].tolist() == [1, 1, 1]
    assert grid[0, 0, 4].tolist() == [1, -1, -1]  # x along width
    assert grid[0, 3, 0].tolist() == [-1, 1, -1]  # y along height
    assert grid[2, 0, 0].tolist() == [-1, -1, 1]  # z along depth
    assert G.coordinate_grid_2d(2, 3)[1, 2].tolist() == [1, 1]


def test_gaussian_heatmap_peaks_at_keypoint_and_soft_argmax_recovers_it():
    grid = G.coordinate_grid_3d(8, 16, 16, dtype=torch.float64)
    target = grid[5, 3, 12].view(1, 1, 3)
    heat = G.keypoint_gaussians(target, (8, 16, 16), variance=0.01)
    assert heat.shape == (1, 1, 8, 16, 16)
    assert heat.flatten().argmax().item() == np.ravel_multi_index((5, 3, 12), (8, 16, 16))
    sharp = torch.softmax(heat.flatten(2) / 1e-3, dim=2).view_as(heat)
    assert torch.allclose(G.heatmap_to_keypoints(sharp), target, atol=1e-6)


def test_warp_by_identity_grid_is_identity_and_differentiable():
    vol = torch.rand(2, 3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    # align_corners=False samples pixel centres at (2j + 1)/n - 1.
    def centres(n):
        return (2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1
    z, y, x = torch.meshgrid(centres(4), centres(8), centres(8), indexing="ij")
    grid = torch.stack([x, y, z], -1).expand(2, 4, 8, 8, 3)
    out = G.warp_volume(vol, grid)
    assert torch.allclose(out, vol, atol=1e-12)
    out.sum().backward()
    assert vol.grad is not None and torch.isfinite(vol.grad).all()


def test_device_and_dtype_follow_inputs():
    for dtype in (torch.float32, torch.float64):
        a = torch.zeros(3, dtype=dtype)
        assert G.euler_to_rotation_matrix(a, a, a).dtype == dtype
        assert G.keypoint_gaussians(torch.zeros(1, 2, 3, dtype=dtype), (2, 2, 2)).dtype == dtype


def test_convex_hull_volume_of_unit_cube():
    corners = torch.tensor([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=torch.float32)
    assert G.convex_hull_volume(corners) == pytest.approx(1.0)


def test_grid_sample_3d_falls_back_to_the_cpu_where_a_device_lacks_the_3d_kernel(monkeypatch):
    """Apple MPS has no 3D grid sampler: the operation runs on the CPU and the result is the same."""
    import torch.nn.functional as F

    from anytalk_core import geometry

    g = torch.Generator().manual_seed(0)
    volume = torch.randn(2, 3, 4, 5, 6, generator=g)
    grid = torch.rand(2, 4, 5, 6, 3, generator=g) * 2 - 1
    expected = geometry.grid_sample_3d(volume, grid)
    real = F.grid_sample
    calls = []

    class FakeDevice:  # the volume pretends to live on a device without the kernel
        type = "mps"

    def no_kernel_on_first_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise NotImplementedError("The operator 'aten::grid_sampler_3d' is not currently implemented for the MPS device")
        return real(*args, **kwargs)

    class OnFakeDevice(torch.Tensor):
        @property
        def device(self):
            return FakeDevice()

        def to(self, *args, **kwargs):
            return torch.Tensor.to(torch.Tensor(self), *args, **{k: v for k, v in kwargs.items() if k != "device"})

    monkeypatch.setattr(F, "grid_sample", no_kernel_on_first_call)
    out = G.grid_sample_3d(volume.as_subclass(OnFakeDevice), grid)
    assert len(calls) >= 2  # the failing call, then the CPU one
    torch.testing.assert_close(torch.Tensor(out), expected)
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other failure")))
    with pytest.raises(RuntimeError, match="other failure"):
        geometry.grid_sample_3d(volume, grid)


def test_a_device_without_a_3d_grid_sampler_runs_it_on_the_cpu_and_says_so_once(monkeypatch, caplog):
    real = torch.nn.functional.grid_sample
    volume = torch.rand(1, 2, 3, 4, 5)
    grid = torch.rand(1, 2, 3, 4, 3) * 2 - 1
    device_volume = types.SimpleNamespace(device=torch.device("meta"), dtype=torch.float32, cpu=lambda: volume)

    def grid_sample(inp, g, **kwargs):
        if inp is device_volume:
            raise NotImplementedError("aten::grid_sampler_3d is not implemented for this device")
        return real(inp, g, **kwargs)

    monkeypatch.setattr(G, "F", types.SimpleNamespace(grid_sample=grid_sample))
    monkeypatch.setattr(G, "_CPU_SAMPLER_DEVICES", set())
    with caplog.at_level(logging.WARNING, logger="anytalk"):
        for _ in range(2):
            out = G.grid_sample_3d(device_volume, grid)
            assert out.device.type == "meta" and out.shape == (1, 2, 2, 3, 4)
    assert [r.getMessage() for r in caplog.records if r.name == "anytalk"] == [
        "AnyTalk: meta has no 3D grid-sample kernel; that step runs on the CPU (slower)"]
