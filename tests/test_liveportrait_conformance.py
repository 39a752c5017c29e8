"""LivePortrait: the public loader reads the reference layouts and our forward pass reproduces the reference.

Data: ``$ANYTALK_CONFORMANCE_DIR/liveportrait`` (default ``<repo>/../shared/conformance``), a reduced-width
checkpoint in the released file layout with every intermediate tensor of the reference pipeline (see its
README). Sizes, frame counts, options and key prefixes are read from its ``config.json`` and tensors.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from anytalk_core.checkpoints import CheckpointError, load_model, read_weights, save_checkpoint
from anytalk_core.models.liveportrait import (
    MODULE_FILES,
    STITCHING_FILE,
    LivePortraitModel,
    LivePortraitOptions,
    default_config,
)
from anytalk_core.models.registry import get_family

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANYTALK_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance")) / "liveportrait"
NEEDED = ("config.json", "keys_full.json", "tolerances.json", "vectors.safetensors", "vectors_f64.safetensors")
INPUTS = ("source", "driving", "retarget.eye_ratio", "retarget.lip_ratio")
ALL_FILES = (*MODULE_FILES, STITCHING_FILE)

pytestmark = pytest.mark.skipif(
    not all((DATA / name).is_file() for name in NEEDED),
    reason=f"LivePortrait conformance data not found in {DATA} (set ANYTALK_CONFORMANCE_DIR)",
)


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref_config() -> dict:
    return json.loads((DATA / "config.json").read_text())


@pytest.fixture(scope="module")
def tolerances() -> dict:
    return json.loads((DATA / "tolerances.json").read_text())


def make_folder(root: Path, suffix: str, name: str = "liveportrait") -> Path:
    """Copy the reference files of one kind (.pth or .safetensors) into a fresh folder."""
    folder = root / name
    folder.mkdir()
    for module in ALL_FILES:
        src = DATA / f"{module}{suffix}"
        if not src.is_file():
            pytest.skip(f"{src.name} not in the conformance data")
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return {suffix: make_folder(tmp_path_factory.mktemp(suffix.strip(".")), suffix) for suffix in (".pth", ".safetensors")}


@pytest.fixture(scope="module")
def models(folders) -> dict[str, LivePortraitModel]:
    return {suffix: load_model(folder, family="liveportrait") for suffix, folder in folders.items()}


@pytest.fixture(scope="module")
def model(models) -> LivePortraitModel:
    return models[".pth"]


def pipeline_options(ref_config: dict, **changes) -> LivePortraitOptions:
    opts = ref_config.get("pipeline_options", {})
    unsupported = {k: opts[k] for k in ("flag_normalize_lip", "flag_eye_retargeting", "flag_lip_retargeting") if opts.get(k)}
    if opts.get("animation_region", "all") != "all" or unsupported:
        pytest.skip(f"pipeline options not covered by this test: {unsupported or opts['animation_region']}")
    kwargs = dict(
        mode="relative" if opts.get("flag_relative_motion", True) else "absolute",
        expression_friendly=opts.get("driving_option", "expression-friendly") == "expression-friendly",
        stitching=opts.get("flag_stitching", True),
        driving_multiplier=opts.get("driving_multiplier", 1.0),
    )
    kwargs.update(changes)
    return LivePortraitOptions(**kwargs)


def run_pipeline(model: LivePortraitModel, vectors: dict[str, torch.Tensor], options: LivePortraitOptions) -> dict[str, torch.Tensor]:
    """Every reference tensor, computed through the public model API and named as in the vectors."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        source = model.prepare_source(vectors["source"])
        for prefix, image in (("src", vectors["source"]), ("drv", vectors["driving"])):
            raw = model.estimate_motion_raw(image)
            motion, canonical = model.motion_from_raw(raw), model.canonical_from_raw(raw)
            for angle in ("pitch", "yaw", "roll"):
                out[f"{prefix}.{angle}_logits"] = raw[angle]
                out[f"{prefix}.{angle}_deg"] = getattr(motion, angle)[:, None]
            out[f"{prefix}.t"], out[f"{prefix}.exp"] = motion.translation, motion.expression
            out[f"{prefix}.scale"], out[f"{prefix}.kp_canonical"] = motion.scale[:, None], canonical
            out[f"{prefix}.rotation"] = model.rotation_rows(motion)
            out[f"{prefix}.kp"] = model.motion_keypoints(canonical, motion)
            if prefix == "drv":
                driving = motion
        out["src.feature_volume"] = source.volume
        torch.testing.assert_close(out["src.kp"], source.keypoints, rtol=0, atol=0)

        stages = model.transfer_stages(source, driving, options)
        out["rel.rotation"], out["rel.exp"] = stages["rotation"], stages["expression"]
        out["rel.scale"], out["rel.t"] = stages["scale"][:, None], stages["translation"]
        out["rel.kp_driving"] = stages["kp_transferred"]
        if stages["motion_multiplier"] is not None:
            out["exprel.motion_multiplier"] = torch.tensor([stages["motion_multiplier"]], dtype=source.volume.dtype)
            out["exprel.kp_driving"] = stages["kp_scaled"]
        if stages["stitch_delta"] is not None:
            out["stitch.delta"], out["stitch.kp_driving"] = stages["stitch_delta"], stages["kp_stitched"]
        out["final.kp_driving"] = model.driven_keypoints(source, driving, options)
        torch.testing.assert_close(out["final.kp_driving"], stages["kp_driving"], rtol=0, atol=0)

        warp = model.decode(source.volume, out["final.kp_driving"], source.keypoints)
        out["warp.mask"], out["warp.occlusion_map"] = warp["mask"], warp["occlusion_map"]
        out["warp.deformation"], out["warp.out"] = warp["deformation"], warp["decoder_input"]
        out["gen.prediction"] = warp["prediction"]

        animal = model.transfer_stages(source, driving, LivePortraitOptions(
            pipeline="animal", stitching=False, driving_multiplier=options.driving_multiplier))
        out["animal.motion_multiplier"] = torch.tensor([animal["motion_multiplier"]], dtype=source.volume.dtype)
        out["animal.kp_driving"] = animal["kp_scaled"]
        if "retarget.eye_ratio" in vectors:
            out["retarget.eye_delta"] = model.retarget_eye(source.keypoints, vectors["retarget.eye_ratio"])
        if "retarget.lip_ratio" in vectors:
            out["retarget.lip_delta"] = model.retarget_lip(source.keypoints, vectors["retarget.lip_ratio"])
    return out


