"""The pipeline engine: materialise, fit per fold, fusion modes, ensembles, persistence, no leakage.

Tiny plugins defined here (registered through a fake entry point) keep every test to seconds;
the built-in extractors and loaders have their own tests.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from conftest import fitted_inputs
from medfuse import hookimpl
from medfuse.contracts import Extractor, MaskMaker, SampleTable, Selector, Transform
from medfuse.errors import DataError, InvalidInputError, StudyError
from medfuse.fusion import log_pool
from medfuse.host import PluginHost
from medfuse.pipeline import FittedPipeline, PipelineRunner, Prepared, balance_augment
from medfuse.study import parse_study
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

# ---- tiny plugins -----------------------------------------------------------------------------


class TinyStats(Extractor):
    """Mean and standard deviation of each channel inside the mask (whole image without one)."""

    name: ClassVar[str] = "tiny_stats"
    version: ClassVar[str] = "0.1.0"
    block: ClassVar[str] = "stats"
    param_docs: ClassVar[dict[str, str]] = {"scale": "Multiplier of the output."}
    calls: ClassVar[int] = 0

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def _prepare(self, image, mask):
        type(self).calls += 1
        px = image[mask > 0] if mask is not None and mask.any() else image.reshape(-1, 3)
        px = px.astype(np.float32)
        return np.concatenate([px.mean(0), px.std(0)]).astype(np.float32) * self.scale

    def feature_names(self):
        return [f"{s}_{c}" for s in ("mean", "std") for c in "rgb"]


class TinyArea(Extractor):
    """Fraction of mask pixels that are cell and nucleus."""

    name: ClassVar[str] = "tiny_area"
    version: ClassVar[str] = "0.1.0"
    block: ClassVar[str] = "area"

    def _prepare(self, image, mask):
        if mask is None:
            return np.zeros(2, np.float32)
        return np.asarray([(mask > 0).mean(), (mask == 2).mean()], np.float32)

    def feature_names(self):
        return ["cell", "nucleus"]


class TinyInvert(Transform):
    """Inverts intensities."""

    name: ClassVar[str] = "tiny_invert"
    version: ClassVar[str] = "0.1.0"

    def _apply(self, image, mask):
        return 255 - image, mask


class TinyThreshold(MaskMaker):
    """Trainable segmenter: learns one brightness threshold between background and cell pixels."""

    name: ClassVar[str] = "tiny_threshold"
    version: ClassVar[str] = "0.1.0"
    trainable: ClassVar[bool] = True

    def fit(self, images=None, masks=None):
        fg = np.concatenate([im.mean(2)[m > 0] for im, m in zip(images, masks)])
        bg = np.concatenate([im.mean(2)[m == 0] for im, m in zip(images, masks)])
        self.threshold_ = float((fg.mean() + bg.mean()) / 2)
        self.fg_darker_ = bool(fg.mean() < bg.mean())
        return self

    def _predict_mask(self, image):
        g = image.mean(2)
        return ((g < self.threshold_) if self.fg_darker_ else (g > self.threshold_)).astype(np.uint8)


class TinyColumns(Selector):
    """Keeps the listed table columns (all when empty), imputing medians."""

    name: ClassVar[str] = "tiny_columns"
    version: ClassVar[str] = "0.1.0"
    param_docs: ClassVar[dict[str, str]] = {"columns": "Columns to keep."}

    def __init__(self, columns: list | None = None):
        self.columns = columns

    def fit(self, X, y=None):
        self.selected_ = list(self.columns or X.columns)
        self.medians_ = X[self.selected_].median()
        self.scores_ = pd.Series(1.0, index=X.columns)
        return self

    def transform(self, X):
        return X[self.selected_].fillna(self.medians_).to_numpy(np.float32)


class _TinyModule:
    @hookimpl
    def medfuse_plugins(self):
        return [TinyStats, TinyArea, TinyInvert, TinyThreshold, TinyColumns]


class _EntryPoint:
    name = "tiny"
    dist = SimpleNamespace(name="medfuse-tests")

    def load(self):
        return _TinyModule()


def make_host() -> PluginHost:
    return PluginHost(entry_points=[*md.entry_points(group="medfuse"), _EntryPoint()])


HOST = make_host()


# ---- tiny datasets ----------------------------------------------------------------------------


def write_samples(root: Path, brightness: np.ndarray, labels: np.ndarray, size: int = 12,
                  seed: int = 0, radius: np.ndarray | None = None) -> pd.DataFrame:
    """Grey-ish square images of the given mean brightness with a centred disc mask."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i, (b, lab) in enumerate(zip(brightness, labels)):
        r = size * (0.3 if radius is None else radius[i])
        mask = (np.hypot(yy - size / 2, xx - size / 2) < r).astype(np.uint8)
        img = np.full((size, size, 3), 230.0)
        img[mask > 0] = b
        img += rng.normal(0, 4, img.shape)
        p, mp = root / f"s{i:04d}.png", root / f"s{i:04d}_mask.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        Image.fromarray(mask * 255).save(mp)
        rows.append({"id": f"s{i:04d}", "path": str(p), "mask_path": str(mp), "label": str(lab),
                     "group": f"s{i:04d}", "sha1": None})
    return pd.DataFrame(rows)


