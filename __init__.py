"""ComfyUI entry point of the AnyTalk node pack (imported by ComfyUI from this folder's path).

Only relative imports: ComfyUI has its own top-level ``nodes`` module, which ours must never shadow.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