def compare(out: dict, vectors: dict, atol_of) -> list[str]:
    missing = sorted(set(vectors) - set(out) - set(INPUTS))
    failures = [f"not computed: {', '.join(missing)}"] if missing else []
    for name in sorted(set(vectors) - set(INPUTS)):
        if name not in out:
            continue
        got, want = out[name], vectors[name]
        if got.shape != want.shape:
            failures.append(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
            continue
        if got.dtype != want.dtype:
            failures.append(f"{name}: dtype {got.dtype} != {want.dtype}")
            continue
        atol, rtol = atol_of(name)
        err = (got - want).abs()
        if not bool((err <= atol + rtol * want.abs()).all()):
            failures.append(f"{name}: max error {err.max().item():.3e} > atol {atol:g}")
    return failures


# ------------------------------------------------------------------------------------------------
# Conformance
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_reproduces_every_reference_tensor(models, ref_config, tolerances, suffix, precision):
    dtype = getattr(torch, precision)
    vectors = load_file(DATA / ("vectors_f64.safetensors" if dtype == torch.float64 else "vectors.safetensors"))
    model = copy.deepcopy(models[suffix]).to(dtype)
    out = run_pipeline(model, vectors, pipeline_options(ref_config))
    if dtype == torch.float64:
        atol_of = lambda name: (tolerances.get("float64_atol", 1e-6), tolerances.get("float64_rtol", 1e-6))  # noqa: E731
    else:
        atol_of = lambda name: (tolerances["float32_atol"][name], 0.0)  # noqa: E731
    failures = compare(out, vectors, atol_of)
    assert not failures, "\n".join(failures)


def test_inferred_config_matches_reference_config(model, ref_config):
    params = ref_config["model_params"]
    cfg = model.config
    app, me = params["appearance_feature_extractor_params"], params["motion_extractor_params"]
    warp, spade = params["warping_module_params"], params["spade_generator_params"]
    dense = warp["dense_motion_params"]
    assert cfg.family == "liveportrait" and cfg.extra["variant"] == "human"
    assert (cfg.appearance.image_channels, cfg.appearance.block_expansion, cfg.appearance.num_down_blocks,
            cfg.appearance.max_features, cfg.appearance.feature_channels, cfg.appearance.reshape_depth,
            cfg.appearance.num_resblocks) == (app["image_channel"], app["block_expansion"], app["num_down_blocks"],
                                              app["max_features"], app["reshape_channel"], app["reshape_depth"],
                                              app["num_resblocks"])
    assert cfg.extra["motion_extractor"] == {"image_channels": app["image_channel"], "dims": me["dims"],
                                             "depths": me["depths"], "num_kp": me["num_kp"], "num_bins": me["num_bins"]}
    assert cfg.num_kp == me["num_kp"] == warp["num_kp"]
    assert (cfg.dense_motion.block_expansion, cfg.dense_motion.max_features, cfg.dense_motion.num_blocks,
            cfg.dense_motion.reshape_depth, cfg.dense_motion.compress, cfg.dense_motion.feature_channels,
            cfg.dense_motion.estimate_occlusion_map) == (dense["block_expansion"], dense["max_features"],
                                                        dense["num_blocks"], dense["reshape_depth"], dense["compress"],
                                                        warp["reshape_channel"], warp["estimate_occlusion_map"])
    ic = min(spade["max_features"], spade["block_expansion"] * 2 ** spade["num_down_blocks"])
    assert cfg.generator.ic == warp["block_expansion"] * 2 ** warp["num_down_blocks"] == ic
    assert (cfg.generator.volume_channels, cfg.generator.oc, cfg.generator.spade_hidden, cfg.generator.upscale) == (
        warp["max_features"], spade["out_channels"], spade["spade_hidden"], spade["upscale"])
    mlps = params["stitching_retargeting_module_params"]
    for ours, theirs in (("stitching", "stitching"), ("retarget_lip", "lip"), ("retarget_eye", "eye")):
        assert cfg.extra[ours] == mlps[theirs], ours


def test_notes_record_variant_files_and_ddp_prefix(model, ref_config):
    notes = " | ".join(model.load_notes)
    assert "human variant" in notes
    assert ("'module.' prefixes removed" in notes) == bool(ref_config["stitching_file_keys_have_module_prefix"])


def assert_same_weights(state: dict, expected: dict) -> None:
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key].to(value.dtype), value), key


