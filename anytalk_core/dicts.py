"""Small helpers on nested dicts."""
from __future__ import annotations

__all__ = ["deep_update"]


def deep_update(base: dict, update: dict) -> None:
    """Merge ``update`` into ``base`` in place: nested dicts key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
