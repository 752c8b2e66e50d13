"""Which samples a study evaluates, and on which folds.

:func:`select_samples` drops exact duplicates (same ``sha1``) and caps the samples per class;
:func:`make_splits` draws stratified k folds over sample ids (grouped by patient/smear and by
identical content, with an optional held-out part) and records which of them are evaluated
(:func:`fold_choice`: all, the first N, or chosen fold numbers); :func:`add_test_rows` appends an external
test set as fold ``-1``; :func:`check_leakage` proves that no content hash or group straddles a
split; :func:`rows_by_fold` maps the shared folds onto one pipeline's prepared rows. Every
pipeline of a study is evaluated on the same :class:`Splits` (:func:`medfuse.evaluation.run_study`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, StratifiedShuffleSplit

from .contracts import SampleTable
from .errors import DataError, StudyError

HOLDOUT_VALUES = ("test", "holdout")
"""Values of an optional ``split`` column of the samples that mark a fixed held-out set."""


# ---- sample selection -------------------------------------------------------------------------

@dataclass
class Selection:
    """Samples kept for evaluation and what was removed on the way.

    Attributes
    ----------
    data : SampleTable
        The kept samples (and table rows), index reset.
    n_loaded : int
        Rows the loader returned.
    duplicates_removed : int
        Rows dropped because an earlier row has the same content hash (``sha1``).
    duplicate_groups : list of list of str
        Ids sharing one content hash (at most 50 groups listed).
    label_conflicts : int
        Rows dropped because identical content carried different labels (the whole group goes).
    capped : dict
        Rows removed per class by ``max_per_class``.
    """

    data: SampleTable
    n_loaded: int
    duplicates_removed: int = 0
    duplicate_groups: list[list[str]] = field(default_factory=list)
    label_conflicts: int = 0
    capped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n_loaded": self.n_loaded, "n_selected": len(self.data),
                "duplicates_removed": self.duplicates_removed, "duplicate_groups": self.duplicate_groups,
                "label_conflicts_removed": self.label_conflicts, "capped": self.capped}


def _subset(data: SampleTable, keep: np.ndarray) -> SampleTable:
    samples = data.samples.iloc[keep].reset_index(drop=True)
    table = data.table.iloc[keep].reset_index(drop=True) if data.table is not None else None
    return SampleTable(samples, table, data.report, dict(data.meta))


def select_samples(data: SampleTable, dedupe: bool = True, max_per_class: int = 0, seed: int = 0) -> Selection:
    """Drop exact duplicates (same ``sha1``) and cap the samples per class.

    Parameters
    ----------
    data : SampleTable
        What the loader returned; ``samples`` needs ``id`` and ``label`` (``sha1`` for dedupe).
    dedupe : bool
        Keep the first row of each content hash. Identical content with different labels is
        ambiguous: every row of such a group is dropped.
    max_per_class : int
        Keep at most this many rows per class (a seeded random subset, in original order); 0 = all.
    seed : int
        Seed of the per-class subset.
    """
    samples = data.samples
    for col in ("id", "label"):
        if col not in samples.columns:
            raise DataError(f"sample table has no {col!r} column (columns: {', '.join(map(str, samples.columns))})")
    ids = samples["id"].astype(str)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5]
        raise DataError(f"sample ids are not unique, e.g. {', '.join(dup)}; the loader must give one id per sample")
    n = len(samples)
    keep = np.ones(n, bool)
    sel = Selection(data, n)
    if dedupe and "sha1" in samples.columns:
        sha = samples["sha1"]
        known = sha.notna().to_numpy()
        labels = samples["label"].astype(str)
        frame = pd.DataFrame({"sha1": sha[known], "label": labels[known], "id": ids[known]})
        groups = frame.groupby("sha1", sort=False)
        for _, g in groups:
            if len(g) < 2:
                continue
            rows = g.index.to_numpy()
            if len(sel.duplicate_groups) < 50:
                sel.duplicate_groups.append(g["id"].tolist())
            if g["label"].nunique() > 1:
                keep[rows] = False
                sel.label_conflicts += len(rows)
            else:
                keep[rows[1:]] = False
                sel.duplicates_removed += len(rows) - 1
    if max_per_class and max_per_class > 0:
        rng = np.random.default_rng(seed)
        labels = samples["label"].astype(str).to_numpy()
        for cls in sorted(np.unique(labels[keep])):
            rows = np.flatnonzero(keep & (labels == cls))
            if len(rows) > max_per_class:
                drop = np.setdiff1d(rows, rng.choice(rows, max_per_class, replace=False))
                keep[drop] = False
                sel.capped[str(cls)] = int(len(drop))
    sel.data = _subset(data, np.flatnonzero(keep))
    return sel



# ---- splits -----------------------------------------------------------------------------------

@dataclass
class Splits:
    """Folds over sample ids, shared by every pipeline of a study.

    Attributes
    ----------
    ids : ndarray of str, shape (n,)
        Sample ids in selection order; positions below index this array.
    fold_of : ndarray of int, shape (n,)
        CV fold of each sample's test part (0..k-1), or -1 for held-out samples.
    n_folds : int
    grouped : bool
        Whether folds keep groups (patients, smears, identical content) together.
    method : str
        Splitter used, for the report.
    leakage : dict
        Content hashes and groups found on both sides of any split (should be zero).
    """

    ids: np.ndarray
    fold_of: np.ndarray
    n_folds: int
    grouped: bool
    method: str
    holdout_method: str = ""
    leakage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evaluated: tuple[int, ...] | None = None

    @property
    def run(self) -> tuple[int, ...]:
        """Indices (0-based) of the folds evaluated, ascending: ``evaluated``, or every fold."""
        return tuple(range(self.n_folds)) if self.evaluated is None else self.evaluated

    @property
    def n_run(self) -> int:
        """Number of folds evaluated."""
        return len(self.run)

    @property
    def holdout(self) -> np.ndarray:
        return np.flatnonzero(self.fold_of < 0)

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(train, test)`` positions of each evaluated CV fold (held-out samples are in neither)."""
        dev = self.fold_of >= 0
        return [(np.flatnonzero(dev & (self.fold_of != k)), np.flatnonzero(self.fold_of == k))
                for k in self.run]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "folds": self.n_folds, "run_folds": self.n_run,
                "fold_numbers": [k + 1 for k in self.run], "grouped": self.grouped,
                "fold_sizes": [int((self.fold_of == k).sum()) for k in range(self.n_folds)],
                "holdout": int((self.fold_of < 0).sum()), "holdout_method": self.holdout_method,
                "leakage": self.leakage, "warnings": self.warnings}


