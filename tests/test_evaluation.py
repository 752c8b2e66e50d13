"""Splits, metrics, bootstrap intervals and the study run loop (with a small fake pipeline runner)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from medfuse.contracts import SampleTable
from medfuse.errors import DataError, StudyError
from medfuse.evaluation import run_study
from medfuse.metrics import METRICS, bootstrap_intervals, point_metrics, weighted_metrics
from medfuse.splits import check_leakage, cv_text, make_splits, rows_by_fold, select_samples
from medfuse.study import parse_study
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

# ---- a tiny fake of the pipeline engine (PipelineRunner / Prepared / FittedPipeline API) ---------


def fake_data(n_per_class: int = 30, classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0,
              patients: int = 0, duplicates: int = 0) -> SampleTable:
    """Samples with an informative 2-D feature stored in the table; optional patients and duplicates."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for ci, c in enumerate(classes):
        for i in range(n_per_class):
            sid = f"{c}{i:03d}"
            group = f"p{c}{i % patients}" if patients else sid
            rows.append({"id": sid, "path": f"{c}/{sid}.png", "mask_path": None, "label": c, "group": group,
                         "sha1": f"sha-{sid}"})
            feats.append(rng.normal(ci * 1.2, 1.0, 2))
    samples = pd.DataFrame(rows)
    table = pd.DataFrame(np.array(feats), columns=["f0", "f1"])
    for j in range(duplicates):  # exact copies of earlier rows under new ids
        src = samples.iloc[j].to_dict() | {"id": f"dup{j}"}
        samples = pd.concat([samples, pd.DataFrame([src])], ignore_index=True)
        table = pd.concat([table, table.iloc[[j]]], ignore_index=True)
    return SampleTable(samples, table)


def fake_study(**evaluation) -> object:
    ev = {"folds": 3, "seed": 0, "bootstrap": 200} | evaluation
    return parse_study("fake", {
        "dataset": {"loader": "table"},
        "evaluation": ev,
        "pipelines": {"good": {"classifier": {"plugin": "logreg"}},
                      "noise": {"classifier": {"plugin": "logreg"}},
                      "broken": {"classifier": {"plugin": "logreg"}}},
        "reported": {"accuracy": 0.9, "source": "nowhere"},
    }, "<test>")


@dataclass
class FakeFitted:
    classes_: np.ndarray
    model: LogisticRegression
    scaler: StandardScaler
    block_reports_: dict = field(default_factory=dict)
    fit_seconds_: float = 0.0

    def predict_proba(self, prepared, idx):
        return self.model.predict_proba(self.scaler.transform(prepared.blocks["x"][idx]))

    def top_features(self, prepared, idx, n=20):
        return pd.DataFrame({"feature": ["x.f0", "x.f1"], "importance": np.abs(self.model.coef_).sum(0)})

    def spec(self):
        return {"classifier": {"name": "fake", "version": "0.0.1", "params": {}}}


class FakeRunner:
    """Learns logistic regression on the table; ``noise`` sees random features; ``broken`` raises."""

    log: dict[str, list] = {}

    def __init__(self, study, pipeline, fail_ids=("b001",)):
        self.study, self.pipeline, self.fail_ids = study, pipeline, set(fail_ids)
        FakeRunner.log[pipeline] = []

    def materialize(self, data: SampleTable):
        keep = ~data.samples["id"].isin(self.fail_ids).to_numpy()
        samples = data.samples[keep].reset_index(drop=True)
        X = data.table.to_numpy()[keep]
        if self.pipeline == "noise":
            X = np.random.default_rng(1).normal(size=X.shape)
        failed = data.samples[~keep][["id", "path"]].assign(error="ImageReadError: truncated")
        return SimpleNamespace(samples=samples, y=samples["label"].to_numpy(), blocks={"x": X}, images=None,
                               table=None, failed=failed.reset_index(drop=True))

    def fit(self, prepared, train_idx, seed):
        if self.pipeline == "broken":
            raise RuntimeError("classifier exploded")
        X = prepared.blocks["x"][train_idx]
        FakeRunner.log[self.pipeline].append(
            {"train_ids": set(prepared.samples["id"].iloc[train_idx]), "scaler_mean": X.mean(axis=0)})
        scaler = StandardScaler().fit(X)
        model = LogisticRegression(random_state=seed).fit(scaler.transform(X), prepared.y[train_idx])
        return FakeFitted(model.classes_, model, scaler,
                          {"x": {"n_features_in": 2, "n_components": 2, "explained_variance_ratio": [0.7, 0.3]}})


