"""`anytalk animate` end to end on generated clips, and every bad input case by case."""
from __future__ import annotations

import math
import os
import pickle

import pytest
import torch

from anytalk_core.checkpoints import save_checkpoint
from anytalk_core.cli import main
from anytalk_core.media import probe_video, read_audio, save_image, write_video
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model

FPS = 25


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("animate")
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), root / "tiny.safetensors")
    g = torch.Generator().manual_seed(1)
    save_image(torch.rand(90, 70, 3, generator=g), root / "source.png")
    frames = torch.stack([(torch.rand(48, 40, 3, generator=g) * 0.3 + i / 20).clamp(0, 1) for i in range(13)])
    t = torch.arange(16000) / 16000
    write_video(root / "driving.mp4", frames, fps=FPS, audio=(torch.sin(2 * math.pi * 220 * t)[None], 16000))
    write_video(root / "silent.webm", frames[:5], fps=FPS)
    write_video(root / "one.mp4", frames[:1], fps=FPS)
    return root


def animate(files, out, *extra):
    return main(["animate", "--source", str(files / "source.png"), "--driving", str(files / "driving.mp4"),
                 "--checkpoint", str(files / "tiny.safetensors"), "--out", str(out), "--quiet", *extra])


def test_output_has_the_input_frame_count_and_audio_in_sync(files, tmp_path):
    out = tmp_path / "out.mp4"
    assert animate(files, out) == 0
    info = probe_video(out)
    assert info.frame_count == 13 and info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (64, 64)
    audio, rate = read_audio(out)
    assert abs(audio.shape[1] / rate - 13 / FPS) <= 1 / FPS


def test_paste_back_keeps_the_source_size_and_options_run(files, tmp_path):
    out = tmp_path / "pasted.webm"
    code = animate(files, out, "--paste-back", "--crop", "5,10,50,60", "--absolute", "--smooth", "0.5",
                   "--pose-strength", "0.5", "--chunk", "3", "--precision", "bf16")
    assert code == 0
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (70, 90, 13)


@pytest.mark.parametrize("driving", ["silent.webm", "one.mp4"])
def test_unusual_but_legal_inputs(files, tmp_path, driving):
    out = tmp_path / "x.gif"
    assert main(["animate", "--source", str(files / "source.png"), "--driving", str(files / driving),
                 "--checkpoint", str(files / "tiny.safetensors"), "--out", str(out), "--quiet"]) == 0
    assert probe_video(out).frame_count == probe_video(files / driving).frame_count


def write_bad(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo never",))


BAD_CASES = {
    "missing source": lambda f, t: ["--source", str(t / "nope.png")],
    "unreadable source": lambda f, t: ["--source", str(write_bad(t, "bad.png", b"not an image at all"))],
    "missing driving": lambda f, t: ["--driving", str(t / "nope.mp4")],
    "corrupt driving": lambda f, t: ["--driving", str(write_bad(t, "bad.mp4", os.urandom(2000)))],
    "missing checkpoint": lambda f, t: ["--checkpoint", str(t / "nope.safetensors")],
    "truncated checkpoint": lambda f, t: ["--checkpoint", str(write_bad(
        t, "trunc.safetensors", (f / "tiny.safetensors").read_bytes()[:3000]))],
    "foreign checkpoint": lambda f, t: ["--checkpoint", str(write_bad(t, "foreign.pth", pickle.dumps({"a": 1})))],
    "pickle with code": lambda f, t: ["--checkpoint", str(write_bad(t, "evil.pth", pickle.dumps({"generator": Evil()})))],
    "chunk of zero": lambda f, t: ["--chunk", "0"],
    "nan strength": lambda f, t: ["--expression-strength", "nan"],
    "unknown device": lambda f, t: ["--device", "warp-drive"],
    "bad crop": lambda f, t: ["--crop", "1,2,3"],
    "smoothing out of range": lambda f, t: ["--smooth", "3"],
    "output over the input": lambda f, t: ["--out", str(f / "driving.mp4")],
    "unknown output format": lambda f, t: ["--out", str(t / "out.avi")],
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_one_error_line_and_writes_nothing(files, tmp_path, capsys, case):
    before = {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    args = ["animate", "--source", str(files / "source.png"), "--driving", str(files / "driving.mp4"),
            "--checkpoint", str(files / "tiny.safetensors"), "--out", str(tmp_path / "out.mp4"), "--quiet"]
    override = BAD_CASES[case](files, tmp_path)
    for flag, value in zip(override[::2], override[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    made_before = set(os.listdir(tmp_path))
    with pytest.raises(SystemExit) if case in ("chunk of zero", "nan strength") else _nullcontext():
        assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and len([line for line in err if "error" in line]) == 1, err
    assert "Traceback" not in "\n".join(err)
    assert set(os.listdir(tmp_path)) == made_before
    assert {p.name: p.stat().st_mtime_ns for p in files.iterdir()} == before


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_refuses_to_overwrite_without_flag(files, tmp_path, capsys):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"precious")
    assert animate(files, out) != 0
    assert out.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err
    assert animate(files, out, "--overwrite") == 0
    assert probe_video(out).frame_count == 13
