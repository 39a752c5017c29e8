"""benchmarks/demo_curves.py reads the committed 128 px training log and its benchmark files."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOG = ROOT / "assets" / "demo" / "training_log" / "demo128"


def load_script():
    spec = importlib.util.spec_from_file_location("anytalk_demo_curves", ROOT / "benchmarks" / "demo_curves.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_binned_losses_are_the_means_of_their_steps(tmp_path):
    dc = load_script()
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "perceptual": float(s), "lip_region": 1.0, "warp": 2.0, "l1/a": 0.1, "l1/b": 0.3}
             for s in (10, 20, 500, 510)]
    lines.insert(1, {"step": 15, "eval": 1.0})  # rows without losses are skipped
    metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = dc.binned(dc.read_losses(metrics))
    assert [r["step"] for r in rows] == [500, 1000]
    assert rows[0]["perceptual"] == (10 + 20 + 500) / 3 and rows[1]["perceptual"] == 510
    assert abs(rows[0]["l1"] - 0.2) < 1e-12 and rows[0]["n"] == 3


def test_the_committed_log_and_benchmarks_read(capsys):
    dc = load_script()
    points = dc.read_benchmarks(LOG)
    assert {13, 2938, 4000, 6000} <= {p["step"] for p in points}
    for p in points:
        assert 0 < p["pose_err_deg"] < 10 and 0 < p["lmk_err_pct"] < 10 and 15 < p["psnr_db"] < 40
    assert dc.main(["--log", str(LOG)]) == 0
    out = capsys.readouterr().out
    assert "| 6000 |" in out and "benchmark" in out
