"""The plugin guide reaches a pip user: `medfuse plugins guide` prints docs/plugins.md (a wheel ships
it as medfuse/docs/plugins.md), and the `medfuse new-plugin` skeleton points there, not to a file of
medfuse's source tree; its attribute comments stay in one column whatever the package name."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from medfuse.cli import main
from medfuse.util import shipped

REPO = Path(__file__).resolve().parents[1]


def test_plugins_guide_prints_the_plugin_guide():
    res = CliRunner().invoke(main, ["plugins", "guide"])
    assert res.exit_code == 0, res.output
    assert res.output == (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")


def test_an_installed_package_reads_its_own_copy(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "medfuse"  # a wheel's layout: no core/ checkout above it
    (package / "docs").mkdir(parents=True)
    (package / "docs" / "plugins.md").write_text("# the shipped guide\n", encoding="utf-8")
    monkeypatch.setattr(shipped, "PACKAGE", package)
    assert shipped.shipped_file("docs/plugins.md") == package / "docs" / "plugins.md"
    assert shipped.shipped_file("registry.toml") is None
    assert CliRunner().invoke(main, ["plugins", "guide"]).output == "# the shipped guide\n"
    (package / "docs" / "plugins.md").unlink()
    res = CliRunner().invoke(main, ["plugins", "guide"])
    assert res.exit_code == 1 and "reinstall medfuse" in res.output, res.output


def test_skeleton_points_to_the_installed_guide_and_aligns_its_comments(tmp_path):
    name = "medfuse-a-rather-long-package-name"
    assert CliRunner().invoke(main, ["new-plugin", name, "--dir", str(tmp_path)]).exit_code == 0
    root = tmp_path / name
    texts = {p.name: p.read_text(encoding="utf-8") for p in root.rglob("*") if p.is_file()}
    assert not [n for n, t in texts.items() if "docs/plugins.md" in t]
    assert "medfuse plugins guide" in texts["README.md"] and "medfuse plugins guide" in texts["pyproject.toml"]
    attrs = [line for line in texts["plugins.py"].splitlines() if re.match(r"    (name|block|version) = .*#", line)]
    assert len(attrs) == 3 and len({line.index("#") for line in attrs}) == 1, attrs