# ---- metrics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3, 5])
def test_vectorised_metrics_equal_sklearn(k):
    rng = np.random.default_rng(k)
    n = 300
    y = rng.integers(0, k, n)
    proba = rng.random((n, k))
    proba[np.arange(n), y] += 0.4
    proba = np.round(proba, 1)  # ties in scores
    proba /= proba.sum(axis=1, keepdims=True)
    classes = np.array([f"c{i}" for i in range(k)])
    pm = point_metrics(classes[y], proba, classes)
    wm = weighted_metrics(y, proba, np.ones((1, n)))
    for m in METRICS:
        assert wm[m][0] == pytest.approx(pm[m], abs=1e-12), m
    # integer weights = the sample repeated
    w = rng.integers(0, 3, n).astype(float)
    rep = np.repeat(np.arange(n), w.astype(int))
    pr = point_metrics(classes[y[rep]], proba[rep], classes)
    wr = weighted_metrics(y, proba, w[None, :])
    for m in METRICS:
        assert wr[m][0] == pytest.approx(pr[m], abs=1e-12), m


def test_point_metrics_binary_auc_and_confusion():
    y = np.array(["neg", "neg", "pos", "pos"])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = point_metrics(y, proba, ["neg", "pos"])
    assert m["roc_auc_ovr"] == 1.0
    assert m["confusion"] == [[1, 1], [0, 2]]
    assert m["per_class"]["pos"]["recall"] == 1.0 and m["per_class"]["neg"]["precision"] == 1.0
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet(np.ones(3), n)
    proba[np.arange(n), y] += 0.5
    classes = np.array(["x", "y", "z"])
    a = bootstrap_intervals(classes[y], proba, classes, n_boot=300, seed=7)
    b = bootstrap_intervals(classes[y], proba, classes, n_boot=300, seed=7, chunk=64)
    c = bootstrap_intervals(classes[y], proba, classes, n_boot=300, seed=8)
    assert a == b  # chunking does not change the draws
    assert a != c
    pm = point_metrics(classes[y], proba, classes)
    for m in METRICS:
        lo, hi = a[m]
        assert lo < pm[m] < hi
        assert hi - lo < 0.2
    # grouped bootstrap: whole clusters of 40 samples are resampled
    groups = np.arange(n) // 40
    g = bootstrap_intervals(classes[y], proba, classes, n_boot=300, seed=7, groups=groups)
    assert set(g) == set(METRICS)
    assert bootstrap_intervals(classes[y], proba, classes, n_boot=0) == {}


# ---- selection and splits ----------------------------------------------------------------------

def test_select_samples_dedupe_conflicts_and_cap():
    data = fake_data(20, duplicates=3)
    sel = select_samples(data, dedupe=True)
    assert sel.n_loaded == 63 and sel.duplicates_removed == 3 and len(sel.data) == 60
    assert ["a000", "dup0"] in sel.duplicate_groups
    assert len(sel.data.table) == 60  # table subset in step with samples
    # same content, different labels: both rows dropped
    s = data.samples.copy()
    s.loc[s["id"] == "dup1", "label"] = "c"
    sel = select_samples(SampleTable(s, data.table), dedupe=True)
    assert sel.label_conflicts == 2 and sel.duplicates_removed == 2
    assert not sel.data.samples["id"].isin(["a001", "dup1"]).any()
    # cap per class, seeded
    c1 = select_samples(data, max_per_class=5, seed=3)
    c2 = select_samples(data, max_per_class=5, seed=3)
    assert c1.data.samples["label"].value_counts().tolist() == [5, 5, 5]
    assert c1.data.samples["id"].tolist() == c2.data.samples["id"].tolist()
    assert c1.capped == {"a": 15, "b": 15, "c": 15}
    bad = data.samples.copy()
    bad.loc[1, "id"] = bad.loc[0, "id"]
    with pytest.raises(DataError, match="not unique"):
        select_samples(SampleTable(bad, data.table))


