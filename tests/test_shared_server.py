"""A ComfyUI server shared with people who may queue any prompt (issue 21, the node side): typed paths stay inside
ComfyUI's folders, listings survive symlink loops, hostile names get one clear line, saves never hide their files,
temp files of killed writers are cleaned up. Every hostile file is built here, in tmp_path."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from comfy_harness import PromptError, load_pack, make_env, pack_submodule

pack = load_pack()
N = pack.NODE_CLASS_MAPPINGS
comfy = pack_submodule(pack, "nodes._comfy")
AnyTalkError = pack_submodule(pack, "nodes._objects").AnyTalkError
io_utils = pack_submodule(pack, "anytalk_core.io_utils")
Motion = pack_submodule(pack, "anytalk_core.motion").Motion

LOADERS = {  # node -> (its file-list input, a file of the right kind in input/)
    "AnyTalkLoadVideo": ("video", "anytalk_driving.mp4"),
    "AnyTalkLoadAudio": ("audio", "anytalk_driving.mp4"),
    "AnyTalkLoadMotion": ("motion_file", "take.safetensors"),
}
WIDGETS = {
    "AnyTalkLoadVideo": dict(frame_rate=0.0, max_frames=0, skip_first_frames=0, max_size=0),
    "AnyTalkLoadAudio": dict(start_time=0.0, duration=0.0, sample_rate=0, mono=False),
    "AnyTalkLoadMotion": {},
}


def tiny_motion(n: int):
    return Motion(yaw=torch.zeros(n), pitch=torch.zeros(n), roll=torch.zeros(n), translation=torch.zeros(n, 3), expression=torch.zeros(n, 21, 3), fps=25.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    e = make_env(tmp_path_factory.mktemp("comfy"), pack, frames=4)
    tiny_motion(3).save(e.base / "input" / "take.safetensors")
    yield e
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _active(env, monkeypatch):
    env.activate()
    monkeypatch.delenv(comfy.EXTRA_ROOTS_ENV, raising=False)


@pytest.fixture(scope="module")
def outside(tmp_path_factory, env):
    """A folder outside ComfyUI's, holding one real file of every kind."""
    out = tmp_path_factory.mktemp("private")
    for node, (_, name) in LOADERS.items():
        (out / name).write_bytes((env.base / "input" / name).read_bytes())
    return out


def load(node, path="", name=None):
    widget, default = LOADERS[node]
    cls = N[node]
    return getattr(cls(), cls.FUNCTION)(**WIDGETS[node], path=path, **{widget: name or default})


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the test run) if the block takes longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------------
# 1. Typed paths stay inside ComfyUI's folders
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("node", sorted(LOADERS))
def test_typed_paths_outside_comfyui_folders_are_refused_without_revealing_existence(env, outside, node):
    _, name = LOADERS[node]
    rel_escape = os.path.relpath(outside / name, env.base / "input")  # ../../private/...
    hostile = [str(outside / name), str(outside / "missing.bin"), rel_escape, f"{env.base}/input/../../{name}",
               "~/" + name, "/etc/passwd", "/etc/no_such_file"]
    messages = set()
    for typed in hostile:
        message = N[node].VALIDATE_INPUTS(path=typed)
        assert isinstance(message, str) and "outside the folders AnyTalk reads" in message, (typed, message)
        assert "ANYTALK_EXTRA_INPUT_ROOTS" in message
        messages.add(message.replace(repr(typed), "<path>"))
        with pytest.raises(AnyTalkError, match="outside the folders"):
            load(node, path=typed)
    assert len(messages) == 1  # the same words whether the outside file exists or not


@pytest.mark.parametrize("node", sorted(LOADERS))
def test_paths_inside_the_folders_and_owner_symlinks_and_extra_roots_load(env, outside, node, monkeypatch):
    _, name = LOADERS[node]
    assert N[node].VALIDATE_INPUTS(path=str(env.base / "input" / name)) is True
    assert N[node].VALIDATE_INPUTS(path=name) is True  # relative to input/
    assert N[node].VALIDATE_INPUTS(path=f"sub/../{name}") is True
    assert load(node, path=name)
    # a symlink the server's owner placed in input/ is the owner's choice: followed
    link = env.base / "input" / f"shared_{name}"
    if not link.is_symlink():
        link.symlink_to(outside / name)
    assert N[node].VALIDATE_INPUTS(path=str(link)) is True
    assert load(node, path=str(link)) and load(node, name=link.name)
    # ... but .. through it is resolved as written: it cannot climb out
    assert "outside" in N[node].VALIDATE_INPUTS(path=f"{link}/../../{name}")
    # the owner may allow more folders
    monkeypatch.setenv(comfy.EXTRA_ROOTS_ENV, os.pathsep.join(["relative/ignored", str(outside)]))
    assert N[node].VALIDATE_INPUTS(path=str(outside / name)) is True
    assert load(node, path=str(outside / name))
    assert "not found" in N[node].VALIDATE_INPUTS(path=str(outside / "missing.bin"))


