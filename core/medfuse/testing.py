"""Conformance kit for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Run it on your own plugin in your own test suite::

    from medfuse.testing import parametrize_with_checks
    from my_package.plugins import MyExtractor

    @parametrize_with_checks([MyExtractor])
    def test_conformance(plugin, check):
        check(plugin)

or in one call: ``medfuse.testing.check_plugin(MyExtractor)`` (raises ``AssertionError`` listing
every failed check). The checks use the class's ``conformance_params`` (small, fast settings).

Checked for every kind: the declaration (name, kind, semantic version, documented parameters),
``__init__`` storing parameters only, ``get_params``/``clone`` round-trip, ``set_params`` returning
``self`` with ``get_params`` reflecting the change. Then the checks of the plugin's kind
(:func:`iter_checks` yields only those): output shapes and dtypes, stable ``<block>.<feature>``
names, determinism under ``random_state`` (two real trainings: a network memoised by the first fit
is not reused, see :func:`fresh_training`), pickle round-trip giving identical output, and a clear
:class:`~medfuse.errors.InvalidInputError` (or another ``MedfuseError``/``ValueError``) on bad input
instead of a crash deep inside a library. Loaders are run on :func:`sample_dataset` (point
``conformance_params`` at one of its layouts): the sample table's documented columns and dtypes,
and bad files or rows reported in the data report rather than raised or kept.
"""

from __future__ import annotations

import contextlib
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .contracts import Plugin, SampleTable
from .datareport import DataReport
from .errors import MedfuseError
from .host import declaration_problem
from .objects import split_ref

Check = Callable[[type[Plugin]], None]

GOOD_ERRORS = (MedfuseError, ValueError, TypeError)


# ---- tiny inputs ------------------------------------------------------------------------------

