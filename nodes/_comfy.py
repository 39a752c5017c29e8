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
_warned: set[str] = set()


def warn_once(key: str, message: str, *args) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process (an automatic fallback ran)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)

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
    """The module ``name`` if ComfyUI provides it in this process, else None (outside ComfyUI).

    Only a missing module counts as absent; a ComfyUI module that fails while importing raises its own error.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
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
    except Exception as exc:  # noqa: BLE001 - an unexpected folder_paths: listing falls back to the plain folders
        warn_once("register", "AnyTalk: could not register model folders with ComfyUI (%s); listing %s only",
                  exc, ", ".join(f"models/{name}" for name in MODEL_FOLDERS))


def model_dirs(kind: str) -> list[Path]:
    """The folders of a model kind (``anytalk`` / ``liveportrait``), ComfyUI's list first."""
    fp = folder_paths()
    if fp is not None:
        register_model_folders()
        try:
            return [Path(p) for p in fp.get_folder_paths(kind)]
        except Exception as exc:  # noqa: BLE001 - an unexpected folder_paths: use its models folder
            warn_once(f"folders:{kind}", "AnyTalk: ComfyUI's folder_paths has no '%s' folders (%s); using %s",
                      kind, exc, Path(fp.models_dir) / kind)
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


#: Environment variable: more folders (``os.pathsep``-separated) a typed ``path`` widget may read from.
EXTRA_ROOTS_ENV = "ANYTALK_EXTRA_INPUT_ROOTS"
#: Longest file or folder name accepted in a typed path or a save prefix (bytes, UTF-8). File systems allow 255;
#: saves add a counter and a temporary-file tag to the prefix, so prefixes get less.
MAX_NAME_BYTES = 255
MAX_PREFIX_NAME_BYTES = 200
#: Longest typed path accepted (characters).
MAX_PATH_CHARS = 4096
#: File listings (the combo boxes of Load Video, Load Audio, Load Motion, Load Model) stop this deep and after
#: this many folder entries, and never enter a folder twice (symlink loops), so /object_info always returns.
MAX_LIST_DEPTH = 8
MAX_LIST_ENTRIES = 20_000


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message, shortened to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def check_path_text(text: str, what: str) -> None:
    """Refuse names no file system takes (NUL, too long) with one ValueError line instead of an OSError."""
    if "\x00" in text:
        raise ValueError(f"{what} {shown(text)} contains a NUL character")
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"{what} is too long ({len(text)} characters; at most {MAX_PATH_CHARS})")
    for part in text.replace("\\", "/").split("/"):
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise ValueError(f"{what} {shown(text)} has a file or folder name of {size} bytes; file systems allow "
                             f"at most {MAX_NAME_BYTES}")


def _lexical(path: str | os.PathLike) -> Path:
    """Absolute and normalised as written (``..`` removed textually; symlinks are not followed)."""
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


def annotated_path(name: str) -> Path:
    """``"clip.mp4"`` (input folder) or ``"x.safetensors [output]"`` -> a path inside that folder.

    As ComfyUI's ``folder_paths``: the name is joined to the folder and normalised as written, so ``..`` cannot
    leave it, while symlinks the server owner placed inside the folder are followed when the file is opened.
    """
    check_path_text(name, "file name")
    for tag, folder in (("[output]", output_dir), ("[input]", input_dir), ("[temp]", temp_dir)):
        if name.endswith(" " + tag) or name.endswith(tag):
            base, rel = folder(), name[: -len(tag)].rstrip()
            break
    else:
        base, rel = input_dir(), name
    base = _lexical(base)
    path = _lexical(base / rel)
    if not _inside(base, path) or path == base:
        raise ValueError(f"{shown(name)} is not a file name inside ComfyUI's {base.name} folder")
    return path


