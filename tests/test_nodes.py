"""The ComfyUI node pack, node by node: interface conventions, behaviour, caching, errors an artist can act on,
and the ComfyUI services (folder_paths, ProgressBar/Cancel, model management, VIDEO) through stand-in modules."""
from __future__ import annotations

import ast
import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from comfy_harness import (
    REPO_ROOT,
    check_output_value,
    load_pack,
    make_env,
    pack_submodule,
    pack_type_checks,
    portrait,
    tensor_bytes,
    write_driving_video,
)

pack = load_pack()
N = pack.NODE_CLASS_MAPPINGS
objects = pack_submodule(pack, "nodes._objects")
comfy = pack_submodule(pack, "nodes._comfy")
Motion = pack_submodule(pack, "anytalk_core.motion").Motion
AnyTalkError = objects.AnyTalkError
OUR_TYPES = {"ANYTALK_MODEL", "ANYTALK_SOURCE", "ANYTALK_MOTION", "ANYTALK_KEYPOINTS", "ANYTALK_WARP"}
COMFY_TYPES = {"IMAGE", "MASK", "AUDIO", "FLOAT", "INT", "STRING", "BOOLEAN", "VIDEO"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine
    yield make_env(tmp_path_factory.mktemp("comfy"), pack, frames=8)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _active(env):
    env.activate()  # the pack's fallback folders point at this module's environment


def call(name, **kwargs):
    cls = N[name]
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    result = out["result"] if isinstance(out, dict) else out
    for type_, value in zip(cls.RETURN_TYPES, result):
        check_output_value(type_, value, f"{name} {type_}", pack_type_checks(pack))
    return out


@pytest.fixture(scope="module")
def model(env):
    (m,) = call("AnyTalkLoadModel", checkpoint="demo/anytalk_demo.safetensors", family="auto", device="cpu",
                precision="fp32", chunk_size=4)
    return m


def image(h=96, w=96, seed=3, kind="human", **kw):
    return torch.from_numpy(portrait(h, w, seed, kind, **kw)).unsqueeze(0)


@pytest.fixture(scope="module")
def source(env):
    src, _ = call("AnyTalkLoadSource", image=image(), crop="auto", size=64)
    return src


@pytest.fixture(scope="module")
def keypoints(model, source):
    kp, _, own = call("AnyTalkDetectKeypoints", model=model, source=source)
    return kp, own


@pytest.fixture(scope="module")
def driving():
    from comfy_harness import driving_frames

    return driving_frames(6).float() / 255


@pytest.fixture(scope="module")
def motion(model, driving):
    m, _ = call("AnyTalkEstimateMotion", model=model, images=driving, fps=24.0)
    return m


# --------------------------------------------------------------------------------------------------
# Interface conventions
# --------------------------------------------------------------------------------------------------

def test_pack_loads_like_comfyui_without_comfyui_or_a_top_level_nodes_module():
    assert "nodes" not in sys.modules and not any(k.startswith("nodes.") for k in sys.modules)
    assert not any(k == "comfy" or k.startswith("comfy.") or k == "folder_paths" for k in sys.modules)
    assert f"{pack.__name__}.nodes" in sys.modules and f"{pack.__name__}.anytalk_core" in sys.modules
    expected = {"AnyTalkExpressionEdit", "AnyTalkLoadModel", "AnyTalkLoadSource", "AnyTalkDetectKeypoints", "AnyTalkEstimateMotion",
                "AnyTalkMotionEdit", "AnyTalkMotionMix", "AnyTalkMotionSmooth", "AnyTalkTransferMotion",
                "AnyTalkWarp3D", "AnyTalkGenerate", "AnyTalkPasteBack", "AnyTalkLoadVideo", "AnyTalkLoadAudio",
                "AnyTalkSaveMotion", "AnyTalkLoadMotion", "AnyTalkAssembleVideo", "AnyTalkAnimate",
                "AnyTalkAudioToMotion"}
    assert set(N) == expected
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == expected


@pytest.mark.parametrize("name", sorted(load_pack().NODE_CLASS_MAPPINGS))
def test_node_follows_comfyui_conventions(name):
    cls = N[name]
    assert cls.CATEGORY == "AnyTalk"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("AnyTalk ")
    assert callable(getattr(cls, cls.FUNCTION)) and cls.DESCRIPTION
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS) >= 1
    for t in cls.RETURN_TYPES:
        assert t in OUR_TYPES | COMFY_TYPES, t
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for input_name, entry in spec.get(section, {}).items():
            type_, opts = entry[0], entry[1]
            assert opts.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if isinstance(type_, list):
                assert type_ and all(isinstance(c, str) for c in type_)
                assert "default" not in opts or opts["default"] in type_
            elif type_ in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], f"{name}.{input_name}"
                assert isinstance(opts["default"], int if type_ == "INT" else float), f"{name}.{input_name}"
            elif type_ in ("BOOLEAN", "STRING"):
                assert "default" in opts
            else:
                assert type_ in OUR_TYPES | COMFY_TYPES and type_.isupper(), f"{name}.{input_name}: {type_}"
    assert getattr(cls, "OUTPUT_NODE", False) == (name in ("AnyTalkAssembleVideo", "AnyTalkSaveMotion"))


