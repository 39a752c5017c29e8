"""The shipped workflows: UI-format files and their API-format twins agree, every API workflow validates and
executes in the harness with a tiny checkpoint and produces its video, the cache keeps the source branch when
only the driving video changes, and a long clip runs through the split graph without per-frame volumes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfy_harness import (
    INPUTS_NOTE,
    REPO_ROOT,
    UI_ONLY_NODES,
    WORKFLOW_NAMES,
    PromptError,
    is_widget,
    load_pack,
    make_env,
    pack_submodule,
    tensor_bytes,
    ui_to_api,
    widget_inputs,
    write_driving_video,
)

pack = load_pack()
media = pack_submodule(pack, "anytalk_core.media")
objects = pack_submodule(pack, "nodes._objects")
FRAMES = 8
WORKFLOWS = REPO_ROOT / "workflows"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine
    yield make_env(tmp_path_factory.mktemp("workflows"), pack, frames=FRAMES)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _active(env):
    env.activate()


@pytest.fixture(scope="module")
def runs(env):
    """Each shipped API workflow executed once (fresh cache each) -> (result, executor)."""
    env.activate()
    out = {}
    for name in WORKFLOW_NAMES:
        executor = env.fresh_executor()
        out[name] = (executor.execute(env.api(name)), executor)
    return out


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

def test_workflow_folder_holds_ui_files_and_api_twins():
    ui = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    api = sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json"))
    assert ui == api == sorted(WORKFLOW_NAMES)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_ui_file_is_a_consistent_front_end_workflow(name, env):
    ui = load(WORKFLOWS / f"{name}.json")
    assert ui["version"] == 0.4 and {"last_node_id", "last_link_id", "nodes", "links", "groups", "config",
                                     "extra"} <= set(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    nodes = {k: n for k, n in nodes.items() if n["type"] not in UI_ONLY_NODES}
    for link_id, src, src_slot, dst, dst_slot, type_ in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == type_ and env.classes[nodes[src]["type"]].RETURN_TYPES[src_slot] == type_
        assert inp["type"] == type_
    for node in nodes.values():
        cls = env.classes[node["type"]]
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                "widgets_values"} <= set(node)
        spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
        for slot in node["inputs"]:
            type_, opts = spec[slot["name"]][0], spec[slot["name"]][1] if len(spec[slot["name"]]) > 1 else {}
            if is_widget(type_, opts):
                assert slot["widget"] == {"name": slot["name"]}
            else:
                assert slot["type"] == type_
        out_types = [o["type"] for o in node["outputs"]]
        if node["type"] == "AnyTalkAssembleVideo":  # VIDEO exists where the running ComfyUI has the type
            assert out_types == ["STRING", "VIDEO"] and list(cls.RETURN_TYPES) == out_types[:len(cls.RETURN_TYPES)]
        else:
            assert out_types == list(cls.RETURN_TYPES)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_each_workflow_describes_itself_in_a_note_on_the_canvas(name):
    """The front end shows a Note node (a text widget); it never shows ``extra``. Notes are UI-only: no API twin."""
    ui = load(WORKFLOWS / f"{name}.json")
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and "anytalk_note" not in ui["extra"]
    (note,) = notes
    assert note["inputs"] == [] and note["outputs"] == [] and note["mode"] == 0
    assert len(note["widgets_values"]) == 1 and note["widgets_values"][0].endswith(INPUTS_NOTE)
    assert len(note["widgets_values"][0]) > len(INPUTS_NOTE) + 40  # says what the workflow does first
    others = [n for n in ui["nodes"] if n is not note]
    top = min(n["pos"][1] for n in others)
    assert note["pos"][1] + note["size"][1] <= top  # above the graph, covering no node
    api = load(WORKFLOWS / "api" / f"{name}.json")
    assert str(note["id"]) not in api and all(n["class_type"] not in UI_ONLY_NODES for n in api.values())


FILE_WIDGETS = {"LoadImage": "image", "AnyTalkLoadVideo": "video", "AnyTalkLoadAudio": "audio"}


def test_every_input_file_a_workflow_names_ships_in_workflows_inputs():
    """ComfyUI lists only files in its input/ folder: the README says to copy workflows/inputs/ there."""
    shipped = {p.name for p in (WORKFLOWS / "inputs").iterdir() if p.is_file()}
    named = set()
    for name in WORKFLOW_NAMES:
        for node in load(WORKFLOWS / "api" / f"{name}.json").values():
            widget = FILE_WIDGETS.get(node["class_type"])
            if widget and not isinstance(node["inputs"].get(widget), list):
                named.add(node["inputs"][widget])
                assert node["inputs"].get("path", "") == ""  # no typed path that would bypass the file list
    assert named and named <= shipped, named - shipped
    demo = pack_submodule(pack, "anytalk_core.demo")
    assert shipped == set(demo.WORKFLOW_INPUTS)
    for file in shipped:
        assert 1_000 < (WORKFLOWS / "inputs" / file).stat().st_size < 400_000, file  # small
    info = media.probe_video(WORKFLOWS / "inputs" / "anytalk_driving.mp4")
    assert info.frame_count == 100 and info.has_audio
    waveform, rate = media.read_audio(WORKFLOWS / "inputs" / "anytalk_speech.wav")
    assert rate == 16000 and abs(waveform.shape[1] / rate - info.frame_count / info.fps) < 0.05
    from PIL import Image

    for file in ("anytalk_portrait.png", "anytalk_cartoon_fox.png", "anytalk_photo.png"):
        with Image.open(WORKFLOWS / "inputs" / file) as im:
            assert im.mode == "RGB" and min(im.size) >= 256


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_ui_and_api_twins_agree(name, env):
    ui = load(WORKFLOWS / f"{name}.json")
    api = load(WORKFLOWS / "api" / f"{name}.json")
    converted, leftovers = ui_to_api(ui, env.classes)
    assert set(converted) == set(api)
    for nid, node in api.items():
        assert converted[nid]["class_type"] == node["class_type"]
        assert converted[nid]["inputs"] == node["inputs"], f"node {nid} ({node['class_type']})"
        # widgets_values hold exactly one value per widget (plus ComfyUI's seed control), nothing else
        extra = leftovers[nid]
        assert extra == (["image"] if node["class_type"] == "LoadImage" else []), f"node {nid}: {extra}"
        # the API twin lists widgets in INPUT_TYPES order
        order = [w[0] for w in widget_inputs(env.classes[node["class_type"]])]
        widgets = [k for k, v in node["inputs"].items() if not isinstance(v, list)]
        assert widgets == [k for k in order if k in widgets]


def test_generate_then_animate_uses_core_image_nodes():
    api = load(WORKFLOWS / "api" / "anytalk_generate_then_animate.json")
    types_ = [n["class_type"] for n in api.values()]
    for core in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode"):
        assert core in types_
    vae = next(k for k, n in api.items() if n["class_type"] == "VAEDecode")
    assert any(n["class_type"].startswith("AnyTalk") and [vae, 0] in n["inputs"].values() for n in api.values())


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------

EXPECTED_SIZE = {"anytalk_paste_back": (160, 120)}


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_executes_and_writes_its_video(name, runs, env):
    result, executor = runs[name]
    assemble = [nid for nid, n in env.api(name).items() if n["class_type"] == "AnyTalkAssembleVideo"]
    assert len(assemble) == 1
    path = Path(result.outputs[assemble[0]][0])
    assert path.is_file() and path.parent.parent == env.base / "output"
    entry = result.ui[assemble[0]]["images"][0]
    assert entry["filename"] == path.name and entry["type"] == "output"
    info = media.probe_video(path)
    assert info.frame_count == FRAMES and abs(info.fps - 25.0) < 1e-6 and info.has_audio
    assert (info.width, info.height) == EXPECTED_SIZE.get(name, (64, 64))
    executed = {env.api(name)[nid]["class_type"] for nid in result.executed}
    assert executed == {n["class_type"] for n in env.api(name).values()}


def test_pose_edit_workflow_saves_a_reusable_motion(runs, env):
    result, _ = runs["anytalk_pose_expression_edit"]
    save = next(k for k, n in env.api("anytalk_pose_expression_edit").items()
                if n["class_type"] == "AnyTalkSaveMotion")
    motion = pack_submodule(pack, "anytalk_core.motion").Motion.load(result.outputs[save][0])
    assert len(motion) == FRAMES and motion.fps == 25.0


def test_audio_workflow_takes_the_pose_from_the_video_and_the_face_from_the_sound(runs, env):
    """Motion Mix: head pose from the driving video, expression from speech; silence = the network's rest face."""
    prompt = env.api("anytalk_audio_driven")
    result, _ = runs["anytalk_audio_driven"]
    video_motion = result.outputs[_node(prompt, "AnyTalkEstimateMotion")][0]
    speech_motion, rest = result.outputs[_node(prompt, "AnyTalkAudioToMotion")][:2]
    mix = next(k for k, n in prompt.items() if n["class_type"] == "AnyTalkMotionMix"
               and n["inputs"]["motion_b"] == [_node(prompt, "AnyTalkAudioToMotion"), 0])
    mixed = result.outputs[mix][0]
    assert len(mixed) == len(speech_motion) == FRAMES and mixed.fps == 25.0
    for field in ("yaw", "pitch", "roll", "translation"):
        assert torch.equal(getattr(mixed, field), getattr(video_motion, field)), field
    assert torch.equal(mixed.expression, speech_motion.expression)
    talking = result.outputs[_node(prompt, "AnyTalkGenerate")][0]
    assert (talking - talking[:1]).abs().max() > 1e-3
    media.write_wav(env.base / "input" / "anytalk_silence.wav", torch.zeros(1, FRAMES * 640), 16000, overwrite=True)
    prompt[_node(prompt, "AnyTalkLoadAudio")]["inputs"]["audio"] = "anytalk_silence.wav"
    silent = env.fresh_executor().execute(prompt)
    quiet = silent.outputs[_node(prompt, "AnyTalkAudioToMotion")][0]
    assert (quiet.expression - rest.expression).abs().max() < 1e-4  # silence: the face stays at rest


