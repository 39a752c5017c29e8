"""AnyTalk core library: models, geometry, motion, checkpoints, media I/O and the inference engine.

Imports itself only relatively, so it works both installed as ``anytalk_core`` and as a sub-package of
the ComfyUI plugin folder. It never imports ComfyUI, ``nodes`` or ``training``.
"""
__version__ = "0.1.0"
