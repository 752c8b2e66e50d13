"""compare's terminal table prints medfuse.report.leaderboard_rows (one place for the leaderboard's
cells), leaving out only the columns the report keeps for itself."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
from medfuse.cli import compare_cmd
from medfuse.report import leaderboard_rows
from rich.console import Console

RESULTS = {
    "study": {"name": "demo"}, "data": {"n_selected": 120}, "settings": {"metrics": ["accuracy", "f1_macro"], "folds": 5},
    "leaderboard": [
        {"pipeline": "fused", "accuracy": 0.91234, "accuracy_ci95": [0.88, 0.94], "f1_macro": 0.9, "f1_macro_ci95": None,
         "brier": 0.1, "ece": 0.02, "fit_seconds_mean": 1.234, "predict_images_per_second": 50.0},
        {"pipeline": "classical", "accuracy": 0.85, "accuracy_ci95": [0.8, 0.9], "f1_macro": float("nan"),
         "not_worse_than_best": False, "p_vs_best": 0.01, "fit_seconds_mean": None}],
    "pipelines": {"fused": {"status": "ok"}, "classical": {"status": "ok"}, "deep": {"status": "failed", "error": "boom"}},
}


def _with_test() -> dict:
    res = copy.deepcopy(RESULTS)
    res["data"]["test"] = {"n_selected": 40, "source": "pattern 'test/*'"}
    for r, (t, g) in zip(res["leaderboard"], [(0.88, -0.032), (0.8, -0.05)]):
        r.update({"test_accuracy": t, "test_accuracy_ci95": [t - 0.05, t + 0.04], "gap_accuracy": g})
        res["pipelines"][r["pipeline"]]["test"] = {"metrics": {"accuracy": t}}
    return res


@pytest.mark.parametrize("results", [RESULTS, _with_test()], ids=["cv", "test-set"])
def test_terminal_table_prints_the_shared_leaderboard_rows(monkeypatch, results):
    buf = io.StringIO()
    monkeypatch.setattr(compare_cmd, "make_console", lambda **kw: Console(file=buf, width=300, color_system=None))
    compare_cmd._print_summary(results, {"html": Path("r.html"), "md": Path("r.md"), "json": Path("r.json")}, True)
    lines = [[c.strip() for c in line.split("│")[1:-1]] for line in buf.getvalue().splitlines() if line.startswith("│")]
    head = [c.strip() for c in next(line for line in buf.getvalue().splitlines() if line.startswith("┃")).split("┃")[1:-1]]
    header, rows = leaderboard_rows(results)
    keep = [i for i, h in enumerate(header) if h not in ("Brier", "ECE", "predict img/s")]
    assert head == [header[i] for i in keep]
    assert lines[:2] == [[row[i] for i in keep] for row in rows]
    assert lines[2][:3] == ["–", "deep", "failed: boom"] and len(lines[2]) == len(keep)