def test_file_list_names_cannot_leave_their_folder(env, outside):
    with pytest.raises(AnyTalkError, match="not a file name inside"):
        load("AnyTalkLoadVideo", name=f"../{outside.name}/anytalk_driving.mp4")
    with pytest.raises(AnyTalkError, match="not a file name inside"):
        load("AnyTalkLoadMotion", name="../../x.safetensors [output]")


# ------------------------------------------------------------------------------------------------
# 2. Listings are bounded and survive symlink loops
# ------------------------------------------------------------------------------------------------

def test_symlink_loops_in_input_and_model_folders_do_not_hang_the_listings(env, tmp_path):
    loops = []
    for folder in (env.base / "input", env.base / "models" / "anytalk", env.base / "models" / "liveportrait"):
        (folder / "nested").mkdir(exist_ok=True)
        for i, target in enumerate((folder, folder, folder / "nested")):
            link = folder / f"loop_{i}"
            link.symlink_to(target, target_is_directory=True)
            loops.append(link)
        (folder / "nested" / "back").symlink_to(folder, target_is_directory=True)
        loops.append(folder / "nested" / "back")
    try:
        with deadline(120):
            videos = N["AnyTalkLoadVideo"].INPUT_TYPES()["required"]["video"][0]
            N["AnyTalkLoadAudio"].INPUT_TYPES()
            N["AnyTalkLoadMotion"].INPUT_TYPES()
            N["AnyTalkLoadModel"].INPUT_TYPES()
        assert "anytalk_driving.mp4" in videos
        assert len(videos) == len(set(videos)) and len(videos) < 20  # each real folder listed once
    finally:
        for link in loops:
            link.unlink()


def test_listing_stops_at_the_depth_and_entry_limits(tmp_path, monkeypatch):
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(comfy.MAX_LIST_DEPTH + 2)])
    deep.mkdir(parents=True)
    (deep / "too_deep.mp4").write_bytes(b"x")
    (tmp_path / "d0" / "shallow.mp4").write_bytes(b"x")
    names = comfy.list_files(tmp_path, (".mp4",))
    assert names == ["d0/shallow.mp4"]
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(50):
        (wide / f"clip{i:03d}.mp4").write_bytes(b"x")
    assert len(comfy.list_files(wide, (".mp4",))) == 50
    monkeypatch.setattr(comfy, "MAX_LIST_ENTRIES", 20)
    some = comfy.list_files(wide, (".mp4",))
    assert len(some) == 20 and set(some) < {f"clip{i:03d}.mp4" for i in range(50)}


# ------------------------------------------------------------------------------------------------
# 3. Hostile names: one clear line, reported once
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("node", sorted(LOADERS))
def test_long_names_and_nul_bytes_get_one_clear_line(env, node):
    long_name = "a" * 5000 + ".mp4"
    message = N[node].VALIDATE_INPUTS(path=long_name)
    assert isinstance(message, str) and "too long (5004 characters; at most 4096)" in message
    message = N[node].VALIDATE_INPUTS(path="a" * 300 + ".mp4")
    assert "file or folder name of 304 bytes" in message and len(message) < 400
    assert "NUL character" in N[node].VALIDATE_INPUTS(path="clip\x00.mp4")
    with pytest.raises(AnyTalkError, match="5004 characters"):
        load(node, path=long_name)
    with pytest.raises(AnyTalkError, match="NUL character"):
        load(node, name="clip\x00.mp4")


def test_load_model_refuses_nul_and_long_names_with_our_error():
    for name in ("demo/anytalk_demo.safetensors\x00.txt", "x" * 5000 + ".safetensors"):
        message = N["AnyTalkLoadModel"].VALIDATE_INPUTS(checkpoint=name)
        assert isinstance(message, str) and message.startswith("AnyTalk Load Model: checkpoint name")
        with pytest.raises(AnyTalkError, match="checkpoint name"):
            N["AnyTalkLoadModel"]().load(name)


