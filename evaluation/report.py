"""Result tables: printed as Markdown and written as Markdown, CSV and JSON (atomic, never overwriting)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from anytalk_core.io_utils import atomic_output, unique_path

__all__ = ["format_value", "markdown_table", "write_report"]


def format_value(value: Any, digits: int = 4) -> str:
    """Numbers with ``digits`` significant decimals, NaN/None as an em dash, anything else as str."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{value:.{digits}f}" else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], title: str = "", digits: int = 4) -> str:
    """A GitHub Markdown table of ``rows`` (dicts) restricted to ``columns``, in that order."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(rows: Sequence[dict], columns: Sequence[str], out_dir: str | os.PathLike, name: str,
                 title: str = "", meta: dict | None = None) -> dict[str, Path]:
    """Write ``name.md``, ``name.csv`` and ``name.json`` into ``out_dir``; returns their paths.

    Existing files are never overwritten: the three files get a shared numbered stem instead
    (``name_00001.*``). ``meta`` (settings, backends, versions) goes into the JSON and under the Markdown table.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    stem = name
    if any((out / f"{name}.{ext}").exists() for ext in ("md", "csv", "json")):
        stem = unique_path(out / f"{name}.md").stem
        while any((out / f"{stem}.{ext}").exists() for ext in ("csv", "json")):
            stem = unique_path(out / f"{stem}.md").stem
    md = markdown_table(rows, columns, title)
    if meta:
        md += "\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    payload = {"title": title, "columns": list(columns), "rows": _json_safe(list(rows)), "meta": _json_safe(meta or {})}
    paths = {}
    for ext, text in (("md", md), ("csv", buf.getvalue()), ("json", json.dumps(payload, indent=2) + "\n")):
        path = out / f"{stem}.{ext}"
        with atomic_output(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        paths[ext] = path
    return paths
