"""ComfyUI runtime services, imported lazily and guarded, with fallbacks so the pack runs without ComfyUI.

Everything ComfyUI-specific the nodes use goes through this module: folders (``folder_paths``), progress
and Cancel (``comfy.utils.ProgressBar``, ``comfy.model_management.throw_exception_if_processing_interrupted``),
devices and model loading/unloading (``comfy.model_management``, ``comfy.model_patcher.ModelPatcher``) and
the optional ``VIDEO`` type (``comfy_api``). ComfyUI modules are looked up in ``sys.modules``/imported at
call time, never at import time of the pack, so tests can install stand-ins and a plain Python process
without ComfyUI gets the fallbacks:

- folders: ``$ANYTALK_COMFY_DIR`` (a ComfyUI-like base folder with ``models/``, ``input/``, ``output/``,
  ``temp/``), else the current directory; :func:`configure_fallback_dirs` sets them (tests, scripts);
- progress: no-op; Cancel: never;
- devices: ``anytalk_core.engine.resolve_device``; models moved with ``.to(device)``.
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

log = logging.getLogger("anytalk")

PACK_ROOT = Path(__file__).resolve().parents[1]

#: Model folders registered with ComfyUI's folder_paths (under ``models/``).
MODEL_FOLDERS = ("anytalk", "liveportrait")
#: Checkpoint file endings listed by Load Model (``.pth.tar`` ends in ``.tar``).
CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".tar", ".ckpt", ".bin")
#: Folders searched for the bundled demo checkpoint(s), listed as ``demo/<file name>``.
DEMO_DIRS: list[Path] = [PACK_ROOT / "assets" / "demo"]


# --------------------------------------------------------------------------------------------------
# Optional modules
# --------------------------------------------------------------------------------------------------

def optional_module(name: str):
    """The module ``name`` if ComfyUI provides it in this process, else None (never raises)."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken ComfyUI install: behave as if absent
        return None


def folder_paths():
    return optional_module("folder_paths")


def model_management():
    return optional_module("comfy.model_management")


# --------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------

class _FallbackDirs:
    """Where files go when ComfyUI's folder_paths is absent."""

    def __init__(self) -> None:
        self.configure(os.environ.get("ANYTALK_COMFY_DIR") or os.getcwd())

    def configure(self, base: str | os.PathLike, models: str | None = None, input: str | None = None,
                  output: str | None = None, temp: str | None = None) -> None:
        base = Path(base)
        self.base = base
        self.models = Path(models) if models else base / "models"
        self.input = Path(input) if input else base / "input"
        self.output = Path(output) if output else base / "output"
        self.temp = Path(temp) if temp else base / "temp"


_fallback = _FallbackDirs()
_registered = False


def configure_fallback_dirs(base: str | os.PathLike, **dirs: str) -> None:
    """Set the folders used without ComfyUI (``base/models``, ``base/input``, ``base/output``, ``base/temp``)."""
    _fallback.configure(base, **dirs)


def register_model_folders() -> None:
    """Register ``models/anytalk`` and ``models/liveportrait`` with ComfyUI's folder_paths (idempotent)."""
    global _registered
    fp = folder_paths()
    if fp is None or _registered:
        return
    try:
        for name in MODEL_FOLDERS:
            fp.add_model_folder_path(name, os.path.join(fp.models_dir, name), is_default=True)
        _registered = True
    except Exception as exc:  # an unexpected folder_paths: listing falls back to the plain folders
        log.warning("AnyTalk: could not register model folders with ComfyUI (%s)", exc)


def model_dirs(kind: str) -> list[Path]:
    """The folders of a model kind (``anytalk`` / ``liveportrait``), ComfyUI's list first."""
    fp = folder_paths()
    if fp is not None:
        register_model_folders()
        try:
            return [Path(p) for p in fp.get_folder_paths(kind)]
        except Exception:
            return [Path(fp.models_dir) / kind]
    return [_fallback.models / kind]


def input_dir() -> Path:
    fp = folder_paths()
    return Path(fp.get_input_directory()) if fp is not None else _fallback.input


def output_dir() -> Path:
    fp = folder_paths()
    return Path(fp.get_output_directory()) if fp is not None else _fallback.output


def temp_dir() -> Path:
    fp = folder_paths()
    return Path(fp.get_temp_directory()) if fp is not None else _fallback.temp


def annotated_path(name: str) -> Path:
    """``"clip.mp4"`` (input folder) or ``"x.safetensors [output]"`` -> a path inside that folder."""
    for tag, folder in (("[output]", output_dir), ("[input]", input_dir), ("[temp]", temp_dir)):
        if name.endswith(" " + tag) or name.endswith(tag):
            base, rel = folder(), name[: -len(tag)].rstrip()
            break
    else:
        base, rel = input_dir(), name
    path = (base / rel).resolve()
    if not _inside(base.resolve(), path):
        raise ValueError(f"{name!r} points outside the {base} folder")
    return path


def _inside(folder: Path, path: Path) -> bool:
    try:
        return os.path.commonpath([str(folder), str(path)]) == str(folder)
    except ValueError:
        return False


