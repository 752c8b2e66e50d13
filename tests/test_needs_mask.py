"""An extractor declares ``needs_mask``: `medfuse validate` (and so `compare`) refuses it in a pipeline
without ``mask`` before loading data, and the conformance kit fails an extractor that needs a mask
without declaring it."""

from __future__ import annotations

import textwrap
from typing import ClassVar

import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.errors import StudyError
from medfuse.host import get_host
from medfuse.study import check_plugins, load_studies
from medfuse.testing import check_extractor_without_mask, iter_checks, plugin_tags
from test_newcomer import _NeedsMask as _NanWithoutMask  # NaN without a mask, undeclared

STUDY = """
[studies.cells]
dataset = { loader = "folder", params = { path = "images" } }
blocks.cells = { plugin = "cell_summary", params = { finder = "mask" } }
blocks.morph = { plugin = "morphology" }
pipelines.fine = { blocks = ["morph"], classifier = { plugin = "logreg" } }
pipelines.{name} = { {mask}blocks = ["morph", "cells"], classifier = { plugin = "logreg" } }
"""


def _study(tmp_path, name: str = "bare", mask: str = ""):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(STUDY.replace("{name}", name).replace("{mask}", mask)))
    return path


def test_cell_summary_needs_a_mask_only_with_the_mask_finder():
    cls = get_host().get("cell_summary")
    assert cls(finder="mask").needs_mask is True and cls().needs_mask is False
    assert get_host().get("morphology")().needs_mask is False  # it falls back to otsu_cell


def test_validate_refuses_a_mask_needing_block_without_mask(tmp_path):
    path = _study(tmp_path)
    with pytest.raises(StudyError) as info:
        check_plugins(load_studies(path)["cells"], get_host())
    text = str(info.value)
    assert text.startswith(f"{path}: studies.cells.pipelines.bare.mask: block 'cells' ('cell_summary') needs a "
                           "mask for every image, but pipeline 'bare' of study 'cells' has no mask"), text
    assert 'add mask = "dataset"' in text, text
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and "block 'cells' ('cell_summary') needs a mask" in result.output, result.output


@pytest.mark.parametrize("mask", ['mask = "dataset", ', 'mask = { plugin = "otsu_cell" }, '])
def test_validate_accepts_it_with_a_mask(tmp_path, mask):
    check_plugins(load_studies(_study(tmp_path, "masked", mask))["cells"], get_host())
    result = CliRunner().invoke(main, ["validate", str(_study(tmp_path, "masked", mask))])
    assert result.exit_code == 0, result.output


class _RaisesWithoutMask(_NanWithoutMask):
    """Nucleus share of the cell; refuses an image without a mask."""

    def _prepare(self, image, mask):
        if mask is None:
            raise ValueError("no mask")
        return super()._prepare(image, mask)


class _Declared(_NanWithoutMask):
    """Nucleus share of the cell, declaring that it needs a mask."""

    needs_mask: ClassVar[bool] = True


@pytest.mark.parametrize(("cls", "message"), [(_NanWithoutMask, "every feature is NaN for every image without a mask"),
                                              (_RaisesWithoutMask, "raised ValueError (no mask)")])
def test_kit_fails_an_undeclared_mask_needing_extractor(cls, message):
    assert check_extractor_without_mask in iter_checks(cls)
    with pytest.raises(AssertionError) as info:
        check_extractor_without_mask(cls)
    assert message in str(info.value) and "declare needs_mask = True" in str(info.value), str(info.value)


def test_kit_honours_a_declared_needs_mask():
    assert plugin_tags(_Declared).needs_mask is True and plugin_tags(_NanWithoutMask).needs_mask is False
    assert check_extractor_without_mask not in iter_checks(_Declared)
    # a property decided by a parameter is read on the kit's instance (conformance_params)
    cell_summary = get_host().get("cell_summary")
    assert plugin_tags(cell_summary).needs_mask is False
    with pytest.raises(ValueError, match="fixed tag"):
        plugin_tags(type("_Tagged", (_NanWithoutMask,), {"conformance_tags": {"needs_mask": True}}))


def test_extract_refuses_a_mask_needing_block_with_mask_none(tmp_path):
    """`medfuse extract --mask none` with a block that needs a mask fails before reading any image."""
    from click.testing import CliRunner
    from medfuse.cli import main

    result = CliRunner().invoke(main, ["extract", str(tmp_path), "--blocks", "cell_summary", "--set",
                                       "cell_summary.finder=mask", "--mask", "none", "--out",
                                       str(tmp_path / "f.csv")])
    assert result.exit_code == 1 and "['cell_summary'] need a mask for every image" in result.output, result.output
    assert not (tmp_path / "f.csv").exists()