def test_no_video_output_without_comfyui_video_type():
    assert N["AnyTalkAssembleVideo"].RETURN_TYPES == ("STRING",)


def test_nodes_hold_no_model_math_and_import_comfyui_only_lazily():
    forbidden = [r"\btorch\.nn\.(?!functional)", r"\.dense_motion\b", r"\.generator\b", r"\.appearance\b",
                 r"\bgrid_sample\b", r"euler_to_rotation", r"transform_keypoints", r"\.decode\(",
                 r"estimate_motion_raw"]
    for path in sorted((REPO_ROOT / "nodes").glob("*.py")):
        text = path.read_text()
        for pattern in forbidden:
            assert not re.search(pattern, text), f"{path.name}: {pattern}"
        for node in ast.parse(text).body:  # module level: no ComfyUI import, only relative imports of ours
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("comfy", "folder_paths", "comfy_api", "nodes") for n in names)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("anytalk_core"):
                    assert node.level > 0, f"{path.name}: absolute import of anytalk_core"


# --------------------------------------------------------------------------------------------------
# Load Model
# --------------------------------------------------------------------------------------------------

def test_load_model_lists_demo_anytalk_and_liveportrait_folders(env):
    lp = env.base / "models" / "liveportrait" / "liveportrait_animals" / "base_models"
    lp.mkdir(parents=True, exist_ok=True)
    (lp / "appearance_feature_extractor.pth").write_bytes(b"x")
    (env.base / "models" / "anytalk" / "sub").mkdir(exist_ok=True)
    (env.base / "models" / "anytalk" / "sub" / "mine.pth.tar").write_bytes(b"x")
    (env.base / "models" / "anytalk" / "notes.txt").write_text("x")
    choices = N["AnyTalkLoadModel"].INPUT_TYPES()["required"]["checkpoint"][0]
    assert "demo/anytalk_demo.safetensors" in choices
    assert "sub/mine.pth.tar" in choices and "notes.txt" not in choices
    assert "liveportrait/liveportrait_animals/" in choices
    assert pack_submodule(pack, "nodes.model").resolve_checkpoint("liveportrait/liveportrait_animals/") == \
        (lp.parent).resolve()


def test_load_model_wraps_the_network_with_its_settings(model):
    assert model.family == "face_vid2vid" and model.image_size == 64 and model.num_kp == 15
    assert model.chunk_size == 4 and model.device == "cpu" and model.patcher is None
    assert model.engine().device.type == "cpu"


def test_load_model_errors_name_the_file_and_the_fix(env):
    bad = env.base / "models" / "anytalk" / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(AnyTalkError, match=r"AnyTalk Load Model: .*broken\.safetensors.*not a safetensors"):
        call("AnyTalkLoadModel", checkpoint="broken.safetensors", family="auto", device="cpu", precision="fp32",
             chunk_size=8)
    message = N["AnyTalkLoadModel"].VALIDATE_INPUTS(checkpoint="missing.safetensors")
    assert isinstance(message, str) and "models/anytalk" in message and "refresh" in message
    with pytest.raises(AnyTalkError, match="face-vid2vid"):
        call("AnyTalkLoadModel", checkpoint="demo/anytalk_demo.safetensors", family="nonsense", device="cpu",
             precision="fp32", chunk_size=8)


# --------------------------------------------------------------------------------------------------
# Source and keypoints
# --------------------------------------------------------------------------------------------------

def test_load_source_crops_and_previews(source):
    assert source.original.shape == (1, 3, 96, 96) and source.size == 64
    src, preview = call("AnyTalkLoadSource", image=image(120, 160, center=(50, 105), radius=22), crop="box",
                        box_x=80, box_y=25, box_width=50, box_height=50, crop_scale=1.5, size=48)
    assert preview.shape == (1, 48, 48, 3) and src.original_hw == (120, 160)
    assert src.model_input(64).shape == (1, 3, 64, 64)


def test_load_source_accepts_gray_rgba_and_batches():
    gray = image()[..., :1]
    rgba = torch.cat([image(), torch.ones(1, 96, 96, 1)], dim=-1)
    for img in (gray, rgba, torch.cat([image(), image(seed=9)])):
        src, preview = call("AnyTalkLoadSource", image=img, crop="full", size=64, batch_index=img.shape[0] - 1)
        assert preview.shape == (1, 64, 64, 3)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(0, 64, 64, 3), "empty batch"),
    (torch.full((1, 64, 64, 3), float("nan")), "NaN"),
    (torch.zeros(1, 8, 8, 3), "too small"),
    (torch.zeros(1, 3, 64, 64), "channels"),
])
def test_load_source_rejects_bad_images_clearly(bad, match):
    with pytest.raises(AnyTalkError, match=match):
        call("AnyTalkLoadSource", image=bad, crop="full", size=64)


def test_load_source_rejects_bad_box_and_index():
    with pytest.raises(AnyTalkError, match="outside the image"):
        call("AnyTalkLoadSource", image=image(), crop="box", box_x=500, box_y=500, size=64)
    with pytest.raises(AnyTalkError, match="batch_index 3 is out of range"):
        call("AnyTalkLoadSource", image=image(), crop="full", size=64, batch_index=3)