def list_files(folder: Path, suffixes: tuple[str, ...], recursive: bool = True) -> list[str]:
    """Relative names (``/`` separated) of the files under ``folder`` with one of the endings, sorted."""
    if not folder.is_dir():
        return []
    out = []
    walker = os.walk(folder, followlinks=True) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, dirs, files in walker:
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if f.startswith(".") or not f.lower().endswith(suffixes):
                continue
            full = Path(root) / f
            if full.is_file():
                out.append(full.relative_to(folder).as_posix())
    return sorted(out)


def save_location(prefix: str, width: int = 0, height: int = 0, temp: bool = False) -> tuple[Path, str, str]:
    """(folder, file stem, subfolder) for an output named by a ComfyUI ``filename_prefix``.

    Inside ComfyUI ``folder_paths.get_save_image_path`` expands ``%date:...%`` and similar patterns and
    checks the prefix stays in the folder; the fallback accepts ``sub/dir/name`` without ``..``.
    """
    base = temp_dir() if temp else output_dir()
    fp = folder_paths()
    if fp is not None:
        folder, name, _counter, subfolder, _prefix = fp.get_save_image_path(prefix, str(base), width, height)
        return Path(folder), name, subfolder
    prefix = prefix.strip().replace("\\", "/")
    if not prefix or prefix.endswith("/"):
        raise ValueError(f"filename prefix {prefix!r} needs a file name (e.g. 'AnyTalk' or 'videos/AnyTalk')")
    sub, _, name = prefix.rpartition("/")
    folder = (base / sub).resolve()
    if not _inside(base.resolve(), folder):
        raise ValueError(f"filename prefix {prefix!r} would save outside the output folder {base}")
    return folder, name, sub


# --------------------------------------------------------------------------------------------------
# Progress and Cancel
# --------------------------------------------------------------------------------------------------

class Progress:
    """A node's progress bar (ComfyUI's ProgressBar when present) and its Cancel check.

    ``update(done, total)`` fits the engine's progress callback; ``cancel()`` fits its cancel callback.
    Inside ComfyUI a pressed Cancel raises ComfyUI's own InterruptProcessingException from ``cancel()``
    (and from the progress hook), so ComfyUI reports an interruption, not an error.
    """

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        self.done = 0
        self._bar = None
        utils = optional_module("comfy.utils")
        if utils is not None and hasattr(utils, "ProgressBar"):
            try:
                self._bar = utils.ProgressBar(self.total)
            except Exception:
                self._bar = None

    def update(self, done: int, total: int | None = None) -> None:
        self.done = int(done)
        if self._bar is not None:
            self._bar.update_absolute(min(self.done, self.total), self.total)

    @staticmethod
    def cancel() -> bool:
        mm = model_management()
        check = getattr(mm, "throw_exception_if_processing_interrupted", None) if mm is not None else None
        if check is not None:
            check()  # raises ComfyUI's InterruptProcessingException when the user pressed Cancel
        return False


# --------------------------------------------------------------------------------------------------
# Devices and model residency
# --------------------------------------------------------------------------------------------------

def default_device():
    """ComfyUI's torch device when running inside it, else cuda when available, else cpu."""
    mm = model_management()
    if mm is not None:
        try:
            return mm.get_torch_device()
        except Exception:
            pass
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device():
    mm = model_management()
    if mm is not None:
        try:
            return mm.unet_offload_device()
        except Exception:
            pass
    import torch

    return torch.device("cpu")


def make_patcher(module, load_device, offload):
    """Wrap a torch module so ComfyUI can move and evict it (None outside ComfyUI or if it refuses)."""
    mm = model_management()
    patcher_mod = optional_module("comfy.model_patcher")
    if mm is None or patcher_mod is None:
        return None
    try:
        size = mm.module_size(module) if hasattr(mm, "module_size") else 0
        return patcher_mod.ModelPatcher(module, load_device=load_device, offload_device=offload, size=size)
    except Exception as exc:
        log.warning("AnyTalk: ComfyUI model management unavailable for this model (%s); using plain .to()", exc)
        return None


def load_patcher(patcher) -> bool:
    """Ask ComfyUI to load a wrapped model onto its device (freeing others' memory if needed)."""
    mm = model_management()
    if mm is None or patcher is None:
        return False
    try:
        try:  # our networks are plain torch modules: they run fully loaded or not at all
            mm.load_models_gpu([patcher], force_full_load=True)
        except TypeError:  # older ComfyUI without the argument
            mm.load_models_gpu([patcher])
        return True
    except Exception as exc:
        log.warning("AnyTalk: ComfyUI could not load the model (%s); moving it directly", exc)
        return False


def soft_empty_cache() -> None:
    mm = model_management()
    if mm is not None and hasattr(mm, "soft_empty_cache"):
        try:
            mm.soft_empty_cache()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------------
# Optional VIDEO type
# --------------------------------------------------------------------------------------------------

def video_from_file_class():
    """ComfyUI's ``VideoFromFile`` (the VIDEO type's file-backed implementation), or None when absent."""
    for name in ("comfy_api.latest", "comfy_api.input_impl"):
        mod = optional_module(name)
        if mod is None:
            continue
        impl = getattr(mod, "InputImpl", mod)
        cls = getattr(impl, "VideoFromFile", None)
        if cls is not None:
            return cls
    return None


def has_video_type() -> bool:
    return video_from_file_class() is not None
