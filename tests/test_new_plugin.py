"""`medfuse new-plugin`: the skeleton's own tests pass straight away, without installing it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner
from medfuse.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_new_plugin_skeleton_passes_its_own_tests(tmp_path):
    res = CliRunner().invoke(main, ["new-plugin", "medfuse-texture-extras", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    root = tmp_path / "medfuse-texture-extras"
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["medfuse"] == {"texture_extras": "medfuse_texture_extras.plugins"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(REPO / "core"), str(REPO / "plugins")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout and "failed" not in run.stdout, run.stdout
    again = CliRunner().invoke(main, ["new-plugin", "medfuse-texture-extras", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = CliRunner().invoke(main, ["new-plugin", "Bad Name", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "lower-case" in bad.output
