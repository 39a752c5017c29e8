"""Shared fixtures: the conformance reference folder and small models built at tiny widths."""
from __future__ import annotations

import os
import pathlib

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def conformance_dir() -> pathlib.Path:
    """``$ANYTALK_CONFORMANCE_DIR`` or ``../shared/conformance`` beside the repository."""
    env = os.environ.get("ANYTALK_CONFORMANCE_DIR")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_root() -> pathlib.Path:
    root = conformance_dir()
    if not root.is_dir():
        if os.environ.get("CI"):  # CI always has ../shared: a missing folder there is a failure, not a skip
            pytest.fail(f"conformance data not found at {root} (set ANYTALK_CONFORMANCE_DIR)")
        pytest.skip(f"conformance data not found at {root} (set ANYTALK_CONFORMANCE_DIR)")
    return root


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
