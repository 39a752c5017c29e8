"""A small ComfyUI stand-in for tests: load the pack like ComfyUI does, validate and execute API-format graphs.

- :func:`load_pack` imports the repository root ``__init__.py`` with ``spec_from_file_location`` under a
  path-like module name (as ComfyUI does), so ``nodes/`` and ``anytalk_core`` are reached relatively and
  nothing named ``nodes`` lands in ``sys.modules``.
- :class:`Executor` validates every input of every node against its ``INPUT_TYPES`` the way ComfyUI's
  ``validate_inputs`` does (required/optional, link types, INT/FLOAT ranges, combo choices, BOOLEAN/STRING
  types, ``VALIDATE_INPUTS`` taking over the checks of the inputs it names), refuses graphs without an output
  node, and runs the nodes that outputs need in dependency order. Outputs are cached across runs by input
  signature (class, constants, ancestors' signatures, ``IS_CHANGED``), like ComfyUI's cache, so tests can
  see which nodes a changed input re-executes. Every output is checked against its declared type (IMAGE
  float32 [B,H,W,3] in 0..1 on the CPU, AUDIO dict, MASK, FLOAT, INT, STRING, BOOLEAN, our ANYTALK_* types).
- Stand-ins exist only for ComfyUI core nodes (CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage,
  KSampler, VAEDecode, LoadImage, PreviewImage, SaveImage); their ``INPUT_TYPES`` mirror ComfyUI's widget
  order so UI-format files written for real ComfyUI convert with the same ``widgets_values``.
- :func:`ui_to_api` converts a UI-format workflow (what the front end saves) to API format with the
  ``INPUT_TYPES`` order of widgets; :class:`WorkflowBuilder` writes both formats from one description
  (``python tests/comfy_harness.py`` regenerates ``workflows/``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")


# ------------------------------------------------------------------------------------------------
# Loading the pack
# ------------------------------------------------------------------------------------------------

_PACKS: dict[str, object] = {}


def load_pack(name: str | None = None):
    """Import the node pack from its folder as ComfyUI does (module named after the path, not importable)."""
    name = name or str(REPO_ROOT).replace(os.sep, "_x_").replace(".", "_x_").strip("_")
    if name in _PACKS:
        return _PACKS[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _PACKS[name] = module
    return module


def pack_submodule(pack, dotted: str):
    """``pack_submodule(pack, "anytalk_core.motion")`` -> that module of this copy of the pack (imported if needed)."""
    return importlib.import_module(f"{pack.__name__}.{dotted}")


# ------------------------------------------------------------------------------------------------
# Procedural test pictures (no model, no renderer dependency)
# ------------------------------------------------------------------------------------------------

def portrait(h: int, w: int, seed: int = 0, kind: str = "human", yaw: float = 0.0, mouth: float = 0.0,
             center: tuple[float, float] | None = None, radius: float | None = None) -> np.ndarray:
    """A simple face on a gradient background: float32 [h, w, 3] in 0..1 (``kind``: human or animal)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    img = bg[None, None, :] * (0.8 + 0.2 * yy[..., None] / h)
    cy, cx = center if center is not None else (h * 0.5, w * 0.5)
    r = radius if radius is not None else 0.3 * min(h, w)
    skin = np.array([0.95, 0.55, 0.2] if kind == "animal" else rng.uniform([0.6, 0.4, 0.3], [0.95, 0.75, 0.6]),
                    np.float32)

    def disk(y0, x0, ry, rx, colour):
        mask = ((yy - y0) / ry) ** 2 + ((xx - x0) / rx) ** 2 <= 1
        img[mask] = colour

    if kind == "animal":  # ears
        disk(cy - 0.9 * r, cx - 0.6 * r, 0.45 * r, 0.3 * r, skin * 0.8)
        disk(cy - 0.9 * r, cx + 0.6 * r, 0.45 * r, 0.3 * r, skin * 0.8)
    disk(cy, cx, 1.15 * r, 0.95 * r, skin)
    shift = yaw / 90.0 * 0.4 * r
    for side in (-1, 1):
        disk(cy - 0.2 * r, cx + side * 0.38 * r + shift, 0.14 * r, 0.14 * r, np.array([1, 1, 1], np.float32))
        disk(cy - 0.2 * r, cx + side * 0.38 * r + shift, 0.07 * r, 0.07 * r, np.array([0.05, 0.05, 0.1], np.float32))
    if kind == "animal":
        disk(cy + 0.2 * r, cx + shift, 0.1 * r, 0.14 * r, np.array([0.1, 0.05, 0.05], np.float32))
    disk(cy + 0.5 * r, cx + shift, (0.05 + 0.2 * mouth) * r, 0.3 * r, np.array([0.5, 0.1, 0.15], np.float32))
    return np.clip(img, 0, 1).astype(np.float32)


def driving_frames(n: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    """n frames uint8 [n, size, size, 3] of a face turning and talking."""
    out = np.stack([portrait(size, size, seed, yaw=30 * math.sin(i / 5), mouth=0.5 + 0.5 * math.sin(i / 2))
                    for i in range(n)])
    return torch.from_numpy((out * 255).round().astype(np.uint8))


def tone(seconds: float, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * math.pi * 220 * t)).unsqueeze(0)


# ------------------------------------------------------------------------------------------------
# Stand-ins for ComfyUI core nodes (INPUT_TYPES in ComfyUI's widget order)
# ------------------------------------------------------------------------------------------------

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]
MAX_RESOLUTION = 16384


class _Core:
    CATEGORY = "core stand-in"