def test_save_nodes_refuse_long_prefixes_with_our_error(env):
    motion = tiny_motion(2)
    with pytest.raises(AnyTalkError, match=r"AnyTalk Save Motion: filename prefix is too long \(5000 characters"):
        N["AnyTalkSaveMotion"]().save(motion, filename_prefix="p" * 5000)
    with pytest.raises(AnyTalkError, match=r"AnyTalk Save Motion: filename prefix .* longer than 200 bytes"):
        N["AnyTalkSaveMotion"]().save(motion, filename_prefix="p" * 230)
    with pytest.raises(AnyTalkError, match=r"AnyTalk Assemble Video: filename prefix .* longer than 200 bytes"):
        N["AnyTalkAssembleVideo"]().assemble(torch.rand(2, 16, 16, 3), filename_prefix="v/" + "p" * 230)
    with pytest.raises(AnyTalkError, match="NUL character"):
        N["AnyTalkSaveMotion"]().save(motion, filename_prefix="a\x00b")
    name = N["AnyTalkSaveMotion"]().save(motion, filename_prefix="anytalk_motion/" + "q" * 200)["result"][0]
    assert Path(name).is_file()  # the longest accepted prefix saves (room left for counter and temp tag)


def test_a_missing_video_is_reported_once(env):
    prompt = {
        "1": {"class_type": "AnyTalkLoadVideo", "inputs": {**WIDGETS["AnyTalkLoadVideo"], "path": "",
                                                           "video": "no_such_clip.mp4"}},
        "2": {"class_type": "AnyTalkAssembleVideo", "inputs": {"images": ["1", 0], "fps": 25.0,
                                                               "filename_prefix": "x", "format": "mp4", "crf": 0,
                                                               "save_output": False}},
    }
    with pytest.raises(PromptError) as info:
        env.fresh_executor().validate(prompt)
    assert len(info.value.errors) == 1 and "no_such_clip.mp4" in info.value.errors[0]
    prompt["1"]["inputs"]["path"] = "/etc/passwd"
    prompt["1"]["inputs"]["video"] = "anytalk_driving.mp4"
    with pytest.raises(PromptError) as info:
        env.executor.validate(prompt)
    assert len(info.value.errors) == 1 and "outside the folders" in info.value.errors[0]


# ------------------------------------------------------------------------------------------------
# 4. Symlinked models, save prefixes, temp files
# ------------------------------------------------------------------------------------------------

def test_a_symlinked_model_is_listed_and_loads(env, tmp_path):
    real = tmp_path / "elsewhere" / "shared_model.safetensors"
    real.parent.mkdir()
    real.write_bytes((env.base / "demo" / "anytalk_demo.safetensors").read_bytes())
    link = env.base / "models" / "anytalk" / "linked.safetensors"
    link.symlink_to(real)
    try:
        assert "linked.safetensors" in N["AnyTalkLoadModel"].INPUT_TYPES()["required"]["checkpoint"][0]
        assert N["AnyTalkLoadModel"].VALIDATE_INPUTS(checkpoint="linked.safetensors") is True
        (model,) = N["AnyTalkLoadModel"]().load("linked.safetensors", device="cpu")
        assert model.path == str(link)
        assert "not found" in N["AnyTalkLoadModel"].VALIDATE_INPUTS(checkpoint="../../demo/anytalk_demo.safetensors")
    finally:
        link.unlink()


def _comfyui_like_folder_paths(output: Path) -> types.ModuleType:
    """folder_paths with ComfyUI's prefix splitting (normpath, then dirname/basename)."""
    fp = types.ModuleType("folder_paths")

    def get_save_image_path(prefix, output_dir, w=0, h=0):
        sub = os.path.dirname(os.path.normpath(prefix))
        name = os.path.basename(os.path.normpath(prefix))
        return os.path.join(output_dir, sub), name, 1, sub, prefix

    fp.get_save_image_path = get_save_image_path
    fp.get_output_directory = lambda: str(output)
    fp.get_input_directory = lambda: str(output.parent / "input")
    fp.get_temp_directory = lambda: str(output.parent / "temp")
    return fp


@pytest.mark.parametrize("inside_comfyui", [False, True])
def test_save_prefixes_that_would_hide_the_file_are_refused(env, monkeypatch, inside_comfyui):
    if inside_comfyui:
        monkeypatch.setitem(sys.modules, "folder_paths", _comfyui_like_folder_paths(env.base / "output"))
    motion = tiny_motion(2)
    before = sorted(p.name for p in (env.base / "output").rglob("*"))
    for prefix in ("", ".", "  ", ".hidden", "anytalk_motion/.x", "anytalk_motion/.sub/take"):
        with pytest.raises(AnyTalkError, match="hidden file or folder"):
            N["AnyTalkSaveMotion"]().save(motion, filename_prefix=prefix)
    for prefix in ("..", "../x", "/tmp/x"):
        with pytest.raises(AnyTalkError, match="outside the output folder"):
            N["AnyTalkSaveMotion"]().save(motion, filename_prefix=prefix)
    assert sorted(p.name for p in (env.base / "output").rglob("*")) == before


