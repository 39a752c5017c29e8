"""ComfyUI node classes of the AnyTalk pack: thin adapters over ``anytalk_core`` (no model math here).

The node classes arrive with the node-pack issue; until then the pack registers no nodes.
"""
NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
