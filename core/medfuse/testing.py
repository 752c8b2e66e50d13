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
names, determinism under ``random_state`` (two real trainings: nothing outside a run's
:class:`~medfuse.trained.TrainedCache` reuses a network), pickle round-trip giving identical output, and a clear
:class:`~medfuse.errors.InvalidInputError` (or another ``MedfuseError``/``ValueError``) on bad input
instead of a crash deep inside a library. Loaders are run on :func:`sample_dataset` (point
``conformance_params`` at one of its layouts): the sample table's documented columns and dtypes,
and bad files or rows reported in the data report rather than raised or kept.
"""

from __future__ import annotations

import contextlib
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .contracts import Plugin, SampleTable
from .datareport import DataReport
from .errors import MedfuseError
from .host import declaration_problem
from .loading import SAMPLE_COLUMNS
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


BROKEN_IMAGE = "broken.png"
"""The undecodable image file :func:`sample_dataset` plants in each image layout."""

BROKEN_BYTES = b"not an image"
"""The content of :data:`BROKEN_IMAGE`: the loader checks find it by content, so a loader's
``conformance_dataset`` may rename it."""

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
        (root / folder / BROKEN_IMAGE).write_bytes(BROKEN_BYTES)
    rows.append({"path": f"classes/{labels[0]}/{BROKEN_IMAGE}", "label": labels[0], "group": "p9"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    table, y = sample_table(4 * n_per_class)
    table = table[["HGB", "MCV"]].assign(label=y, id=[f"r{i}" for i in range(len(y))])
    table.loc[len(table)] = {"HGB": 12.0, "MCV": 85.0, "label": None, "id": UNLABELLED_ID}
    table[["id", "label", "HGB", "MCV"]].to_csv(root / "table.csv", index=False)
    return root


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


# ---- tags ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tags:
    """What a plugin declares about itself, which selects its checks (like scikit-learn's tags).

    Read by :func:`plugin_tags` from the class: ``kind``, ``trainable``, (classifiers) ``input`` and
    (extractors) ``needs_mask`` are its attributes (a ``needs_mask`` property is read on an instance
    with the ``conformance_params``); the others come from ``conformance_tags`` (a dict on the class).

    * ``needs_mask`` (False): the extractor needs a mask for every image; True leaves out
      :func:`check_extractor_without_mask`.

    * ``deterministic`` (True): same output for the same inputs and ``random_state``; False skips the
      determinism checks (say why in the docstring).
    * ``picklable`` (True): a pickle round-trip gives the same output; False skips those checks.
    * ``validates_input`` (True): bad input raises a clear error; False skips those checks.
    """

    kind: str
    trainable: bool = False
    input: str = "features"
    needs_mask: bool = False
    deterministic: bool = True
    picklable: bool = True
    validates_input: bool = True


def plugin_tags(cls: type[Plugin]) -> Tags:
    """The :class:`Tags` of ``cls`` (its attributes, then its ``conformance_tags`` overrides)."""
    declared = dict(getattr(cls, "conformance_tags", {}) or {})
    unknown = (set(declared) - {f.name for f in fields(Tags)}) | ({"kind", "trainable", "input", "needs_mask"}
                                                                  & set(declared))
    if unknown:
        raise ValueError(f"{getattr(cls, '__name__', cls)}.conformance_tags: unknown or fixed tag(s) "
                         f"{sorted(unknown)}; settable: deterministic, picklable, validates_input")
    needs_mask = getattr(cls, "needs_mask", False)
    if isinstance(needs_mask, property):  # decided by a parameter: as the kit's instance has it
        needs_mask = _make(cls).needs_mask
    return Tags(kind=str(getattr(cls, "kind", "")), trainable=bool(getattr(cls, "trainable", False)),
                input=str(getattr(cls, "input", "features")), needs_mask=bool(needs_mask), **declared)


# ---- checks for every kind --------------------------------------------------------------------

def _plugin_doc(cls: type[Plugin]) -> str:
    """The docstring of ``cls`` or of the plugin it derives from; never one of :mod:`medfuse.contracts`
    (``inspect.getdoc`` would hand an undocumented plugin its kind's base class docstring)."""
    for klass in cls.__mro__:
        if klass.__module__ == Plugin.__module__:
            return ""
        if (klass.__dict__.get("__doc__") or "").strip():
            return klass.__dict__["__doc__"]
    return ""


def check_declaration(cls: type[Plugin]) -> None:
    """name, kind, semantic version, block; every parameter documented; a docstring."""
    problem = declaration_problem(cls)
    assert not problem, problem
    undocumented = [p for p in cls.param_schema() if not cls.param_docs.get(p)]
    assert not undocumented, f"{cls.__name__}: parameters without param_docs: {undocumented}"
    assert _plugin_doc(cls), f"{cls.__name__}: no docstring (the kind's base class docstring does not count)"
    unknown = set(cls.conformance_params) - set(cls.param_schema())
    assert not unknown, f"{cls.__name__}.conformance_params names unknown parameters {sorted(unknown)}"


def check_params_roundtrip(cls: type[Plugin]) -> None:
    """``__init__`` stores its parameters as given; ``get_params``/``clone`` round-trip them."""
    est = _make(cls)
    params = est.get_params(deep=False)
    assert set(params) == set(cls.param_schema()), "get_params() must return every __init__ parameter"
    learned = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    assert not learned, f"__init__ must only store parameters, found learned attributes {learned}"
    given = {**cls.conformance_params, **({"random_state": 0} if "random_state" in params else {})}
    changed = [k for k, v in given.items() if repr(params[k]) != repr(v)]
    assert not changed, f"__init__ must store parameters unchanged; get_params() differs for {changed}"
    again = cls(**params).get_params(deep=False)
    assert repr(again) == repr(params), "rebuilding from get_params() changes the parameters"
    cloned = clone(est)
    assert repr(cloned.get_params(deep=False)) == repr(params), "clone() changes the parameters"
    assert _make(cls).cache_key() == _make(cls).cache_key(), "cache_key() differs for equal parameters"


def check_validate_params(cls: type[Plugin]) -> None:
    """``validate_params()`` accepts the ``conformance_params``."""
    try:
        _make(cls).validate_params()
    except GOOD_ERRORS as exc:
        raise AssertionError(f"validate_params() refuses the conformance_params: {exc}") from exc


class _Marker:
    """A parameter value no plugin would choose, to see ``set_params`` store exactly what it is given."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<set_params marker for {self.name}>"


def check_set_params(cls: type[Plugin]) -> None:
    """``set_params`` returns ``self`` and ``get_params`` shows exactly what it was given."""
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


# ---- one fit per plugin class, shared by its checks ------------------------------------------------

_FITTED: dict[tuple[type, str], Any] = {}


def _once(cls: type[Plugin], what: str, fit: Callable[[], Any]) -> Any:
    """``fit()`` for ``cls`` the first time, then the same result: the checks of one plugin share one
    training (read-only); the determinism checks train a second time."""
    key = (cls, f"{what}:{cls.conformance_params!r}")
    if key not in _FITTED:
        _FITTED[key] = fit()
    return _FITTED[key]


# ---- transforms ---------------------------------------------------------------------------------

def _transformed(cls: type[Plugin]) -> tuple[Plugin, list[tuple[np.ndarray, np.ndarray | None]]]:
    images, masks, _ = sample_cells(4)

    def run() -> tuple[Plugin, list]:
        t = _make(cls)
        return t, [t.apply(im, m) for im, m in zip(images, masks)]

    return _once(cls, "transform", run)


def check_transform_output(cls: type[Plugin]) -> None:
    """``apply`` returns a uint8 ``(H, W, 3)`` image and a mask of its size (or None)."""
    _, out = _transformed(cls)
    for img, mask in out:
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, \
            "output must be uint8 (H, W, 3)"
        assert mask is None or mask.shape == img.shape[:2], "output mask must match the output image"


def check_transform_deterministic(cls: type[Plugin]) -> None:
    """A second instance gives the same images."""
    images, masks, _ = sample_cells(4)
    _, out = _transformed(cls)
    for (a, _), im, m in zip(out, images, masks):
        _same(a, _make(cls).apply(im, m)[0], "transform is not deterministic")


def check_transform_pickle(cls: type[Plugin]) -> None:
    """A pickled and restored transform gives the same images."""
    images, masks, _ = sample_cells(4)
    t, out = _transformed(cls)
    _same(_roundtrip(t).apply(images[0], masks[0])[0], out[0][0], "pickled transform gives other output")


def check_transform_bad_input(cls: type[Plugin]) -> None:
    """Bad images raise a clear error (InvalidInputError), not a crash inside a library."""
    t, _ = _transformed(cls)
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: t.apply(bad()), f"apply({what})")


# ---- mask makers --------------------------------------------------------------------------------

def _mask_fit(cls: type[Plugin]) -> Plugin:
    images, masks, _ = sample_cells(8)
    m = _make(cls)
    return m.fit(images, masks) if cls.trainable else m.fit()


def _masked(cls: type[Plugin]) -> tuple[Plugin, list[np.ndarray]]:
    images, _, _ = sample_cells(8)

    def run() -> tuple[Plugin, list[np.ndarray]]:
        m = _mask_fit(cls)
        return m, m.predict_masks(images[:3])

    return _once(cls, "mask", run)


def check_mask_output(cls: type[Plugin]) -> None:
    """``predict_masks`` gives uint8 ``(H, W)`` masks with values in {0, 1, 2}."""
    images, _, _ = sample_cells(8)
    _, out = _masked(cls)
    for pred, img in zip(out, images):
        assert pred.shape == img.shape[:2] and pred.dtype == np.uint8, "mask must be uint8 (H, W)"
        assert set(np.unique(pred)) <= {0, 1, 2}, f"mask values must be in {{0,1,2}}, got {np.unique(pred)}"


def check_mask_deterministic(cls: type[Plugin]) -> None:
    """Two fits with the same ``random_state`` give the same masks (two real trainings)."""
    images, _, _ = sample_cells(8)
    _, out = _masked(cls)
    again = _mask_fit(cls).predict_masks(images[:3])
    for a, b in zip(out, again):
        _same(a, b, "masks differ between two fits with the same random_state")


def check_mask_pickle(cls: type[Plugin]) -> None:
    """A pickled and restored mask maker gives the same masks."""
    images, _, _ = sample_cells(8)
    m, out = _masked(cls)
    _same(_roundtrip(m).predict_mask(images[0]), out[0], "pickled mask maker gives other masks")


def check_mask_bad_input(cls: type[Plugin]) -> None:
    """Bad images raise a clear error."""
    m, _ = _masked(cls)
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: m.predict_mask(bad()), f"predict_mask({what})")


# ---- extractors ---------------------------------------------------------------------------------

def _extractor_run(cls: type[Plugin]) -> tuple[Plugin, np.ndarray, np.ndarray]:
    images, masks, y = sample_cells(12)
    ex = _make(cls)
    P = np.stack([ex.prepare(im, m) for im, m in zip(images, masks)])
    fitted = ex.fit(P, y)
    assert fitted is ex, f"fit must return self, returned {type(fitted).__name__}"
    return ex, P, ex.transform(P)


def _extracted(cls: type[Plugin]) -> tuple[Plugin, np.ndarray, np.ndarray]:
    return _once(cls, "extractor", lambda: _extractor_run(cls))


def check_extractor_output(cls: type[Plugin]) -> None:
    """``fit`` returns self; ``transform`` gives float32 ``(n_images, n_features)``."""
    ex, P, out = _extracted(cls)
    n = len(P)
    names = list(ex.get_feature_names_out())
    assert isinstance(out, np.ndarray) and out.ndim == 2 and out.shape == (n, len(names)), \
        f"transform gave {getattr(out, 'shape', type(out))}, expected ({n}, {len(names)} names)"
    assert out.dtype == np.float32, f"feature blocks are float32, got {out.dtype}"


def check_feature_names(cls: type[Plugin]) -> None:
    """Names are ``<block>.<feature>``, unique, and the same on every call."""
    ex, _, _ = _extracted(cls)
    names = list(ex.get_feature_names_out())
    assert names, "get_feature_names_out() is empty"
    assert all(str(n).startswith(f"{cls.block}.") for n in names), f"names must start with '{cls.block}.'"
    assert len(set(names)) == len(names), "feature names must be unique"
    assert names == list(ex.get_feature_names_out()), "feature names change between calls"


def check_extractor_deterministic(cls: type[Plugin]) -> None:
    """Two runs with the same ``random_state`` give the same features (two real trainings)."""
    _, _, out = _extracted(cls)
    _, _, again = _extractor_run(cls)
    _same(out, again, "features differ between two runs with the same random_state")


def check_extractor_pickle(cls: type[Plugin]) -> None:
    """A pickled and restored extractor gives the same features."""
    ex, P, out = _extracted(cls)
    _same(_roundtrip(ex).transform(P), out, "pickled extractor gives other features")


def check_extractor_bad_input(cls: type[Plugin]) -> None:
    """Bad images, and a mask of the wrong shape, raise a clear error."""
    images, _, _ = sample_cells(1)
    ex, _, _ = _extracted(cls)
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: ex.prepare(bad()), f"prepare({what})")
    _raises_clearly(lambda: ex.prepare(images[0], np.zeros((3, 3), np.uint8)), "prepare(mask of wrong shape)")


def check_extractor_without_mask(cls: type[Plugin]) -> None:
    """Without a mask ``prepare`` works and gives a finite value somewhere; an extractor that
    cannot declares ``needs_mask = True`` (then this check is left out and studies must give a mask)."""
    images, _, _ = sample_cells(3)
    ex = _make(cls)
    fix = (f"if {cls.__name__} needs a mask, declare needs_mask = True (see medfuse.contracts.Extractor."
           "needs_mask) so that `medfuse validate` refuses a pipeline without mask")
    try:
        P = np.stack([np.asarray(ex.prepare(im, None), np.float64) for im in images])
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"prepare(image, mask=None) raised {type(exc).__name__} ({exc}); {fix}") from exc
    assert not np.isnan(P).all(), f"every feature is NaN for every image without a mask; {fix}"


# ---- selectors ----------------------------------------------------------------------------------

def _selected(cls: type[Plugin]) -> tuple[Plugin, np.ndarray]:
    X, y = sample_table()

    def run() -> tuple[Plugin, np.ndarray]:
        sel = _make(cls)
        fitted = sel.fit(X, y)
        assert fitted is sel, f"fit must return self, returned {type(fitted).__name__}"
        return sel, sel.transform(X)

    return _once(cls, "selector", run)


def check_selector_output(cls: type[Plugin]) -> None:
    """float32 ``(n, len(selected_))`` without NaN, ``<block>.`` names, ``scores_`` a Series."""
    X, _ = sample_table()
    sel, out = _selected(cls)
    names = list(sel.get_feature_names_out())
    assert out.shape == (len(X), len(names)) and out.dtype == np.float32, \
        f"transform gave {out.shape} {out.dtype}; expected ({len(X)}, {len(names)}) float32"
    assert not np.isnan(out).any(), "selectors impute: no NaN in the output"
    assert all(n.startswith(f"{cls.block}.") for n in names), f"names must start with '{cls.block}.'"
    assert isinstance(sel.scores_, pd.Series), "scores_ must be a pandas Series"


def check_selector_deterministic(cls: type[Plugin]) -> None:
    """A second fit selects and outputs the same."""
    X, y = sample_table()
    _, out = _selected(cls)
    _same(_make(cls).fit(X, y).transform(X), out, "selection differs between two fits")


def check_selector_pickle(cls: type[Plugin]) -> None:
    """A pickled and restored selector gives the same output."""
    X, _ = sample_table()
    sel, out = _selected(cls)
    _same(_roundtrip(sel).transform(X), out, "pickled selector gives other output")


def check_selector_bad_input(cls: type[Plugin]) -> None:
    """A table missing a column raises a clear error."""
    X, _ = sample_table()
    sel, _ = _selected(cls)
    _raises_clearly(lambda: sel.transform(X.drop(columns=[X.columns[0]])), "transform(table missing a column)")


# ---- classifiers --------------------------------------------------------------------------------

def _classifier_data(cls: type[Plugin]) -> tuple[Any, np.ndarray]:
    if cls.input == "images":
        images, masks, y = sample_cells(16)
        probe = _make(cls)
        return np.stack([probe.prepare(im, m) for im, m in zip(images, masks)]), y
    if cls.input == "blocks":
        F, y = sample_features()
        return [F[:, :3], F[:, 3:]], y
    return sample_features()


def _classifier_fit(cls: type[Plugin]) -> Plugin:
    X, y = _classifier_data(cls)
    clf = _make(cls)
    fitted = clf.fit(X, y)
    assert fitted is clf, f"fit must return self, returned {type(fitted).__name__}"
    return clf


def _classified(cls: type[Plugin]) -> tuple[Plugin, np.ndarray]:
    def run() -> tuple[Plugin, np.ndarray]:
        clf = _classifier_fit(cls)
        return clf, clf.predict_proba(_classifier_data(cls)[0])

    return _once(cls, "classifier", run)


def check_classifier_output(cls: type[Plugin]) -> None:
    """``classes_`` sorted; ``predict_proba`` ``(n, n_classes)`` summing to 1; ``predict`` in ``classes_``."""
    X, y = _classifier_data(cls)
    clf, proba = _classified(cls)
    classes = sorted(set(y))
    assert list(clf.classes_) == classes, f"classes_ {list(clf.classes_)} != sorted labels {classes}"
    assert proba.shape == (len(y), len(classes)), f"predict_proba shape {proba.shape}"
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4), "probabilities must sum to 1"
    assert set(clf.predict(X)) <= set(classes), "predict() gives labels outside classes_"


def check_classifier_deterministic(cls: type[Plugin]) -> None:
    """Two fits with the same ``random_state`` give the same probabilities (two real trainings)."""
    X, _ = _classifier_data(cls)
    _, proba = _classified(cls)
    again = _classifier_fit(cls)
    _same(again.predict_proba(X), proba, "probabilities differ between two fits")


def check_classifier_pickle(cls: type[Plugin]) -> None:
    """A pickled and restored classifier gives the same probabilities."""
    X, _ = _classifier_data(cls)
    clf, proba = _classified(cls)
    _same(_roundtrip(clf).predict_proba(X), proba, "pickled classifier gives other probabilities")


def check_classifier_bad_input(cls: type[Plugin]) -> None:
    """A feature matrix with the wrong number of columns raises a clear error."""
    X, _ = _classifier_data(cls)
    clf, _ = _classified(cls)
    _raises_clearly(lambda: clf.predict_proba(np.asarray(X)[:, :2]), "predict_proba(wrong feature count)")


# ---- loaders ------------------------------------------------------------------------------------

def check_loader_missing_root(cls: type[Plugin]) -> None:
    """A missing data root raises a clear error."""
    loader = _make(cls)
    with tempfile.TemporaryDirectory() as tmp:
        _raises_clearly(lambda: loader.load(Path(tmp) / "does-not-exist"), "load(missing root)")


@contextlib.contextmanager
def _loaded_sample(cls: type[Plugin]) -> Iterator[SampleTable]:
    """``cls`` (with its ``conformance_params``) loading :func:`sample_dataset` in a temporary folder;
    a loader of another layout declares ``conformance_dataset(root) -> root`` (a static method) that
    rearranges the sample dataset's files (the broken image and unlabelled row included) into it."""
    with tempfile.TemporaryDirectory(prefix="medfuse-loader-check-") as tmp:
        root = sample_dataset(tmp)
        arrange = getattr(cls, "conformance_dataset", None)
        if arrange is not None:
            root = Path(arrange(root))
        try:
            data = _make(cls).load(root)
        except GOOD_ERRORS as exc:
            raise AssertionError(f"load() of medfuse.testing.sample_dataset with conformance_params "
                                 f"{cls.conformance_params} failed: {exc}; point conformance_params at one "
                                 "of its layouts (see sample_dataset), or give the loader a static method "
                                 "conformance_dataset(root) -> root that rearranges those files into its own "
                                 "layout (docs/plugins.md, 'Test it')") from exc
        assert isinstance(data, SampleTable), f"load() must return a SampleTable, got {type(data).__name__}"
        yield data


def _text_or_none(values: pd.Series) -> bool:
    return all(v is None or isinstance(v, str) for v in values)


def check_loader_columns(cls: type[Plugin]) -> None:
    """``samples`` has the columns id, path, mask_path, label, group, sha1 with their types; ``table``
    is float64 and aligned with it."""
    with _loaded_sample(cls) as data:
        s = data.samples
        assert isinstance(s, pd.DataFrame), f"samples must be a DataFrame, got {type(s).__name__}"
        assert tuple(s.columns) == SAMPLE_COLUMNS, f"samples columns {list(s.columns)}; expected {list(SAMPLE_COLUMNS)}"
        assert len(s) > 0, "no samples loaded from sample_dataset"
        for col in ("id", "sha1"):
            assert all(isinstance(v, str) and v for v in s[col]), f"samples[{col!r}] must be non-empty strings"
        for col in ("path", "mask_path", "label"):
            assert _text_or_none(s[col]), f"samples[{col!r}] must hold strings or None (not NaN)"
        assert s["id"].is_unique, "samples['id'] must be unique"
        assert all(p is None or Path(split_ref(p)[0]).is_file() for p in s["path"]), \
            "samples['path'] names missing files (or object references IMAGE#box=... to missing images)"
        assert all(m is None or Path(split_ref(m)[0]).is_file() for m in s["mask_path"]), \
            "samples['mask_path'] names missing files"
        if data.table is not None:
            t = data.table
            assert isinstance(t, pd.DataFrame), f"table must be a DataFrame or None, got {type(t).__name__}"
            assert t.index.equals(s.index), "table must be aligned on the samples' index"
            bad = [c for c in t.columns if t[c].dtype != np.float64]
            assert not bad, f"table columns must be float64, not {[(c, str(t[c].dtype)) for c in bad]}"


def check_loader_groups(cls: type[Plugin]) -> None:
    """``group`` is a non-empty string per sample; each sample's content hash ``sha1`` is 40 hex
    characters (image bytes or row values), so identical content is found across groups."""
    with _loaded_sample(cls) as data:
        s = data.samples
        assert "group" in s.columns, "samples has no 'group' column"
        assert all(isinstance(v, str) and v and v != "nan" for v in s["group"]), \
            "samples['group'] must be non-empty strings (the patient/smear, or the id when unknown)"
        bad = [v for v in s["sha1"] if not (isinstance(v, str) and len(v) == 40
                                            and all(c in "0123456789abcdef" for c in v))]
        assert not bad, f"samples['sha1'] must be SHA-1 hex digests of the content, got {bad[:3]}"
        if all(isinstance(p, str) and Path(p).is_file() for p in s["path"]):
            from .util.hashing import sha1_file

            wrong = [p for p, h in zip(s["path"], s["sha1"]) if sha1_file(p) != h]
            assert not wrong, f"samples['sha1'] is not the SHA-1 of the image file for {wrong[:3]}"


def check_loader_report(cls: type[Plugin]) -> None:
    """``report`` is a finalized DataReport: counts match the samples, problems are ``{.., 'reason'}`` rows."""
    with _loaded_sample(cls) as data:
        s, r = data.samples, data.report
        assert isinstance(r, DataReport), f"report must be a medfuse.datareport.DataReport, got {type(r).__name__}"
        assert r.n_loaded == len(s), f"report.n_loaded is {r.n_loaded} for {len(s)} samples (call datareport.finalize)"
        labelled = s["label"].dropna()
        counts = {str(k): int(v) for k, v in labelled.value_counts().items()}
        assert {str(k): int(v) for k, v in r.class_counts.items()} == counts, \
            f"report.class_counts {r.class_counts} != the samples' labels {counts} (call datareport.finalize)"
        for row in [*r.bad_files, *r.dropped]:
            assert isinstance(row, dict) and row.get("reason"), f"report rows are dicts with a 'reason', got {row!r}"
        rejected = len(r.bad_files) + len(r.dropped)
        assert r.n_found >= r.n_loaded + rejected, (f"report.n_found ({r.n_found}) must count every candidate: "
                                                    f"{r.n_loaded} loaded + {rejected} rejected")


def _is_broken(path: str) -> bool:
    """The planted undecodable image, whatever the loader's layout named it."""
    p = Path(path)
    if p.name == BROKEN_IMAGE:
        return True
    try:
        return p.is_file() and p.stat().st_size == len(BROKEN_BYTES) and p.read_bytes() == BROKEN_BYTES
    except OSError:
        return False


def check_loader_bad_rows(cls: type[Plugin]) -> None:
    """The undecodable image or the unlabelled row of ``sample_dataset`` is reported and left out."""
    with _loaded_sample(cls) as data:
        s, r = data.samples, data.report
        if s["path"].notna().any():
            kept = [p for p in s["path"] if p is not None and _is_broken(p)]
            assert not kept, f"the undecodable {BROKEN_IMAGE} was kept as a sample"
            reported = [row for row in r.bad_files if _is_broken(str(row.get("path", "")))]
            assert reported, (f"the undecodable {BROKEN_IMAGE} is not reported as a row of report.bad_files "
                              f"({{'path', 'reason'}}); got {r.bad_files}")
        else:
            assert UNLABELLED_ID not in set(s["id"]), f"the row without a label ({UNLABELLED_ID}) was kept"
            reported = [row for row in r.dropped if row.get("id") == UNLABELLED_ID]
            assert reported, (f"the table row without a label ({UNLABELLED_ID}) is not reported as a row of "
                              f"report.dropped ({{'id', 'reason'}}); got {r.dropped}")


# ---- which checks apply ---------------------------------------------------------------------------

COMMON_CHECKS: tuple[Check, ...] = (check_declaration, check_params_roundtrip, check_validate_params,
                                    check_set_params)
"""The checks every plugin gets, whatever its kind."""

KIND_CHECKS: dict[str, tuple[Check, ...]] = {
    "transform": (check_transform_output, check_transform_deterministic, check_transform_pickle,
                  check_transform_bad_input),
    "mask": (check_mask_output, check_mask_deterministic, check_mask_pickle, check_mask_bad_input),
    "extractor": (check_extractor_output, check_feature_names, check_extractor_deterministic,
                  check_extractor_pickle, check_extractor_bad_input, check_extractor_without_mask),
    "selector": (check_selector_output, check_selector_deterministic, check_selector_pickle,
                 check_selector_bad_input),
    "classifier": (check_classifier_output, check_classifier_deterministic, check_classifier_pickle,
                   check_classifier_bad_input),
    "loader": (check_loader_missing_root, check_loader_columns, check_loader_groups, check_loader_report,
               check_loader_bad_rows),
}
"""The checks of each plugin kind, before tags leave some out (see :func:`iter_checks`)."""

ALL_CHECKS: dict[str, Check] = {c.__name__: c for c in (*COMMON_CHECKS, *(c for cs in KIND_CHECKS.values() for c in cs))}
"""Every check by name."""


def _applies(check: Check, tags: Tags) -> bool:
    name = check.__name__
    if name.endswith("_deterministic"):
        return tags.deterministic
    if name.endswith("_pickle"):
        return tags.picklable
    if name.endswith("_bad_input"):
        return tags.validates_input and (name != "check_classifier_bad_input" or tags.input == "features")
    if name == "check_extractor_without_mask":
        return not tags.needs_mask
    return True


def iter_checks(cls: type[Plugin]) -> Iterator[Check]:
    """The checks that apply to ``cls``: the common ones, then those of its kind that its tags
    (:func:`plugin_tags`) select, in order. A class whose ``kind`` is not a known kind gets the
    common checks only (its declaration check fails and says why)."""
    tags = plugin_tags(cls)
    yield from COMMON_CHECKS
    yield from (c for c in KIND_CHECKS.get(tags.kind, ()) if _applies(c, tags))


ExpectedFailures = Mapping[str, Mapping[str, str]] | Callable[[type[Plugin]], Mapping[str, str]] | None


def expected_failures_of(cls: type[Plugin], expected_failures: ExpectedFailures) -> dict[str, str]:
    """``{check name: reason}`` expected to fail for ``cls``; an unknown check name is an error."""
    if expected_failures is None:
        out: Mapping[str, str] = {}
    elif callable(expected_failures):
        out = expected_failures(cls) or {}
    else:
        out = expected_failures.get(getattr(cls, "name", ""), {})
    unknown = [name for name in out if name not in ALL_CHECKS]
    if unknown:
        raise ValueError(f"expected_failures for {getattr(cls, 'name', cls)!r} names unknown check(s) {unknown}; "
                         f"checks: {', '.join(ALL_CHECKS)}")
    return dict(out)


def check_plugin(cls: type[Plugin], expected_failures: Mapping[str, str] | None = None) -> None:
    """Run every check on ``cls``; raise ``AssertionError`` listing all failures (an exception other
    than ``AssertionError`` counts as a failure too). ``expected_failures``: ``{check name: reason}``
    that must fail; one that passes is reported as unexpectedly passing."""
    expected = expected_failures_of(cls, lambda _: expected_failures or {})
    failures = []
    for check in iter_checks(cls):
        try:
            check(cls)
        except Exception as exc:  # noqa: BLE001 - every failure is listed
            if check.__name__ not in expected:
                failures.append(f"{check.__name__}: {exc}" if isinstance(exc, AssertionError)
                                else f"{check.__name__}: {type(exc).__name__}: {exc}")
        else:
            if check.__name__ in expected:
                failures.append(f"{check.__name__}: passed, but is listed as an expected failure "
                                f"({expected[check.__name__]})")
    if failures:
        raise AssertionError(f"{cls.__name__} ({cls.name}) fails conformance:\n  " + "\n  ".join(failures))


def parametrize_with_checks(plugins: Iterable[type[Plugin]], expected_failures: ExpectedFailures = None) -> Any:
    """A ``pytest.mark.parametrize`` over ``(plugin, check)``: one test item per plugin and check
    that applies to it (by kind and tags, :func:`iter_checks`), with ids ``<name>-<check>``.

    ``expected_failures``: ``{plugin name: {check name: reason}}``, or a function of the class
    returning ``{check name: reason}``; those items are marked ``xfail(strict=True)``, so they fail
    the run again once the plugin is fixed (then remove the entry)."""
    import pytest

    params = []
    for cls in plugins:
        expected = expected_failures_of(cls, expected_failures)
        for check in iter_checks(cls):
            marks = ([pytest.mark.xfail(reason=expected[check.__name__], strict=True)]
                     if check.__name__ in expected else [])
            params.append(pytest.param(cls, check, marks=marks, id=f"{cls.name}-{check.__name__}"))
    return pytest.mark.parametrize(("plugin", "check"), params)


def _all_of(kind: str) -> Check:
    def run_all(cls: type[Plugin]) -> None:
        for check in iter_checks(cls):
            if check in KIND_CHECKS[kind]:
                check(cls)

    run_all.__name__ = f"check_{kind}"
    run_all.__doc__ = f"Every {kind} check that applies to ``cls``, in one call."
    return run_all


check_transform = _all_of("transform")
check_mask_maker = _all_of("mask")
check_extractor = _all_of("extractor")
check_selector = _all_of("selector")
check_classifier = _all_of("classifier")
