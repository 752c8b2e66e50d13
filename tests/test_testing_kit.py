"""The conformance kit's own tests: every check fails on a plugin built to break it, and passes on
the well-behaved plugin that broken one derives from."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from medfuse.contracts import Classifier, Extractor, Loader, MaskMaker, SampleTable, Selector, Transform
from medfuse.datareport import DataReport, finalize
from medfuse.errors import DataError, InvalidInputError
from medfuse.loading import SampleTableBuilder, loader_root
from medfuse.testing import (
    ALL_CHECKS,
    check_plugin,
    iter_checks,
    parametrize_with_checks,
    plugin_tags,
)
from medfuse_plugins.loaders import FolderLoader, TableLoader


def failures(cls: type, expected: dict[str, str] | None = None) -> str:
    """The message of :func:`check_plugin`'s AssertionError for ``cls`` ('' when it passes)."""
    try:
        check_plugin(cls, expected)
    except AssertionError as exc:
        return str(exc)
    return ""


# ---- well-behaved plugins of each kind -----------------------------------------------------------

class _Invert(Transform):
    """Inverts the image, darkened by ``strength``."""

    name: ClassVar[str] = "kit_invert"
    param_docs: ClassVar[dict[str, str]] = {"strength": "Fraction of the inverted image kept."}
    conformance_params: ClassVar[dict[str, Any]] = {"strength": 0.5}

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def _apply(self, image, mask):
        return ((255 - image) * self.strength).astype(np.uint8), mask


class _Threshold(MaskMaker):
    """Dark pixels are the cell, darker ones the nucleus; the cut-off is learnt from the masks."""

    name: ClassVar[str] = "kit_threshold"
    trainable: ClassVar[bool] = True
    param_docs: ClassVar[dict[str, str]] = {"offset": "Added to the learnt cut-off.",
                                            "random_state": "Seed (unused: nothing is random)."}
    conformance_params: ClassVar[dict[str, Any]] = {"offset": 40.0}

    def __init__(self, offset: float = 0.0, random_state: int | None = None):
        self.offset = offset
        self.random_state = random_state

    def fit(self, images=None, masks=None):
        grey = np.concatenate([im.mean(axis=2)[m == 0] for im, m in zip(images, masks)])
        self.cut_ = float(grey.mean()) - 20
        return self

    def _predict_mask(self, image):
        grey = image.mean(axis=2)
        return ((grey < self.cut_ + self.offset).astype(np.uint8) + (grey < 100)).astype(np.uint8)


class _Means(Extractor):
    """Mean of each channel, times ``scale``."""

    name: ClassVar[str] = "kit_means"
    block: ClassVar[str] = "means"
    param_docs: ClassVar[dict[str, str]] = {"scale": "Multiplies every feature."}
    conformance_params: ClassVar[dict[str, Any]] = {"scale": 2.0}

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def feature_names(self):
        return ["r", "g", "b"]

    def _prepare(self, image, mask):
        return image.reshape(-1, 3).mean(axis=0).astype(np.float32)

    def transform(self, P):
        return super().transform(P) * np.float32(self.scale)


class _Medians(Selector):
    """Every column, NaN replaced by the training median, times ``scale``."""

    name: ClassVar[str] = "kit_medians"
    param_docs: ClassVar[dict[str, str]] = {"scale": "Multiplies every value."}
    conformance_params: ClassVar[dict[str, Any]] = {"scale": 2.0}

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def fit(self, X, y=None):
        self.selected_ = list(X.columns)
        self.medians_ = X.median()
        self.scores_ = pd.Series(1.0, index=X.columns)
        return self

    def transform(self, X):
        missing = [c for c in self.selected_ if c not in X.columns]
        if missing:
            raise InvalidInputError(f"{self.name}: missing column(s) {missing}")
        return (X[self.selected_].fillna(self.medians_).to_numpy() * self.scale).astype(np.float32)


