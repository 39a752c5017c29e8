"""The LivePortrait model: motion extraction, keypoint transfer (human, animal, relative, absolute),
stitching and the warping + SPADE decoding. Transfer follows ``conformance/README.md``."""
from __future__ import annotations

import torch

from ...geometry import bins_to_degrees, euler_to_rotation_matrix
from ...motion import Motion, check_same_family, interpolate
from ..appearance import AppearanceEncoder
from ..base import SourceState, TalkingHeadModel, TransferOptions
from ..blocks import Unavailable
from ..config import ModelConfig
from ..dense_motion import DenseMotionNetwork
from ..generator import Generator
from .config import MLP_NAMES, mlp_config, motion_extractor_config
from .convnextv2 import ConvNeXtV2
from .options import FAMILY, LivePortraitOptions, check_variant
from .stitching import RetargetingNetwork, StitchingNetwork, apply_stitching_delta

NO_STITCHING_FIX = ("load the folder with its stitching_retargeting_module file (.pth or .safetensors) "
                    "to use stitching and retargeting")


# Absolute mode keeps the source expression except where the reference copies the driving one:
# keypoints 1, 2, 6, 11-20 fully, 3-4 y, 5 z, 8 z, 9 y and z (defined for K = 21).
def absolute_expression_mask(num_kp: int, device: torch.device | None = None) -> torch.Tensor:
    """(K, 3) bool mask of the driving expression entries used in absolute mode (all of them if K != 21)."""
    if num_kp != 21:
        return torch.ones(num_kp, 3, dtype=torch.bool, device=device)
    mask = torch.zeros(num_kp, 3, dtype=torch.bool, device=device)
    mask[[1, 2, 6, *range(11, 21)]] = True
    mask[3:5, 1] = True
    mask[5, 2] = True
    mask[8, 2] = True
    mask[9, 1:] = True
    return mask


