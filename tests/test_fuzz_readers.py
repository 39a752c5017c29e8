"""Property-based fuzzing of our safetensors and motion readers (issue 21): any bytes give a loaded object or
our one error type (FileFormatError), never another exception."""
from __future__ import annotations

import json
import os
import struct
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from anytalk_core.motion import MOTION_FORMAT, Motion
from anytalk_core.safetensors_io import FileFormatError, read_safetensors
from anytalk_core.weights import read_file

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_motion_bytes() -> bytes:
    n, k = 3, 4
    tensors = {"yaw": torch.arange(n, dtype=torch.float32), "pitch": torch.zeros(n), "roll": torch.zeros(n),
               "translation": torch.zeros(n, 3), "expression": torch.ones(n, k, 3), "scale": torch.ones(n)}
    return save(tensors, metadata={"format": MOTION_FORMAT, "family": "face_vid2vid", "fps": "25.0"})


VALID = _valid_motion_bytes()


def _read_all(data: bytes) -> None:
    """Every reader on ``data``: each returns or raises FileFormatError (anything else fails the test)."""
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        for reader in (read_safetensors, Motion.load, read_file):
            try:
                reader(path)
            except FileFormatError:
                pass
    finally:
        os.unlink(path)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes(data):
    _read_all(data)


@FUZZ
@given(st.binary(min_size=1, max_size=400))
def test_any_header_with_a_valid_length_prefix(header):
    _read_all(struct.pack("<Q", len(header)) + header + b"\0" * 64)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
ENTRY = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "F64", "I64", "BOOL", "X"]) | JSON,
                               "shape": st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4) | JSON,
                               "data_offsets": st.lists(st.integers(min_value=-2, max_value=2**40), max_size=3) | JSON})


@FUZZ
@given(st.dictionaries(st.sampled_from(["yaw", "pitch", "roll", "translation", "expression", "scale", "__class__",
                                        "__metadata__"]), ENTRY | JSON, max_size=6),
       st.integers(min_value=0, max_value=200))
def test_structured_headers(header, data_len):
    text = json.dumps(header).encode()
    _read_all(struct.pack("<Q", len(text)) + text + b"\x7f" * data_len)


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(0, 255)), max_size=8),
       st.integers(min_value=0, max_value=len(VALID)))
def test_mutated_valid_motion_files(flips, cut):
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    _read_all(bytes(data[:cut] if cut else data))


def test_the_valid_file_itself_loads():
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    with os.fdopen(fd, "wb") as f:
        f.write(VALID)
    try:
        motion = Motion.load(path)
        assert len(motion) == 3 and motion.fps == 25.0 and motion.num_kp == 4
    finally:
        os.unlink(path)
