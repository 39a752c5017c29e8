"""Driving videos tracked: the head found every few frames and a crop square per frame, smoothed in between.

:func:`~anytalk_core.crop.crop_auto` frames one picture; a driving head that moves leaves a square found on the
first frame. :func:`track_head` runs the same detector chain (``crop_auto_with_report``: human faces, then the
head detector) on every ``every``-th frame and the last, takes each detection's square in the checkpoint
family's *driving* framing, interpolates centre, side and angle linearly between detections, smooths the
per-frame series with the zero-lag Kalman smoother of :mod:`.smoothing` and crops every frame with its own
square (:meth:`Track.spec`). A detection frame where the detectors find nothing keeps the last square found
(:attr:`Track.missed` lists them; :meth:`Track.describe` says so); when they find nothing at all, every frame
takes the first frame's fallback square (the foreground heuristic or the centre), as ``crop auto`` would.

Two passes, not a causal filter on the stream: interpolating between detections needs the next detection
anyway (a look-ahead of ``every`` frames), and a causal smoother (the 1€ filter) lags, so the square would
trail a moving head by a few frames and the motion estimator would see the lag as head motion. The first pass
only decodes the frames (converting to float only those looked at) and keeps, per frame, four numbers
(centre, side, angle) and then the crop's matrix: 80 bytes a frame, 35 MB for the longest clip the limits
allow (30 min at 240 fps); the second pass crops as it streams. Callers hand in a
source of frames they can read twice (a file decoded again, or an IMAGE batch already in memory).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .crop import CropSpec, crop_auto_with_report, crop_squares, square_crop
from .detection import DETECTOR_NAMES, DetectionReport
from .engine import EngineInterrupted
from .smoothing import smooth, unwrap_degrees

__all__ = ["TRACK_EVERY", "TRACK_SMOOTHING", "MAX_TRACK_EVERY", "Track", "check_track_every", "track_head"]

#: Detect every this many frames by default (a head moves little in 0.2 s at 25 fps).
TRACK_EVERY = 5
MAX_TRACK_EVERY = 250
#: Strength of the square's smoothing (:func:`.smoothing.smooth`, ``kalman``): 1 = a 1.5 Hz cutoff, which
#: removes the detectors' frame-to-frame jitter while a head crossing the frame in a second is followed.
TRACK_SMOOTHING = 1.0
_FOUND = ("faces", "heads")  # the detectors; the foreground heuristic and the centre square are fallbacks


@dataclass(eq=False)
class Track:
    """One square per frame of a clip: ``centers`` (N, 2) and ``sides`` (N,) in pixels, ``angles`` (N,) in
    degrees (see :func:`~anytalk_core.crop.square_crop`), all float64; ``keys`` the frames the detectors looked
    at, ``reports`` their :class:`~anytalk_core.detection.DetectionReport` (one per key) and ``missed`` the keys
    where nothing was found (they kept the previous square)."""

    centers: torch.Tensor
    sides: torch.Tensor
    angles: torch.Tensor
    original_hw: tuple[int, int]
    keys: tuple[int, ...]
    reports: tuple[DetectionReport, ...]
    missed: tuple[int, ...]

    def __len__(self) -> int:
        return self.centers.shape[0]

    def spec(self, size: int) -> CropSpec:
        """The crops of every frame at ``size`` px: a spec of batch N (``cropped_frames`` takes it)."""
        return square_crop(self.original_hw, self.centers, self.sides, size, self.angles)

    def describe(self) -> str:
        """One line: how many frames the detectors looked at, which framed them and which found nothing."""
        used = sorted({r.detector for k, r in zip(self.keys, self.reports) if k not in self.missed})
        who = " and the ".join(DETECTOR_NAMES.get(d, d) for d in used) or "no detector"
        text = (f"tracked the head through {len(self)} frames: detected on {len(self.keys)} of them by the {who}, "
                "smoothed in between")
        if len(self.missed) == len(self.keys):
            first = self.reports[0]
            return (f"no head found on any of the {len(self.keys)} frames looked at; every frame uses the first "
                    f"frame's square ({DETECTOR_NAMES.get(first.detector, first.detector)})")
        if self.missed:
            shown = ", ".join(str(k) for k in self.missed[:8]) + (", ..." if len(self.missed) > 8 else "")
            text += f"; nothing found on frame(s) {shown}: each kept the last square found"
        notices = {r.notice for r in self.reports if r.notice}
        return text + "".join(f" ({n})" for n in sorted(notices))


def check_track_every(every: int) -> int:
    """``every`` (frames between detections) when it is a whole number from 1 to :data:`MAX_TRACK_EVERY`."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or not 1 <= every <= MAX_TRACK_EVERY:
        raise ValueError(f"track every must be a whole number of frames from 1 to {MAX_TRACK_EVERY}, got {every!r}")
    return int(every)