class LivePortraitModel(TalkingHeadModel):
    """Submodules named by our checkpoint prefixes: appearance, motion, dense_motion, generator
    (third, fourth, decoder), stitching, retarget_eye, retarget_lip.

    The three MLPs are optional; without weights they are :class:`Unavailable` stand-ins that
    explain how to get them when called. ``retarget_eye(x_s, eye_ratios)`` and
    ``retarget_lip(x_s, lip_ratios)`` return keypoint deltas (B, K, 3).
    """

    family = FAMILY
    transfer_options_type = LivePortraitOptions

    def __init__(self, config: ModelConfig, with_discriminator: bool = False):
        super().__init__(config)  # no discriminator was released: with_discriminator has no effect
        self.variant = check_variant(config.extra.get("variant", "human"))
        self.appearance = AppearanceEncoder(config.appearance)
        self.motion = ConvNeXtV2(motion_extractor_config(config))
        self.dense_motion = DenseMotionNetwork(config.dense_motion)
        self.generator = Generator(config.generator)
        stitching, eye, lip = (mlp_config(config, name) for name in MLP_NAMES)
        self.stitching = StitchingNetwork(stitching) if stitching else Unavailable("stitching", NO_STITCHING_FIX)
        self.retarget_eye = RetargetingNetwork(eye) if eye else Unavailable("eye retargeting", NO_STITCHING_FIX)
        self.retarget_lip = RetargetingNetwork(lip) if lip else Unavailable("lip retargeting", NO_STITCHING_FIX)

    @property
    def has_stitching(self) -> bool:
        return isinstance(self.stitching, StitchingNetwork)

    # --- motion extractor --------------------------------------------------------------------------
    def estimate_motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) in 0..1 -> pitch/yaw/roll logits, t, exp, scale and canonical kp (flat)."""
        return self.motion(image)

    def canonical_from_raw(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        return raw["kp"].reshape(raw["kp"].shape[0], -1, 3)

    def canonical_keypoints(self, image: torch.Tensor) -> torch.Tensor:
        return self.canonical_from_raw(self.estimate_motion_raw(image))

    def motion_from_raw(self, raw: dict[str, torch.Tensor]) -> Motion:
        off = self.convention.bin_offset
        return Motion(
            yaw=bins_to_degrees(raw["yaw"], off), pitch=bins_to_degrees(raw["pitch"], off),
            roll=bins_to_degrees(raw["roll"], off), translation=raw["t"],
            expression=raw["exp"].reshape(raw["exp"].shape[0], -1, 3), scale=raw["scale"].reshape(-1),
            family=self.family,
        )

    def prepare_source(self, image: torch.Tensor) -> SourceState:
        """Appearance volume, canonical keypoints, motion and x_s from one motion-extractor pass."""
        raw = self.estimate_motion_raw(image)
        canonical, motion = self.canonical_from_raw(raw), self.motion_from_raw(raw)
        return SourceState(self.encode_appearance(image), canonical, motion, self.motion_keypoints(canonical, motion))

    # --- keypoint maths (row-vector convention, as the reference computes it) ----------------------
    def rotation_rows(self, motion: Motion) -> torch.Tensor:
        """The reference's rotation matrices (N, 3, 3): Mᵀ with M = R_z(roll) R_y(yaw) R_x(pitch)."""
        c = self.convention
        return euler_to_rotation_matrix(motion.yaw, motion.pitch, motion.roll, order=c.rotation_order,
                                        pi=c.pi).transpose(1, 2)

    @staticmethod
    def keypoints_from(canonical: torch.Tensor, rotation: torch.Tensor, expression: torch.Tensor,
                       scale: torch.Tensor | None, translation: torch.Tensor) -> torch.Tensor:
        """``s (x_c R + delta) + (t_x, t_y, 0)`` with row-convention R: canonical (1 or N, K, 3),
        rotation (N, 3, 3), expression (1 or N, K, 3), scale (N,) or None, translation (N, 3) -> (N, K, 3)."""
        kp = canonical @ rotation + expression
        if scale is not None:
            kp = kp * scale.reshape(-1, 1, 1)
        return kp + _zero_z(translation).unsqueeze(1)

    def motion_keypoints(self, canonical: torch.Tensor, motion: Motion) -> torch.Tensor:
        """Canonical keypoints (1 or N, K, 3) moved by each frame's own pose, expression, scale -> (N, K, 3)."""
        return self.keypoints_from(canonical, self.rotation_rows(motion), motion.expression, motion.scale,
                                   motion.translation)

    def relative_motion(self, source: Motion, driving: Motion, reference: Motion) -> dict[str, torch.Tensor]:
        """Relative transfer: R = (R_d R_refᵀ) R_s, delta = delta_s + (delta_d - delta_ref),
        s = s_s (s_d / s_ref), t = t_s + (t_d - t_ref) with t_z = 0. Row-convention rotations (N, 3, 3)."""
        r_s, r_d, r_0 = self.rotation_rows(source), self.rotation_rows(driving), self.rotation_rows(reference)
        scale = source.scale
        if scale is not None and driving.scale is not None and reference.scale is not None:
            scale = source.scale * (driving.scale / reference.scale)
        translation = source.translation + (driving.translation - reference.translation)
        return {
            "rotation": (r_d @ r_0.transpose(1, 2)) @ r_s,
            "expression": source.expression + (driving.expression - reference.expression),
            "scale": _expand(scale, len(driving)),
            "translation": _zero_z(translation),
        }

    def absolute_motion(self, source: Motion, driving: Motion) -> dict[str, torch.Tensor]:
        """Absolute transfer: the driving rotation and translation (t_z = 0), the source scale, and the
        source expression with the reference's subset of driving entries (:func:`absolute_expression_mask`)."""
        n = len(driving)
        mask = absolute_expression_mask(driving.num_kp, driving.expression.device)
        return {
            "rotation": self.rotation_rows(driving),
            "expression": torch.where(mask, driving.expression, source.expression.expand_as(driving.expression)),
            "scale": _expand(source.scale, n),
            "translation": _zero_z(driving.translation),
        }

    def animal_motion(self, source: Motion, driving: Motion) -> dict[str, torch.Tensor]:
        """Animal pipeline: the driving rotation, expression and translation (t_z = 0), the source scale."""
        return {
            "rotation": self.rotation_rows(driving),
            "expression": driving.expression,
            "scale": _expand(source.scale, len(driving)),
            "translation": _zero_z(driving.translation),
        }

    # --- transfer ----------------------------------------------------------------------------------
    def transfer_stages(self, source: SourceState, driving: Motion, options: TransferOptions | None = None,
                        reference: Motion | None = None) -> dict:
        """Every stage of the LivePortrait driving-keypoint computation for N driving frames.

        Returns ``rotation`` (N, 3, 3, row convention), ``expression`` (N, K, 3), ``scale`` (N,),
        ``translation`` (N, 3), ``kp_transferred`` (N, K, 3), ``motion_multiplier`` (float or None),
        ``kp_scaled`` (after the expression-friendly / animal hull step), ``stitch_delta`` (N, 3K+2 or None),
        ``kp_stitched`` and ``kp_driving`` (after the driving multiplier; what the warping module gets).
        The reference driving frame defaults to frame 0; pass it explicitly when streaming in chunks.
        Strengths blend the driving motion towards the reference frame (absolute mode: towards the
        source); at 1 they reproduce the reference implementation. The hull step (expression-friendly,
        or always in the animal pipeline) anchors motion at the reference frame, so absolute mode skips it.
        """
        opts = options or LivePortraitOptions()
        if source.canonical.shape[0] != 1:
            raise ValueError("transfer takes one source; loop over sources for a batch")
        check_same_family(source.motion, driving)
        pipeline = getattr(opts, "pipeline", None) or self.variant
        strengths = dict(pose=opts.pose_strength, expression=opts.expression_strength,
                         translation=opts.translation_strength)
        reference = driving[0] if reference is None else reference
        x_c, x_s = source.canonical, source.keypoints
        multiplier = None
        if opts.mode == "absolute":
            parts = self.absolute_motion(source.motion, interpolate(source.motion, driving, **strengths))
            kp = kp_scaled = self.keypoints_from(x_c, **parts)
        else:
            def transfer(src: Motion, drv: Motion) -> dict[str, torch.Tensor]:
                if pipeline == "animal":
                    return self.animal_motion(src, drv)
                return self.relative_motion(src, drv, reference)

            parts = transfer(source.motion, interpolate(reference, driving, **strengths))
            kp = kp_scaled = self.keypoints_from(x_c, **parts)
            if pipeline == "animal" or getattr(opts, "expression_friendly", True) or opts.adapt_scale:
                kp_reference = self.keypoints_from(x_c, **transfer(source.motion, reference))
                multiplier = self.movement_scale(x_s, kp_reference)
                kp_scaled = (kp - kp_reference) * multiplier + x_s
        delta, kp_stitched = None, kp_scaled
        if getattr(opts, "stitching", True) and self.has_stitching:
            delta = self.stitching(x_s, kp_scaled)
            kp_stitched = apply_stitching_delta(kp_scaled, delta)
        kp_driving = x_s + (kp_stitched - x_s) * getattr(opts, "driving_multiplier", 1.0)
        return {**parts, "kp_transferred": kp, "motion_multiplier": multiplier, "kp_scaled": kp_scaled,
                "stitch_delta": delta, "kp_stitched": kp_stitched, "kp_driving": kp_driving}

    def driven_keypoints(self, source: SourceState, driving: Motion, options: TransferOptions | None = None,
                         reference: Motion | None = None) -> torch.Tensor:
        """Keypoints that drive the source, one set per driving frame: (N, K, 3). See :meth:`transfer_stages`."""
        return self.transfer_stages(source, driving, options, reference)["kp_driving"]

    # --- warping and decoding ----------------------------------------------------------------------
    def decode(self, volume: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        """Warping module + SPADE decoder. volume (1 or B, C, D, h, w), keypoints (1 or B, K, 3) ->
        ``mask`` (B, K+1, D, h, w), ``deformation`` (B, D, h, w, 3), ``occlusion_map`` (B, 1, h, w),
        ``decoder_input`` (B, ic, h, w; the reference warping module's ``out``) and ``prediction``
        (B, 3, 4h * upscale, 4w * upscale) in 0..1."""
        b = max(volume.shape[0], kp_driving.shape[0], kp_source.shape[0])
        volume = volume.expand(b, *volume.shape[1:])
        kp_driving, kp_source = kp_driving.expand(b, -1, -1), kp_source.expand(b, -1, -1)
        dense = self.dense_motion(volume, kp_driving, kp_source)
        decoder_input = self.generator.decoder_input(volume, dense["deformation"], dense.get("occlusion_map"))
        return {**dense, "decoder_input": decoder_input, "prediction": self.generator.decoder(decoder_input)}


def _zero_z(translation: torch.Tensor) -> torch.Tensor:
    return torch.cat([translation[:, :2], torch.zeros_like(translation[:, 2:])], dim=1)


def _expand(scale: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if scale is None else scale.expand(n)
