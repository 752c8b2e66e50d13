"""The report's diagnostics: learning curves, misclassified gallery, saliency overlays, raw-feature
importance; Jinja2 templates, self-contained HTML, phone width and the size cap."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
from medfuse.contracts import SampleTable
from medfuse.evaluation import run_study
from medfuse.pipeline import PipelineRunner
from medfuse.report import render_html, render_markdown, to_jsonable, write_report
from PIL import Image
from test_evaluation import FakeFitted, FakeRunner, fake_data, fake_study
from test_pipeline import HOST, study_of, write_samples

EPOCHS = 4


class HistoryFitted(FakeFitted):
    """A fold fit that trained a network (``training_histories``) and offers saliency."""

    def training_histories(self):
        loss = list(np.linspace(1.0, 0.4, EPOCHS))
        return {"classifier": {"plugin": "tiny_net", "loss": loss, "val_loss": [v + 0.1 for v in loss],
                               "accuracy": list(np.linspace(0.5, 0.9, EPOCHS)),
                               "val_accuracy": list(np.linspace(0.4, 0.8, EPOCHS)), "epochs_run": EPOCHS}}

    def saliency(self, prepared, idx, targets):
        n = len(idx)
        maps = np.zeros((n, 8, 8), np.float32)
        maps[:, 2:4, 2:4] = 1.0
        return {"maps": maps, "images": np.full((n, 8, 8, 3), 128, np.uint8), "plugin": "tiny_net",
                "slot": "classifier", "method": "Grad-CAM"}


class NetRunner(FakeRunner):
    def fit(self, prepared, train_idx, seed):
        f = super().fit(prepared, train_idx, seed)
        return HistoryFitted(f.classes_, f.model, f.scaler, f.block_reports_) if self.pipeline == "good" else f


def _with_images(data: SampleTable, root) -> SampleTable:
    """The fake samples' paths made real: a small PNG per sample (noise, so JPEG cannot shrink it much)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    samples = data.samples.copy()
    for i, sid in enumerate(samples["id"]):
        path = root / f"{sid}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        samples.loc[i, "path"] = str(path)
    return SampleTable(samples, data.table)


@pytest.fixture(scope="module")
def net_result(tmp_path_factory):
    data = _with_images(fake_data(20, patients=5), tmp_path_factory.mktemp("imgs"))
    return run_study(fake_study(), data, ["good", "noise"], runner_factory=NetRunner, n_boot=50)


def test_learning_curves_and_gallery_are_shown_when_collected_and_left_out_otherwise(net_result, tmp_path):
    res = net_result.results["pipelines"]
    curves = res["good"]["learning_curves"]["classifier"]
    assert [c["fold"] for c in curves] == [1, 2, 3] and len(curves[0]["val_accuracy"]) == EPOCHS
    assert res["noise"]["learning_curves"] is None  # no network trained there
    mis = res["good"]["misclassified"]
    assert mis["n_wrong"] > 0 and mis["samples"][0]["path"].endswith(".png")
    probs = [g["p_pred"] for g in mis["samples"]]
    assert probs == sorted(probs, reverse=True)  # most confident wrong first
    sal = res["good"]["saliency"]
    assert sal["fold"] == 1 and {s["correct"] for s in sal["samples"]} == {True, False}
    assert res["noise"]["saliency"] is None

    paths = write_report(net_result, tmp_path / "rep")
    page = paths["html"].read_text()
    md = paths["md"].read_text()
    for text in (page, md):
        assert "Learning curves" in text and "Where it goes wrong" in text and "Grad-CAM" in text
    assert page.count("<h3>Learning curves</h3>") == 1  # only the pipeline that trained a network
    assert 'alt="good classifier learning curves"' in page
    assert (tmp_path / "rep" / "figures" / "good-learning-classifier.png").is_file()
    # gallery: one inline JPEG per shown misclassified sample, with truth, prediction and probability
    first = mis["samples"][0]
    assert f'alt="{first["id"]}"' in page and f"pred {first['pred']} ({first['p_pred']:.3f})" in page
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) >= min(24, mis["n_wrong"])
    assert "figures/gallery/good-wrong-0.jpg" in md and (tmp_path / "rep/figures/gallery/good-wrong-0.jpg").is_file()

    # the same results without the diagnostics: their sections are left out, not shown empty
    results = to_jsonable(copy.deepcopy(net_result.results))
    for p in results["pipelines"].values():
        for key in ("learning_curves", "misclassified", "saliency", "raw_importance"):
            p.pop(key, None)
    page, md = render_html(results, {}), render_markdown(results, {})
    for text in (page, md):
        assert "Learning curves" not in text and "Where it goes wrong" not in text and "Grad-CAM" not in text
        assert "raw features" not in text