def test_running_a_workflow_again_never_overwrites(env):
    prompt = env.api("anytalk_cross_domain")
    assemble = _node(prompt, "AnyTalkAssembleVideo")
    executor = env.fresh_executor()
    first = executor.execute(prompt)
    again = executor.execute(prompt)  # nothing changed: everything comes from the cache, as in ComfyUI
    assert again.executed == [] and again.outputs[assemble] == first.outputs[assemble]
    second = env.fresh_executor().execute(prompt)  # e.g. after a restart: a new file, the first one kept
    paths = [Path(first.outputs[assemble][0]), Path(second.outputs[assemble][0])]
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)


def test_changing_only_the_driving_video_does_not_recompute_the_source(env):
    executor = env.fresh_executor()
    prompt = env.api("anytalk_video_driven")
    executor.execute(prompt)
    computed = objects.SOURCE_CACHE.computed
    video = next(k for k, n in prompt.items() if n["class_type"] == "AnyTalkLoadVideo")
    prompt[video]["inputs"]["video"] = "anytalk_driving_b.mp4"
    second = executor.execute(prompt)
    kinds = {prompt[k]["class_type"] for k in second.executed}
    assert kinds == {"AnyTalkLoadVideo", "AnyTalkEstimateMotion", "AnyTalkMotionSmooth", "AnyTalkTransferMotion",
                     "AnyTalkWarp3D", "AnyTalkGenerate", "AnyTalkAssembleVideo"}
    assert objects.SOURCE_CACHE.computed == computed


