"""bench/choose_cnn_colour.py: the candidates reach the deep pipeline's network, and the choice rule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "choose_cnn_colour.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("choose_cnn_colour", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_candidates_set_the_options_on_the_cnn_block_and_the_deep_classifier():
    from medfuse.study import resolve_study

    bench = load_bench()
    study = resolve_study(bench.STUDY)
    for options in bench.CANDIDATES.values():
        v = bench.variant(study, options)
        deep = v.pipelines[bench.PIPELINE].classifier.params
        assert {k: deep[k] for k in options} == options and {k: v.blocks["cnn"].params[k] for k in options} == options
    assert "colour" not in study.pipelines[bench.PIPELINE].classifier.params  # the study itself is untouched


def test_each_outer_fold_picks_the_better_inner_accuracy_and_ties_go_to_none():
    bench = load_bench()
    acc = {"none": [0.97, 0.98, 0.99], "colour": [0.98, 0.98, 0.95]}
    assert bench.choose(acc, ["none", "colour"]) == ["colour", "none", "none"]
