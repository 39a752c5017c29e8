"""benchmarks/motion_ceiling.py: each variant changes only what it names (tiny random model, one domain pair)."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import torch

from anytalk_core import synthetic as syn
from anytalk_core.engine import Engine, EngineConfig
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_eval import synthetic as bench

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "motion_ceiling.py"


def load_script():
    spec = importlib.util.spec_from_file_location("anytalk_motion_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_motion_ceiling_variants_differ_only_in_what_they_replace():
    mc = load_script()
    torch.manual_seed(0)
    model = build_model(tiny_config(), with_discriminator=False).eval()
    engine = Engine(model, EngineConfig(device="cpu", precision="fp32"))
    size = int(model.config.image_size)
    clip = bench.driving_clip("human", 0, 0, 3, size)
    ident = bench.heldout_identity("cg_human", 0, 0, bench.ROLE_SOURCE)
    source = bench.source_image(ident, clip, size)
    target = syn.render_sequence(ident, clip.pose, clip.expression, size).images.permute(0, 3, 1, 2).contiguous()
    driving = clip.frames.permute(0, 3, 1, 2).contiguous()

    out, psnr = {}, {}
    for variant in mc.VARIANTS:
        per_frame: list[torch.Tensor] = []
        with torch.no_grad():
            out[variant] = mc.variant_animate(engine, [clip], variant, per_frame)(source, driving, target)
        assert out[variant].shape == target.shape
        psnr[variant] = per_frame[0]

    # the static floor is the source itself; its first frame is the ground truth's first frame
    assert torch.equal(out["static source"], source.expand_as(target))
    assert psnr["static source"][0] == float("inf") and torch.isfinite(psnr["static source"][1:]).all()
    # relative transfer: the first driving frame is the reference, so frame 0 is drawn at the source's own
    # keypoints whoever drives (the source's estimated pose, or its true one)
    torch.testing.assert_close(out["self-driven"][0], out["estimated"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["self-driven + true pose"][0], out["true pose"][0], atol=1e-6, rtol=0)
    # later frames: replacing the pose or the driver changes them
    assert not torch.allclose(out["true pose"][1:], out["estimated"][1:])
    assert not torch.allclose(out["self-driven"][1:], out["estimated"][1:])


def test_with_pose_replaces_the_angles_only():
    mc = load_script()
    from anytalk_core.motion import Motion

    motion = Motion(yaw=torch.zeros(2), pitch=torch.zeros(2), roll=torch.zeros(2), translation=torch.ones(2, 3),
                    expression=torch.full((2, 4, 3), 0.5))
    angles = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    moved = mc.with_pose(motion, angles)
    assert torch.equal(torch.stack([moved.yaw, moved.pitch, moved.roll], 1), angles)
    assert torch.equal(moved.translation, motion.translation) and torch.equal(moved.expression, motion.expression)