def test_animate_node_reuses_the_source_work_for_a_new_driving_video(env):
    executor = env.fresh_executor()
    prompt = env.api("anytalk_generate_then_animate")
    executor.execute(prompt)
    computed = objects.SOURCE_CACHE.computed
    video = next(k for k, n in prompt.items() if n["class_type"] == "AnyTalkLoadVideo")
    prompt[video]["inputs"]["video"] = "anytalk_driving_b.mp4"
    second = executor.execute(prompt)
    assert "AnyTalkAnimate" in {prompt[k]["class_type"] for k in second.executed}
    assert "VAEDecode" not in {prompt[k]["class_type"] for k in second.executed}
    assert objects.SOURCE_CACHE.computed == computed


# --------------------------------------------------------------------------------------------------
# Validation against INPUT_TYPES
# --------------------------------------------------------------------------------------------------

def _node(prompt, class_type):
    return next(k for k, n in prompt.items() if n["class_type"] == class_type)


@pytest.mark.parametrize("edit,message", [
    (lambda p: p[_node(p, "AnyTalkLoadModel")]["inputs"].update(chunk_size=0), "smaller than min"),
    (lambda p: p[_node(p, "AnyTalkLoadModel")]["inputs"].update(precision="fp8"), "not in list"),
    (lambda p: p[_node(p, "AnyTalkLoadModel")]["inputs"].update(checkpoint="nope.safetensors"), "not found"),
    (lambda p: p[_node(p, "AnyTalkTransferMotion")]["inputs"].update(adapt_scale="yes"), "not a BOOLEAN"),
    (lambda p: p[_node(p, "AnyTalkTransferMotion")]["inputs"].update(pose_strength=9.0), "bigger than max"),
    (lambda p: p[_node(p, "AnyTalkGenerate")]["inputs"].update(warp=[_node(p, "AnyTalkLoadSource"), 0]),
     "ANYTALK_SOURCE is not ANYTALK_WARP"),
    (lambda p: p[_node(p, "AnyTalkGenerate")]["inputs"].pop("warp"), "required input 'warp' is missing"),
    (lambda p: p[_node(p, "AnyTalkWarp3D")]["inputs"].update(model="demo"), "must be linked"),
    (lambda p: p[_node(p, "AnyTalkLoadVideo")]["inputs"].update(video="missing.mp4"), "'missing.mp4' not in list"),
    (lambda p: p[_node(p, "AnyTalkLoadVideo")]["inputs"].update(path="missing.mp4"), "video file not found"),
    (lambda p: p[_node(p, "AnyTalkLoadVideo")]["inputs"].update(path="/etc/passwd"), "outside the folders"),
    (lambda p: p.pop(_node(p, "AnyTalkAssembleVideo")) and p.pop(_node(p, "PreviewImage")), "no outputs"),
])
def test_harness_rejects_invalid_graphs_like_comfyui(env, edit, message):
    prompt = env.api("anytalk_video_driven")
    edit(prompt)
    with pytest.raises(PromptError, match=message):
        env.fresh_executor().validate(prompt)