class _Centroids(Classifier):
    """Nearest class centroid, softmax over negative distances divided by ``temperature``."""

    name: ClassVar[str] = "kit_centroids"
    param_docs: ClassVar[dict[str, str]] = {"temperature": "Softmax temperature."}
    conformance_params: ClassVar[dict[str, Any]] = {"temperature": 2.0}

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, X, y):
        self.classes_ = np.asarray(sorted(set(y)), dtype=object)
        self.centroids_ = np.stack([np.asarray(X)[np.asarray(y) == c].mean(axis=0) for c in self.classes_])
        return self

    def _distances(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.centroids_.shape[1]:
            raise InvalidInputError(f"{self.name}: expected (n, {self.centroids_.shape[1]}) features, got {X.shape}")
        return np.linalg.norm(X[:, None, :] - self.centroids_[None], axis=2)

    def predict_proba(self, X):
        z = -self._distances(X) / self.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)


GOOD = [_Invert, _Threshold, _Means, _Medians, _Centroids, FolderLoader, TableLoader]


@pytest.mark.parametrize("cls", GOOD, ids=lambda c: c.name)
def test_well_behaved_plugins_pass(cls):
    assert failures(cls) == ""


# ---- one broken plugin per check -------------------------------------------------------------------

def _broken(base: type, what: str, **attrs: Any) -> type:
    """A subclass of ``base`` named after what it breaks (a module attribute, so that it pickles)."""
    qualname = f"_{what.title().replace('_', '')}"
    cls = type(qualname, (base,), {"name": f"kit_{what}", "__doc__": f"Breaks: {what}.",
                                   "__module__": __name__, "__qualname__": qualname, **attrs})
    globals()[qualname] = cls
    return cls


def _forgets_on_pickle(param: str) -> dict[str, Any]:
    """``__getstate__`` leaves out ``param``: restored, it reads as its default."""
    def getstate(self):
        return {k: v for k, v in super(type(self), self).__getstate__().items() if k != param}
    return {"__getstate__": getstate}


def _noisy(method: str, base: type) -> dict[str, Any]:
    """``method`` adds noise from the global RNG (not from random_state)."""
    def noisy(self, *args, **kwargs):
        out = getattr(base, method)(self, *args, **kwargs)
        if isinstance(out, tuple):
            return (out[0] ^ np.uint8(np.random.randint(1, 255)), *out[1:])
        return out + np.random.rand(*np.shape(out)).astype(np.asarray(out).dtype)
    return {method: noisy}


def _alters_params(self, strength: float = 1.0):
    self.strength = strength * 2


def _stores_learned(self, strength: float = 1.0):
    self.strength = strength
    self.fitted_ = True


def _set_params_none(self, **params):
    Transform.set_params(self, **params)


def _load_then(change):
    def load(self, root=".", jobs=1, progress=False):
        data = type(self).__mro__[1].load(self, root, jobs, progress)
        return change(data) or data
    return {"load": load}


def _empty_when_missing(self, root=".", jobs=1, progress=False):
    from pathlib import Path

    if not Path(root).is_dir():
        return SampleTable(pd.DataFrame(columns=["id", "path", "mask_path", "label", "group", "sha1"]), None,
                           DataReport())
    return FolderLoader.load(self, root, jobs, progress)


def _raise_bad_file(data):
    from medfuse.errors import DataError

    if data.report.bad_files:
        raise DataError(f"bad file {data.report.bad_files[0]['path']}")


def _keeps_unlabelled(self, root=".", jobs=1, progress=False):
    df = pd.read_csv(f"{root}/table.csv", dtype={"id": str})
    samples = pd.DataFrame({"id": df["id"], "path": None, "mask_path": None,
                            "label": df["label"].astype(str), "group": df["id"], "sha1": df["id"]})
    report = DataReport(source=str(root), loader=self.name, n_found=len(df))
    return SampleTable(samples, None, finalize(report, samples, None))


_FITS = itertools.count()


def _noisy_cut(self, images=None, masks=None):
    """Every fit after the first learns another cut-off (as an unseeded training would)."""
    _Threshold.fit(self, images, masks)
    self.cut_ -= 60 if next(_FITS) else 0
    return self


def _jittered_fit(self, X, y):
    _Centroids.fit(self, X, y)
    self.centroids_ = self.centroids_ + np.random.normal(0, 1, self.centroids_.shape)
    return self


