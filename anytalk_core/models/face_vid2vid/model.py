"""The face-vid2vid model (AnyTalk's network): K = 15 keypoints, separate detector and motion estimator."""
from __future__ import annotations

import torch

from ...geometry import bins_to_degrees
from ...motion import Motion
from ..appearance import AppearanceEncoder
from ..base import TalkingHeadModel
from ..config import ModelConfig
from ..dense_motion import DenseMotionNetwork
from ..discriminator import MultiScaleDiscriminator
from ..generator import Generator
from ..keypoint_detector import KeypointDetector
from ..motion_estimator import MotionEstimator


class FaceVid2VidModel(TalkingHeadModel):
    """Submodules are named by our checkpoint prefixes: appearance, keypoints, motion, dense_motion,
    generator and (for training) discriminator."""

    family = "face_vid2vid"
    source_only_modules = ("appearance", "keypoints")  # driving frames use the source's canonical keypoints

    def __init__(self, config: ModelConfig, with_discriminator: bool = False):
        super().__init__(config)
        self.appearance = AppearanceEncoder(config.appearance)
        self.keypoints = KeypointDetector(config.keypoints)
        self.motion = MotionEstimator(config.motion)
        self.dense_motion = DenseMotionNetwork(config.dense_motion)
        self.generator = Generator(config.generator)
        if with_discriminator and config.discriminator is not None:
            self.discriminator = MultiScaleDiscriminator(config.discriminator)

    def canonical_keypoints(self, image: torch.Tensor) -> torch.Tensor:
        return self.keypoints(image)

    def estimate_motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.motion(image)

    def motion_from_raw(self, raw: dict[str, torch.Tensor]) -> Motion:
        off = self.convention.bin_offset
        return Motion(
            yaw=bins_to_degrees(raw["yaw"], off), pitch=bins_to_degrees(raw["pitch"], off),
            roll=bins_to_degrees(raw["roll"], off), translation=raw["t"],
            expression=raw["exp"].view(raw["exp"].shape[0], -1, 3), family=self.family,
        )

    def decode(self, volume: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        dense = self.dense_motion(volume, kp_driving, kp_source)
        occlusion = dense.get("occlusion_map")
        decoder_input = self.generator.decoder_input(volume, dense["deformation"], occlusion)
        return {**dense, "decoder_input": decoder_input, "prediction": self.generator.decoder(decoder_input)}
