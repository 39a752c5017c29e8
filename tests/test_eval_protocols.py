"""`anytalk-eval reconstruction / reenactment / metrics` end to end on tiny synthetic clips and a tiny
random checkpoint: table files, the never-overwrite rule, the missing-weights messages, streaming."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from anytalk_core.checkpoints import save_checkpoint
from anytalk_core.media import save_image, write_video
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.synthetic import render_clip, sample_identity
from anytalk_eval.cli import main
from anytalk_eval.metrics.lpips import LPIPS
from anytalk_core.engine import rechunk
from anytalk_eval.protocols import iter_clip, list_clips, pair_up

DATA = Path(__file__).resolve().parent / "data"
# weights-free runs: every network metric must be reported as skipped, whatever is installed
OFFLINE = ["--no-default-backends", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast, and far faster when other jobs load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), root / "tiny.safetensors")
    (root / "videos" / "frames_clip").mkdir(parents=True)
    (root / "sources").mkdir()
    for i, domain in enumerate(["human", "animal"]):
        clip = render_clip(sample_identity(domain, rng=i), n_frames=5, size=72, rng=i)
        write_video(root / "videos" / f"clip{i}.mp4", clip.frames, fps=25)
        save_image(clip.frames[0], root / "sources" / f"src{i}.png")
    clip = render_clip(sample_identity("cg_human", rng=5), n_frames=4, size=64, rng=5)
    for k in range(4):
        save_image(clip.frames[k], root / "videos" / "frames_clip" / f"f{k + 1}.png")
    write_video(root / "videos" / "single.mp4", clip.frames[:1], fps=25)
    return root


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def read_report(folder: Path, name: str):
    rows = list(csv.DictReader((folder / f"{name}.csv").open(encoding="utf-8")))
    payload = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    md = (folder / f"{name}.md").read_text(encoding="utf-8")
    return rows, payload, md


def test_reconstruction_writes_a_seed_shaped_table_and_never_overwrites(files, tmp_path, capsys):
    args = ["reconstruction", "--videos", files / "videos", "--checkpoint", files / "tiny.safetensors",
            "--checkpoint", files / "tiny.safetensors", "--label", "AnyTalk", "--label", "Again",
            "--device", "cpu", "--chunk", "3", "--out", tmp_path, *OFFLINE]
    assert run_cli(*args) == 0
    rows, payload, md = read_report(tmp_path, "reconstruction")
    assert payload["columns"] == ["Method", "L1↓", "LPIPS↓", "CPBD↑", "AKD↓", "AED↓", "PSNR↑", "CSIM↑", "FID↓",
                                  "Clips", "Frames"]
    assert [r["Method"] for r in rows] == ["AnyTalk", "Again"]
    first = payload["rows"][0]
    # 3 clips used (5 + 5 + 4 frames, minus each source frame), the single-frame clip skipped and said so
    assert first["Clips"] == 3 and first["Frames"] == 4 + 4 + 3
    assert 0 < first["L1↓"] < 1 and 0 <= first["CPBD↑"] <= 1 and first["PSNR↑"] > 0
    assert payload["rows"][1]["L1↓"] == pytest.approx(first["L1↓"])  # same model, same numbers
    for column in ("LPIPS↓", "AKD↓", "AED↓", "CSIM↑", "FID↓"):
        assert first[column] is None and rows[0][column] == ""  # never a silent zero
    meta = payload["meta"]
    assert "--lpips-trunk FILE" in meta["LPIPS↓ note"] and "--inception FILE" in meta["FID↓ note"]
    assert "--arcface FILE" in meta["CSIM↑ note"] and "landmark detector" in meta["AKD↓ note"]
    assert "single" in meta["clips note"]
    assert "| AnyTalk |" in md and "—" in md and "not computed" in md
    out = capsys.readouterr()
    assert "| Method | L1↓ | LPIPS↓ | CPBD↑ | AKD↓ | AED↓ |" in out.out
    assert "LPIPS↓ will not be computed" in out.err

    before = {ext: (tmp_path / f"reconstruction.{ext}").read_bytes() for ext in ("md", "csv", "json")}
    assert run_cli("reconstruction", "--videos", files / "videos", "--checkpoint", files / "tiny.safetensors",
                   "--max-clips", "1", "--metrics", "l1,cpbd", "--device", "cpu", "--out", tmp_path, "--quiet") == 0
    assert {ext: (tmp_path / f"reconstruction.{ext}").read_bytes() for ext in before} == before
    rows2, payload2, _ = read_report(tmp_path, "reconstruction_00001")
    assert payload2["columns"] == ["Method", "L1↓", "CPBD↑", "Clips", "Frames"]
    assert rows2[0]["Method"] == "tiny" and rows2[0]["Clips"] == "1"


def test_reconstruction_is_independent_of_the_chunk_size(files, tmp_path):
    values = []
    for chunk in ("1", "4"):
        assert run_cli("reconstruction", "--videos", files / "videos" / "clip0.mp4", "--checkpoint",
                       files / "tiny.safetensors", "--device", "cpu", "--chunk", chunk, "--metrics", "l1,psnr",
                       "--out", tmp_path, "--name", f"c{chunk}", "--quiet") == 0
        values.append(json.loads((tmp_path / f"c{chunk}.json").read_text())["rows"][0])
    # equal up to float rounding: the motion estimator runs batches of 1 vs 4 frames, and oneDNN's convolution
    # kernels for the two batch sizes round differently on some CPUs (1.8e-6 relative on an AVX2 AMD EPYC)
    assert values[0]["L1↓"] == pytest.approx(values[1]["L1↓"], rel=1e-5)
    assert values[0]["Frames"] == values[1]["Frames"] == 4


def test_explicitly_requested_metric_without_weights_is_an_error(files, tmp_path, capsys):
    code = run_cli("reconstruction", "--videos", files / "videos", "--checkpoint", files / "tiny.safetensors",
                   "--metrics", "l1,lpips", "--out", tmp_path, "--device", "cpu", *OFFLINE)
    assert code == 2
    err = capsys.readouterr().err
    assert "anytalk-eval: error: LPIPS (alex) needs ImageNet AlexNet weights" in err and "--lpips-trunk" in err
    assert not list(tmp_path.iterdir())  # nothing written
    code = run_cli("reenactment", "--sources", files / "sources", "--drivers", files / "videos", "--checkpoint",
                   files / "tiny.safetensors", "--strict", "--out", tmp_path, "--device", "cpu", *OFFLINE)
    assert code == 2
    assert "--inception FILE" in capsys.readouterr().err


def test_reenactment_table_and_fid_reason(files, tmp_path):
    assert run_cli("reenactment", "--sources", files / "sources", "--drivers", files / "videos",
                   "--checkpoint", files / "tiny.safetensors", "--label", "AnyTalk", "--device", "cpu",
                   "--max-frames", "3", "--out", tmp_path, *OFFLINE) == 0
    rows, payload, md = read_report(tmp_path, "reenactment")
    assert payload["columns"] == ["Method", "FID↓", "CSIM↑", "CPBD↑", "Pairs", "Frames"]
    row = payload["rows"][0]
    assert row["Pairs"] == 4  # cycle: max(2 sources, 4 drivers)
    assert row["Frames"] == 3 + 3 + 3 + 1  # at most 3 frames of each driver; one has a single frame
    assert row["FID↓"] is None and row["CSIM↑"] is None and 0 <= row["CPBD↑"] <= 1
    assert "not computed" in payload["meta"]["FID↓ note"]
    assert payload["meta"]["pairing"] == "cycle"


def test_metrics_subcommand_with_lpips_weights_and_landmark_arrays(files, tmp_path):
    refweights = _refweights()
    model = LPIPS("alex")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in refweights.state_for("lpips-alex", shapes).items()}
    save_file({k.replace("trunk.", "", 1): v for k, v in state.items() if k.startswith("trunk.")}, tmp_path / "t.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("lin")}, tmp_path / "h.safetensors")
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(3, 64, 64, 3, generator=g)
    for k in range(3):
        save_image(frames[k], ref / f"{k}.png")
        save_image((frames[k] + 0.1).clamp(0, 1), gen / f"{k}.png")
    lm = np.zeros((3, 68, 2))
    np.save(tmp_path / "lg.npy", lm + [3.0, 4.0])
    np.save(tmp_path / "lr.npy", lm)
    out = tmp_path / "out"
    assert run_cli("metrics", "--generated", gen, "--reference", ref, "--metrics", "l1,lpips,akd",
                   "--lpips-trunk", tmp_path / "t.safetensors", "--lpips-heads", tmp_path / "h.safetensors",
                   "--landmarks-generated", tmp_path / "lg.npy", "--landmarks-reference", tmp_path / "lr.npy",
                   "--device", "cpu", "--out", out, *OFFLINE) == 0
    _rows, payload, _md = read_report(out, "metrics")
    row = payload["rows"][0]
    assert payload["columns"] == ["Method", "L1↓", "LPIPS↓", "AKD↓", "Clips", "Frames"]
    assert row["Method"] == "gen" and row["Frames"] == 3
    assert row["AKD↓"] == pytest.approx(5.0)
    assert row["LPIPS↓"] > 0
    assert 0.05 < row["L1↓"] < 0.1
    assert "stand" not in payload["meta"]["LPIPS↓ backend"] and "t.safetensors" in payload["meta"]["LPIPS↓ backend"]


def test_bad_inputs_fail_with_one_clear_line(files, tmp_path, capsys):
    assert run_cli("reconstruction", "--videos", tmp_path / "missing", "--checkpoint", files / "tiny.safetensors",
                   "--out", tmp_path, *OFFLINE) == 2
    assert "no such video or folder" in capsys.readouterr().err
    assert run_cli("reconstruction", "--videos", files / "videos", "--checkpoint", tmp_path / "nope.pth",
                   "--out", tmp_path, *OFFLINE) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert run_cli("reconstruction", "--videos", files / "videos", "--checkpoint", files / "tiny.safetensors",
                   "--metrics", "l1,ssim", "--out", tmp_path, *OFFLINE) == 2
    assert "--metrics takes" in capsys.readouterr().err
    assert run_cli("metrics", "--generated", files / "videos" / "clip0.mp4", "--reference",
                   files / "videos" / "frames_clip", "--out", tmp_path, *OFFLINE) == 2
    assert "different frame counts" in capsys.readouterr().err


def test_clip_listing_and_streaming_helpers(files):
    clips = list_clips(files / "videos")
    assert [c.name for c in clips] == ["clip0", "clip1", "frames_clip", "single"]
    assert [c.kind for c in clips] == ["video", "video", "frames", "video"]
    frames = list(iter_clip(clips[2], chunk=3))
    assert [f.shape[0] for f in frames] == [3, 1] and frames[0].dtype == torch.uint8
    assert [f.shape[0] for f in iter_clip(clips[0], chunk=2, max_frames=3)] == [2, 1]
    pieces = [torch.zeros(n, 1) for n in (1, 4, 2)]
    assert [p.shape[0] for p in rechunk(pieces, 3)] == [3, 3, 1]
    assert pair_up([0, 1], [0, 1, 2], "cycle") == [(0, 0), (1, 1), (0, 2)]
    assert len(pair_up([0, 1], [0, 1, 2], "all")) == 6


def _refweights():
    spec = importlib.util.spec_from_file_location("refweights", DATA / "refweights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
