"""A real photo through the node pack: skimage's astronaut, cropped with crop auto, animated and pasted back,
through the split graph (the shipped paste-back workflow) and the all-in-one Animate node, each against the
``anytalk animate --crop auto --paste-back`` command on the same files (issue 23's acceptance)."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from skimage import data

from comfy_harness import DEMO_CHECKPOINT, load_pack, make_env, pack_submodule, save_png, write_driving_video

pack = load_pack()
stages = pack_submodule(pack, "anytalk_core.stages")
ASTRONAUT = "astronaut.png"
# Driving frames larger than the tiny model's 64 px, so that both paths crop them. At exactly the model's size the
# nodes skip the "full" crop (nodes/motion.py) and the command does not (an identity bicubic warp, 4e-6 off, and
# a contiguous instead of a channels-last batch): the pasted frames then differ by up to 2.4e-6, not bit for bit.
DRIVING = "astronaut_driving.mp4"
FRAMES = 5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine
    env = make_env(tmp_path_factory.mktemp("astronaut"), pack, frames=FRAMES)
    save_png(data.astronaut().astype(np.float32) / 255, env.base / "input" / ASTRONAUT)
    write_driving_video(pack, env.base / "input" / DRIVING, FRAMES, size=96)
    yield env
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _active(env):
    env.activate()


@pytest.fixture(scope="module")
def photo(env) -> torch.Tensor:
    """The photo as the nodes and the command read it: (512, 512, 3) float32 in 0..1."""
    from PIL import Image

    with Image.open(env.base / "input" / ASTRONAUT) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)


@pytest.fixture(scope="module")
def face_box(photo) -> tuple[float, float, float, float]:
    """dlib's most confident HOG face box (x, y, w, h) on the photo, found here without the pack's code."""
    dlib = pytest.importorskip("dlib")
    found, scores, _ = dlib.get_frontal_face_detector().run((photo.numpy() * 255).round().astype(np.uint8), 1)
    r = found[int(np.argmax(scores))]
    return float(r.left()), float(r.top()), float(r.width()), float(r.height())


def square(spec, index: int = 0) -> tuple[float, float, float, float]:
    """A crop's square in photo pixels: centre x, centre y, side, angle (degrees)."""
    left, top, side = spec.box(index)
    m = spec.matrix[index]
    return left + side / 2, top + side / 2, side, math.degrees(math.atan2(float(m[1, 0]), float(m[0, 0])))


def footprint(spec, margin: float) -> torch.Tensor:
    """(H, W) bool: the photo pixels whose crop coordinates lie within ``margin`` crop pixels of the square."""
    h, w = spec.original_hw
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    m = spec.matrix[0]
    u, v = m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    hi = spec.size - 1 + margin
    return (u >= -margin) & (u <= hi) & (v >= -margin) & (v <= hi)


@pytest.fixture(scope="module")
def cli_run(env, tmp_path_factory):
    """``anytalk animate --crop auto --paste-back`` on the photo: its source crop and the frames it hands to the
    video writer (before encoding: the encoder is lossy, the frames are what the stages made)."""
    import anytalk_core.pipeline as pipeline
    from anytalk_app.cli import main

    seen: dict = {"frames": []}
    real_source_stage, real_writer = pipeline.source_stage, pipeline.VideoWriter

    def source_stage(*args, **kwargs):
        seen["source"] = real_source_stage(*args, **kwargs)
        return seen["source"]

    class Writer(real_writer):
        def write(self, frames):
            seen["frames"].append(frames.detach().clone())
            return super().write(frames)

    out = tmp_path_factory.mktemp("cli") / "astronaut.mp4"
    pipeline.source_stage, pipeline.VideoWriter = source_stage, Writer
    try:
        code = main(["animate", "--source", str(env.base / "input" / ASTRONAUT),
                     "--driving", str(env.base / "input" / DRIVING),
                     "--checkpoint", str(env.base / "demo" / DEMO_CHECKPOINT.split("/", 1)[1]),
                     "--out", str(out), "--crop", "auto", "--paste-back", "--device", "cpu", "--precision", "fp32",
                     "--quiet"])  # the graph below loads the model in fp32
    finally:
        pipeline.source_stage, pipeline.VideoWriter = real_source_stage, real_writer
    assert code == 0 and out.is_file()
    return seen["source"].spec, torch.cat(seen["frames"])


def split_graph(env) -> tuple[dict, str, str]:
    """The shipped paste-back workflow on the astronaut, feathered like the command (0.1)."""
    prompt = env.api("anytalk_paste_back")
    ids = {node["class_type"]: nid for nid, node in prompt.items()}
    prompt[ids["LoadImage"]]["inputs"]["image"] = ASTRONAUT
    prompt[ids["AnyTalkLoadVideo"]]["inputs"]["video"] = DRIVING
    assert prompt[ids["AnyTalkLoadSource"]]["inputs"]["crop"] == "auto"
    prompt[ids["AnyTalkPasteBack"]]["inputs"]["feather"] = 0.1
    return prompt, ids["AnyTalkLoadSource"], ids["AnyTalkPasteBack"]


