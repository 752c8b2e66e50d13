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
``__init__`` storing parameters only, ``get_params``/``set_params``/``clone`` round-trip; then per
kind: output shapes and dtypes, stable ``<block>.<feature>`` names, determinism under
``random_state``, pickle round-trip giving identical output, and a clear
:class:`~medfuse.errors.InvalidInputError` (or another ``MedfuseError``/``ValueError``) on bad input
instead of a crash deep inside a library.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .contracts import Plugin
from .errors import MedfuseError
from .host import declaration_problem

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
    est.set_params(**params)
    assert cls(**cls.conformance_params).cache_key() == cls(**cls.conformance_params).cache_key()


# ---- per-kind behaviour -----------------------------------------------------------------------

def check_behaviour(cls: type[Plugin]) -> None:
    {"transform": _check_transform, "mask": _check_mask, "extractor": _check_extractor,
     "selector": _check_selector, "classifier": _check_classifier, "loader": _check_loader}[cls.kind](cls)


def _check_transform(cls: type[Plugin]) -> None:
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


def _check_mask(cls: type[Plugin]) -> None:
    images, masks, _ = sample_cells(8)

    def fitted() -> Plugin:
        m = _make(cls)
        return m.fit(images, masks) if cls.trainable else m.fit()

    m = fitted()
    out = m.predict_masks(images[:3])
    for pred, img in zip(out, images):
        assert pred.shape == img.shape[:2] and pred.dtype == np.uint8, "mask must be uint8 (H, W)"
        assert set(np.unique(pred)) <= {0, 1, 2}, f"mask values must be in {{0,1,2}}, got {np.unique(pred)}"
    for a, b in zip(out, fitted().predict_masks(images[:3])):
        _same(a, b, "masks differ between two fits with the same random_state")
    _same(_roundtrip(m).predict_mask(images[0]), out[0], "pickled mask maker gives other masks")
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: m.predict_mask(bad()), f"predict_mask({what})")


def _check_extractor(cls: type[Plugin]) -> None:
    images, masks, y = sample_cells(12)

    def run() -> tuple[Plugin, np.ndarray]:
        ex = _make(cls)
        P = np.stack([ex.prepare(im, m) for im, m in zip(images, masks)])
        out = ex.fit(P, y).transform(P)
        return ex, out

    ex, out = run()
    names = list(ex.get_feature_names_out())
    assert out.ndim == 2 and out.shape == (len(images), len(names)), \
        f"transform gave {out.shape}, expected ({len(images)}, {len(names)} names)"
    assert out.dtype == np.float32, f"feature blocks are float32, got {out.dtype}"
    assert all(n.startswith(f"{cls.block}.") for n in names), f"names must start with '{cls.block}.'"
    assert len(set(names)) == len(names), "feature names must be unique"
    assert names == list(ex.get_feature_names_out()), "feature names change between calls"
    assert ex.fit(np.stack([ex.prepare(im, m) for im, m in zip(images, masks)]), y) is ex, "fit must return self"
    _, again = run()
    _same(out, again, "features differ between two runs with the same random_state")
    P = np.stack([ex.prepare(im, m) for im, m in zip(images, masks)])
    _same(_roundtrip(ex).transform(P), ex.transform(P), "pickled extractor gives other features")
    for what, bad in BAD_IMAGES.items():
        _raises_clearly(lambda bad=bad: ex.prepare(bad()), f"prepare({what})")
    _raises_clearly(lambda: ex.prepare(images[0], np.zeros((3, 3), np.uint8)), "prepare(mask of wrong shape)")


def _check_selector(cls: type[Plugin]) -> None:
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


def _check_classifier(cls: type[Plugin]) -> None:
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
    assert clf.fit(X, y) is clf, "fit must return self"
    proba = clf.predict_proba(X)
    classes = sorted(set(y))
    assert list(clf.classes_) == classes, f"classes_ {list(clf.classes_)} != sorted labels {classes}"
    assert proba.shape == (len(y), len(classes)), f"predict_proba shape {proba.shape}"
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4), "probabilities must sum to 1"
    pred = clf.predict(X)
    assert set(pred) <= set(classes)
    _same(_make(cls).fit(X, y).predict_proba(X), proba, "probabilities differ between two fits")
    _same(_roundtrip(clf).predict_proba(X), proba, "pickled classifier gives other probabilities")
    if cls.input == "features":
        _raises_clearly(lambda: clf.predict_proba(np.asarray(X)[:, :2]), "predict_proba(wrong feature count)")


def _check_loader(cls: type[Plugin]) -> None:
    import tempfile
    from pathlib import Path

    loader = _make(cls)
    with tempfile.TemporaryDirectory() as tmp:
        _raises_clearly(lambda: loader.load(Path(tmp) / "does-not-exist"), "load(missing root)")


CHECKS: tuple[Check, ...] = (check_declaration, check_params_roundtrip, check_behaviour)


def iter_checks(cls: type[Plugin]) -> Iterator[Check]:
    """The checks that apply to ``cls``, in order."""
    yield from CHECKS


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
