"""How closely generated frames follow their driving frames, as the independent synthetic annotator reads them.

For relative motion transfer (``anytalk animate``'s default) the generated head should turn, nod, tilt and
open its mouth as the driver does *from the first frame on*. Frame i of the result is made from frame i of the
driver; both sequences are read by the annotator (:mod:`.annotator`, never the model's own estimator).

* **Head pose** (:func:`pose_following`): for yaw, pitch and roll (degrees), each sequence's change from
  frame 0 gives ``r`` (Pearson correlation: does it move when the driver does), ``gain`` (least-squares slope
  of the result's change on the driver's: 1 = the whole motion arrives, 0 = a still picture) and
  ``driver_range`` (peak to peak).
* **Mouth driven by audio** (:func:`audio_mouth_following`): held-out portraits driven by a checkpoint's
  audio-to-motion part from synthetic speech whose energy is the renderer's true jaw opening; the mouth
  region's change from the undriven portrait against that jaw (``r``, and the lip-sync ``lag``).
* **Mouth** (:func:`mouth_following`): at 64 px a wide-open jaw moves the lips by about 3 pixels, below what
  landmarks read reliably while the head moves, so the mouth is measured on a *still* talking head: the mean
  absolute change of the mouth region from frame 0 (a box the annotator places around the lips of frame 0), in
  the driver and in the result; ``r`` between the two. Colours differ between identities, so there is no gain.

The annotator is accurate on the renderer's domains (cartoon animals included); on other pictures its
readings mean little. Renders that copy the driver's pose onto another identity give gains of 1.0 (yaw,
pitch) and 0.87 (roll) on the demo clip, and a mouth r of 0.98 on the demo's cat (tests/test_eval_synthetic.py
checks the same on shorter clips).
"""
from __future__ import annotations

import numpy as np
import torch

from anytalk_core.synthetic import LANDMARK_INDEX

from .annotator import SyntheticAnnotator, load_annotator, to_pixels

POSE_COMPONENTS = ("yaw", "pitch", "roll")
_MOUTH = [LANDMARK_INDEX[n] for n in ("mouth_r", "mouth_l", "lip_upper", "lip_lower")]


def follow_stats(driver: np.ndarray, result: np.ndarray) -> dict[str, float]:
    """r, gain and the driver's range of two (N,) series, both taken relative to their first value."""
    if driver.shape != result.shape or driver.ndim != 1 or driver.shape[0] < 3:
        raise ValueError(f"need two series of the same length >= 3, got {driver.shape} and {result.shape}")
    x, y = driver - driver[0], result - result[0]
    energy = float((x * x).sum())
    still = float(np.std(x)) == 0 or float(np.std(y)) == 0
    return {"r": float("nan") if still else float(np.corrcoef(x, y)[0, 1]),
            "gain": float((x * y).sum() / energy) if energy > 0 else float("nan"),
            "driver_range": float(np.ptp(driver))}


def _check(driving: torch.Tensor, generated: torch.Tensor) -> None:
    if driving.ndim != 4 or generated.ndim != 4 or driving.shape[0] != generated.shape[0]:
        raise ValueError(f"need driving and generated frames (N, 3, H, W) of the same N, got "
                         f"{tuple(driving.shape)} and {tuple(generated.shape)}")


def pose_following(driving: torch.Tensor, generated: torch.Tensor,
                   annotator: SyntheticAnnotator | None = None) -> dict[str, dict[str, float]]:
    """driving, generated (N, 3, H, W) in 0..1 -> ``{yaw|pitch|roll: {"r", "gain", "driver_range"}}``."""
    _check(driving, generated)
    annotator = annotator or load_annotator()
    d, g = annotator.annotate(driving).pose.double().numpy(), annotator.annotate(generated).pose.double().numpy()
    return {name: follow_stats(d[:, i], g[:, i]) for i, name in enumerate(POSE_COMPONENTS)}