def make_core_nodes(dirs: "HarnessDirs") -> dict[str, type]:
    """Stand-ins for the ComfyUI core nodes our workflows use, bound to the harness folders."""

    class CheckpointLoaderSimple(_Core):
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load_checkpoint"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"ckpt_name": (dirs.checkpoints(),)}}

        def load_checkpoint(self, ckpt_name):
            return ({"sd": ckpt_name}, {"clip": ckpt_name}, {"vae": ckpt_name})

    class CLIPTextEncode(_Core):
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "encode"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                                 "clip": ("CLIP",)}}

        def encode(self, text, clip):
            return ([{"text": text}],)

    class EmptyLatentImage(_Core):
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "generate"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {
                "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}

        def generate(self, width, height, batch_size=1):
            return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)

    class KSampler(_Core):
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "sample"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": (SAMPLERS,),
                "scheduler": (SCHEDULERS,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

        def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                   denoise=1.0):
            return ({"samples": latent_image["samples"], "seed": seed, "prompt": positive[0]["text"]},)

    class VAEDecode(_Core):
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "decode"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

        def decode(self, samples, vae):
            b, _, h, w = samples["samples"].shape
            kind = "animal" if any(k in samples.get("prompt", "") for k in ("fox", "cat", "animal")) else "human"
            seed = int(samples.get("seed", 0)) % (2 ** 32)
            return (torch.from_numpy(np.stack([portrait(h * 8, w * 8, seed + i, kind) for i in range(b)])),)

    class LoadImage(_Core):
        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "load_image"

        @classmethod
        def INPUT_TYPES(cls):
            names = os.listdir(dirs.input) if dirs.input.is_dir() else []
            files = sorted(f for f in names if f.lower().endswith((".png", ".jpg", ".webp")))
            return {"required": {"image": (files, {"image_upload": True})}}

        @classmethod
        def VALIDATE_INPUTS(cls, image):
            return True if (dirs.input / image).is_file() else f"Invalid image file: {image}"

        @classmethod
        def IS_CHANGED(cls, image):
            return hashlib.sha256((dirs.input / image).read_bytes()).hexdigest()

        def load_image(self, image):
            from PIL import Image

            with Image.open(dirs.input / image) as im:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
            rgb = torch.from_numpy(rgba[..., :3].copy()).unsqueeze(0)
            mask = 1.0 - torch.from_numpy(rgba[..., 3].copy()).unsqueeze(0)
            return (rgb, mask)

    class PreviewImage(_Core):
        RETURN_TYPES = ()
        FUNCTION = "save_images"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

        def save_images(self, images, prompt=None, extra_pnginfo=None):
            return {"ui": {"images": [{"filename": f"preview_{i}.png", "subfolder": "", "type": "temp"}
                                      for i in range(images.shape[0])]}}

    class SaveImage(PreviewImage):
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

        def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
            return {"ui": {"images": [{"filename": f"{filename_prefix}_{i:05}_.png", "subfolder": "",
                                       "type": "output"} for i in range(images.shape[0])]}}

    return {c.__name__: c for c in (CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode,
                                    LoadImage, PreviewImage, SaveImage)}


@dataclasses.dataclass
class HarnessDirs:
    base: Path

    @property
    def input(self) -> Path:
        return self.base / "input"

    @property
    def output(self) -> Path:
        return self.base / "output"

    def checkpoints(self) -> list[str]:
        return ["v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors"]


# ------------------------------------------------------------------------------------------------
# Validation and execution
# ------------------------------------------------------------------------------------------------