def test_html_is_self_contained_and_phone_readable(net_result, tmp_path):
    page = write_report(net_result, tmp_path / "rep")["html"].read_text()
    assert not re.search(r"\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I)  # no URL of any host
    assert all(s.startswith("data:image/") for s in re.findall(r'(?:src|href)="([^"#][^"]*)"', page))
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert "name='viewport' content='width=device-width" in page
    assert "@media (max-width:600px)" in page and ".scroll{overflow-x:auto" in page
    # every table sits in a horizontally scrolling box
    assert page.count("<table>") == page.count("<div class=\"scroll\"><table>") > 5


def test_report_stays_under_the_size_cap_with_many_pipelines(net_result, tmp_path, monkeypatch):
    import medfuse.report

    monkeypatch.setattr(medfuse.report, "make_figures", lambda results: {})  # the gallery is what grows here
    results = to_jsonable(copy.deepcopy(net_result.results))
    for i in range(20):  # 22 pipelines, each with a full gallery of (hard to compress) noise thumbnails
        results["pipelines"][f"copy{i}"] = copy.deepcopy(results["pipelines"]["good"])
    full = write_report(results, tmp_path / "big", max_html_bytes=100_000_000)["html"].stat().st_size
    assert full > 1_000_000  # 22 x 24 thumbnails of 96 px
    cap = full // 3
    capped = write_report(results, tmp_path / "small", max_html_bytes=cap)
    assert capped["html"].stat().st_size <= cap
    again = json.loads(capped["json"].read_text())
    assert any("gallery reduced" in w for w in again["report_warnings"])
    assert "Report warnings" in capped["html"].read_text() and "good-wrong-0.jpg" in capped["md"].read_text()


@pytest.fixture(scope="module")
def pca_study(tmp_path_factory):
    """The label depends on table column ``t`` only; both blocks go through PCA."""
    rng = np.random.default_rng(3)
    n = 90
    t = rng.uniform(-1, 1, n)
    y = np.where(t > 0, "hi", "lo")
    samples = write_samples(tmp_path_factory.mktemp("raw"), 110 + 60 * rng.uniform(-1, 1, n), y)
    table = pd.DataFrame({"t": t, **{f"n{j}": rng.normal(0, 1, n) for j in range(4)}})
    blocks = {"stats": {"plugin": "tiny_stats", "pca": 2}, "table": {"plugin": "tiny_columns", "pca": 2}}
    study = study_of({"p": {"blocks": ["stats", "table"], "classifier": {"plugin": "logreg"}}}, blocks)
    return study, SampleTable(samples, table)


def test_raw_importance_names_raw_columns_not_pca_components(pca_study):
    study, data = pca_study
    runner = PipelineRunner(study, "p", HOST, progress=False, ood_checks=False)
    prepared = runner.materialize(data)
    fitted = runner.fit(prepared, np.arange(0, len(prepared), 2), seed=0)
    assert any(".pc" in f for f in fitted.feature_names_)  # the classifier sees PCA components
    raw = fitted.raw_importance(prepared, np.arange(1, len(prepared), 2))
    assert set(raw["feature"]) == {f"stats.{s}_{c}" for s in ("mean", "std") for c in "rgb"} | {
        "table.t", *[f"table.n{j}" for j in range(4)]}
    assert raw.sort_values("importance").iloc[-1]["feature"] == "table.t"

    from medfuse.evaluation import default_runner_factory

    res = run_study(study, data, runner_factory=default_runner_factory(HOST), n_boot=20,
                    shortcuts=False).results["pipelines"]["p"]
    imp = res["raw_importance"]
    assert imp["folds"] == 5 and imp["features"][0]["feature"] == "table.t"
    assert imp["features"][0]["folds"] == 5 and not any(".pc" in f["feature"] for f in imp["features"])
    assert imp["block_share"]["table"] > 0.8
