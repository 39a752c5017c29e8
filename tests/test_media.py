"""Media I/O: image modes, video/audio round trips, constant-rate resampling, sync, atomic writes, errors.

All data is generated here (moving colour gradients, sines, solid grey levels) in tmp_path.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from anytalk_core.media import (
    VideoWriter,
    fit_audio_to_frames,
    image_tensor_to_rgb,
    iter_video_frames,
    load_image,
    probe_video,
    read_audio,
    read_video,
    save_image,
    to_rgb_array,
    unique_path,
    write_video,
    write_wav,
)

FPS = 25


def gradient_frames(n: int, height: int, width: int) -> torch.Tensor:
    """Smooth colour gradients that drift a little every frame, uint8 [n, H, W, 3]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    frames = []
    for i in range(n):
        phase = 2 * torch.pi * i / 24
        r = 0.5 + 0.4 * torch.sin(torch.pi * x + phase)
        g = 0.5 + 0.4 * torch.cos(torch.pi * y - phase)
        b = 0.3 + 0.3 * (x + y) / 2 + 0.1 * np.sin(phase)
        frames.append(torch.stack([r, g, b], -1))
    return (torch.stack(frames).clamp(0, 1) * 255).round().to(torch.uint8)


def sine(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> torch.Tensor:
    """A 0.5-amplitude sine [C, T]."""
    t = torch.arange(int(round(seconds * rate))) / rate
    return (0.5 * torch.sin(2 * torch.pi * freq * t)).repeat(channels, 1)


def listing(folder) -> list[str]:
    """Everything in ``folder``, hidden files included."""
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------- video round trips


@pytest.mark.parametrize("ext,tolerance", [("mp4", 3.0), ("webm", 6.0), ("gif", 10.0)])
@pytest.mark.parametrize("height,width", [(48, 64), (25, 33)])
def test_video_round_trip(tmp_path, ext, tolerance, height, width):
    frames = gradient_frames(12, height, width)
    path = write_video(tmp_path / f"clip.{ext}", frames, FPS, crf=10 if ext == "mp4" else None)
    info = probe_video(path)
    clip = read_video(path)
    assert clip.frames.dtype == torch.uint8 and clip.frames.shape[0] == 12 == info.frame_count
    assert clip.fps == pytest.approx(FPS) and info.fps == pytest.approx(FPS)
    if ext == "mp4" and width % 2:  # yuv420p: padded to even by edge replication
        assert clip.frames.shape[1:] == (height + 1, width + 1, 3)
        assert (info.width, info.height) == (width + 1, height + 1)
        edge = (clip.frames[:, :, -1].float() - clip.frames[:, :, -2].float()).abs().mean()
        assert edge < tolerance
    else:
        assert clip.frames.shape[1:] == (height, width, 3) and (info.width, info.height) == (width, height)
    error = (clip.frames[:, :height, :width].float() - frames.float()).abs().mean()
    assert error < tolerance
    assert clip.audio is None and not info.has_audio


def test_float_frames_and_one_frame_video(tmp_path):
    frame = gradient_frames(1, 32, 32)
    for ext in ("mp4", "webm", "gif"):
        path = write_video(tmp_path / f"one.{ext}", frame.float() / 255.0, FPS)
        clip = read_video(path)
        assert clip.frames.shape == (1, 32, 32, 3), ext
        assert (clip.frames.float() - frame.float()).abs().mean() < 10


def test_chunked_iteration_equals_full_read(tmp_path):
    path = write_video(tmp_path / "clip.mp4", gradient_frames(11, 32, 48), FPS)
    chunks = list(iter_video_frames(path, chunk=4))
    assert [c.shape[0] for c in chunks] == [4, 4, 3]
    assert torch.equal(torch.cat(chunks), read_video(path).frames)
    assert read_video(path, max_frames=5).frames.shape[0] == 5


def test_display_rotation_applied(tmp_path):
    frames = torch.zeros(3, 32, 48, 3, dtype=torch.uint8)
    frames[:, :8, :8] = 255  # white block top-left
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise
        for i, image in enumerate(frames.numpy()):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe_video(path)
    clip = read_video(path)
    assert (info.width, info.height, info.rotation) == (32, 48, 90)
    expected = torch.from_numpy(np.ascontiguousarray(np.rot90(frames.numpy(), k=1, axes=(1, 2))))
    assert clip.frames.shape == expected.shape
    assert (clip.frames.float() - expected.float()).abs().mean() < 5


# ------------------------------------------------------------------------------ variable frame rate input


VFR_PTS_MS = [0, 40, 80, 200, 240, 400, 420, 440, 460, 600]


def write_vfr(path, pts_ms=VFR_PTS_MS, size=(32, 32)) -> list[int]:
    """An mp4 whose frame i is solid grey level 20 + 22 i, shown at pts_ms[i] (1 ms time base)."""
    levels = [20 + 22 * i for i in range(len(pts_ms))]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
        for level, pts in zip(levels, pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), level, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return levels


def expected_indices(pts_ms, fps, end_ms) -> list[int]:
    """The documented rule: output i at t = i / fps shows the latest frame with pts <= t, until ``end``."""
    out, i = [], 0
    while i * 1000 / fps < end_ms:
        t = i * 1000 / fps
        out.append(max(k for k, p in enumerate(pts_ms) if p <= t))
        i += 1
    return out


def decoded_indices(frames: torch.Tensor, levels: list[int]) -> list[int]:
    """Which solid-grey input frame each output frame is."""
    means = frames.float().mean(dim=(1, 2, 3))
    return [int(np.argmin([abs(m - level) for level in levels])) for m in means.tolist()]


@pytest.mark.parametrize("fps", [25, 10, 60])
def test_vfr_resampled_to_constant_rate(tmp_path, fps):
    path = tmp_path / "vfr.mp4"
    levels = write_vfr(path)
    clip = read_video(path, fps=fps)
    assert clip.fps == fps
    assert decoded_indices(clip.frames, levels) == expected_indices(VFR_PTS_MS, fps, end_ms=640)


def test_vfr_without_fps_uses_average_rate(tmp_path):
    path = tmp_path / "vfr.mp4"
    levels = write_vfr(path)
    info = probe_video(path)
    clip = read_video(path)
    assert clip.fps == pytest.approx(info.fps)
    assert decoded_indices(clip.frames, levels) == expected_indices(VFR_PTS_MS, info.fps, end_ms=640)


# ------------------------------------------------------------------------------------------ audio + sync


@pytest.mark.parametrize("ext", ["mp4", "webm"])
@pytest.mark.parametrize("audio_seconds", [1.5, 0.3])
def test_audio_muxed_in_sync(tmp_path, ext, audio_seconds):
    n, rate = 20, 16000
    audio = sine(audio_seconds, rate, channels=2)
    path = write_video(tmp_path / f"talk.{ext}", gradient_frames(n, 32, 32), FPS, audio=(audio, rate))
    info = probe_video(path)
    clip = read_video(path)
    assert info.has_audio and clip.audio is not None and clip.audio.shape[0] == 2
    video_seconds = clip.frames.shape[0] / clip.fps
    audio_out = clip.audio.shape[1] / clip.sample_rate
    assert clip.frames.shape[0] == n
    assert abs(audio_out - video_seconds) <= 1 / FPS
    rms = lambda w: float(w.pow(2).mean().sqrt())  # noqa: E731
    head = clip.audio[:, int(0.05 * clip.sample_rate) : int(0.25 * clip.sample_rate)]
    assert rms(head) == pytest.approx(0.5 / 2**0.5, rel=0.15)
    if audio_seconds < video_seconds:  # padded with silence after the audio ends
        tail = clip.audio[:, int((audio_seconds + 0.1) * clip.sample_rate) :]
        assert tail.shape[1] > 0 and rms(tail) < 0.02


def test_comfy_audio_dict_and_gif_ignores_audio(tmp_path):
    audio = {"waveform": sine(1.0, 22050).unsqueeze(0), "sample_rate": 22050}
    path = write_video(tmp_path / "a.mp4", gradient_frames(5, 32, 32), FPS, audio=audio)
    waveform, rate = read_audio(path)
    assert rate == 22050 and abs(waveform.shape[1] / rate - 5 / FPS) <= 1 / FPS
    with pytest.warns(UserWarning, match="no audio"):
        gif = write_video(tmp_path / "a.gif", gradient_frames(5, 32, 32), FPS, audio=audio)
    assert not probe_video(gif).has_audio


def test_wav_round_trip_resample_and_mono(tmp_path):
    audio = sine(0.5, 16000, channels=2)
    path = write_wav(tmp_path / "tone.wav", audio, 16000)
    waveform, rate = read_audio(path)
    assert rate == 16000 and waveform.shape == audio.shape and waveform.dtype == torch.float32
    assert (waveform - audio).abs().max() < 1e-3
    resampled, rate = read_audio(path, sample_rate=48000, mono=True)
    assert rate == 48000 and resampled.shape[0] == 1 and abs(resampled.shape[1] - 24000) <= 64
    with pytest.raises(FileExistsError, match="tone.wav"):
        write_wav(path, audio, 16000)


def test_fit_audio_to_frames():
    audio = torch.ones(2, 1000)
    assert fit_audio_to_frames(audio, 16000, 1, 25).shape == (2, 640)
    padded = fit_audio_to_frames(audio, 16000, 3, 25)
    assert padded.shape == (2, 1920) and padded[:, :1000].eq(1).all() and padded[:, 1000:].eq(0).all()
    assert fit_audio_to_frames(audio, 16000, 10, 29.97).shape[-1] == round(10 / 29.97 * 16000)


# ---------------------------------------------------------------------------------------- image modes


def test_image_modes_convert_to_rgb():
    gray = Image.new("L", (4, 3), 100)
    assert (to_rgb_array(gray) == 100).all() and to_rgb_array(gray).shape == (3, 4, 3)

    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (to_rgb_array(palette) == [10, 200, 30]).all()

    palette.info["transparency"] = 1  # colour 1 fully transparent -> background
    assert (to_rgb_array(palette) == 255).all()
    assert (to_rgb_array(palette, background=(0.0, 0.0, 0.0)) == 0).all()

    rgba = Image.new("RGBA", (2, 2), (200, 100, 0, 128))
    a = 128 / 255
    expected = np.round(np.array([200, 100, 0]) * a + 255 * (1 - a))
    assert np.abs(to_rgb_array(rgba).astype(int) - expected).max() <= 1
    assert (to_rgb_array(rgba, background=None) == [200, 100, 0]).all()
    assert (to_rgb_array(Image.new("LA", (2, 2), (50, 0))) == 255).all()

    wide = Image.fromarray(np.full((2, 2), 65535 // 4, np.uint16))  # I;16
    assert wide.mode.startswith("I;16")
    assert np.allclose(to_rgb_array(wide, dtype=np.float32), (65535 // 4) / 65535)

    cmyk = Image.new("CMYK", (2, 2), (255, 0, 0, 0))  # pure cyan
    assert (to_rgb_array(cmyk) == [0, 255, 255]).all()
    assert (to_rgb_array(Image.new("CMYK", (2, 2), (0, 0, 0, 255))) == 0).all()

    ycbcr = Image.new("RGB", (2, 2), (30, 120, 210)).convert("YCbCr")
    assert np.abs(to_rgb_array(ycbcr).astype(int) - [30, 120, 210]).max() <= 3
    assert (to_rgb_array(Image.new("1", (2, 2), 1)) == 255).all()
    hsv = Image.new("RGB", (2, 2), (30, 120, 210)).convert("HSV")
    assert np.abs(to_rgb_array(hsv).astype(int) - [30, 120, 210]).max() <= 3
    premultiplied = Image.new("La", (2, 2), (100, 128))  # Pillow itself cannot convert La
    assert np.abs(to_rgb_array(premultiplied).astype(int) - round(100 + 255 * (1 - 128 / 255))).max() <= 1
    assert np.allclose(to_rgb_array(Image.new("F", (2, 2), 0.25), dtype=np.float32), 0.25)


def test_load_image_16bit_png_and_exif(tmp_path):
    values = np.array([[0, 1000], [30000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.dtype == torch.float32 and loaded.shape == (2, 2, 3)
    assert torch.allclose(loaded[..., 0], torch.from_numpy(values / 65535.0).float(), atol=1e-6)

    image = Image.new("RGB", (6, 4), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (6, 4, 3)
    assert loaded[0, -1].mean() > 0.8  # the top-left corner moved to the top-right


def test_an_unreadable_exif_block_is_ignored_with_one_warning(monkeypatch, caplog):
    from anytalk_core.media import image as image_module

    def broken(_image):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(image_module.ImageOps, "exif_transpose", broken)
    monkeypatch.setattr(image_module, "_EXIF_WARNED", [])
    picture = Image.new("RGB", (3, 2), (10, 20, 30))
    with caplog.at_level(logging.WARNING, logger="anytalk"):
        assert to_rgb_array(picture).shape == (2, 3, 3)
        assert to_rgb_array(picture).shape == (2, 3, 3)
    warned = [r.getMessage() for r in caplog.records if r.name == "anytalk"]
    assert warned == ["AnyTalk: an image's EXIF block is unreadable (SyntaxError: not a TIFF file); it is used as "
                      "stored, without rotating it by its EXIF orientation"]


def test_to_unit_frames_takes_either_layout_and_scales_uint8_only():
    from anytalk_core.media.image import to_unit_frames

    u8 = torch.full((2, 5, 4, 3), 255, dtype=torch.uint8)
    assert to_unit_frames(u8).shape == (2, 3, 5, 4) and to_unit_frames(u8).eq(1).all()
    floats = torch.full((1, 3, 2, 2), 1.5)
    assert to_unit_frames(floats).eq(1.5).all()  # not clamped: metrics see what the model made
    with pytest.raises(ValueError, match="frames contain NaN or infinite values"):
        to_unit_frames(torch.full((1, 3, 2, 2), float("inf")))
    with pytest.raises(ValueError, match=r"frames must be \(N, H, W, 3\) or \(N, 3, H, W\)"):
        to_unit_frames(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="3 colour channels"):
        to_unit_frames(torch.zeros(1, 2, 2, 2))


def test_image_tensor_to_rgb():
    rgba = torch.zeros(2, 4, 4, 4)
    rgba[..., 3] = 0.0
    assert image_tensor_to_rgb(rgba).eq(1).all()  # transparent -> white
    assert image_tensor_to_rgb(rgba, background=None).eq(0).all()
    assert image_tensor_to_rgb(torch.full((4, 4, 1), 0.5)).shape == (1, 4, 4, 3)
    assert image_tensor_to_rgb(torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)).eq(1).all()
    with pytest.raises(ValueError, match="shape"):
        image_tensor_to_rgb(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="empty"):
        image_tensor_to_rgb(torch.zeros(0, 4, 4, 3))
    with pytest.raises(ValueError, match="NaN"):
        image_tensor_to_rgb(torch.full((1, 4, 4, 3), float("nan")))
    with pytest.raises(ValueError, match="channels"):
        image_tensor_to_rgb(torch.zeros(1, 3, 8, 8))


def test_save_image_round_trip_and_overwrite(tmp_path):
    image = gradient_frames(1, 8, 10)[0].float() / 255.0
    path = save_image(image, tmp_path / "out.png")
    assert torch.allclose(load_image(path), image, atol=1 / 255)
    with pytest.raises(FileExistsError, match="out.png"):
        save_image(image, path)
    save_image(torch.zeros(1, 8, 10, 3), path, overwrite=True)
    assert load_image(path).eq(0).all()
    with pytest.raises(ValueError, match="format"):
        save_image(image, tmp_path / "out.unknown")
    assert listing(tmp_path) == ["out.png"]


# ------------------------------------------------------------------------- overwrite and atomic writes


def test_unique_path_and_video_overwrite_refusal(tmp_path):
    target = tmp_path / "render.mp4"
    first = unique_path(target)
    assert first.name == "render_00001.mp4"
    write_video(first, gradient_frames(2, 16, 16), FPS)
    assert unique_path(target).name == "render_00002.mp4"
    size = first.stat().st_size
    with pytest.raises(FileExistsError, match="render_00001.mp4"):
        write_video(first, gradient_frames(3, 16, 16), FPS)
    assert first.stat().st_size == size
    write_video(first, gradient_frames(3, 16, 16), FPS, overwrite=True)
    assert probe_video(first).frame_count == 3
    assert listing(tmp_path) == ["render_00001.mp4"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "crash.mp4", FPS, audio=(sine(1.0, 16000), 16000)) as writer:
            writer.write(gradient_frames(4, 16, 16))
            assert len(listing(tmp_path)) == 1  # the hidden temp file, nothing at the target yet
            raise RuntimeError("interrupted")
    assert listing(tmp_path) == []

    writer = VideoWriter(tmp_path / "sizes.webm", FPS)
    writer.write(gradient_frames(2, 16, 16))
    with pytest.raises(ValueError, match="frame size changed"):
        writer.write(gradient_frames(2, 18, 16))
    assert listing(tmp_path) == []

    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.gif", FPS):
            pass
    assert listing(tmp_path) == []

    with pytest.raises(ValueError, match="NaN"):
        write_video(tmp_path / "nan.mp4", torch.full((2, 16, 16, 3), float("nan")), FPS)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------- clear errors


def test_missing_files_are_named(tmp_path):
    missing = tmp_path / "nowhere_42.mp4"
    for reader in (probe_video, read_video, read_audio, load_image, iter_video_frames):
        with pytest.raises(FileNotFoundError, match="nowhere_42"):
            reader(missing)


def test_garbage_files_are_named(tmp_path):
    garbage = tmp_path / "garbage_7.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    text = tmp_path / "notes_3.png"
    text.write_text("hello, not an image\n" * 20)
    empty = tmp_path / "empty_5.webm"
    empty.write_bytes(b"")
    for reader in (probe_video, read_video, read_audio):
        with pytest.raises(ValueError, match="garbage_7"):
            reader(garbage)
        with pytest.raises(ValueError, match="empty_5"):
            reader(empty)
    with pytest.raises(ValueError, match="notes_3"):
        load_image(text)
    with pytest.raises(ValueError, match="notes_3"):
        probe_video(text)


def test_wrong_kind_of_media_is_named(tmp_path):
    wav = write_wav(tmp_path / "voice_9.wav", sine(0.2, 8000), 8000)
    with pytest.raises(ValueError, match="no video stream.*voice_9"):
        read_video(wav)
    silent = write_video(tmp_path / "silent_8.mp4", gradient_frames(2, 16, 16), FPS)
    with pytest.raises(ValueError, match="no audio track.*silent_8"):
        read_audio(silent)
    with pytest.raises(ValueError, match="unsupported video format"):
        VideoWriter(tmp_path / "clip.avi", FPS)


def test_a_missing_preferred_encoder_is_announced(monkeypatch):
    from anytalk_core.media import video as video_module

    real = video_module.av.Codec

    def codec(name, mode="r"):
        if name in ("libx264", "h264"):
            raise video_module.av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(video_module.av, "Codec", codec)
    with pytest.warns(UserWarning, match=r"no libx264 encoder: mp4 video is encoded with mpeg4 \(no CRF mode"):
        assert video_module._first_encoder(("libx264", "h264", "mpeg4"), "video", "mp4") == "mpeg4"