def _with(attr: str, value: Any):
    def change(data):
        setattr(data, attr, value(data) if callable(value) else value)
    return change


BROKEN: dict[str, list[tuple[type, str]]] = {
    "check_declaration": [(_broken(_Invert, "undocumented", param_docs={}), "without param_docs"),
                          (_broken(_Invert, "bad_version", version="one"), "not a semantic version")],
    "check_params_roundtrip": [(_broken(_Invert, "alters_params", __init__=_alters_params), "unchanged"),
                               (_broken(_Invert, "stores_learned", __init__=_stores_learned), "learned attributes")],
    "check_validate_params": [(_broken(_Invert, "refuses_own_params", validate_params=lambda self: (_ for _ in ())
                                       .throw(ValueError("strength must be > 1"))), "strength must be > 1")],
    "check_set_params": [(_broken(_Invert, "set_params_none", set_params=_set_params_none), "must return self"),
                         (_broken(_Invert, "set_params_ignored", set_params=lambda self, **p: self),
                          "does not reflect set_params")],
    "check_transform_output": [(_broken(_Invert, "float_output", apply=lambda self, im, m=None: (im / 2.0, m)),
                                "uint8 (H, W, 3)")],
    "check_transform_deterministic": [(_broken(_Invert, "noisy_transform", **_noisy("_apply", _Invert)),
                                       "not deterministic")],
    "check_transform_pickle": [(_broken(_Invert, "transform_forgets", **_forgets_on_pickle("strength")),
                                "pickled transform")],
    "check_transform_bad_input": [(_broken(_Invert, "transform_unchecked",
                                           apply=lambda self, im, m=None: (255 - np.asarray(im), m)),
                                   "accepted bad input")],
    "check_mask_output": [(_broken(_Threshold, "mask_values", _predict_mask=lambda self, im: np.full(im.shape[:2], 5,
                                                                                                    np.uint8)),
                           "mask values must be in")],
    "check_mask_deterministic": [(_broken(_Threshold, "noisy_mask", fit=_noisy_cut),
                                  "masks differ between two fits")],
    "check_mask_pickle": [(_broken(_Threshold, "mask_forgets", **_forgets_on_pickle("offset")), "pickled mask maker")],
    "check_mask_bad_input": [(_broken(_Threshold, "mask_unchecked",
                                      predict_mask=lambda self, im: (np.asarray(im)[..., 0] > 0).astype(np.uint8)),
                              "accepted bad input")],
    "check_extractor_output": [(_broken(_Means, "float64_features",
                                        transform=lambda self, P: np.asarray(P, np.float64)), "float32")],
    "check_feature_names": [(_broken(_Means, "bare_names", get_feature_names_out=lambda self, i=None:
                                     np.asarray(["r", "g", "b"], dtype=object)), "must start with 'means.'"),
                            (_broken(_Means, "repeated_names", feature_names=lambda self: ["v", "v", "v"]), "unique")],
    "check_extractor_deterministic": [(_broken(_Means, "noisy_features", **_noisy("_prepare", _Means)),
                                       "features differ between two runs")],
    "check_extractor_pickle": [(_broken(_Means, "extractor_forgets", **_forgets_on_pickle("scale")),
                                "pickled extractor")],
    "check_extractor_bad_input": [(_broken(_Means, "extractor_unchecked",
                                           prepare=lambda self, im, m=None, spacing_um=None:
                                           np.asarray(im, np.float32).reshape(-1).mean(keepdims=True)),
                                   "accepted bad input")],
    "check_selector_output": [(_broken(_Medians, "keeps_nan", transform=lambda self, X:
                                       X[self.selected_].to_numpy(np.float32)), "no NaN")],
    "check_selector_deterministic": [(_broken(_Medians, "noisy_selection", **_noisy("transform", _Medians)),
                                      "selection differs")],
    "check_selector_pickle": [(_broken(_Medians, "selector_forgets", **_forgets_on_pickle("scale")),
                               "pickled selector")],
    "check_selector_bad_input": [(_broken(_Medians, "selector_unchecked", transform=lambda self, X:
                                          X.reindex(columns=self.selected_).fillna(0).to_numpy(np.float32)),
                                  "accepted bad input")],
    "check_classifier_output": [(_broken(_Centroids, "unnormalised", predict_proba=lambda self, X:
                                         np.exp(-self._distances(X))), "sum to 1")],
    "check_classifier_deterministic": [(_broken(_Centroids, "jittered_centroids", fit=_jittered_fit),
                                        "probabilities differ between two fits")],
    "check_classifier_pickle": [(_broken(_Centroids, "classifier_forgets", **_forgets_on_pickle("temperature")),
                                 "pickled classifier")],
    "check_classifier_bad_input": [(_broken(_Centroids, "classifier_unchecked", _distances=lambda self, X:
                                            np.linalg.norm(np.asarray(X)[:, None, :2] - self.centroids_[None, :, :2],
                                                           axis=2)), "accepted bad input")],
    "check_loader_missing_root": [(_broken(FolderLoader, "empty_when_missing", load=_empty_when_missing),
                                   "accepted bad input")],
    "check_loader_columns": [(_broken(FolderLoader, "wrong_columns", **_load_then(
                                  _with("samples", lambda d: d.samples.drop(columns=["sha1"])))), "samples columns"),
                             (_broken(TableLoader, "text_table", **_load_then(
                                  _with("table", lambda d: d.table.astype(str)))), "must be float64"),
                             (_broken(FolderLoader, "raises_on_bad_files", **_load_then(_raise_bad_file)),
                              "failed: bad file")],
    "check_loader_groups": [(_broken(FolderLoader, "no_groups", **_load_then(
                                 lambda d: d.samples.__setitem__("group", ""))), "samples['group']"),
                            (_broken(FolderLoader, "path_hashes", **_load_then(
                                 lambda d: d.samples.__setitem__("sha1", [f"{abs(hash(p)):040x}"[:40]
                                                                          for p in d.samples["path"]]))),
                             "not the SHA-1 of the image file")],
    "check_loader_report": [(_broken(FolderLoader, "unfinalized_report", **_load_then(
                                 _with("report", lambda d: DataReport(bad_files=d.report.bad_files)))),
                             "call datareport.finalize"),
                            (_broken(FolderLoader, "uncounted_rejects", **_load_then(
                                 _with("report", lambda d: finalize(DataReport(n_found=len(d.samples),
                                                                               bad_files=d.report.bad_files),
                                                                    d.samples)))),
                             "must count every candidate")],
    "check_loader_bad_rows": [(_broken(FolderLoader, "hides_bad_files", **_load_then(
                                   lambda d: setattr(d.report, "bad_files", []))),
                               "not reported as a row of report.bad_files"),
                              (_broken(TableLoader, "keeps_unlabelled", load=_keeps_unlabelled),
                               "row without a label (u9) was kept")],
}


