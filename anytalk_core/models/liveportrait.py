"""The LivePortrait family (KwaiVGI/LivePortrait), human and animal weights: K = 21 implicit keypoints.

One ConvNeXt-V2 motion extractor gives both the canonical keypoints and the motion; the appearance
encoder, dense motion network, ``third``/``fourth`` projection and SPADE decoder are the face-vid2vid
modules (shared code), the decoder upscaling 2x with a PixelShuffle. Optional stitching and eye/lip
retargeting MLPs. Transfer, conventions and file layouts follow ``conformance/README.md``.

Our checkpoint prefixes: ``appearance.`` (appearance_feature_extractor), ``motion.`` (motion_extractor
without ``detector.``), ``dense_motion.`` (warping_module.dense_motion_network), ``generator.third/fourth``
(warping_module), ``generator.decoder.`` (spade_generator), ``stitching.`` / ``retarget_lip.`` /
``retarget_eye.`` (stitching_retargeting_module: retarget_shoulder / retarget_mouth / retarget_eye).
Network sizes not held by :class:`ModelConfig`'s typed fields live in ``config.extra``: ``variant``
("human" / "animal"), ``motion_extractor`` (:class:`ConvNeXtV2Config`) and the three MLP configs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import torch

from .. import checkpoints as ckpt
from ..geometry import bins_to_degrees, euler_to_rotation_matrix
from ..motion import Motion, check_same_family, interpolate
from .appearance import AppearanceEncoder
from .base import SourceState, TalkingHeadModel, TransferOptions
from .config import (
    AppearanceConfig,
    Convention,
    DenseMotionConfig,
    GeneratorConfig,
    KeypointDetectorConfig,
    ModelConfig,
    MotionEstimatorConfig,
)
from .convnextv2 import ConvNeXtV2, ConvNeXtV2Config
from .dense_motion import DenseMotionNetwork
from .generator import Generator
from .registry import (
    FamilySpec,
    ShapeError,
    StateDict,
    build_model,
    count_indexed,
    infer_appearance,
    infer_dense_motion,
    infer_generator,
    register_family,
    shape_of,
)
from .stitching import (
    RETARGET_EYE,
    RETARGET_LIP,
    STITCHING,
    MLPConfig,
    RetargetingNetwork,
    StitchingNetwork,
    Unavailable,
    apply_stitching_delta,
    mlp_config_from_state,
)

FAMILY = "liveportrait"
VARIANTS = ("human", "animal")
MLP_NAMES = ("stitching", "retarget_eye", "retarget_lip")
NO_STITCHING_FIX = ("load the folder with its stitching_retargeting_module file (.pth or .safetensors) "
                    "to use stitching and retargeting")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------

def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"LivePortrait variant must be 'human' or 'animal', got {variant!r}")
    return variant


def make_config(appearance: AppearanceConfig, motion: ConvNeXtV2Config, dense_motion: DenseMotionConfig,
                generator: GeneratorConfig, mlps: dict[str, MLPConfig | None], variant: str = "human",
                image_size: int = 256) -> ModelConfig:
    """A LivePortrait ModelConfig; ``keypoints`` and ``motion`` keep their (unused) face-vid2vid defaults."""
    return ModelConfig(
        family=FAMILY, image_size=image_size, num_kp=motion.num_kp, convention=Convention.liveportrait(),
        appearance=appearance, keypoints=KeypointDetectorConfig(), motion=MotionEstimatorConfig(),
        dense_motion=dense_motion, generator=generator, discriminator=None,
        extra={"variant": check_variant(variant), "motion_extractor": motion.to_dict(),
               **{name: (cfg.to_dict() if cfg is not None else None) for name, cfg in mlps.items()}},
    )


def default_config(variant: str = "human") -> ModelConfig:
    """The released full-size LivePortrait (``src/config/models.yaml``), 256x256 in, 512x512 out."""
    return make_config(
        appearance=AppearanceConfig(image_channels=3, block_expansion=64, max_features=512, num_down_blocks=2,
                                    feature_channels=32, reshape_depth=16, num_resblocks=6),
        motion=ConvNeXtV2Config(image_channels=3, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), num_kp=21,
                                num_bins=66),
        dense_motion=DenseMotionConfig(num_kp=21, feature_channels=32, block_expansion=32, max_features=1024,
                                       num_blocks=5, reshape_depth=16, compress=4, estimate_occlusion_map=True),
        generator=GeneratorConfig(volume_channels=512, ic=256, oc=64, label_nc=256, spade_hidden=128,
                                  num_middle_blocks=6, upscale=2),
        mlps={"stitching": STITCHING, "retarget_eye": RETARGET_EYE, "retarget_lip": RETARGET_LIP},
        variant=variant,
    )


def motion_extractor_config(config: ModelConfig) -> ConvNeXtV2Config:
    data = config.extra.get("motion_extractor")
    return ConvNeXtV2Config(num_kp=config.num_kp) if data is None else ConvNeXtV2Config.from_dict(data)


def mlp_config(config: ModelConfig, name: str) -> MLPConfig | None:
    data = config.extra.get(name)
    return None if data is None else MLPConfig.from_dict(data)


def infer_convnext(state: StateDict, prefix: str = "motion.") -> ConvNeXtV2Config:
    p = re.escape(prefix)
    n = count_indexed(state, rf"{p}downsample_layers\.(\d+)\.")
    stem = shape_of(state, f"{prefix}downsample_layers.0.0.weight")
    dims = [stem[0]] + [shape_of(state, f"{prefix}downsample_layers.{i}.1.weight")[0] for i in range(1, n)]
    depths = [count_indexed(state, rf"{p}stages\.{i}\.(\d+)\.dwconv\.weight$") for i in range(n)]
    kp3 = shape_of(state, f"{prefix}fc_kp.weight")[0]
    if kp3 % 3:
        raise ShapeError(f"{prefix}fc_kp.weight gives {kp3} outputs, not 3 per keypoint")
    return ConvNeXtV2Config(image_channels=stem[1], dims=tuple(dims), depths=tuple(depths), num_kp=kp3 // 3,
                            num_bins=shape_of(state, f"{prefix}fc_pitch.weight")[0])


def infer_liveportrait(state: StateDict, variant: str = "human") -> ModelConfig:
    """Rebuild a LivePortrait configuration (our prefixes) from tensor shapes; stitching MLPs optional."""
    appearance = infer_appearance(state, "appearance.")
    volume = shape_of(state, "appearance.second.weight")[0]
    if volume >= appearance.max_features:  # LivePortrait's `second` outputs exactly max_features channels
        appearance = replace(appearance, max_features=volume)
    motion = infer_convnext(state)
    dense = infer_dense_motion(state, "dense_motion.", default_depth=appearance.reshape_depth)
    generator = infer_generator(state, "generator.")
    mlps = {}
    for name in MLP_NAMES:
        try:
            mlps[name] = mlp_config_from_state(state, f"{name}.")
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
    k = motion.num_kp
    hourglass_in = shape_of(state, "dense_motion.hourglass.encoder.down_blocks.0.conv.weight")[1]
    checks = [
        (shape_of(state, "motion.fc_exp.weight")[0] == 3 * k,
         f"motion.fc_exp.weight gives {shape_of(state, 'motion.fc_exp.weight')[0]} expression values for {k} keypoints"),
        (dense.num_kp == k, f"dense_motion.mask.weight is for {dense.num_kp} keypoints, the motion extractor has {k}"),
        (hourglass_in == (k + 1) * (dense.compress + 1),
         f"dense_motion.hourglass.encoder.down_blocks.0.conv.weight reads {hourglass_in} channels, but "
         f"dense_motion.compress.weight gives {dense.compress} per keypoint: {(k + 1) * (dense.compress + 1)} "
         f"for {k} keypoints"),
        (dense.feature_channels == appearance.feature_channels,
         f"dense_motion.compress.weight reads {dense.feature_channels} channels, the appearance volume has "
         f"{appearance.feature_channels} (appearance.resblocks_3d.3dr0.conv1.weight)"),
        (dense.reshape_depth == appearance.reshape_depth,
         f"dense_motion.occlusion.weight is for depth {dense.reshape_depth}, the appearance volume has depth "
         f"{appearance.reshape_depth}"),
        (generator.volume_channels == volume,
         f"generator.third.conv.weight reads {generator.volume_channels} channels, the appearance volume has "
         f"{volume} (appearance.second.weight)"),
    ]
    sizes = {"stitching": (6 * k, 3 * k + 2), "retarget_eye": (None, 3 * k), "retarget_lip": (None, 3 * k)}
    for name, cfg in mlps.items():
        if cfg is None:
            continue
        fin, fout = sizes[name]
        checks.append((cfg.output_size == fout and (cfg.input_size == fin if fin else cfg.input_size > 3 * k),
                       f"{name}.mlp maps {cfg.input_size} -> {cfg.output_size} features, which does not fit "
                       f"{k} keypoints"))
    for ok, message in checks:
        if not ok:
            raise ShapeError(message)
    return make_config(appearance, motion, dense, generator, mlps, variant=variant)


# ------------------------------------------------------------------------------------------------
# Transfer options
# ------------------------------------------------------------------------------------------------

@dataclass
class LivePortraitOptions(TransferOptions):
    """LivePortrait pipeline switches on top of :class:`TransferOptions` (defaults: the CLI's).

    pipeline: "human" or "animal" transfer; None follows the model's variant.
    expression_friendly: scale relative motion by the keypoint hulls of source and reference frame
    (``driving_option="expression-friendly"``); ``adapt_scale=True`` also turns it on.
    stitching: apply the stitching network when the checkpoint has one.
    driving_multiplier: x_d <- x_s + (x_d - x_s) * multiplier, after stitching.
    """

    pipeline: str | None = None
    expression_friendly: bool = True
    stitching: bool = True
    driving_multiplier: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pipeline is not None:
            check_variant(self.pipeline)
        m = self.driving_multiplier
        if not isinstance(m, (int, float)) or m != m or abs(m) == float("inf"):
            raise ValueError(f"driving_multiplier must be a finite number, got {m!r}")


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


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Family registration
# ------------------------------------------------------------------------------------------------

def _build(config: ModelConfig, with_discriminator: bool = False) -> LivePortraitModel:
    return LivePortraitModel(config, with_discriminator=with_discriminator)


def _spec(name: str, display: str, variant: str) -> FamilySpec:
    return FamilySpec(name, display, _build, lambda: default_config(variant),
                      lambda state: infer_liveportrait(state, variant))


# "liveportrait" is the family; the two variant names let a user pick human or animal weights by family
# argument (the weights of both have identical keys) and build the same model with config.extra["variant"].
register_family(_spec(FAMILY, "LivePortrait", "human"))
register_family(_spec("liveportrait_human", "LivePortrait (human)", "human"))
register_family(_spec("liveportrait_animal", "LivePortrait (animal)", "animal"))
FAMILY_NAMES = (FAMILY, "liveportrait_human", "liveportrait_animal")


# ------------------------------------------------------------------------------------------------
# Checkpoint reader: released folders (.pth), the safetensors re-packaging, flattened single files
# ------------------------------------------------------------------------------------------------

MODULE_FILES = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")
STITCHING_FILE = "stitching_retargeting_module"
STITCHING_GROUPS = {"retarget_shoulder": "stitching", "retarget_mouth": "retarget_lip", "retarget_eye": "retarget_eye"}
SUFFIXES = (".safetensors", ".pth")
# (LivePortrait module, its key prefix, our prefix); both lookups take the first matching row.
KEY_MAP = (
    ("appearance_feature_extractor", "", "appearance."),
    ("motion_extractor", "detector.", "motion."),
    ("motion_extractor", "", "motion."),
    ("warping_module", "dense_motion_network.", "dense_motion."),
    ("spade_generator", "", "generator.decoder."),
    ("warping_module", "", "generator."),
    ("retarget_shoulder", "", "stitching."),
    ("retarget_eye", "", "retarget_eye."),
    ("retarget_mouth", "", "retarget_lip."),
)


@dataclass
class _Source:
    """One LivePortrait module's state dict and where it was read from (for error messages)."""

    module: str  # appearance_feature_extractor, ..., retarget_shoulder / retarget_mouth / retarget_eye
    label: str  # the file (and group) it came from
    state: StateDict


def to_our_key(module: str, key: str) -> str:
    """A released LivePortrait key of one module -> our checkpoint key."""
    return next(ours + key[len(theirs):] for mod, theirs, ours in KEY_MAP if mod == module and key.startswith(theirs))


def from_our_key(key: str) -> tuple[str, str]:
    """Our checkpoint key -> (LivePortrait module, released key)."""
    for module, theirs, ours in KEY_MAP:
        if key.startswith(ours):
            return module, theirs + key[len(ours):]
    return "?", key


def _strip_ddp(state: dict) -> dict:
    """The reference loader removes the substring ``module.`` wherever it occurs in a key."""
    return {k.replace("module.", ""): v for k, v in state.items()}


def _tensor_dict(path: str, obj: object, what: str) -> StateDict:
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ckpt.CheckpointError(f"{path}: {what} is not a state dict of tensors")
    return dict(obj)


def _split_stitching(path: str, raw: dict) -> dict[str, StateDict]:
    """A stitching file (nested .pth dict, or flat ``<group>_module.<key>`` / ``<group>.<key>``) -> groups."""
    if raw and all(isinstance(v, dict) for v in raw.values()):
        groups = {g: _tensor_dict(path, v, f"group {g!r}") for g, v in raw.items()}
    else:
        groups: dict[str, dict] = {}
        rx = re.compile(rf"^({'|'.join(STITCHING_GROUPS)})(?:_module)?\.(.+)$")
        for key, value in raw.items():
            m = rx.match(key) if isinstance(key, str) else None
            if m is None:
                raise ckpt.CheckpointError(
                    f"{path}: key {key!r} is not a stitching/retargeting weight (expected keys "
                    "retarget_shoulder_module.*, retarget_mouth_module.*, retarget_eye_module.*)")
            groups.setdefault(m.group(1), {})[m.group(2)] = value
        groups = {g: _tensor_dict(path, v, f"group {g!r}") for g, v in groups.items()}
    unknown = sorted(set(groups) - set(STITCHING_GROUPS))
    if unknown or not groups:
        raise ckpt.CheckpointError(f"{path}: not a LivePortrait stitching_retargeting_module (groups {sorted(groups)}; "
                                   f"expected {', '.join(STITCHING_GROUPS)})")
    return {g: _strip_ddp(v) for g, v in groups.items()}


def _find(folder: str, name: str, prefer: str | None) -> str | None:
    order = (prefer, *SUFFIXES) if prefer else SUFFIXES
    for suffix in order:
        candidate = os.path.join(folder, name + suffix)
        if os.path.isfile(candidate):
            return candidate
    return None


def _base_folder(folder: str) -> str:
    """The folder holding the four module files: the given one, a ``base_models*`` subfolder, or, from
    ``retargeting_models``, its sibling ``base_models*`` (the released directory tree)."""
    def has_modules(d: str) -> bool:
        return any(_find(d, m, None) for m in MODULE_FILES)

    if has_modules(folder):
        return folder
    parents = [folder]
    if os.path.basename(os.path.normpath(folder)) == "retargeting_models":
        parents.append(os.path.dirname(os.path.normpath(folder)))
    for parent in parents:
        subs = sorted(d for d in os.listdir(parent) if d.startswith("base_models")
                      and os.path.isdir(os.path.join(parent, d)))
        for sub in subs:
            if has_modules(os.path.join(parent, sub)):
                return os.path.join(parent, sub)
    return folder


def _stitching_file(base: str, folder: str, prefer: str | None) -> str | None:
    candidates = [base, folder, os.path.join(os.path.dirname(os.path.normpath(base)), "retargeting_models"),
                  os.path.join(folder, "retargeting_models")]
    for d in candidates:
        if os.path.isdir(d):
            found = _find(d, STITCHING_FILE, prefer)
            if found:
                return found
    return None


def _read_folder(path: str, folder: str, prefer: str | None, required: bool) -> tuple[list[_Source], str, list[str]] | None:
    base = _base_folder(folder)
    files = {m: _find(base, m, prefer) for m in MODULE_FILES}
    if not any(files.values()):
        if not required:
            return None
        raise ckpt.CheckpointError(
            f"{path}: no LivePortrait module files here (expected {', '.join(m + '.pth|.safetensors' for m in MODULE_FILES)})")
    missing = [m for m, f in files.items() if f is None]
    if missing:
        raise ckpt.CheckpointError(
            f"{base}: LivePortrait folder without {', '.join(missing)} (.pth or .safetensors); it needs "
            f"{', '.join(MODULE_FILES)}, and optionally {STITCHING_FILE}")
    sources = [_Source(m, f, _tensor_dict(f, ckpt.read_file(f)[0], "the file")) for m, f in files.items()]
    notes = [f"LivePortrait modules from {base}: " + ", ".join(os.path.basename(f) for f in files.values())]
    stitching = _stitching_file(base, folder, prefer)
    if stitching:
        raw = ckpt.read_file(stitching)[0]
        prefixed = any(isinstance(v, dict) and any(str(k).startswith("module.") for k in v) for v in raw.values())
        sources += [_Source(g, f"{stitching} [{g}]", s) for g, s in _split_stitching(stitching, raw).items()]
        notes.append(f"stitching/retargeting from {os.path.basename(stitching)}"
                     + (" (DDP 'module.' prefixes removed)" if prefixed else ""))
    else:
        notes.append(f"no {STITCHING_FILE} file: stitching and eye/lip retargeting are off")
    return sources, base, notes


def _read_flat(path: str, raw: dict) -> list[_Source] | None:
    """A single file holding all modules: ``<module>.<key>`` (or a dict of module state dicts)."""
    if all(isinstance(raw.get(m), dict) for m in MODULE_FILES):
        modules = {k: v for k, v in raw.items()}
    elif any(isinstance(k, str) and k.split(".", 1)[0] in MODULE_FILES for k in raw):
        modules: dict[str, dict] = {}
        for key, value in raw.items():
            head, _, rest = key.partition(".")
            if head in MODULE_FILES or head == STITCHING_FILE:
                modules.setdefault(head, {})[rest] = value
            else:
                modules.setdefault(STITCHING_FILE, {})[key] = value
    else:
        return None
    missing = [m for m in MODULE_FILES if m not in modules]
    if missing:
        raise ckpt.CheckpointError(f"{path}: flattened LivePortrait checkpoint without the {', '.join(missing)} weights")
    unknown = sorted(set(modules) - {*MODULE_FILES, STITCHING_FILE})
    if unknown:
        raise ckpt.CheckpointError(f"{path}: unexpected groups {unknown} in a flattened LivePortrait checkpoint")
    sources = [_Source(m, f"{path} [{m}]", _tensor_dict(path, modules[m], m)) for m in MODULE_FILES]
    if STITCHING_FILE in modules:
        sources += [_Source(g, f"{path} [{g}]", s)
                    for g, s in _split_stitching(path, modules[STITCHING_FILE]).items()]
    return sources


def _choose_variant(family: str, names: list[str]) -> tuple[str, str]:
    if family in ("liveportrait_human", "liveportrait_animal"):
        variant = family.split("_")[1]
        return variant, f"LivePortrait {variant} variant (requested)"
    hit = next((n for n in names if "animal" in n.lower()), None)
    if hit:
        return "animal", (f"LivePortrait animal variant: the name {hit!r} contains 'animal' "
                          "(load with family 'liveportrait_human' to override)")
    return "human", ("LivePortrait human variant by default (the name has no 'animal'; "
                     "load with family 'liveportrait_animal' for animal weights)")


def _name_files(message: str, labels: dict[str, str]) -> str:
    """Rewrite our keys in a message as ``[file: released key]``."""
    def describe(match: re.Match) -> str:
        module, theirs = from_our_key(match.group(1))
        return f"[{labels.get(module, module)}: {theirs}]"

    ours = "|".join(re.escape(p) for p in sorted({row[2] for row in KEY_MAP}))
    return re.sub(rf"'?\b((?:{ours})[\w.]+)'?", describe, message)


def _variant_names(path: str, base: str) -> list[str]:
    """The names that may say 'animal': the path given, the weights folder, and above a generic subfolder."""
    names = [os.path.basename(os.path.normpath(path)), os.path.basename(os.path.normpath(base))]
    if re.match(r"(base_models|retargeting_models)", names[-1]):
        names.append(os.path.basename(os.path.dirname(os.path.normpath(base))))
    return names


def _check(path: str, sources: list[_Source], state: StateDict, config: ModelConfig) -> None:
    """Strict key and shape check per module file, so that an error names the file at fault."""
    # A meta-device model allocates nothing but builds slowly; small models are cheaper built for real.
    device = "meta" if sum(v.numel() for v in state.values()) > 10_000_000 else "cpu"
    with torch.device(device):
        expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    labels = {s.module: s.label for s in sources}
    problems: dict[str, list[str]] = {}
    for key, shape in expected.items():
        module, theirs = from_our_key(key)
        if key not in state:
            problems.setdefault(labels.get(module, module), []).append(f"missing {theirs}")
        elif tuple(state[key].shape) != shape:
            problems.setdefault(labels.get(module, path), []).append(
                f"{theirs} has shape {tuple(state[key].shape)}, expected {shape}")
    for key in state:
        if key not in expected:
            module, theirs = from_our_key(key)
            problems.setdefault(labels.get(module, path), []).append(f"unexpected {theirs}")
    if problems:
        label, items = next(iter(problems.items()))
        shown = "; ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
        others = f" (and problems in {len(problems) - 1} other file(s))" if len(problems) > 1 else ""
        raise ckpt.CheckpointError(f"{label}: does not fit the LivePortrait network the other tensors describe "
                                   f"({shown}){others}; is it a LivePortrait file of this model?")


def read_liveportrait(path: str, family: str) -> ckpt.LoadedWeights | None:
    """Reader for LivePortrait folders, one of their module files, or a flattened single file."""
    if family not in ("auto", *FAMILY_NAMES):
        return None
    required = family != "auto"
    stem, suffix = os.path.splitext(os.path.basename(os.path.normpath(path)))
    if os.path.isdir(path):
        found = _read_folder(path, path, None, required)
    elif stem in (*MODULE_FILES, STITCHING_FILE) and suffix in SUFFIXES:
        found = _read_folder(path, os.path.dirname(os.path.abspath(path)), suffix, True)
    else:
        raw, meta = ckpt.read_file(path)
        sources = None if meta.get("format") == ckpt.FORMAT_NAME else _read_flat(path, raw)
        if sources is None:
            if required:
                raise ckpt.CheckpointError(
                    f"{path}: not a LivePortrait checkpoint (expected a folder with {', '.join(MODULE_FILES)}, "
                    "one of those files, or a single file with keys prefixed by those module names)")
            return None
        found = (sources, os.path.dirname(os.path.abspath(path)),
                 [f"LivePortrait modules from the single file {os.path.basename(path)}"])
    if found is None:
        return None
    sources, base, notes = found
    variant, note = _choose_variant(family, _variant_names(path, base))
    state: StateDict = {}
    for source in sources:
        for key, value in source.state.items():
            state[to_our_key(source.module, key)] = value
    try:
        config = infer_liveportrait(state, variant)
    except ShapeError as exc:
        labels = {s.module: s.label for s in sources}
        raise ckpt.CheckpointError(
            f"{path}: not a complete LivePortrait checkpoint ({_name_files(str(exc), labels)})") from None
    _check(path, sources, state, config)
    return ckpt.LoadedWeights(path, f"liveportrait_{variant}", state, config=config, notes=[note, *notes])


ckpt.register_reader(read_liveportrait)
