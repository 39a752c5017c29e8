"""Procedural synthetic heads of three domains with known pose, expression, landmarks and audio.

Pure torch/numpy, CPU-fast, deterministic given a seed (int), ``numpy.random.Generator`` or
``torch.Generator``. Used by tests, CPU smoke training, the bundled demo and the ground-truth benchmark
(SPEC §7).

Domains (:data:`DOMAINS`): ``"human"`` (shaded realistic-ish head: skin tones with texture, hair styles,
eyes with iris/pupil/lids, brows, nose, lips, teeth, ears, optional beard and glasses), ``"cg_human"``
(stylised Disney-like: big eyes with catch-lights, small nose, wrap/rim lighting, saturated colours) and
``"animal"`` (cartoon animal: fur head, pointed or round ears on top, muzzle/snout with nose and
omega mouth, big eyes with round or slit pupils, whiskers, stripes, eye patches, cheek fluff).

Public API
----------
``sample_identity(domain, rng=None, symmetric=False) -> Identity``
    Random identity (head shape, colours, texture, hair/ears style, background, light).
    ``Identity.replace(**params)`` edits parameters; ``symmetric=True`` gives an exactly mirror-symmetric
    identity (frontal renders are left-right symmetric).
``HeadPose(yaw=0, pitch=0, roll=0, tx=0, ty=0, scale=1)`` / ``Expression(jaw_open=0, smile=0,
blink_left=0, blink_right=0, brow_raise=0, gaze_x=0, gaze_y=0)``
    Dataclasses with ``to_tensor()`` / ``from_tensor()``; tensor layouts :data:`POSE_FIELDS` [..., 6] and
    :data:`EXPRESSION_FIELDS` [..., 7]; expression ranges in :data:`EXPRESSION_RANGES` (values clamped).
``render(identity, pose=None, expression=None, size=256, return_parts=False) -> RenderResult``
    ``image`` float32 [H,W,3] in 0..1, ``landmarks`` float32 [L,2] pixels, ``visible`` bool [L],
    ``mask`` float32 [H,W] foreground, ``parts`` (optional soft masks: head, mouth, iris, eye_open).
``render_batch(identities, poses=None, expressions=None, size=64, return_parts=False) -> BatchRenderResult``
    Batched (one identity shared or a list; domains may be mixed); poses [B,6] / expressions [B,7]
    tensors or lists of dataclasses. ``BatchRenderResult[i]`` is a ``RenderResult``.
``landmarks_2d(identities, poses=None, expressions=None, size=256) -> [B,L,2]`` /
``landmarks_3d(identities, expressions=None) -> [B,L,3]``
    Ground-truth landmarks without rendering (pixels; or head-local 3-D, pose-free).
``sample_motion(n_frames, fps=25, rng=None, config=None, with_audio=False) -> (pose [N,6], expr [N,7], speech)``
    Smooth random motion (sums of low-frequency sinusoids, Poisson blinks, speech-driven jaw).
``render_sequence(identity, pose, expression, size=128, batch_size=64) -> BatchRenderResult``
``render_clip(identity, n_frames=50, fps=25, size=128, rng=None, with_audio=False, config=None) -> Clip``
    ``Clip``: frames [N,H,W,3], pose [N,6], expression [N,7], landmarks [N,L,2], visible [N,L], fps,
    identity, audio [1,T] float32 at 16 kHz (``with_audio=True``) whose per-frame RMS follows jaw_open,
    envelope [T]; ``Clip.audio_dict()`` gives a ComfyUI AUDIO dict.
``motion_transfer_target(identity_b, clip_a, size=None) -> frames [N,H,W,3]``
    Identity B rendered with clip A's pose and expression (cross-identity ground truth).
``synth_speech(n_samples, rng=None, sample_rate=16000) -> SpeechTrack``; ``frame_envelope``,
``frame_energy`` (per-video-frame envelope mean / waveform RMS).

Conventions
-----------
Camera/head axes: x right, y down, z into the screen (the face looks towards -z); orthographic camera.
``R = R_x(pitch) R_y(yaw) R_z(roll)`` (column vectors, degrees, face-vid2vid order) about the cranium
centre. yaw > 0 turns the face towards the image left (subject's right), pitch > 0 tilts it down, roll > 0
rotates the head clockwise in the image. Angles are faithful in at least ±45° yaw, ±30° pitch/roll.
tx, ty: normalised image units (the image spans [-1, 1]; +x right, +y down); scale multiplies the
identity's framing. "left"/"right" are the subject's own (left eye at +x). Pixel coordinates have pixel
centres at integers; landmarks at size S map to S' by ``(p + 0.5) * S' / S - 0.5``.

Landmarks (:data:`LANDMARK_NAMES`, L = 41): 9 contour points (right cheek -> chin -> left cheek), 6 brow
points, 5 per eye (outer/inner corner, upper/lower lid, pupil), 5 nose (bridge, tip, nostrils, base),
6 mouth (corners, outer and inner lip midpoints), 4 ear (tip, base per side), forehead. They are points on
the drawn surfaces; ``visible`` is a depth test (self-occlusion and image bounds; closed eyelids do not make
a pupil invisible).
"""
from .audio import SAMPLE_RATE, SpeechTrack, frame_energy, frame_envelope, synth_speech
from .clips import Clip, MotionConfig, motion_transfer_target, render_clip, render_sequence, sample_motion
from .params import (
    DOMAINS,
    EXPRESSION_FIELDS,
    EXPRESSION_RANGES,
    LANDMARK_INDEX,
    LANDMARK_NAMES,
    NUM_LANDMARKS,
    POSE_FIELDS,
    Expression,
    HeadPose,
    Identity,
    expression_tensor,
    make_rng,
    pose_tensor,
    sample_identity,
)
from .renderer import BatchRenderResult, RenderResult, landmarks_2d, landmarks_3d, render, render_batch

__all__ = [
    "DOMAINS", "POSE_FIELDS", "EXPRESSION_FIELDS", "EXPRESSION_RANGES", "LANDMARK_NAMES", "LANDMARK_INDEX",
    "NUM_LANDMARKS", "SAMPLE_RATE",
    "HeadPose", "Expression", "Identity", "sample_identity", "make_rng", "pose_tensor", "expression_tensor",
    "RenderResult", "BatchRenderResult", "render", "render_batch", "landmarks_2d", "landmarks_3d",
    "MotionConfig", "Clip", "sample_motion", "render_sequence", "render_clip", "motion_transfer_target",
    "SpeechTrack", "synth_speech", "frame_envelope", "frame_energy",
]
