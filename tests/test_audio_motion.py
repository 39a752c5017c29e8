"""Audio-driven motion in the library: torch speech features (any rate and channel count), the audio-to-motion
network (attention backends, streaming in windows), the optional ``audio2motion.`` checkpoint part, and
``anytalk animate --audio``."""
from __future__ import annotations

import logging
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from anytalk_core import audio_features as af
from anytalk_core.audio_motion import (
    attach_audio2motion,
    audio_to_motion,
    predict_outputs,
    require_audio2motion,
    rest_motion,
)
from anytalk_app.cli import main
from anytalk_core.checkpoints import CheckpointError, load_model, save_checkpoint
from anytalk_core.media import probe_video, read_audio, save_image, write_video, write_wav
from anytalk_core.models import audio2motion as a2m
from anytalk_core.models.config import AudioToMotionConfig, tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.motion import Motion
from anytalk_core.safetensors_io import read_safetensors
from anytalk_core.synthetic import synth_speech

SMALL = dict(n_mels=24, feature_dim=24, frontend_channels=8, dim=16, depth=2, heads=2, radius=3, context=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is as fast, and far faster on a busy machine
    yield
    torch.set_num_threads(threads)


def speech(seconds: float, seed: int = 0) -> torch.Tensor:
    return synth_speech(int(seconds * 16000), seed).waveform  # [1, T] at 16 kHz


def small_net(**kw) -> a2m.AudioToMotion:
    torch.manual_seed(0)
    return a2m.AudioToMotion(AudioToMotionConfig(**{**SMALL, **kw})).eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(tiny_config(with_discriminator=False)).eval()
    return attach_audio2motion(m, small_net())


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate,channels", [(8000, 1), (22050, 2), (44100, 2), (48000, 6), (16000, 1)])
def test_any_rate_and_channel_count_becomes_16k_mono_with_the_same_pitch(rate, channels):
    t = torch.arange(int(0.5 * rate)) / rate
    tone = 0.2 * torch.sin(2 * math.pi * 440 * t)
    wave = af.prepare_audio({"waveform": tone.expand(1, channels, -1).clone(), "sample_rate": rate})
    assert wave.dim() == 1 and abs(wave.shape[0] - 8000) <= 1
    spectrum = torch.fft.rfft(wave[1000:7000]).abs()
    assert abs(float(spectrum.argmax()) * 16000 / 6000 - 440) < 4


def test_loudness_is_normalised_so_features_ignore_the_recording_level():
    wave = speech(1.0)
    extractor = af.LogMel(40)
    loud = extractor(af.prepare_audio((wave, 16000)), 0, 100)
    quiet = extractor(af.prepare_audio((wave * 0.05, 16000)), 0, 100)
    assert torch.allclose(loud, quiet, atol=1e-3)


def test_mel_filterbank_puts_a_tone_in_its_band():
    extractor = af.LogMel(40)
    edges = af._mel_to_hz(torch.linspace(float(af._hz_to_mel(torch.tensor(40.0))),
                                         float(af._hz_to_mel(torch.tensor(8000.0))), 42, dtype=torch.float64))
    for freq in (300.0, 1000.0, 3000.0):
        t = torch.arange(8000) / 16000
        feats = extractor(0.3 * torch.sin(2 * math.pi * freq * t), 10, 20).mean(0)
        band = int(feats.argmax())
        assert edges[band] <= freq <= edges[band + 2]


def test_feature_windows_of_any_excerpt_equal_those_of_the_whole_clip():
    wave = af.prepare_audio((speech(2.0), 16000))
    extractor = af.LogMel(32)
    whole = af.frame_windows(extractor, wave, 0, 50, 25.0, 5)
    part = af.frame_windows(extractor, wave, 20, 10, 25.0, 5)
    assert torch.allclose(whole[20:30], part, atol=1e-5)
    first = 60 * af.HOP  # an excerpt from 0.6 s to 1.6 s, starting on a feature hop
    excerpt = af.padded_slice(wave, first, first + 16000)
    cut = af.frame_windows(extractor, excerpt, 20, 10, 25.0, 5, start_sample=first)
    assert torch.allclose(whole[20:30], cut, atol=1e-5)
    thirty = af.frame_windows(extractor, wave, 0, 60, 30.0, 5)  # any fps: interpolated between feature frames
    assert thirty.shape == (60, 11, 32) and torch.isfinite(thirty).all()


def test_frame_count_covers_the_audio():
    assert af.audio_frame_count(16000, 16000, 25.0) == 25
    assert af.audio_frame_count(16001, 16000, 25.0) == 26
    assert af.audio_frame_count(10, 16000, 25.0) == 1


def test_bad_audio_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="NaN"):
        af.prepare_audio({"waveform": torch.full((1, 1, 100), float("nan")), "sample_rate": 16000})
    with pytest.raises(ValueError, match="one clip"):
        af.prepare_audio({"waveform": torch.zeros(2, 1, 100), "sample_rate": 16000})
    with pytest.raises(ValueError, match="sample rate"):
        af.prepare_audio({"waveform": torch.zeros(1, 1, 100), "sample_rate": 0})
    with pytest.raises(ValueError, match="empty"):
        af.prepare_audio((torch.zeros(1, 0), 16000))