def mouth_region(frames: torch.Tensor, annotator: SyntheticAnnotator | None = None) -> torch.Tensor:
    """The mouth box (N, 3, h, w) of a still talking head (N, 3, H, W), placed on frame 0.

    The box spans the annotator's mouth corners and outer lips on frame 0, widened by H/32 pixels and by H/16
    downwards (the jaw opens down)."""
    annotator = annotator or load_annotator()
    h, w = frames.shape[-2:]
    points = to_pixels(annotator.annotate(frames[:1]).landmarks[0, _MOUTH], h)
    margin, drop = max(1, round(h / 32)), max(1, round(h / 16))
    x0, x1 = int(points[:, 0].min()) - margin, int(points[:, 0].max()) + margin + 1
    y0, y1 = int(points[:, 1].min()) - margin, int(points[:, 1].max()) + drop + 1
    box = frames[:, :, max(0, y0):min(h, y1), max(0, x0):min(w, x1)].float()
    if box.numel() == 0:
        raise ValueError("the annotator placed the mouth outside the picture: is it a head of a synthetic domain?")
    return box


def mouth_activity(frames: torch.Tensor, annotator: SyntheticAnnotator | None = None) -> np.ndarray:
    """Mean absolute change (N,) of the mouth region (:func:`mouth_region`) from frame 0 of a still talking head."""
    box = mouth_region(frames, annotator)
    return (box - box[:1]).abs().mean(dim=(1, 2, 3)).double().numpy()


def mouth_opening(frames: torch.Tensor, jaw: torch.Tensor, annotator: SyntheticAnnotator | None = None) -> float:
    """How visibly a still talking head (N, 3, H, W) opens its mouth: the mean absolute difference (0..1) of its
    mouth region (:func:`mouth_region`) between the frames where the driver's jaw (N,) is most open and most
    closed."""
    if jaw.shape[0] != frames.shape[0]:
        raise ValueError(f"{jaw.shape[0]} jaw values for {frames.shape[0]} frames")
    box = mouth_region(frames, annotator)
    return float((box[int(jaw.argmax())] - box[int(jaw.argmin())]).abs().mean())


def mouth_following(driving: torch.Tensor, generated: torch.Tensor,
                    annotator: SyntheticAnnotator | None = None) -> dict[str, float]:
    """Still talking heads (N, 3, H, W) -> ``{"r"}``: correlation of the two mouths' activity."""
    _check(driving, generated)
    annotator = annotator or load_annotator()
    d, g = mouth_activity(driving, annotator), mouth_activity(generated, annotator)
    still = float(np.std(d)) == 0 or float(np.std(g)) == 0
    return {"r": float("nan") if still else float(np.corrcoef(d, g)[0, 1])}


def _mouth_box(landmarks: torch.Tensor, size: int) -> tuple[slice, slice]:
    """Rows and columns around the renderer's mouth landmarks (L, 2) in pixels, with room for the jaw below."""
    pts = landmarks[_MOUTH]
    x0, y0 = (int(v) for v in pts.min(0).values.floor())
    x1, y1 = (int(v) for v in pts.max(0).values.ceil())
    return slice(max(0, y0 - 2), min(size, y1 + 6)), slice(max(0, x0 - 2), min(size, x1 + 3))


def audio_driven_frames(engine, state, speech, fps: float, n_frames: int, pose_strength: float = 0.0,
                        rest=None) -> torch.Tensor:
    """The prepared source driven by ``speech`` (``.waveform``, ``.sample_rate``) alone through the model's
    audio-to-motion part, relative to its silent face: frames (n_frames, 3, S, S) in 0..1."""
    rest = engine.rest_motion(fps) if rest is None else rest
    motion = engine.audio_motion((speech.waveform, speech.sample_rate), fps, n_frames=n_frames,
                                 pose_strength=pose_strength)
    return torch.cat(list(engine.render(state, engine.driven_keypoints(state, motion, reference=rest))))


