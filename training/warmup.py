"""Motion warm-up: the motion estimator learns the renderer's ground truth before the GAN training starts.

Not a stage of the paper (``motion_warmup.steps = 0``, the default, leaves it out). The authors' motion
estimator learns head pose from a pretrained Hopenet over hundreds of epochs; a short CPU run on synthetic
heads has neither. Inside the full model the estimator sees one small batch per step and learns slowly: after
3,000 steps of the bundled demo's first run its roll head still answered a constant. Alone, on fresh still
renders, it costs a tenth of a full step per image, so it can see many more heads in the same time.

Each step renders ``batch_size`` new identities of the synthetic domains at random poses and expressions
(numpy ``default_rng([WARMUP_TAG, seed, step])``, so the warm-up is the same for a seed) and fits, with AdamW
and a one-cycle schedule:

* the head-pose loss against the renderer's yaw/pitch/roll (weight ``head_pose.weight``, seed Eq. 5);
* with ``keypoints = true``, the keypoint supervision against renderer landmarks (weight
  ``keypoint_supervision.weight``) on the keypoints the canonical detector and the estimated motion place, so
  the rotation explains landmark motion; the canonical keypoint detector trains too;
* the deformation prior on the expression deltas (``deformation_prior.weight``, seed Eq. 6), so the deltas
  do not take over what the rotation should explain;
* with ``expression_weight`` > 0, the expression deltas of the supervised keypoints against how far the
  renderer's expression moved each landmark from where the neutral face at the same pose has it
  (:func:`losses.expression_offset_loss`); the deformation prior then covers only the other keypoints. Without
  it the deltas learn nearly nothing: the prior's pull to 0 outweighs a landmark term spread over all
  keypoints, so the estimator never reads the mouth (the first demo's lower-lip delta moved 0.1 px for a
  3 px jaw), and neither a driving mouth nor audio moves the result's.

``head_pose_weight`` (< 0: ``head_pose.weight``) lets the warm-up weigh the pose less once it is learned, so
the shared trunk has room to learn the expression.

The report (logged and kept in ``run_info.json``) gives the held-out pose error per angle on renders of
another seed namespace, before and after.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from anytalk_core import synthetic as _syn

from . import losses as L
from . import synthetic_source as syn
from .settings import MotionWarmup

WARMUP_TAG = 0x3A11  # numpy seed namespace of the warm-up renders (held-out check: WARMUP_TAG + 1)


def still_batch(domains: list[str], batch: int, size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``batch`` fresh identities (domains in turn) at random stills: images (B, 3, size, size), pose (B, 3)
    degrees, expression (B, 7), landmarks (B, L, 2) of :data:`synthetic_source.SUPERVISED_LANDMARKS`, normalised, and
    expression_offsets (B, L, 2): how far the expression moved them from where the same head at the same pose
    with a neutral face has them."""
    identities = [syn.identity(domains[i % len(domains)], int(rng.integers(2**62))) for i in range(batch)]
    pose, expression = syn.random_still(rng, batch)
    out = _syn.render_batch(identities, pose, expression, size)
    landmarks = syn.supervised_landmarks(out.landmarks, size).float()
    neutral = syn.supervised_landmarks(_syn.landmarks_2d(identities, pose, torch.zeros_like(expression), size), size)
    return {"images": out.images.permute(0, 3, 1, 2).contiguous().clamp_(0, 1), "pose": pose[:, :3],
            "expression": expression, "landmarks": landmarks, "expression_offsets": landmarks - neutral.float()}


