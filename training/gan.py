"""The two sides of the GAN (each wrapped in DDP when distributed) and the losses' set-up."""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from . import losses as L
from . import synthetic_source as syn
from .config import GENERATOR_MODULES
from .expression import build_expression_encoder
from .pretrained import VGG19_MIN_SIDE, load_hopenet, load_vgg19
from .runloop import SetupError
from .settings import LossWeights

__all__ = ["LossSetup", "GeneratorSide", "DiscriminatorSide", "setup_losses"]


class LossSetup:
    """Resolved losses: weights, frozen helper networks and what each one is (for logs/provenance)."""

    def __init__(self):
        self.perceptual: L.PerceptualLoss | None = None
        self.pose_teacher: nn.Module | None = None
        self.pose_mode = "none"
        self.prefer_ground_truth = True
        self.expression: nn.Module | None = None
        self.info: dict = {}


class GeneratorSide(nn.Module):
    """Registers the generator-side networks (what DDP synchronises); the discriminator and the frozen
    helper networks are held outside the module tree."""

    def __init__(self, model: nn.Module, setup: LossSetup, weights: LossWeights):
        super().__init__()
        for name in GENERATOR_MODULES:
            setattr(self, name, getattr(model, name))
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_setup", setup)
        object.__setattr__(self, "_weights", weights)

    def forward(self, batch: dict, theta: torch.Tensor, control: torch.Tensor | None, epoch: int):
        model, setup, w = self._model, self._setup, self._weights
        src, drv = batch["source"], batch["driving"]
        b = src.shape[0]
        canonical = model.canonical_keypoints(src)
        raw_s = model.estimate_motion_raw(src)
        raw_d = model.estimate_motion_raw(drv)
        motion_s, motion_d = model.motion_from_raw(raw_s), model.motion_from_raw(raw_d)
        kp_s = model.motion_keypoints(canonical, motion_s)
        kp_d = model.motion_keypoints(canonical, motion_d)
        out = model.decode(model.encode_appearance(src), kp_d, kp_s)
        pred = out["prediction"]
        losses: dict[str, torch.Tensor] = {}

        if setup.perceptual is not None:
            losses["perceptual"] = setup.perceptual(pred, drv)

        lip = w.lip_region
        if lip.weight:  # set-up refuses it without a perceptual loss
            lips = batch["landmarks"][:, list(syn.LIP_LANDMARKS)]
            losses["lip_region"] = L.region_loss(setup.perceptual, pred, drv, lips, batch["has_landmarks"],
                                                 lip.weight, lip.size, lip.margin, lip.min_extent)

        g = w.gan
        if g.generator or any(g.feature_matching):
            maps = model.discriminator(torch.cat([drv, pred]))
            real = {k: ([f[:b] for f in feats], p[:b]) for k, (feats, p) in maps.items()}
            fake = {k: ([f[b:] for f in feats], p[b:]) for k, (feats, p) in maps.items()}
            if g.generator:
                losses["gen_gan"] = L.generator_gan_loss(fake, g.generator)
            if any(g.feature_matching):
                losses["feature_matching"] = L.feature_matching_loss(real, fake, [float(x) for x in g.feature_matching])

        e = w.equivariance
        if e.weight:
            transform = L.EquivarianceTransform(theta, control, e.points_tps)
            transformed = transform.transform_frame(drv)
            raw_t = model.estimate_motion_raw(transformed)
            kp_t = model.motion_keypoints(canonical, model.motion_from_raw(raw_t))
            losses["equivariance"] = L.equivariance_loss(kp_d, kp_t, transform, e.weight)

        k = w.keypoint_prior
        if k.weight:
            losses["keypoint_prior"] = L.keypoint_prior_loss(kp_d, k.weight, k.distance_threshold, k.depth_target)

        ks = w.keypoint_supervision.weight
        if ks and "landmarks" in batch:
            mask = batch["has_landmarks"]
            losses["keypoint_supervision"] = 0.5 * (
                L.keypoint_supervision_loss(kp_d, batch["landmarks"], ks, mask)
                + L.keypoint_supervision_loss(kp_s, batch["source_landmarks"], ks, mask))

        if setup.pose_mode != "none":
            angles = torch.stack([motion_d.yaw, motion_d.pitch, motion_d.roll], dim=1)
            target, mask = batch["pose"], batch["has_pose"]
            if setup.pose_teacher is not None:
                with torch.no_grad():
                    teacher = setup.pose_teacher(drv).to(target.dtype)
                use_gt = mask.view(-1, 1) if setup.prefer_ground_truth else torch.zeros_like(mask.view(-1, 1))
                target = torch.where(use_gt, target, teacher)
                mask = torch.ones_like(mask)
            losses["head_pose"] = L.head_pose_loss(angles, target.detach(), w.head_pose.weight, mask)

        warp = w.warp
        if warp.weight:
            losses["warp"] = L.warp_loss(src, drv, out["deformation"], warp.weight, [float(x) for x in warp.scales])

        d = w.deformation_prior
        if d.weight:
            weight = L.deformation_prior_weight(epoch, d.weight, d.decay_start_epoch, d.decay_every_epochs,
                                                d.decay_initial_drop, d.floor)
            losses["deformation_prior"] = L.deformation_prior_loss(raw_d["exp"], weight)

        if setup.expression is not None:
            losses["expression"] = L.expression_consistency_loss(setup.expression, drv, pred,
                                                                 w.expression.weight)
        return losses, {"prediction": pred, "kp_driving": kp_d, "kp_source": kp_s}