def test_detect_keypoints_outputs_state_overlay_and_source_motion(keypoints, source):
    kp, own = keypoints
    assert kp.driven is None and kp.frames.shape == (1, 15, 3) and kp.source_fingerprint == source.fingerprint
    assert len(own) == 1 and own.family == "face_vid2vid"
    _, overlay, _ = call("AnyTalkDetectKeypoints", model=kp.model, source=source, overlay="both")
    assert overlay.shape == (1, 64, 64, 3)
    assert (overlay - source.crop.permute(0, 2, 3, 1)).abs().max() > 0.1  # something was drawn


def test_source_work_is_done_once_per_model_and_source(model, source):
    cache = objects.SOURCE_CACHE
    before = cache.computed
    for _ in range(3):
        call("AnyTalkDetectKeypoints", model=model, source=source)
    assert cache.computed == before  # computed by the fixture already
    again, _ = call("AnyTalkLoadSource", image=image(), crop="auto", size=64)  # same picture, new object
    call("AnyTalkDetectKeypoints", model=model, source=again)
    assert cache.computed == before
    other, _ = call("AnyTalkLoadSource", image=image(seed=11), crop="auto", size=64)
    call("AnyTalkDetectKeypoints", model=model, source=other)
    assert cache.computed == before + 1


# --------------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------------

def test_estimate_motion_one_record_per_frame(motion, model, driving):
    assert isinstance(motion, Motion) and len(motion) == 6 and motion.fps == 24.0
    assert motion.expression.shape == (6, 15, 3)
    m, preview = call("AnyTalkEstimateMotion", model=model, images=driving[..., :1], crop="auto (first frame)")
    assert len(m) == 6 and preview.shape == (1, 64, 64, 3)
    with pytest.raises(AnyTalkError, match="AnyTalk Estimate Motion: driving images is an empty batch"):
        call("AnyTalkEstimateMotion", model=model, images=driving[:0])


def test_motion_edit(motion):
    (m,) = call("AnyTalkMotionEdit", motion=motion, angle_mode="add", yaw=10.0, pitch=-5.0, shift_x=0.1,
                expression_scale=2.0, start_frame=1, frame_count=3)
    assert len(m) == 3
    assert torch.allclose(m.yaw, motion.yaw[1:4] + 10) and torch.allclose(m.pitch, motion.pitch[1:4] - 5)
    assert torch.allclose(m.translation[:, 0], motion.translation[1:4, 0] + 0.1)
    assert torch.allclose(m.expression, motion.expression[1:4] * 2)
    (held,) = call("AnyTalkMotionEdit", motion=motion, angle_mode="set", yaw=20.0)
    assert torch.all(held.yaw == 20) and torch.all(held.roll == 0)
    (slow,) = call("AnyTalkMotionEdit", motion=motion, target_fps=48.0)
    assert len(slow) == 12 and slow.fps == 48.0
    (still,) = call("AnyTalkMotionEdit", motion=motion[0], frame_count=5)
    assert len(still) == 5
    with pytest.raises(AnyTalkError, match="start_frame 9 is past the end"):
        call("AnyTalkMotionEdit", motion=motion, start_frame=9)


def test_motion_mix_and_family_errors(motion, keypoints):
    _, own = keypoints
    (m,) = call("AnyTalkMotionMix", motion_a=own, motion_b=motion, mode="pose from A, expression from B")
    assert len(m) == 6 and torch.all(m.yaw == own.yaw) and torch.equal(m.expression, motion.expression)
    (b,) = call("AnyTalkMotionMix", motion_a=motion, motion_b=own, mode="blend expressions", weight=0.25)
    assert torch.allclose(b.expression, 0.75 * motion.expression + 0.25 * own.expression)
    other = _other_family(motion)
    with pytest.raises(AnyTalkError, match="pose from A, expression from B"):
        call("AnyTalkMotionMix", motion_a=motion, motion_b=other, mode="blend expressions")
    (cross,) = call("AnyTalkMotionMix", motion_a=other, motion_b=motion)  # pose mixes across families
    assert cross.family == "face_vid2vid"
    with pytest.raises(AnyTalkError, match="same length"):
        call("AnyTalkMotionMix", motion_a=motion, motion_b=motion[:4])


def _other_family(motion):
    n = len(motion)
    return Motion(motion.yaw.clone(), motion.pitch.clone(), motion.roll.clone(), motion.translation.clone(),
                  torch.zeros(n, 21, 3), scale=torch.ones(n), family="liveportrait", fps=motion.fps)


def test_motion_smooth(motion):
    (s,) = call("AnyTalkMotionSmooth", motion=motion, strength=1.0, method="kalman")
    assert len(s) == len(motion) and s.fps == motion.fps
    (same,) = call("AnyTalkMotionSmooth", motion=motion, strength=0.0)
    assert torch.equal(same.yaw, motion.yaw)


