"""The LivePortrait family (KwaiVGI/LivePortrait), human and animal weights: K = 21 implicit keypoints.

One ConvNeXt-V2 motion extractor gives both the canonical keypoints and the motion; the appearance
encoder, dense motion network, ``third``/``fourth`` projection and SPADE decoder are the face-vid2vid
modules (shared code), the decoder upscaling 2x with a PixelShuffle. Optional stitching and eye/lip
retargeting MLPs. Modules: ``options`` (variants, :class:`LivePortraitOptions`), ``config`` (default and
inferred configs), ``model`` (:class:`LivePortraitModel`), ``reader`` (released folders and files), and the
family's own networks ``convnextv2`` and ``stitching``.
"""
from .config import default_config, infer_liveportrait, make_config
from .model import LivePortraitModel, absolute_expression_mask
from .options import FAMILY, FAMILY_NAMES, VARIANTS, LivePortraitOptions
from .reader import MODULE_FILES, STITCHING_FILE, read_liveportrait

__all__ = ["FAMILY", "FAMILY_NAMES", "MODULE_FILES", "STITCHING_FILE", "VARIANTS", "LivePortraitModel",
           "LivePortraitOptions", "absolute_expression_mask", "default_config", "infer_liveportrait", "make_config",
           "read_liveportrait"]
