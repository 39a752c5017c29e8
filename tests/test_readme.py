"""Every command of the README blocks marked ``<!-- readme-test -->`` runs and exits 0 (with the repo's files)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL_STEPS = ("python3.11 -m venv", ". .venv/bin/activate", "pip install")  # what CI itself runs first


def readme_commands() -> list[str]:
    """Commands of the marked bash blocks, line continuations joined, ``&&`` chains split, installs dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"<!-- readme-test -->\s*```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for part in (p.strip() for p in line.split("&&")):
                if part and not part.startswith(INSTALL_STEPS):
                    commands.append(part)
    return commands


def test_the_readme_has_marked_commands_and_the_first_runs_the_demo():
    commands = readme_commands()
    assert commands and commands[0] == "anytalk demo"
    assert any(c.startswith("anytalk-eval synthetic") for c in commands)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    for name in ("assets", "training", "workflows"):
        os.symlink(ROOT / name, work / name)
    return work


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, workdir):
    argv = shlex.split(command)
    exe = Path(sys.executable).parent / argv[0]
    assert exe.exists(), f"{argv[0]} is not installed beside {sys.executable}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([str(exe), *argv[1:]], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    if out and Path(out).suffix:
        assert (workdir / out).is_file()