def test_every_check_has_a_plugin_built_to_break_it():
    assert set(BROKEN) == set(ALL_CHECKS), f"checks without a breaker: {sorted(set(ALL_CHECKS) - set(BROKEN))}"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the unchecked extractor averages an empty image
@pytest.mark.parametrize(("check", "cls", "why"), [(c, cls, why) for c, items in BROKEN.items() for cls, why in items],
                         ids=[cls.name for items in BROKEN.values() for cls, _ in items])
def test_each_check_fails_on_its_broken_plugin(check, cls, why):
    base = cls.__mro__[1]
    assert check in [c.__name__ for c in iter_checks(base)]
    ALL_CHECKS[check](base)  # the well-behaved original passes this check
    with pytest.raises(Exception) as info:
        ALL_CHECKS[check](cls)
    assert why in str(info.value), str(info.value)
    assert f"{check}: " in failures(cls)


# ---- tags, expected failures, parametrize_with_checks -------------------------------------------------

class _Unpicklable(_Invert):
    """Declares it cannot be pickled: the pickle check is not run."""

    name: ClassVar[str] = "kit_unpicklable"
    conformance_tags: ClassVar[dict[str, Any]] = {"picklable": False}

    def __reduce__(self):
        raise TypeError("cannot pickle")


def test_tags_select_the_checks():
    assert plugin_tags(_Unpicklable).picklable is False and plugin_tags(_Invert).picklable is True
    assert "check_transform_pickle" in [c.__name__ for c in iter_checks(_Invert)]
    assert "check_transform_pickle" not in [c.__name__ for c in iter_checks(_Unpicklable)]
    assert failures(_Unpicklable) == ""
    blocks = _broken(_Centroids, "block_input", input="blocks")
    assert "check_classifier_bad_input" not in [c.__name__ for c in iter_checks(blocks)]
    with pytest.raises(ValueError, match="unknown or fixed tag"):
        plugin_tags(_broken(_Invert, "bad_tag", conformance_tags={"kind": "mask"}))


