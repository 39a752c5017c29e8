"""Media I/O: images (Pillow), video and audio (PyAV). One way to read and write, for every caller.

Reading never refuses an image mode (converted to RGB) and gives frames on a constant fps grid; writing is
atomic (temp file + rename) and never replaces an existing file unless ``overwrite=True``.
"""
from ._files import unique_path
from .audio import fit_audio_to_frames, n_audio_samples, probe_audio, read_audio, write_wav
from .image import WHITE, image_tensor_to_rgb, load_image, save_image, to_rgb_array
from .video import (
    VIDEO_FORMATS,
    VideoClip,
    VideoInfo,
    VideoWriter,
    iter_video_frames,
    probe_video,
    read_video,
    scaled_size,
    write_video,
)

__all__ = [
    "WHITE",
    "load_image",
    "to_rgb_array",
    "image_tensor_to_rgb",
    "save_image",
    "read_audio",
    "probe_audio",
    "fit_audio_to_frames",
    "n_audio_samples",
    "write_wav",
    "VIDEO_FORMATS",
    "VideoInfo",
    "VideoClip",
    "probe_video",
    "iter_video_frames",
    "read_video",
    "scaled_size",
    "VideoWriter",
    "write_video",
    "unique_path",
]