class DiscriminatorSide(nn.Module):
    def __init__(self, discriminator: nn.Module, weight: float):
        super().__init__()
        self.discriminator = discriminator
        self.weight = weight

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        b = real.shape[0]
        maps = self.discriminator(torch.cat([real, fake.detach()]))
        r = {k: (feats, p[:b]) for k, (feats, p) in maps.items()}
        f = {k: (feats, p[b:]) for k, (feats, p) in maps.items()}
        return L.discriminator_hinge_loss(r, f, self.weight)


def setup_losses(run) -> LossSetup:
    """Resolve the losses of a :class:`~.trainer.Trainer` in set-up (its config, data, device, log); missing files fail here."""
    cfg, setup = run.cfg, LossSetup()
    # perceptual
    p = cfg["perceptual"]
    if any(float(w) for w in p["weights"]):
        if p["vgg19_weights"]:
            vgg = (run._vgg19 or load_vgg19(os.path.expanduser(p["vgg19_weights"]))).to(run.device)
            run._vgg19 = None
            smallest = min(p["scales"]) * run.image_size
            if smallest < VGG19_MIN_SIDE:
                raise SetupError(f"perceptual.scales: the smallest pyramid level is {smallest:g} px; VGG-19's "
                                 f"relu5_1 needs at least {VGG19_MIN_SIDE} px (drop the small scales at this "
                                 "image size)")
            setup.perceptual = L.PerceptualLoss(p["scales"], p["weights"], "vgg19", vgg).to(run.device)
            setup.info["perceptual"] = {"backend": "vgg19_pyramid_l1", "weights": os.path.abspath(p["vgg19_weights"]),
                                        "scales": p["scales"], "layer_weights": p["weights"]}
        elif p["fallback"] == "pixel_pyramid_l1":
            setup.perceptual = L.PerceptualLoss(p["scales"], p["weights"], "pixel_pyramid_l1").to(run.device)
            setup.info["perceptual"] = {"backend": "pixel_pyramid_l1", "scales": p["scales"],
                                        "note": "FALLBACK: no VGG-19 weights named; multi-scale pixel L1 "
                                                "(perceptual.fallback = 'pixel_pyramid_l1')"}
            run.log("perceptual loss: FALLBACK pixel_pyramid_l1 (multi-scale L1 on pixels, no VGG-19): "
                     "name perceptual.vgg19_weights for the seed's VGG-19 perceptual loss")
        else:
            raise SetupError("the perceptual loss needs VGG-19 weights: set perceptual.vgg19_weights to a file "
                             "with torchvision's VGG-19 state dict (features.N.weight keys), or state the fallback "
                             "explicitly with perceptual.fallback = 'pixel_pyramid_l1'")
    else:
        setup.info["perceptual"] = {"backend": "off"}
    lip = cfg["lip_region"]
    if lip["weight"]:
        if setup.perceptual is None:
            raise SetupError("lip_region.weight > 0 uses the perceptual loss on the lip crops: give the perceptual "
                             "loss non-zero weights, or set lip_region.weight = 0")
        if setup.perceptual.backend == "vgg19" and min(p["scales"]) * lip["size"] < VGG19_MIN_SIDE:
            raise SetupError(f"lip_region.size: the smallest pyramid level of a {lip['size']} px lip crop is under "
                             f"the {VGG19_MIN_SIDE} px VGG-19's relu5_1 needs (raise lip_region.size or drop small "
                             "scales)")
        setup.info["lip_region"] = {"weight": lip["weight"], "size": lip["size"], "backend": setup.perceptual.name}
    # head pose
    h = cfg["head_pose"]
    no_gt = [s.name for s in run.dataset.sources if not s.has_ground_truth]
    source = h["source"]
    if not float(h["weight"]) or source == "none":
        setup.pose_mode = "none"
    elif source == "hopenet" or (source == "auto" and h["hopenet_weights"]):
        if not h["hopenet_weights"]:
            raise SetupError("head_pose.source = 'hopenet' needs head_pose.hopenet_weights (a Hopenet state dict, "
                             "e.g. hopenet_robust_alpha1.pkl)")
        setup.pose_teacher = load_hopenet(os.path.expanduser(h["hopenet_weights"])).to(run.device)
        setup.pose_mode = "hopenet"
    elif no_gt:
        raise SetupError(f"the head-pose loss (head_pose.weight = {h['weight']}) needs a pose teacher for data "
                         f"source(s) {', '.join(no_gt)} which have no ground-truth pose: set "
                         "head_pose.hopenet_weights to a Hopenet file, or head_pose.weight = 0")
    else:
        setup.pose_mode = "ground_truth"
    setup.info["head_pose"] = {"mode": setup.pose_mode, "weights": h["hopenet_weights"] or None,
                               "note": {"ground_truth": "ground-truth angles of the synthetic renderer",
                                        "hopenet": "Hopenet teacher (ground truth preferred where the data has it)",
                                        "none": "head-pose loss off"}[setup.pose_mode]}
    # expression
    setup.expression, setup.info["expression"] = build_expression_encoder(
        cfg, run.run_dir, run.device, log=run.log, is_main=run.dist.is_main, barrier=run.barrier)
    return setup