def test_iter_checks_selects_the_checks_of_the_kind():
    common = ["check_declaration", "check_params_roundtrip", "check_validate_params", "check_set_params"]
    names = {cls: [c.__name__ for c in iter_checks(cls)] for cls in (_Invert, FolderLoader)}
    assert names[_Invert] == [*common, "check_transform_output", "check_transform_deterministic",
                              "check_transform_pickle", "check_transform_bad_input"]
    assert names[FolderLoader] == [*common, "check_loader_missing_root", "check_loader_columns",
                                   "check_loader_groups", "check_loader_report", "check_loader_bad_rows"]


def test_expected_failures_are_marked_and_strict():
    forgets = BROKEN["check_transform_pickle"][0][0]
    expected = {forgets.name: {"check_transform_pickle": "state not pickled yet"}}
    mark = parametrize_with_checks([_Invert, forgets], expected_failures=expected)
    params = {p.id: p for p in mark.args[1]}
    assert len(params) == 2 * len(list(iter_checks(_Invert)))
    (xfail,) = params[f"{forgets.name}-check_transform_pickle"].marks
    assert xfail.name == "xfail" and xfail.kwargs == {"reason": "state not pickled yet", "strict": True}
    assert not params[f"{_Invert.name}-check_transform_pickle"].marks
    assert failures(forgets) != "" and failures(forgets, expected[forgets.name]) == ""
    assert "passed, but is listed as an expected failure" in failures(_Invert, {"check_transform_pickle": "?"})
    with pytest.raises(ValueError, match="unknown check"):
        parametrize_with_checks([_Invert], expected_failures={_Invert.name: {"check_pickle": "typo"}})
    by_function = parametrize_with_checks([forgets], expected_failures=lambda cls: expected.get(cls.name, {}))
    assert sum(bool(p.marks) for p in by_function.args[1]) == 1


# ---- determinism of trained networks ------------------------------------------------------------

_SEEDS = itertools.count(100)


@contextlib.contextmanager
def _unseeded():
    """Every Keras fit inside is seeded from a counter, not from random_state: every training differs."""
    import medfuse_plugins._keras as K
    import medfuse_plugins.unet as U

    real = K.seeded

    def fake(seed, deterministic=True):
        return real(next(_SEEDS), deterministic)

    K.seeded = U.seeded = fake
    try:
        yield
    finally:
        K.seeded = U.seeded = real