def test_speech_encoder_is_optional_and_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        af.SpeechEncoder("/models/hubert")

    class Encoder(torch.nn.Module):  # stands in for a wav2vec 2.0 model: 320-sample stride, 4 hidden layers
        config = types.SimpleNamespace(hidden_size=6)

        def forward(self, x, output_hidden_states=True):
            frames = F.avg_pool1d(x[:, None], 400, 320)[:, 0]  # [B, frames]
            states = [frames[..., None].expand(-1, -1, 6) * (i + 1) for i in range(4)]
            return types.SimpleNamespace(hidden_states=states)

    loaded = []
    fake = types.SimpleNamespace(AutoModel=types.SimpleNamespace(
        from_pretrained=lambda path, local_files_only: loaded.append((path, local_files_only)) or Encoder()))
    monkeypatch.setitem(sys.modules, "transformers", fake)
    config = AudioToMotionConfig(**{**SMALL, "features": "speech_encoder", "encoder_path": "/models/hubert",
                                    "encoder_layer": 2, "feature_dim": 6, "feature_rate": 50.0})
    extractor = af.feature_extractor(config)
    assert loaded == [("/models/hubert", True)] and extractor.rate == 50.0 and extractor.dim == 6
    wave = af.prepare_audio((speech(1.0), 16000))
    windows = af.frame_windows(extractor, wave, 0, 25, 25.0, 4)
    assert windows.shape == (25, 9, 6)
    net = a2m.AudioToMotion(config).eval()
    assert predict_outputs(net, wave, 25.0, 25, extractor=extractor).shape == (25, config.output_size)


# --------------------------------------------------------------------------------------------------
# Attention backends
# --------------------------------------------------------------------------------------------------

def _qkv(length=11):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, length, 8, generator=g) for _ in range(3)], a2m.band_mask(length, 2)


@pytest.fixture
def fake_xformers(monkeypatch):
    """A stand-in ``xformers.ops``: exact attention in xformers' [B, L, H, D] layout with an additive float bias,
    or (``no_kernel``) the NotImplementedError that the real one raises for CPU tensors."""
    state = types.SimpleNamespace(calls=[], no_kernel=False)

    def memory_efficient_attention(q, k, v, attn_bias=None):
        state.calls.append(q.device.type)
        if state.no_kernel:
            raise NotImplementedError("No operator found for `memory_efficient_attention_forward` (cpu)")
        scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
        if attn_bias is not None:
            scores = scores + attn_bias
        return torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v)

    monkeypatch.setattr(a2m, "_XFORMERS", [types.SimpleNamespace(memory_efficient_attention=memory_efficient_attention)])
    return state


def test_sdpa_is_used_on_cpu_by_default(fake_xformers):
    (q, k, v), mask = _qkv()
    out = a2m.attention(q, k, v, mask)
    assert a2m.last_attention_backend() == "sdpa" and fake_xformers.calls == []
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_the_xformers_path_agrees_with_sdpa(fake_xformers):
    (q, k, v), mask = _qkv(13)  # not a multiple of 8: the bias is sliced from an aligned tensor
    out = a2m.attention(q, k, v, mask, backend="xformers")
    assert a2m.last_attention_backend() == "xformers" and fake_xformers.calls == ["cpu"]
    assert torch.allclose(out, a2m.attention(q, k, v, mask, backend="sdpa"), atol=1e-6)


def test_a_chosen_xformers_without_a_kernel_raises(fake_xformers):
    fake_xformers.no_kernel = True
    (q, k, v), mask = _qkv()
    with pytest.raises(RuntimeError, match="'xformers' was chosen but xformers cannot run on cpu"):
        a2m.attention(q, k, v, mask, backend="xformers")
    assert fake_xformers.calls == ["cpu"]
    net = small_net()
    net.attention_backend = "xformers"
    with pytest.raises(RuntimeError, match="choose 'sdpa' or 'auto'"):
        net(torch.randn(1, 12, 9, 24))


