"""Expression editing: LivePortrait's semantic sliders, the per-keypoint delta scale of any family, eye/lip
retargeting with explicit ratios, and the nodes that expose them (Expression Edit, Transfer Motion's
stitching and retargeting inputs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from anytalk_core.expression_edit import (
    NEUTRAL_EYE_RATIO,
    NEUTRAL_LIP_RATIO,
    ROTATION_SLIDERS,
    SEMANTIC_SLIDERS,
    SLIDERS,
    apply_expression_edit,
    parse_keypoint_scales,
    retarget,
    retargeted_keypoints,
    scale_keypoint_deltas,
)
from anytalk_core.models.config import AppearanceConfig, DenseMotionConfig, GeneratorConfig, tiny_config
from anytalk_core.models.liveportrait.convnextv2 import ConvNeXtV2Config
from anytalk_core.models.liveportrait import LivePortraitModel, LivePortraitOptions, make_config
from anytalk_core.models.registry import build_model
from anytalk_core.models.liveportrait.stitching import MLPConfig
from anytalk_core.motion import POSE_FIELDS, Motion

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANYTALK_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance")) / "liveportrait"
K = 21


def motion(n: int = 3, k: int = K, family: str = "liveportrait", dtype=torch.float64, seed: int = 0,
           zero: bool = False) -> Motion:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=1.0):
        return torch.zeros(*shape, dtype=dtype) if zero else (torch.randn(*shape, generator=g) * s).to(dtype)

    return Motion(yaw=r(n, s=10), pitch=r(n, s=10), roll=r(n, s=10), translation=r(n, 3, s=0.05),
                  expression=r(n, k, 3, s=0.03), scale=torch.ones(n, dtype=dtype) if zero else 1 + r(n, s=0.1).abs(),
                  family=family, fps=25.0)


def sample_value(slider, sign: int) -> float:
    """A representative in-range value of one sign (the range's end halved; rotation sliders both signs)."""
    end = slider.maximum if sign > 0 else slider.minimum
    return end / 2 if end != 0 else sign * 1.0


SIGNED = [(name, sign) for name in SLIDERS for sign in (1, -1)]


# --------------------------------------------------------------------------------------------------
# Sliders
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, k", [("liveportrait", K), ("face_vid2vid", 15)])
def test_every_slider_at_zero_leaves_the_motion_unchanged(family, k):
    m = motion(k=k, family=family, dtype=torch.float32)
    out = apply_expression_edit(m, **{name: 0.0 for name in SLIDERS})
    for key, value in m.tensors().items():
        assert torch.equal(out.tensors()[key], value), key
    assert out.family == m.family and out.fps == m.fps
    assert apply_expression_edit(m) is m


@pytest.mark.parametrize("name, sign", SIGNED)
def test_each_slider_changes_only_its_documented_entries_and_scales_linearly(name, sign):
    slider = SLIDERS[name]
    base = motion(zero=True)
    v = sample_value(slider, sign)
    one, two = apply_expression_edit(base, **{name: v}), apply_expression_edit(base, **{name: 2 * v})
    change1, change2 = one.expression - base.expression, two.expression - base.expression
    # exactly the documented table for this sign
    expected = torch.zeros(K, 3, dtype=torch.float64)
    for kp, axis, coef in slider.offsets_for(v):
        expected[kp, axis] += v * coef
    assert torch.equal(change1, expected.expand_as(change1))
    documented = slider.keypoint_axes()
    changed = {(int(a), int(b)) for a, b in (change1[0] != 0).nonzero()}
    assert changed <= documented
    assert changed == {(kp, axis) for kp, axis, _ in slider.offsets_for(v)}
    assert torch.equal(change2, 2 * change1)  # linear: twice the slider, twice the change
    pose = dict(slider.pose)
    for field in POSE_FIELDS:
        d1, d2 = getattr(one, field) - getattr(base, field), getattr(two, field) - getattr(base, field)
        assert torch.equal(d1, torch.full_like(d1, v * pose.get(field, 0.0))), field
        assert torch.equal(d2, 2 * d1), field
    assert torch.equal(one.translation, base.translation) and torch.equal(one.scale, base.scale)


def test_the_table_uses_the_expression_editor_keypoints():
    kps = {name: sorted({kp for kp, _ in SLIDERS[name].keypoint_axes()}) for name in SEMANTIC_SLIDERS}
    assert kps["blink"] == [1, 2, 11, 13, 15, 16]
    assert kps["eyebrow"] == [1, 2]
    assert kps["pupil_x"] == [11, 15]
    assert kps["aaa"] == [17, 19] and kps["eee"] == [14, 20] and kps["woo"] == [3, 7, 14, 17]
    assert kps["smile"] == [3, 7, 13, 14, 16, 17, 20]
    assert set(ROTATION_SLIDERS) == {"rotate_pitch", "rotate_yaw", "rotate_roll"}
    assert all(not SLIDERS[n].keypoint_axes() for n in ROTATION_SLIDERS)


def test_sliders_compose_with_driving_motion_and_with_each_other():
    driving, zero = motion(n=5, seed=1), motion(n=5, zero=True)
    values = {"blink": -7.0, "eyebrow": -3.0, "wink": 4.0, "pupil_x": 5.0, "pupil_y": -2.5, "aaa": 40.0,
              "eee": 3.0, "woo": -4.0, "smile": 0.6, "rotate_pitch": 3.0, "rotate_yaw": -8.0, "rotate_roll": 1.5}
    edited, offsets = apply_expression_edit(driving, **values), apply_expression_edit(zero, **values)
    for key in ("expression", *POSE_FIELDS):
        torch.testing.assert_close(edited.tensors()[key] - driving.tensors()[key], offsets.tensors()[key],
                                   rtol=0, atol=1e-12)
    # the offsets of several sliders are the sum of each slider's offsets
    total = sum((apply_expression_edit(zero, **{n: v}).expression for n, v in values.items()), torch.zeros(5, K, 3,
                                                                                                          dtype=torch.float64))
    torch.testing.assert_close(offsets.expression, total, rtol=0, atol=1e-15)
    assert torch.equal(edited.translation, driving.translation) and torch.equal(edited.scale, driving.scale)


def test_float32_motion_on_any_device_dtype_is_kept():
    m = motion(dtype=torch.float32)
    out = apply_expression_edit(m, smile=1.0, rotate_yaw=2.0)
    assert out.expression.dtype == torch.float32 and out.yaw.dtype == torch.float32
    torch.testing.assert_close(out.expression[:, 14, 1] - m.expression[:, 14, 1], torch.full((3,), -0.02))


def test_semantic_slider_on_another_family_is_refused_with_a_clear_error():
    fv = motion(k=15, family="face_vid2vid")
    with pytest.raises(ValueError, match=r"LivePortrait motions \(21 keypoints\).*face_vid2vid with 15 keypoints"):
        apply_expression_edit(fv, smile=0.5)
    turned = apply_expression_edit(fv, rotate_yaw=10.0)  # rotation works for every family
    torch.testing.assert_close(turned.yaw, fv.yaw + 10.0)
    with pytest.raises(ValueError, match="unknown expression slider"):
        apply_expression_edit(motion(), grin=1.0)
    with pytest.raises(ValueError, match="finite"):
        apply_expression_edit(motion(), blink=float("nan"))


def test_generic_keypoint_scale_on_a_face_vid2vid_motion():
    fv = motion(k=15, family="face_vid2vid", dtype=torch.float32)
    out = scale_keypoint_deltas(fv, {3: 1.5, 7: 0})
    assert torch.equal(out.expression[:, 3], fv.expression[:, 3] * 1.5)
    assert torch.equal(out.expression[:, 7], torch.zeros_like(fv.expression[:, 7]))
    others = [i for i in range(15) if i not in (3, 7)]
    assert torch.equal(out.expression[:, others], fv.expression[:, others])
    assert torch.equal(out.yaw, fv.yaw) and torch.equal(out.translation, fv.translation)
    factors = [1.0] * 15
    factors[3], factors[7] = 1.5, 0.0
    assert torch.equal(scale_keypoint_deltas(fv, factors).expression, out.expression)
    assert scale_keypoint_deltas(fv, {}) is fv
    assert parse_keypoint_scales("3:1.5, 7:0; 11-13 : 0.5") == {3: 1.5, 7: 0.0, 11: 0.5, 12: 0.5, 13: 0.5}
    assert parse_keypoint_scales("  ") == {}
    with pytest.raises(ValueError, match="keypoints 0 to 14"):
        scale_keypoint_deltas(fv, {15: 2.0})
    with pytest.raises(ValueError, match="15 keypoints"):
        scale_keypoint_deltas(fv, [1.0] * 21)
    for bad in ("3", "3:x", "a:1", "5-2:1"):
        with pytest.raises(ValueError):
            parse_keypoint_scales(bad)


# --------------------------------------------------------------------------------------------------
# Retargeting
# --------------------------------------------------------------------------------------------------

def tiny_liveportrait(seed: int = 0, mlps: bool = True) -> LivePortraitModel:
    """A random LivePortrait of the conformance set's widths (64-px input), with shallow ConvNeXt stages."""
    torch.manual_seed(seed)
    nets = {"stitching": MLPConfig(6 * K, (16, 8), 3 * K + 2), "retarget_eye": MLPConfig(3 * K + 3, (16, 8), 3 * K),
            "retarget_lip": MLPConfig(3 * K + 2, (16, 8), 3 * K)}
    config = make_config(
        appearance=AppearanceConfig(block_expansion=4, max_features=16, feature_channels=4, reshape_depth=4),
        motion=ConvNeXtV2Config(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_kp=K),
        dense_motion=DenseMotionConfig(num_kp=K, feature_channels=4, block_expansion=4, max_features=32, num_blocks=4,
                                       reshape_depth=4, compress=2),
        generator=GeneratorConfig(volume_channels=16, ic=16, oc=4, label_nc=16, spade_hidden=8, upscale=2),
        mlps=nets if mlps else {name: None for name in nets}, image_size=64)
    return build_model(config).eval()


@pytest.fixture(scope="module")
def lp():
    return tiny_liveportrait()


@pytest.fixture(scope="module")
def lp_state(lp):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        source = lp.prepare_source(torch.rand(1, 3, 64, 64, generator=g))
        driving = lp.estimate_motion(torch.rand(3, 3, 64, 64, generator=g))
    return source, driving


def test_retarget_defaults_to_documented_neutral_ratios(lp, lp_state):
    x_s = lp_state[0].keypoints
    with torch.no_grad():
        neutral = retarget(lp, x_s)
        explicit = (lp.retarget_eye(x_s, torch.tensor([[NEUTRAL_EYE_RATIO] * 3]))
                    + lp.retarget_lip(x_s, torch.tensor([[NEUTRAL_LIP_RATIO] * 2])))
        assert neutral.shape == (1, K, 3)
        torch.testing.assert_close(neutral, explicit, rtol=0, atol=0)
        closed = retarget(lp, x_s, eye_ratios=0.0, lips=False)  # a target: the source's ratios stay neutral
        torch.testing.assert_close(closed, lp.retarget_eye(x_s, torch.tensor([[NEUTRAL_EYE_RATIO] * 2 + [0.0]])),
                                   rtol=0, atol=0)
        opened = retarget(lp, x_s, lip_ratios=[0.1, 0.5], eyes=False)
        torch.testing.assert_close(opened, lp.retarget_lip(x_s, torch.tensor([[0.1, 0.5]])), rtol=0, atol=0)
    with pytest.raises(ValueError, match="eye ratios must be"):
        retarget(lp, x_s, eye_ratios=[0.1, 0.2])


def test_retarget_without_weights_or_on_face_vid2vid_is_explained(lp_state):
    bare = tiny_liveportrait(mlps=False)
    with pytest.raises(ValueError, match="no eye retargeting weights.*stitching_retargeting_module"):
        retarget(bare, lp_state[0].keypoints)
    with pytest.raises(ValueError, match="no lip retargeting weights"):
        retarget(bare, lp_state[0].keypoints, eyes=False)
    with pytest.raises(ValueError, match="needs a LivePortrait model"):
        retarget(build_model(tiny_config(with_discriminator=False)), torch.zeros(1, 15, 3))


@pytest.mark.parametrize("stitching", [True, False])
def test_retargeted_keypoints_without_delta_are_the_model_transfer(lp, lp_state, stitching):
    source, driving = lp_state
    opts = LivePortraitOptions(stitching=stitching)
    with torch.no_grad():
        plain = lp.driven_keypoints(source, driving, opts)
        assert torch.equal(retargeted_keypoints(lp, source, driving, opts), plain)
        delta = retarget(lp, source.keypoints, eye_ratios=0.0)
        moved = retargeted_keypoints(lp, source, driving, opts, retarget_delta=delta)
    if not stitching:
        torch.testing.assert_close(moved, plain + delta, rtol=0, atol=1e-6)
    assert not torch.equal(moved, plain)


def conformance_or_skip() -> None:
    needed = ("vectors.safetensors", "tolerances.json", "motion_extractor.safetensors")
    if not all((DATA / name).is_file() for name in needed):
        if os.environ.get("CI"):
            pytest.fail(f"LivePortrait conformance data not found in {DATA} (CI must have it)")
        pytest.skip(f"LivePortrait conformance data not found in {DATA} (set ANYTALK_CONFORMANCE_DIR)")


def test_retarget_reproduces_the_reference_networks_on_conformance_data():
    conformance_or_skip()
    from safetensors.torch import load_file

    from anytalk_core.checkpoints import load_model

    vectors = load_file(DATA / "vectors.safetensors")
    atol = json.loads((DATA / "tolerances.json").read_text())["float32_atol"]
    if "retarget.eye_ratio" not in vectors:
        pytest.skip("this conformance set has no retargeting vectors")
    model = load_model(DATA, family="liveportrait")
    with torch.no_grad():
        raw = model.estimate_motion_raw(vectors["source"])  # x_s without the appearance encoder
        x_s = model.motion_keypoints(model.canonical_from_raw(raw), model.motion_from_raw(raw))
        eye = retarget(model, x_s, eye_ratios=vectors["retarget.eye_ratio"], lips=False)
        lip = retarget(model, x_s, lip_ratios=vectors["retarget.lip_ratio"], eyes=False)
        both = retarget(model, x_s, eye_ratios=vectors["retarget.eye_ratio"], lip_ratios=vectors["retarget.lip_ratio"])
    torch.testing.assert_close(eye, vectors["retarget.eye_delta"], rtol=0, atol=atol["retarget.eye_delta"])
    torch.testing.assert_close(lip, vectors["retarget.lip_delta"], rtol=0, atol=atol["retarget.lip_delta"])
    torch.testing.assert_close(both, eye + lip, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    from comfy_harness import check_output_value, load_pack, pack_submodule, pack_type_checks, portrait

    from anytalk_core.checkpoints import save_checkpoint

    pack = load_pack()
    base = tmp_path_factory.mktemp("expr")
    (base / "models" / "anytalk").mkdir(parents=True)
    save_checkpoint(tiny_liveportrait(seed=3), base / "models" / "anytalk" / "tiny_lp.safetensors")
    torch.manual_seed(4)
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), base / "models" / "anytalk" / "tiny_fv.safetensors")
    comfy = pack_submodule(pack, "nodes._comfy")
    comfy.configure_fallback_dirs(base)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def call(name, **kwargs):
        cls = pack.NODE_CLASS_MAPPINGS[name]
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        for type_, value in zip(cls.RETURN_TYPES, out):
            check_output_value(type_, value, f"{name} {type_}", pack_type_checks(pack))
        return out

    image = torch.from_numpy(portrait(80, 80, seed=3)).unsqueeze(0)
    g = torch.Generator().manual_seed(2)
    driving = torch.rand(4, 64, 64, 3, generator=g)
    graphs = {}
    for name in ("tiny_lp", "tiny_fv"):
        (model,) = call("AnyTalkLoadModel", checkpoint=f"{name}.safetensors", family="auto", device="cpu",
                        precision="fp32", chunk_size=4)
        source, _ = call("AnyTalkLoadSource", image=image, crop="auto", size=64)
        kp, _, own = call("AnyTalkDetectKeypoints", model=model, source=source)
        drv, _ = call("AnyTalkEstimateMotion", model=model, images=driving, fps=25.0)
        graphs[name] = dict(model=model, keypoints=kp, own=own, motion=drv)
    yield pack, call, graphs
    torch.set_num_threads(threads)