def study_of(pipelines: dict, blocks: dict | None = None) -> object:
    return parse_study("t", {"dataset": {"loader": "folder"}, "blocks": blocks or {}, "pipelines": pipelines},
                       "test.toml")


BLOCKS = {"stats": {"plugin": "tiny_stats"}, "area": {"plugin": "tiny_area"},
          "table": {"plugin": "tiny_columns"}}


def cv_accuracy(runner: PipelineRunner, prepared: Prepared, folds: int = 3, seed: int = 0) -> float:
    hits = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(prepared.y, prepared.y):
        fitted = runner.fit(prepared, tr, seed)
        hits.extend(fitted.predict(prepared, te) == prepared.y[te])
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def fusion_data(tmp_path_factory) -> dict:
    """120 samples: image brightness ``s`` and table column ``t``, both random and independent."""
    rng = np.random.default_rng(3)
    n = 120
    s = rng.uniform(-1, 1, n)
    t = rng.uniform(-1, 1, n)
    noise = rng.normal(0, 1, (n, 3))
    root = tmp_path_factory.mktemp("fusion")
    y_tab = np.where(t > 0, "hi", "lo")
    y_both = np.asarray([f"{'S' if a > 0 else 's'}{'T' if b > 0 else 't'}" for a, b in zip(s, t)])
    samples = write_samples(root / "img", 110 + 60 * s, y_tab)
    table = pd.DataFrame({"t": t, "n1": noise[:, 0], "n2": noise[:, 1], "n3": noise[:, 2]})
    return {"samples": samples, "table": table, "y_tab": y_tab, "y_both": y_both}


def _data(fusion_data: dict, labels: np.ndarray) -> SampleTable:
    samples = fusion_data["samples"].copy()
    samples["label"] = labels
    return SampleTable(samples, fusion_data["table"].copy())


# ---- the "done when": fusion ----------------------------------------------------------


