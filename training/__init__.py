"""AnyTalk trainer and evaluation suite, installed under the import name ``anytalk_training``.

Trainer modules (flat layout): ``cli`` (``anytalk-train``), ``config`` (TOML configs and overrides),
``trainer`` (setup, loop, DDP/AMP, checkpoints, export), ``losses`` (the seed's losses), ``pretrained``
(VGG-19 / Hopenet / EmoNet from user files), ``expression`` (the expression encoder phi and its synthetic
stand-in), ``data`` (video folders, manifests, synthetic renders), ``synthetic_source`` (the renderer
adapter), ``checkpointing`` (training states), ``visualize`` (sample grids). See ``README.md`` here.
"""