def animate_graph() -> dict:
    """Load Image -> AnyTalk Animate (source_crop auto, paste_back) <- Load Video, the demo model."""
    return {
        "1": {"class_type": "AnyTalkLoadModel", "inputs": {"checkpoint": DEMO_CHECKPOINT, "family": "auto",
                                                           "device": "auto", "precision": "fp32", "chunk_size": 8}},
        "2": {"class_type": "LoadImage", "inputs": {"image": ASTRONAUT}},
        "3": {"class_type": "AnyTalkLoadVideo", "inputs": {"frame_rate": 0.0, "max_frames": 250,
                                                           "skip_first_frames": 0, "max_size": 0, "path": "",
                                                           "video": DRIVING}},
        "4": {"class_type": "AnyTalkAnimate", "inputs": {
            "model": ["1", 0], "source_image": ["2", 0], "source_crop": "auto", "driving_crop": "full",
            "mode": "relative", "pose_strength": 1.0, "expression_strength": 1.0, "translation_strength": 1.0,
            "smoothing": 0.0, "paste_back": True, "fps": ["3", 2], "driving_images": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


def check_pasted(frames: torch.Tensor, photo: torch.Tensor, spec, face_box) -> None:
    """Full photo size; outside the pasted square the photo bit for bit; the face itself is the model's."""
    assert frames.shape == (FRAMES, 512, 512, 3)
    outside = ~footprint(spec, margin=1.0)
    assert outside.float().mean() > 0.5  # the head's square, not the picture
    assert torch.equal(frames[:, outside], photo[outside].expand(FRAMES, -1, -1))
    x, y, w, h = (int(round(v)) for v in face_box)
    changed = (frames[:, y:y + h, x:x + w] - photo[y:y + h, x:x + w]).abs().amax(dim=-1) > 2 / 255
    assert changed.float().mean() > 0.9  # a random tiny model: nothing of the face survives


def test_cli_crop_auto_frames_the_head(cli_run, face_box, photo):
    spec, frames = cli_run
    cx, cy, side, _ = square(spec)
    x, y, w, h = face_box
    # the face box lies inside the square, which is a head-and-shoulders framing, not the whole picture
    assert cx - side / 2 <= x and x + w <= cx + side / 2 and cy - side / 2 <= y and y + h <= cy + side / 2
    assert 1.5 * w <= side <= 3.5 * w and side < 0.6 * 512
    assert spec.reports[0].detector != "center" and spec.reports[0].detector != "foreground"
    check_pasted(frames, photo, spec, face_box)


def test_split_graph_crops_like_the_stages_and_pastes_back_like_the_command(env, cli_run, photo, face_box, caplog):
    cli_spec, cli_frames = cli_run
    prompt, source_id, paste_id = split_graph(env)
    with caplog.at_level(logging.INFO, logger="anytalk"):
        result = env.fresh_executor().execute(prompt)
    # the node says which detector framed the photo, as the command does (ComfyUI shows the log in its console)
    assert "AnyTalk crop auto: the source framed by the human face detector (dlib HOG): face box" in caplog.text
    spec = result.outputs[source_id][0].spec
    original = photo.permute(2, 0, 1).unsqueeze(0)
    library = stages.crop_spec(original, "auto", spec.size)
    assert square(spec) == pytest.approx(square(library), abs=1e-9)
    assert square(spec) == pytest.approx(square(cli_spec), abs=1e-6)
    frames = result.outputs[paste_id][0]
    check_pasted(frames, photo, spec, face_box)
    assert torch.equal(frames, cli_frames)


def test_animate_node_crops_and_pastes_back_like_the_command(env, cli_run, photo, face_box, monkeypatch):
    cli_spec, cli_frames = cli_run
    animate = pack_submodule(pack, "nodes.animate")
    sources = []

    def load_source(*args, **kwargs):
        sources.append(real(*args, **kwargs))
        return sources[-1]

    real = animate.load_source
    monkeypatch.setattr(animate, "load_source", load_source)
    result = env.fresh_executor().execute(animate_graph())
    (source,) = sources
    assert square(source.spec) == pytest.approx(square(cli_spec), abs=1e-6)
    frames = result.outputs["4"][0]
    check_pasted(frames, photo, source.spec, face_box)
    assert torch.equal(frames, cli_frames)


def test_crop_auto_warns_when_no_head_is_found(env, caplog):
    flat = torch.full((1, 120, 160, 3), 0.5)
    with caplog.at_level(logging.INFO, logger="anytalk"):
        source, _ = pack.NODE_CLASS_MAPPINGS["AnyTalkLoadSource"]().load(flat, crop="auto", size=64)
    (record,) = [r for r in caplog.records if "crop auto" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "no head found in the source; using the centre square instead (a 120 x 120 px square of the 160 x 120 " \
        "picture)" in record.getMessage() and "crop = box" in record.getMessage()
    assert square(source.spec)[:3] == pytest.approx((80.0, 60.0, 120.0))  # edges: the middle of the picture
