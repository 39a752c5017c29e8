"""Packaging rules of SPEC §2: what gets installed, under which names, and what never does."""
from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_library_package_is_installed_and_nodes_never_is():
    tool = pyproject()["tool"]["setuptools"]
    listed = set(tool["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for top in ("anytalk_core", "anytalk_app")
               for p in (ROOT / top).rglob("__init__.py")}
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"
    training = {"anytalk_training" + "".join("." + part for part in p.parent.relative_to(ROOT / "training").parts)
                for p in (ROOT / "training").rglob("__init__.py")}
    assert training <= listed, f"training packages missing from pyproject.toml: {sorted(training - listed)}"
    evaluation = {"anytalk_eval" + "".join("." + part for part in p.parent.relative_to(ROOT / "evaluation").parts)
                  for p in (ROOT / "evaluation").rglob("__init__.py")}
    assert evaluation <= listed, f"evaluation packages missing from pyproject.toml: {sorted(evaluation - listed)}"
    assert not any(name == "nodes" or name.startswith("nodes.") or name in ("training", "evaluation") for name in listed)
    assert tool["package-dir"]["anytalk_training"] == "training"
    assert tool["package-dir"]["anytalk_eval"] == "evaluation"


def test_torch_is_never_pinned_and_not_in_requirements_txt():
    deps = pyproject()["project"]["dependencies"]
    torch_deps = [d for d in deps if d.split(">")[0].split("=")[0].strip() == "torch"]
    assert torch_deps and "==" not in torch_deps[0]
    reqs = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert not any(r.startswith("torch") for r in reqs)


def test_core_library_imports_itself_only_relatively():
    """Relative imports only, and never the application (``anytalk_app``: the CLI and the demo, which read the
    repository's assets)."""
    offenders = []
    for path in (ROOT / "anytalk_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ("anytalk_core", "anytalk_app", "nodes", "training", "anytalk_training", "comfy",
                           "folder_paths"):
                    offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert not offenders, offenders


def test_license_is_an_spdx_expression_and_setuptools_is_new_enough_for_it():
    project = pyproject()
    assert project["project"]["license"] == "MIT"  # a TOML table is deprecated by setuptools (PEP 639)
    assert project["project"]["license-files"] == ["LICENSE"] and (ROOT / "LICENSE").is_file()
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_training_configs_are_a_listed_data_package():
    tool = pyproject()["tool"]["setuptools"]
    assert "anytalk_training.configs" in tool["packages"]
    patterns = tool["package-data"]["anytalk_training.configs"]
    shipped = {p.name for p in (ROOT / "training" / "configs").iterdir() if any(p.match(g) for g in patterns)}
    assert {"demo.toml", "demo_stage2.toml", "demo_stage3.toml", "smoke.toml"} <= shipped


@pytest.mark.parametrize("folder", ["comfyui-anytalk", "comfyui.anytalk", "ComfyUI/custom_nodes/comfyui-anytalk"])
def test_the_suite_runs_whatever_the_checkout_folder_is_called(tmp_path, folder):
    """The README clones into ``custom_nodes/comfyui-anytalk``: pytest must never import the root ``__init__.py``
    (ComfyUI's entry point, relative imports only) as a package named after a folder that is no Python name."""
    checkout = tmp_path / folder
    (checkout / "tests").mkdir(parents=True)
    for name in ("pyproject.toml", "conftest.py", "__init__.py"):
        shutil.copy(ROOT / name, checkout / name)
    (checkout / "tests" / "test_probe.py").write_text("def test_probe():\n    assert True\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=checkout,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
