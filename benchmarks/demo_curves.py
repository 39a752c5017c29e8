"""The 128 px demo's training curves and benchmark points in one picture and one table (not a test).

    python benchmarks/demo_curves.py [--log assets/demo/training_log/demo128] [--extra NAME=metrics.jsonl[@STEP] ...]
        [--out assets/demo/training_log/demo128/curves.png]

Reads the run's ``metrics.jsonl`` (losses every 10 steps) and its ``synthetic_benchmark_step*_seed0.md`` files (the
mean row of ``anytalk-eval synthetic`` at each measured step), plus any further runs given with ``--extra``
(for example a continuation from a snapshot). Prints, per 500 steps, the losses averaged over those steps,
then the benchmark points; draws both (matplotlib, when installed) with issue 24's bars as dashed lines.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

LOSSES = ("perceptual", "lip_region", "warp", "l1")  # "l1": the mean of the per-domain L1 entries
BARS = {"psnr_db": 30.0, "pose_err_deg": 2.0, "lmk_err_pct": 1.5}
BENCH_FIELDS = ("pose_err_deg", "lmk_err_pct", "l1", "psnr_db")


def read_losses(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics.jsonl that carry losses: step plus :data:`LOSSES` (``l1`` averaged over domains)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            if "perceptual" not in entry:
                continue
            domains = [v for k, v in entry.items() if k.startswith("l1/")]
            row = {"step": int(entry["step"]), **{k: float(entry[k]) for k in LOSSES[:3] if k in entry}}
            if domains:
                row["l1"] = sum(domains) / len(domains)
            rows.append(row)
    return rows


def binned(rows: list[dict], width: int = 500) -> list[dict]:
    """Each loss averaged over the steps of consecutive ``width``-step bins; ``step`` is the bin's end."""
    bins: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        bins[(r["step"] - 1) // width].append(r)
    out = []
    for b in sorted(bins):
        group = bins[b]
        out.append({"step": (b + 1) * width, "n": len(group),
                    **{k: sum(r[k] for r in group if k in r) / max(1, sum(k in r for r in group))
                       for k in LOSSES if any(k in r for r in group)}})
    return out


def read_benchmarks(folder: str | os.PathLike) -> list[dict]:
    """The mean row of every ``synthetic_benchmark_step<N>[_label]_seed0.md`` in ``folder``, by step."""
    points = []
    for path in sorted(Path(folder).glob("synthetic_benchmark_step*_seed0.md")):
        m = re.match(r"synthetic_benchmark_step(\d+)(_[a-z0-9_]+?)?_seed0\.md$", path.name)
        if not m:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        header = next(line for line in lines if line.startswith("| source |"))
        names = [c.strip() for c in header.strip("|").split("|")]
        mean = next(line for line in lines if line.startswith("| mean |"))
        values = [c.strip() for c in mean.strip("|").split("|")]
        row = dict(zip(names, values))
        points.append({"step": int(m.group(1)), "label": (m.group(2) or "").lstrip("_"),
                       **{k: float(row[k]) for k in BENCH_FIELDS}})
    return sorted(points, key=lambda p: (p["step"], p["label"]))


def plot(runs: dict[str, list[dict]], points: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=80)
    for name, rows in runs.items():
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes[0], ("perceptual", "l1")):
            values = [(s, r[key]) for s, r in zip(steps, rows) if key in r]
            if values:
                ax.plot(*zip(*values), label=name)
    axes[0][0].set_title("perceptual loss (pixel-pyramid L1), per 500 steps")
    axes[0][1].set_title("training L1 (mean of the three domains), per 500 steps")
    for label in sorted({p["label"] for p in points}):
        sel = [p for p in points if p["label"] == label]
        style = "o-" if not label else "s"
        name = label or "run"
        axes[1][0].plot([p["step"] for p in sel], [p["psnr_db"] for p in sel], style, label=name)
        axes[1][1].plot([p["step"] for p in sel], [p["pose_err_deg"] for p in sel], style, label=f"pose ({name})")
        axes[1][1].plot([p["step"] for p in sel], [p["lmk_err_pct"] for p in sel], style, label=f"landmarks ({name})")
    axes[1][0].axhline(BARS["psnr_db"], ls="--", c="k", lw=0.8)
    axes[1][0].set_title("benchmark PSNR dB (bar 30, dashed)")
    axes[1][1].axhline(BARS["pose_err_deg"], ls="--", c="C0", lw=0.8)
    axes[1][1].axhline(BARS["lmk_err_pct"], ls="--", c="C1", lw=0.8)
    axes[1][1].set_title("benchmark pose error deg / landmark error % (bars dashed)")
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = f"{out}.tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", default="assets/demo/training_log/demo128")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=metrics.jsonl[@STEP]",
                        help="a further run; @STEP: its step 0 is the main run's STEP (a fresh schedule from there)")
    parser.add_argument("--out", default=None, help="PNG to write (default: no picture)")
    args = parser.parse_args(argv)

    runs = {Path(args.log).name: binned(read_losses(Path(args.log) / "metrics.jsonl"))}
    for item in args.extra:
        name, sep, path = item.partition("=")
        path, at, start = path.partition("@")
        if not sep or (at and not start.isdigit()):
            parser.error(f"--extra takes NAME=metrics.jsonl[@STEP], got {item!r}")
        rows = read_losses(path)
        for r in rows:
            r["step"] += int(start or 0)
        runs[name] = binned(rows)
    points = read_benchmarks(args.log)

    for name, rows in runs.items():
        print(f"### {name}: losses averaged over each 500 steps\n")
        print("| steps to | " + " | ".join(LOSSES) + " |")
        print("|---|" + "---|" * len(LOSSES))
        for r in rows:
            print(f"| {r['step']} | " + " | ".join(f"{r[k]:.4f}" if k in r else "" for k in LOSSES) + " |")
        print()
    print("### benchmark (anytalk-eval synthetic, seed 0, mean of 9 pairs)\n")
    print("| step | | pose deg | landmarks % | L1 | PSNR dB |")
    print("|---|---|---|---|---|---|")
    for p in points:
        print(f"| {p['step']} | {p['label']} | {p['pose_err_deg']:.2f} | {p['lmk_err_pct']:.2f} | {p['l1']:.4f} | "
              f"{p['psnr_db']:.2f} |")
    if args.out:
        plot(runs, points, args.out)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