def test_useless_image_block_costs_little_against_tabular_only(fusion_data):
    """Label depends only on the table: adding a pure-noise image block loses at most 0.05."""
    study = study_of({"tab": {"blocks": ["table"], "classifier": {"plugin": "logreg"}},
                      "fused": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_tab"])
    acc = {p: cv_accuracy(r, r.materialize(data))
           for p in ("tab", "fused") for r in [PipelineRunner(study, p, HOST, progress=False)]}
    assert acc["tab"] >= 0.9, acc
    assert acc["fused"] >= acc["tab"] - 0.05, acc


def test_fusion_beats_each_block_when_label_needs_both(fusion_data):
    """Four classes = sign(image brightness) x sign(table column): each block alone sees half."""
    study = study_of({"img": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}},
                      "tab": {"blocks": ["table"], "classifier": {"plugin": "logreg"}},
                      "fused": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}},
                      "late": {"blocks": ["stats", "table"], "fusion": "late",
                               "classifier": {"plugin": "logreg"}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_both"])
    acc = {p: cv_accuracy(r, r.materialize(data))
           for p in ("img", "tab", "fused", "late") for r in [PipelineRunner(study, p, HOST, progress=False)]}
    assert acc["fused"] > max(acc["img"], acc["tab"]) + 0.2, acc
    assert acc["late"] > max(acc["img"], acc["tab"]) + 0.1, acc


# ---- no leakage -------------------------------------------------------------------------------


def test_block_statistics_come_from_training_rows_only(fusion_data):
    blocks = {"stats": {"plugin": "tiny_stats", "pca": 3},
              "table": {"plugin": "tiny_columns", "pca": 0.9}}
    study = study_of({"p": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}}}, blocks)
    data = _data(fusion_data, fusion_data["y_both"])
    data.table.loc[::5, "n1"] = np.nan
    runner = PipelineRunner(study, "p", HOST, progress=False)
    prepared = runner.materialize(data)
    train = np.arange(0, len(prepared), 2)  # fold A: even rows; fold B: odd rows
    fitted = runner.fit(prepared, train, seed=0)
    stats, table = fitted.blocks_

    X = prepared.blocks["stats"].astype(np.float64)
    ref = StandardScaler().fit(X[train])
    assert np.allclose(stats.preparer.scaler_.mean_, ref.mean_)
    assert np.allclose(stats.preparer.scaler_.scale_, ref.scale_)
    assert not np.allclose(stats.preparer.scaler_.mean_, StandardScaler().fit(X).mean_)
    pca = PCA(3, svd_solver="full").fit(ref.transform(X[train]))
    assert np.allclose(np.abs(stats.preparer.pca_.components_), np.abs(pca.components_), atol=1e-6)
    assert np.allclose(stats.preparer.pca_.mean_, pca.mean_, atol=1e-9)

    T = data.table.to_numpy(np.float64)
    imp = SimpleImputer(strategy="median").fit(T[train])
    selector_medians = table.plugin.medians_.to_numpy()
    assert np.allclose(selector_medians, np.nanmedian(T[train], axis=0))
    assert not np.allclose(selector_medians, np.nanmedian(T, axis=0))
    assert np.allclose(table.preparer.scaler_.mean_, StandardScaler().fit(imp.transform(T[train])).mean_)
    assert fitted.block_reports_["stats"]["n_components"] == 3
    evr = fitted.block_reports_["table"]["explained_variance_ratio"]
    assert sum(evr) >= 0.9 and sum(evr[:-1]) < 0.9
    assert fitted.block_reports_["table"]["selected"] == ["t", "n1", "n2", "n3"]


def test_fit_does_not_touch_other_rows(fusion_data):
    """Fitting on fold A gives the same model whatever fold B's rows contain."""
    study = study_of({"p": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_both"])
    runner = PipelineRunner(study, "p", HOST, progress=False)
    prepared = runner.materialize(data)
    train, test = np.arange(0, 60), np.arange(60, 120)
    a = runner.fit(prepared, train, 0).predict_proba(prepared, train)
    prepared.blocks["stats"][test] = 1e6  # corrupt fold B
    prepared.table.iloc[test] = -1e6
    b = runner.fit(prepared, train, 0).predict_proba(prepared, train)
    assert np.allclose(a, b)


def test_ood_checks_are_fitted_for_bundles_and_skipped_in_compare_folds(fusion_data):
    """Fits for bundles/scoring carry the out-of-distribution checks; compare's fold fits (which
    never score new images) skip them, members included, with the same predictions."""
    from medfuse.evaluation import default_runner_factory

    study = study_of({"p": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}},
                      "e": {"members": ["p"], "combine": "soft"}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_both"])
    train = np.arange(0, 90)
    with_checks = PipelineRunner(study, "e", HOST, progress=False)
    prepared = with_checks.materialize(data)
    kept = with_checks.fit(prepared, train, 0)
    assert set(kept.members_["p"].ood_) == {"feature", "image"}
    skipped = default_runner_factory(HOST)(study, "e").fit(prepared, train, 0)
    assert skipped.members_["p"].ood_ == {}
    assert np.array_equal(kept.predict_proba(prepared, train), skipped.predict_proba(prepared, train))


# ---- pipeline features ------------------------------------------------------------------------


def test_materialize_reports_failed_samples_and_keeps_the_rest(fusion_data, tmp_path):
    study = study_of({"p": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}}}, BLOCKS)
    samples = fusion_data["samples"].iloc[:10].copy()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    samples.loc[3, "path"] = str(bad)
    samples.loc[5, "path"] = str(tmp_path / "missing.png")
    prepared = PipelineRunner(study, "p", HOST, progress=False).materialize(SampleTable(samples))
    assert len(prepared) == 8 and prepared.blocks["stats"].shape == (8, 6)
    assert list(prepared.failed["id"]) == ["s0003", "s0005"]
    assert "not an image" in prepared.failed["error"].iloc[0]
    assert "s0003" not in set(prepared.samples["id"])
    samples["path"] = str(bad)
    with pytest.raises(DataError, match=r"all 10 samples failed to prepare; first \(s0000\): .*not an image"):
        PipelineRunner(study, "p", HOST, progress=False).materialize(SampleTable(samples))


