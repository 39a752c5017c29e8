"""Networks of the supported model families: shared blocks here, one package per family, the table in ``registry``."""
from .base import SourceState, TalkingHeadModel, TransferOptions
from .config import ModelConfig

__all__ = ["ModelConfig", "SourceState", "TalkingHeadModel", "TransferOptions"]
