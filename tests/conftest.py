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


@pytest.fixture(scope="session")
def regressor(tmp_path_factory) -> str:
    """A small synthetic expression regressor (phi of the trainer tests), trained once per session."""
    from anytalk_training.config import DEFAULTS
    from anytalk_training.expression import save_regressor, train_expression_regressor

    e = dict(DEFAULTS["expression"], regressor_train_images=48, regressor_val_images=12, regressor_steps=3,
             regressor_width=4, regressor_batch=8)
    net, report = train_expression_regressor(e, 0, torch.device("cpu"), log=lambda m: None)
    path = tmp_path_factory.mktemp("phi") / "phi.safetensors"
    save_regressor(net, path, report)
    return str(path)


@pytest.fixture
def restore_torch_globals():
    """Put back torch's thread count and deterministic-algorithms switch, which a trainer sets process-wide."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
