"""The seed's losses (AnyTalk supplementary §B.2), as the authors' face-vid2vid trainer computes them.

Each function returns the *weighted* term unless said otherwise; weights come from the config
(:mod:`.config` holds the seed's values). Shapes: images (B, 3, H, W) in 0..1, keypoints (B, K, 3) with
the last axis (x, y, z) in the model's normalised coordinates.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from anytalk_core.geometry import coordinate_grid_2d
from anytalk_core.models.keypoint_detector import AntiAliasDownsample

from .pretrained import Vgg19Features

__all__ = [
    "ImagePyramid",
    "PerceptualLoss",
    "generator_gan_loss",
    "feature_matching_loss",
    "discriminator_hinge_loss",
    "EquivarianceTransform",
    "equivariance_loss",
    "keypoint_prior_loss",
    "head_pose_loss",
    "keypoint_supervision_loss",
    "warp_loss",
    "deformation_prior_loss",
    "deformation_prior_weight",
    "expression_consistency_loss",
]


# ------------------------------------------------------------------------------------------------
# Multi-scale perceptual loss
# ------------------------------------------------------------------------------------------------

class ImagePyramid(nn.Module):
    """Anti-aliased downsampling to each scale (face-vid2vid's ImagePyramide; scale 1 is the image)."""

    def __init__(self, scales: list[float], channels: int = 3):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.downs = nn.ModuleList(
            nn.Identity() if s == 1 else AntiAliasDownsample(channels, s, persistent=False) for s in self.scales
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [down(x) for down in self.downs]


class PerceptualLoss(nn.Module):
    """L_P = sum over pyramid scales i and VGG-19 layers l of w_l * mean |VGG_l(R_i) - VGG_l(G_i)|.

    ``backend = "vgg19"`` needs a :class:`Vgg19Features` loaded from the user's file. The only other
    backend is the documented fallback ``"pixel_pyramid_l1"``: sum over scales of lambda_P * mean |R_i - G_i|
    with lambda_P the mean of the layer weights — a plain multi-scale L1, named as such in every log line.
    """

    def __init__(self, scales: list[float], weights: list[float], backend: str, vgg: Vgg19Features | None = None):
        super().__init__()
        if backend == "vgg19" and vgg is None:
            raise ValueError("the vgg19 perceptual backend needs loaded VGG-19 weights")
        if backend not in ("vgg19", "pixel_pyramid_l1"):
            raise ValueError(f"unknown perceptual backend {backend!r}")
        self.backend = backend
        self.pyramid = ImagePyramid(scales)
        self.weights = [float(w) for w in weights]
        self._vgg = [vgg]  # not a registered submodule: frozen, never saved with the model

    @property
    def name(self) -> str:
        return "vgg19_pyramid_l1" if self.backend == "vgg19" else "pixel_pyramid_l1"

    def to(self, *args, **kwargs):  # keep the unregistered VGG on the same device
        super().to(*args, **kwargs)
        if self._vgg[0] is not None:
            self._vgg[0].to(*args, **kwargs)
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        pred_pyr, real_pyr = self.pyramid(prediction), self.pyramid(target)
        if self.backend == "pixel_pyramid_l1":
            lam = sum(self.weights) / len(self.weights)
            for p, r in zip(pred_pyr, real_pyr):
                total = total + lam * torch.abs(p - r.detach()).mean()
            return total
        vgg = self._vgg[0]
        for p, r in zip(pred_pyr, real_pyr):
            x_vgg = vgg(p)
            with torch.no_grad():
                y_vgg = vgg(r)
            for w, a, b in zip(self.weights, x_vgg, y_vgg):
                if w:
                    total = total + w * torch.abs(a - b.detach()).mean()
        return total


# ------------------------------------------------------------------------------------------------
# Patch GAN (hinge) and feature matching
# ------------------------------------------------------------------------------------------------

DiscOutput = dict[str, tuple[list[torch.Tensor], torch.Tensor]]


def generator_gan_loss(fake: DiscOutput, weight: float) -> torch.Tensor:
    """Hinge generator loss: sum over discriminator scales of -weight * mean D(fake)."""
    return sum(-weight * pred.mean() for _, pred in fake.values())


def feature_matching_loss(real: DiscOutput, fake: DiscOutput, weights: list[float]) -> torch.Tensor:
    """sum over scales and discriminator blocks i of w_i * mean |F_i(real) - F_i(fake)| (real detached)."""
    total = None
    for key, (fake_feats, _) in fake.items():
        real_feats = real[key][0]
        for w, a, b in zip(weights, real_feats, fake_feats):
            if w:
                term = w * torch.abs(a.detach() - b).mean()
                total = term if total is None else total + term
    return total if total is not None else next(iter(fake.values()))[1].new_zeros(())


def discriminator_hinge_loss(real: DiscOutput, fake: DiscOutput, weight: float) -> torch.Tensor:
    """Hinge discriminator loss: sum over scales of weight * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))."""
    return sum(weight * (F.relu(1 - real[k][1]).mean() + F.relu(1 + fake[k][1]).mean()) for k in fake)


# ------------------------------------------------------------------------------------------------
# Equivariance (random affine + thin-plate-spline warp)
# ------------------------------------------------------------------------------------------------

class EquivarianceTransform:
    """FOMM's random TPS transform: ``theta`` (B, 2, 3) = I + N(0, sigma_affine), ``control_params``
    (B, 1, P^2) = N(0, sigma_tps) on a P x P grid of control points in [-1, 1]^2.

    ``warp_coordinates`` maps points of the transformed frame to the original frame;
    ``transform_frame`` samples the frame there (reflection padding). The sampling grid uses the
    ``2 j / (n - 1) - 1`` coordinates of the keypoints, so ``align_corners=True`` (as the original code under
    the torch of its time): the identity transform returns the frame unchanged.
    """

    def __init__(self, theta: torch.Tensor, control_params: torch.Tensor | None = None, points_tps: int = 5):
        self.theta = theta
        self.bs = theta.shape[0]
        self.control_params = control_params
        self.points_tps = points_tps

    @classmethod
    def random(cls, bs: int, sigma_affine: float, sigma_tps: float, points_tps: int,
               generator: torch.Generator | None = None) -> "EquivarianceTransform":
        noise = torch.randn(bs, 2, 3, generator=generator) * sigma_affine
        theta = noise + torch.eye(2, 3).view(1, 2, 3)
        control = None
        if points_tps > 0:
            control = torch.randn(bs, 1, points_tps ** 2, generator=generator) * sigma_tps
        return cls(theta, control, points_tps)

    @classmethod
    def identity(cls, bs: int, points_tps: int = 5) -> "EquivarianceTransform":
        return cls(torch.eye(2, 3).view(1, 2, 3).repeat(bs, 1, 1), torch.zeros(bs, 1, points_tps ** 2), points_tps)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "EquivarianceTransform":
        cp = None if self.control_params is None else self.control_params.to(device, dtype)
        return EquivarianceTransform(self.theta.to(device, dtype), cp, self.points_tps)

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """coordinates (B or 1, N, 2) -> (B, N, 2)."""
        theta = self.theta.to(coordinates.dtype).unsqueeze(1)
        transformed = (torch.matmul(theta[:, :, :, :2], coordinates.unsqueeze(-1)) + theta[:, :, :, 2:]).squeeze(-1)
        if self.control_params is not None:
            p = self.points_tps
            control = coordinate_grid_2d(p, p, device=coordinates.device, dtype=coordinates.dtype).view(1, 1, -1, 2)
            distances = torch.abs(coordinates.view(coordinates.shape[0], -1, 1, 2) - control).sum(-1)
            result = distances ** 2 * torch.log(distances + 1e-6) * self.control_params.to(coordinates.dtype)
            transformed = transformed + result.sum(dim=2).view(self.bs, coordinates.shape[1], 1)
        return transformed

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        h, w = frame.shape[2:]
        grid = coordinate_grid_2d(h, w, device=frame.device, dtype=frame.dtype).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(self.bs, h, w, 2)
        return F.grid_sample(frame, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def equivariance_loss(kp_driving: torch.Tensor, kp_transformed: torch.Tensor, transform: EquivarianceTransform,
                      weight: float) -> torch.Tensor:
    """weight * mean |x_d[:2] - T(x_T[:2])|: keypoints of the transformed frame, mapped back by T, must
    land on the keypoints of the frame (the seed's Eq. 3; face-vid2vid projects to 2D and averages)."""
    return weight * torch.abs(kp_driving[..., :2] - transform.warp_coordinates(kp_transformed[..., :2])).mean()


# ------------------------------------------------------------------------------------------------
# Keypoint prior, head pose, deformation prior
# ------------------------------------------------------------------------------------------------

def keypoint_prior_loss(kp: torch.Tensor, weight: float, distance_threshold: float = 0.1,
                        depth_target: float = 0.33) -> torch.Tensor:
    """weight * ( sum_{i != j} mean_b max(0, D_t - |x_i - x_j|^2) + mean_b |mean_k z_k - z_t| ) (seed Eq. 4).

    Ordered pairs, as the authors' double loop. Their loop also visits i == j, which adds the constant
    K * D_t (no gradient); the seed's formula excludes it and so does this function.
    """
    k = kp.shape[1]
    sq = ((kp.unsqueeze(2) - kp.unsqueeze(1)) ** 2).sum(-1)  # (B, K, K)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=kp.device)
    spread = (F.relu(distance_threshold - sq) * off_diagonal).sum(dim=(1, 2)).mean()
    depth = torch.abs(kp[:, :, 2].mean(-1) - depth_target).mean()
    return weight * (spread + depth)


def keypoint_supervision_loss(keypoints: torch.Tensor, landmarks: torch.Tensor, weight: float,
                              mask: torch.Tensor) -> torch.Tensor:
    """weight * mean |(x, y) of the first L keypoints - the L ground-truth landmarks| (not in the seed).

    keypoints (B, K, 3), landmarks (B, L, 2) normalised like the keypoints; ``mask`` (B,) marks items that have
    landmarks. Only min(K, L) keypoints are supervised.
    """
    n = min(keypoints.shape[1], landmarks.shape[1])
    err = torch.abs(keypoints[:, :n, :2] - landmarks[:, :n].to(keypoints.dtype)).mean(dim=(1, 2))  # (B,)
    m = mask.to(err.dtype)
    if m.sum() == 0:
        return keypoints.new_zeros(()) * keypoints.sum()  # keeps the graph (DDP) with a zero
    return weight * (err * m).sum() / m.sum()


def expression_offset_loss(deltas: torch.Tensor, offsets: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * mean |(x, y) of the first L expression deltas - the L landmark offsets an expression caused|
    (not in the seed). deltas (B, K, 2) in the image offsets they cause, offsets (B, L, 2), both normalised."""
    every_item = torch.ones(deltas.shape[0], dtype=torch.bool, device=deltas.device)
    return keypoint_supervision_loss(deltas, offsets, weight, every_item)  # the same mean |difference| on (x, y)


def region_crops(images: torch.Tensor, points: torch.Tensor, size: int, margin: float,
                 min_extent: float) -> torch.Tensor:
    """Square crops around point sets, resampled to ``size`` px (differentiable): (B, C, H, W) -> (B, C, size, size).

    points (B, P, 2) in normalised image coordinates (x, y in [-1, 1], align_corners=False). Each box is centred
    on the points' bounding box; its side is the larger extent times (1 + 2 margin), at least ``min_extent``."""
    lo, hi = points.amin(dim=1), points.amax(dim=1)
    centre = (lo + hi) / 2
    half = ((hi - lo).amax(dim=1) * (0.5 + margin)).clamp(min=min_extent / 2).detach()
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = half.to(images.dtype)
    theta[:, :, 2] = centre.detach().to(images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def region_loss(perceptual: nn.Module, prediction: torch.Tensor, target: torch.Tensor, points: torch.Tensor,
                mask: torch.Tensor, weight: float, size: int, margin: float, min_extent: float) -> torch.Tensor:
    """weight * the perceptual loss (or its pixel fallback) between crops of prediction and target around
    ``points`` (B, P, 2) of the target, over the items ``mask`` (B,) marks (LivePortrait's cascaded loss on the
    lip region; not in the seed). Zero, with the graph kept, when no item has points."""
    b = prediction.shape[0]
    crops = region_crops(torch.cat([prediction, target]), torch.cat([points, points]), size, margin, min_extent)
    real = crops[b:].detach()
    keep = mask.bool().view(-1, 1, 1, 1)
    # unmarked items compare the target's crop with itself (exactly 0), and the batch mean is rescaled to the
    # marked items: no boolean indexing, so no host sync in the training step
    fake = torch.where(keep, crops[:b], real)
    return weight * perceptual(fake, real) * b / keep.sum().clamp(min=1)


def warp_loss(source: torch.Tensor, driving: torch.Tensor, deformation: torch.Tensor, weight: float,
              scales: list[float]) -> torch.Tensor:
    """weight * mean over scales of |source warped by the dense deformation - driving| (not in the seed).

    source, driving (B, 3, H, W); deformation (B, D, h, w, 3), the dense motion network's field of source
    positions (x, y, z) on :func:`coordinate_grid_3d`'s scale, where the identity field copies the source exactly
    (the generator, which reads its volume with the same offset, reproduces the source from it). Each depth slice
    of the field warps the image by its (x, y) and the slices are averaged. This hands the dense motion network a
    direct gradient (the generator's only passes through a decoder that has yet to learn), as the warp losses of
    the Thin-Plate Spline Motion Model and others do, meant to keep short CPU runs from settling on copying the
    source (the demo's stage 2 used it together with the motion warm-up; their separate effects were not measured).
    Blurred scales widen the basin in which a wrong displacement still gets a useful gradient.
    """
    b, d = deformation.shape[:2]
    field = deformation[..., :2].permute(0, 1, 4, 2, 3).reshape(b * d, 2, *deformation.shape[2:4])
    total = source.new_zeros(())
    for scale in scales:
        size = (max(1, round(source.shape[2] * scale)), max(1, round(source.shape[3] * scale)))
        src = source if scale == 1 else F.interpolate(source, size=size, mode="area")
        drv = driving if scale == 1 else F.interpolate(driving, size=size, mode="area")
        grid = F.interpolate(field, size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
        slices = src.unsqueeze(1).expand(b, d, *src.shape[1:]).reshape(b * d, *src.shape[1:])
        warped = F.grid_sample(slices, grid.to(src.dtype), mode="bilinear", padding_mode="border",
                               align_corners=True).view(b, d, *src.shape[1:]).mean(1)
        total = total + torch.abs(warped - drv).mean()
    return weight * total / len(scales)


def head_pose_loss(predicted: torch.Tensor, target: torch.Tensor, weight: float,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """weight * sum over (yaw, pitch, roll) of mean |R_d - R_hat_d| in degrees (seed Eq. 5).

    predicted, target (B, 3); ``mask`` (B,) selects the items that have a target (others do not count).
    """
    err = torch.abs(predicted - target.to(predicted.dtype))  # (B, 3)
    if mask is None:
        return weight * err.mean(0).sum()
    m = mask.to(err.dtype).unsqueeze(1)
    n = m.sum()
    if n == 0:
        return predicted.new_zeros(()) * predicted.sum()  # keeps the graph (DDP) with a zero
    return weight * (err * m).sum(0).sum() / n


def deformation_prior_loss(expression: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * mean_b sum_{k,c} |delta_{b,k,c}| (seed Eq. 6; L1 norm of the K x 3 deltas per frame)."""
    return weight * expression.reshape(expression.shape[0], -1).abs().sum(-1).mean()


def deformation_prior_weight(epoch: int, weight: float, decay_start_epoch: int = 100, decay_every_epochs: int = 50,
                             decay_initial_drop: float = 2.0, floor: float = 1.0) -> float:
    """The authors' schedule: ``weight`` before ``decay_start_epoch``, then
    ``weight - (epoch - start) // every - drop``, never below ``floor`` (5 -> 3 at 100, 2 at 150, 1 at 200)."""
    if weight == 0:
        return 0.0
    if epoch < decay_start_epoch:
        return float(weight)
    value = weight - (epoch - decay_start_epoch) // max(decay_every_epochs, 1) - decay_initial_drop
    return float(max(value, floor))


# ------------------------------------------------------------------------------------------------
# Expression consistency
# ------------------------------------------------------------------------------------------------

def expression_consistency_loss(encoder: nn.Module, driving: torch.Tensor, generated: torch.Tensor,
                                weight: float) -> torch.Tensor:
    """weight * MSE(phi(d), phi(y_hat)) with a frozen expression encoder phi (seed Eq. 1; the authors'
    EmoNet features with an MSE). Gradients reach the generated frame only."""
    with torch.no_grad():
        target = encoder(driving)
    return weight * F.mse_loss(encoder(generated), target.detach())