def _unseeded_plugins() -> list[tuple[type, Any, str]]:
    """(plugin class, the kit's determinism check, its failure message) for the three trained networks."""
    from medfuse.testing import check_classifier_deterministic, check_extractor_deterministic, check_mask_deterministic
    from medfuse_plugins.cnn import CNNClassifier, CNNEmbedding
    from medfuse_plugins.unet import UNetMask

    # the smallest settings the kit's checks take: one epoch, one batch, no inner split or augmentation
    tiny = {"size": 16, "width": 2, "depth": 1, "embedding_dim": 4, "epochs": 1, "batch_size": 16,
            "validation_fraction": 0.0, "augment": False}

    class _UnseededCNN(CNNEmbedding):
        name: ClassVar[str] = "kit_unseeded_cnn"
        conformance_params: ClassVar[dict[str, Any]] = {**CNNEmbedding.conformance_params, **tiny}

        def fit(self, P, y=None):
            with _unseeded():
                return super().fit(P, y)

    class _UnseededCNNClassifier(CNNClassifier):
        name: ClassVar[str] = "kit_unseeded_cnn_classifier"
        conformance_params: ClassVar[dict[str, Any]] = {**CNNClassifier.conformance_params, **tiny}

        def fit(self, P, y=None):
            with _unseeded():
                return super().fit(P, y)

    class _UnseededUNet(UNetMask):
        name: ClassVar[str] = "kit_unseeded_unet"
        conformance_params: ClassVar[dict[str, Any]] = {**UNetMask.conformance_params, "epochs": 1,
                                                        "steps_per_epoch": 1, "patch_size": 16, "width": 2,
                                                        "batch_size": 2, "validation_fraction": 0.0,
                                                        "augment": False}

        def fit(self, images=None, masks=None):
            with _unseeded():
                return super().fit(images, masks)

    return [(_UnseededCNN, check_extractor_deterministic, "features differ between two runs"),
            (_UnseededCNNClassifier, check_classifier_deterministic, "probabilities differ between two fits"),
            (_UnseededUNet, check_mask_deterministic, "masks differ between two fits")]


def test_determinism_checks_train_twice_and_catch_unseeded_networks():
    """cnn_embedding, cnn_classifier and unet: the kit's second fit is a real training (no memo can
    stand in for it), so a network that ignores random_state fails the check."""
    pytest.importorskip("keras")
    for cls, check, message in _unseeded_plugins():
        with pytest.raises(AssertionError, match=message):
            check(cls)


# ---- a loader of its own layout ---------------------------------------------------------------------

class _PatientFolders(Loader):
    """``patients/<patient>/<label>__<n>.png``, built with medfuse.loading.SampleTableBuilder."""

    name: ClassVar[str] = "kit_patient_folders"
    param_docs: ClassVar[dict[str, str]] = {"path": "Folder of patient folders."}
    conformance_params: ClassVar[dict[str, Any]] = {"path": "patients"}

    def __init__(self, path: str = "patients"):
        self.path = path

    def load(self, root=".", jobs=1, progress=False):
        top = loader_root(root) / self.path
        if not top.is_dir():
            raise DataError(f"{top}: folder not found")
        build = SampleTableBuilder(source=str(top), loader=self.name)
        for f in sorted(top.glob("*/*.png")):
            build.add(id=f"{f.parent.name}/{f.stem}", label=f.stem.partition("__")[0], path=f, group=f.parent.name)
        return build.build(jobs=jobs, progress=progress)

    @staticmethod
    def conformance_dataset(root):
        """The manifest's images (the broken one renamed too) as patients/<group>/<label>__<i>.png."""
        for i, row in pd.read_csv(root / "manifest.csv").iterrows():
            dest = root / "patients" / row["group"]
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / row["path"], dest / f"{row['label']}__{i}.png")
        return root


def _drops_bad_files_silently(self, root=".", jobs=1, progress=False):
    data = _PatientFolders.load(self, root, jobs, progress)
    data.report.bad_files = []
    return data


def test_a_loader_of_its_own_layout_is_checked_on_its_conformance_dataset():
    assert failures(_PatientFolders) == ""
    hides = _broken(_PatientFolders, "patients_hide_bad_files", load=_drops_bad_files_silently)
    assert "check_loader_bad_rows: the undecodable broken.png is not reported" in failures(hides)


# ---- one broken plugin per assert inside a check ------------------------------------------------------
# The checks above each have a breaker; these break the asserts inside a check that those leave unreached.

_KEYS = itertools.count()


def _returns_none(base: type) -> dict[str, Any]:
    """``fit`` that trains as ``base`` does and returns None instead of self."""
    def fit(self, *a, **k):
        base.fit(self, *a, **k)
    return {"fit": fit}


class _NoDoc(Transform):
    name: ClassVar[str] = "kit_no_doc"
    _apply = _Invert._apply


_NoDoc.__doc__ = None  # a class body without a docstring; getdoc() would give Transform's