def test_save_and_load_motion_round_trip_without_overwriting(env, motion):
    first = call("AnyTalkSaveMotion", motion=motion, filename_prefix="anytalk_motion/take")
    second = call("AnyTalkSaveMotion", motion=motion, filename_prefix="anytalk_motion/take")
    p1, p2 = Path(first["result"][0]), Path(second["result"][0])
    assert p1 != p2 and p1.is_file() and p2.is_file() and p1.parent == env.base / "output" / "anytalk_motion"
    choices = N["AnyTalkLoadMotion"].INPUT_TYPES()["required"]["motion_file"][0]
    name = f"anytalk_motion/{p1.name} [output]"
    assert name in choices
    m, fps, count = call("AnyTalkLoadMotion", path="", motion_file=name)
    assert count == 6 and fps == 24.0 and torch.equal(m.expression, motion.expression)
    with pytest.raises(AnyTalkError, match="outside the output folder"):
        call("AnyTalkSaveMotion", motion=motion, filename_prefix="../escape")
    missing = env.base / "output" / "anytalk_motion" / "no_such.safetensors"
    assert "not found" in N["AnyTalkLoadMotion"].VALIDATE_INPUTS(path=str(missing))
    assert "outside the folders" in N["AnyTalkLoadMotion"].VALIDATE_INPUTS(path="/no/such.safetensors")


# --------------------------------------------------------------------------------------------------
# Transfer, warp, generate, paste back
# --------------------------------------------------------------------------------------------------

def test_transfer_motion(keypoints, motion):
    kp, _ = keypoints
    (driven,) = call("AnyTalkTransferMotion", keypoints=kp, motion=motion, mode="relative", adapt_scale=True)
    assert driven.driven.shape == (6, 15, 3) and driven.state is kp.state and driven.fps == 24.0
    # relative transfer: the reference frame reproduces the source's own keypoints
    assert torch.allclose(driven.driven[0], kp.state.keypoints[0], atol=1e-5)
    (absolute,) = call("AnyTalkTransferMotion", keypoints=kp, motion=motion, mode="absolute")
    assert not torch.allclose(absolute.driven, driven.driven)
    with pytest.raises(AnyTalkError, match="already driven"):
        call("AnyTalkTransferMotion", keypoints=driven, motion=motion)
    with pytest.raises(AnyTalkError, match="reference_frame 6 is past the end"):
        call("AnyTalkTransferMotion", keypoints=kp, motion=motion, reference_frame=6)
    with pytest.raises(AnyTalkError, match=r"liveportrait model \(21 keypoints\).*Motion Mix"):
        call("AnyTalkTransferMotion", keypoints=kp, motion=_other_family(motion))


def test_warp_is_lazy_and_its_size_does_not_grow_with_frames(model, source, keypoints, motion):
    kp, _ = keypoints
    sizes = {}
    for n in (2, 60):
        long = Motion.cat([motion] * math.ceil(n / len(motion)))[:n]
        (driven,) = call("AnyTalkTransferMotion", keypoints=kp, motion=long)
        (plan,) = call("AnyTalkWarp3D", model=model, source=source, keypoints=driven)
        assert len(plan) == n and plan.state is kp.state
        sizes[n] = tensor_bytes(plan)
    volume = kp.state.volume
    per_frame_volume = volume[0].numel() * volume.element_size()
    growth = (sizes[60] - sizes[2]) / 58
    assert growth == 15 * 3 * 4  # the driven keypoints, nothing else per frame
    assert growth < per_frame_volume / 50


def test_generate_frames_and_checks(model, source, keypoints, motion):
    kp, _ = keypoints
    (driven,) = call("AnyTalkTransferMotion", keypoints=kp, motion=motion)
    (plan,) = call("AnyTalkWarp3D", model=model, source=source, keypoints=driven)
    (frames,) = call("AnyTalkGenerate", model=model, source=source, warp=plan)
    assert frames.shape == (6, 64, 64, 3)
    (still,) = call("AnyTalkWarp3D", model=model, source=source, keypoints=kp)  # undriven: one frame
    assert call("AnyTalkGenerate", model=model, source=source, warp=still)[0].shape == (1, 64, 64, 3)
    other, _ = call("AnyTalkLoadSource", image=image(seed=12), crop="full", size=64)
    with pytest.raises(AnyTalkError, match="different source image"):
        call("AnyTalkGenerate", model=model, source=other, warp=plan)
    with pytest.raises(AnyTalkError, match="different source image"):
        call("AnyTalkWarp3D", model=model, source=other, keypoints=driven)


def test_paste_back_keeps_everything_outside_the_crop(model):
    photo = image(120, 160, seed=5, center=(50, 105), radius=22)
    src, _ = call("AnyTalkLoadSource", image=photo, crop="box", box_x=80, box_y=25, box_width=50, box_height=50,
                  size=64)
    frames = torch.rand(3, 64, 64, 3)
    (full,) = call("AnyTalkPasteBack", frames=frames, source=src, original=photo, feather=0.1)
    assert full.shape == (3, 120, 160, 3)
    assert torch.equal(full[:, :, :60], photo.expand(3, -1, -1, -1)[:, :, :60])  # left of the crop: untouched
    assert (full[:, 50, 105] - photo[0, 50, 105]).abs().max() > 0  # the crop's centre: replaced
    (same,) = call("AnyTalkPasteBack", frames=frames, source=src)  # default original: Load Source's image
    assert torch.equal(same, full)
    with pytest.raises(AnyTalkError, match="cropped from a 160x120 image"):
        call("AnyTalkPasteBack", frames=frames, source=src, original=image(64, 64))


