"""The command line for scripts and CI: --json, piped output, -q/-v/-j/-o, --set, --fail-on-error,
exit codes and library noise (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import write_synthetic_study
from medfuse.cli import COMMANDS, main
from medfuse.cli.common import EXIT_CODES, EXIT_FAILURE, EXIT_PARTIAL, EXIT_USAGE
from medfuse.synthetic import study_toml

REPO = Path(__file__).resolve().parents[1]

STUDY = study_toml("tiny", folds=2, bootstrap=20)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return write_synthetic_study(tmp_path_factory, STUDY)


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _all_commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(main)
    out = []
    for name in COMMANDS:
        cmd = main.get_command(ctx, name)
        out.append((name, cmd))
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            out.append((f"{name} {sub_name}", sub))
    return out


def test_plugins_and_validate_json():
    r = _invoke("plugins", "--json")
    assert r.exit_code == 0, r.output
    payload = json.loads(r.output)
    assert set(payload) == {"plugins", "skipped"}
    names = {p["name"] for p in payload["plugins"]}
    assert {"morphology", "logreg"} <= names
    assert all(set(p) == {"name", "kind", "version", "origin", "status", "error"} for p in payload["plugins"])
    r = _invoke("validate", "--json")
    assert r.exit_code == 0, r.output
    payload = json.loads(r.output)
    assert payload["ok"] is True and payload["error"] is None
    demo = next(s for s in payload["studies"] if s["name"] == "demo")
    assert "fused" in demo["pipelines"] and "cnn" in demo["blocks"]


def test_validate_json_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(STUDY.replace('plugin = "logreg"', 'plugin = "logregg"'))
    r = _invoke("validate", str(bad), "--json")
    assert r.exit_code == 1
    payload = json.loads(r.output)
    assert payload["ok"] is False and "logregg" in payload["error"]


def test_piped_plugin_table_is_not_truncated():
    from medfuse.host import get_host

    r = _invoke("plugins")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    for rec in get_host().records.values():
        row = next((ln for ln in lines if ln.split("│")[1:2] and ln.split("│")[1].strip() == rec.name), None)
        assert row is not None, f"no row for {rec.name}"
        assert rec.origin in row and rec.kind in row  # one line per plugin, nothing wrapped or cut


def test_help_has_no_double_percent_and_lists_exit_codes():
    for name, cmd in _all_commands():
        text = cmd.get_help(click.Context(cmd, info_name=name))
        assert "%%" not in text, name
    assert click.ClickException.exit_code == EXIT_FAILURE and click.UsageError.exit_code == EXIT_USAGE
    top = _invoke("--help").output
    assert "Exit codes:" in top
    for code in EXIT_CODES:
        assert f"  {code}  " in top


@pytest.mark.parametrize("name", ["validate", "data", "demo", "extract", "compare", "run", "train", "score",
                                  "plugins"])
def test_same_options_everywhere(name):
    cmd = main.get_command(click.Context(main), name)
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name
    if "--out" in opts:
        assert "-o" in opts, name
    jobs = next((p for p in cmd.params if "--jobs" in getattr(p, "opts", [])), None)
    if jobs is not None:
        assert "-j" in jobs.opts
        assert jobs.type.convert("-1", jobs, None) == -1, name  # -1 = every core, accepted by every command
        with pytest.raises(click.BadParameter):
            jobs.type.convert("0", jobs, None)


def test_jobs_minus_one_runs(tiny, tmp_path):
    root, study = tiny
    r = _invoke("data", str(root / "images"), "-j", "-1", "-q")
    assert r.exit_code == 0, r.output


def test_compare_json_set_and_fail_on_error(tiny, tmp_path, monkeypatch):
    root, study = tiny
    r = _invoke("compare", str(study), "--data", str(root), "--no-cache", "--no-shortcuts", "-q", "-j", "-1",
                "--set", "colour.bins=4", "--json", "-o", str(tmp_path / "r1"))
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["ok"] is True and summary["exit_code"] == 0 and summary["failed"] == {}
    assert summary["best"] in ("shape", "both") and summary["study"] == "tiny"
    assert [row["pipeline"] for row in summary["leaderboard"]] and "accuracy" in summary["leaderboard"][0]["metrics"]
    assert Path(summary["report"]["json"]).is_file()
    assert summary["overrides"] == {"colour": {"bins": 4}}
    res = json.loads((tmp_path / "r1" / "results.json").read_text())
    assert res["settings"]["overrides"] == {"colour": {"bins": 4}}
    assert res["settings"]["jobs"] == (os.cpu_count() or 1)

    # a typo in --set is a usage error with a suggestion, before any work
    r = _invoke("compare", str(study), "--data", str(root), "--set", "colour.binz=4", "-o", str(tmp_path / "r2"))
    assert r.exit_code == 2 and "did you mean 'bins'" in r.output
    r = _invoke("run", str(study), "-p", "shape", "--data", str(root), "--set", "colur.bins=4",
                "-o", str(tmp_path / "r3"))
    assert r.exit_code == 2 and "did you mean 'colour'" in r.output

    # one pipeline fails: exit 0 by default, EXIT_PARTIAL with --fail-on-error
    import medfuse.evaluation as ev

    real = ev.default_runner_factory

    class Exploding:
        def __init__(self, *a, **k):
            pass

        def materialize(self, data):
            raise RuntimeError("disk on fire")

    def factory(*a, **k):
        make = real(*a, **k)
        return lambda s, name: Exploding() if name == "both" else make(s, name)

    monkeypatch.setattr(ev, "default_runner_factory", factory)
    base = ["compare", str(study), "--data", str(root), "--no-cache", "--no-shortcuts", "-q", "--bootstrap", "0"]
    assert _invoke(*base, "-o", str(tmp_path / "r4")).exit_code == 0
    r = _invoke(*base, "--fail-on-error", "--json", "-o", str(tmp_path / "r5"))
    assert r.exit_code == EXIT_PARTIAL
    summary = json.loads(r.stdout)
    assert summary["exit_code"] == EXIT_PARTIAL and summary["failed"] == {"both": "RuntimeError: disk on fire"}


@pytest.mark.slow
def test_train_with_tensorflow_prints_no_e0000(tiny, tmp_path):
    root, _ = tiny
    study = tmp_path / "cnn.toml"
    study.write_text(STUDY.replace('blocks.colour = { plugin = "colour", params = { bins = 8 } }',
                                   'blocks.cnn = { plugin = "cnn_embedding", params = { size = 16, epochs = 1, '
                                   'batch_size = 8, embedding_dim = 4, width = 4, depth = 2, '
                                   'validation_fraction = 0.0, augment = false } }').replace('"colour"]', '"cnn"]'))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), str(REPO / "plugins"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", "from medfuse.cli import main; main()", "train",
                           f"{study}:tiny", "-p", "both", "--data", str(root), "--no-cv", "-q",
                           "--set", "cnn.epochs=1", "-o", str(tmp_path / "bundle")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "E0000" not in proc.stderr and "use_unbounded_threadpool" not in proc.stderr, proc.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["study"]["overrides"] == {"cnn": {"epochs": 1}}


def test_demo_set_reaches_the_demo_study(tmp_path):
    """`medfuse demo --set` changes the demo study's blocks like compare's (the packaging test runs the
    demo with --set cnn.epochs=1); an unknown block is a usage error that lists the demo's blocks."""
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--n-per-class", "6", "--size", "32",
                                    "--set", "nosuch.epochs=1", "-q"])
    assert res.exit_code == EXIT_USAGE and "no block 'nosuch'" in res.output and "cnn" in res.output, res.output
