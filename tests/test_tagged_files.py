"""The one reader/writer of format-tagged safetensors files: round trip, the tag checked on the header, one-line
errors of the caller's type naming the file and how to fix it, atomic writes that never replace a file."""
from __future__ import annotations

import pytest
import torch

from anytalk_core.safetensors_io import FileFormatError, meta_json, read_tagged, read_tagged_meta, write_tagged


class WidgetError(ValueError):
    pass


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    weights = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    write_tagged(path, weights, "anytalk_widget", {"config": '{"width": 4}'})
    tensors, meta = read_tagged(path, "anytalk_widget", "widget")
    assert meta == {"format": "anytalk_widget", "config": '{"width": 4}'}
    assert tensors.keys() == weights.keys() and all(torch.equal(tensors[k], weights[k]) for k in weights)
    assert meta_json(meta, "config", path, "widget") == {"width": 4}
    assert read_tagged_meta(path, ("other", "anytalk_widget"), "widget")["format"] == "anytalk_widget"


def test_never_replaces_a_file_unless_asked(tmp_path):
    path = tmp_path / "w.safetensors"
    write_tagged(path, {"a": torch.zeros(1)}, "anytalk_widget")
    with pytest.raises(FileExistsError):
        write_tagged(path, {"a": torch.ones(1)}, "anytalk_widget")
    write_tagged(path, {"a": torch.ones(1)}, "anytalk_widget", overwrite=True)
    assert read_tagged(path, "anytalk_widget", "widget")[0]["a"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


def test_metadata_must_be_strings_and_not_repeat_the_tag(tmp_path):
    with pytest.raises(TypeError, match="str to str"):
        write_tagged(tmp_path / "w.safetensors", {"a": torch.zeros(1)}, "x", {"n": 3})
    with pytest.raises(TypeError, match="format"):
        write_tagged(tmp_path / "w.safetensors", {"a": torch.zeros(1)}, "x", {"format": "y"})


@pytest.mark.parametrize("case", ["missing", "folder", "other_format", "garbage"])
def test_errors_are_one_line_of_the_callers_type(tmp_path, case):
    path = tmp_path / "w.safetensors"
    if case == "folder":
        path.mkdir()
    elif case == "other_format":
        write_tagged(path, {"a": torch.zeros(1)}, "anytalk_motion")
    elif case == "garbage":
        path.write_bytes(b"\xff" * 64)
    with pytest.raises(WidgetError) as info:
        read_tagged(path, "anytalk_widget", "widget", error=WidgetError, hint="remake it with `make widget`")
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path)) and text.endswith("remake it with `make widget`")
    expected = {"missing": "not found", "folder": "is a folder", "other_format": "'anytalk_motion'",
                "garbage": "widget"}[case]
    assert expected in text
    wording = {"missing": "widget not found", "folder": "widget is a folder",
               "other_format": "not a widget (metadata format='anytalk_motion', expected 'anytalk_widget')",
               "garbage": "not a readable safetensors file (header length"}[case]
    assert wording in text


def test_meta_json_errors(tmp_path):
    meta = {"format": "x", "config": "{not json"}
    with pytest.raises(FileFormatError, match="'config' is not valid JSON"):
        meta_json(meta, "config", tmp_path / "f", "widget")
    with pytest.raises(FileFormatError, match="lacks the metadata field 'report'"):
        meta_json(meta, "report", tmp_path / "f", "widget")
    assert meta_json(meta, "report", tmp_path / "f", "widget", default={}) == {}