def test_liveportrait_weights_folder_runs_through_the_split_graph(env, driving):
    from conftest import conformance_dir

    lp_src = conformance_dir() / "liveportrait"
    if not (lp_src / "appearance_feature_extractor.safetensors").is_file():
        pytest.skip(f"LivePortrait reference weights not found in {lp_src}")
    folder = env.base / "models" / "liveportrait" / "reduced"
    folder.mkdir(parents=True, exist_ok=True)
    for f in lp_src.glob("*.safetensors"):
        if not f.stem.startswith("vectors") and not (folder / f.name).exists():
            (folder / f.name).symlink_to(f)
    assert "liveportrait/reduced/" in N["AnyTalkLoadModel"].INPUT_TYPES()["required"]["checkpoint"][0]
    (m,) = call("AnyTalkLoadModel", checkpoint="liveportrait/reduced/", family="LivePortrait animal", device="cpu",
                precision="fp32", chunk_size=2)
    assert m.family == "liveportrait_animal" and m.num_kp == 21
    src, _ = call("AnyTalkLoadSource", image=image(seed=41), crop="full", size=64)
    kp, _, own = call("AnyTalkDetectKeypoints", model=m, source=src)
    motion, _ = call("AnyTalkEstimateMotion", model=m, images=driving[:2])
    assert motion.family == own.family == "liveportrait" and motion.num_kp == 21
    (driven,) = call("AnyTalkTransferMotion", keypoints=kp, motion=motion)
    (plan,) = call("AnyTalkWarp3D", model=m, source=src, keypoints=driven)
    (frames,) = call("AnyTalkGenerate", model=m, source=src, warp=plan)
    side = frames.shape[1]
    assert frames.shape == (2, side, side, 3) and side == 2 * m.image_size  # LivePortrait's decoder upsamples 2x
    (full,) = call("AnyTalkPasteBack", frames=frames, source=src)
    assert full.shape == (2, 96, 96, 3)
    face_motion, _ = call("AnyTalkEstimateMotion", model=call("AnyTalkLoadModel", checkpoint="demo/anytalk_demo."
                          "safetensors", family="auto", device="cpu", precision="fp32", chunk_size=4)[0],
                          images=driving[:2])
    with pytest.raises(AnyTalkError, match=r"face_vid2vid model \(15 keypoints\).*liveportrait model"):
        call("AnyTalkTransferMotion", keypoints=kp, motion=face_motion)
    (posed,) = call("AnyTalkMotionMix", motion_a=face_motion, motion_b=own)  # pose crosses families
    (driven_pose,) = call("AnyTalkTransferMotion", keypoints=kp, motion=posed)
    assert driven_pose.driven.shape == (2, 21, 3)


# --------------------------------------------------------------------------------------------------
# Media
# --------------------------------------------------------------------------------------------------

def test_load_video_frames_audio_fps(env):
    images, audio, fps, count = call("AnyTalkLoadVideo", frame_rate=0.0, max_frames=0, skip_first_frames=0,
                                     max_size=0, path="", video="anytalk_driving.mp4")
    assert images.shape == (8, 64, 64, 3) and count == 8 and fps == 25.0
    assert audio["waveform"].shape[:2] == (1, 1) and audio["sample_rate"] == 16000
    assert audio["waveform"].shape[2] == round(8 / 25 * 16000)
    part, a2, _, n = call("AnyTalkLoadVideo", frame_rate=0.0, max_frames=3, skip_first_frames=2, max_size=32,
                          path="", video="anytalk_driving.mp4")
    assert part.shape == (3, 32, 32, 3) and n == 3 and a2["waveform"].shape[2] == round(3 / 25 * 16000)
    silent = write_driving_video(pack, env.base / "input" / "silent.mp4", 4, audio=False)
    _, a3, _, _ = call("AnyTalkLoadVideo", frame_rate=0.0, max_frames=0, skip_first_frames=0, max_size=0,
                       path=str(silent), video="anytalk_driving.mp4")
    assert a3["waveform"].abs().max() == 0 and a3["waveform"].shape[2] == round(4 / 25 * 16000)
    assert N["AnyTalkLoadVideo"].VALIDATE_INPUTS(path="") is True  # the file list is ComfyUI's own check
    assert "not found" in N["AnyTalkLoadVideo"].VALIDATE_INPUTS(path="nope.mp4")
    with pytest.raises(AnyTalkError, match="not found"):
        call("AnyTalkLoadVideo", frame_rate=0.0, max_frames=0, skip_first_frames=0, max_size=0, path="",
             video="nope.mp4")
    sig = N["AnyTalkLoadVideo"].IS_CHANGED(path="", video="anytalk_driving.mp4")
    assert sig and sig != N["AnyTalkLoadVideo"].IS_CHANGED(path="", video="anytalk_driving_b.mp4")


def test_load_audio_from_a_video_track(env):
    (audio,) = call("AnyTalkLoadAudio", start_time=0.1, duration=0.1, sample_rate=8000, mono=True, path="",
                    audio="anytalk_driving.mp4")
    assert audio["sample_rate"] == 8000 and audio["waveform"].shape == (1, 1, 800)
    with pytest.raises(AnyTalkError, match="past the end"):
        call("AnyTalkLoadAudio", start_time=60.0, duration=0.0, sample_rate=0, mono=False, path="",
             audio="anytalk_driving.mp4")