def parse_fold_numbers(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """Fold numbers (1-based) from ``"2"``, ``"2-5"``, ``"1,3-5"`` or a sequence of ints; ascending, unique.

    Only the syntax is checked here; :func:`fold_choice` checks the range against the number of folds.
    """
    key = "only_folds (--only-folds)"
    if isinstance(spec, str):
        numbers: list[int] = []
        for part in (p.strip() for p in spec.split(",")):
            lo, dash, hi = part.partition("-")
            if not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
                raise StudyError("<study>", key, f"expected fold numbers such as 2, 2-5 or 1,3-5; got {spec!r}")
            a, b = int(lo), int(hi) if dash else int(lo)
            if b < a:
                raise StudyError("<study>", key, f"range {part!r} runs backwards; write {b}-{a}")
            numbers += range(a, b + 1)
    elif isinstance(spec, int | np.integer):
        numbers = [int(spec)]
    else:
        numbers = [int(n) for n in spec]
    if not numbers:
        raise StudyError("<study>", key, "no fold number given")
    return tuple(sorted(set(numbers)))


def fold_choice(n_folds: int, run_folds: int | None = None,
                only_folds: str | int | Sequence[int] | None = None) -> tuple[int, ...] | None:
    """Indices (0-based) of the folds to evaluate: ``None`` = all, the first ``run_folds``, or the
    fold numbers ``only_folds`` (1-based: ``"2"``, ``"2-5"``, ``[2, 3]``). The folds themselves do
    not depend on this choice (same seed, same assignment), only which of them are fitted and scored.
    """
    if run_folds is not None and only_folds is not None:
        raise StudyError("<study>", "run_folds / only_folds",
                         "give one: the first N folds (run_folds) or chosen fold numbers (only_folds)")
    if run_folds is not None:
        if not 1 <= run_folds <= n_folds:
            raise StudyError("<study>", "run_folds", f"expected 1..{n_folds} (the number of folds), got {run_folds}")
        return None if run_folds == n_folds else tuple(range(run_folds))
    if only_folds is None:
        return None
    numbers = parse_fold_numbers(only_folds)
    bad = [n for n in numbers if not 1 <= n <= n_folds]
    if bad:
        raise StudyError("<study>", "only_folds (--only-folds)",
                         f"fold {bad[0]} is out of range: fold numbers run 1-{n_folds} (--folds / "
                         f"evaluation.folds = {n_folds})")
    return None if len(numbers) == n_folds else tuple(n - 1 for n in numbers)


def evaluated_fold_numbers(settings: dict[str, Any]) -> list[int]:
    """Fold numbers (1-based) evaluated, from results' ``settings`` or ``splits`` (results written
    before ``fold_numbers`` existed evaluated the first ``run_folds``)."""
    if settings.get("fold_numbers"):
        return [int(n) for n in settings["fold_numbers"]]
    return list(range(1, int(settings.get("run_folds") or settings["folds"]) + 1))


def _number_ranges(numbers: Sequence[int]) -> str:
    """``2-5``, ``1, 3`` or ``1-2, 4``: consecutive runs of fold numbers joined."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def cv_text(settings: dict[str, Any]) -> str:
    """``5-fold CV`` when every fold was evaluated, else which: ``fold 2 of 5 (one 80/20 split)``,
    ``folds 2-5 of 5``."""
    k = int(settings["folds"])
    numbers = evaluated_fold_numbers(settings)
    if len(numbers) >= k:
        return f"{k}-fold CV"
    if len(numbers) == 1:
        return f"fold {numbers[0]} of {k} (one {100 - round(100 / k)}/{round(100 / k)} split)"
    return f"folds {_number_ranges(numbers)} of {k}"


def _union_groups(groups: np.ndarray, sha1: np.ndarray | None) -> np.ndarray:
    """Merge groups that share a content hash, so identical samples never straddle a split."""
    codes, uniq = pd.factorize(pd.Series(groups, dtype=str))
    parent = np.arange(len(uniq))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if sha1 is not None:
        first: dict[str, int] = {}
        for code, h in zip(codes, sha1):
            if h is None or (isinstance(h, float) and np.isnan(h)):
                continue
            if h in first:
                ra, rb = find(first[h]), find(code)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            else:
                first[h] = code
    return np.array([find(c) for c in codes])


def make_splits(samples: pd.DataFrame, folds: int = 5, seed: int = 0, holdout: float = 0.0,
                run_folds: int | None = None, only_folds: str | int | Sequence[int] | None = None) -> Splits:
    """Stratified k-fold over ``samples`` (grouped when groups differ from ids), plus a held-out part.

    Parameters
    ----------
    samples : DataFrame
        Columns ``id``, ``label``; optional ``group`` (patient/smear), ``sha1`` (content hash) and
        ``split`` (rows marked ``test``/``holdout`` form a fixed held-out set).
    folds : int
        Number of CV folds over the development rows.
    seed : int
        Seed of the shuffling.
    holdout : float
        Fraction held out (grouped, stratified) when there is no ``split`` column; 0 = none.
    run_folds : int, optional
        Evaluate only the first ``run_folds`` folds (``folds=5, run_folds=1``: one 80/20 split).
    only_folds : str or sequence of int, optional
        Evaluate only these folds, numbered from 1 (``"2"``, ``"2-5"``, ``[2, 4]``); the fold
        assignment is the same as without it. Exclusive with ``run_folds`` (:func:`fold_choice`).
    """
    evaluated = fold_choice(folds, run_folds, only_folds)
    n = len(samples)
    ids = samples["id"].astype(str).to_numpy()
    y = samples["label"].astype(str).to_numpy()
    raw_groups = samples["group"].astype(str).to_numpy() if "group" in samples.columns else ids
    sha1 = samples["sha1"].to_numpy(dtype=object) if "sha1" in samples.columns else None
    groups = _union_groups(raw_groups, sha1)
    grouped = len(np.unique(groups)) < n
    fold_of = np.zeros(n, dtype=int)
    notes: list[str] = []
    holdout_method = ""

    split_col = samples["split"].astype(str).str.lower() if "split" in samples.columns else None
    if split_col is not None and split_col.isin(HOLDOUT_VALUES).any():
        fold_of[split_col.isin(HOLDOUT_VALUES).to_numpy()] = -1
        holdout_method = "fixed (split column)"
    elif holdout and holdout > 0:
        if not 0 < holdout < 1:
            raise StudyError("<study>", "evaluation.holdout", f"expected a fraction in (0, 1), got {holdout}")
        if grouped:
            k = max(2, round(1 / holdout))
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            _, test = next(splitter.split(np.zeros(n), y, groups))
            holdout_method = f"StratifiedGroupKFold 1/{k} (grouped)"
        else:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
            _, test = next(splitter.split(np.zeros(n), y))
            holdout_method = f"StratifiedShuffleSplit {holdout:g}"
        fold_of[test] = -1

    dev = np.flatnonzero(fold_of >= 0)
    n_groups = len(np.unique(groups[dev]))
    if n_groups < folds:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} "
                        f"{'groups' if grouped else 'samples'}; the development set has {n_groups}")
    counts = pd.Series(y[dev]).value_counts()
    small = counts[counts < folds]
    if len(small):
        notes.append(f"classes with fewer samples than folds ({folds}): "
                        + ", ".join(f"{c} ({v})" for c, v in small.items())
                        + "; some test folds lack them")
    if grouped:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(dev)), y[dev], groups[dev])
        method = "StratifiedGroupKFold"
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(dev)), y[dev])
        method = "StratifiedKFold"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small classes: reported in ``warnings`` above
        for k, (_, test) in enumerate(parts):
            fold_of[dev[test]] = k
    splits = Splits(ids, fold_of, folds, grouped, method, holdout_method, warnings=notes, evaluated=evaluated)
    splits.leakage = check_leakage(splits, samples)
    return splits


def check_leakage(splits: Splits, samples: pd.DataFrame) -> dict[str, Any]:
    """Content hashes and groups present on both sides of any split (each CV fold, and dev vs held-out).

    Returns counts and up to 10 examples; zero everywhere means no sample leaked.
    """
    sha1 = samples["sha1"].astype(str).to_numpy() if "sha1" in samples.columns else None
    has_sha = samples["sha1"].notna().to_numpy() if "sha1" in samples.columns else None
    groups = samples["group"].astype(str).to_numpy() if "group" in samples.columns else None
    pairs = list(splits.folds())
    names = [f"fold {k + 1}" for k in splits.run]
    if len(splits.holdout):
        pairs.append((np.flatnonzero(splits.fold_of >= 0), splits.holdout))
        names.append("held-out")
    shared_sha: set[str] = set()
    shared_groups: set[str] = set()
    examples: list[str] = []
    for name, (train, test) in zip(names, pairs):
        if sha1 is not None:
            both = (set(sha1[train][has_sha[train]]) & set(sha1[test][has_sha[test]]))
            shared_sha |= both
            examples += [f"{name}: sha1 {h[:12]}" for h in sorted(both)][: max(0, 10 - len(examples))]
        if groups is not None:
            both = set(groups[train]) & set(groups[test])
            shared_groups |= both
            examples += [f"{name}: group {g}" for g in sorted(both)][: max(0, 10 - len(examples))]
    return {"splits_checked": len(pairs), "shared_sha1": len(shared_sha), "shared_groups": len(shared_groups),
            "examples": examples, "ok": not shared_sha and not shared_groups}


def add_test_rows(splits: Splits, samples: pd.DataFrame, source: str) -> Splits:
    """Append the external test rows (``samples`` = development rows then test rows) as fold ``-1``.

    The folds were drawn over the development rows alone; the leakage check is redone over both
    (dev vs test is one more split checked).
    """
    n_dev = len(splits.ids)
    test_ids = samples["id"].astype(str).to_numpy()[n_dev:]
    out = Splits(np.concatenate([splits.ids, test_ids]), np.concatenate([splits.fold_of, -np.ones(len(test_ids), int)]),
                 splits.n_folds, splits.grouped, splits.method, f"external test set ({source})",
                 warnings=list(splits.warnings), evaluated=splits.evaluated)
    out.leakage = check_leakage(out, samples)
    return out


def positions_in(splits: Splits, ids: Sequence[str]) -> np.ndarray:
    """Position in ``splits.ids`` of each id (a pipeline's ``Prepared.samples.id``)."""
    index = pd.Index(splits.ids)
    pos = index.get_indexer(pd.Index([str(i) for i in ids]))
    if (pos < 0).any():
        missing = [str(i) for i, p in zip(ids, pos) if p < 0][:5]
        raise DataError(f"prepared samples not in the study's selection: {', '.join(missing)}")
    return pos


def rows_by_fold(splits: Splits, ids: Sequence[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple | None]:
    """Map the shared folds onto a pipeline's rows (``Prepared.samples`` order).

    Returns ``(folds, holdout)``: each evaluated fold (``splits.run``, in that order) a
    ``(train_rows, test_rows)`` pair; ``holdout`` is ``(dev_rows, holdout_rows)`` or ``None``.
    """
    f = splits.fold_of[positions_in(splits, ids)]
    folds = [(np.flatnonzero((f >= 0) & (f != k)), np.flatnonzero(f == k)) for k in splits.run]
    hold = (np.flatnonzero(f >= 0), np.flatnonzero(f < 0)) if (f < 0).any() else None
    return folds, hold

