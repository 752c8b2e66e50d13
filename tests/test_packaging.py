"""Packaging: the built wheel is a complete library (registry, plugins, typing marker, entry points)
and a non-editable install of it runs `medfuse validate` and `medfuse demo` on its own files."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from medfuse.cli import main

REPO = Path(__file__).resolve().parents[1]
# What a build needs: everything else in the repository (tests, docs, runs) stays out of the copy.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "registry.toml", "core", "plugins", "docs")


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pip`` of the running environment, offline (no index)."""
    res = subprocess.run([sys.executable, "-m", "pip", *args, "--no-index", "-q"], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A clean copy of the build inputs (no stale build/ or egg-info of the checkout gets in)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        else:
            shutil.copy2(path, src / name)
    return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    """The wheel `pip wheel --no-deps --no-build-isolation` builds from :func:`source`."""
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source), cwd=dist)
    (built,) = dist.glob("medfuse-*.whl")
    return built


def test_wheel_carries_registry_plugins_typing_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        registry = zf.read("medfuse/registry.toml")
        (ep_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(zf.read(ep_name).decode())
    assert registry == (REPO / "registry.toml").read_bytes()  # the top-level file, copied at build time
    assert "medfuse/py.typed" in names
    templates = sorted((REPO / "core/medfuse/templates").glob("*.j2"))  # the report's Jinja2 templates
    assert templates and all(f"medfuse/templates/{t.name}" in names for t in templates)
    for package in ("core/medfuse", "plugins/medfuse_plugins"):
        for module in (REPO / package).rglob("*.py"):
            rel = module.relative_to(REPO / package.split("/")[0]).as_posix()
            assert rel in names, f"{rel} is missing from {wheel.name}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert dict(entry_points["medfuse"]) == project["entry-points"]["medfuse"]
    assert dict(entry_points["console_scripts"]) == project["scripts"]
    assert not any(n.startswith(("tests/", "bench/", "docs/", "registry.toml")) for n in names)


def test_sdist_carries_registry_and_build_hook(source, tmp_path):
    """A wheel built from the sdist (as `python -m build` does) finds registry.toml there too."""
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=source, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / res.stdout.strip().splitlines()[-1]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"registry.toml", "setup.py", "pyproject.toml", "core/medfuse/study.py"} <= names


def test_validate_without_argument_checks_the_builtin_registry_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no registry.toml here: the installed one is meant
    res = CliRunner().invoke(main, ["validate"])
    assert res.exit_code == 0, res.output
    assert "ok  demo:" in res.output


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="venv layout of POSIX (bin/)")
def test_wheel_installed_non_editable_runs_validate_and_demo(wheel, tmp_path):
    """Install the wheel with --no-deps into a fresh venv; its dependencies come from the running
    environment (``make setup``'s .venv) through a .pth of plain paths. Plain paths add that
    environment's site-packages without running its .pth files, so the editable medfuse there
    (an import hook) never loads: the wheel's copy must be the one imported. The demo runs all five
    pipelines on 8 synthetic cells per class of 32 px with the smallest CNN (32 px, width 4, depth 2) trained
    for 1 epoch without inner validation split or augmentation (its 15 epochs were most of this test's time; the default demo, 60 cells of 64 px, takes about
    3.5 min on 2 cores)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # install before the dependency paths are visible, so pip cannot see the checkout's medfuse as installed
    # --no-compile: byte-compiling every module up front is not under test (imports compile lazily)
    _pip("--python", str(python), "install", "--no-deps", "--no-compile", str(wheel), cwd=tmp_path)
    site = _site_packages(python)
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_medfuse_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MEDFUSE_DATA")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    work = tmp_path / "work"  # not the repository: nothing may be read from the checkout
    work.mkdir()

    def run(*cmd: str, timeout: int = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
        return res

    probe = ("import json, importlib.metadata as md, medfuse, medfuse_plugins; from medfuse.study import registry_path; "
             "print(json.dumps({'medfuse': medfuse.__file__, 'plugins': medfuse_plugins.__file__, "
             "'registry': str(registry_path()), 'dist': str(md.distribution('medfuse').locate_file('')), "
             "'entry_points': sorted({e.module for e in md.entry_points(group='medfuse') "
             "if e.module.startswith('medfuse_plugins')})}))")
    where = json.loads(run(str(python), "-c", probe).stdout)
    for key in ("medfuse", "plugins", "registry", "dist"):
        assert Path(where[key]).resolve().is_relative_to(site.resolve()), (key, where)
    assert where["registry"].endswith("medfuse/registry.toml")
    assert len(where["entry_points"]) == len(list((REPO / "plugins/medfuse_plugins").glob("[!_]*.py")))

    medfuse_exe = str(venv / "bin" / "medfuse")
    out = run(medfuse_exe, "validate").stdout
    assert "ok  demo:" in out and "ok  pbc-cells:" in out
    run(medfuse_exe, "demo", "--out", "demo", "--n-per-class", "8", "--size", "32", "--set", "cnn.epochs=1",
        "--set", "cnn.size=32", "--set", "cnn.width=4", "--set", "cnn.depth=2", "--set", "cnn.validation_fraction=0",
        "--set", "cnn.augment=false", "-q", timeout=600)
    report = work / "demo" / "report"
    assert (report / "report.html").is_file()
    results = json.loads((report / "results.json").read_text())
    assert results["study"]["name"] == "demo" and results["data"]["n_selected"] == 24
    assert results["settings"]["overrides"] == {"cnn": {"epochs": 1, "size": 32, "width": 4, "depth": 2,
                                                        "validation_fraction": 0, "augment": False}}
    assert {row["pipeline"] for row in results["leaderboard"]} == {"classical", "deep", "fused", "tabular", "ensemble"}
    assert Path(results["study"]["source"]).resolve().is_relative_to(site.resolve())


def test_wheel_and_sdist_ship_the_plugin_guide(wheel, source, tmp_path):
    """`medfuse plugins guide` of an installed wheel prints medfuse/docs/plugins.md, copied at build time."""
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("medfuse/docs/plugins.md") == (REPO / "docs" / "plugins.md").read_bytes()
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=source, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / res.stdout.strip().splitlines()[-1]) as tf:
        assert any(n.endswith("/docs/plugins.md") for n in tf.getnames())
