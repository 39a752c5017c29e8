"""Load Video, Load Audio (PyAV; no torchaudio, no other node pack) and Assemble Video (output folder + preview)."""
from __future__ import annotations


import torch

from ..anytalk_core import limits
from ..anytalk_core.io_utils import unique_path
from ..anytalk_core.media import (
    VideoWriter,
    fit_audio_to_frames,
    iter_video_frames,
    n_audio_samples,
    probe_video,
    read_audio,
    scaled_size,
)
from ..anytalk_core.media.audio import as_waveform
from . import _comfy
from ._files import (
    TYPED_PATH_NOTE,
    file_signature,
    resolve_input_file,
    validate_save_prefix,
    validate_typed_path,
)
from ._objects import CATEGORY, AnyTalkError, artist_errors, check_image_shape

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus", *VIDEO_SUFFIXES)
SILENCE_RATE = 16000


def _choices(suffixes: tuple[str, ...], what: str) -> list[str]:
    return _comfy.list_files(_comfy.input_dir(), suffixes, recursive=True) or [f"(no {what} in the input folder)"]


def comfy_audio(waveform: torch.Tensor, sample_rate: int) -> dict:
    """[C, T] -> ComfyUI AUDIO {"waveform": [1, C, T], "sample_rate"}."""
    return {"waveform": waveform.unsqueeze(0).contiguous().float(), "sample_rate": int(sample_rate)}


def silence(n_frames: int, fps: float, sample_rate: int = SILENCE_RATE) -> dict:
    return comfy_audio(torch.zeros(1, n_audio_samples(n_frames, fps, sample_rate)), sample_rate)


def fit_audio(audio, n_frames: int, fps: float) -> dict:
    """A ComfyUI AUDIO trimmed or padded with silence to last exactly ``n_frames`` at ``fps``."""
    waveform, rate = as_waveform(audio)
    return comfy_audio(fit_audio_to_frames(torch.from_numpy(waveform), rate, n_frames, fps), rate)