def test_expression_edit_node_is_registered_with_the_pack_conventions(nodes):
    pack, _, _ = nodes
    cls = pack.NODE_CLASS_MAPPINGS["AnyTalkExpressionEdit"]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["AnyTalkExpressionEdit"] == "AnyTalk Expression Edit"
    assert cls.CATEGORY == "AnyTalk" and cls.RETURN_TYPES == ("ANYTALK_MOTION",)
    required = cls.INPUT_TYPES()["required"]
    assert set(SLIDERS) < set(required) and "keypoint_scales" in required
    for name, slider in SLIDERS.items():
        opts = required[name][1]
        assert opts["default"] == 0.0 and (opts["min"], opts["max"]) == (slider.minimum, slider.maximum)
        assert opts["tooltip"]
    optional = pack.NODE_CLASS_MAPPINGS["AnyTalkTransferMotion"].INPUT_TYPES()["optional"]
    assert optional["stitching"][1]["default"] is True
    assert optional["eye_ratio"][1]["default"] == NEUTRAL_EYE_RATIO and optional["lip_ratio"][1]["default"] == 0.0


def test_expression_edit_node_edits_liveportrait_and_scales_other_families(nodes):
    pack, call, graphs = nodes
    m = graphs["tiny_lp"]["motion"]
    (same,) = call("AnyTalkExpressionEdit", motion=m, **{n: 0.0 for n in SLIDERS}, keypoint_scales="")
    assert all(torch.equal(same.tensors()[k], v) for k, v in m.tensors().items())
    (opened,) = call("AnyTalkExpressionEdit", motion=m, aaa=50.0)
    change = (opened.expression - m.expression)[0]
    assert {(int(a), int(b)) for a, b in (change != 0).nonzero()} == {(19, 1), (19, 2), (17, 1)}
    torch.testing.assert_close(opened.pitch - m.pitch, torch.full_like(m.pitch, -2.5))
    fv = graphs["tiny_fv"]["motion"]
    AnyTalkError = pack_error(pack)
    with pytest.raises(AnyTalkError, match="AnyTalk Expression Edit: .*LivePortrait"):
        call("AnyTalkExpressionEdit", motion=fv, smile=0.5)
    (scaled,) = call("AnyTalkExpressionEdit", motion=fv, keypoint_scales="3:1.5, 7:0", rotate_yaw=5.0)
    assert torch.equal(scaled.expression[:, 3], fv.expression[:, 3] * 1.5)
    assert torch.equal(scaled.expression[:, 7], torch.zeros_like(fv.expression[:, 7]))
    torch.testing.assert_close(scaled.yaw, fv.yaw + 5.0)
    with pytest.raises(AnyTalkError, match="keypoint:factor"):
        call("AnyTalkExpressionEdit", motion=fv, keypoint_scales="three")


