"""LivePortrait's transfer options and variants (human / animal)."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import TransferOptions

FAMILY = "liveportrait"
VARIANTS = ("human", "animal")
# "liveportrait" is the family; the two variant names let a user pick human or animal weights by family
# argument (the weights of both have identical keys) and build the same model with config.extra["variant"].
FAMILY_NAMES = (FAMILY, "liveportrait_human", "liveportrait_animal")


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"LivePortrait variant must be 'human' or 'animal', got {variant!r}")
    return variant


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
