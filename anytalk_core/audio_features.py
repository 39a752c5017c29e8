"""Speech features for audio-driven motion, in torch (no torchaudio): mono 16 kHz audio and log-mel frames.

Any channel count and sample rate are accepted: channels are averaged and the audio is resampled to
:data:`SAMPLE_RATE` with a polyphase filter (``scipy.signal.resample_poly``), then its loudness is
normalised (the 90th percentile of 10 ms frame RMS is brought to :data:`TARGET_RMS`, so a quiet and a loud
recording of the same speech give the same features).

Feature frame ``j`` of every extractor is centred at ``j / rate + offset`` seconds. :class:`LogMel` computes
any range of frames on its own (samples outside the audio are zeros), so a long recording is processed
window by window with exactly the values of one whole pass. :class:`SpeechEncoder` reads the hidden states
of a pretrained wav2vec 2.0 / HuBERT model from a local folder when the user has installed
``transformers``; it is optional and never needed by the defaults.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import torch

SAMPLE_RATE = 16000
HOP = 160  # 10 ms: 100 feature frames per second
N_FFT = 512
WIN_LENGTH = 400  # 25 ms Hann window
TARGET_RMS = 0.1
MAX_GAIN = 100.0  # never amplify near-silence by more than 40 dB
FLOOR = 1e-4  # added to mel power before the log: digital silence and a quiet noise floor look alike

__all__ = [
    "SAMPLE_RATE", "to_mono", "resample", "normalize_loudness", "prepare_audio", "audio_frame_count",
    "mel_filterbank", "padded_slice", "LogMel", "SpeechEncoder", "feature_extractor", "frame_windows",
]


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels: [T], [C, T] or [1, C, T] -> float32 [T]."""
    w = torch.as_tensor(waveform)
    if w.dim() == 3:
        if w.shape[0] != 1:
            raise ValueError(f"audio batch must hold one clip, got waveform shape {tuple(w.shape)}")
        w = w[0]
    if w.dim() == 2:
        if w.shape[0] == 0:
            raise ValueError(f"audio has no channels, got waveform shape {tuple(w.shape)}")
        w = w.float().mean(dim=0)
    if w.dim() != 1:
        raise ValueError(f"audio waveform must be [T], [C, T] or [1, C, T], got shape {tuple(w.shape)}")
    return w.float()