def test_single_module_file_and_stitching_without_prefix_read_the_same(model, folders, tmp_path):
    expected = model.state_dict()
    assert_same_weights(read_weights(folders[".safetensors"] / "motion_extractor.safetensors").state, expected)
    folder = make_folder(tmp_path, ".pth", "plain_keys")
    groups = torch.load(folder / f"{STITCHING_FILE}.pth", weights_only=True)
    torch.save({g: {k.replace("module.", ""): v for k, v in sd.items()} for g, sd in groups.items()},
               folder / f"{STITCHING_FILE}.pth")
    assert_same_weights(read_weights(folder).state, expected)


def test_flattened_single_file(model, tmp_path):
    flat = {}
    for module in MODULE_FILES:
        flat.update({f"{module}.{k}": v for k, v in load_file(DATA / f"{module}.safetensors").items()})
    flat.update(load_file(DATA / f"{STITCHING_FILE}.safetensors"))  # already flat: <group>_module.<key>
    save_file(flat, tmp_path / "liveportrait_all.safetensors")
    weights = read_weights(tmp_path / "liveportrait_all.safetensors")
    assert weights.config.to_dict() == model.config.to_dict()
    assert_same_weights(weights.state, model.state_dict())


def test_variant_from_name_family_or_override(folders, ref_config, tmp_path):
    animals = tmp_path / "liveportrait_animals"
    shutil.copytree(folders[".pth"], animals / "base_models")
    named = read_weights(animals / "base_models")
    assert named.family == "liveportrait_animal" and named.config.extra["variant"] == "animal"
    assert any("'animal'" in note for note in named.notes)
    assert read_weights(animals / "base_models", family="liveportrait_human").config.extra["variant"] == "human"
    assert read_weights(folders[".pth"], family="liveportrait_animal").config.extra["variant"] == "animal"
    animal = load_model(folders[".pth"], family="liveportrait", config_overrides={"extra": {"variant": "animal"}})
    assert animal.variant == "animal" and animal.config.extra["variant"] == "animal"
    # the animal variant's default transfer is the animal pipeline
    vectors = load_file(DATA / "vectors.safetensors")
    with torch.no_grad():
        source = animal.prepare_source(vectors["source"])
        driving = animal.estimate_motion(vectors["driving"])
        stages = animal.transfer_stages(source, driving, pipeline_options(ref_config, stitching=False))
    torch.testing.assert_close(stages["kp_scaled"], vectors["animal.kp_driving"], rtol=0, atol=1e-4)