def audio_mouth_following(model: torch.nn.Module, clips: int = 6, seconds: float = 5.0, fps: float = 25.0,
                          pose_strength: float = 0.0) -> dict[str, float]:
    """Does speech move the rendered mouth? ``{"r", "lag", "r_at_lag"}`` over ``clips`` held-out portraits.

    Portrait i is a frontal, closed-mouth identity of domain ``DOMAINS[i % 3]`` (seed 50,000 + i); its speech is
    synthetic, with the renderer's jaw opening as its energy envelope (seed ``[60_000, i]``). The checkpoint's
    audio-to-motion part drives it relative to its silent face (``pose_strength`` 0: the mouth box sees the mouth
    alone); per frame, the mean absolute change of the mouth box from the undriven portrait is compared with the
    true jaw: Pearson r over all frames and the lag (frames, positive = the mouth moves late) at the peak of the
    cross-correlation. Needs a model with an ``audio2motion`` part.
    """
    from anytalk_core import synthetic
    from anytalk_core.engine import Engine, EngineConfig
    from .metrics.sync import mouth_metrics

    engine = Engine(model, EngineConfig(device="cpu"))
    size, n = int(model.config.image_size), int(round(seconds * fps))
    rest = engine.rest_motion(fps)
    pairs = []
    for i in range(clips):
        identity = synthetic.sample_identity(synthetic.DOMAINS[i % 3], 50_000 + i)
        portrait = synthetic.render_batch(identity, torch.tensor([[0, 0, 0, 0, 0, 1.0]]), torch.zeros(1, 7), size)
        _pose, expression, speech = synthetic.sample_motion(n, fps, np.random.default_rng([60_000, i]), with_audio=True)
        state = engine.prepare_source(portrait.images[0].permute(2, 0, 1)[None])
        frames = audio_driven_frames(engine, state, speech, fps, n, pose_strength, rest)
        still = torch.cat(list(engine.render(state, state.keypoints.cpu())))
        rows, cols = _mouth_box(portrait.landmarks[0], size)
        change = (frames[:, :, rows, cols] - still[:, :, rows, cols]).abs().mean(dim=(1, 2, 3))
        pairs.append((change, expression[:, synthetic.EXPRESSION_FIELDS.index("jaw_open")]))
    return mouth_metrics(pairs)


def demo_following(checkpoint=None, source=None, audio: bool = False
                   ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The demo (``anytalk_app.demo``; bundled model and source unless named) on its two drivers: the bundled
    clip for :func:`pose_following`, the same talking face held still for :func:`mouth_following` (``"r"``)
    and :func:`mouth_opening` (``"opening"``); with ``audio``, also the mouth opening when the portrait is
    driven by that face's speech alone (``"audio_opening"``, ``pose_strength`` 0; NaN without an
    audio-to-motion part)."""
    from anytalk_app.demo import DEMO_CHECKPOINT, demo_file, demo_frames
    from anytalk_core.checkpoints import load_model
    from anytalk_core.demo import DEMO_SOURCE, demo_driving, fit_square
    from anytalk_core.engine import Engine, EngineConfig
    from anytalk_core.media import load_image

    model = load_model(str(checkpoint or demo_file(DEMO_CHECKPOINT)))
    driving, generated = demo_frames(model, source)
    still, jaw, speech = demo_driving(driving.shape[-1], head_motion=False)
    talking, result = demo_frames(model, source, still)
    annotator = load_annotator()
    mouth = {**mouth_following(talking, result, annotator), "opening": mouth_opening(result, jaw, annotator)}
    if audio:
        mouth["audio_opening"] = float("nan")
        if model.has_audio2motion:
            engine = Engine(model, EngineConfig(device="cpu"))
            image = load_image(source or demo_file(DEMO_SOURCE)).permute(2, 0, 1).unsqueeze(0)
            state = engine.prepare_source(fit_square(image, driving.shape[-1]))
            frames = audio_driven_frames(engine, state, speech, 25.0, jaw.shape[0])
            mouth["audio_opening"] = mouth_opening(frames, jaw, annotator)
    return pose_following(driving, generated, annotator), mouth


def format_following(pose: dict[str, dict[str, float]], mouth: dict[str, float] | None = None) -> str:
    """A Markdown table of :func:`pose_following` (and :func:`mouth_following`)."""
    lines = ["| component | r | gain | driver range |", "|---|---|---|---|"]
    for name, s in pose.items():
        lines.append(f"| {name} | {s['r']:.3f} | {s['gain']:.2f} | {s['driver_range']:.1f} deg |")
    if mouth is not None:
        lines.append(f"| mouth (still head) | {mouth['r']:.3f} | | |")
        for key, label in (("opening", "driven by the video"), ("audio_opening", "driven by its speech alone")):
            if key in mouth:
                lines.append(f"| mouth opening, {label} (0..1) | {mouth[key]:.4f} | | |")
    return "\n".join(lines)