def sample_cells(n: int = 12, size: int = 32, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """``n`` small cell images (uint8 HxWx3), masks {0,1,2} and labels ('small'/'large' cells)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks, labels = [], [], []
    for i in range(n):
        large = i % 2 == 1
        r = size * (0.36 if large else 0.22) * rng.uniform(0.9, 1.1)
        cy, cx = size / 2 + rng.uniform(-2, 2, 2)
        d = np.hypot(yy - cy, (xx - cx) * rng.uniform(0.8, 1.2))
        mask = np.zeros((size, size), np.uint8)
        mask[d < r] = 1
        mask[d < r * 0.5] = 2
        img = np.full((size, size, 3), (230, 200, 210), np.float32)
        img[mask == 1] = (200, 120, 160)
        img[mask == 2] = (90, 40, 120)
        img += rng.normal(0, 6, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(mask)
        labels.append("large" if large else "small")
    return images, masks, np.asarray(labels, dtype=object)


def sample_table(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A lab-like table (with NaNs) whose label depends on two columns."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"HGB": rng.normal(12, 2, n), "MCV": rng.normal(85, 8, n),
                       "PLT": rng.normal(250, 60, n), "noise": rng.normal(0, 1, n)})
    y = np.where(df["HGB"] + 0.1 * (df["MCV"] - 85) < 12, "anemic", "healthy").astype(object)
    df.loc[::7, "MCV"] = np.nan
    return df, y


def sample_features(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 feature matrix with three string classes, learnable from the first two columns."""
    rng = np.random.default_rng(seed)
    y = np.asarray(["a", "b", "c"] * (n // 3), dtype=object)
    codes = np.repeat([[0, 1, 2]], n // 3, axis=0).ravel()
    X = rng.normal(0, 1, (len(y), 6)).astype(np.float32)
    X[:, 0] += 2.5 * codes
    X[:, 1] -= 2.0 * codes
    return X, y


SAMPLE_COLUMNS = ("id", "path", "mask_path", "label", "group", "sha1")
"""The columns of :attr:`medfuse.contracts.SampleTable.samples`, in order."""

BROKEN_IMAGE = "broken.png"
"""The undecodable image file :func:`sample_dataset` plants in each image layout."""

UNLABELLED_ID = "u9"
"""The id of the table row without a label that :func:`sample_dataset` plants in ``table.csv``."""


def sample_dataset(root: Path | str, n_per_class: int = 3, size: int = 24) -> Path:
    """Write a small dataset in every built-in layout under ``root`` and return ``root``.

    * ``classes/<label>/cell-<i>.png``: one sub-folder per class (``small``, ``large``);
    * ``masks/<label>/cell-<i>.png``: the masks mirroring ``classes`` (values 0, 1, 2);
    * ``images/cell-<i>.png``: the same images without class folders (their masks, by stem, in ``masks``);
    * ``manifest.csv``: ``path,label,group`` rows pointing into ``classes`` (paths relative to root);
    * ``table.csv``: ``id,label,HGB,MCV`` rows with no images.

    Each image layout holds one undecodable file named :data:`BROKEN_IMAGE` (the manifest lists
    it) and ``table.csv`` holds one row without a label (id :data:`UNLABELLED_ID`): a loader must
    report them in its :class:`~medfuse.datareport.DataReport` and leave them out of the samples.
    """
    from PIL import Image

    root = Path(root)
    images, masks, labels = sample_cells(2 * n_per_class, size)
    rows = []
    for i, (img, mask, label) in enumerate(zip(images, masks, labels)):
        for folder, arr in ((f"classes/{label}", img), (f"masks/{label}", mask), ("images", img)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / folder / f"cell-{i}.png")
        rows.append({"path": f"classes/{label}/cell-{i}.png", "label": label, "group": f"p{i // 2}"})
    for folder in (f"classes/{labels[0]}", "images"):
        (root / folder / BROKEN_IMAGE).write_bytes(b"not an image")
    rows.append({"path": f"classes/{labels[0]}/{BROKEN_IMAGE}", "label": labels[0], "group": "p9"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    table, y = sample_table(4 * n_per_class)
    table = table[["HGB", "MCV"]].assign(label=y, id=[f"r{i}" for i in range(len(y))])
    table.loc[len(table)] = {"HGB": 12.0, "MCV": 85.0, "label": None, "id": UNLABELLED_ID}
    table[["id", "label", "HGB", "MCV"]].to_csv(root / "table.csv", index=False)
    return root


class _ForgetfulMemo:
    """Stands in for :class:`medfuse.keras_utils.TrainedModels`: finds nothing, keeps nothing."""

    max_items = 0

    @staticmethod
    def key(arrays: Any, params: dict[str, Any]) -> str:
        from .keras_utils import TrainedModels

        return TrainedModels.key(arrays, params)

    def get(self, key: str, custom_objects: dict[str, Any] | None = None) -> None:
        return None

    def put(self, key: str, model: Any, info: dict[str, Any]) -> None:
        """Nothing is kept (and the network is not serialised for nothing)."""

    def clear(self) -> None:
        """Nothing to clear."""

    def __len__(self) -> int:
        return 0


@contextlib.contextmanager
def fresh_training() -> Iterator[None]:
    """Inside this block every ``fit`` trains anew: the process's memo of trained Keras networks
    (:data:`medfuse.keras_utils.TRAINED`) is swapped for an empty one that keeps nothing, so a
    second fit cannot return the first fit's network. The memo is restored afterwards."""
    from . import keras_utils

    memo = getattr(keras_utils, "TRAINED", None)
    if memo is None:
        yield
        return
    keras_utils.TRAINED = _ForgetfulMemo()
    try:
        yield
    finally:
        keras_utils.TRAINED = memo


# ---- helpers ----------------------------------------------------------------------------------

def _make(cls: type[Plugin], **extra: Any) -> Plugin:
    params = dict(cls.conformance_params)
    if "random_state" in cls.param_schema():
        params.setdefault("random_state", 0)
    params.update(extra)
    return cls(**params)


def _roundtrip(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


def _same(a: Any, b: Any, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes differ {a.shape} vs {b.shape}"
    if a.dtype.kind in "fc":
        assert np.allclose(a, b, equal_nan=True, rtol=1e-5, atol=1e-6), f"{what}: values differ"
    else:
        assert np.array_equal(a, b), f"{what}: values differ"


def _raises_clearly(fn: Callable[[], Any], what: str) -> None:
    try:
        fn()
    except GOOD_ERRORS as exc:
        assert str(exc), f"{what}: raised {type(exc).__name__} with an empty message"
        return
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{what}: raised {type(exc).__name__} ({exc}); expected InvalidInputError") from exc
    raise AssertionError(f"{what}: accepted bad input without an error")


BAD_IMAGES = {
    "empty image": lambda: np.zeros((0, 0, 3), np.uint8),
    "2-D array": lambda: np.zeros((16, 16), np.uint8),
    "float image": lambda: np.zeros((16, 16, 3), np.float64),
    "not an array": lambda: "image.png",
}


# ---- checks for every kind --------------------------------------------------------------------

def check_declaration(cls: type[Plugin]) -> None:
    problem = declaration_problem(cls)
    assert not problem, problem
    undocumented = [p for p in cls.param_schema() if not cls.param_docs.get(p)]
    assert not undocumented, f"{cls.__name__}: parameters without param_docs: {undocumented}"
    assert cls.describe(), f"{cls.__name__}: no docstring"
    unknown = set(cls.conformance_params) - set(cls.param_schema())
    assert not unknown, f"{cls.__name__}.conformance_params names unknown parameters {sorted(unknown)}"


def check_params_roundtrip(cls: type[Plugin]) -> None:
    est = _make(cls)
    params = est.get_params(deep=False)
    assert set(params) == set(cls.param_schema()), "get_params() must return every __init__ parameter"
    learned = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    assert not learned, f"__init__ must only store parameters, found learned attributes {learned}"
    again = cls(**params).get_params(deep=False)
    assert repr(again) == repr(params), "rebuilding from get_params() changes the parameters"
    cloned = clone(est)
    assert repr(cloned.get_params(deep=False)) == repr(params), "clone() changes the parameters"
    assert cls(**cls.conformance_params).cache_key() == cls(**cls.conformance_params).cache_key()
    try:
        est.validate_params()
    except GOOD_ERRORS as exc:
        raise AssertionError(f"validate_params() refuses the conformance_params: {exc}") from exc


class _Marker:
    """A parameter value no plugin would choose, to see ``set_params`` store exactly what it is given."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<set_params marker for {self.name}>"


def check_set_params(cls: type[Plugin]) -> None:
    est = _make(cls)
    before = est.get_params(deep=False)
    markers = {k: _Marker(k) for k in before}
    out = est.set_params(**markers)
    assert out is est, f"set_params() must return self, returned {type(out).__name__}"
    after = est.get_params(deep=False)
    changed = [k for k in markers if after.get(k) is not markers[k]]
    assert not changed, f"get_params() does not reflect set_params() for {changed}"
    assert est.set_params(**before) is est, "set_params() must return self"
    restored = est.get_params(deep=False)
    assert repr(restored) == repr(before), "set_params() with the original values does not restore them"


# ---- per-kind behaviour -----------------------------------------------------------------------

def check_transform(cls: type[Plugin]) -> None:
    images, masks, _ = sample_cells(4)
    t = _make(cls)
    out = [t.apply(im, m) for im, m in zip(images, masks)]
    for img, mask in out:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, "output must be uint8 (H, W, 3)"
        assert mask is None or mask.shape == img.shape[:2], "output mask must match the output image"
    again = [_make(cls).apply(im, m) for im, m in zip(images, masks)]
    for (a, _), (b, _) in zip(out, again):
        _same(a, b, "transform is not deterministic")
    reloaded = _roundtrip(t)
    _same(reloaded.apply(images[0], masks[0])[0], out[0][0], "pickled transform gives other output")
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: t.apply(bad()), f"apply({what})")


def check_mask_maker(cls: type[Plugin]) -> None:
    images, masks, _ = sample_cells(8)

    def fitted() -> Plugin:
        m = _make(cls)
        return m.fit(images, masks) if cls.trainable else m.fit()

    with fresh_training():
        m = fitted()
    out = m.predict_masks(images[:3])
    for pred, img in zip(out, images):
        assert pred.shape == img.shape[:2] and pred.dtype == np.uint8, "mask must be uint8 (H, W)"
        assert set(np.unique(pred)) <= {0, 1, 2}, f"mask values must be in {{0,1,2}}, got {np.unique(pred)}"
    with fresh_training():
        again = fitted().predict_masks(images[:3])
    for a, b in zip(out, again):
        _same(a, b, "masks differ between two fits with the same random_state")
    _same(_roundtrip(m).predict_mask(images[0]), out[0], "pickled mask maker gives other masks")
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: m.predict_mask(bad()), f"predict_mask({what})")


def check_extractor(cls: type[Plugin]) -> None:
    images, masks, y = sample_cells(12)

    def run() -> tuple[Plugin, np.ndarray]:
        ex = _make(cls)
        P = np.stack([ex.prepare(im, m) for im, m in zip(images, masks)])
        assert ex.fit(P, y) is ex, "fit must return self"
        return ex, ex.transform(P)

    with fresh_training():
        ex, out = run()
    names = list(ex.get_feature_names_out())
    assert out.ndim == 2 and out.shape == (len(images), len(names)), \
        f"transform gave {out.shape}, expected ({len(images)}, {len(names)} names)"
    assert out.dtype == np.float32, f"feature blocks are float32, got {out.dtype}"
    assert all(n.startswith(f"{cls.block}.") for n in names), f"names must start with '{cls.block}.'"
    assert len(set(names)) == len(names), "feature names must be unique"
    assert names == list(ex.get_feature_names_out()), "feature names change between calls"
    with fresh_training():
        _, again = run()
    _same(out, again, "features differ between two runs with the same random_state")
    P = np.stack([ex.prepare(im, m) for im, m in zip(images, masks)])
    _same(_roundtrip(ex).transform(P), ex.transform(P), "pickled extractor gives other features")
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: ex.prepare(bad()), f"prepare({what})")
    _raises_clearly(lambda: ex.prepare(images[0], np.zeros((3, 3), np.uint8)), "prepare(mask of wrong shape)")


def check_selector(cls: type[Plugin]) -> None:
    X, y = sample_table()
    sel = _make(cls)
    assert sel.fit(X, y) is sel, "fit must return self"
    out = sel.transform(X)
    names = list(sel.get_feature_names_out())
    assert out.shape == (len(X), len(names)) and out.dtype == np.float32, "transform shape/dtype"
    assert not np.isnan(out).any(), "selectors impute: no NaN in the output"
    assert all(n.startswith(f"{cls.block}.") for n in names)
    assert isinstance(sel.scores_, pd.Series), "scores_ must be a pandas Series"
    _same(_make(cls).fit(X, y).transform(X), out, "selection differs between two fits")
    _same(_roundtrip(sel).transform(X), out, "pickled selector gives other output")
    _raises_clearly(lambda: sel.transform(X.drop(columns=[X.columns[0]])), "transform(table missing a column)")


def check_classifier(cls: type[Plugin]) -> None:
    if cls.input == "images":
        images, masks, y = sample_cells(16)
        probe = _make(cls)
        X: Any = np.stack([probe.prepare(im, m) for im, m in zip(images, masks)])
    elif cls.input == "blocks":
        F, y = sample_features()
        X = [F[:, :3], F[:, 3:]]
    else:
        X, y = sample_features()
    clf = _make(cls)
    with fresh_training():
        assert clf.fit(X, y) is clf, "fit must return self"
    proba = clf.predict_proba(X)
    classes = sorted(set(y))
    assert list(clf.classes_) == classes, f"classes_ {list(clf.classes_)} != sorted labels {classes}"
    assert proba.shape == (len(y), len(classes)), f"predict_proba shape {proba.shape}"
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4), "probabilities must sum to 1"
    pred = clf.predict(X)
    assert set(pred) <= set(classes)
    with fresh_training():
        again = _make(cls).fit(X, y)
    _same(again.predict_proba(X), proba, "probabilities differ between two fits")
    _same(_roundtrip(clf).predict_proba(X), proba, "pickled classifier gives other probabilities")
    if cls.input == "features":
        _raises_clearly(lambda: clf.predict_proba(np.asarray(X)[:, :2]), "predict_proba(wrong feature count)")


def check_loader_missing_root(cls: type[Plugin]) -> None:
    loader = _make(cls)
    with tempfile.TemporaryDirectory() as tmp:
        _raises_clearly(lambda: loader.load(Path(tmp) / "does-not-exist"), "load(missing root)")


@contextlib.contextmanager
def _loaded_sample(cls: type[Plugin]) -> Iterator[SampleTable]:
    """``cls`` (with its ``conformance_params``) loading :func:`sample_dataset` in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="medfuse-loader-check-") as tmp:
        root = sample_dataset(tmp)
        try:
            data = _make(cls).load(root)
        except GOOD_ERRORS as exc:
            raise AssertionError(f"load() of medfuse.testing.sample_dataset with conformance_params "
                                 f"{cls.conformance_params} failed: {exc}; point conformance_params at one "
                                 "of its layouts (see sample_dataset)") from exc
        assert isinstance(data, SampleTable), f"load() must return a SampleTable, got {type(data).__name__}"
        yield data


def _text_or_none(values: pd.Series) -> bool:
    return all(v is None or isinstance(v, str) for v in values)


def check_loader_sample_table(cls: type[Plugin]) -> None:
    with _loaded_sample(cls) as data:
        _check_sample_table(data)


def _check_sample_table(data: SampleTable) -> None:
    s = data.samples
    assert isinstance(s, pd.DataFrame), f"samples must be a DataFrame, got {type(s).__name__}"
    assert tuple(s.columns) == SAMPLE_COLUMNS, f"samples columns {list(s.columns)}; expected {list(SAMPLE_COLUMNS)}"
    assert len(s) > 0, "no samples loaded from sample_dataset"
    for col in ("id", "group", "sha1"):
        assert all(isinstance(v, str) and v for v in s[col]), f"samples[{col!r}] must be non-empty strings"
    for col in ("path", "mask_path", "label"):
        assert _text_or_none(s[col]), f"samples[{col!r}] must hold strings or None (not NaN)"
    assert s["id"].is_unique, "samples['id'] must be unique"
    assert all(p is None or Path(split_ref(p)[0]).is_file() for p in s["path"]), \
        "samples['path'] names missing files (or object references IMAGE#box=... to missing images)"
    if data.table is not None:
        t = data.table
        assert isinstance(t, pd.DataFrame), f"table must be a DataFrame or None, got {type(t).__name__}"
        assert t.index.equals(s.index), "table must be aligned on the samples' index"
        bad = [c for c in t.columns if t[c].dtype != np.float64]
        assert not bad, f"table columns must be float64, not {[(c, str(t[c].dtype)) for c in bad]}"
    r = data.report
    assert isinstance(r, DataReport), f"report must be a medfuse.datareport.DataReport, got {type(r).__name__}"
    assert r.n_loaded == len(s), f"report.n_loaded is {r.n_loaded} for {len(s)} samples (call datareport.finalize)"
    labelled = s["label"].dropna()
    counts = {str(k): int(v) for k, v in labelled.value_counts().items()}
    assert {str(k): int(v) for k, v in r.class_counts.items()} == counts, \
        f"report.class_counts {r.class_counts} != the samples' labels {counts} (call datareport.finalize)"


def check_loader_bad_rows(cls: type[Plugin]) -> None:
    with _loaded_sample(cls) as data:
        _check_bad_rows(data)


def _check_bad_rows(data: SampleTable) -> None:
    s, r = data.samples, data.report
    for row in [*r.bad_files, *r.dropped]:
        assert isinstance(row, dict) and row.get("reason"), f"report rows are dicts with a 'reason', got {row!r}"
    if s["path"].notna().any():
        kept = [p for p in s["path"] if p is not None and Path(p).name == BROKEN_IMAGE]
        assert not kept, f"the undecodable {BROKEN_IMAGE} was kept as a sample"
        reported = [row for row in r.bad_files if Path(str(row.get("path", ""))).name == BROKEN_IMAGE]
        assert reported, (f"the undecodable {BROKEN_IMAGE} is not reported as a row of report.bad_files "
                          f"({{'path', 'reason'}}); got {r.bad_files}")
    else:
        assert UNLABELLED_ID not in set(s["id"]), f"the row without a label ({UNLABELLED_ID}) was kept"
        reported = [row for row in r.dropped if row.get("id") == UNLABELLED_ID]
        assert reported, (f"the table row without a label ({UNLABELLED_ID}) is not reported as a row of "
                          f"report.dropped ({{'id', 'reason'}}); got {r.dropped}")


COMMON_CHECKS: tuple[Check, ...] = (check_declaration, check_params_roundtrip, check_set_params)
"""The checks every plugin gets, whatever its kind."""

KIND_CHECKS: dict[str, tuple[Check, ...]] = {
    "transform": (check_transform,),
    "mask": (check_mask_maker,),
    "extractor": (check_extractor,),
    "selector": (check_selector,),
    "classifier": (check_classifier,),
    "loader": (check_loader_missing_root, check_loader_sample_table, check_loader_bad_rows),
}
"""The checks of each plugin kind."""


def iter_checks(cls: type[Plugin]) -> Iterator[Check]:
    """The checks that apply to ``cls``: the common ones, then those of its kind, in order.

    A class whose ``kind`` is not a known kind gets the common checks only (its declaration check
    fails and says why)."""
    yield from COMMON_CHECKS
    yield from KIND_CHECKS.get(getattr(cls, "kind", ""), ())


def check_plugin(cls: type[Plugin]) -> None:
    """Run every check on ``cls``; raise ``AssertionError`` listing all failures."""
    failures = []
    for check in iter_checks(cls):
        try:
            check(cls)
        except AssertionError as exc:
            failures.append(f"{check.__name__}: {exc}")
    if failures:
        raise AssertionError(f"{cls.__name__} ({cls.name}) fails conformance:\n  " + "\n  ".join(failures))


def parametrize_with_checks(classes: Iterable[type[Plugin]]) -> Any:
    """A ``pytest.mark.parametrize`` over ``(plugin, check)`` pairs with readable ids."""
    import pytest

    pairs = [(cls, check) for cls in classes for check in iter_checks(cls)]
    ids = [f"{cls.name}-{check.__name__}" for cls, check in pairs]
    return pytest.mark.parametrize(("plugin", "check"), pairs, ids=ids)