def pack_submodule_of(pack, dotted: str):
    from comfy_harness import pack_submodule

    return pack_submodule(pack, dotted)


def pack_error(pack):
    return pack_submodule_of(pack, "nodes._objects").AnyTalkError


def test_transfer_stitching_switch_changes_only_liveportrait(nodes):
    _, call, graphs = nodes
    results = {}
    for name, g in graphs.items():
        (on,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"], stitching=True)
        (off,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"], stitching=False)
        (default,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"])
        assert torch.equal(default.frames, on.frames)
        results[name] = (on.frames, off.frames)
    assert not torch.equal(*results["tiny_lp"])
    assert torch.equal(*results["tiny_fv"])
    # eye/lip retargeting: LivePortrait only; face-vid2vid ignores it
    g = graphs["tiny_fv"]
    (fv_retarget,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"], retarget_eyes=True,
                          eye_ratio=0.0, retarget_lips=True, lip_ratio=0.5)
    assert torch.equal(fv_retarget.frames, results["tiny_fv"][0])


def test_transfer_eye_and_lip_ratios_drive_the_retargeting_networks(nodes):
    _, call, graphs = nodes
    g = graphs["tiny_lp"]
    (plain,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"], stitching=False)
    (closed,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"], stitching=False,
                     retarget_eyes=True, eye_ratio=0.0, retarget_lips=True, lip_ratio=0.4)
    lp = g["model"].model
    pack_retarget = pack_submodule_of(nodes[0], "anytalk_core.expression_edit").retarget  # the pack's own classes
    with torch.no_grad():
        delta = pack_retarget(lp, g["keypoints"].state.keypoints, eye_ratios=0.0, lip_ratios=0.4)
    torch.testing.assert_close(closed.frames, plain.frames + delta, rtol=0, atol=1e-6)
    (eyes_only,) = call("AnyTalkTransferMotion", keypoints=g["keypoints"], motion=g["motion"], stitching=False,
                        retarget_eyes=True, eye_ratio=0.0, lip_ratio=0.4)
    with torch.no_grad():
        eye_delta = pack_retarget(lp, g["keypoints"].state.keypoints, eye_ratios=0.0, lips=False)
    torch.testing.assert_close(eyes_only.frames, plain.frames + eye_delta, rtol=0, atol=1e-6)
