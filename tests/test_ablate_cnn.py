"""bench/ablate_cnn.py: recipes are compared on a split that the reported fold and the test set never enter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ablate_cnn.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("ablate_cnn", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_help_and_steps_name_real_cnn_parameters():
    from medfuse_plugins.cnn import CNNClassifier

    bench = load_bench()
    assert "fold 1" in bench.__doc__ and "never" in bench.__doc__
    params = set(CNNClassifier().get_params())
    for name, (_, extra) in bench.STEPS.items():
        assert set(extra) <= params, name
    for steps in bench.DEFAULT_STEPS.values():
        assert set(steps) <= set(bench.STEPS)


@pytest.mark.slow
def test_selection_split_stays_inside_fold_1_training_part_and_off_the_test_set(data_root):
    from medfuse.splits import make_splits

    bench = load_bench()
    study, samples, dev, val, info = bench.selection_split("cxr-pneumonia", data_root, 5, 30, 0)
    names = samples["path"].map(lambda p: Path(str(p)).name)
    assert not names.str.startswith("val_").any()  # the external test set was split off before anything
    _, test = make_splits(samples.drop(columns=["split"], errors="ignore"), study.evaluation.folds,
                          study.evaluation.seed, 0.0, 1).folds()[0]
    assert not set(dev) & set(test) and not set(val) & set(test)  # the reported fold is never used
    assert not set(dev) & set(val) and len(val) > 0
    y = samples["label"].astype(str).to_numpy()
    assert max(np.unique(y[dev], return_counts=True)[1]) == 30  # the per-class cap
    assert info["n_dev"] == len(dev) and info["fold1_test_never_used"] == len(test)


def test_each_step_is_tested_paired_against_the_kept_recipe(tmp_path, monkeypatch):
    import json

    import pandas as pd

    bench = load_bench()
    samples = pd.DataFrame({"path": [f"x{i}.png" for i in range(20)], "label": ["a", "b"] * 10})
    dev, val = np.arange(10), np.arange(10, 20)
    info = {"split": "test split", "n_dev": 10, "n_val": 10, "dev_per_class": "all", "val_per_class": "all",
            "fold1_test_never_used": 5, "external_test": None}
    monkeypatch.setattr(bench, "selection_split", lambda *a: (None, samples, dev, val, info))
    monkeypatch.setattr(bench, "cnn_spec", lambda *a: ([], {"size": 32}))
    monkeypatch.setattr(bench, "load_images", lambda *a: [])
    right = {32: [True] * 6 + [False] * 4,  # baseline: 6 of 10
             96: [True] * 10}  # size96: +4, all four discordant in its favour
    monkeypatch.setattr(bench, "evaluate", lambda params, images, y: {
        "accuracy": float(np.mean(right[params["size"]])), "macro_f1": float(np.mean(right[params["size"]])),
        "train_minutes": 0.0, "train_cpu_minutes": 0.0, "epochs_run": 1, "n_params": 1,
        "correct": right[params["size"]]})
    out = tmp_path / "ablation.md"
    assert bench.main(["pbc-cells", "--steps", "size96,smoothing", "--data", str(tmp_path), "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert rows[1]["mcnemar"] == {"a_only": 4, "b_only": 0, "p": 0.125}  # size96 against the baseline
    assert rows[2]["mcnemar"] == {"a_only": 0, "b_only": 0, "p": 1.0}  # smoothing against size96, the kept recipe
    text = out.read_text()
    assert "McNemar p vs kept" in text and "| 0.125 (4 / 0) |" in text


def test_profile_is_the_baseline_and_a_gpu_profile_needs_a_gpu(tmp_path, monkeypatch):
    import json

    import medfuse.devices as devices
    import pandas as pd
    from medfuse.study import resolve_study

    bench = load_bench()
    samples = pd.DataFrame({"path": [f"x{i}.png" for i in range(4)], "label": ["a", "b"] * 2})
    info = {"split": "test split", "n_dev": 2, "n_val": 2, "dev_per_class": "all", "val_per_class": "all",
            "fold1_test_never_used": 1, "external_test": None}
    loaded = []
    monkeypatch.setattr(bench, "selection_split", lambda *a: loaded.append(1) or (
        resolve_study("pbc-cells"), samples, np.arange(2), np.arange(2, 4), info))
    monkeypatch.setattr(bench, "load_images", lambda *a: [])
    trained = []
    monkeypatch.setattr(bench, "evaluate", lambda params, images, y: trained.append(dict(params)) or {
        "accuracy": 0.5, "macro_f1": 0.5, "train_minutes": 0.0, "train_cpu_minutes": 0.0, "epochs_run": 1,
        "n_params": 1, "correct": [True, False]})
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    args = ["pbc-cells", "--steps", "epochs40", "--data", str(tmp_path), "--profile", "gpu", "--out", str(tmp_path / "a.md")]
    with pytest.raises(SystemExit, match="requires a GPU"):
        bench.main(args)
    assert not loaded  # refused before any data was read
    assert bench.main([*args, "--allow-cpu"]) == 0
    registry = resolve_study("pbc-cells").blocks["cnn"].params
    assert trained[0]["size"] == 128 and trained[0]["epochs"] == 40 and registry["size"] == 64  # the profile's recipe
    rows = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert "with profile `gpu`" in rows[0]["what"]
