"""The typed settings (training/settings.py) mirror the validated config dict, table by table."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from anytalk_training.config import AUDIO2MOTION_DEFAULTS, DEFAULTS
from anytalk_training.settings import (AudioData, AudioModel, ExpressionSettings, MotionWarmup, RunSettings,
                                       TalkingHeadData, TalkingHeadModel)


def _same(section, table: dict) -> None:
    for f in dataclasses.fields(section):
        value = table[f.name]
        assert getattr(section, f.name) == (tuple(value) if isinstance(value, list) else value), f.name


def test_talking_head_tables_are_typed_and_frozen():
    config = copy.deepcopy(DEFAULTS)
    config["data"]["sources"] = [{"kind": "synthetic", "domain": "human"}]
    config["model"]["overrides"] = {"discriminator": {"scales": [1, 0.5]}}
    run = RunSettings.from_config(config)
    assert isinstance(run.model, TalkingHeadModel) and isinstance(run.data, TalkingHeadData)
    for key in ("model", "data", "expression", "motion_warmup"):
        _same(getattr(run, key), config[key])
    assert isinstance(run.expression, ExpressionSettings) and isinstance(run.motion_warmup, MotionWarmup)
    assert run.data.sources[0] is config["data"]["sources"][0]  # the raw table, checked by training/data.py
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.motion_warmup.steps = 1  # type: ignore[misc]


def test_audio_tables_are_typed():
    config = copy.deepcopy(AUDIO2MOTION_DEFAULTS)
    config["model"]["audio2motion"] = {"dim": 32}
    run = RunSettings.from_config(config)
    assert isinstance(run.model, AudioModel) and isinstance(run.data, AudioData)
    _same(run.model, config["model"])
    _same(run.data, config["data"])
    assert run.expression is None and run.motion_warmup is None
    assert isinstance(run.data.fps, float)
