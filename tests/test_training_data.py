"""Training data: video folders, manifests, the synthetic source, sampling and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anytalk_training.config import DEFAULTS, ConfigError, apply_overrides, load_config
from anytalk_training.data import (
    DataError,
    MixedDataset,
    StepBatchSampler,
    SyntheticSource,
    VideoFolderSource,
    build_dataset,
    load_manifest,
    normalise_source,
)


def _frames(folder, n=3, size=40, colour=(200, 100, 50)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.zeros((size, size + 8, 3), dtype=np.uint8)  # not square: centre-cropped
        arr[..., :] = colour
        arr[i * 3:i * 3 + 5, 10:20] = 255
        Image.fromarray(arr).save(folder / f"{i:04d}.png")


def _config(sources, **data):
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    cfg["data"] = {**DEFAULTS["data"], "sources": sources, **data}
    return cfg


def test_voxceleb_style_folder_by_identity(tmp_path):
    root = tmp_path / "vox"
    _frames(root / "id001" / "clipA")
    _frames(root / "id001" / "clipB", n=2)
    _frames(root / "id002" / "clipC")
    spec = normalise_source({"kind": "video_folder", "path": str(root), "domain": "human"}, 0)
    src = VideoFolderSource(spec, 32)
    assert len(src) == 2  # identities
    sample = src.sample(0, np.random.default_rng(0))
    assert sample["source"].shape == (3, 32, 32) and sample["driving"].shape == (3, 32, 32)
    assert 0 <= float(sample["source"].min()) and float(sample["source"].max()) <= 1
    by_clip = VideoFolderSource(normalise_source({"path": str(root), "domain": "human", "id_sampling": False}, 0), 32)
    assert len(by_clip) == 3
    half = VideoFolderSource(normalise_source({"path": str(root), "domain": "human", "subset": 0.5}, 0), 32)
    assert len(half) == 1


def test_bad_data_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found: .*missing"):
        VideoFolderSource(normalise_source({"path": str(tmp_path / "missing"), "domain": "human"}, 0), 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no clips found under .*empty"):
        VideoFolderSource(normalise_source({"path": str(tmp_path / "empty"), "domain": "human"}, 0), 32)
    broken = tmp_path / "broken" / "id1" / "clip"
    broken.mkdir(parents=True)
    (broken / "0001.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="cannot read .*0001.png"):
        VideoFolderSource(normalise_source({"path": str(tmp_path / "broken"), "domain": "human"}, 0), 32)
    with pytest.raises(DataError, match="needs a 'domain'"):
        normalise_source({"path": str(tmp_path)}, 0)
    with pytest.raises(DataError, match="unknown source kind"):
        normalise_source({"kind": "webdataset", "path": "x"}, 0)
    with pytest.raises(DataError, match="weight must be a positive"):
        normalise_source({"kind": "synthetic", "weight": 0}, 0)
    with pytest.raises(DataError, match="synthetic domains"):
        normalise_source({"kind": "synthetic", "domains": ["robot"]}, 0)
    with pytest.raises(DataError, match="no data sources"):
        build_dataset(_config([]), 32)


def test_video_file_clips_are_read(tmp_path):
    from anytalk_core.media import write_video

    frames = torch.zeros(5, 48, 48, 3)
    for i in range(5):
        frames[i, :, i * 8:(i * 8) + 8] = 1.0
    write_video(tmp_path / "vox" / "id7" / "talk.mp4", frames, fps=25)
    src = VideoFolderSource(normalise_source({"path": str(tmp_path / "vox"), "domain": "human"}, 0), 32)
    s = src.sample(0, np.random.default_rng(1))
    assert s["driving"].shape == (3, 32, 32)
    (tmp_path / "bad" / "id1").mkdir(parents=True)
    (tmp_path / "bad" / "id1" / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="clip.mp4"):
        VideoFolderSource(normalise_source({"path": str(tmp_path / "bad"), "domain": "human"}, 0), 32)


def test_manifest_with_domains_and_weights(tmp_path):
    _frames(tmp_path / "disney" / "id1" / "c1")
    _frames(tmp_path / "animals" / "id1" / "c1", colour=(20, 200, 20))
    (tmp_path / "m.csv").write_text("path,domain,weight\ndisney,cg_human,3\nanimals,animal,1\n")
    specs = load_manifest(tmp_path / "m.csv")
    assert [(s["domain"], s["weight"]) for s in specs] == [("cg_human", 3.0), ("animal", 1.0)]
    assert specs[0]["path"] == str(tmp_path / "disney")  # relative to the manifest
    (tmp_path / "m.toml").write_text('[[sources]]\nkind = "synthetic"\nnum_identities = 2\nframes_per_clip = 3\n')
    assert load_manifest(tmp_path / "m.toml")[0]["kind"] == "synthetic"
    cfg = _config([], manifest=str(tmp_path / "m.csv"), samples_per_epoch=400)
    ds = build_dataset(cfg, 32)
    assert ds.domains == ["cg_human", "animal"]
    assert list(ds.shares) == [300, 100]  # weights 3 : 1
    plan = ds.plan(0)
    assert (plan.source == 0).sum() == 300
    assert not np.array_equal(ds.plan(1).source, plan.source)  # reshuffled per epoch
    item = ds[(0, 5)]
    assert item["domain"].item() == int(plan.source[5]) and not item["has_pose"]
    with pytest.raises(DataError, match="manifest file not found"):
        load_manifest(tmp_path / "none.csv")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="lists no sources"):
        load_manifest(tmp_path / "empty.json")


def test_synthetic_source_gives_ground_truth_and_flips_mirror_it():
    spec = normalise_source({"kind": "synthetic", "num_identities": 3, "frames_per_clip": 4, "seed": 2}, 0)
    src = SyntheticSource(spec, 32)
    ds = MixedDataset([src], 32, 12, seed=0, horizontal_flip=False, time_flip=False, color_jitter=0.0)
    a = ds[(0, 0)]
    assert a["has_pose"] and a["has_expression"] and a["expression"].shape == (7,)
    assert torch.equal(ds[(0, 0)]["driving"], a["driving"])  # keyed randomness: the same item twice
    flipped = MixedDataset([src], 32, 12, seed=0, horizontal_flip=True, time_flip=False, color_jitter=0.0)
    for pos in range(12):  # find an item that was flipped and check its ground truth is mirrored
        b = flipped[(0, pos)]
        plain = ds[(0, pos)]
        if not torch.equal(b["driving"], plain["driving"]):
            assert torch.equal(b["driving"], plain["driving"].flip(-1))
            assert b["pose"][0] == -plain["pose"][0] and b["pose"][1] == plain["pose"][1]
            assert b["expression"][2] == plain["expression"][3]  # blink left <-> right
            from anytalk_training.synthetic_source import SUPERVISED_LANDMARKS as names
            r, l = names.index("mouth_r"), names.index("mouth_l")
            torch.testing.assert_close(b["landmarks"][r], plain["landmarks"][l] * torch.tensor([-1.0, 1.0]))
            break
    else:
        pytest.fail("no sample was flipped")


def test_step_sampler_splits_the_global_batch_the_same_way_for_processes_and_accumulation():
    one = StepBatchSampler(steps_per_epoch=3, global_batch=8, accumulate=2, world=1, rank=0, start_step=0, total_steps=4)
    r0 = StepBatchSampler(3, 8, 1, 2, 0, 0, 4)
    r1 = StepBatchSampler(3, 8, 1, 2, 1, 0, 4)
    a, b0, b1 = list(one), list(r0), list(r1)
    assert len(a) == 8 and len(b0) == 4
    for step in range(4):
        assert a[2 * step] == b0[step] and a[2 * step + 1] == b1[step]
    assert a[6][0] == (1, 0)  # step 3 starts epoch 1
    resumed = list(StepBatchSampler(3, 8, 2, 1, 0, start_step=2, total_steps=4))
    assert resumed == a[4:]
    with pytest.raises(DataError, match="not divisible"):
        StepBatchSampler(3, 6, 4, 1, 0, 0, 1)


def test_config_overrides_and_unknown_keys(tmp_path):
    cfg = apply_overrides(DEFAULTS, ["train.batch_size=8", "perceptual.scales=[1.0, 0.5]", "name=x y",
                                     "output_dir=runs/a"])
    assert cfg["train"]["batch_size"] == 8 and cfg["perceptual"]["scales"] == [1.0, 0.5]
    assert cfg["name"] == "x y" and cfg["output_dir"] == "runs/a"
    (tmp_path / "c.toml").write_text('[train]\nbatch_sise = 3\n')
    with pytest.raises(ConfigError, match="unknown config key 'train.batch_sise'"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('[train]\nbatch_size = "big"\n')
    with pytest.raises(ConfigError, match="train.batch_size must be of type int"):
        load_config(tmp_path / "d.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "e.toml").write_text("[[data.sources]]\nkind = 'synthetic'\n")
    cfg = load_config(tmp_path / "e.toml", ["data.sources.0.weight=2.5"])
    assert cfg["data"]["sources"][0]["weight"] == 2.5
    with pytest.raises(ConfigError, match="out of range"):
        load_config(tmp_path / "e.toml", ["data.sources.3.weight=2"])


def test_stage_configs_carry_the_seed_values():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "training" / "configs"
    s1 = load_config(root / "stage1.toml")
    s2 = load_config(root / "stage2.toml")
    for c in (s1, s2):
        assert c["train"]["lr"] == 2e-4 and c["train"]["betas"] == [0.5, 0.999] and c["train"]["batch_size"] == 36
        assert c["train"]["lr_milestones"] == [180] and c["train"]["lr_gamma"] == 0.1
        assert c["model"]["num_kp"] == 15 and c["model"]["preset"] == "default"
        assert c["perceptual"]["weights"] == [10.0] * 5 and c["perceptual"]["scales"] == [1.0, 0.5, 0.25, 0.125]
        assert c["gan"]["generator"] == 1.0 and c["gan"]["feature_matching"] == [10.0] * 4
        e = c["equivariance"]
        assert (e["weight"], e["sigma_affine"], e["sigma_tps"], e["points_tps"]) == (10.0, 0.05, 0.005, 5)
        k = c["keypoint_prior"]
        assert (k["weight"], k["distance_threshold"], k["depth_target"]) == (10.0, 0.1, 0.33)
        assert c["head_pose"]["weight"] == 20.0 and c["deformation_prior"]["weight"] == 5.0
        assert c["deformation_prior"]["floor"] == 1.0 and c["deformation_prior"]["decay_start_epoch"] == 100
        assert c["expression"]["weight"] == 0.1
    assert s1["train"]["epochs"] == 200 and s2["train"]["epochs"] == 100
    assert s2["train"]["epoch_offset"] == 200 and s2["model"]["init_from"]
    assert {s["domain"] for s in s2["data"]["sources"]} == {"human"} and s2["data"]["manifest"]


def test_synthetic_landmark_targets_land_on_the_rendered_features():
    """Keypoint-supervision targets are the renderer's landmarks in the model's normalised coordinates."""
    from anytalk_core import synthetic as S
    from anytalk_training import synthetic_source as syn

    ident = syn.identity("human", 5)
    pose, expr = torch.tensor([[15.0, -5.0, 4.0, 0.02, -0.01, 1.0]]), torch.zeros(1, 7)
    rendered = S.render_batch([ident], pose, expr, 64)
    targets = syn.landmark_targets(ident, pose, expr, 64)
    pixels = (targets + 1) * 64 / 2 - 0.5
    rows = [list(S.LANDMARK_NAMES).index(n) for n in syn.SUPERVISED_LANDMARKS]
    torch.testing.assert_close(pixels[0], rendered.landmarks[0, rows], atol=1e-4, rtol=0)
    assert sorted(syn.MIRRORED_LANDMARKS) == list(range(len(syn.SUPERVISED_LANDMARKS)))


def test_synthetic_frame_cache_never_loses_a_frame_it_is_about_to_return():
    """Regression: rendering a missing frame into a full cache evicted the cached frame of the same pair."""
    spec = normalise_source({"kind": "synthetic", "num_identities": 2, "frames_per_clip": 6, "seed": 1,
                             "cache_frames": 1}, 0)
    src = SyntheticSource(spec, 16)
    first = src.render_frames(0, [2])
    pair = src.render_frames(0, [2, 4])  # 2 is cached, 4 is not: the cache holds one frame
    assert torch.equal(pair[0], first[0])
    assert torch.equal(src.render_frames(0, [4, 4])[1], pair[1])


def test_independent_pairs_drive_with_an_unrelated_pose_and_keep_ground_truth():
    spec = normalise_source({"kind": "synthetic", "num_identities": 2, "frames_per_clip": 4, "seed": 2,
                             "independent_pairs": 1.0}, 0)
    src = SyntheticSource(spec, 32)
    s = src.sample(1, np.random.default_rng(0))
    from anytalk_training import synthetic_source as syn

    assert s["pose"].shape == (3,) and s["landmarks"].shape == (len(syn.SUPERVISED_LANDMARKS), 2)
    assert not torch.equal(s["pose"], s["source_pose"])
    with pytest.raises(DataError, match="independent_pairs"):
        normalise_source({"kind": "synthetic", "independent_pairs": 2}, 0)
    plain = SyntheticSource(normalise_source({"kind": "synthetic", "num_identities": 2, "frames_per_clip": 4,
                                              "seed": 2}, 0), 32).sample(1, np.random.default_rng(0))
    assert torch.equal(plain["source"], s["source"]) or not torch.equal(plain["driving"], s["driving"])
