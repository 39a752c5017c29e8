"""Networks of the supported model families; one network per file, configs in ``config.py``."""
from .base import SourceState, TalkingHeadModel, TransferOptions
from .config import ModelConfig
from .registry import FAMILIES, build_model, get_family

__all__ = ["FAMILIES", "ModelConfig", "SourceState", "TalkingHeadModel", "TransferOptions", "build_model", "get_family"]
