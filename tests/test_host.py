"""The plugin host: discovery through entry points, failures, clashes, allow-list, params."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from medfuse.contracts import Extractor
from medfuse.errors import PluginError, UnknownPluginError
from medfuse.host import PluginHost, check_params, declaration_problem, get_host

REPO = Path(__file__).resolve().parents[1]


def make_dist(tmp_path: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """A minimal installed distribution (dist-info + module) on a folder that goes on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[medfuse]\n{ep_name} = {module}\n")


def entry_points_from(tmp_path: Path) -> list[md.EntryPoint]:
    dists = md.distributions(path=[str(tmp_path)])
    return [ep for d in dists for ep in d.entry_points if ep.group == "medfuse"]


GOOD = """
    from medfuse import hookimpl
    from medfuse.contracts import Extractor
    import numpy as np

    class Mean(Extractor):
        '''Mean intensity.'''
        name = "mean_intensity"
        block = "mean"
        param_docs = {}
        def feature_names(self):
            return ["value"]
        def _prepare(self, image, mask):
            return np.array([image.mean()], np.float32)

    @hookimpl
    def medfuse_plugins():
        return [Mean]
"""


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_plugins_load_without_failures():
    host = get_host(refresh=True)
    builtin = [f for f in host.failures if f.origin.startswith("medfuse:")]
    assert not builtin, [f"{f.origin}: {f.error}" for f in builtin]
    assert host.names("loader") and host.names("extractor") and host.names("classifier")


def test_third_party_plugin_is_discovered(on_path):
    make_dist(on_path, "thirdparty", "tp", "tp_plugins", GOOD)
    host = PluginHost(entry_points=entry_points_from(on_path))
    record = host.records["mean_intensity"]
    assert record.ok and record.origin == "thirdparty:tp" and record.kind == "extractor"


def test_broken_module_is_reported_and_others_load(on_path):
    make_dist(on_path, "thirdparty", "tp", "tp_plugins", GOOD)
    make_dist(on_path, "brokenpkg", "broken", "broken_plugins", "import not_installed_anywhere\n")
    host = PluginHost(entry_points=entry_points_from(on_path))
    assert "mean_intensity" in host.records
    (failure,) = host.failures
    assert failure.origin == "brokenpkg:broken" and "not_installed_anywhere" in failure.error
    with pytest.raises(PluginError, match="brokenpkg:broken"):
        PluginHost(strict=True, entry_points=entry_points_from(on_path))


def test_invalid_declaration_and_bad_hook_are_reported(on_path):
    make_dist(on_path, "badpkg", "bad", "bad_plugins", """
        from medfuse import hookimpl
        class NotAPlugin: pass
        @hookimpl
        def medfuse_plugins():
            return [NotAPlugin]
    """)
    make_dist(on_path, "typo", "typo", "typo_plugins", """
        from medfuse import hookimpl
        @hookimpl
        def medfuse_plugin_typo():
            return []
    """)
    host = PluginHost(entry_points=entry_points_from(on_path))
    errors = {f.origin: f.error for f in host.failures}
    assert "not a subclass" in errors["badpkg:bad"]
    assert "registration failed" in errors["typo:typo"] and "medfuse_plugin_typo" in errors["typo:typo"]


def test_name_clash_names_both_sources(on_path):
    make_dist(on_path, "first", "one", "one_plugins", GOOD)
    make_dist(on_path, "second", "two", "two_plugins", GOOD)
    host = PluginHost(entry_points=entry_points_from(on_path))
    (failure,) = host.failures
    assert "first:one" in failure.error and "second:two" in failure.error


def test_allow_list_limits_third_party(on_path, monkeypatch):
    make_dist(on_path, "thirdparty", "tp", "tp_plugins", GOOD)
    monkeypatch.setenv("MEDFUSE_PLUGINS", "something_else")
    host = PluginHost(entry_points=entry_points_from(on_path))
    assert "mean_intensity" not in host.records and host.skipped == ["thirdparty:tp"]


def test_unknown_plugin_suggests_a_name():
    host = get_host()
    name = host.names("extractor")[0]
    with pytest.raises(UnknownPluginError, match=f"did you mean '{name}'"):
        host.get(name[:-1] + "x")


def test_params_are_checked_with_suggestions():
    class P(Extractor):
        name, block = "p", "p"

        def __init__(self, levels: int = 8, method: str = "a"):
            self.levels, self.method = levels, method

    check_params(P, {"levels": 4}, "p")
    with pytest.raises(PluginError, match="did you mean 'levels'"):
        check_params(P, {"level": 4}, "p")
    with pytest.raises(PluginError, match="expects int"):
        check_params(P, {"levels": "four"}, "p")
    assert "no 'block'" in declaration_problem(type("Q", (Extractor,), {"name": "q"}))


def test_cli_lists_a_broken_installed_plugin(tmp_path):
    make_dist(tmp_path, "medfuse-broken-plugin", "broken", "medfuse_broken_plugins",
              (REPO / "examples/medfuse-broken-plugin/src/medfuse_broken/plugins.py").read_text())
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "medfuse", "plugins"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "medfuse-broken-plugin:broken" in out.stdout and "failed" in out.stdout
    assert "morphology" in out.stdout  # the rest still load
    strict = subprocess.run([sys.executable, "-m", "medfuse", "plugins", "--strict"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert strict.returncode == 1 and "a_dependency_that_is_not_installed" in strict.stderr


def test_medfuse_studies_hook_adds_studies(on_path):
    make_dist(on_path, "studypkg", "sp", "sp_plugins", """
        from medfuse import hookimpl
        @hookimpl
        def medfuse_studies():
            return [{"name": "my-study", "dataset": {"loader": "folder", "params": {"path": "x"}},
                     "pipelines": {"p": {"blocks": [], "classifier": {"plugin": "logreg"}}}}]
    """)
    host = PluginHost(entry_points=entry_points_from(on_path))
    (origin, table), = host.studies
    assert origin == "studypkg:sp" and table["name"] == "my-study"