def test_our_format_round_trip(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "lp.safetensors")
    again = load_model(path)
    assert again.config.to_dict() == model.config.to_dict()
    assert isinstance(again, LivePortraitModel) and again.has_stitching
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


# ------------------------------------------------------------------------------------------------
# Transfer options
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def motions(model):
    vectors = load_file(DATA / "vectors.safetensors")
    with torch.no_grad():
        return model.prepare_source(vectors["source"]), model.estimate_motion(vectors["driving"])


def test_strength_one_is_the_reference_and_zero_keeps_the_source(model, motions, ref_config):
    source, driving = motions
    with torch.no_grad():
        base = model.driven_keypoints(source, driving, pipeline_options(ref_config))
        ones = model.driven_keypoints(source, driving, pipeline_options(
            ref_config, pose_strength=1.0, expression_strength=1.0, translation_strength=1.0))
        still = model.driven_keypoints(source, driving, pipeline_options(
            ref_config, pose_strength=0.0, expression_strength=0.0, translation_strength=0.0, stitching=False))
    assert torch.equal(base, ones)
    torch.testing.assert_close(still, source.keypoints.expand_as(still), rtol=0, atol=1e-6)


def test_absolute_mode_takes_driving_pose_and_partial_expression(model, motions):
    source, driving = motions
    opts = LivePortraitOptions(mode="absolute", stitching=False)
    with torch.no_grad():
        stages = model.transfer_stages(source, driving, opts)
    torch.testing.assert_close(stages["rotation"], model.rotation_rows(driving))
    torch.testing.assert_close(stages["scale"], source.motion.scale.expand(len(driving)))
    assert torch.equal(stages["translation"][:, 2], torch.zeros(len(driving)))
    if driving.num_kp == 21:
        assert torch.equal(stages["expression"][:, 0], source.motion.expression[:, 0].expand(len(driving), 3))
        assert torch.equal(stages["expression"][:, 1], driving.expression[:, 1])
        assert torch.equal(stages["expression"][:, 3, 1], driving.expression[:, 3, 1])
        assert torch.equal(stages["expression"][:, 3, 0], source.motion.expression[:, 3, 0].expand(len(driving)))