def test_stratified_splits_cover_every_sample_once():
    samples = fake_data(20).samples
    sp = make_splits(samples, folds=4, seed=0)
    assert sp.method == "StratifiedKFold" and not sp.grouped
    tests = np.concatenate([t for _, t in sp.folds()])
    assert sorted(tests) == list(range(len(samples)))
    for train, test in sp.folds():
        assert not set(train) & set(test)
        assert samples["label"].iloc[test].value_counts().tolist() == [5, 5, 5]
    assert sp.leakage["ok"] and sp.leakage["splits_checked"] == 4
    same = make_splits(samples, folds=4, seed=0)
    assert (same.fold_of == sp.fold_of).all()
    assert (make_splits(samples, folds=4, seed=1).fold_of != sp.fold_of).any()


def test_grouped_splits_keep_patients_together():
    samples = fake_data(24, patients=6).samples
    sp = make_splits(samples, folds=3, seed=0)
    assert sp.grouped and sp.method == "StratifiedGroupKFold"
    for train, test in sp.folds():
        assert not set(samples["group"].iloc[train]) & set(samples["group"].iloc[test])
    assert sp.leakage["ok"]


def test_duplicates_kept_together_when_not_deduped():
    data = fake_data(15, duplicates=6)
    sel = select_samples(data, dedupe=False)
    sp = make_splits(sel.data.samples, folds=3, seed=0)
    assert sp.grouped  # identical content forms one group
    assert sp.leakage["shared_sha1"] == 0
    f = dict(zip(sp.ids, sp.fold_of))
    for j in range(6):
        assert f[f"dup{j}"] == f[sel.data.samples["id"].iloc[j]]


def test_leakage_check_reports_shared_content():
    samples = fake_data(10).samples
    sp = make_splits(samples, folds=2, seed=0)
    # corrupt: give a test row of fold 1 the hash of one of its training rows
    train, test = sp.folds()[0]
    samples = samples.copy()
    samples.loc[test[0], "sha1"] = samples.loc[train[0], "sha1"]
    leak = check_leakage(sp, samples)
    assert not leak["ok"] and leak["shared_sha1"] == 1 and leak["examples"]


def test_holdout_fraction_and_fixed_split_column():
    samples = fake_data(20, patients=10).samples
    sp = make_splits(samples, folds=3, seed=0, holdout=0.25)
    hold = sp.holdout
    assert 0 < len(hold) < len(samples)
    dev = np.flatnonzero(sp.fold_of >= 0)
    assert not set(samples["group"].iloc[hold]) & set(samples["group"].iloc[dev])
    assert sp.leakage["ok"] and sp.leakage["splits_checked"] == 4
    fixed = samples.assign(split=np.where(np.arange(len(samples)) % 5 == 0, "test", "train"))
    sp2 = make_splits(fixed, folds=3, seed=0)
    assert sorted(sp2.holdout) == list(range(0, len(samples), 5))
    assert sp2.holdout_method.startswith("fixed")


def test_too_few_groups_is_a_clear_error():
    samples = fake_data(6, patients=1).samples  # one patient per class: 3 groups
    with pytest.raises(DataError, match="needs at least 5 groups"):
        make_splits(samples, folds=5)


def test_rows_by_fold_skip_rows_a_pipeline_failed_on():
    samples = fake_data(10).samples
    sp = make_splits(samples, folds=2, seed=0)
    ids = samples["id"].tolist()[1:]  # the pipeline lost the first sample
    folds, hold = rows_by_fold(sp, ids)
    assert hold is None
    assert sum(len(t) for _, t in folds) == len(ids)
    with pytest.raises(DataError, match="not in the study"):
        rows_by_fold(sp, ["nope"])