def test_transforms_and_dataset_masks_reach_the_blocks(fusion_data):
    study = study_of({"plain": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}},
                      "inv": {"transforms": [{"plugin": "tiny_invert"}], "mask": "dataset",
                              "blocks": ["stats", "area"], "classifier": {"plugin": "logreg"}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_tab"])
    plain = PipelineRunner(study, "plain", HOST, progress=False).materialize(data)
    inv = PipelineRunner(study, "inv", HOST, progress=False).materialize(data)
    assert np.all(inv.blocks["area"][:, 0] > 0.2)  # the disc masks were read
    assert np.all(inv.blocks["stats"][:, 0] > 255 - plain.blocks["stats"][:, 0] - 5)


def test_ensemble_members_intermediate_and_late_fusion(fusion_data):
    study = study_of({
        "img": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}},
        "tab": {"blocks": ["table"], "classifier": {"plugin": "random_forest", "params": {"n_estimators": 20}}},
        "soft": {"members": ["img", "tab"]},
        "stack": {"members": ["img", "tab"], "combine": "stack"},
        "late_stack": {"blocks": ["stats", "table"], "fusion": "late", "combine": "stack",
                       "classifier": {"plugin": "logreg"}},
        "inter": {"blocks": ["stats", "table"], "fusion": "intermediate",
                  "classifier": {"plugin": "branch_mlp",
                                 "params": {"branch_units": 8, "head_units": 8, "epochs": 60, "patience": 0,
                                            "learning_rate": 0.01}}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_both"])
    acc = {}
    for p in ("img", "tab", "soft", "stack", "late_stack", "inter"):
        runner = PipelineRunner(study, p, HOST, progress=False)
        prepared = runner.materialize(data)
        tr, te = np.arange(0, 120, 3), np.setdiff1d(np.arange(120), np.arange(0, 120, 3))
        tr = np.sort(np.concatenate([tr, te[::2]]))
        te = np.setdiff1d(np.arange(120), tr)
        fitted = runner.fit(prepared, tr, 0)
        proba = fitted.predict_proba(prepared, te)
        assert proba.shape == (len(te), 4) and np.allclose(proba.sum(1), 1)
        acc[p] = float(np.mean(fitted.classes_[proba.argmax(1)] == prepared.y[te]))
    assert acc["stack"] > max(acc["img"], acc["tab"]), acc
    assert acc["late_stack"] > max(acc["img"], acc["tab"]), acc
    assert acc["inter"] > max(acc["img"], acc["tab"]), acc


def test_trainable_mask_is_fitted_on_training_rows(fusion_data):
    study = study_of({"p": {"mask": {"plugin": "tiny_threshold"}, "blocks": ["area", "stats"],
                            "classifier": {"plugin": "logreg"}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_tab"])
    runner = PipelineRunner(study, "p", HOST, progress=False)
    prepared = runner.materialize(data)
    assert prepared.raw is not None and not prepared.blocks
    train = np.arange(60)
    fitted = runner.fit(prepared, train, 0)
    ref = TinyThreshold().fit([prepared.raw[i][0] for i in train], [prepared.raw[i][1] for i in train])
    assert fitted.mask_maker_.threshold_ == pytest.approx(ref.threshold_)
    assert fitted.predict_proba(prepared, np.arange(60, 120)).shape == (60, 2)


def test_predict_proba_images_matches_prepared_path_and_save_load(fusion_data, tmp_path):
    from medfuse.imageio import read_image, read_mask

    study = study_of({"p": {"transforms": [{"plugin": "tiny_invert"}], "mask": "dataset",
                            "blocks": ["stats", "area", "table"],
                            "classifier": {"plugin": "xgboost", "params": {"n_estimators": 30}}}},
                     {**BLOCKS, "stats": {"plugin": "tiny_stats", "pca": 0.95}})
    data = _data(fusion_data, fusion_data["y_both"])
    runner = PipelineRunner(study, "p", HOST, progress=False)
    prepared = runner.materialize(data)
    fitted = runner.fit(prepared, np.arange(80), 0)
    te = np.arange(80, 120)
    expected = fitted.predict_proba(prepared, te)
    rows = prepared.samples.iloc[te]
    images = [read_image(p) for p in rows["path"]]
    masks = [read_mask(p) for p in rows["mask_path"]]
    got = fitted.predict_proba_images(images, masks, prepared.table.iloc[te])
    assert np.allclose(got, expected, atol=1e-6)
    with pytest.raises(InvalidInputError, match="uses dataset masks"):
        fitted.predict_proba_images(images, None, prepared.table.iloc[te])

    files = fitted.save(tmp_path / "model")
    assert any(f.name == "xgboost.json" for f in files)
    loaded = FittedPipeline.load(tmp_path / "model", host=HOST)  # trusts HOST's plugin classes
    assert np.allclose(loaded.predict_proba(prepared, te), expected, atol=1e-6)
    spec = loaded.spec()
    assert spec["classifier"]["name"] == "xgboost" and spec["transforms"][0]["name"] == "tiny_invert"
    assert [b["block"] for b in spec["blocks"]] == ["stats", "area", "table"]
    assert spec["feature_names"] == loaded.feature_names_
    assert fitted_inputs(loaded) == {"masks": True, "table_columns": ["t", "n1", "n2", "n3"]}
    assert loaded.feature_names_[0] == "stats.pc1" and "area.cell" in loaded.feature_names_
    top = loaded.top_features(prepared, te, n=5)
    assert list(top.columns) == ["feature", "importance", "method"] and top["method"].iloc[0] == "gain"
    assert len(top) == 5


def test_permutation_importance_finds_the_informative_column(fusion_data):
    study = study_of({"p": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_tab"])
    runner = PipelineRunner(study, "p", HOST, progress=False)
    prepared = runner.materialize(data)
    fitted = runner.fit(prepared, np.arange(80), 0)
    top = fitted.top_features(prepared, np.arange(80, 120), n=3)
    assert top["feature"].iloc[0] == "table.t" and top["method"].iloc[0] == "permutation"


@pytest.mark.slow
def test_same_seed_same_result_and_parallel_equals_serial(fusion_data):
    """Two worker processes (joblib start-up takes seconds on a loaded machine)."""
    study = study_of({"p": {"blocks": ["stats", "table"],
                            "classifier": {"plugin": "random_forest", "params": {"n_estimators": 20}}}}, BLOCKS)
    data = _data(fusion_data, fusion_data["y_both"])
    serial = PipelineRunner(study, "p", HOST, progress=False).materialize(data)
    parallel = PipelineRunner(study, "p", HOST, jobs=2, progress=False).materialize(data)
    assert np.array_equal(serial.blocks["stats"], parallel.blocks["stats"])
    runner = PipelineRunner(study, "p", HOST, progress=False)
    a = runner.fit(serial, np.arange(90), 7).predict_proba(serial, np.arange(90, 120))
    b = runner.fit(parallel, np.arange(90), 7).predict_proba(parallel, np.arange(90, 120))
    assert np.array_equal(a, b)


def test_progress_callback_is_called(fusion_data):
    study = study_of({"p": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}}}, BLOCKS)
    calls = []
    PipelineRunner(study, "p", HOST, progress=lambda d, t, w: calls.append((d, t))).materialize(
        _data(fusion_data, fusion_data["y_tab"]))
    assert calls[-1] == (120, 120)


def test_clear_errors_for_impossible_pipelines():
    with pytest.raises(StudyError, match="intermediate fusion needs"):
        PipelineRunner(study_of({"p": {"blocks": ["stats"], "fusion": "intermediate",
                                       "classifier": {"plugin": "logreg"}}}, BLOCKS), "p", HOST)
    with pytest.raises(StudyError, match="needs feature blocks"):
        PipelineRunner(study_of({"p": {"classifier": {"plugin": "logreg"}}}, BLOCKS), "p", HOST)
    with pytest.raises(StudyError, match="no pipeline 'q'"):
        PipelineRunner(study_of({"p": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}}}, BLOCKS),
                       "q", HOST)


def test_balance_augment_balances_image_classes():
    P = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    y = np.asarray(["a", "a", "a", "a", "b"], dtype=object)
    P2, y2 = balance_augment(P, y, 0)
    assert P2.shape == (8, 4, 4, 3) and list(np.unique(y2, return_counts=True)[1]) == [4, 4]
    assert np.array_equal(P2[:5], P)
    flat = np.zeros((5, 3))
    assert balance_augment(flat, y, 0)[0] is flat


def test_builtin_plugins_end_to_end_on_synthetic_cells(tmp_path):
    """folder loader -> dataset masks -> morphology + colour + table -> early/late fusion, saved."""
    from medfuse.host import get_host
    from medfuse.synthetic import write_dataset

    root = write_dataset(tmp_path / "cells", n_per_class=8, size=32, seed=1)
    study = parse_study("cells", {
        "dataset": {"loader": "folder", "params": {"path": "images", "masks": "masks", "table": "table.csv",
                                                   "group_column": "patient"}},
        "blocks": {"morphology": {"plugin": "morphology"}, "colour": {"plugin": "colour", "pca": 0.9},
                   "table": {"plugin": "select_all"}},
        "pipelines": {
            "early": {"mask": "dataset", "blocks": ["morphology", "colour", "table"],
                      "classifier": {"plugin": "xgboost", "params": {"n_estimators": 20}}},
            "late": {"mask": "dataset", "blocks": ["morphology", "table"], "fusion": "late",
                     "classifier": {"plugin": "logreg"}},
            "plain": {"blocks": ["colour"], "classifier": {"plugin": "logreg"}},
            "both": {"members": ["early", "late", "plain"]}}}, "test.toml")
    host = get_host()
    data = host.create("folder", study.dataset.params, "loader").load(root)
    for name in ("early", "late", "both"):
        runner = PipelineRunner(study, name, host, cache_dir=tmp_path / "cache", progress=False)
        prepared = runner.materialize(data)
        assert len(prepared) == 24 and len(prepared.failed) == 0
        train = np.arange(0, 24, 2)
        fitted = runner.fit(prepared, train, 0)
        proba = fitted.predict_proba(prepared, np.arange(1, 24, 2))
        assert proba.shape == (12, 3) and np.allclose(proba.sum(1), 1)
        assert np.mean(fitted.classes_[proba.argmax(1)] == prepared.y[1::2]) >= 0.6
        fitted.save(tmp_path / name)
        loaded = FittedPipeline.load(tmp_path / name)
        assert np.allclose(loaded.predict_proba(prepared, np.arange(1, 24, 2)), proba)
    assert runner.cache.hits > 0, "the ensemble's members reuse the cached blocks"
    from medfuse.imageio import read_image, read_mask

    rows = prepared.samples.iloc[1::2]
    got = loaded.predict_proba_images([read_image(p) for p in rows["path"]],
                                      [read_mask(p) for p in rows["mask_path"]], prepared.table.iloc[1::2])
    assert np.allclose(got, proba), "masks given to an ensemble reach only the members that use them"


def test_select_drops_a_noise_block_and_member_and_survives_save_load(fusion_data, tmp_path):
    """combine = "select" in late fusion and ensembles: the noise block / member is dropped by the
    inner CV of the training rows, predictions equal the informative part's, and the learnt weights
    are recorded in the fitted pipeline (spec) and kept by a bundle's save/load."""
    blocks = {**BLOCKS, "noise": {"plugin": "tiny_columns", "params": {"columns": ["n1", "n2", "n3"]}},
              "t": {"plugin": "tiny_columns", "params": {"columns": ["t"]}}}
    study = study_of({
        "tab": {"blocks": ["t"], "classifier": {"plugin": "logreg"}},
        "noisy": {"blocks": ["noise"], "classifier": {"plugin": "logreg"}},
        "late": {"blocks": ["noise", "t"], "fusion": "late", "combine": "select", "classifier": {"plugin": "logreg"}},
        "ens": {"members": ["noisy", "tab"], "combine": "select"}}, blocks)
    data = _data(fusion_data, fusion_data["y_tab"])
    tr, te = np.arange(90), np.arange(90, 120)
    out = {}
    for p in ("tab", "late", "ens"):
        runner = PipelineRunner(study, p, HOST, progress=False)
        prepared = runner.materialize(data)
        out[p] = (runner.fit(prepared, tr, 0), prepared)
    tab = out["tab"][0].predict_proba(out["tab"][1], te)
    late, prepared = out["late"]
    w = late.spec()["weights"]
    assert w["noise"] == 0 and w["t"] > 0, w
    assert [p["kept"] for p in late.reliability_["parts"]] == [False, True]
    assert np.allclose(late.predict_proba(prepared, te), log_pool([tab], [w["t"]]))  # the t block alone
    ens, prepared = out["ens"]
    w = ens.spec()["weights"]
    assert w["noisy"] == 0 and w["tab"] > 0, w
    expected = log_pool([tab], [w["tab"]])
    assert np.allclose(ens.predict_proba(prepared, te), expected)
    ens.save(tmp_path / "ens")
    loaded = FittedPipeline.load(tmp_path / "ens", host=HOST)
    assert loaded.reliability_ == ens.reliability_
    assert np.allclose(loaded.predict_proba(prepared, te), expected)


def test_early_select_drops_a_noise_block_from_the_fitted_pipeline(fusion_data, tmp_path):
    """fusion = "early", combine = "select": inner folds of the training rows drop the noise block, so
    the fitted pipeline holds the informative block only and predicts exactly as the pipeline built
    on it alone; the record is in reliability_ and a saved bundle predicts the same."""
    blocks = {**BLOCKS, "noise": {"plugin": "tiny_columns", "params": {"columns": ["n1", "n2", "n3"]}},
              "t": {"plugin": "tiny_columns", "params": {"columns": ["t"]}}}
    study = study_of({
        "tab": {"blocks": ["t"], "classifier": {"plugin": "logreg"}},
        "early": {"blocks": ["noise", "t"], "combine": "select", "classifier": {"plugin": "logreg"}}}, blocks)
    data = _data(fusion_data, fusion_data["y_tab"])
    tr, te = np.arange(90), np.arange(90, 120)
    out = {}
    for p in ("tab", "early"):
        runner = PipelineRunner(study, p, HOST, progress=False)
        prepared = runner.materialize(data)
        out[p] = (runner.fit(prepared, tr, 0), prepared)
    early, prepared = out["early"]
    assert [p["kept"] for p in early.reliability_["parts"]] == [False, True], early.reliability_
    assert [fb.name for fb in early.blocks_] == ["t"] and early.feature_names_ == out["tab"][0].feature_names_
    expected = out["tab"][0].predict_proba(out["tab"][1], te)
    assert np.allclose(early.predict_proba(prepared, te), expected)
    early.save(tmp_path / "early")
    loaded = FittedPipeline.load(tmp_path / "early", host=HOST)
    assert loaded.reliability_ == early.reliability_
    assert np.allclose(loaded.predict_proba(prepared, te), expected)
