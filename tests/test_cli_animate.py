"""`anytalk animate` end to end on generated clips, and every bad input case by case."""
from __future__ import annotations

import math
import os
import pickle
import re

import pytest
import torch

from anytalk_core.checkpoints import save_checkpoint
from anytalk_app.cli import main
from anytalk_core.engine import EngineConfig
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


def test_progress_is_one_labelled_bar_per_stage_counting_that_stages_frames(files, tmp_path, capsys):
    from anytalk_core.checkpoints import load_model
    from anytalk_core.pipeline import AnimateOptions, animate_file

    calls = []
    animate_file(load_model(str(files / "tiny.safetensors")), str(files / "source.png"), str(files / "driving.mp4"),
                 str(tmp_path / "p.mp4"), AnimateOptions(engine=EngineConfig(chunk_size=5)),
                 progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls == [("motion", 0, 13), ("motion", 5, 13), ("motion", 10, 13), ("motion", 13, 13),
                     ("render", 0, 13), ("render", 5, 13), ("render", 10, 13), ("render", 13, 13)]
    assert animate(files, tmp_path / "quiet.mp4") == 0  # --quiet: no bar at all
    assert "frame/s" not in capsys.readouterr().err
    args = ["animate", "--source", str(files / "source.png"), "--driving", str(files / "driving.mp4"),
            "--checkpoint", str(files / "tiny.safetensors"), "--out", str(tmp_path / "shown.mp4"), "--chunk", "5"]
    assert main(args) == 0
    err = capsys.readouterr().err
    finals = [line.rsplit("\r", 1)[-1] for line in err.replace("\r\n", "\n").split("\n") if "frame/s" in line]
    assert any(f.startswith("driving motion") and "13/13" in f for f in finals), err
    assert any(f.startswith("rendering") and "13/13" in f for f in finals), err
    assert not re.search(r"(?<![\d.])0frame", err) and "/26" not in err  # no empty bar, no doubled count


def _loader_must_not_run(monkeypatch):
    from anytalk_core import checkpoints

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(checkpoints, "load_model", refuse)


def _audio_only_file(path):
    from anytalk_core.media.audio import write_wav

    t = torch.arange(8000) / 16000
    write_wav(path.with_suffix(".wav"), torch.sin(2 * math.pi * 220 * t)[None], 16000)
    path.with_suffix(".wav").rename(path)  # an mp4 name, but only sound inside
    return path


EARLY_CASES = {
    "text file named .png": (lambda f, t: ["--source", str(write_bad(t, "notes.png", b"just some text\n" * 20))],
                             "not an image file"),
    "mp4 without a video stream": (lambda f, t: ["--driving", str(_audio_only_file(t / "sound.mp4"))],
                                   "no video stream"),
    "audio without an audio stream": (lambda f, t: ["--audio", str(f / "silent.webm")], "no audio track"),
    "folder as the source": (lambda f, t: ["--source", str(t)], "is a folder"),
}


@pytest.mark.parametrize("case", sorted(EARLY_CASES))
def test_every_input_is_checked_before_the_model_loads(files, tmp_path, capsys, monkeypatch, case):
    make, expected = EARLY_CASES[case]
    override = make(files, tmp_path)
    args = ["animate", "--source", str(files / "source.png"), "--driving", str(files / "driving.mp4"),
            "--checkpoint", str(files / "tiny.safetensors"), "--out", str(tmp_path / "out.mp4"), "--quiet"]
    for flag, value in zip(override[::2], override[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    _loader_must_not_run(monkeypatch)
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("anytalk: error: ") and expected in err[0], err
    assert not (tmp_path / "out.mp4").exists()


def test_auto_crop_and_output_size_are_reported_and_upscale_enlarges(files, tmp_path, capsys):
    out = tmp_path / "big.mp4"
    assert animate(files, out, "--crop", "auto", "--upscale", "160") == 0
    err = capsys.readouterr().err
    crop_line = next(line for line in err.splitlines() if line.startswith("anytalk: crop auto: "))
    # which detector framed it (or that none did), and the square taken from the 70 x 90 source
    assert re.search(r"(framed by the .+: face box x=-?\d+ y=-?\d+ w=\d+ h=\d+|no head found)", crop_line), crop_line
    assert re.search(r"a \d+ x \d+ px square of the 70 x 90 picture", crop_line), crop_line
    assert "anytalk: output: 160 x 160 px: the model's 64 x 64 px frames enlarged" in err
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (160, 160, 13)
    assert animate(files, tmp_path / "small.mp4") == 0
    assert "anytalk: output: 64 x 64 px, the model's size" in capsys.readouterr().err
    assert animate(files, tmp_path / "no.mp4", "--upscale", "160", "--paste-back") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "paste-back" in err[0] and not (tmp_path / "no.mp4").exists()


def test_memory_modes_write_the_same_video(files, tmp_path):
    """``--memory fast`` only changes where freed memory goes (a process-wide setting: each mode in its own process),
    never the frames."""
    import subprocess
    import sys

    from anytalk_core.media import read_video

    frames = {}
    for mode in ("lean", "fast"):
        out = tmp_path / f"{mode}.mp4"
        result = subprocess.run([sys.executable, "-m", "anytalk_app.cli", "animate", "--source", str(files / "source.png"),
                                 "--driving", str(files / "driving.mp4"), "--checkpoint", str(files / "tiny.safetensors"),
                                 "--out", str(out), "--quiet", "--memory", mode], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        frames[mode] = read_video(out, audio=False).frames
    assert frames["lean"].shape[0] == 13
    assert torch.equal(frames["lean"], frames["fast"])