def track_head(chunks: Iterable[torch.Tensor], size: int, every: int = TRACK_EVERY, fps: float = 25.0,
               smoothing: float = TRACK_SMOOTHING, family: str = "anytalk", backend: str = "auto",
               total: int | None = None, progress: Callable[[int, int], None] | None = None,
               cancel: Callable[[], bool] | None = None) -> Track:
    """Track the head through driving frames (chunks (n, C, H, W), float in 0..1 or uint8, any chunking) ->
    :class:`Track`.

    ``every``: frames between detections (1 = every frame); ``smoothing`` in [0, 1] (0: the interpolated squares
    as they are); ``family`` picks the driving framing (:data:`~anytalk_core.detection.FRAMINGS`); ``backend``
    as :func:`~anytalk_core.crop.crop_auto`. ``progress(done, total)`` counts frames read; ``cancel()`` returning
    True stops with :class:`~anytalk_core.engine.EngineInterrupted`.
    """
    check_track_every(every)
    if not 0.0 <= float(smoothing) <= 1.0:
        raise ValueError(f"tracking smoothing must be between 0 and 1, got {smoothing!r}")
    keys: list[int] = []
    squares: list[torch.Tensor] = []  # per key: centre x, centre y, side, angle
    reports: list[DetectionReport] = []
    hw = None
    n = 0
    last = None

    def detect(frame: torch.Tensor, index: int) -> None:
        frame = frame if frame.is_floating_point() else frame.float() / 255  # only the frames looked at
        spec, (report,) = crop_auto_with_report(frame, size, backend, family=family, role="driving")
        center, side, angle = crop_squares(spec)
        keys.append(index)
        reports.append(report)
        squares.append(torch.cat([center[0], side, angle]))

    for piece in chunks:
        if not isinstance(piece, torch.Tensor) or piece.dim() != 4:
            raise ValueError(f"driving frames must come as chunks (n, C, H, W), got {getattr(piece, 'shape', piece)}")
        if hw is None:
            hw = tuple(piece.shape[-2:])
        elif tuple(piece.shape[-2:]) != hw:
            raise ValueError(f"driving frames change size from {hw} to {tuple(piece.shape[-2:])} (H, W)")
        for j in range(piece.shape[0]):
            if (n + j) % every == 0:
                if cancel is not None and cancel():
                    raise EngineInterrupted("interrupted by the user")
                detect(piece[j:j + 1], n + j)
        n += piece.shape[0]
        last = piece[-1:]
        if progress is not None:
            progress(n, max(total or 0, n))
    if n == 0:
        raise ValueError("no driving frames to track")
    if keys[-1] != n - 1:
        detect(last, n - 1)
    return _fill(keys, squares, reports, hw, n, fps, float(smoothing))


def _fill(keys: list[int], squares: list[torch.Tensor], reports: list[DetectionReport], hw: tuple[int, int],
          n: int, fps: float, smoothing: float) -> Track:
    """Squares (4,) at the keys (misses keep the last one found) -> per-frame squares, interpolated and smoothed."""
    hit = [r.detector in _FOUND for r in reports]
    missed = tuple(k for k, h in zip(keys, hit) if not h)
    if any(hit):  # a miss keeps the last square found; leading misses take the first one found
        current = squares[hit.index(True)]
        values = []
        for square, h in zip(squares, hit):
            current = square if h else current
            values.append(current)
    else:  # nothing found anywhere: the first frame's fallback square for every frame
        values = [squares[0]] * len(keys)
    at_keys = torch.stack(values)  # (keys, 4)
    at_keys[:, 3] = unwrap_degrees(at_keys[:, 3])
    frames = np.arange(n, dtype=np.float64)
    series = torch.from_numpy(np.stack([np.interp(frames, keys, at_keys[:, c].numpy()) for c in range(4)], 1))
    if smoothing > 0 and n > 1:
        series = smooth(series, fps, smoothing, method="kalman")
    return Track(series[:, :2].contiguous(), series[:, 2].clamp_min(1.0), series[:, 3].contiguous(), hw,
                 tuple(keys), tuple(reports), missed)
