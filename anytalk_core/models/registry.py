"""The model families the loader knows: one table, each family's builder, configs and released-file reader.

A family package (``face_vid2vid``, ``liveportrait``) holds its networks, options, config inference and
reader; this module lists them. Nothing registers itself on import.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ..weights import LoadedWeights, StateDict
from . import face_vid2vid, liveportrait
from .base import TalkingHeadModel
from .config import ModelConfig

Reader = Callable[[str, str], LoadedWeights | None]  # (path, requested family) -> weights in our layout, or None


@dataclass(frozen=True)
class FamilySpec:
    """One model family name: builder, default config and shape-based config inference."""

    name: str
    display_name: str
    build: Callable[..., TalkingHeadModel]  # (config, with_discriminator=False) -> model
    default_config: Callable[[], ModelConfig]
    infer_config: Callable[[StateDict], ModelConfig]


def _liveportrait(name: str, display_name: str, variant: str) -> FamilySpec:
    return FamilySpec(name, display_name, liveportrait.LivePortraitModel,
                      partial(liveportrait.default_config, variant),
                      partial(liveportrait.infer_liveportrait, variant=variant))


# "liveportrait" is the family; its variant names pick human or animal weights (identical keys).
FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("face_vid2vid", "face-vid2vid (AnyTalk)", face_vid2vid.FaceVid2VidModel,
               face_vid2vid.default_config, face_vid2vid.infer_face_vid2vid),
    _liveportrait("liveportrait", "LivePortrait", "human"),
    _liveportrait("liveportrait_human", "LivePortrait (human)", "human"),
    _liveportrait("liveportrait_animal", "LivePortrait (animal)", "animal"),
)}

#: Readers of released (third-party) layouts, tried in order after our own format.
READERS: tuple[Reader, ...] = (face_vid2vid.read_face_vid2vid, liveportrait.read_liveportrait)


def get_family(name: str) -> FamilySpec:
    """The family called ``name``; a ValueError lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def build_model(config: ModelConfig, with_discriminator: bool = False) -> TalkingHeadModel:
    """A freshly initialised model of ``config.family``."""
    return get_family(config.family).build(config, with_discriminator=with_discriminator)
