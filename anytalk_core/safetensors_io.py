"""The one safetensors reader: the header is validated in full before a single tensor is allocated.

A safetensors file is ``u64 header length | JSON header | data``. The header maps tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` and may hold ``"__metadata__"``, a dict of str -> str.
Every file our code reads (checkpoints, motion files, evaluation weights) goes through :func:`read_safetensors`;
anything malformed ends in a :class:`FileFormatError` whose one-line message names the file and the fault:

- the header is at most :data:`MAX_HEADER_BYTES` and lies inside the file; it is JSON nested at most
  three levels deep (checked on the bytes, before parsing, so a deeply nested header cannot recurse);
  no key appears twice;
- ``__metadata__`` is absent, null, or a dict of str -> str;
- each tensor has exactly ``dtype`` (a known name), ``shape`` (non-negative integers) and ``data_offsets``
  (two integers, inside the data section, not overlapping another tensor) and its byte size equals
  ``prod(shape) * itemsize`` (Python integers: no overflow).

So the memory allocated for tensors never exceeds the file's own size.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .io_utils import atomic_output

__all__ = ["FileFormatError", "MAX_HEADER_BYTES", "SAFETENSORS_DTYPES", "TensorEntry", "read_header",
           "read_safetensors", "read_tagged", "read_tagged_meta", "write_tagged", "meta_json"]

#: Largest JSON header accepted (16 MiB: thousands of tensors and their metadata fit in well under 1 MiB).
MAX_HEADER_BYTES = 16 * 1024 * 1024
_MAX_DEPTH = 3  # {"name": {"shape": [..]}}

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_MAX_DIMS = 64


class FileFormatError(ValueError):
    """A file is not what it claims to be (corrupt, truncated, hostile); the message names the file and the fault.

    ``reason`` is the fault alone (without the file's name), for callers that word their own message.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason if reason is not None else message


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a validated header: byte range relative to the data section."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: str | os.PathLike, what: str = "safetensors file") -> tuple[list[TensorEntry], dict[str, str], int]:
    """(tensors in file order, metadata, data start) of a validated header; reads the header only."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            return _parse_header(f, size)
    except _Bad as exc:
        raise FileFormatError(f"{path}: not a readable {what} ({exc})", reason=str(exc)) from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read the {what} ({exc.strerror or exc})",
                              reason=str(exc.strerror or exc)) from None


def read_safetensors(path: str | os.PathLike, what: str = "safetensors file",
                     skip: Callable[[str], bool] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata, read tensor by tensor into fresh memory after the header is validated.

    Plain reads instead of a memory map: the file's pages never count towards the process's memory, so the
    tensors occupy the file's size once. Entries whose name ``skip`` accepts are not read: they come back
    as meta tensors of their shape and dtype (validated like the rest).
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            entries, meta, data_start = _parse_header(f, size)
            state: dict[str, torch.Tensor] = {}
            for entry in entries:
                if skip is not None and skip(entry.name):
                    state[entry.name] = torch.empty(entry.shape, dtype=entry.dtype, device="meta")
                    continue
                tensor = torch.empty(entry.shape, dtype=entry.dtype)
                nbytes = entry.end - entry.begin
                f.seek(data_start + entry.begin)
                if nbytes and f.readinto(tensor.view(-1).view(torch.uint8).numpy()) != nbytes:
                    raise _Bad(f"tensor {_name(entry.name)} is cut short")
                state[entry.name] = tensor
        return state, meta
    except _Bad as exc:
        raise FileFormatError(f"{path}: not a readable {what} ({exc})", reason=str(exc)) from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read the {what} ({exc.strerror or exc})",
                              reason=str(exc.strerror or exc)) from None


class _Bad(Exception):
    """Internal: what is wrong with the file (wrapped into FileFormatError with the path)."""


def _parse_header(f, size: int) -> tuple[list[TensorEntry], dict[str, str], int]:
    head = f.read(8)
    if len(head) < 8:
        raise _Bad(f"{size} bytes: too short for a header")
    header_len = int.from_bytes(head, "little")
    if header_len < 2 or header_len > size - 8:
        raise _Bad(f"header length {header_len} does not fit the file of {size} bytes (truncated or corrupt)")
    if header_len > MAX_HEADER_BYTES:
        raise _Bad(f"header of {header_len} bytes is larger than the {MAX_HEADER_BYTES} bytes accepted")
    raw = f.read(header_len)
    if len(raw) != header_len:
        raise _Bad("header is cut short")
    header = _parse_json(raw)
    data_start = 8 + header_len
    meta = _metadata(header.pop("__metadata__", None))
    entries = [_entry(name, value, size - data_start) for name, value in header.items()]
    entries.sort(key=lambda e: (e.begin, e.end))
    previous_end, previous = 0, None
    for entry in entries:
        if entry.begin < previous_end and entry.end > entry.begin:
            raise _Bad(f"tensors {_name(previous)} and {_name(entry.name)} overlap")
        if entry.end > entry.begin:
            previous_end, previous = entry.end, entry.name
    return entries, meta, data_start


def _parse_json(raw: bytes) -> dict:
    depth = _nesting_depth(raw)
    if depth > _MAX_DEPTH:
        raise _Bad(f"header JSON is nested {depth} levels deep (at most {_MAX_DEPTH} in a safetensors header)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise _Bad("header is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        raise _Bad(f"header is not valid JSON: {_short(exc)}") from None
    if not isinstance(header, dict):
        raise _Bad(f"header is a JSON {type(header).__name__}, not an object")
    return header


def _nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting of JSON bytes, strings excluded (vectorised: no recursion, no Python loop)."""
    bare = _STRINGS.sub(b'""', raw)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int64)
    steps[(codes == ord("{")) | (codes == ord("["))] = 1
    steps[(codes == ord("}")) | (codes == ord("]"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Bad(f"header names {_name(twice)} twice")
    return out


def _no_constant(name: str) -> object:
    raise _Bad(f"header holds {name}, which is not JSON")


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"__metadata__ is a JSON {_json_type(value)}, not an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Bad(f"__metadata__[{_name(key)}] is a JSON {_json_type(item)}, not a string")
    return value


def _entry(name: str, value: object, data_size: int) -> TensorEntry:
    if not isinstance(value, dict):
        raise _Bad(f"tensor {_name(name)} is described by a JSON {_json_type(value)}, not an object")
    if set(value) != _ENTRY_KEYS:
        missing, extra = sorted(_ENTRY_KEYS - set(value)), sorted(set(value) - _ENTRY_KEYS)
        fault = f"lacks {missing}" if missing else f"has unknown fields {[_name(k) for k in extra[:3]]}"
        raise _Bad(f"tensor {_name(name)} {fault}")
    dtype_name = value["dtype"]
    dtype = SAFETENSORS_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise _Bad(f"tensor {_name(name)} has unsupported dtype {_name(dtype_name)} "
                   f"(known: {', '.join(SAFETENSORS_DTYPES)})")
    shape = value["shape"]
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(_is_count(d) for d in shape):
        raise _Bad(f"tensor {_name(name)} has shape {_short(shape)}: expected a list of at most {_MAX_DIMS} non-negative integers")
    offsets = value["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise _Bad(f"tensor {_name(name)} has data_offsets {_short(offsets)}: expected two non-negative integers")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise _Bad(f"tensor {_name(name)} lies outside the file (bytes {begin} to {end} of a "
                   f"{data_size}-byte data section: truncated or corrupt)")
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if nbytes != end - begin:
        raise _Bad(f"tensor {_name(name)} declares shape {_short(shape)} of {dtype_name} ({nbytes} bytes) but "
                   f"holds {end - begin} bytes")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _name(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "...'"


def _short(value: object, width: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[:width] + "..."


# ------------------------------------------------------------------------------------------------
# Format-tagged files: every file our code writes carries ``__metadata__["format"]``
# ------------------------------------------------------------------------------------------------

def write_tagged(path: str | os.PathLike, tensors: dict[str, torch.Tensor], format: str,
                 meta: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write ``tensors`` (moved to the CPU, made contiguous) with metadata ``{"format": format, **meta}``.

    Atomic (a temporary file beside ``path``, renamed at the end) and never over an existing file unless
    ``overwrite``; the file gets the user's umask permissions. Returns the written path.
    """
    from safetensors.torch import save_file

    extra = dict(meta or {})
    bad = [k for k, v in extra.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad or "format" in extra:
        raise TypeError(f"tagged-file metadata must map str to str and not repeat 'format' (bad keys: {bad[:3]})")
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(state, os.fspath(tmp), metadata={"format": format, **extra})
    return Path(path)


def _tagged_error(error: type[Exception], path: str, message: str, hint: str) -> Exception:
    return error(f"{path}: {message}" + (f"; {hint}" if hint else ""))


def read_tagged_meta(path: str | os.PathLike, format: str | tuple[str, ...], what: str,
                     error: type[Exception] = FileFormatError, hint: str = "") -> dict[str, str]:
    """The metadata of a file tagged ``format`` (one name or several accepted), reading the header only.

    A missing file, a malformed header or another format raise ``error`` with one line naming the file,
    the fault and ``hint`` (how to get a good file): ``<path>: <what> not found``, ``<path>: not a readable
    safetensors file (<fault>)`` or ``<path>: not a <what> (metadata format=..., expected ...)``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        found = "is a folder" if os.path.isdir(path) else "not found"
        raise _tagged_error(error, path, f"{what} {found}", hint)
    try:
        meta = read_header(path, what)[1]
    except FileFormatError as exc:
        raise _tagged_error(error, path, f"not a readable safetensors file ({exc.reason})", hint) from None
    formats = (format,) if isinstance(format, str) else tuple(format)
    if meta.get("format") not in formats:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise _tagged_error(error, path, f"not {article} {what} (metadata format={meta.get('format')!r}, "
                                         f"expected {' or '.join(map(repr, formats))})", hint)
    return meta


def read_tagged(path: str | os.PathLike, format: str | tuple[str, ...], what: str,
                error: type[Exception] = FileFormatError, hint: str = "",
                skip: Callable[[str], bool] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file tagged ``format``: the tag is checked on the header before any tensor is
    read; every fault raises ``error`` (see :func:`read_tagged_meta`); ``skip`` as in :func:`read_safetensors`."""
    meta = read_tagged_meta(path, format, what, error, hint)
    try:
        tensors, _ = read_safetensors(path, what, skip)
    except FileFormatError as exc:
        raise _tagged_error(error, os.fspath(path), f"not a readable safetensors file ({exc.reason})", hint) from None
    return tensors, meta


def meta_json(meta: dict[str, str], key: str, path: str | os.PathLike, what: str,
              error: type[Exception] = FileFormatError, default: object = ..., hint: str = "") -> object:
    """``json.loads(meta[key])`` with one-line errors (a missing key without ``default``, invalid JSON)."""
    if key not in meta:
        if default is ...:
            raise _tagged_error(error, os.fspath(path), f"{what} lacks the metadata field {key!r}", hint)
        return default
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError):
        raise _tagged_error(error, os.fspath(path), f"{what}: metadata field {key!r} is not valid JSON", hint) from None
