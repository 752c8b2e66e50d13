"""What a newcomer writing a third-party loader ran into (issue 15): a loader's own bug named with its
plugin and line, a builder method for mask problems, `plugins show` printing brackets, the loader
check pointing at `conformance_dataset`, and docs/plugins.md rendering as Markdown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from medfuse.contracts import Extractor, Loader
from medfuse.errors import DataError
from medfuse.loading import SampleTableBuilder, load_with_reader, loader_root
from test_sdk import _host_with

REPO = Path(__file__).resolve().parents[1]


class _CrashingLoader(Loader):
    """A loader with a bug: it assumes a ``label`` column its CSV does not have."""

    name: ClassVar[str] = "kit_crash"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {}

    def load(self, root=".", jobs=1, progress=False):
        rows = [{"id": "a", "class": "x"}]
        return {r["id"]: r["label"] for r in rows}  # KeyError: 'label'


def test_a_crashing_loader_is_named_with_its_line_not_a_traceback(tmp_path, monkeypatch):
    from medfuse.cli.data_cmd import data

    with pytest.raises(DataError, match=r"loader 'kit_crash' \(test_newcomer\._CrashingLoader\)") as err:
        load_with_reader(_CrashingLoader(), None, tmp_path)
    assert isinstance(err.value.__cause__, KeyError)
    assert f"{__file__}:" in str(err.value) and "medfuse.errors.DataError" in str(err.value)

    _host_with(monkeypatch, _CrashingLoader)
    res = CliRunner().invoke(data, [str(tmp_path), "--loader", "kit_crash"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "loader 'kit_crash'" in res.output and "KeyError: 'label'" in res.output


def test_builder_reports_a_mask_problem_the_loader_found(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    build = SampleTableBuilder(source=str(tmp_path), loader="mine")
    build.mask_problem("a", tmp_path / "a.png", tmp_path / "a_mask.png", "grey levels 7, 9: cannot map")
    build.add(id="a", label="x", path=tmp_path / "a.png", mask_path=None)
    st = build.build()
    assert st.report.mask_problems == [{"id": "a", "path": str(tmp_path / "a.png"),
                                        "mask_path": str(tmp_path / "a_mask.png"),
                                        "reason": "grey levels 7, 9: cannot map"}]
    assert len(st) == 1 and st.samples["mask_path"].iloc[0] is None
    assert any("mask problems (kept without mask): 1" in line for line in st.report.summary_lines())


class _Bracketed(Extractor):
    """Levels of [cytoplasm, nucleus] as given."""

    name: ClassVar[str] = "kit_bracketed"
    block: ClassVar[str] = "kit"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {"levels": "Grey levels of [cytoplasm, nucleus] in the mask files."}

    def __init__(self, levels: tuple[int, int] = (128, 255)):
        self.levels = levels

    def feature_names(self):
        return ["a"]

    def _prepare(self, image, mask):
        return image[:1, 0, 0].astype("float32")


def test_plugins_show_prints_square_brackets_in_param_docs_and_types(monkeypatch):
    from medfuse.cli.plugins_cmd import show

    _host_with(monkeypatch, _Bracketed)
    res = CliRunner(env={"COLUMNS": "200"}).invoke(show, ["kit_bracketed"])
    assert res.exit_code == 0, res.output
    assert "Grey levels of [cytoplasm, nucleus] in the mask files." in res.output
    assert "tuple[int, int]" in res.output


class _OtherLayout(Loader):
    """A loader of a layout sample_dataset does not write, without conformance_dataset."""

    name: ClassVar[str] = "kit_other_layout"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {}

    def load(self, root=".", jobs=1, progress=False):
        index = loader_root(root) / "labels.txt"
        raise DataError(f"{index}: index file not found")


def test_loader_check_failure_points_at_conformance_dataset():
    from medfuse.testing import check_loader_columns

    with pytest.raises(AssertionError, match=r"conformance_dataset\(root\) -> root"):
        check_loader_columns(_OtherLayout)


def test_plugins_md_closes_every_code_fence_on_its_own_line():
    """A closing fence followed by text ("``` Then try it") leaves the rest of the page as code."""
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert not re.findall(r"^```[ \t]+\S.*$", text, flags=re.M)
    assert text.count("```") % 2 == 0


class _NeedsMask(Extractor):
    """Nucleus share of the cell: NaN without a mask (as a newcomer's extractor does)."""

    name: ClassVar[str] = "kit_needs_mask"
    block: ClassVar[str] = "kitmask"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {}

    def feature_names(self):
        return ["nucleus_share"]

    def _prepare(self, image, mask):
        if mask is None:
            return np.full(1, np.nan, dtype=np.float32)
        return np.array([(mask == 2).sum() / max((mask > 0).sum(), 1)], dtype=np.float32)


def test_compare_warns_about_a_block_that_is_nan_everywhere(tmp_path_factory, monkeypatch):
    """A mask-needing extractor in a pipeline without `mask` used to run at chance level in silence:
    the warning is in the pipeline's results and in both reports (rendered without figures)."""
    import medfuse
    from conftest import write_synthetic_study
    from medfuse.evaluation import run_study
    from medfuse.report import render_html, render_markdown
    from medfuse.study import resolve_study

    _host_with(monkeypatch, _NeedsMask)
    root, study = write_synthetic_study(tmp_path_factory, """
[studies.nomask]
dataset = { loader = "folder", params = { path = "images", masks = "masks" } }
evaluation = { folds = 2, seed = 0, bootstrap = 0, shortcuts = false }
blocks.share = { plugin = "kit_needs_mask" }
pipelines.bare = { blocks = ["share"], classifier = { plugin = "logreg" } }
pipelines.masked = { mask = "dataset", blocks = ["share"], classifier = { plugin = "logreg" } }
""", name="nomask")
    data = medfuse.get_plugin("folder", path="images", masks="masks").load(root)
    results = run_study(resolve_study(f"{study}:nomask"), data).results
    pipes = results["pipelines"]
    assert pipes["masked"]["warnings"] == []
    assert pipes["bare"]["warnings"] == ["block 'share': every feature is NaN for all 18 samples, so it carries no "
                                         "information (an extractor that needs a mask, in a pipeline without `mask`?)"]
    md, html = render_markdown(results, {}), render_html(results, {})
    assert md.count("**Warning:** block 'share': every feature is NaN") == 1
    assert html.count("<b>Warning:</b> block 'share': every feature is NaN") == 1
