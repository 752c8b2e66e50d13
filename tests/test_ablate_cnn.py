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