def readable_roots() -> list[Path]:
    """Folders a typed ``path`` widget may name: ComfyUI's input, output and temp folders (all three are served
    by ComfyUI's /view anyway) and those the server owner adds in ``$ANYTALK_EXTRA_INPUT_ROOTS``."""
    roots = [input_dir(), output_dir(), temp_dir()]
    for extra in os.environ.get(EXTRA_ROOTS_ENV, "").split(os.pathsep):
        extra = extra.strip()
        if extra and os.path.isabs(os.path.expanduser(extra)):
            roots.append(Path(os.path.expanduser(extra)))
    return [_lexical(r) for r in roots]


def confined_path(typed: str, what: str) -> Path:
    """A typed path (absolute, ``~``, or relative to the input folder), normalised as written and required to lie
    in :func:`readable_roots`. The refusal is the same whether or not the file exists."""
    text = typed.strip()
    check_path_text(text, what)
    expanded = os.path.expanduser(text)
    path = _lexical(expanded if os.path.isabs(expanded) else _lexical(input_dir()) / expanded)
    if not any(_inside(root, path) for root in readable_roots()):
        raise ValueError(f"{what} {shown(text)} is outside the folders AnyTalk reads on this ComfyUI server "
                         "(ComfyUI's input, output and temp folders): put the file in the input folder (or upload "
                         f"it), or, as the server's owner, add its folder to {EXTRA_ROOTS_ENV}")
    return path


def _inside(folder: Path, path: Path) -> bool:
    try:
        a, b = os.path.normcase(str(folder)), os.path.normcase(str(path))
        return os.path.commonpath([a, b]) == a
    except ValueError:
        return False


