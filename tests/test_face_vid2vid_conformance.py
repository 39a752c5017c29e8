"""Our loader and forward pass against the face-vid2vid reference tensors (any widths, seeds, frames)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from anytalk_core import checkpoints
from anytalk_core.models import TransferOptions
from anytalk_core.models.config import ModelConfig
from anytalk_core.engine import Engine, EngineConfig
from anytalk_core.models.face_vid2vid import map_face_vid2vid
from anytalk_core.models.registry import build_model, get_family
from anytalk_core.stages import animate_clip

MODES = {
    "abs": TransferOptions(mode="absolute"),
    "rel": TransferOptions(mode="relative"),
    "relscale": TransferOptions(mode="relative", adapt_scale=True),
}


def animate(model, source, driving):
    """Every stage in memory on the CPU: (1, 3, H, W), (N, 3, H, W) -> generated frames (N, 3, H, W)."""
    return torch.cat(list(animate_clip(Engine(model, EngineConfig(device="cpu")), source, driving)))


@pytest.fixture(scope="module")
def ref(conformance_root):
    folder = conformance_root / "face_vid2vid"
    if not folder.is_dir():
        pytest.skip(f"no face_vid2vid folder in {conformance_root}")
    return folder


@pytest.fixture(scope="module")
def tolerances(ref):
    return json.loads((ref / "tolerances.json").read_text())


def run_reference_pipeline(model, vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor the reference README lists, computed through our public model API."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for tag, images in (("src", vectors["source"]), ("drv", vectors["driving"])):
            raw = model.estimate_motion_raw(images)
            motion = model.motion_from_raw(raw)
            canonical = model.canonical_keypoints(images)
            out.update({
                f"{tag}.kp_canonical": canonical,
                f"{tag}.yaw_logits": raw["yaw"], f"{tag}.pitch_logits": raw["pitch"], f"{tag}.roll_logits": raw["roll"],
                f"{tag}.yaw_deg": motion.yaw, f"{tag}.pitch_deg": motion.pitch, f"{tag}.roll_deg": motion.roll,
                f"{tag}.t": raw["t"], f"{tag}.exp": raw["exp"], f"{tag}.rotation": model.rotation(motion),
            })
        source = model.prepare_source(vectors["source"])
        out["src.kp"] = source.keypoints
        out["src.feature_volume"] = source.volume
        driving = model.estimate_motion(vectors["driving"])
        n = len(driving)
        for mode, options in MODES.items():
            kp = model.driven_keypoints(source, driving, options)
            out[f"{mode}.kp_driving"] = kp
            if mode == "relscale":
                kp0 = model.motion_keypoints(source.canonical, driving[0])
                out["relscale.movement_scale"] = torch.tensor([model.movement_scale(source.keypoints, kp0)],
                                                              dtype=kp.dtype)
                continue
            decoded = model.decode(source.volume.expand(n, *source.volume.shape[1:]), kp,
                                   source.keypoints.expand(n, -1, -1))
            for name in ("occlusion_map", "deformation", "prediction", "mask", "decoder_input"):
                if name in decoded:  # no occlusion map when a model is configured without one
                    out[f"{mode}.{name}"] = decoded[name]
        if hasattr(model, "discriminator"):
            features, prediction = model.discriminator(vectors["driving"])["1"]
            for i, f in enumerate(features):
                out[f"disc.feature_map_{i}"] = f
            out["disc.prediction_map"] = prediction
    return out


def compare(got: dict, expected: dict, atol, rtol: float = 0.0) -> list[str]:
    failures = []
    for name, want in expected.items():
        if name in ("source", "driving"):
            continue
        assert name in got, f"our pipeline does not produce reference tensor {name!r}"
        have = got[name].reshape(want.shape) if got[name].numel() == want.numel() else got[name]
        assert have.shape == want.shape, f"{name}: shape {tuple(have.shape)} != {tuple(want.shape)}"
        assert have.dtype == want.dtype, f"{name}: dtype {have.dtype} != {want.dtype}"
        tol = atol(name) if callable(atol) else atol
        if not torch.allclose(have, want, atol=tol, rtol=rtol):
            failures.append(f"{name}: max abs err {(have - want).abs().max().item():.3g} > {tol:.3g}")
    return failures


def load_reference(ref, filename: str, **kwargs):
    """Our public loader; the one setting weights cannot carry (the softmax temperature) comes from config.json."""
    params = json.loads((ref / "config.json").read_text())["model_params"]
    temperature = params.get("kp_detector_params", {}).get("temperature")
    overrides = {"keypoints": {"temperature": temperature}} if temperature is not None else None
    return checkpoints.load_model(ref / filename, config_overrides=overrides, **kwargs)


@pytest.mark.parametrize("filename", ["checkpoint.pth.tar", "checkpoint.safetensors"])
def test_float64_matches_reference(ref, filename):
    model = load_reference(ref, filename, with_discriminator=True).double()
    vectors = load_file(str(ref / "vectors_f64.safetensors"))
    tol = json.loads((ref / "tolerances.json").read_text())
    failures = compare(run_reference_pipeline(model, vectors), vectors, tol.get("float64_atol", 1e-6),
                       tol.get("float64_rtol", 1e-6))
    assert not failures, "\n".join(failures)


def test_float32_matches_reference_within_tolerances(ref, tolerances):
    model = load_reference(ref, "checkpoint.pth.tar", with_discriminator=True)
    vectors = load_file(str(ref / "vectors.safetensors"))
    atol = tolerances["float32_atol"]
    failures = compare(run_reference_pipeline(model, vectors), vectors, lambda name: atol[name])
    assert not failures, "\n".join(failures)


def test_batched_driving_frames_agree_with_one_at_a_time(ref, tolerances):
    model = load_reference(ref, "checkpoint.safetensors")
    vectors = load_file(str(ref / "vectors.safetensors"))
    source = model.prepare_source(vectors["source"])
    with torch.no_grad():
        driving = model.estimate_motion(vectors["driving"])
        kp = model.driven_keypoints(source, driving)
        n = kp.shape[0]
        batched = model.decode(source.volume.expand(n, -1, -1, -1, -1), kp, source.keypoints.expand(n, -1, -1))
        single = torch.cat([model.decode(source.volume, kp[i:i + 1], source.keypoints)["prediction"] for i in range(n)])
    assert (batched["prediction"] - single).abs().max() <= tolerances["float32_atol"]["rel.prediction"]


def test_inferred_config_matches_reference_config(ref):
    config = json.loads((ref / "config.json").read_text())["model_params"]
    model = checkpoints.load_model(ref / "checkpoint.pth.tar", with_discriminator=True)
    c = model.config
    kp = config["kp_detector_params"]
    gen = config["generator_params"]
    assert c.num_kp == config["common_params"]["num_kp"]
    assert (c.keypoints.block_expansion, c.keypoints.num_blocks, c.keypoints.reshape_channel,
            c.keypoints.reshape_depth, c.keypoints.scale_factor) == (
        kp["block_expansion"], kp["num_blocks"], kp["reshape_channel"], kp["reshape_depth"], kp["scale_factor"])
    assert tuple(c.motion.stage_features) == tuple(config["he_estimator_params"]["stage_features"])
    assert (c.appearance.block_expansion, c.appearance.num_down_blocks, c.appearance.feature_channels,
            c.appearance.reshape_depth) == (gen["block_expansion"], gen["num_down_blocks"], gen["reshape_channel"],
                                            gen["reshape_depth"])
    dm = gen["dense_motion_params"]
    assert (c.dense_motion.block_expansion, c.dense_motion.num_blocks, c.dense_motion.compress) == (
        dm["block_expansion"], dm["num_blocks"], dm["compress"])
    sd = gen["spade_decoder"]
    assert (c.generator.ic, c.generator.oc, c.generator.label_nc, c.generator.spade_hidden) == (
        sd["ic"], sd["oc"], sd["label_nc"], sd["spade_hidden"])


def full_size_state(ref) -> dict[str, torch.Tensor]:
    """A state dict of the released full-size layout (zeros) from keys_full.json, in our key layout."""
    manifest = json.loads((ref / "keys_full.json").read_text())
    files = manifest["files"]
    modules = next(iter(files.values()))
    tensors = {name: {k: torch.zeros(shape, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
                      for k, shape in keys.items()} for name, keys in modules.items()}
    return map_face_vid2vid(tensors)


def test_full_size_manifest_loads_strictly_into_default_modules(ref):
    state = full_size_state(ref)
    model = build_model(get_family("face_vid2vid").default_config(), with_discriminator=True)
    checkpoints.check_state_dict("keys_full.json", model, state)  # raises with a list of problems
    model.load_state_dict(state, strict=True)
    manifest = json.loads((ref / "keys_full.json").read_text())
    counts = manifest["param_counts"]
    ours = {name: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))
            for name, prefixes in (("generator", ("appearance.", "dense_motion.", "generator.")),
                                   ("kp_detector", ("keypoints.",)), ("he_estimator", ("motion.",)),
                                   ("discriminator", ("discriminator.",)))}
    assert ours == {k: counts[k] for k in ours}


def test_full_size_config_is_inferred_from_shapes(ref):
    state = full_size_state(ref)
    inferred = get_family("face_vid2vid").infer_config(state)
    default = get_family("face_vid2vid").default_config()
    assert inferred.to_dict() == default.to_dict()


def test_convert_round_trip_gives_identical_outputs(ref, tmp_path):
    dst = tmp_path / "converted.safetensors"
    checkpoints.convert(ref / "checkpoint.pth.tar", dst)
    original = checkpoints.load_model(ref / "checkpoint.pth.tar")
    converted = checkpoints.load_model(dst)
    assert ModelConfig.from_json(converted.config.to_json()) == converted.config
    vectors = load_file(str(ref / "vectors.safetensors"))
    a = animate(original, vectors["source"], vectors["driving"])
    b = animate(converted, vectors["source"], vectors["driving"])
    assert torch.equal(a, b)
    with pytest.raises(checkpoints.CheckpointError, match="already exists"):
        checkpoints.convert(ref / "checkpoint.pth.tar", dst)


def test_detection_reads_keys_not_file_names(ref, tmp_path):
    # A copy of the reference file under another name still loads (detection reads keys, not names).
    dst = tmp_path / "weights_any_name.bin.safetensors"
    shutil.copy(ref / "checkpoint.safetensors", dst)
    assert checkpoints.load_model(dst).family == "face_vid2vid"
