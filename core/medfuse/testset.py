"""External test sets: split off by a file-name pattern or loaded apart, checked against development.

The test set of a study (``test = { pattern = "val_*" }`` or ``test = { loader = ..., params = ... }``)
is set apart *before* anything else looks at the data: selection (dedupe, per-class cap) and the CV
splits see the development rows only. Then the test set is checked and trimmed:

* its classes must be among the development classes (else :class:`~medfuse.errors.DataError`);
* test samples whose content hash (``sha1``) is also in the selected development data are
  **dropped** from the test set and reported (``duplicates_of_development``): a test image the
  models were fitted on says nothing about unseen data;
* within the test set, exact duplicates are dropped when ``evaluation.dedupe`` is on, and the
  per-class cap applies to it too (quick runs stay quick).

:func:`combine` appends the kept test rows to the development rows, so every pipeline prepares
both once; the splits mark test rows with fold ``-1`` (see :func:`medfuse.splits.add_test_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from .contracts import SampleTable
from .errors import DataError, StudyError
from .study import Study

TEST_PREFIX = "test:"
"""Prefix of the ids (and default groups) of a test set read by its own loader."""


@dataclass
class TestSelection:
    """The test set kept for scoring and what was removed on the way (``to_dict`` for results.json)."""

    data: SampleTable
    source: str
    n_loaded: int
    duplicates_of_development: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    capped: dict[str, int] = field(default_factory=dict)
    missing_classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        counts = self.data.samples["label"].astype(str).value_counts().sort_index()
        return {"source": self.source, "n_loaded": self.n_loaded, "n_selected": len(self.data),
                "duplicates_of_development": self.duplicates_of_development,
                "duplicates_of_development_policy": "dropped from the test set",
                "duplicate_examples": self.duplicate_examples, "duplicates_removed": self.duplicates_removed,
                "capped": self.capped, "class_counts": {str(k): int(v) for k, v in counts.items()},
                "missing_classes": self.missing_classes}


def _subset(data: SampleTable, rows: np.ndarray) -> SampleTable:
    samples = data.samples.iloc[rows].reset_index(drop=True)
    table = data.table.iloc[rows].reset_index(drop=True) if data.table is not None else None
    return SampleTable(samples, table, data.report, dict(data.meta))


def match_pattern(samples: pd.DataFrame, pattern: str) -> np.ndarray:
    """Boolean mask of the samples whose file (its name, or the end of its path when ``pattern``
    holds a ``/``) matches the glob ``pattern``; samples without a file are matched on their id."""
    paths = samples["path"].tolist() if "path" in samples.columns else [None] * len(samples)
    out = np.zeros(len(samples), bool)
    for i, (path, sid) in enumerate(zip(paths, samples["id"].astype(str))):
        target = path if isinstance(path, str) and path else sid
        out[i] = PurePosixPath(target.replace("\\", "/")).match(pattern)
    return out


def split_test(study: Study, data: SampleTable, test_data: SampleTable | None = None
               ) -> tuple[SampleTable, SampleTable | None, str]:
    """``(development, test, source)``: the study's test set set apart from ``data``.

    With a ``pattern``, matching rows of ``data`` are the test set; with a ``loader``, ``test_data``
    (what that loader returned) is, its ids prefixed with ``test:``. Without a test set:
    ``(data, None, "")``.
    """
    spec = study.test
    key = f"studies.{study.name}.test"
    if spec is None:
        if test_data is not None:
            raise StudyError(study.source, key, "a test set was given but the study names none")
        return data, None, ""
    if spec.pattern is not None:
        hit = match_pattern(data.samples, spec.pattern)
        n = len(hit)
        if not hit.any():
            names = [PurePosixPath(str(p)).name for p in data.samples.get("path", data.samples["id"]).head(3)]
            raise StudyError(study.source, f"{key}.pattern", f"{spec.pattern!r} matched none of the {n} samples "
                             f"(file names look like {', '.join(names)}); fix the glob")
        if hit.all():
            raise StudyError(study.source, f"{key}.pattern", f"{spec.pattern!r} matched all {n} samples: "
                             "nothing is left for development; narrow the glob")
        return (_subset(data, np.flatnonzero(~hit)), _subset(data, np.flatnonzero(hit)),
                f"pattern {spec.pattern!r}")
    if test_data is None:
        raise StudyError(study.source, f"{key}.loader", "the study reads its test set with a loader: load it "
                         "and pass it as test_data (medfuse compare does)")
    samples = test_data.samples.copy()
    own_group = samples["group"].astype(str) == samples["id"].astype(str) if "group" in samples.columns else None
    samples["id"] = TEST_PREFIX + samples["id"].astype(str)
    if own_group is not None:  # a group that is only the id must not collide with a development id
        samples.loc[own_group, "group"] = samples.loc[own_group, "id"]
    test = SampleTable(samples, test_data.table, test_data.report, dict(test_data.meta))
    return data, test, f"loader {spec.loader!r} {spec.params}"


def select_test(dev: SampleTable, test: SampleTable, source: str, classes: np.ndarray, *, dedupe: bool = True,
                max_per_class: int = 0, seed: int = 0) -> TestSelection:
    """Check the test set's classes, drop its duplicates of ``dev`` content, dedupe and cap it."""
    from .splits import select_samples

    labels = test.samples["label"].astype(str)
    unknown = sorted(set(labels) - set(classes.astype(str)))
    if unknown:
        raise DataError(f"test set ({source}): classes {unknown} are not among the development classes "
                        f"{classes.tolist()}; a model cannot predict them. Fix the test set's labels or folders.")
    n_loaded = len(test)
    keep = np.ones(n_loaded, bool)
    examples: list[str] = []
    if "sha1" in test.samples.columns and "sha1" in dev.samples.columns:
        dev_sha = dev.samples["sha1"].dropna().astype(str)
        first_dev = dict(zip(dev_sha[::-1], dev.samples.loc[dev_sha.index[::-1], "id"].astype(str)))
        for i, (sha, sid) in enumerate(zip(test.samples["sha1"], test.samples["id"].astype(str))):
            if isinstance(sha, str) and sha in first_dev:
                keep[i] = False
                if len(examples) < 20:
                    examples.append(f"{sid} = {first_dev[sha]}")
    trimmed = _subset(test, np.flatnonzero(keep))
    sel = select_samples(trimmed, dedupe=dedupe, max_per_class=max_per_class, seed=seed)
    if len(sel.data) == 0:
        raise DataError(f"test set ({source}): no sample left after dropping {int((~keep).sum())} duplicates of "
                        "development images")
    missing = sorted(set(classes.astype(str)) - set(sel.data.samples["label"].astype(str)))
    return TestSelection(sel.data, source, n_loaded, int((~keep).sum()), examples, sel.duplicates_removed,
                         sel.capped, missing)


def combine(dev: SampleTable, test: SampleTable) -> SampleTable:
    """Development rows followed by test rows (table columns aligned on the development table's)."""
    if dev.table is not None and test.table is None:
        raise DataError("the development data has a table but the test set has none; the tabular blocks "
                        "cannot score it. Give the test loader the same table.")
    samples = pd.concat([dev.samples, test.samples], ignore_index=True)
    table = None
    if dev.table is not None:
        missing = [c for c in dev.table.columns if c not in test.table.columns]
        if missing:
            raise DataError(f"the test set's table lacks the development columns {missing}")
        table = pd.concat([dev.table, test.table[list(dev.table.columns)]], ignore_index=True)
    return SampleTable(samples, table, dev.report, dict(dev.meta))
