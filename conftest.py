"""pytest only: collect the repository root as a plain folder, never as a Python package.

The root ``__init__.py`` is ComfyUI's entry point to the node pack (ComfyUI loads it by path, as the package
named after the checkout folder). pytest would import it as a package ``__init__`` whenever that folder name is
not a Python name (``comfyui-anytalk`` as the README clones it, a name with a dot), and its relative import
fails there. The tests never need it imported by pytest: ``tests/comfy_harness.py`` loads the pack the way
ComfyUI does.
"""
from __future__ import annotations

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent


class _RepositoryRootIsAFolder:
    """A plugin, not a conftest hook: pytest asks the hooks of a folder's *parent* how to collect the folder."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: pathlib.Path, parent: pytest.Collector) -> pytest.Collector | None:
        """The repository root is a :class:`pytest.Dir` (its ``__init__.py`` never imported); others as usual."""
        if path.resolve() == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_RepositoryRootIsAFolder(), "anytalk-repository-root-is-a-folder")