def test_a_chosen_xformers_that_is_not_installed_raises(monkeypatch):
    monkeypatch.setattr(a2m, "_XFORMERS", [None])
    (q, k, v), mask = _qkv()
    with pytest.raises(RuntimeError, match="xformers is not installed"):
        a2m.attention(q, k, v, mask, backend="xformers")


def test_an_automatic_choice_is_logged_once(fake_xformers, monkeypatch, caplog):
    monkeypatch.setattr(a2m, "_LOGGED", set())
    (q, k, v), mask = _qkv()
    with caplog.at_level(logging.INFO, logger="anytalk"):
        a2m.attention(q, k, v, mask)
        a2m.attention(q, k, v, mask)
    lines = [r.getMessage() for r in caplog.records if "attention" in r.getMessage()]
    assert lines == ["AnyTalk audio-to-motion attention: sdpa (xformers runs only on CUDA when chosen automatically)"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_xformers_and_sdpa_agree_on_the_gpu():
    pytest.importorskip("xformers.ops")
    a2m._XFORMERS.clear()
    net = small_net().cuda()
    windows = torch.randn(2, 40, 9, 24, device="cuda")
    net.attention_backend = "sdpa"
    ref = net(windows)
    net.attention_backend = "auto"
    out = net(windows)
    assert a2m.last_attention_backend() == "xformers"
    assert torch.allclose(out, ref, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------

def test_long_audio_streams_in_bounded_windows_with_the_same_result(monkeypatch):
    net = small_net()
    wave = af.prepare_audio((speech(24.0, seed=3), 16000))
    n = af.audio_frame_count(wave.shape[0], 16000, 25.0)
    assert n == 600
    whole = predict_outputs(net, wave, 25.0, n, chunk=n)
    sizes = []
    forward = a2m.AudioToMotion.forward

    def recording(self, windows):
        sizes.append(windows.shape[1])
        return forward(self, windows)

    monkeypatch.setattr(a2m.AudioToMotion, "forward", recording)
    for chunk in (16, 150):
        sizes.clear()
        streamed = predict_outputs(net, wave, 25.0, n, chunk=chunk)
        assert torch.allclose(streamed, whole, atol=1e-5)
        assert max(sizes) <= chunk + 2 * net.reach  # tokens per call: bounded by the window, not the length
    assert net.reach == 5 // 2 + 2 * 3


# --------------------------------------------------------------------------------------------------
# The optional checkpoint part
# --------------------------------------------------------------------------------------------------

def test_checkpoints_load_with_and_without_the_audio_part(model, tmp_path):
    with_part, without = tmp_path / "with.safetensors", tmp_path / "without.safetensors"
    save_checkpoint(model, with_part)
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), without)
    state, meta = read_safetensors(str(with_part))
    assert any(k.startswith("audio2motion.") for k in state) and '"audio2motion": {' in meta["config"]
    loaded = load_model(with_part)
    assert loaded.has_audio2motion and loaded.config.audio2motion == model.config.audio2motion
    for key, value in model.audio2motion.state_dict().items():
        assert torch.equal(loaded.audio2motion.state_dict()[key], value)
    plain = load_model(without)
    assert not plain.has_audio2motion and "audio2motion" not in read_safetensors(str(without))[1]["config"]
    with pytest.raises(ValueError, match="no audio-to-motion weights; train one with `anytalk-train"):
        require_audio2motion(plain)


