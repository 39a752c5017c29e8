"""nodes/_comfy.py: outside ComfyUI a missing module is absent; inside it, a failing service warns once and says
what runs instead (no silent fallback)."""
from __future__ import annotations

import logging
import sys
import types

import pytest
import torch

from comfy_harness import load_pack, pack_submodule

comfy = pack_submodule(load_pack(), "nodes._comfy")


@pytest.fixture
def broken_comfy(monkeypatch):
    """A ComfyUI whose model_management, ProgressBar and folder_paths lookups fail."""
    def fail(*_args, **_kwargs):
        raise RuntimeError("no GPU backend")

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = mm.unet_offload_device = mm.soft_empty_cache = fail
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = fail
    fp = types.ModuleType("folder_paths")
    fp.models_dir = "/comfy/models"
    fp.add_model_folder_path = fp.get_folder_paths = fail
    pkg = types.ModuleType("comfy")
    pkg.__path__ = []
    for name, module in {"comfy": pkg, "comfy.model_management": mm, "comfy.utils": utils, "folder_paths": fp}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(comfy, "_warned", set())
    monkeypatch.setattr(comfy, "_registered", False)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "anytalk"]


def test_outside_comfyui_a_missing_module_is_absent_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="anytalk"):
        assert comfy.optional_module("anytalk_no_such_comfy_module") is None
    assert _warnings(caplog) == []


def test_a_failing_comfyui_device_warns_once_naming_the_device_used(broken_comfy, caplog):
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with caplog.at_level(logging.WARNING, logger="anytalk"):
        assert comfy.default_device() == expected
        assert comfy.default_device() == expected
        assert comfy.offload_device() == torch.device("cpu")
    assert _warnings(caplog) == [
        f"AnyTalk: ComfyUI's get_torch_device() failed (no GPU backend); running on {expected} instead",
        "AnyTalk: ComfyUI's unet_offload_device() failed (no GPU backend); offloading to cpu",
    ]


def test_failing_folders_progress_and_cache_warn_once_each(broken_comfy, caplog):
    with caplog.at_level(logging.WARNING, logger="anytalk"):
        for _ in range(2):
            assert comfy.model_dirs("anytalk")[0].as_posix() == "/comfy/models/anytalk"
            assert comfy.Progress(4)._bar is None
            comfy.soft_empty_cache()
    lines = _warnings(caplog)
    assert len(lines) == 4, lines
    assert "could not register model folders with ComfyUI (no GPU backend)" in lines[0]
    assert lines[1] == ("AnyTalk: ComfyUI's folder_paths has no 'anytalk' folders (no GPU backend); "
                        "using /comfy/models/anytalk")
    assert lines[2] == "AnyTalk: ComfyUI's ProgressBar failed (no GPU backend); running without a progress bar"
    assert lines[3] == "AnyTalk: ComfyUI's soft_empty_cache() failed (no GPU backend); cached memory kept"


def test_a_comfyui_module_that_fails_to_import_raises(monkeypatch, tmp_path):
    (tmp_path / "anytalk_broken_comfy_module.py").write_text("raise RuntimeError('broken install')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="broken install"):
        comfy.optional_module("anytalk_broken_comfy_module")