class PromptError(ValueError):
    """The graph does not validate (the list of problems is in ``errors``)."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def input_spec(cls, name: str):
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        if name in spec.get(section, {}):
            entry = spec[section][name]
            return section, entry[0], (entry[1] if len(entry) > 1 else {})
    return None, None, None


def is_widget(type_, options) -> bool:
    return (isinstance(type_, list) or type_ in WIDGET_TYPES) and not options.get("forceInput")


def types_match(received: str, expected: str) -> bool:
    if received == "*" or expected == "*":
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


@dataclasses.dataclass
class RunResult:
    outputs: dict[str, tuple]
    ui: dict[str, dict]
    executed: list[str]


class Executor:
    """Validates and runs API-format prompts; keeps a ComfyUI-like output cache between runs."""

    def __init__(self, node_classes: dict[str, type], type_checks: dict[str, type] | None = None):
        self.classes = node_classes
        self.type_checks = type_checks or {}
        self.cache: dict[str, tuple[tuple, dict | None]] = {}
        self.runs: dict[str, int] = {}

    # -- validation ---------------------------------------------------------------------------
    def validate(self, prompt: dict) -> None:
        errors = []
        outputs = []
        for nid, node in prompt.items():
            cls = self.classes.get(node.get("class_type"))
            if cls is None:
                errors.append(f"node {nid}: unknown node type {node.get('class_type')!r}")
                continue
            if getattr(cls, "OUTPUT_NODE", False):
                outputs.append(nid)
            for attr in ("INPUT_IS_LIST", "OUTPUT_IS_LIST"):
                if getattr(cls, attr, False):
                    errors.append(f"node {nid}: {attr} is not supported by this harness")
            errors += self._validate_node(prompt, nid, node, cls)
        if not outputs:
            errors.append("Prompt has no outputs")
        if errors:
            raise PromptError(errors)

    def _validate_node(self, prompt, nid, node, cls) -> list[str]:
        errors = []
        spec = cls.INPUT_TYPES()
        inputs = node.get("inputs", {})
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        for name in inputs:
            if name not in known:
                errors.append(f"node {nid} ({node['class_type']}): unknown input {name!r}")
        for name in spec.get("required", {}):
            if name not in inputs:
                errors.append(f"node {nid} ({node['class_type']}): required input {name!r} is missing")
        v_args, v_kwargs = [], False
        if hasattr(cls, "VALIDATE_INPUTS"):
            argspec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
            v_args, v_kwargs = argspec.args, argspec.varkw is not None
        constants = {}
        for name, value in inputs.items():
            if name not in known:
                continue
            entry = known[name]
            type_, options = entry[0], (entry[1] if len(entry) > 1 else {})
            where = f"node {nid} ({node['class_type']}) input {name!r}"
            if is_link(value):
                src = prompt.get(value[0])
                if src is None:
                    errors.append(f"{where}: linked to missing node {value[0]}")
                    continue
                src_cls = self.classes.get(src.get("class_type"))
                if src_cls is None:
                    continue
                if not 0 <= value[1] < len(src_cls.RETURN_TYPES):
                    errors.append(f"{where}: node {value[0]} has no output {value[1]}")
                    continue
                received = src_cls.RETURN_TYPES[value[1]]
                expected = "COMBO" if isinstance(type_, list) else type_
                if not types_match(received, expected):
                    errors.append(f"{where}: return type mismatch: {received} is not {expected}")
                continue
            if not is_widget(type_, options):
                errors.append(f"{where}: {type_} inputs must be linked, got the constant {value!r}")
                continue
            constants[name] = value
            if name in v_args or v_kwargs:
                continue  # VALIDATE_INPUTS takes over, as in ComfyUI
            errors += [f"{where}: {e}" for e in check_widget_value(type_, options, value)]
        if v_args or v_kwargs:
            args = {k: v for k, v in constants.items() if k in v_args or v_kwargs}
            result = cls.VALIDATE_INPUTS(**args)
            if result is not True:  # ComfyUI reports the message against every input the method names
                errors += [f"node {nid} ({node['class_type']}) input {name!r}: {result}" for name in args]
        return errors

    # -- execution ----------------------------------------------------------------------------
    def execute(self, prompt: dict) -> RunResult:
        prompt = json.loads(json.dumps(prompt))  # API prompts are JSON: no shared objects with the caller
        self.validate(prompt)
        needed = self._needed(prompt)
        order = self._order(prompt, needed)
        signatures: dict[str, str] = {}
        results: dict[str, tuple] = {}
        ui: dict[str, dict] = {}
        executed = []
        for nid in order:
            node = prompt[nid]
            cls = self.classes[node["class_type"]]
            sig = self._signature(prompt, nid, signatures)
            if sig in self.cache:  # as in ComfyUI, output nodes too: their UI results are replayed
                results[nid], cached_ui = self.cache[sig]
                if cached_ui is not None:
                    ui[nid] = cached_ui
                continue
            kwargs = {}
            for name, value in node["inputs"].items():
                kwargs[name] = results[value[0]][value[1]] if is_link(value) else value
            hidden = cls.INPUT_TYPES().get("hidden", {})
            for name, kind in hidden.items():
                kwargs[name] = {"PROMPT": prompt, "UNIQUE_ID": nid}.get(kind)
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
            if isinstance(out, dict):
                if "ui" in out:
                    ui[nid] = out["ui"]
                out = out.get("result", ())
            out = tuple(out)
            if len(out) != len(cls.RETURN_TYPES):
                raise AssertionError(f"node {nid} ({node['class_type']}) returned {len(out)} outputs, declares "
                                     f"{len(cls.RETURN_TYPES)}")
            for type_, value in zip(cls.RETURN_TYPES, out):
                check_output_value(type_, value, f"node {nid} ({node['class_type']}) output {type_}",
                                   self.type_checks)
            results[nid] = out
            self.cache[sig] = (out, ui.get(nid))
            executed.append(nid)
            self.runs[node["class_type"]] = self.runs.get(node["class_type"], 0) + 1
        return RunResult(results, ui, executed)

    def _needed(self, prompt) -> set[str]:
        todo = [nid for nid, n in prompt.items() if getattr(self.classes[n["class_type"]], "OUTPUT_NODE", False)]
        seen = set()
        while todo:
            nid = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            todo += [v[0] for v in prompt[nid]["inputs"].values() if is_link(v)]
        return seen

    def _order(self, prompt, needed) -> list[str]:
        deps = {nid: {v[0] for v in prompt[nid]["inputs"].values() if is_link(v)} for nid in needed}
        order, done = [], set()
        while len(order) < len(needed):
            ready = sorted((n for n in needed if n not in done and deps[n] <= done), key=_id_key)
            if not ready:
                raise PromptError(["the graph has a cycle"])
            for n in ready:
                order.append(n)
                done.add(n)
        return order

    def _signature(self, prompt, nid, memo) -> str:
        if nid in memo:
            return memo[nid]
        node = prompt[nid]
        cls = self.classes[node["class_type"]]
        parts = [node["class_type"]]
        constants = {k: v for k, v in node["inputs"].items() if not is_link(v)}
        if hasattr(cls, "IS_CHANGED"):
            argspec = inspect.getfullargspec(cls.IS_CHANGED)
            args = constants if argspec.varkw else {k: v for k, v in constants.items() if k in argspec.args}
            parts.append(repr(cls.IS_CHANGED(**args)))
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                parts.append((name, self._signature(prompt, value[0], memo), value[1]))
            else:
                parts.append((name, json.dumps(value)))
        memo[nid] = hashlib.sha256(repr(parts).encode()).hexdigest()
        return memo[nid]


def _id_key(nid: str):
    return (0, int(nid)) if nid.isdigit() else (1, nid)


def check_widget_value(type_, options, value) -> list[str]:
    if isinstance(type_, list):
        return [] if value in type_ else [f"value {value!r} not in list"]
    if type_ == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{value!r} is not an INT"]
    elif type_ == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return [f"{value!r} is not a FLOAT"]
    elif type_ == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{value!r} is not a BOOLEAN"]
    elif type_ == "STRING":
        return [] if isinstance(value, str) else [f"{value!r} is not a STRING"]
    errors = []
    if "min" in options and value < options["min"]:
        errors.append(f"value {value} smaller than min of {options['min']}")
    if "max" in options and value > options["max"]:
        errors.append(f"value {value} bigger than max of {options['max']}")
    return errors


def check_output_value(type_: str, value, where: str, custom: dict[str, type]) -> None:
    """Outputs must be what ComfyUI (and other node packs) expect for their declared type."""
    if type_ == "IMAGE":
        assert isinstance(value, torch.Tensor), f"{where}: not a tensor"
        assert value.dim() == 4 and value.shape[-1] == 3 and value.shape[0] >= 1, f"{where}: shape {tuple(value.shape)}"
        assert value.dtype == torch.float32 and value.device.type == "cpu", f"{where}: {value.dtype} {value.device}"
        assert float(value.min()) >= 0.0 and float(value.max()) <= 1.0, f"{where}: values outside 0..1"
    elif type_ == "MASK":
        assert isinstance(value, torch.Tensor) and value.dim() in (2, 3), f"{where}: bad MASK"
    elif type_ == "AUDIO":
        assert isinstance(value, dict) and set(value) >= {"waveform", "sample_rate"}, f"{where}: not an AUDIO dict"
        w = value["waveform"]
        assert isinstance(w, torch.Tensor) and w.dim() == 3 and w.dtype == torch.float32, f"{where}: waveform"
        assert isinstance(value["sample_rate"], int) and value["sample_rate"] > 0, f"{where}: sample_rate"
    elif type_ == "FLOAT":
        assert isinstance(value, float), f"{where}: {type(value).__name__} is not float"
    elif type_ == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: not int"
    elif type_ == "STRING":
        assert isinstance(value, str), f"{where}: not str"
    elif type_ == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: not bool"
    elif type_ in custom:
        assert isinstance(value, custom[type_]), f"{where}: {type(value).__name__} is not {custom[type_].__name__}"


def pack_type_checks(pack) -> dict[str, type]:
    objects = pack_submodule(pack, "nodes._objects")
    motion = pack_submodule(pack, "anytalk_core.motion")
    return {"ANYTALK_MODEL": objects.AnyTalkModel, "ANYTALK_SOURCE": objects.SourceImage,
            "ANYTALK_KEYPOINTS": objects.Keypoints, "ANYTALK_WARP": objects.WarpPlan,
            "ANYTALK_MOTION": motion.Motion}


# ------------------------------------------------------------------------------------------------
# UI format <-> API format
# ------------------------------------------------------------------------------------------------

def widget_inputs(cls) -> list[tuple[str, object, dict]]:
    """(name, type, options) of every widget input in INPUT_TYPES order (required, then optional)."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            type_, options = entry[0], (entry[1] if len(entry) > 1 else {})
            if is_widget(type_, options):
                out.append((name, type_, options))
    return out