def test_assemble_video_saves_new_files_with_preview_and_audio(env):
    media = pack_submodule(pack, "anytalk_core.media")
    frames = torch.rand(5, 48, 48, 3)
    sound = {"waveform": torch.zeros(1, 2, 1000), "sample_rate": 16000}
    outs = [call("AnyTalkAssembleVideo", images=frames, fps=10.0, filename_prefix="clips/test", format="mp4", crf=0,
                 save_output=True, audio=sound) for _ in range(2)]
    paths = [Path(o["result"][0]) for o in outs]
    assert paths[0] != paths[1] and all(p.parent == env.base / "output" / "clips" for p in paths)
    ui = outs[0]["ui"]
    assert ui["animated"] == (True,)
    assert ui["images"][0] == {"filename": paths[0].name, "subfolder": "clips", "type": "output",
                               "format": "video/mp4"}
    info = media.probe_video(paths[0])
    assert info.frame_count == 5 and info.has_audio and (info.width, info.height) == (48, 48)
    gif = call("AnyTalkAssembleVideo", images=frames, fps=10.0, filename_prefix="prev", format="gif", crf=0,
               save_output=False, audio=sound)
    assert Path(gif["result"][0]).parent == env.base / "temp" and gif["ui"]["images"][0]["type"] == "temp"
    with pytest.raises(AnyTalkError, match="outside the output folder"):
        call("AnyTalkAssembleVideo", images=frames, fps=10.0, filename_prefix="../../x", format="mp4", crf=0,
             save_output=True)
    bad = frames.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(AnyTalkError, match="frames 0 to 4 contain NaN"):
        call("AnyTalkAssembleVideo", images=bad, fps=10.0, filename_prefix="nan", format="mp4", crf=0,
             save_output=True)
    assert not list((env.base / "output").glob("nan*"))
    with pytest.raises(AnyTalkError, match="AnyTalk Assemble Video: .*NaN"):
        call("AnyTalkAssembleVideo", images=frames, fps=10.0, filename_prefix="bad", format="mp4", crf=0,
             save_output=True, audio={"waveform": torch.full((1, 1, 100), float("nan")), "sample_rate": 16000})


# --------------------------------------------------------------------------------------------------
# Audio to Motion
# --------------------------------------------------------------------------------------------------

def plain_model():
    """A checkpoint without an audio-to-motion part, loaded through Load Model."""
    path = comfy.model_dirs("anytalk")[0] / "plain.safetensors"
    if not path.exists():
        config = pack_submodule(pack, "anytalk_core.models.config")
        registry = pack_submodule(pack, "anytalk_core.models.registry")
        torch.manual_seed(0)
        pack_submodule(pack, "anytalk_core.checkpoints").save_checkpoint(
            registry.build_model(config.tiny_config(with_discriminator=False)), path)
    (m,) = call("AnyTalkLoadModel", checkpoint="plain.safetensors", family="auto", device="cpu", precision="fp32",
                chunk_size=4)
    return m