# ---- the run loop ------------------------------------------------------------------------------

def _strip(obj):
    """results without timings and the creation stamp (the only parts allowed to differ)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("timing", "created", "fit_seconds_mean",
                                                                  "predict_images_per_second")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_run_study_same_folds_failures_and_no_leakage():
    study = fake_study()
    events = []
    res = run_study(study, fake_data(20, duplicates=2), runner_factory=FakeRunner,
                    progress=lambda e, **kw: events.append(e))
    r = res.results
    assert r["data"]["duplicates_removed"] == 2
    good, noise, broken = (r["pipelines"][n] for n in ("good", "noise", "broken"))
    assert broken["status"] == "failed" and "classifier exploded" in broken["error"]
    assert good["status"] == "ok" and noise["status"] == "ok"
    assert good["n_failed"] == 1 and good["failed"][0]["id"] == "b001" and good["n_evaluated"] == 59
    assert good["metrics"]["accuracy"] > noise["metrics"]["accuracy"] + 0.2
    assert [row["pipeline"] for row in r["leaderboard"]] == ["good", "noise"]
    assert set(good["ci95"]) == set(METRICS) and len(good["folds"]) == 3
    assert good["blocks"]["x"]["n_components"] == [2, 2, 2]
    assert good["top_features"][0]["feature"] in ("x.f0", "x.f1")
    assert {"selected", "splits", "pipeline", "fold", "done", "failed"} <= set(events)
    # the same folds for both pipelines (noise kept b001, good lost it)
    for a, b in zip(FakeRunner.log["good"], FakeRunner.log["noise"]):
        assert a["train_ids"] == b["train_ids"] - {"b001"}
    # no leakage: each fit saw only its training rows, and its statistics are theirs alone
    pred = res.predictions["good"]
    data = select_samples(fake_data(20, duplicates=2)).data
    X = data.table.to_numpy()
    for k, entry in enumerate(FakeRunner.log["good"], 1):
        test_ids = set(pred.loc[pred["fold"] == k, "id"])
        assert test_ids and not entry["train_ids"] & test_ids
        rows = data.samples["id"].isin(entry["train_ids"]).to_numpy()
        np.testing.assert_allclose(entry["scaler_mean"], X[rows].mean(axis=0))
        assert not np.allclose(entry["scaler_mean"], X[data.samples["id"] != "b001"].mean(axis=0))
    assert len(pred) == 59 and {"proba.a", "proba.b", "proba.c", "pred", "fold"} <= set(pred.columns)


def test_same_seed_same_numbers():
    a = run_study(fake_study(), fake_data(15), ["good", "noise"], runner_factory=FakeRunner).results
    b = run_study(fake_study(), fake_data(15), ["good", "noise"], runner_factory=FakeRunner).results
    assert _strip(copy.deepcopy(a)) == _strip(copy.deepcopy(b))
    c = run_study(fake_study(seed=1), fake_data(15), ["good"], runner_factory=FakeRunner).results
    assert c["pipelines"]["good"]["ci95"] != a["pipelines"]["good"]["ci95"]


def test_holdout_is_evaluated_after_cv():
    out = run_study(fake_study(holdout=0.2), fake_data(20), ["good"], runner_factory=FakeRunner)
    res = out.results
    h = res["pipelines"]["good"]["holdout"]
    assert h["n"] == 12 and set(h["metrics"]) == set(METRICS)
    assert res["splits"]["holdout"] == 12 and sum(res["splits"]["fold_sizes"]) == 48
    all_ids = set(fake_data(20).samples["id"]) - {"b001"}
    hold_ids = all_ids - set(out.predictions["good"]["id"])
    assert len(hold_ids) == 12
    *cv_fits, final = FakeRunner.log["good"]
    assert len(cv_fits) == 3 and all(not f["train_ids"] & hold_ids for f in cv_fits)
    assert final["train_ids"] == all_ids - hold_ids


def test_run_folds_evaluates_only_the_first_folds():
    out = run_study(fake_study(), fake_data(20), ["good"], runner_factory=FakeRunner, folds=5, run_folds=1)
    res = out.results
    assert res["splits"]["folds"] == 5 and res["splits"]["run_folds"] == 1
    assert cv_text(res["settings"]) == "fold 1 of 5 (one 80/20 split)"
    assert len(FakeRunner.log["good"]) == 1 and len(res["pipelines"]["good"]["folds"]) == 1
    pred = out.predictions["good"]
    assert res["splits"]["fold_sizes"][0] == 12 and set(pred["fold"]) == {1}
    assert len(pred) in (11, 12)  # 12 test rows, less b001 if it is one of them (its preparation fails)
    assert not FakeRunner.log["good"][0]["train_ids"] & set(pred["id"])
    assert cv_text({"folds": 5}) == "5-fold CV"
    with pytest.raises(StudyError, match="run_folds"):
        run_study(fake_study(), fake_data(20), ["good"], runner_factory=FakeRunner, folds=3, run_folds=4)


def test_run_study_rejects_unknown_pipeline_and_metric():
    with pytest.raises(StudyError, match="did you mean 'good'"):
        run_study(fake_study(), fake_data(5), ["goood"], runner_factory=FakeRunner)
    with pytest.raises(StudyError, match="unknown metric"):
        run_study(fake_study(metrics=["acuracy"]), fake_data(5), runner_factory=FakeRunner)


def test_real_engine_fits_each_fold_on_its_training_rows_only(tmp_path):
    """With the real PipelineRunner: imputer, scaler and PCA of every fold equal a fit on that
    fold's training rows alone, and differ from a fit on all rows."""
    from medfuse.fusion import BlockPreparer
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner
    from medfuse.synthetic import write_dataset

    write_dataset(tmp_path, n_per_class=8, size=32, seed=1)
    study = parse_study("tiny", {
        "dataset": {"loader": "folder", "params": {"path": "images", "masks": "masks", "table": "table.csv",
                                                   "group_column": "patient"}},
        "evaluation": {"folds": 3, "seed": 0, "bootstrap": 50},
        "blocks": {"colour": {"plugin": "colour", "pca": 0.9}},
        "pipelines": {"p": {"mask": "dataset", "blocks": ["colour"], "classifier": {"plugin": "logreg"}}},
    }, "<test>")
    host = get_host()
    data = host.create("folder", study.dataset.params).load(tmp_path)
    seen = []

    class Spy(PipelineRunner):
        def materialize(self, data):
            self.prepared = super().materialize(data)
            return self.prepared

        def fit(self, prepared, train_idx, seed):
            fitted = super().fit(prepared, train_idx, seed)
            seen.append((np.asarray(train_idx), fitted))
            return fitted

    runners = []

    def factory(st, name):
        runners.append(Spy(st, name, host=host, cache_dir=None, progress=False))
        return runners[-1]

    res = run_study(study, data, runner_factory=factory)
    assert res.results["pipelines"]["p"]["status"] == "ok" and len(seen) == 3
    P = runners[0].prepared.blocks["colour"].astype(np.float64)
    tests = [set(np.flatnonzero(res.predictions["p"]["fold"].to_numpy() == k)) for k in (1, 2, 3)]
    for k, (train, fitted) in enumerate(seen):
        assert not set(train) & tests[k]
        prep = next(b.preparer for b in fitted.blocks_ if b.name == "colour")
        alone = BlockPreparer(pca=0.9, block="colour").fit(P[train])
        everything = BlockPreparer(pca=0.9, block="colour").fit(P)
        np.testing.assert_allclose(prep.scaler_.mean_, alone.scaler_.mean_, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(prep.explained_variance_ratio_, alone.explained_variance_ratio_, rtol=1e-4)
        assert not np.allclose(prep.scaler_.mean_, everything.scaler_.mean_, rtol=1e-5, atol=1e-6)