def _unlabelled_not_reported(data):
    data.report.dropped = [row for row in data.report.dropped if row.get("id") != "u9"]


ASSERT_BREAKERS: list[tuple[str, type, type, str]] = [  # (check, broken plugin, the plugin it breaks, message)
    ("check_declaration", _NoDoc, _Invert, "no docstring"),
    ("check_params_roundtrip", _broken(_Invert, "clone_changes", __sklearn_clone__=lambda self:
                                       type(self)(strength=self.strength + 1)), _Invert, "clone() changes"),
    ("check_params_roundtrip", _broken(_Invert, "unstable_cache_key", cache_key=lambda self: str(next(_KEYS))),
     _Invert, "cache_key() differs"),
    ("check_extractor_output", _broken(_Means, "extractor_fit_none", **_returns_none(_Means)), _Means,
     "fit must return self"),
    ("check_selector_output", _broken(_Medians, "selector_fit_none", **_returns_none(_Medians)), _Medians,
     "fit must return self"),
    ("check_classifier_output", _broken(_Centroids, "classifier_fit_none", **_returns_none(_Centroids)), _Centroids,
     "fit must return self"),
    ("check_mask_output", _broken(_Threshold, "int64_masks", predict_masks=lambda self, ims:
                                  [_Threshold.predict_mask(self, im).astype(np.int64) for im in ims]), _Threshold,
     "mask must be uint8"),
    ("check_loader_columns", _broken(FolderLoader, "returns_samples", load=lambda self, root=".", jobs=1, progress=False:
                                    FolderLoader.load(self, root, jobs, progress).samples),
     FolderLoader, "must return a SampleTable"),
    ("check_loader_columns", _broken(FolderLoader, "repeated_ids", **_load_then(
        lambda d: d.samples.__setitem__("id", "same"))), FolderLoader, "samples['id'] must be unique"),
    ("check_loader_columns", _broken(FolderLoader, "missing_images", **_load_then(
        lambda d: d.samples.__setitem__("path", [f"{p}.gone" for p in d.samples["path"]]))), FolderLoader,
     "samples['path'] names missing files"),
    ("check_loader_columns", _broken(FolderLoader, "missing_masks", **_load_then(
        lambda d: d.samples.__setitem__("mask_path", [f"{p}.gone" for p in d.samples["mask_path"]]))), FolderLoader,
     "samples['mask_path'] names missing files"),
    ("check_loader_report", _broken(FolderLoader, "wrong_class_counts", **_load_then(
        _with("report", lambda d: setattr(d.report, "class_counts", {"small": 99}) or d.report))), FolderLoader,
     "report.class_counts"),
    ("check_loader_bad_rows", _broken(TableLoader, "unlabelled_unreported", **_load_then(_unlabelled_not_reported)),
     TableLoader, "row without a label (u9) is not reported"),
]


@pytest.mark.parametrize(("check", "cls", "good", "why"), ASSERT_BREAKERS, ids=[c.name for _, c, _, _ in ASSERT_BREAKERS])
def test_each_assert_fails_on_its_broken_plugin(check, cls, good, why):
    names = [c.__name__ for c in iter_checks(good)]
    assert check in names and [c.__name__ for c in iter_checks(cls)] == names
    ALL_CHECKS[check](good)  # the well-behaved plugin passes this check
    with pytest.raises(AssertionError, match=re.escape(why)):
        ALL_CHECKS[check](cls)


# ---- needs_mask (an extractor that needs a mask declares it) ------------------------------------------

BROKEN["check_extractor_without_mask"] = [(_broken(_Means, "nan_without_mask", _prepare=lambda self, im, m: (
    np.full(3, np.nan, np.float32) if m is None else im.reshape(-1, 3).mean(axis=0).astype(np.float32))),
    "every feature is NaN for every image without a mask")]


@pytest.mark.parametrize(("cls", "why"), BROKEN["check_extractor_without_mask"], ids=["kit_nan_without_mask"])
def test_without_mask_check_fails_on_its_broken_plugin(cls, why):
    test_each_check_fails_on_its_broken_plugin("check_extractor_without_mask", cls, why)