class AnyTalkLoadVideo:
    DESCRIPTION = ("Loads a video as an IMAGE batch with its AUDIO and frame rate (PyAV; no other node pack needed). "
                   "Videos without sound give silence of the same length.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT", "INT")
    RETURN_NAMES = ("images", "audio", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("The frames.", "The sound track, cut to the frames loaded.", "Frames per second.",
                       "Number of frames loaded.")

    @classmethod
    def INPUT_TYPES(cls):
        # The file list comes last: the front end adds its upload widget after it, so saved widget values of the
        # other inputs never shift.
        return {
            "required": {
                "frame_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                         "tooltip": "Resample to this frame rate (0 = the video's own)."}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1,
                                       "tooltip": "Load at most this many frames (0 = all)."}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1,
                                              "tooltip": "Frames skipped at the start (the audio is cut to match)."}),
                "max_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                     "tooltip": "Downscale so the longer side is at most this many pixels (0 = keep). "
                                                "Long high-resolution clips take a lot of memory as IMAGE batches."}),
                "path": ("STRING", {"default": "", "tooltip": "Optional path of a video; when set it is used instead of "
                                                              "the list below. " + TYPED_PATH_NOTE}),
                "video": (_choices(VIDEO_SUFFIXES, "video"), {"video_upload": True,
                                                             "tooltip": "A video from ComfyUI's input folder."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path):
        return validate_typed_path(path, "video")

    @classmethod
    def IS_CHANGED(cls, path, video, **_):
        try:
            return file_signature(resolve_input_file(video, path, "video"))
        except (AnyTalkError, OSError):
            return ""

    @artist_errors("AnyTalk Load Video")
    def load(self, frame_rate, max_frames, skip_first_frames, max_size, path, video):
        p = resolve_input_file(video, path, "video")
        info = probe_video(p)
        fps = limits.check_fps(frame_rate, "frame_rate") if frame_rate else float(info.fps)
        chunks, kept, seen = [], 0, 0
        expected = max(int(info.frame_count * fps / info.fps) - skip_first_frames, 1)
        width, height = scaled_size(info.width, info.height, int(max_size))
        to_load = min(expected, max_frames or expected)  # from the headers: the bar runs to the clip's real length
        limits.check_image_bytes(to_load, height, width, p.name)
        progress = _comfy.Progress(to_load)
        for piece in iter_video_frames(p, fps=float(frame_rate) if frame_rate else None, chunk=32,
                                       max_size=int(max_size)):
            progress.cancel()
            start = max(0, skip_first_frames - seen)
            seen += piece.shape[0]
            piece = piece[start:]
            if max_frames:
                piece = piece[: max_frames - kept]
            if piece.shape[0] == 0:
                if max_frames and kept >= max_frames:
                    break
                continue
            limits.check_image_bytes(kept + piece.shape[0], piece.shape[1], piece.shape[2], p.name)
            chunks.append(piece)
            kept += piece.shape[0]
            progress.update(kept)
            if max_frames and kept >= max_frames:
                break
        if not chunks:
            raise AnyTalkError(f"{p.name}: no frames left after skipping {skip_first_frames} of {seen}")
        progress.update(kept, kept)  # headers can be a frame or two off: end at 100 %
        images = torch.empty((kept, *chunks[0].shape[1:]), dtype=torch.float32)  # filled chunk by chunk: no
        done = 0                                                                   # second full-size copy
        while chunks:
            piece = chunks.pop(0)
            images[done:done + piece.shape[0]] = piece
            done += piece.shape[0]
        images.div_(255.0)
        if info.has_audio:
            waveform, rate = read_audio(p)
            waveform = waveform[:, n_audio_samples(skip_first_frames, fps, rate):]
            audio = comfy_audio(fit_audio_to_frames(waveform, rate, kept, fps), rate)
        else:
            audio = silence(kept, fps)
        return (images, audio, fps, kept)


class AnyTalkLoadAudio:
    DESCRIPTION = ("Loads audio (wav, mp3, flac, m4a, ... or a video's sound track) as AUDIO with PyAV; works where "
                   "ComfyUI's own audio nodes cannot import torchaudio.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The waveform [1, channels, samples] and its sample rate.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "start_time": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                         "tooltip": "Seconds skipped at the start."}),
                "duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                       "tooltip": "Seconds kept (0 = to the end)."}),
                "sample_rate": ("INT", {"default": 0, "min": 0, "max": 192000, "step": 1,
                                        "tooltip": "Resample to this rate in Hz (0 = the file's own)."}),
                "mono": ("BOOLEAN", {"default": False, "tooltip": "Average the channels into one."}),
                "path": ("STRING", {"default": "", "tooltip": "Optional path of an audio or video file; when set it "
                                                              "is used instead of the list below. " + TYPED_PATH_NOTE}),
                # no "audio_upload" flag: the front end's audio upload widget comes with ComfyUI's own audio
                # nodes, and where those fail to import (no torchaudio) it refuses to register this node
                "audio": (_choices(AUDIO_SUFFIXES, "audio"), {"tooltip": "An audio (or video) file from ComfyUI's "
                                                                         "input folder."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path):
        return validate_typed_path(path, "audio")

    @classmethod
    def IS_CHANGED(cls, path, audio, **_):
        try:
            return file_signature(resolve_input_file(audio, path, "audio"))
        except (AnyTalkError, OSError):
            return ""

    @artist_errors("AnyTalk Load Audio")
    def load(self, start_time, duration, sample_rate, mono, path, audio):
        p = resolve_input_file(audio, path, "audio")
        waveform, rate = read_audio(p, sample_rate=int(sample_rate) or None, mono=bool(mono))
        start = int(round(start_time * rate))
        if start >= waveform.shape[1]:
            raise AnyTalkError(f"start_time {start_time} s is past the end of {p.name} "
                               f"({waveform.shape[1] / rate:.2f} s)")
        stop = waveform.shape[1] if not duration else start + int(round(duration * rate))
        return (comfy_audio(waveform[:, start:stop], rate),)


# --------------------------------------------------------------------------------------------------

FORMATS = ["mp4", "webm", "gif"]
_VIDEO_CLASS = _comfy.video_from_file_class()  # ComfyUI's VIDEO type, when the running ComfyUI has it


class AnyTalkAssembleVideo:
    DESCRIPTION = ("Encodes frames (and optional audio, trimmed or padded to the frames) into an mp4/webm/gif in "
                   "ComfyUI's output folder with a preview. Never overwrites: each run gets a new number.")
    CATEGORY = CATEGORY
    FUNCTION = "assemble"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "VIDEO") if _VIDEO_CLASS is not None else ("STRING",)
    RETURN_NAMES = ("filename", "video") if _VIDEO_CLASS is not None else ("filename",)
    OUTPUT_TOOLTIPS = ("Full path of the saved video.", "The saved video as a VIDEO (for core video nodes).")[
        : len(RETURN_TYPES)]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames (e.g. from AnyTalk Generate or Paste Back)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.1, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frames per second (connect Load Video's fps to keep the driver's "
                                             "timing)."}),
                "filename_prefix": ("STRING", {"default": "AnyTalk",
                                               "tooltip": "File name in the output folder (may include a sub-folder, "
                                                          "e.g. videos/AnyTalk); a number is appended."}),
                "format": (FORMATS, {"default": "mp4",
                                     "tooltip": "mp4: H.264 + AAC; webm: VP9 + Opus; gif: no sound."}),
                "crf": ("INT", {"default": 0, "min": 0, "max": 63, "step": 1,
                                "tooltip": "Quality: lower is better and larger (0 = the format's default: mp4 18, "
                                           "webm 30)."}),
                "save_output": ("BOOLEAN", {"default": True,
                                            "tooltip": "Save to the output folder (off: a temporary preview only)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound track (e.g. Load Video's audio); trimmed or padded with "
                                               "silence to the video's length."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return validate_save_prefix(filename_prefix)

    @artist_errors("AnyTalk Assemble Video")
    def assemble(self, images, fps=25.0, filename_prefix="AnyTalk", format="mp4", crf=0, save_output=True,
                 audio=None):
        n, h, w = check_image_shape(images, "images", min_side=2)
        if format not in FORMATS:
            raise AnyTalkError(f"unknown format {format!r}; choose mp4, webm or gif")
        if not fps or fps <= 0:
            raise AnyTalkError(f"fps must be positive, got {fps}")
        if audio is not None and format == "gif":
            audio = None  # gif has no sound; the preview says so through the file type
        folder, name, subfolder = _comfy.save_location(filename_prefix, w, h, temp=not save_output)
        path = unique_path(folder / f"{name}.{format}")
        progress = _comfy.Progress(n)
        with VideoWriter(path, fps=float(fps), audio=audio, crf=int(crf) or None) as writer:
            for start in range(0, n, 32):
                progress.cancel()
                chunk = images[start:start + 32]
                if not torch.isfinite(chunk).all():
                    raise AnyTalkError(f"frames {start} to {start + chunk.shape[0] - 1} contain NaN or infinite "
                                       "values; check the node that made them (nothing was saved)")
                writer.write(chunk)
                progress.update(min(n, start + 32))
        kind = "output" if save_output else "temp"
        entry = {"filename": path.name, "subfolder": subfolder, "type": kind, "format": f"video/{format}"}
        result = (str(path),)
        if _VIDEO_CLASS is not None:
            result += (_VIDEO_CLASS(str(path)),)
        return {"ui": {"images": [entry], "animated": (True,)}, "result": result}