def resample(waveform: torch.Tensor, sample_rate: int, target_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Polyphase resampling along the last axis: [..., T] at ``sample_rate`` -> [..., T'] at ``target_rate``."""
    from scipy.signal import resample_poly

    if int(sample_rate) <= 0 or int(target_rate) <= 0:
        raise ValueError(f"sample rates must be positive, got {sample_rate} and {target_rate}")
    if int(sample_rate) == int(target_rate):
        return waveform.float()
    ratio = Fraction(int(target_rate), int(sample_rate))
    out = resample_poly(waveform.detach().cpu().double().numpy(), ratio.numerator, ratio.denominator, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def normalize_loudness(waveform: torch.Tensor, target_rms: float = TARGET_RMS, max_gain: float = MAX_GAIN) -> torch.Tensor:
    """Scale mono audio [T] so that the 90th percentile of its 10 ms frame RMS is ``target_rms``."""
    n = waveform.shape[-1] // HOP
    if n == 0:
        return waveform
    rms = waveform[: n * HOP].reshape(n, HOP).pow(2).mean(dim=1).sqrt()
    level = float(torch.quantile(rms.double(), 0.9)) if n > 1 else float(rms[0])
    gain = min(max_gain, target_rms / level) if level > 0 else 1.0
    return waveform * gain


def prepare_audio(audio: object, sample_rate: int | None = None) -> torch.Tensor:
    """Any audio -> mono, 16 kHz, loudness-normalised float32 [T].

    ``audio`` is a ComfyUI AUDIO dict ``{"waveform": [1, C, T], "sample_rate"}``, a ``(waveform, rate)``
    pair, or a waveform tensor with ``sample_rate`` given.
    """
    if isinstance(audio, Mapping) or isinstance(audio, tuple):
        from .media.audio import as_waveform

        wave_np, rate = as_waveform(audio)
        wave = torch.from_numpy(wave_np)
    else:
        if sample_rate is None:
            raise ValueError("a bare waveform needs its sample_rate")
        wave, rate = torch.as_tensor(audio), int(sample_rate)
        if not wave.is_floating_point():
            raise ValueError(f"audio waveform must be float in -1..1, got dtype {wave.dtype}")
        if not torch.isfinite(wave).all():
            raise ValueError("audio waveform contains NaN or infinite values")
    mono = to_mono(wave)
    if mono.numel() == 0:
        raise ValueError("the audio is empty (0 samples)")
    return normalize_loudness(resample(mono, rate, SAMPLE_RATE))


def audio_frame_count(n_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames that cover ``n_samples`` of audio at ``fps``: ceil(duration * fps), at least 1."""
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return max(1, math.ceil(n_samples / sample_rate * fps - 1e-6))


# ------------------------------------------------------------------------------------------------
# Log-mel
# ------------------------------------------------------------------------------------------------

def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, fmin: float = 40.0,
                   fmax: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters with unit area: [n_fft // 2 + 1, n_mels] (float64)."""
    fmax = fmax or sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(torch.linspace(float(_hz_to_mel(torch.tensor(fmin))), float(_hz_to_mel(torch.tensor(fmax))),
                                      n_mels + 2, dtype=torch.float64))
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lo[None]) / (mid - lo)[None]
    down = (hi[None] - freqs[:, None]) / (hi - mid)[None]
    bank = torch.clamp(torch.minimum(up, down), min=0.0)
    return bank * (2.0 / (hi - lo))[None]


class LogMel:
    """Log-mel frames of 16 kHz audio at 100 frames per second: frame ``j`` is centred on sample ``160 j``."""

    rate = SAMPLE_RATE / HOP
    offset = 0.0

    def __init__(self, n_mels: int = 80):
        if n_mels < 1:
            raise ValueError(f"n_mels must be >= 1, got {n_mels}")
        self.dim = int(n_mels)
        self._bank = mel_filterbank(self.dim).float()
        self._window = torch.hann_window(WIN_LENGTH, periodic=True)

    def __call__(self, waveform: torch.Tensor, start: int, count: int) -> torch.Tensor:
        """Frames ``start .. start + count - 1`` of mono 16 kHz audio [T] -> float32 [count, n_mels]."""
        if count <= 0:
            return torch.zeros(0, self.dim)
        first = start * HOP - N_FFT // 2
        last = (start + count - 1) * HOP + N_FFT // 2  # exclusive
        segment = padded_slice(waveform, first, last)
        spec = torch.stft(segment, N_FFT, hop_length=HOP, win_length=WIN_LENGTH, window=self._window,
                          center=False, return_complex=True)  # [freq, count]
        power = spec.real.square() + spec.imag.square()
        return torch.log(power.T @ self._bank + FLOOR)


def padded_slice(x: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """``x[first:last]`` of a 1-D tensor, with zeros where the range leaves [0, len(x))."""
    n = x.shape[-1]
    lo, hi = max(first, 0), min(last, n)
    body = x[lo:hi] if hi > lo else x.new_zeros(0)
    return torch.cat([x.new_zeros(max(0, min(last, 0) - first)), body, x.new_zeros(max(0, last - max(first, n)))])


# ------------------------------------------------------------------------------------------------
# Optional pretrained speech encoders
# ------------------------------------------------------------------------------------------------

class SpeechEncoder:
    """Hidden states of a pretrained wav2vec 2.0 / HuBERT model (50 frames per second) from a local folder.

    Needs the ``transformers`` package and the model's files on disk (nothing is downloaded). Ranges are
    encoded with ``margin`` seconds of audio on each side, so windows match one whole pass closely but not
    bit for bit (the encoder attends over its whole input).
    """

    rate = 50.0
    offset = 200 / SAMPLE_RATE  # the first frame covers samples 0..399
    margin = 1.0

    def __init__(self, path: str, layer: int = -1, device: torch.device | str = "cpu"):
        try:
            import transformers
        except ImportError:
            raise ImportError("this audio-to-motion network uses a pretrained speech encoder, which needs the "
                              "'transformers' package: pip install transformers (and keep the encoder folder "
                              f"{path!r})") from None
        if not path:
            raise ValueError("features = 'speech_encoder' needs encoder_path (a local wav2vec 2.0 / HuBERT folder)")
        try:
            self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        except OSError as exc:
            raise FileNotFoundError(f"{path}: cannot load the speech encoder ({exc})") from None
        self.layer = int(layer)
        self.device = torch.device(device)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, waveform: torch.Tensor, start: int, count: int) -> torch.Tensor:
        if count <= 0:
            return torch.zeros(0, self.dim)
        hop = int(SAMPLE_RATE / self.rate)
        pad = int(self.margin * self.rate)
        first = max(0, start - pad)
        segment = padded_slice(waveform, first * hop, (start + count + pad) * hop + hop)
        out = self.model(segment[None].to(self.device), output_hidden_states=True)
        states = out.hidden_states[self.layer][0].float().cpu()  # [frames, dim]
        states = states[start - first:start - first + count]
        if states.shape[0] < count:  # past the end of the audio
            states = torch.cat([states, states.new_zeros(count - states.shape[0], self.dim)])
        return states


def feature_extractor(config, device: torch.device | str = "cpu") -> LogMel | SpeechEncoder:
    """The extractor an :class:`~anytalk_core.models.config.AudioToMotionConfig` was trained with."""
    if config.features == "log_mel":
        return LogMel(config.n_mels)
    if config.features == "speech_encoder":
        return SpeechEncoder(config.encoder_path, config.encoder_layer, device)
    raise ValueError(f"unknown audio features {config.features!r} (log_mel or speech_encoder)")


# ------------------------------------------------------------------------------------------------
# Video-frame windows
# ------------------------------------------------------------------------------------------------

def frame_windows(extractor, waveform: torch.Tensor, first_frame: int, n_frames: int, fps: float,
                  context: int, start_sample: int = 0) -> torch.Tensor:
    """Feature windows of video frames ``first_frame .. first_frame + n_frames - 1``: [n, 2 context + 1, dim].

    Video frame ``i`` spans ``[i / fps, (i + 1) / fps)``; its window holds the features at its centre time
    ``(i + 0.5) / fps`` and ``context`` feature frames either side, linearly interpolated between frames.
    ``waveform`` may be an excerpt that starts at sample ``start_sample`` of the clip (a multiple of the
    extractor's hop keeps the features identical to those of the whole clip).
    """
    rate, offset = extractor.rate, extractor.offset
    centres = (torch.arange(first_frame, first_frame + n_frames, dtype=torch.float64) + 0.5) / fps
    pos = (centres - start_sample / SAMPLE_RATE - offset) * rate  # fractional feature index of each centre
    taps = pos[:, None] + torch.arange(-context, context + 1, dtype=torch.float64)[None]
    lo = int(math.floor(float(taps.min()))) if n_frames else 0
    hi = int(math.floor(float(taps.max()))) + 2 if n_frames else 0
    feats = extractor(waveform, lo, hi - lo)  # [hi - lo, dim]
    base = taps.floor()
    frac = (taps - base).to(feats.dtype)[..., None]
    idx = (base - lo).long()
    return feats[idx] * (1 - frac) + feats[(idx + 1).clamp(max=feats.shape[0] - 1)] * frac
