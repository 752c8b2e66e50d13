"""A study's samples and outer folds, rebuilt exactly as ``medfuse compare`` builds them (for the
bench scripts that choose something on inner folds of each outer training part)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def outer_folds(study_name: str, data_root: str | Path, jobs: int) -> tuple[Any, Any, Any, Any]:
    """``(study, host, kept, outer)``: the resolved study, the plugin host, the samples that the
    study's selection keeps (duplicates dropped, per-class cap) and its outer splits (seeded)."""
    from medfuse.host import get_host
    from medfuse.loading import load_with_reader
    from medfuse.splits import make_splits, select_samples
    from medfuse.study import resolve_study

    study = resolve_study(study_name)
    ev = study.evaluation
    host = get_host()
    loader = host.create(study.dataset.loader, study.dataset.params, kind="loader")
    data = load_with_reader(loader, study.reader, str(data_root), jobs=jobs)
    kept = select_samples(data, dedupe=ev.dedupe, max_per_class=ev.max_per_class, seed=ev.seed).data
    return study, host, kept, make_splits(kept.samples, ev.folds, ev.seed, ev.holdout)


def candidate_runners(variants: dict[str, Any], pipeline: str, kept: Any, outer: Any, host: Any,
                      cache_dir: Path, jobs: int) -> tuple[dict[str, Any], dict[str, Any], list]:
    """``(runners, prepared, folds)``: for each candidate (name -> study variant), the runner of
    ``pipeline`` and its materialised samples, checked to hold the same rows for every candidate
    (a transform that fails on some images would change them), and the outer folds as row indices."""
    import numpy as np
    from medfuse.evaluation import default_runner_factory
    from medfuse.splits import rows_by_fold

    runners, prepared, folds, first_ids = {}, {}, None, None
    for name, variant in variants.items():
        t = time.perf_counter()
        runners[name] = default_runner_factory(host=host, cache_dir=cache_dir, jobs=jobs)(variant, pipeline)
        prep = prepared[name] = runners[name].materialize(kept)
        ids = prep.samples["id"].astype(str).to_numpy()
        if folds is None:
            folds, first_ids = rows_by_fold(outer, ids)[0], ids
        elif not np.array_equal(ids, first_ids):
            sys.exit(f"{name}: other rows prepared than for {next(iter(variants))} (a transform failed on some images)")
        print(f"{name}: materialised in {time.perf_counter() - t:.0f} s", flush=True)
    return runners, prepared, folds