def held_out_errors(model: nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> tuple[list[float], float]:
    """Pose MAE per angle (degrees) and the Pearson r between the (x, y) expression deltas of the supervised
    keypoints and the offsets the expression caused (does the estimator read the expression at all)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        m = model.motion_from_raw(model.estimate_motion_raw(data["images"].to(device)))
    model.train(was_training)
    angles = torch.stack([m.yaw, m.pitch, m.roll], 1).float().cpu()
    n = min(m.expression.shape[1], data["expression_offsets"].shape[1])
    pairs = torch.stack([m.expression[:, :n, :2].float().cpu().flatten(), data["expression_offsets"][:, :n].flatten()])
    r = torch.corrcoef(pairs)[0, 1]
    return [round(float(v), 2) for v in (angles - data["pose"]).abs().mean(0)], round(float(r.nan_to_num(0.0)), 3)


def warm_up_motion(model: nn.Module, config: dict, domains: list[str], size: int, device: torch.device,
                   log: Callable[[str], None] = print) -> dict:
    """Train ``model.motion`` (and ``model.keypoints`` when ``motion_warmup.keypoints``) on fresh synthetic
    stills against the renderer's ground truth; returns the report. The model is left in train mode."""
    w = MotionWarmup.of(config)
    steps, batch, lr = w.steps, w.batch_size, w.lr
    with_keypoints = w.keypoints
    pose_weight = float(w.head_pose_weight if w.head_pose_weight >= 0 else config["head_pose"]["weight"])
    kp_weight = float(config["keypoint_supervision"]["weight"])
    prior_weight = float(config["deformation_prior"]["weight"])
    expression_weight = w.expression_weight
    # with expression supervision the deltas of the supervised keypoints have a target; the prior keeps the rest at 0
    free = len(syn.SUPERVISED_LANDMARKS) if expression_weight else 0
    uses_scale = model.convention.uses_scale
    seed = int(config["seed"])
    t0 = time.time()
    held_out = still_batch(domains, w.val_images, size, np.random.default_rng([WARMUP_TAG + 1, seed]))
    before, expression_before = held_out_errors(model, held_out, device)
    params = list(model.motion.parameters()) + (list(model.keypoints.parameters()) if with_keypoints else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log(f"motion warm-up: {steps} steps of {batch} fresh synthetic stills ({', '.join(domains)}), lr {lr}, "
        f"{'motion estimator + canonical keypoints' if with_keypoints else 'motion estimator'}, head pose weight "
        f"{pose_weight}, expression weight {expression_weight}; "
        f"held-out pose error before (yaw, pitch, roll): {before} deg, expression r {expression_before}")
    model.train()
    running: dict[str, float] = {}
    every = max(1, w.log_every)
    for step in range(steps):
        data = still_batch(domains, batch, size, np.random.default_rng([WARMUP_TAG, seed, step]))
        images = data["images"].to(device)
        motion = model.motion_from_raw(model.estimate_motion_raw(images))
        terms = {"head_pose": L.head_pose_loss(torch.stack([motion.yaw, motion.pitch, motion.roll], 1),
                                               data["pose"].to(device), pose_weight),
                 "deformation_prior": L.deformation_prior_loss(motion.expression[:, free:], prior_weight)}
        if expression_weight:
            deltas = motion.expression[:, :, :2]
            if uses_scale:  # LivePortrait: the image offset of a delta is scale * delta
                deltas = deltas * motion.scale.detach().view(-1, 1, 1)
            terms["expression"] = L.expression_offset_loss(deltas, data["expression_offsets"].to(device),
                                                           expression_weight)
        if with_keypoints and kp_weight:
            keypoints = model.motion_keypoints(model.canonical_keypoints(images), motion)
            terms["keypoint_supervision"] = L.keypoint_supervision_loss(
                keypoints, data["landmarks"].to(device), kp_weight, torch.ones(batch, dtype=torch.bool, device=device))
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + float(v.detach()) / every
        if (step + 1) % every == 0 or step + 1 == steps:
            log(f"motion warm-up: step {step + 1}/{steps} "
                + " ".join(f"{k} {v:.3f}" for k, v in running.items()) + f" ({time.time() - t0:.0f} s)")
            running = {}
    after, expression_after = held_out_errors(model, held_out, device)
    report = {"steps": steps, "batch_size": batch, "lr": lr, "keypoints": with_keypoints, "domains": list(domains),
              "weights": {"head_pose": pose_weight, "keypoint_supervision": kp_weight if with_keypoints else 0.0,
                          "deformation_prior": prior_weight, "expression": expression_weight},
              "images": steps * batch, "seconds": round(time.time() - t0, 1),
              "held_out": {"images": w.val_images, "rng": f"default_rng([{WARMUP_TAG + 1:#x}, seed])",
                           "pose_mae_deg_before": before, "pose_mae_deg_after": after,
                           "expression_r_before": expression_before, "expression_r_after": expression_after}}
    log(f"motion warm-up: done in {report['seconds']} s; held-out pose error (yaw, pitch, roll): {before} -> "
        f"{after} deg; expression r {expression_before} -> {expression_after}")
    return report