def test_missing_stitching_weights_are_explained(folders, tmp_path):
    folder = tmp_path / "no_stitching"
    folder.mkdir()
    for module in MODULE_FILES:
        shutil.copy(folders[".pth"] / f"{module}.pth", folder)
    model = load_model(folder)
    assert not model.has_stitching
    assert any("stitching and eye/lip retargeting are off" in note for note in model.load_notes)
    with pytest.raises(RuntimeError, match="stitching_retargeting_module"):
        model.retarget_eye(torch.zeros(1, model.num_kp, 3), torch.zeros(1, 3))


# ------------------------------------------------------------------------------------------------
# Full-size layout (keys_full.json): the released files load strictly into the default modules
# ------------------------------------------------------------------------------------------------

def zeros_like_spec(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Zero tensors of the given shapes; stride-0 views keep the saved .pth files tiny."""
    out = {}
    for key, shape in shapes.items():
        dtype = torch.long if key.endswith("num_batches_tracked") else torch.float32
        out[key] = torch.zeros((), dtype=dtype).expand(shape)
    return out


def test_full_size_files_load_into_released_defaults(tmp_path):
    spec = json.loads((DATA / "keys_full.json").read_text())
    folder = tmp_path / "liveportrait_full"
    folder.mkdir()
    for name, shapes in spec["files"].items():
        torch.save(zeros_like_spec(shapes), folder / name)
    stitching = spec["stitching_retargeting_module"]["released_keys"]
    torch.save({g: zeros_like_spec(s) for g, s in stitching.items()}, folder / f"{STITCHING_FILE}.pth")

    weights = read_weights(folder)
    assert weights.config.to_dict() == get_family("liveportrait").default_config().to_dict() == default_config().to_dict()
    model = load_model(folder)
    counts = {
        "appearance_feature_extractor": model.appearance,
        "motion_extractor": model.motion,
        "warping_module": [model.dense_motion, model.generator.third, model.generator.fourth],
        "spade_generator": model.generator.decoder,
        "stitching_retargeting_module.retarget_shoulder": model.stitching,
        "stitching_retargeting_module.retarget_mouth": model.retarget_lip,
        "stitching_retargeting_module.retarget_eye": model.retarget_eye,
    }
    for name, modules in counts.items():
        modules = modules if isinstance(modules, list) else [modules]
        assert sum(p.numel() for m in modules for p in m.parameters()) == spec["param_counts"][name], name
    assert len(model.state_dict()) == sum(spec["state_dict_len"].values())


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

def test_folder_without_warping_module(folders, tmp_path):
    folder = make_folder(tmp_path, ".pth")
    (folder / "warping_module.pth").unlink()
    with pytest.raises(CheckpointError, match="warping_module"):
        load_model(folder)


@pytest.mark.parametrize("module, key", [("warping_module", "third.conv.bias"),
                                         ("motion_extractor", "detector.fc_exp.weight"),
                                         ("spade_generator", "fc.weight")])
def test_wrong_shaped_tensor_names_the_file(tmp_path, module, key):
    folder = make_folder(tmp_path, ".pth")
    state = torch.load(folder / f"{module}.pth", weights_only=True)
    shape = list(state[key].shape)
    state[key] = torch.zeros([shape[0] + 3, *shape[1:]])
    torch.save(state, folder / f"{module}.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message and f"{module}.pth" in message and key in message, message


def test_foreign_stitching_file_is_refused(tmp_path):
    folder = make_folder(tmp_path, ".pth")
    torch.save({"something_else": {"w": torch.zeros(2)}}, folder / f"{STITCHING_FILE}.pth")
    with pytest.raises(CheckpointError, match=STITCHING_FILE):
        load_model(folder)


def test_unrelated_file_with_liveportrait_family(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a LivePortrait checkpoint"):
        load_model(path, family="liveportrait")