def has_control_widget(name: str, type_, options: dict) -> bool:
    return type_ == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed"))


def _stack_columns(nodes: list[dict], gap: int = 60, title: int = 30) -> None:
    """Push nodes down within each column so none covers the next one's title bar (drawn above ``pos``)."""
    columns: dict[float, list[dict]] = {}
    for node in nodes:
        columns.setdefault(node["pos"][0], []).append(node)
    for column in columns.values():
        column.sort(key=lambda n: n["pos"][1])
        bottom = None
        for node in column:
            if bottom is not None and node["pos"][1] < bottom + gap + title:
                node["pos"][1] = bottom + gap + title
            bottom = node["pos"][1] + node["size"][1]


#: Front-end-only node types (drawn on the canvas, never sent to the server).
UI_ONLY_NODES = ("Note", "MarkdownNote")


def ui_to_api(workflow: dict, classes: dict[str, type]) -> tuple[dict, dict[str, list]]:
    """UI-format workflow -> (API prompt, leftover widget values per node, e.g. upload buttons' values)."""
    links = {link[0]: link for link in workflow["links"]}
    api, leftovers = {}, {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in UI_ONLY_NODES:  # muted / bypassed / canvas notes
            continue
        cls = classes[node["type"]]
        linked = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                linked[slot["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values", []))
        inputs, i = {}, 0
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                type_, options = entry[0], (entry[1] if len(entry) > 1 else {})
                if is_widget(type_, options) and i < len(values):
                    value = values[i]
                    i += 2 if has_control_widget(name, type_, options) else 1
                    if name not in linked:
                        inputs[name] = value
                if name in linked:
                    inputs[name] = linked[name]
        leftovers[str(node["id"])] = values[i:]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or node["type"]}}
    return api, leftovers