def speech_audio(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> dict:
    synthetic = pack_submodule(pack, "anytalk_core.synthetic")
    features = pack_submodule(pack, "anytalk_core.audio_features")
    wave = features.resample(synthetic.synth_speech(int(seconds * 16000), seed).waveform, 16000, rate)
    return {"waveform": wave.expand(channels, -1)[None].contiguous(), "sample_rate": rate}


def test_audio_to_motion_node_makes_motion_for_mix_and_transfer(model, keypoints, motion):
    m, rest, n = call("AnyTalkAudioToMotion", model=model, audio=speech_audio(0.25, 44100, 2), fps=24.0)
    assert isinstance(m, Motion) and n == len(m) == 6 and m.fps == 24.0 and len(rest) == 1
    assert m.family == motion.family and m.num_kp == motion.num_kp
    # pose from a video, expression from the audio (frame_count = the video's frames)
    fitted, _, _ = call("AnyTalkAudioToMotion", model=model, audio=speech_audio(0.1), fps=24.0, frame_count=len(motion))
    (mixed,) = call("AnyTalkMotionMix", motion_a=motion, motion_b=fitted, mode="pose from A, expression from B")
    assert torch.equal(mixed.yaw, motion.yaw) and torch.equal(mixed.expression, fitted.expression)
    # relative to the rest motion, silence leaves the portrait as it is
    kp, _ = keypoints
    silent, rest, _ = call("AnyTalkAudioToMotion", model=model, audio={"waveform": torch.zeros(1, 1, 8000),
                                                                          "sample_rate": 16000}, fps=25.0)
    (driven,) = call("AnyTalkTransferMotion", keypoints=kp, motion=silent, reference_motion=rest)
    assert torch.allclose(driven.driven, kp.state.keypoints.expand(len(silent), -1, -1), atol=1e-4)
    (still,) = call("AnyTalkAudioToMotion", model=model, audio=speech_audio(0.25), fps=24.0, expression_strength=0.0,
                    pose_strength=0.0)[:1]
    assert torch.allclose(still.expression, rest.expression.expand(6, -1, -1), atol=1e-5)
    with pytest.raises(AnyTalkError, match=r"AnyTalk Audio to Motion: .*no audio-to-motion weights.*anytalk-train"):
        call("AnyTalkAudioToMotion", model=plain_model(), audio=speech_audio(0.1), fps=25.0)
    with pytest.raises(AnyTalkError, match="NaN"):
        call("AnyTalkAudioToMotion", model=model, audio={"waveform": torch.full((1, 1, 100), float("nan")),
                                                          "sample_rate": 16000}, fps=25.0)
    with pytest.raises(AnyTalkError, match="reference_motion comes from a liveportrait model"):
        call("AnyTalkTransferMotion", keypoints=kp, motion=silent, reference_motion=_other_family(rest))


# --------------------------------------------------------------------------------------------------
# Animate (all in one)
# --------------------------------------------------------------------------------------------------

def test_animate_all_in_one(model, driving):
    cache = objects.SOURCE_CACHE
    src = image(seed=21)
    frames, audio, fps = call("AnyTalkAnimate", model=model, source_image=src, driving_images=driving, fps=24.0)
    assert frames.shape == (6, 64, 64, 3) and fps == 24.0
    assert audio["waveform"].shape[2] == round(6 / 24 * 16000) and audio["waveform"].abs().max() == 0
    computed = cache.computed
    full, _, _ = call("AnyTalkAnimate", model=model, source_image=src, driving_images=driving[:3], paste_back=True,
                      fps=24.0, audio={"waveform": torch.ones(1, 1, 48000), "sample_rate": 48000})
    assert full.shape == (3, 96, 96, 3)
    assert cache.computed == computed  # another driving clip: the source work is reused
    speech = speech_audio(0.25, channels=2)
    talking, sound, _ = call("AnyTalkAnimate", model=model, source_image=src, audio=speech, fps=24.0)
    assert talking.shape == (6, 64, 64, 3) and sound["waveform"].shape[2] == 4000  # the speech drives the face
    assert cache.computed == computed
    mixed, _, _ = call("AnyTalkAnimate", model=model, source_image=src, driving_images=driving, audio=speech,
                       fps=24.0, audio_drives_expression=True)
    assert mixed.shape == (6, 64, 64, 3) and not torch.equal(mixed, frames)
    with pytest.raises(AnyTalkError, match="audio-to-motion"):
        call("AnyTalkAnimate", model=plain_model(), source_image=src, audio=speech)
    with pytest.raises(AnyTalkError, match="driving_images .* or speech audio"):
        call("AnyTalkAnimate", model=model, source_image=src)
    with pytest.raises(AnyTalkError, match="not both"):
        call("AnyTalkAnimate", model=model, source_image=src, driving_images=driving,
             driving_motion=call("AnyTalkEstimateMotion", model=model, images=driving)[0])


# --------------------------------------------------------------------------------------------------
# Inside ComfyUI: folder_paths, ProgressBar + Cancel, model management, VIDEO (stand-in modules)
# --------------------------------------------------------------------------------------------------

class FakeComfy:
    """Installs minimal stand-ins of ComfyUI's runtime modules in sys.modules (removed on exit)."""

    def __init__(self, base: Path, with_video: bool = False):
        self.base = base
        self.with_video = with_video
        self.progress: list[tuple[int, int, int]] = []
        self.loaded: list = []
        self.registered: dict[str, list[str]] = {}
        self.empty_cache = 0
        self.interrupt = False
        self.names = ("comfy", "comfy.utils", "comfy.model_management", "comfy.model_patcher", "folder_paths",
                      "comfy_api", "comfy_api.latest")

    def __enter__(self):
        fake = self

        class InterruptProcessingException(Exception):
            pass

        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = InterruptProcessingException
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.module_size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())

        def throw():
            if fake.interrupt:
                raise InterruptProcessingException()

        def soft_empty_cache():
            fake.empty_cache += 1

        def load_models_gpu(patchers, force_full_load=False):
            for p in patchers:
                p.model.to(p.load_device)
                fake.loaded.append(p)

        mm.throw_exception_if_processing_interrupted = throw
        mm.soft_empty_cache = soft_empty_cache
        mm.load_models_gpu = load_models_gpu

        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.id = total, len(fake.progress)

            def update_absolute(self, value, total=None, preview=None):
                fake.progress.append((self.id, value, total or self.total))
                throw()

        utils.ProgressBar = ProgressBar
        patcher = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0):
                self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size

        patcher.ModelPatcher = ModelPatcher
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.base / "models")
        paths: dict[str, list[str]] = {}

        def add_model_folder_path(name, path, is_default=False):
            paths.setdefault(name, [])
            fake.registered.setdefault(name, []).append(path)
            if path not in paths[name]:
                paths[name].insert(0, path) if is_default else paths[name].append(path)

        def get_save_image_path(prefix, output_dir, w=0, h=0):
            sub, _, name = prefix.rpartition("/")
            folder = Path(output_dir) / sub
            folder.mkdir(parents=True, exist_ok=True)
            return str(folder), name, 1, sub, prefix

        fp.add_model_folder_path = add_model_folder_path
        fp.get_folder_paths = lambda name: list(paths[name])
        fp.get_input_directory = lambda: str(self.base / "input")
        fp.get_output_directory = lambda: str(self.base / "comfy_output")
        fp.get_temp_directory = lambda: str(self.base / "temp")
        fp.get_save_image_path = get_save_image_path
        comfy_pkg = types.ModuleType("comfy")
        comfy_pkg.__path__ = []
        comfy_pkg.utils, comfy_pkg.model_management, comfy_pkg.model_patcher = utils, mm, patcher
        mods = {"comfy": comfy_pkg, "comfy.utils": utils, "comfy.model_management": mm,
                "comfy.model_patcher": patcher, "folder_paths": fp}
        if self.with_video:
            api = types.ModuleType("comfy_api")
            api.__path__ = []
            latest = types.ModuleType("comfy_api.latest")

            class VideoFromFile:
                def __init__(self, path):
                    self.path = path

            latest.InputImpl = types.SimpleNamespace(VideoFromFile=VideoFromFile)
            api.latest = latest
            mods.update({"comfy_api": api, "comfy_api.latest": latest})
        self.interrupted_type = InterruptProcessingException
        for name, mod in mods.items():
            assert name not in sys.modules
            sys.modules[name] = mod
        comfy._registered = False
        return self

    def __exit__(self, *exc):
        for name in self.names:
            sys.modules.pop(name, None)
        comfy._registered = False


