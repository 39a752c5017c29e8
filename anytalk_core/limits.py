"""Bounds on every number a file or a user controls that decides how much memory a reader allocates.

Each bound has a default that fits a talking-head job on an ordinary machine and is raised (or lowered)
with an environment variable, read when the bound is checked (so a running ComfyUI picks up a change
after a restart, a script at once). Above a bound the reader refuses with :class:`LimitError`, whose
message names the value, the bound and the variable, before the memory is allocated.

=========================  =======================  ==========================================================
variable                   default                  what it bounds
=========================  =======================  ==========================================================
``ANYTALK_MAX_SECONDS``    1800 (30 minutes)        length of a video, an audio track and a motion file
``ANYTALK_MAX_PIXELS``     50,000,000 (50 Mpx)      width x height of one decoded image or video frame
``ANYTALK_MAX_IMAGE_GB``   8                        the IMAGE batch Load Video returns (frames x H x W x 3 x 4 B)
=========================  =======================  ==========================================================

Frame rates are bounded too, without a variable: :data:`MIN_FPS` to :data:`MAX_FPS` (the nodes' own range).
"""
from __future__ import annotations

import math
import os

__all__ = ["LimitError", "MIN_FPS", "MAX_FPS", "MAX_KEYPOINTS", "max_seconds", "max_pixels", "max_image_bytes", "check_seconds",
           "check_pixels", "check_fps", "check_image_bytes"]

MIN_FPS = 0.1
MAX_FPS = 240.0
MAX_KEYPOINTS = 1024  #: more keypoints than any family has: bounds motion files and keypoint ranges

_DEFAULTS = {"ANYTALK_MAX_SECONDS": 1800.0, "ANYTALK_MAX_PIXELS": 50_000_000.0, "ANYTALK_MAX_IMAGE_GB": 8.0}


class LimitError(ValueError):
    """A file or an input asks for more than a documented bound; the message names the bound and how to raise it."""


def _bound(name: str) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return _DEFAULTS[name]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise LimitError(f"environment variable {name}={text!r} must be a positive number (default {_DEFAULTS[name]:g})")
    return value


def max_seconds() -> float:
    """Longest video, audio or motion accepted, in seconds (``ANYTALK_MAX_SECONDS``)."""
    return _bound("ANYTALK_MAX_SECONDS")


def max_pixels() -> int:
    """Largest decoded image or video frame, in pixels (``ANYTALK_MAX_PIXELS``)."""
    return int(_bound("ANYTALK_MAX_PIXELS"))


def max_image_bytes() -> int:
    """Largest IMAGE batch Load Video returns, in bytes (``ANYTALK_MAX_IMAGE_GB`` x 2**30)."""
    return int(_bound("ANYTALK_MAX_IMAGE_GB") * 2**30)


def check_seconds(seconds: float, what: str) -> None:
    """Refuse ``what`` (e.g. "path: audio track") lasting more than :func:`max_seconds` (or an unknown/NaN length)."""
    limit = max_seconds()
    if not seconds <= limit:  # also NaN
        raise LimitError(f"{what} lasts {_seconds(seconds)}, longer than the {_seconds(limit)} accepted; cut it "
                         f"shorter, or raise the bound with the environment variable ANYTALK_MAX_SECONDS "
                         f"(README.md, Limits and safety)")


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse an image or frame of more than :func:`max_pixels` pixels."""
    limit = max_pixels()
    if width * height > limit:
        raise LimitError(f"{what} is {width}x{height} ({width * height / 1e6:.1f} Mpx), larger than the "
                         f"{limit / 1e6:g} Mpx accepted; downscale it, or raise the bound with the environment "
                         f"variable ANYTALK_MAX_PIXELS (README.md, Limits and safety)")


def check_fps(fps: float, what: str) -> float:
    """``fps`` as a float if it lies in [MIN_FPS, MAX_FPS], else a LimitError naming ``what``."""
    try:
        value = float(fps)
    except (TypeError, ValueError, OverflowError):
        raise LimitError(f"{what}: frame rate {_shown(fps)} is not a number") from None
    if not MIN_FPS <= value <= MAX_FPS:  # also NaN
        raise LimitError(f"{what}: frame rate {value:g} fps is outside {MIN_FPS:g} to {MAX_FPS:g} fps")
    return value


def check_image_bytes(frames: int, height: int, width: int, what: str) -> None:
    """Refuse an IMAGE batch (float32 [frames, height, width, 3]) larger than :func:`max_image_bytes`."""
    limit = max_image_bytes()
    size = frames * height * width * 3 * 4
    if size > limit:
        raise LimitError(f"{what}: {frames} frames of {width}x{height} make a {size / 2**30:.1f} GiB IMAGE batch, "
                         f"more than the {limit / 2**30:g} GiB accepted; set max_frames or max_size, or raise the "
                         f"bound with the environment variable ANYTALK_MAX_IMAGE_GB (README.md, Limits and safety)")


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "an unbounded time"
    return f"{value:.0f} s ({value / 3600:.1f} h)" if value >= 3600 else f"{value:.1f} s"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."
