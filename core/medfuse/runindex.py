"""Runs you can find again: every ``compare`` report folder is recorded in a run index, and
:func:`list_runs` (``medfuse runs``) lists past runs from it and from the default ``runs/`` folder.

The index is a JSON-lines file, one line per run (``out_dir`` absolute, ``study``, ``created``):
``$MEDFUSE_RUNS_INDEX`` when set, else ``$XDG_STATE_HOME/medfuse/runs.jsonl`` (default
``~/.local/state/medfuse/runs.jsonl``). What a listing shows (study, time, best pipeline and its
score, samples, failures) is read from each folder's ``results.json``, so the index never goes
stale: a deleted folder is left out of the listing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

INDEX_ENV = "MEDFUSE_RUNS_INDEX"
DEFAULT_RUNS_DIR = Path("runs")
"""Where ``compare`` writes a report folder without ``--out`` (relative to the working folder)."""


def index_path() -> Path:
    """The run index file (see the module docstring)."""
    env = os.environ.get(INDEX_ENV)
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "medfuse" / "runs.jsonl"


def record_run(out_dir: str | Path, results: dict[str, Any], note: Callable[[str], None] | None = None) -> None:
    """Append the report folder ``out_dir`` to the run index. An index that cannot be written
    costs only the listing (``note`` is told why); the run itself has succeeded."""
    line = {"out_dir": str(Path(out_dir).resolve()), "study": results.get("study", {}).get("name"),
            "created": results.get("created") or datetime.now(UTC).isoformat(timespec="seconds")}
    path = index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:  # one short append: atomic enough for a log
            fh.write(json.dumps(line) + "\n")
    except OSError as exc:
        if note:
            note(f"run index {path} not updated ({exc.strerror or exc}); set {INDEX_ENV} to a writable file")


def _indexed_dirs(path: Path) -> list[Path]:
    if not path.is_file():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(Path(json.loads(raw)["out_dir"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line is skipped, not fatal
    return out


def _scanned_dirs(folders: Iterable[Path]) -> list[Path]:
    out = []
    for folder in folders:
        if (folder / "results.json").is_file():
            out.append(folder)
        elif folder.is_dir():
            out.extend(sorted(p.parent for p in folder.glob("*/results.json")))
    return out


def summarize_run(folder: Path) -> dict[str, Any] | None:
    """One listing row from ``folder/results.json`` (``None`` when absent or unreadable)."""
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or "study" not in results:
        return None
    metrics = list((results.get("settings") or {}).get("metrics") or [])
    board = results.get("leaderboard") or []
    best = board[0] if board else {}
    metric = metrics[0] if metrics else None
    pipelines = results.get("pipelines") or {}
    return {
        "study": results["study"].get("name"),
        "created": results.get("created"),
        "best": best.get("pipeline"),
        "metric": metric,
        "score": best.get(metric) if metric else None,
        "ci95": best.get(f"{metric}_ci95") if metric else None,
        "not_worse_than_best": ((results.get("paired") or {}).get("cv") or {}).get("not_worse_than_best"),
        "n_samples": (results.get("data") or {}).get("n_selected"),
        "pipelines": list(pipelines),
        "failed": [n for n, p in pipelines.items() if p.get("status") != "ok"],
        "path": str(folder.resolve()),
        "report": str((folder / "report.html").resolve()) if (folder / "report.html").is_file() else None,
    }


def list_runs(folders: Iterable[str | Path] | None = None, use_index: bool = True,
              study: str | None = None) -> list[dict[str, Any]]:
    """Past runs, newest first: those in the run index (``use_index``) and the report folders in
    ``folders`` (each a report folder or a folder of them; default ``runs/``), each once.
    ``study``: only runs of that study. Rows: :func:`summarize_run`."""
    scan = [Path(f) for f in folders] if folders is not None else [DEFAULT_RUNS_DIR]
    candidates = (_indexed_dirs(index_path()) if use_index else []) + _scanned_dirs(scan)
    seen: set[str] = set()
    rows = []
    for folder in candidates:
        key = str(folder.resolve())
        if key in seen:
            continue
        seen.add(key)
        row = summarize_run(folder)
        if row is not None and (study is None or row["study"] == study):
            rows.append(row)
    return sorted(rows, key=lambda r: str(r.get("created") or ""), reverse=True)
