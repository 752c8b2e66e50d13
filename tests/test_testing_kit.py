"""The conformance kit's own tests: each check fails on a plugin built to break it."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest
from medfuse.contracts import Transform
from medfuse.testing import check_extractor, check_plugin, iter_checks
from medfuse_plugins.loaders import FolderLoader, TableLoader


def failures(cls: type) -> str:
    """The message of :func:`check_plugin`'s AssertionError for ``cls`` ('' when it passes)."""
    try:
        check_plugin(cls)
    except AssertionError as exc:
        return str(exc)
    return ""


# ---- set_params ---------------------------------------------------------------------------------

class _Invert(Transform):
    """Inverts the image (a well-behaved transform the broken ones below derive from)."""

    name: ClassVar[str] = "kit_invert"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {"strength": "Unused."}

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def _apply(self, image, mask):
        return 255 - image, mask


class _SetParamsReturnsNone(_Invert):
    """set_params forgets to return self."""

    name: ClassVar[str] = "kit_set_params_none"

    def set_params(self, **params: Any) -> None:  # type: ignore[override]
        super().set_params(**params)


class _SetParamsIgnored(_Invert):
    """set_params returns self but stores nothing."""

    name: ClassVar[str] = "kit_set_params_ignored"

    def set_params(self, **params: Any) -> _SetParamsIgnored:
        return self


class _RefusesItsOwnParams(_Invert):
    """validate_params rejects the default (and conformance) strength."""

    name: ClassVar[str] = "kit_refuses_own_params"

    def validate_params(self) -> None:
        if self.strength >= 1:
            raise ValueError(f"strength must be < 1, got {self.strength}")


def test_well_behaved_transform_passes():
    assert failures(_Invert) == ""


@pytest.mark.parametrize(("cls", "why"), [(_SetParamsReturnsNone, "must return self"),
                                          (_SetParamsIgnored, "does not reflect set_params")])
def test_set_params_check_fails_on_a_broken_set_params(cls, why):
    message = failures(cls)
    assert "check_set_params" in message and why in message


def test_params_check_runs_validate_params():
    message = failures(_RefusesItsOwnParams)
    assert "check_params_roundtrip: validate_params() refuses the conformance_params: strength must be < 1" in message


# ---- loaders ------------------------------------------------------------------------------------

class _HidesBadFiles(FolderLoader):
    """Drops undecodable files without reporting them."""

    name: ClassVar[str] = "kit_hides_bad_files"

    def load(self, root=".", jobs=1, progress=False):
        data = super().load(root, jobs, progress)
        data.report.bad_files = []
        return data


class _RaisesOnBadFiles(FolderLoader):
    """Gives up on the whole dataset at the first bad file."""

    name: ClassVar[str] = "kit_raises_on_bad_files"

    def load(self, root=".", jobs=1, progress=False):
        from medfuse.errors import DataError

        data = super().load(root, jobs, progress)
        if data.report.bad_files:
            raise DataError(f"bad file {data.report.bad_files[0]['path']}")
        return data


class _WrongColumns(FolderLoader):
    """Leaves out the sha1 column."""

    name: ClassVar[str] = "kit_wrong_columns"

    def load(self, root=".", jobs=1, progress=False):
        data = super().load(root, jobs, progress)
        data.samples = data.samples.drop(columns=["sha1"])
        return data


class _TextTable(TableLoader):
    """Returns table columns as text rather than float64."""

    name: ClassVar[str] = "kit_text_table"

    def load(self, root=".", jobs=1, progress=False):
        data = super().load(root, jobs, progress)
        data.table = data.table.astype(str)
        return data


class _KeepsUnlabelled(TableLoader):
    """Keeps the row without a label (as the string 'nan') and reports nothing."""

    name: ClassVar[str] = "kit_keeps_unlabelled"

    def load(self, root=".", jobs=1, progress=False):
        import pandas as pd
        from medfuse.contracts import SampleTable
        from medfuse.datareport import DataReport, finalize

        df = pd.read_csv(f"{root}/table.csv", dtype={"id": str})
        samples = pd.DataFrame({"id": df["id"], "path": None, "mask_path": None,
                                "label": df["label"].astype(str), "group": df["id"], "sha1": df["id"]})
        report = DataReport(source=str(root), loader=self.name, n_found=len(df))
        finalize(report, samples, None)
        return SampleTable(samples, None, report)


def test_builtin_loaders_pass_the_loader_checks():
    assert failures(FolderLoader) == "" and failures(TableLoader) == ""


@pytest.mark.parametrize(("cls", "check", "why"), [
    (_HidesBadFiles, "check_loader_bad_rows", "not reported as a row of report.bad_files"),
    (_RaisesOnBadFiles, "check_loader_sample_table", "failed: bad file"),
    (_WrongColumns, "check_loader_sample_table", "samples columns"),
    (_TextTable, "check_loader_sample_table", "must be float64"),
    (_KeepsUnlabelled, "check_loader_bad_rows", "row without a label (u9) was kept"),
])
def test_loader_checks_fail_on_broken_loaders(cls, check, why):
    message = failures(cls)
    assert f"{check}: " in message and why in message, message


# ---- iter_checks --------------------------------------------------------------------------------

def test_iter_checks_selects_the_checks_of_the_kind():
    names = {cls: [c.__name__ for c in iter_checks(cls)] for cls in (_Invert, FolderLoader)}
    common = ["check_declaration", "check_params_roundtrip", "check_set_params"]
    assert names[_Invert] == [*common, "check_transform"]
    assert names[FolderLoader] == [*common, "check_loader_missing_root", "check_loader_sample_table",
                                   "check_loader_bad_rows"]


# ---- determinism of trained networks ------------------------------------------------------------

_SEEDS = itertools.count(100)


def _unseeded_cnn() -> type:
    from medfuse_plugins.cnn import CNNEmbedding

    class _UnseededCNN(CNNEmbedding):
        """Seeds TensorFlow from a counter, not from random_state: every training differs."""

        name: ClassVar[str] = "kit_unseeded_cnn"
        conformance_params: ClassVar[dict[str, Any]] = {**CNNEmbedding.conformance_params, "size": 16,
                                                        "width": 4, "embedding_dim": 8, "epochs": 1}

        def _fit_cnn(self, P, y):
            import medfuse.keras_utils as ku

            real = ku.seed_everything
            ku.seed_everything = lambda seed, deterministic=True: real(next(_SEEDS), deterministic)
            try:
                super()._fit_cnn(P, y)
            finally:
                ku.seed_everything = real

    return _UnseededCNN


def test_determinism_check_trains_twice_and_catches_an_unseeded_network():
    """A memoised network must not stand in for the second training (it would always agree)."""
    pytest.importorskip("keras")
    from medfuse.keras_utils import TRAINED

    before = len(TRAINED)
    with pytest.raises(AssertionError, match="features differ between two runs"):
        check_extractor(_unseeded_cnn())
    assert len(TRAINED) == before  # the kit's trainings leave the process's memo as it was