@pytest.mark.parametrize("edit,widget", [
    (lambda p: p[_node(p, "AnyTalkLoadVideo")]["inputs"].update(video="missing.mp4"), "video"),
    (lambda p: p[_node(p, "AnyTalkLoadVideo")]["inputs"].update(path="missing.mp4"), "path"),
])
def test_a_missing_video_is_reported_once(env, edit, widget):
    """One problem, one message, against the widget that holds it (not also against the empty other one)."""
    prompt = env.api("anytalk_video_driven")
    edit(prompt)
    with pytest.raises(PromptError) as caught:
        env.fresh_executor().validate(prompt)
    assert len(caught.value.errors) == 1, caught.value.errors
    assert f"input {widget!r}" in caught.value.errors[0]


# --------------------------------------------------------------------------------------------------
# A long clip through the split graph
# --------------------------------------------------------------------------------------------------

def test_long_clip_runs_without_per_frame_volumes(env, monkeypatch):
    n = 300
    write_driving_video(pack, env.base / "input" / "anytalk_long.mp4", n, size=64)
    face = pack_submodule(pack, "anytalk_core.models.face_vid2vid.model")
    model_cls = next(c for c in vars(face).values()
                     if isinstance(c, type) and c.__module__ == face.__name__ and "decode" in vars(c))
    batches = []
    original = model_cls.decode

    def recording_decode(self, volume, kp_driving, kp_source):
        batches.append(int(kp_driving.shape[0]))
        return original(self, volume, kp_driving, kp_source)

    monkeypatch.setattr(model_cls, "decode", recording_decode)
    sizes = {}
    for video, frames in (("anytalk_driving.mp4", FRAMES), ("anytalk_long.mp4", n)):
        prompt = env.api("anytalk_video_driven")
        prompt[_node(prompt, "AnyTalkLoadVideo")]["inputs"].update(video=video, max_frames=0)
        batches.clear()
        executor = env.fresh_executor()
        result = executor.execute(prompt)
        chunk = prompt[_node(prompt, "AnyTalkLoadModel")]["inputs"]["chunk_size"]
        assert sum(batches) == frames and max(batches) <= chunk  # decoded chunk by chunk
        warp = result.outputs[_node(prompt, "AnyTalkWarp3D")][0]
        assert len(warp) == frames
        held = 0  # everything the graph keeps that is not a picture or sound: must not grow per frame
        for nid, outputs in result.outputs.items():
            cls = executor.classes[prompt[nid]["class_type"]]
            held += sum(tensor_bytes(v) for t, v in zip(cls.RETURN_TYPES, outputs) if t.startswith("ANYTALK_"))
        sizes[frames] = (tensor_bytes(warp), held, warp.state.volume)
        generated = result.outputs[_node(prompt, "AnyTalkGenerate")][0]
        assert generated.shape == (frames, 64, 64, 3)
        path = result.outputs[_node(prompt, "AnyTalkAssembleVideo")][0]
        assert media.probe_video(path).frame_count == frames
    (warp_short, held_short, volume), (warp_long, held_long, _) = sizes[FRAMES], sizes[n]
    per_frame_volume = volume[0].numel() * volume.element_size()
    assert (warp_long - warp_short) / (n - FRAMES) == 15 * 3 * 4  # the warp plan: 180 bytes per frame
    growth = (held_long - held_short) / (n - FRAMES)
    assert growth < 1024, growth  # motion records + keypoints, a few hundred bytes per frame
    assert growth < per_frame_volume / 10, (growth, per_frame_volume)
    assert torch.isfinite(generated).all()