@pytest.mark.parametrize("node", ["AnyTalkSaveMotion", "AnyTalkAssembleVideo"])
def test_bad_save_prefixes_are_refused_when_queued_before_any_node_runs(env, node):
    # A prefix that can only fail at the save is refused by VALIDATE_INPUTS, with the save's own message, so an
    # artist does not wait for a whole render to learn it; nothing is made or read in the output folder.
    before = sorted(p.name for p in (env.base / "output").rglob("*"))
    for prefix, message in (("../../x", "would save outside the output folder"), ("/tmp/x", "outside the output"),
                            ("a/../../x", "outside the output"), (".hidden", "hidden file or folder"),
                            ("clips/.x/take", "hidden file or folder"), ("", "hidden file or folder"),
                            ("p" * 230, "longer than 200 bytes"), ("a\x00b", "NUL character")):
        result = N[node].VALIDATE_INPUTS(filename_prefix=prefix)
        assert isinstance(result, str) and message in result, (prefix, result)
    for prefix in ("AnyTalk", "clips/take", "a/../b", "%year%/take", "~/take"):
        assert N[node].VALIDATE_INPUTS(filename_prefix=prefix) is True, prefix
    assert N[node].VALIDATE_INPUTS() is True  # a prefix fed by a link is checked at the save
    assert sorted(p.name for p in (env.base / "output").rglob("*")) == before
    video = {"class_type": "AnyTalkLoadVideo", "inputs": {**WIDGETS["AnyTalkLoadVideo"], "path": "",
                                                          "video": "anytalk_driving.mp4"}}
    save = ({"class_type": "AnyTalkAssembleVideo", "inputs": {"images": ["1", 0], "fps": 25.0, "format": "mp4",
                                                              "crf": 0, "save_output": True}}
            if node == "AnyTalkAssembleVideo" else
            {"class_type": "AnyTalkSaveMotion", "inputs": {"motion": ["3", 0]}})
    prompt = {"1": video, "2": save,
              "3": {"class_type": "AnyTalkLoadMotion", "inputs": {"motion_file": "take.safetensors", "path": ""}}}
    save["inputs"]["filename_prefix"] = "../escape"
    executor = env.fresh_executor()
    with pytest.raises(PromptError) as info:
        executor.execute(prompt)
    assert len(info.value.errors) == 1 and "would save outside the output folder" in info.value.errors[0]
    assert executor.runs == {}  # refused before Load Video / Load Motion ran


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    # a writer killed mid-write (SIGKILL: no cleanup runs) leaves its hidden temp file
    script = (f"import os, signal, sys; sys.path.insert(0, {str(Path(pack.__file__).parent)!r})\n"
              "from anytalk_core.io_utils import atomic_output\n"
              f"with atomic_output({str(tmp_path / 'epoch_0001.safetensors')!r}) as tmp:\n"
              "    tmp.write_bytes(b'partial')\n"
              "    print(tmp.name, flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    killed = tmp_path / out.strip()
    assert killed.is_file() and f"p{proc.pid}r" in killed.name
    # other temp names: a live process (this one), another machine, a dead one of ours, a user's own file
    host = io_utils._host_tag()
    live = tmp_path / f".clip.{host}p{os.getpid()}r0123abcd.tmp.mp4"
    other_host = tmp_path / f".clip.{'0' if host[0] != '0' else '1'}{host[1:]}p{_dead_pid()}r0123abcd.tmp.mp4"
    dead = tmp_path / f".clip.{host}p{_dead_pid()}r89abcdef.tmp.mp4"
    users = tmp_path / ".notes.tmp.txt"
    for p in (live, other_host, dead, users):
        p.write_bytes(b"x")
    with io_utils.atomic_output(tmp_path / "epoch_0002.safetensors") as tmp:
        assert tmp.parent == tmp_path and f"p{os.getpid()}r" in tmp.name
        tmp.write_bytes(b"done")
    assert not killed.exists() and not dead.exists()
    assert live.exists() and other_host.exists() and users.exists()
    assert (tmp_path / "epoch_0002.safetensors").read_bytes() == b"done"


def test_temp_names_fit_the_file_system_for_long_final_names(tmp_path):
    final = tmp_path / ("n" * 240 + ".mp4")
    tmp = io_utils.new_temp_path(final)
    try:
        assert len(tmp.name) < 255 and tmp.name.startswith(".nnn")
    finally:
        tmp.unlink()
