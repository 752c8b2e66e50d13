"""`medfuse compare` / `medfuse run` end to end on a tiny synthetic folder dataset with real plugins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.datapath import resolve_data_root
from medfuse.errors import DataError
from medfuse.synthetic import write_dataset

STUDY = """
[studies.tiny]
description = "synthetic cells"
dataset = { loader = "folder", params = { path = "images", masks = "masks", table = "table.csv", group_column = "patient" } }
evaluation = { folds = 3, seed = 0, bootstrap = 100 }
blocks.morphology = { plugin = "morphology" }
blocks.colour = { plugin = "colour", params = { bins = %(bins)d }, pca = 0.9 }
[studies.tiny.pipelines]
shape = { mask = "dataset", blocks = ["morphology"], classifier = { plugin = "logreg" } }
both = { mask = "dataset", blocks = ["morphology", "colour"], classifier = { plugin = "random_forest", params = { n_estimators = 20 } } }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    write_dataset(root, n_per_class=8, size=32, seed=0)
    study = root.parent / "tiny.toml"
    study.write_text(STUDY % {"bins": 8})
    return root, study


def _compare(args: list[str]):
    return CliRunner().invoke(main, ["compare", *args], catch_exceptions=False)


def _cache(results: dict) -> dict[str, dict]:
    return {n: p["timing"]["cache"] for n, p in results["pipelines"].items()}


def test_compare_writes_report_and_reuses_cache(tiny, tmp_path):
    root, study = tiny
    cache = tmp_path / "cache"
    base = [str(study), "--data", str(root), "--cache", str(cache), "-q"]
    r = _compare([*base, "--out", str(tmp_path / "r1")])
    assert r.exit_code == 0, r.output
    assert "shape" in r.output and "both" in r.output  # the final leaderboard
    first = json.loads((tmp_path / "r1" / "results.json").read_text())
    assert [p["status"] for p in first["pipelines"].values()] == ["ok", "ok"]
    assert first["data"]["n_selected"] == 24 and first["splits"]["grouped"]
    assert first["splits"]["leakage"]["ok"]
    assert (tmp_path / "r1" / "report.html").stat().st_size > 10_000
    # the paired comparison: in results.json, both reports and one summary line
    pair = first["paired"]["cv"]["pairs"][0]
    assert {pair["a"], pair["b"]} == {"shape", "both"} and pair["n"] == 24 and "p" in pair["mcnemar"]
    assert f"paired vs best {pair['a']}" in r.output and f"{pair['b']} " in r.output
    for report in ("report.md", "report.html"):
        text = (tmp_path / "r1" / report).read_text()
        assert "Paired comparisons" in text and "Calibration" in text and "Per class (95% bootstrap intervals)" in text
    c1 = _cache(first)
    assert c1["shape"]["misses"] == 24 and c1["shape"]["writes"] == 24
    assert c1["both"]["hits"] == 24  # the morphology block was cached by the first pipeline

    # second run: every block served from the cache, same numbers
    r = _compare([*base, "--out", str(tmp_path / "r2")])
    assert r.exit_code == 0, r.output
    second = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert _cache(second) == {"shape": {"hits": 24, "misses": 0, "writes": 0},
                              "both": {"hits": 48, "misses": 0, "writes": 0}}
    for name in ("shape", "both"):
        assert second["pipelines"][name]["metrics"] == first["pipelines"][name]["metrics"]
        assert second["pipelines"][name]["ci95"] == first["pipelines"][name]["ci95"]

    # a changed plugin parameter invalidates that block only
    changed = tmp_path / "changed.toml"
    changed.write_text(STUDY % {"bins": 16})
    r = _compare([str(changed), "--data", str(root), "--cache", str(cache), "-q", "--pipelines", "both",
                  "--out", str(tmp_path / "r3")])
    assert r.exit_code == 0, r.output
    third = json.loads((tmp_path / "r3" / "results.json").read_text())
    assert _cache(third) == {"both": {"hits": 24, "misses": 24, "writes": 24}}


def test_run_one_pipeline_with_overrides(tiny, tmp_path):
    root, study = tiny
    r = CliRunner().invoke(main, ["run", str(study), "--pipeline", "shape", "--data", str(root), "--no-cache",
                                  "--folds", "2", "--max-per-class", "6", "--bootstrap", "0", "-q",
                                  "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(res["pipelines"]) == ["shape"] and res["settings"]["folds"] == 2
    assert res["data"]["n_selected"] == 18 and res["data"]["capped"] == {c: 2 for c in res["data"]["classes"]}
    assert res["pipelines"]["shape"]["ci95"] == {}
    cache = res["pipelines"]["shape"]["timing"].get("cache", {})
    assert cache.get("hits", 0) == 0 and cache.get("writes", 0) == 0  # --no-cache reads and writes nothing


def test_unknown_pipeline_is_a_usage_error(tiny, tmp_path):
    root, study = tiny
    r = CliRunner().invoke(main, ["run", str(study), "--pipeline", "shap", "--data", str(root)])
    assert r.exit_code == 2 and "did you mean 'shape'" in r.output


def test_exit_code_1_when_every_pipeline_fails(tiny, tmp_path, monkeypatch):
    root, study = tiny
    import medfuse.evaluation as ev

    class Exploding:
        def __init__(self, *a, **k):
            pass

        def materialize(self, data):
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(ev, "default_runner_factory", lambda *a, **k: Exploding)
    r = _compare([str(study), "--data", str(root), "--no-cache", "-q", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 1
    assert "every pipeline failed" in r.output
    res = json.loads((tmp_path / "bad" / "results.json").read_text())
    assert {p["error"] for p in res["pipelines"].values()} == {"RuntimeError: disk on fire"}
    assert "disk on fire" in (tmp_path / "bad" / "report.html").read_text()


def test_data_root_resolution(tmp_path, monkeypatch):
    import medfuse.datapath as dp

    monkeypatch.delenv("MEDFUSE_DATA", raising=False)
    monkeypatch.setattr(dp, "_repo_default", lambda: tmp_path / "absent")
    with pytest.raises(DataError, match="--data ROOT or set MEDFUSE_DATA"):
        resolve_data_root(None)
    assert resolve_data_root(None, required=False) is None
    monkeypatch.setenv("MEDFUSE_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path.resolve()
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_root(str(other)) == other.resolve()  # --data wins over the variable
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_root(str(tmp_path / "nope"))
