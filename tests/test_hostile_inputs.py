"""Hostile and oversized files (issue 21): every reader bounds memory before allocating and ends in one error type.

Each test builds its own hostile file in tmp_path. Bounds are lowered with their environment variables
where the real hostile file would take long to build (a 10-hour flac, a 169-Mpx PNG): the code path is the same.
"""
from __future__ import annotations

import json
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from anytalk_core import limits
from anytalk_core.checkpoints import CheckpointError, read_weights
from anytalk_app.cli import main as cli_main
from anytalk_core.engine import Engine
from anytalk_core.expression_edit import parse_keypoint_scales
from anytalk_core.media import iter_video_frames, load_image, probe_video, read_audio
from anytalk_core.media import audio as audio_module
from anytalk_core.media import video as video_module
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.motion import MOTION_FORMAT, Motion, MotionFileError
from anytalk_core.safetensors_io import FileFormatError, read_header, read_safetensors

# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def write_frames(path, pts, time_base, size=(16, 16), rate=25, fmt=None):
    """A video whose frames carry the given timestamps (in ``time_base`` units), set by hand."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        s.time_base = s.codec_context.time_base = time_base
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 40 * i % 255, np.uint8), format="rgb24")
            f.pts, f.time_base = p, time_base
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


def write_silent_flac(path, seconds: float, rate: int = 16000):
    with av.open(str(path), "w") as c:
        s = c.add_stream("flac", rate=rate)
        s.layout = "mono"
        block = 4096
        for start in range(0, int(seconds * rate), block):
            n = min(block, int(seconds * rate) - start)
            f = av.AudioFrame.from_ndarray(np.zeros((1, n), np.int16), format="s16", layout="mono")
            f.sample_rate, f.pts = rate, start
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


def raw_safetensors(path, header: object, data: bytes = b"", header_bytes: bytes | None = None):
    """A safetensors file with exactly this header (any JSON, or raw bytes) and data section."""
    text = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def motion_file(path, tensors: dict | None = None, **meta):
    n, k = 4, 15
    t = {"yaw": torch.zeros(n), "pitch": torch.zeros(n), "roll": torch.zeros(n), "translation": torch.zeros(n, 3),
         "expression": torch.zeros(n, k, 3)}
    t.update(tensors or {})
    save_file({k: v for k, v in t.items() if v is not None}, str(path),
              metadata={"format": MOTION_FORMAT, "family": "face_vid2vid", "fps": "25.0", **meta})
    return path


# --------------------------------------------------------------------------------------------------
# 1. Keypoint ranges are checked before they are expanded
# --------------------------------------------------------------------------------------------------

def test_huge_keypoint_range_is_refused_before_expansion():
    with pytest.raises(ValueError, match=r"keypoint '999999999999' does not exist \(this motion has keypoints 0 to 14\)"):
        parse_keypoint_scales("0-999999999999:1", num_kp=15)
    with pytest.raises(ValueError, match="no model has more than 1024 keypoints"):
        parse_keypoint_scales("0-5000000:1")
    with pytest.raises(ValueError, match="does not exist"):
        parse_keypoint_scales("3-" + "9" * 5000 + ":1", num_kp=15)  # beyond int()'s digit limit too
    assert parse_keypoint_scales("0-14:2", num_kp=15) == {i: 2.0 for i in range(15)}


# --------------------------------------------------------------------------------------------------
# 2. Broken timestamps and frame rates
# --------------------------------------------------------------------------------------------------

def test_frames_ten_hours_apart_are_refused_up_front(tmp_path):
    video = write_frames(tmp_path / "jump.mp4", [0, 36000 * 1000], Fraction(1, 1000))
    assert video.stat().st_size < 2000
    expected = r"jump\.mp4: the video lasts 36000 s \(10\.0 h\), longer than the 1800\.0 s accepted.*ANYTALK_MAX_SECONDS"
    with pytest.raises(limits.LimitError, match=expected):
        probe_video(video)
    with pytest.raises(limits.LimitError, match=expected):
        next(iter_video_frames(video))


def test_timestamps_are_bounded_while_decoding_when_headers_say_nothing(tmp_path, monkeypatch):
    video = write_frames(tmp_path / "jump.mp4", [0, 36000 * 1000], Fraction(1, 1000))
    monkeypatch.setattr(video_module, "_check_length", lambda seconds, path: None)  # as if no duration were stored
    with pytest.raises(limits.LimitError, match="by its timestamps, the video lasts 36000 s"):
        list(iter_video_frames(video, fps=25))


def test_a_video_below_the_lowest_frame_rate_is_refused(tmp_path):
    video = write_frames(tmp_path / "slow.mkv", [0], Fraction(1000, 1), rate=Fraction(1, 1000), fmt="matroska")
    with pytest.raises(limits.LimitError, match=r"frame rate 0\.001 fps is below 0\.1 fps.*resample it with a frame rate"):
        next(iter_video_frames(video))
    assert next(iter_video_frames(video, fps=1.0)).shape[0] >= 1  # resampling it is the way out
    with pytest.raises(limits.LimitError, match="frame rate 0.001 fps is outside 0.1 to 240 fps"):
        iter_video_frames(video, fps=0.001)


# --------------------------------------------------------------------------------------------------
# 3. Long audio
# --------------------------------------------------------------------------------------------------

def test_long_audio_is_refused_from_its_stated_duration(tmp_path, monkeypatch):
    flac = write_silent_flac(tmp_path / "long.flac", 5.0)
    monkeypatch.setenv("ANYTALK_MAX_SECONDS", "2")
    decoded = []
    monkeypatch.setattr(audio_module, "_decode_planar", lambda *a: decoded.append(1) or [])
    with pytest.raises(limits.LimitError, match=r"long\.flac: the audio track lasts 5\.0 s, longer than the 2\.0 s"):
        read_audio(flac)
    assert not decoded  # refused before decoding


def test_long_audio_is_refused_while_decoding_without_a_stated_duration(tmp_path, monkeypatch):
    flac = write_silent_flac(tmp_path / "long.flac", 5.0)
    monkeypatch.setenv("ANYTALK_MAX_SECONDS", "2")
    monkeypatch.setattr(audio_module, "_check_declared_length", lambda *a: None)
    with pytest.raises(limits.LimitError, match=r"audio track \(decoded so far\) lasts 2\.\d s, longer than the 2\.0 s"):
        read_audio(flac)
    monkeypatch.setenv("ANYTALK_MAX_SECONDS", "10")
    waveform, rate = read_audio(flac)
    assert rate == 16000 and waveform.shape == (1, 80000)


def test_a_bad_limit_setting_is_explained(monkeypatch):
    monkeypatch.setenv("ANYTALK_MAX_SECONDS", "lots")
    with pytest.raises(limits.LimitError, match="ANYTALK_MAX_SECONDS='lots' must be a positive number"):
        limits.max_seconds()


# --------------------------------------------------------------------------------------------------
# 4 and 7. Motion files
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fps, message", [
    ("1e-4", "frame rate 0.0001 fps is outside 0.1 to 240 fps"),
    ("1e-300", "frame rate 1e-300 fps is outside"),
    ("1e400", "frame rate inf fps is outside"),
    ("NaN", "frame rate nan fps is outside"),
    ("[1]", r"fps metadata '\[1\]' is not a number"),
    ('"25"', "is not a number"),
    ("true", "is not a number"),
    ("{", "is not JSON"),
    ("[" * 100_000, "is not JSON"),
])
def test_motion_fps_metadata_is_validated(tmp_path, fps, message):
    with pytest.raises(MotionFileError, match=message):
        Motion.load(motion_file(tmp_path / "m.safetensors", fps=fps))


@pytest.mark.parametrize("tensors, message", [
    ({"__class__": torch.zeros(4)}, r"unexpected tensors '__class__' \(a motion has yaw, pitch, roll, translation, expression, scale\)"),
    ({"yaw": None}, r"lacks tensors \['yaw'\]"),
    ({"yaw": torch.zeros(4, dtype=torch.int32)}, "'yaw' has dtype torch.int32"),
    ({"expression": torch.full((4, 15, 3), float("nan"))}, "'expression' holds NaN or infinite values"),
    ({"roll": torch.tensor([0.0, float("inf"), 0.0, 0.0])}, "'roll' holds NaN or infinite values"),
    ({"translation": torch.full((4, 3), 1e30)}, "beyond"),
    ({"pitch": torch.zeros(5)}, "inconsistent shapes"),
    ({"expression": torch.zeros(4, 0, 3)}, "4 frames of 0 keypoints"),
    ({"expression": torch.zeros(4, 1025, 3)}, "4 frames of 1025 keypoints; a motion needs at least one frame and 1 to 1024"),
])
def test_motion_tensors_are_validated(tmp_path, tensors, message):
    with pytest.raises(MotionFileError, match=message):
        Motion.load(motion_file(tmp_path / "m.safetensors", tensors))


def test_motion_half_and_double_tensors_load_as_float32(tmp_path):
    for dtype in (torch.float16, torch.float64, torch.bfloat16):
        path = motion_file(tmp_path / f"m_{dtype}.safetensors".replace("torch.", ""),
                           {"yaw": torch.ones(4, dtype=dtype), "expression": torch.zeros(4, 15, 3, dtype=dtype)})
        motion = Motion.load(path)
        assert all(t.dtype == torch.float32 for t in motion.tensors().values()) and float(motion.yaw[0]) == 1.0


def test_motion_longer_than_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYTALK_MAX_SECONDS", "0.1")
    with pytest.raises(MotionFileError, match=r"the motion \(4 frames at 25 fps\) lasts 0\.2 s, longer than the 0\.1 s"):
        Motion.load(motion_file(tmp_path / "m.safetensors"))


def test_nan_motion_is_bad_input_not_a_generator_fault():
    model = build_model(tiny_config(num_kp=15)).eval()
    engine = Engine(model)
    source = engine.prepare_source(torch.rand(1, 3, 64, 64))
    n = 3
    yaw = torch.zeros(n)
    yaw[1] = float("nan")
    motion = Motion(yaw, torch.zeros(n), torch.zeros(n), torch.zeros(n, 3), torch.zeros(n, 15, 3))
    with pytest.raises(ValueError, match=r"driving motion holds NaN or infinite values \(yaw, frame 1\): it is bad "
                                         r"input, not a precision problem") as info:
        engine.driven_keypoints(source, motion)
    assert "bf16" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# 5. Big frames
# --------------------------------------------------------------------------------------------------

def test_big_frames_are_downscaled_in_the_decoder(tmp_path):
    video = write_frames(tmp_path / "big.mp4", [0, 1, 2], Fraction(1, 25), size=(1024, 512))
    chunks = list(iter_video_frames(video, max_size=64))
    frames = torch.cat(chunks)
    assert frames.shape == (3, 32, 64, 3) and frames.dtype == torch.uint8
    assert abs(int(frames[1].float().mean().round()) - 40) <= 3  # the picture, not garbage


def test_oversized_frames_and_images_are_refused_from_their_headers(tmp_path, monkeypatch):
    video = write_frames(tmp_path / "big.mp4", [0], Fraction(1, 25), size=(256, 128))
    png = tmp_path / "big.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(png)
    monkeypatch.setenv("ANYTALK_MAX_PIXELS", "20000")
    with pytest.raises(limits.LimitError, match=r"big\.png: the image is 300x200 \(0\.1 Mpx\), larger than the 0\.02 "
                                                r"Mpx accepted.*ANYTALK_MAX_PIXELS"):
        load_image(png)
    with pytest.raises(limits.LimitError, match=r"big\.mp4: the video's frames is 256x128"):
        probe_video(video)
    with pytest.raises(limits.LimitError, match=r"a video frame is 256x128"):
        next(iter_video_frames(video))
    monkeypatch.delenv("ANYTALK_MAX_PIXELS")
    assert load_image(png).shape == (200, 300, 3)


def test_image_batch_bound_names_its_setting(monkeypatch):
    monkeypatch.setenv("ANYTALK_MAX_IMAGE_GB", "0.001")
    with pytest.raises(limits.LimitError, match=r"clip\.mp4: 100 frames of 64x64.*ANYTALK_MAX_IMAGE_GB"):
        limits.check_image_bytes(100, 64, 64, "clip.mp4")
    limits.check_image_bytes(20, 64, 64, "clip.mp4")


# --------------------------------------------------------------------------------------------------
# 6. Safetensors headers
# --------------------------------------------------------------------------------------------------

def _entry(shape, dtype="F32", offsets=(0, 4)):
    return {"dtype": dtype, "shape": shape, "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, message", [
    ({"w": _entry([1_000_000, 1_000_000])}, r"declares shape \[1000000, 1000000\] of F32 \(4000000000000 bytes\) but holds 4"),
    ({"w": _entry([2**62, 2**62, 2**62])}, "declares shape"),
    ({"w": _entry([-1])}, "expected a list of at most 64 non-negative integers"),
    ({"w": _entry([1.0])}, "expected a list of at most 64 non-negative integers"),
    ({"w": _entry([True])}, "non-negative integers"),
    ({"w": _entry([1] * 65)}, "at most 64"),
    ({"w": _entry([1], offsets=(0, 2**70))}, "lies outside the file"),
    ({"w": _entry([1], offsets=(-4, 0))}, "expected two non-negative integers"),
    ({"w": _entry([1], dtype="F8_E4M3")}, "unsupported dtype 'F8_E4M3'"),
    ({"w": {"dtype": "F32", "shape": [1]}}, r"lacks \['data_offsets'\]"),
    ({"w": {**_entry([1]), "extra": 1}}, "unknown fields"),
    ({"w": [1]}, "described by a JSON array"),
    ({"__metadata__": ["a"], "w": _entry([1])}, "__metadata__ is a JSON array, not an object of strings"),
    ({"__metadata__": {"a": 1}, "w": _entry([1])}, r"__metadata__\['a'\] is a JSON number, not a string"),
    ({"a": _entry([1]), "b": _entry([1])}, "tensors 'a' and 'b' overlap"),
    ([1, 2], "header is a JSON list, not an object"),
])
def test_malformed_safetensors_headers_are_refused_before_allocating(tmp_path, header, message):
    path = raw_safetensors(tmp_path / "bad.safetensors", header, data=b"\0" * 4)
    with pytest.raises(FileFormatError, match=message):
        read_safetensors(path)
    with pytest.raises(CheckpointError, match="bad.safetensors: not a"):
        read_weights(path)


@pytest.mark.parametrize("header_bytes, message", [
    (b"[" * 200_000 + b"]" * 200_000, "nested 200000 levels deep"),
    (b'{"w": {"a": {"b": {"c": 1}}}}', "nested 4 levels deep"),
    (b'{"a": 1, "a": 2}', "names 'a' twice"),
    (b'{"w": NaN}', "holds NaN, which is not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json}", "not valid JSON"),
])
def test_malformed_header_json_is_refused(tmp_path, header_bytes, message):
    path = raw_safetensors(tmp_path / "bad.safetensors", None, header_bytes=header_bytes)
    with pytest.raises(FileFormatError, match=message):
        read_header(path)


def test_header_length_must_fit_the_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(FileFormatError, match="does not fit the file of 10 bytes"):
        read_safetensors(path)
    path.write_bytes(b"\x01")
    with pytest.raises(FileFormatError, match="too short for a header"):
        read_safetensors(path)


@pytest.mark.parametrize("command", ["convert", "animate"])
def test_malformed_checkpoints_end_in_one_cli_line(tmp_path, capsys, command):
    bad = raw_safetensors(tmp_path / "bad.safetensors", {"__metadata__": ["x"], "w": _entry([1])}, data=b"\0" * 4)
    if command == "convert":
        argv = ["convert", str(bad), str(tmp_path / "out.safetensors")]
    else:
        source = tmp_path / "s.png"
        Image.new("RGB", (64, 64)).save(source)
        video = write_frames(tmp_path / "d.mp4", [0, 1], Fraction(1, 25), size=(64, 64))
        argv = ["animate", "--source", str(source), "--driving", str(video), "--checkpoint", str(bad),
                "--out", str(tmp_path / "out.mp4"), "--quiet", "--device", "cpu"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("anytalk: error: ") and "__metadata__ is a JSON array" in err
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "out.mp4").exists()


def test_cli_refuses_long_audio_before_loading_the_model(tmp_path, capsys, monkeypatch):
    flac = write_silent_flac(tmp_path / "speech.flac", 5.0)
    source = tmp_path / "s.png"
    Image.new("RGB", (64, 64)).save(source)
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"not a model")  # would fail to load: the audio is refused first
    monkeypatch.setenv("ANYTALK_MAX_SECONDS", "2")
    argv = ["animate", "--source", str(source), "--audio", str(flac), "--checkpoint", str(garbage),
            "--out", str(tmp_path / "out.mp4"), "--quiet", "--device", "cpu"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "speech.flac: the audio track lasts 5.0 s, longer than the 2.0 s accepted" in err