def test_strict_loading_catches_missing_foreign_and_misshaped_audio_weights(model, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "good.safetensors"
    save_checkpoint(model, path)
    state, meta = read_safetensors(str(path))
    cases = {
        "missing": {k: v for k, v in state.items() if k != "audio2motion.head.weight"},
        "wrong shape": {**state, "audio2motion.head.weight": torch.zeros(3, 3)},
        "unexpected": {**state, "audio2motion.extra.weight": torch.zeros(2)},
    }
    for label, tensors in cases.items():
        bad = tmp_path / f"{label.replace(' ', '_')}.safetensors"
        save_file(tensors, str(bad), metadata=meta)
        with pytest.raises(CheckpointError, match=label):
            load_model(bad)
    plain_meta = dict(meta, config=meta["config"].replace(
        meta["config"][meta["config"].index('"audio2motion": {'):meta["config"].index('"convention"')], ""))
    stray = tmp_path / "stray.safetensors"
    save_file(state, str(stray), metadata=plain_meta)  # weights without their config: refused, not dropped
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(stray)


def test_attach_refuses_a_network_for_other_keypoints(model):
    other = a2m.AudioToMotion(AudioToMotionConfig(**{**SMALL, "num_kp": 10}))
    with pytest.raises(ValueError, match="10 keypoints"):
        attach_audio2motion(build_model(tiny_config(with_discriminator=False)), other)


# --------------------------------------------------------------------------------------------------
# Audio -> Motion
# --------------------------------------------------------------------------------------------------

def test_audio_gives_a_motion_record_at_the_video_rate(model):
    wave = speech(1.0, seed=5)
    motion = audio_to_motion(model, (wave, 16000), fps=30.0)
    assert isinstance(motion, Motion) and len(motion) == 30 and motion.fps == 30.0
    assert motion.family == "face_vid2vid" and motion.expression.shape == (30, 15, 3)
    assert torch.isfinite(motion.expression).all()
    stereo_44k = af.resample(wave, 16000, 44100).expand(2, -1)
    other = audio_to_motion(model, {"waveform": stereo_44k[None], "sample_rate": 44100}, fps=30.0)
    assert len(other) == 30 and torch.allclose(other.expression, motion.expression, atol=0.05)
    fixed = audio_to_motion(model, (wave, 16000), fps=25.0, n_frames=40)  # padded with silence
    assert len(fixed) == 40
    rest = rest_motion(model)
    still = audio_to_motion(model, (wave, 16000), fps=25.0, expression_strength=0.0, pose_strength=0.0)
    assert torch.allclose(still.expression, rest.expression.expand(25, -1, -1), atol=1e-6)
    assert torch.allclose(still.yaw, rest.yaw.expand(25), atol=1e-6)


# --------------------------------------------------------------------------------------------------
# anytalk animate --audio
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("animate_audio")
    save_checkpoint(model, root / "audio.safetensors")
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config(with_discriminator=False)), root / "plain.safetensors")
    g = torch.Generator().manual_seed(1)
    save_image(torch.rand(70, 60, 3, generator=g), root / "source.png")
    write_wav(root / "speech.wav", speech(0.6, seed=2).expand(2, -1), 16000)  # stereo
    frames = torch.rand(10, 48, 48, 3, generator=g)
    t = torch.arange(16000) / 16000
    write_video(root / "driving.mp4", frames, fps=25, audio=(torch.sin(2 * math.pi * 220 * t)[None], 16000))
    return root


def animate(files, out, *args):
    return main(["animate", "--source", str(files / "source.png"), "--out", str(out), "--quiet", *args])


def test_cli_animates_from_audio_alone_and_muxes_it(files, tmp_path):
    out = tmp_path / "talk.mp4"
    assert animate(files, out, "--audio", str(files / "speech.wav"), "--checkpoint", str(files / "audio.safetensors"),
                   "--fps", "20") == 0
    info = probe_video(out)
    assert info.frame_count == 12 and info.fps == pytest.approx(20) and info.has_audio
    sound, rate = read_audio(out)
    assert abs(sound.shape[1] / rate - 0.6) <= 1 / 20


def test_cli_takes_pose_from_the_video_and_expression_from_the_audio(files, tmp_path):
    out = tmp_path / "mixed.mp4"
    assert animate(files, out, "--audio", str(files / "speech.wav"), "--driving", str(files / "driving.mp4"),
                   "--checkpoint", str(files / "audio.safetensors")) == 0
    info = probe_video(out)
    assert info.frame_count == 10 and info.fps == pytest.approx(25) and info.has_audio
    sound, rate = read_audio(out)
    assert abs(sound.shape[1] / rate - 10 / 25) <= 1 / 25


def test_cli_audio_errors_are_one_clear_line(files, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert animate(files, out, "--audio", str(files / "speech.wav"), "--checkpoint", str(files / "plain.safetensors")) == 2
    err = capsys.readouterr().err
    assert "no audio-to-motion weights" in err and "anytalk-train training/configs/audio2motion.toml" in err
    assert animate(files, out, "--checkpoint", str(files / "audio.safetensors")) == 2
    assert "give a driving video, an audio file, or both" in capsys.readouterr().err
    assert animate(files, out, "--audio", str(files / "none.wav"), "--checkpoint", str(files / "audio.safetensors")) == 2
    assert "audio file not found" in capsys.readouterr().err
    assert not out.exists()
