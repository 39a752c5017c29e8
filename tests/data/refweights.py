"""Deterministic stand-in weights for the metric networks' reference vectors (tests/data/README.md).

Each tensor is drawn from numpy's legacy ``RandomState`` (a stream numpy keeps stable across versions),
seeded by a CRC32 of ``tag:key``, so a value depends only on the layout key and shape: the reference code
(the published packages, run by ``make_reference_vectors.py``) and our loaders get identical tensors
without shipping the multi-megabyte files. These are NOT real weights; they only pin the forward pass.
"""
from __future__ import annotations

import re
import zlib

import numpy as np

_HEAD = re.compile(r"^lins?\.?(\d)\.model\.1\.weight$")


def canonical_key(key: str) -> str:
    """Layout aliases -> one name: lpips ``net.sliceK.N.*`` -> ``features.N.*``; ``lins.K`` -> ``linK``."""
    parts = key.split(".")
    if parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
        return f"features.{parts[2]}.{parts[3]}"
    if parts[0] == "lins" and parts[2:] == ["model", "1", "weight"]:
        return f"lin{parts[1]}.model.1.weight"
    return key


def tensor_for(tag: str, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The stand-in value of ``key`` (float32), or None for integer counters (``num_batches_tracked``)."""
    key = canonical_key(key)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return None
    rng = np.random.RandomState(zlib.crc32(f"{tag}:{key}".encode()))
    shape = tuple(int(s) for s in shape)
    if _HEAD.match(key):  # LPIPS heads are non-negative weights
        value = 0.1 * np.abs(rng.standard_normal(shape))
    elif leaf == "running_var":
        value = 0.5 + rng.random_sample(shape)
    elif leaf == "running_mean":
        value = 0.1 * rng.standard_normal(shape)
    elif leaf == "bias":
        value = 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1:  # BatchNorm scale, PReLU slope
        value = 1.0 + 0.1 * rng.standard_normal(shape)
    else:  # conv / linear: He-normal, so activations keep their scale through deep stacks
        value = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
    return value.astype(np.float32)


def state_for(tag: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Stand-in tensors for every float key of a layout ({key: shape})."""
    out = {}
    for key, shape in shapes.items():
        value = tensor_for(tag, key, shape)
        if value is not None:
            out[key] = value
    return out