def test_inside_comfyui_services_are_used(env, driving):
    with FakeComfy(env.base) as fake:
        choices = N["AnyTalkLoadModel"].INPUT_TYPES()["required"]["checkpoint"][0]
        assert set(fake.registered) == {"anytalk", "liveportrait"}
        assert fake.registered["anytalk"] == [str(env.base / "models" / "anytalk")]
        assert "demo/anytalk_demo.safetensors" in choices
        (m,) = call("AnyTalkLoadModel", checkpoint="demo/anytalk_demo.safetensors", family="auto", device="auto",
                    precision="fp32", chunk_size=2)
        assert m.patcher is not None and m.patcher.size > 0
        src, _ = call("AnyTalkLoadSource", image=image(seed=31), crop="full", size=64)
        kp, _, _ = call("AnyTalkDetectKeypoints", model=m, source=src)
        motion, _ = call("AnyTalkEstimateMotion", model=m, images=driving)
        (driven,) = call("AnyTalkTransferMotion", keypoints=kp, motion=motion)
        (plan,) = call("AnyTalkWarp3D", model=m, source=src, keypoints=driven)
        fake.progress.clear()
        (frames,) = call("AnyTalkGenerate", model=m, source=src, warp=plan)
        assert frames.shape[0] == 6 and fake.loaded and fake.loaded[-1] is m.patcher
        assert [v for _, v, _ in fake.progress] == [2, 4, 6] and {t for _, _, t in fake.progress} == {6}
        assert fake.empty_cache >= 1
        out = call("AnyTalkAssembleVideo", images=frames, fps=25.0, filename_prefix="AnyTalk", format="mp4", crf=0,
                   save_output=True)
        assert Path(out["result"][0]).parent == env.base / "comfy_output"
        fake.interrupt = True  # Cancel pressed: ComfyUI's own exception comes through, not an error message
        with pytest.raises(fake.interrupted_type):
            call("AnyTalkGenerate", model=m, source=src, warp=plan)
        with pytest.raises(fake.interrupted_type):
            call("AnyTalkEstimateMotion", model=m, images=driving)


def test_video_output_only_where_comfyui_has_the_type(env, tmp_path):
    with FakeComfy(env.base, with_video=True):
        fresh = load_pack("anytalk_pack_with_video_type")
        cls = fresh.NODE_CLASS_MAPPINGS["AnyTalkAssembleVideo"]
        assert cls.RETURN_TYPES == ("STRING", "VIDEO") and len(cls.OUTPUT_TOOLTIPS) == 2
        out = cls().assemble(torch.rand(2, 32, 32, 3), fps=5.0, filename_prefix="v", format="mp4", crf=0,
                             save_output=True)
        path, video = out["result"]
        assert video.path == path and Path(path).is_file()


@pytest.mark.parametrize("max_frames,skip", [(0, 0), (100, 0), (5, 0), (0, 3)])
def test_load_video_progress_runs_to_the_frames_it_loads(env, max_frames, skip):
    """The bar's total is the clip's real length (from the probe), not max_frames; it ends at 100 %."""
    clip = env.base / "input" / "progress.mp4"
    if not clip.exists():
        write_driving_video(pack, clip, 40)
    with FakeComfy(env.base) as fake:
        *_, count = call("AnyTalkLoadVideo", frame_rate=0.0, max_frames=max_frames, skip_first_frames=skip,
                         max_size=0, path="", video="progress.mp4")
    assert count == (min(max_frames, 40) if max_frames else 40 - skip)
    assert fake.progress, "no progress reported"
    totals = {t for _, _, t in fake.progress}
    assert totals == {count}, fake.progress
    assert fake.progress[-1][1:] == (count, count)


@pytest.mark.parametrize("words", ["talking head", "lip sync"])
def test_node_search_finds_what_people_type(words):
    """The front end's search (Fuse over class and display names, threshold 0.3, penalising matches by their
    distance from the start / 100) finds a word only near the start of a name; newer front ends also read
    SEARCH_ALIASES."""
    found = []
    for key, display in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        name = display.casefold()
        if all(0 <= name.find(word) and name.find(word) + len(word) <= 30 for word in words.split()):
            found.append(key)
    assert found, words
    for key in found:
        assert words in N[key].SEARCH_ALIASES
    for cls in N.values():
        aliases = getattr(cls, "SEARCH_ALIASES", ())
        assert isinstance(aliases, tuple) and all(isinstance(a, str) and a == a.casefold() for a in aliases)
