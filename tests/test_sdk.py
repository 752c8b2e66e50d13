"""The plugin author's surface: get_plugin, `medfuse data --loader` with any loader, `validate`
without an argument, `plugins show` output."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import medfuse
import medfuse.host
import pandas as pd
import pytest
from click.testing import CliRunner
from medfuse.contracts import Loader, SampleTable
from medfuse.datareport import DataReport, finalize
from medfuse.errors import PluginError
from medfuse.host import PluginHost


def test_get_plugin_returns_a_configured_instance_and_checks_params():
    plugin = medfuse.get_plugin("table", label_column="Result")
    assert plugin.name == "table" and plugin.label_column == "Result"
    assert "get_plugin" in medfuse.__all__
    with pytest.raises(PluginError, match="did you mean 'label_column'"):
        medfuse.get_plugin("table", label_colum="Result")


class _CountLoader(Loader):
    """A third-party loader: one table-only sample per line of ``names.txt``."""

    name: ClassVar[str] = "kit_lines"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {"file": "Text file, one label per line."}

    def __init__(self, file: str = "names.txt"):
        self.file = file

    def load(self, root=".", jobs=1, progress=False):
        labels = pd.Series(Path(root, self.file).read_text().split())
        ids = [f"l{i}" for i in range(len(labels))]
        samples = pd.DataFrame({"id": ids, "path": None, "mask_path": None, "label": labels,
                                "group": ids, "sha1": ids})
        report = DataReport(source=str(root), loader=self.name, n_found=len(samples))
        return SampleTable(samples, None, finalize(report, samples))


def _host_with(monkeypatch, *classes: type) -> PluginHost:
    module = SimpleNamespace(medfuse_plugins=medfuse.hookimpl(lambda: list(classes)))
    ep = SimpleNamespace(name="kit", dist=SimpleNamespace(name="kit-dist"), load=lambda: module)
    host = PluginHost(entry_points=[ep])
    builtin = medfuse.host.get_host()
    host.records = {**builtin.records, **host.records}
    monkeypatch.setitem(medfuse.host._HOST, False, host)
    return host


def test_data_command_accepts_a_third_party_loader(tmp_path, monkeypatch):
    from medfuse.cli.data_cmd import data

    _host_with(monkeypatch, _CountLoader)
    (tmp_path / "words.txt").write_text("a b a\n")
    res = CliRunner().invoke(data, [str(tmp_path), "--loader", "kit_lines", "--param", 'file="words.txt"'])
    assert res.exit_code == 0, res.output
    assert "loader kit_lines" in res.output and "3 of 3 samples loaded" in res.output
    res = CliRunner().invoke(data, [str(tmp_path), "--loader", "kit_linez"])
    assert res.exit_code == 1 and "did you mean 'kit_lines'" in res.output


def test_validate_without_argument_lists_what_it_sees(tmp_path, monkeypatch):
    from medfuse.cli.validate_cmd import validate
    from medfuse.errors import StudyError
    from medfuse.study import registry_path

    registry = registry_path()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    demo = registry.read_text().split("[studies.demo]", 1)[1].split("[studies.pbc-cells]")[0]
    (tmp_path / "mine.toml").write_text("[studies.demo]" + demo)
    res = CliRunner().invoke(validate, [])
    assert res.exit_code == 0, res.output
    import tomllib

    n_studies = len(tomllib.loads(registry.read_text())["studies"])
    assert f"{registry}: {n_studies} studies" in res.output and "mine.toml: 1 study (demo)" in res.output

    def missing() -> None:
        raise StudyError("site-packages/medfuse/registry.toml", "<file>", "built-in registry not found")

    monkeypatch.setattr("medfuse.study.registry_path", missing)
    res = CliRunner().invoke(validate, [])
    assert res.exit_code == 0 and "mine.toml: 1 study (demo)" in res.output, res.output
    (tmp_path / "mine.toml").unlink()
    res = CliRunner().invoke(validate, [])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no studies in sight" in res.output and str(tmp_path) in res.output


def test_plugins_show_keeps_paragraphs_whole():
    from medfuse.cli.plugins_cmd import paragraphs, show

    res = CliRunner().invoke(show, ["folder"])
    assert res.exit_code == 0, res.output
    assert ("The id of a sample is its file stem. Masks live under ``masks`` in the same relative folder "
            "with the same stem (any image suffix).") in res.output
    doc = "Intro line\nwraps here.\n\n* one item\n  continued\n* two\n\n    code = 1\n    more = 2"
    assert paragraphs(doc) == ["Intro line wraps here.", "* one item continued\n* two",
                               "    code = 1\n    more = 2"]


def test_no_core_module_imports_a_plugin_module():
    """Core reaches plugins only through the host: a core import of medfuse_plugins (as data_cmd's
    table reader was) ties core to the built-ins."""
    import ast

    core = Path(medfuse.__file__).parent
    offenders = []
    for source in sorted(core.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{source.relative_to(core)}: {n}" for n in names if n.split(".")[0] == "medfuse_plugins"]
    assert not offenders, offenders