def walk(root: Path, max_depth: int | None = None, max_entries: int | None = None):
    """``os.walk(root, followlinks=True)`` made safe for folders anyone can fill: yields ``(folder, dir names,
    file names)`` (sorted, hidden ones left out), follows symlinked folders but enters each real folder once, goes
    at most ``max_depth`` levels down and stops after ``max_entries`` folder entries in all (logged)."""
    max_depth = MAX_LIST_DEPTH if max_depth is None else max_depth
    max_entries = MAX_LIST_ENTRIES if max_entries is None else max_entries
    seen: set[tuple[int, int]] = set()
    budget = max_entries
    stack = [(Path(root), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue  # a symlink back to a folder already listed
        seen.add((st.st_dev, st.st_ino))
        dirs, files = [], []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    budget -= 1
                    if budget < 0:
                        break
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir():  # follows symlinks
                            dirs.append(entry.name)
                        elif entry.is_file():
                            files.append(entry.name)
                    except OSError:
                        continue
        except OSError:
            continue
        dirs.sort()
        files.sort()
        yield folder, dirs, files
        if budget < 0:
            log.warning("AnyTalk: stopped listing %s after %d entries (the list shows what was found so far)",
                        root, max_entries)
            return
        if depth < max_depth:
            stack.extend((folder / d, depth + 1) for d in reversed(dirs))


def list_files(folder: Path, suffixes: tuple[str, ...], recursive: bool = True) -> list[str]:
    """Relative names (``/`` separated) of the files under ``folder`` with one of the endings, sorted.

    Bounded and loop-safe (:func:`walk`): a symlink loop or a huge folder cannot stall ComfyUI's /object_info.
    """
    if not folder.is_dir():
        return []
    out = []
    for root, _dirs, files in walk(folder, max_depth=None if recursive else 0):
        for f in files:
            if f.lower().endswith(suffixes):
                out.append((root / f).relative_to(folder).as_posix())
    return sorted(out)


def save_location(prefix: str, width: int = 0, height: int = 0, temp: bool = False) -> tuple[Path, str, str]:
    """(folder, file stem, subfolder) for an output named by a ComfyUI ``filename_prefix``.

    Inside ComfyUI ``folder_paths.get_save_image_path`` expands ``%date:...%`` and similar patterns; the fallback
    accepts ``sub/dir/name``. Both refuse a prefix that leaves the folder, is too long, or names a hidden file or
    folder (``""``, ``"."``, ``".."``, ``".x"``: the load nodes never list those).
    """
    base = temp_dir() if temp else output_dir()
    text = check_save_prefix(prefix, base)
    fp = folder_paths()
    if fp is not None:
        folder, name, _counter, subfolder, _prefix = fp.get_save_image_path(text, str(base), width, height)
        folder, subfolder = Path(folder), subfolder.replace("\\", "/")
    else:
        if text.endswith("/"):
            text = text.rstrip("/")
        subfolder, _, name = text.rpartition("/")
        folder = _lexical(_lexical(base) / subfolder)
    _check_visible(prefix, [*subfolder.split("/"), name])
    return folder, name, subfolder


def check_save_prefix(prefix: str, base: Path | None = None) -> str:
    """A ``filename_prefix`` checked as text (no folder is made or read): one that leaves the output folder, is too
    long or names a hidden file or folder raises a one-line ValueError; returns it with ``/`` separators."""
    base = _lexical(output_dir() if base is None else base)
    text = prefix.strip().replace("\\", "/")
    check_path_text(text, "filename prefix")
    for part in text.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PREFIX_NAME_BYTES:
            raise ValueError(f"filename prefix {shown(text)} has a name longer than {MAX_PREFIX_NAME_BYTES} bytes "
                             "(a counter and the file type are added to it): shorten it")
    if not _inside(base, _lexical(base / text)):
        raise ValueError(f"filename prefix {shown(text)} would save outside the output folder")
    _check_visible(prefix, os.path.normpath(text).replace("\\", "/").split("/"))
    return text


def _check_visible(prefix: str, parts: list[str]) -> None:
    if not parts[-1] or any(part.startswith(".") for part in parts):
        raise ValueError(f"filename prefix {shown(prefix)} names a hidden file or folder (starting with '.') "
                         "or no file name; load nodes never list those: use a name such as 'AnyTalk' or "
                         "'videos/AnyTalk'")


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
            except Exception as exc:  # noqa: BLE001 - the node still runs, without a progress bar
                warn_once("progress", "AnyTalk: ComfyUI's ProgressBar failed (%s); running without a progress bar",
                          exc)
                self._bar = None

    def update(self, done: int, total: int | None = None) -> None:
        """Frames done so far; a ``total`` given here replaces the estimate the bar was made with."""
        self.done = int(done)
        if total is not None:
            self.total = max(int(total), 1)
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
    import torch

    fallback = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mm = model_management()
    if mm is not None:
        try:
            return mm.get_torch_device()
        except Exception as exc:  # noqa: BLE001 - any failure: say which device runs instead
            warn_once("device", "AnyTalk: ComfyUI's get_torch_device() failed (%s); running on %s instead",
                      exc, fallback)
    return fallback


def offload_device():
    import torch

    mm = model_management()
    if mm is not None:
        try:
            return mm.unet_offload_device()
        except Exception as exc:  # noqa: BLE001 - any failure: say which device is used instead
            warn_once("offload", "AnyTalk: ComfyUI's unet_offload_device() failed (%s); offloading to cpu", exc)
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
    except Exception as exc:  # noqa: BLE001 - any refusal: say that plain .to() runs
        warn_once("patcher", "AnyTalk: ComfyUI model management unavailable for this model (%s); using plain .to()",
                  exc)
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
    except Exception as exc:  # noqa: BLE001 - any refusal: say that the model is moved directly
        warn_once("load", "AnyTalk: ComfyUI could not load the model (%s); moving it directly", exc)
        return False


def soft_empty_cache() -> None:
    mm = model_management()
    if mm is not None and hasattr(mm, "soft_empty_cache"):
        try:
            mm.soft_empty_cache()
        except Exception as exc:  # noqa: BLE001 - freeing cached memory is best effort
            warn_once("empty_cache", "AnyTalk: ComfyUI's soft_empty_cache() failed (%s); cached memory kept", exc)


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