class WorkflowBuilder:
    """Describe a graph once; write it as a UI-format workflow and its API-format twin."""

    def __init__(self, classes: dict[str, type], display_names: dict[str, str]):
        self.classes = classes
        self.display = display_names
        self.nodes: "OrderedDict[int, dict]" = OrderedDict()

    def add(self, class_type: str, column: int, row: float, title: str | None = None, **inputs):
        cls = self.classes[class_type]
        nid = len(self.nodes) + 1
        widgets = {}
        for name, type_, options in widget_inputs(cls):
            if name in inputs and isinstance(inputs[name], tuple):
                continue  # widget fed by a link
            if name in inputs:
                widgets[name] = inputs[name]
            elif "default" in options:
                widgets[name] = options["default"]
            elif isinstance(type_, list):
                widgets[name] = type_[0]
            else:
                raise ValueError(f"{class_type}.{name} needs a value")
        self.nodes[nid] = {"type": class_type, "column": column, "row": row, "inputs": inputs, "widgets": widgets,
                           "title": title}
        return _NodeRef(nid)

    def api(self) -> dict:
        out = {}
        for nid, node in self.nodes.items():
            inputs = {}
            for name, _type, _opt in widget_inputs(self.classes[node["type"]]):
                if name in node["widgets"]:
                    inputs[name] = node["widgets"][name]
            for name, value in node["inputs"].items():
                if isinstance(value, tuple):
                    inputs[name] = [str(value[0]), value[1]]
            ordered = {}
            spec = self.classes[node["type"]].INPUT_TYPES()
            for section in ("required", "optional"):
                for name in spec.get(section, {}):
                    if name in inputs:
                        ordered[name] = inputs[name]
            out[str(nid)] = {"class_type": node["type"], "inputs": ordered,
                             "_meta": {"title": node["title"] or self.display.get(node["type"], node["type"])}}
        return out

    def ui(self, note: str = "") -> dict:
        links, link_id = [], 0
        outputs: dict[int, dict[int, list[int]]] = {nid: {} for nid in self.nodes}
        node_inputs: dict[int, list[dict]] = {}
        for nid, node in self.nodes.items():
            cls = self.classes[node["type"]]
            spec = cls.INPUT_TYPES()
            slots = []
            entries = [(section, name, entry) for section in ("required", "optional")
                       for name, entry in spec.get(section, {}).items()]
            # socket inputs first, then widgets fed by a link (the front end appends converted widgets)
            entries.sort(key=lambda e: is_widget(e[2][0], e[2][1] if len(e[2]) > 1 else {}))
            for section, name, entry in entries:
                type_, options = entry[0], (entry[1] if len(entry) > 1 else {})
                value = node["inputs"].get(name)
                widget = is_widget(type_, options)
                if widget and not isinstance(value, tuple):
                    continue
                slot = {"name": name, "type": "COMBO" if isinstance(type_, list) else type_, "link": None}
                if widget:
                    slot["widget"] = {"name": name}
                if isinstance(value, tuple):
                    link_id += 1
                    src, src_slot = value
                    src_type = self.classes[self.nodes[src]["type"]].RETURN_TYPES[src_slot]
                    links.append([link_id, src, src_slot, nid, len(slots), src_type])
                    outputs[src].setdefault(src_slot, []).append(link_id)
                    slot["link"] = link_id
                elif section == "optional":
                    slot["shape"] = 7
                slots.append(slot)
            node_inputs[nid] = slots
        order = self._order()
        nodes = []
        for nid, node in self.nodes.items():
            cls = self.classes[node["type"]]
            names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
            types_ = cls.RETURN_TYPES
            if node["type"] == "AnyTalkAssembleVideo" and "VIDEO" not in types_:
                # written for a ComfyUI with the VIDEO type (recent versions); older ones ignore the slot
                names, types_ = (*names, "video"), (*types_, "VIDEO")
            outs = [{"name": names[i], "type": t, "links": outputs[nid].get(i, []) or None, "slot_index": i}
                    for i, t in enumerate(types_)]
            values = []
            for name, type_, options in widget_inputs(cls):
                values.append(node["widgets"].get(name, 0) if name in node["widgets"] else
                              _default_for(type_, options))
                if has_control_widget(name, type_, options):
                    values.append("fixed")
            if node["type"] == "LoadImage":
                values.append("image")  # the upload button's value, as ComfyUI saves it
            n_widgets = len(widget_inputs(cls))
            height = 30 + 26 * (max(len(node_inputs[nid]), len(outs)) + n_widgets)
            if node["type"] in ("LoadImage", "PreviewImage", "SaveImage"):
                height += 240
            entry = {"id": nid, "type": node["type"], "pos": [40 + 380 * node["column"], 40 + node["row"]],
                     "size": [340, height], "flags": {}, "order": order[nid], "mode": 0,
                     "inputs": node_inputs[nid], "outputs": outs,
                     "properties": {"Node name for S&R": node["type"]}, "widgets_values": values}
            if node["title"]:
                entry["title"] = node["title"]
            nodes.append(entry)
        _stack_columns(nodes)
        last_id = max(self.nodes)
        if note:  # the front end's Note node: a text box on the canvas, above the first column
            last_id += 1
            lines = 2 + len(note) // 90
            height, top = 24 * lines + 20, min(n["pos"][1] for n in nodes)
            nodes.append({"id": last_id, "type": "Note", "pos": [40, top - 70 - height], "size": [720, height],
                          "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                          "title": "About this workflow", "properties": {"text": ""}, "widgets_values": [note],
                          "color": "#432", "bgcolor": "#653"})
        extra = {"ds": {"scale": 0.8, "offset": [0, 0]}}
        return {"last_node_id": last_id, "last_link_id": link_id, "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": extra, "version": 0.4}

    def _order(self) -> dict[int, int]:
        deps = {nid: {v[0] for v in n["inputs"].values() if isinstance(v, tuple)} for nid, n in self.nodes.items()}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            for nid in [n for n in self.nodes if n not in done and deps[n] <= done]:
                order[nid] = len(order)
                done.add(nid)
        return order


def _default_for(type_, options):
    if "default" in options:
        return options["default"]
    return type_[0] if isinstance(type_, list) else 0


class _NodeRef:
    def __init__(self, nid: int):
        self.id = nid

    def __getitem__(self, slot: int) -> tuple[int, int]:
        return (self.id, slot)


def tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes of every tensor reachable from ``obj`` (dataclasses, dicts, lists, objects' attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, torch.nn.Module):
        return 0  # the model's weights are not per-frame data
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


# ------------------------------------------------------------------------------------------------
# The shipped workflows, described once (python tests/comfy_harness.py rewrites workflows/)
# ------------------------------------------------------------------------------------------------

DEMO_CHECKPOINT = "demo/anytalk_demo.safetensors"
PORTRAIT = "anytalk_portrait.png"
CARTOON = "anytalk_cartoon_fox.png"
PHOTO = "anytalk_photo.png"
DRIVING = "anytalk_driving.mp4"
SPEECH = "anytalk_speech.wav"
WORKFLOW_NAMES = ("anytalk_video_driven", "anytalk_cross_domain", "anytalk_pose_expression_edit",
                  "anytalk_generate_then_animate", "anytalk_paste_back", "anytalk_audio_driven")


INPUTS_NOTE = ("Example inputs: copy the files of this pack's workflows/inputs/ folder into ComfyUI's input/ folder "
               "(ComfyUI lists only files there), then replace them with your own pictures, video and sound.")


def build_workflows(classes: dict[str, type], display: dict[str, str]) -> dict[str, tuple[dict, dict]]:
    """name -> (UI workflow, API prompt)."""
    out = {}

    def model_and_video(b: WorkflowBuilder, row: float = 0):
        model = b.add("AnyTalkLoadModel", 0, row, checkpoint=DEMO_CHECKPOINT)
        video = b.add("AnyTalkLoadVideo", 0, row + 520, video=DRIVING, max_frames=250)
        return model, video

    # 1. video-driven: the split graph, stage by stage
    b = WorkflowBuilder(classes, display)
    model, video = model_and_video(b)
    image = b.add("LoadImage", 0, 260, image=PORTRAIT)
    source = b.add("AnyTalkLoadSource", 1, 0, image=image[0], crop="auto")
    kp = b.add("AnyTalkDetectKeypoints", 2, 0, model=model[0], source=source[0])
    b.add("PreviewImage", 3, 0, title="Keypoints", images=kp[1])
    motion = b.add("AnyTalkEstimateMotion", 1, 520, model=model[0], images=video[0], fps=video[2])
    smooth = b.add("AnyTalkMotionSmooth", 2, 520, motion=motion[0], strength=0.3)
    driven = b.add("AnyTalkTransferMotion", 3, 300, keypoints=kp[0], motion=smooth[0], mode="relative")
    warp = b.add("AnyTalkWarp3D", 4, 300, model=model[0], source=source[0], keypoints=driven[0])
    frames = b.add("AnyTalkGenerate", 5, 300, model=model[0], source=source[0], warp=warp[0])
    b.add("AnyTalkAssembleVideo", 6, 300, images=frames[0], fps=video[2], audio=video[1],
          filename_prefix="AnyTalk/video_driven")
    out["anytalk_video_driven"] = (b.ui("Video-driven: a portrait follows the head pose and expression of a driving "
                                        "video. " + INPUTS_NOTE), b.api())

    # 2. cross-domain: human driving video -> cartoon animal portrait
    b = WorkflowBuilder(classes, display)
    model, video = model_and_video(b)
    image = b.add("LoadImage", 0, 260, image=CARTOON)
    source = b.add("AnyTalkLoadSource", 1, 0, image=image[0], crop="auto")
    kp = b.add("AnyTalkDetectKeypoints", 2, 0, model=model[0], source=source[0], overlay="both")
    b.add("PreviewImage", 3, 0, title="Keypoints", images=kp[1])
    motion = b.add("AnyTalkEstimateMotion", 1, 520, model=model[0], images=video[0], fps=video[2],
                   crop="auto (first frame)")
    smooth = b.add("AnyTalkMotionSmooth", 2, 520, motion=motion[0], strength=0.5, method="kalman")
    driven = b.add("AnyTalkTransferMotion", 3, 300, keypoints=kp[0], motion=smooth[0], mode="relative",
                   adapt_scale=True, expression_strength=1.2, translation_strength=0.5)
    warp = b.add("AnyTalkWarp3D", 4, 300, model=model[0], source=source[0], keypoints=driven[0])
    frames = b.add("AnyTalkGenerate", 5, 300, model=model[0], source=source[0], warp=warp[0])
    b.add("AnyTalkAssembleVideo", 6, 300, images=frames[0], fps=video[2], audio=video[1],
          filename_prefix="AnyTalk/cross_domain")
    out["anytalk_cross_domain"] = (b.ui("Cross-domain: a human driving video animates a cartoon animal (relative "
                                        "transfer, movement adapted to the face's size). " + INPUTS_NOTE), b.api())

    # 3. pose / expression editing: keep the portrait's pose, take the driver's expression, then turn the head
    b = WorkflowBuilder(classes, display)
    model, video = model_and_video(b)
    image = b.add("LoadImage", 0, 260, image=PORTRAIT)
    source = b.add("AnyTalkLoadSource", 1, 0, image=image[0], crop="auto")
    kp = b.add("AnyTalkDetectKeypoints", 2, 0, model=model[0], source=source[0])
    motion = b.add("AnyTalkEstimateMotion", 1, 520, model=model[0], images=video[0], fps=video[2])
    mixed = b.add("AnyTalkMotionMix", 3, 200, motion_a=kp[2], motion_b=motion[0],
                  mode="pose from A, expression from B")
    edited = b.add("AnyTalkMotionEdit", 4, 200, motion=mixed[0], angle_mode="add", yaw=20.0, pitch=-5.0,
                   expression_scale=1.4)
    b.add("AnyTalkSaveMotion", 5, 0, motion=edited[0], filename_prefix="anytalk_motion/edited")
    driven = b.add("AnyTalkTransferMotion", 5, 300, keypoints=kp[0], motion=edited[0], mode="absolute")
    warp = b.add("AnyTalkWarp3D", 6, 300, model=model[0], source=source[0], keypoints=driven[0])
    frames = b.add("AnyTalkGenerate", 7, 300, model=model[0], source=source[0], warp=warp[0])
    b.add("AnyTalkAssembleVideo", 8, 300, images=frames[0], fps=video[2], audio=video[1],
          filename_prefix="AnyTalk/pose_expression_edit")
    out["anytalk_pose_expression_edit"] = (b.ui("Pose and expression editing: the portrait keeps its own head pose "
                                                "turned by 20 degrees, with the driver's expression exaggerated "
                                                "1.4x; the edited performance is also saved for reuse. "
                                                + INPUTS_NOTE), b.api())

    # 4. generate a character with an image model, then animate it (all-in-one node)
    b = WorkflowBuilder(classes, display)
    ckpt = b.add("CheckpointLoaderSimple", 0, 0, ckpt_name="v1-5-pruned-emaonly-fp16.safetensors")
    pos = b.add("CLIPTextEncode", 1, 0, title="Positive", clip=ckpt[1],
                text="portrait of a friendly cartoon fox character, head and shoulders, facing the camera, plain "
                     "background, soft light")
    neg = b.add("CLIPTextEncode", 1, 260, title="Negative", clip=ckpt[1],
                text="blurry, cropped face, profile view, text, watermark")
    latent = b.add("EmptyLatentImage", 1, 520, width=512, height=512, batch_size=1)
    sampled = b.add("KSampler", 2, 0, model=ckpt[0], positive=pos[0], negative=neg[0], latent_image=latent[0],
                    seed=42, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal")
    decoded = b.add("VAEDecode", 3, 0, samples=sampled[0], vae=ckpt[2])
    b.add("PreviewImage", 4, 0, title="Character", images=decoded[0])
    model = b.add("AnyTalkLoadModel", 3, 300, checkpoint=DEMO_CHECKPOINT)
    video = b.add("AnyTalkLoadVideo", 3, 560, video=DRIVING, max_frames=250)
    anim = b.add("AnyTalkAnimate", 4, 300, model=model[0], source_image=decoded[0], driving_images=video[0],
                 audio=video[1], fps=video[2], source_crop="auto", smoothing=0.3)
    b.add("AnyTalkAssembleVideo", 5, 300, images=anim[0], fps=anim[2], audio=anim[1],
          filename_prefix="AnyTalk/generated_character")
    out["anytalk_generate_then_animate"] = (b.ui("Generate a character with an image model, then animate it with a "
                                                 "driving video (all-in-one AnyTalk Animate node). Needs an SD 1.5 "
                                                 "checkpoint in models/checkpoints/. " + INPUTS_NOTE), b.api())

    # 5. crop + paste-back into the full photo
    b = WorkflowBuilder(classes, display)
    model, video = model_and_video(b)
    image = b.add("LoadImage", 0, 260, image=PHOTO)
    source = b.add("AnyTalkLoadSource", 1, 0, image=image[0], crop="auto")
    b.add("PreviewImage", 2, -260, title="Crop", images=source[1])
    kp = b.add("AnyTalkDetectKeypoints", 2, 0, model=model[0], source=source[0])
    motion = b.add("AnyTalkEstimateMotion", 1, 520, model=model[0], images=video[0], fps=video[2])
    driven = b.add("AnyTalkTransferMotion", 3, 300, keypoints=kp[0], motion=motion[0], mode="relative")
    warp = b.add("AnyTalkWarp3D", 4, 300, model=model[0], source=source[0], keypoints=driven[0])
    frames = b.add("AnyTalkGenerate", 5, 300, model=model[0], source=source[0], warp=warp[0])
    pasted = b.add("AnyTalkPasteBack", 6, 300, frames=frames[0], source=source[0], original=image[0], feather=0.12)
    b.add("AnyTalkAssembleVideo", 7, 300, images=pasted[0], fps=video[2], audio=video[1],
          filename_prefix="AnyTalk/paste_back")
    out["anytalk_paste_back"] = (b.ui("Crop and paste back: the head of a full photo is animated and put back "
                                      "into the photo with a feathered edge. " + INPUTS_NOTE), b.api())

    # 6. audio-driven: speech moves the mouth through the checkpoint's audio-to-motion part, a video gives the
    #    head pose (Motion Mix); the reference frame mixes the video's first pose with the silent face
    b = WorkflowBuilder(classes, display)
    model, video = model_and_video(b)
    image = b.add("LoadImage", 0, 260, image=PORTRAIT)
    speech = b.add("AnyTalkLoadAudio", 0, 900, audio=SPEECH)
    source = b.add("AnyTalkLoadSource", 1, 0, image=image[0], crop="auto")
    kp = b.add("AnyTalkDetectKeypoints", 2, 0, model=model[0], source=source[0])
    head = b.add("AnyTalkEstimateMotion", 1, 520, model=model[0], images=video[0], fps=video[2])
    talk = b.add("AnyTalkAudioToMotion", 1, 900, model=model[0], audio=speech[0], fps=video[2],
                 frame_count=video[3])
    mixed = b.add("AnyTalkMotionMix", 2, 520, motion_a=head[0], motion_b=talk[0],
                  mode="pose from A, expression from B")
    reference = b.add("AnyTalkMotionMix", 2, 900, title="Reference: first pose, silent face", motion_a=head[0],
                      motion_b=talk[1], mode="pose from A, expression from B")
    smooth = b.add("AnyTalkMotionSmooth", 3, 520, motion=mixed[0], strength=0.2)
    driven = b.add("AnyTalkTransferMotion", 4, 300, keypoints=kp[0], motion=smooth[0], mode="relative",
                   reference_motion=reference[0])
    warp = b.add("AnyTalkWarp3D", 5, 300, model=model[0], source=source[0], keypoints=driven[0])
    frames = b.add("AnyTalkGenerate", 6, 300, model=model[0], source=source[0], warp=warp[0])
    b.add("AnyTalkAssembleVideo", 7, 300, images=frames[0], fps=video[2], audio=speech[0],
          filename_prefix="AnyTalk/audio_driven")
    out["anytalk_audio_driven"] = (b.ui("Audio-driven: speech moves the portrait's mouth and face (the checkpoint's "
                                        "audio-to-motion part; the bundled demo has one) while Motion Mix takes the "
                                        "head pose from a driving video; the reference frame is the video's first "
                                        "pose with the silent face. " + INPUTS_NOTE), b.api())
    return out


CORE_DISPLAY_NAMES = {"CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
                      "EmptyLatentImage": "Empty Latent Image", "KSampler": "KSampler", "VAEDecode": "VAE Decode",
                      "LoadImage": "Load Image", "PreviewImage": "Preview Image", "SaveImage": "Save Image"}


def write_workflows(root: Path = REPO_ROOT / "workflows") -> list[Path]:
    pack = load_pack()
    dirs = HarnessDirs(Path(os.environ.get("TMPDIR", "/tmp")) / "anytalk-no-such-dir")
    classes = {**make_core_nodes(dirs), **pack.NODE_CLASS_MAPPINGS}
    display = {**CORE_DISPLAY_NAMES, **pack.NODE_DISPLAY_NAME_MAPPINGS}
    written = []
    for name, (ui, api) in build_workflows(classes, display).items():
        for path, data in ((root / f"{name}.json", ui), (root / "api" / f"{name}.json", api)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")
            written.append(path)
    return written


# ------------------------------------------------------------------------------------------------
# A complete test environment: folders, a tiny checkpoint as the demo, test media, an executor
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Env:
    pack: object
    base: Path
    executor: "Executor"
    classes: dict

    @property
    def dirs(self) -> HarnessDirs:
        return HarnessDirs(self.base)

    def activate(self) -> None:
        """Point the pack's fallback folders (and demo folder) at this environment."""
        comfy = pack_submodule(self.pack, "nodes._comfy")
        comfy.configure_fallback_dirs(self.base)
        comfy.DEMO_DIRS[:] = [self.base / "demo"]

    def fresh_executor(self) -> "Executor":
        self.executor = Executor(self.classes, pack_type_checks(self.pack))
        return self.executor

    def api(self, name: str) -> dict:
        return json.loads((REPO_ROOT / "workflows" / "api" / f"{name}.json").read_text())


def write_driving_video(pack, path: Path, n: int, size: int = 64, fps: float = 25.0, seed: int = 1,
                        audio: bool = True) -> Path:
    media = pack_submodule(pack, "anytalk_core.media")
    sound = (tone(n / fps), 16000) if audio else None
    media.write_video(path, driving_frames(n, size, seed), fps=fps, audio=sound)
    return path


def attach_tiny_audio2motion(pack, model) -> None:
    """Give a model a small randomly initialised audio-to-motion part (as the demo checkpoint has a trained one)."""
    config = pack_submodule(pack, "anytalk_core.models.config")
    a2m = pack_submodule(pack, "anytalk_core.models.audio2motion")
    audio_motion = pack_submodule(pack, "anytalk_core.audio_motion")
    cfg = config.AudioToMotionConfig(num_kp=model.num_kp, n_mels=32, feature_dim=32, frontend_channels=8, dim=16,
                                     depth=1, heads=2, radius=4, context=4, params=("jaw_open",))
    audio_motion.attach_audio2motion(model, a2m.AudioToMotion(cfg).eval())


def write_speech(pack, path: Path, seconds: float, seed: int = 4) -> Path:
    """Speech-like babble (the synthetic renderer's) as a 16 kHz wav."""
    synthetic = pack_submodule(pack, "anytalk_core.synthetic")
    media = pack_submodule(pack, "anytalk_core.media")
    speech = synthetic.synth_speech(int(round(seconds * 16000)), seed)
    media.write_wav(path, speech.waveform, 16000, overwrite=True)
    return path


def save_png(array: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8), "RGB").save(path)
    return path


def make_env(base: Path, pack=None, frames: int = 12) -> Env:
    """Folders like ComfyUI's (models/, input/, output/, temp/), a tiny 64-px checkpoint with a small
    audio-to-motion part as the bundled demo (demo/anytalk_demo.safetensors) and the media the shipped
    workflows name, in ``base``."""
    pack = pack or load_pack()
    for sub in ("models/anytalk", "models/liveportrait", "input", "output", "temp", "demo"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    ckpt = pack_submodule(pack, "anytalk_core.checkpoints")
    config = pack_submodule(pack, "anytalk_core.models.config")
    registry = pack_submodule(pack, "anytalk_core.models.registry")
    torch.manual_seed(1234)
    model = registry.build_model(config.tiny_config(with_discriminator=False)).eval()
    attach_tiny_audio2motion(pack, model)
    demo = base / "demo" / DEMO_CHECKPOINT.split("/", 1)[1]
    if not demo.exists():
        # trained-by record as the real demo's, so auto crops frame it as they frame the bundled demo (our framing)
        ckpt.save_checkpoint(model, demo, provenance={"trainer": "anytalk-train", "test": "random tiny model"})
    save_png(portrait(96, 96, seed=3), base / "input" / PORTRAIT)
    save_png(portrait(96, 80, seed=4, kind="animal", center=(52, 40), radius=24), base / "input" / CARTOON)
    save_png(portrait(120, 160, seed=5, center=(50, 105), radius=22), base / "input" / PHOTO)
    write_driving_video(pack, base / "input" / DRIVING, frames)
    write_speech(pack, base / "input" / SPEECH, frames / 25.0)
    write_driving_video(pack, base / "input" / "anytalk_driving_b.mp4", frames, seed=2)
    classes = {**make_core_nodes(HarnessDirs(base)), **pack.NODE_CLASS_MAPPINGS}
    env = Env(pack, base, Executor(classes, pack_type_checks(pack)), classes)
    env.activate()
    return env


if __name__ == "__main__":
    for p in write_workflows():
        print(p.relative_to(REPO_ROOT))
