"""Training a bundle: load a study's data, select samples as ``medfuse compare`` does, fit one
pipeline on all of them (optionally cross-validated first) and write the bundle
(:func:`medfuse.bundle.write_bundle`) with a manifest that says what it was trained on.

The command behind ``medfuse train``; :mod:`medfuse.bundle` holds the format (write, read, verify).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bundle import data_fingerprint, write_bundle
from .util.jsonable import to_jsonable


def _pipeline_inputs(study: Any, pipeline: str, host: Any) -> dict[str, Any]:
    """What scoring must supply besides images: dataset masks? tabular columns?"""
    masks, selectors = False, False
    for n in pipeline_members(study, pipeline):  # ensembles: the union of their members' needs
        p = study.pipelines[n]
        masks = masks or p.mask == "dataset"
        for b in p.blocks:
            rec = host.records.get(study.blocks[b].plugin)
            selectors = selectors or (rec is not None and rec.kind == "selector")
    return {"masks": masks, "table": selectors}


class _PreparedRunner:
    """A runner whose ``materialize`` returns data already prepared (no second decoding pass)."""

    def __init__(self, runner: Any, prepared: Any):
        self.runner, self.prepared = runner, prepared

    def materialize(self, data: Any) -> Any:
        return self.prepared

    def fit(self, prepared: Any, train_idx: np.ndarray, seed: int) -> Any:
        return self.runner.fit(prepared, train_idx, seed)


def cv_metrics(study: Any, pipeline: str, data: Any, prepared: Any, runner: Any) -> dict[str, Any]:
    """Cross-validated metrics of the pipeline on its training data (:mod:`medfuse.evaluation`)."""
    from .evaluation import evaluate_pipeline
    from .splits import make_splits

    ev = study.evaluation
    splits = make_splits(data.samples, ev.folds, ev.seed, 0.0)
    classes = np.array(sorted(data.samples["label"].astype(str).unique()))
    result, _ = evaluate_pipeline(_PreparedRunner(runner, prepared), data, splits, classes, seed=ev.seed,
                                  n_boot=ev.bootstrap, top_features_folds=0, name=pipeline)
    return to_jsonable({"folds": ev.folds, "grouped": splits.grouped, "n_evaluated": result["n_evaluated"],
                      "metrics": result["metrics"], "ci95": result["ci95"],
                      "fold_summary": result["fold_summary"]})


def train_bundle(study: Any, pipeline: str, data_root: str | Path | None, out: str | Path, *, jobs: int = 1,
                 cv: bool = True, max_per_class: int | None = None, cache_dir: str | Path | None = None,
                 overwrite: bool = False, progress: bool = True, log: Any = None,
                 overrides: dict[str, Any] | None = None, profile: dict[str, Any] | None = None) -> Path:
    """Train ``pipeline`` of ``study`` on all of its data and write a bundle to ``out``.

    Parameters
    ----------
    study : a :class:`~medfuse.study.Study` or a name/path for :func:`~medfuse.study.resolve_study`.
    pipeline : name of one of the study's pipelines.
    data_root : the data root (``--data``; default ``$MEDFUSE_DATA``, see :mod:`medfuse.datapath`).
    out : bundle folder to write.
    jobs : parallel jobs for loading and per-image preparation.
    cv : also record cross-validated metrics (study folds and seed) in the manifest.
    max_per_class : cap samples per class (default: the study's ``evaluation.max_per_class``).
    cache_dir : on-disk cache of prepared blocks (see :class:`medfuse.pipeline.PipelineRunner`).
    log : callable taking one line of text (progress notes); silent when ``None``.
    overrides : ``{block: {param: value}}`` already applied to ``study`` (``--set``); recorded in the
        manifest as ``study.overrides``.
    profile : the record of the study's applied profile (``--profile``; default: ``study.profile``'s),
        kept in the manifest as ``study.profile``; absent when no profile is applied.

    Samples are selected like ``medfuse compare`` does (exact duplicates dropped when
    ``evaluation.dedupe``, per-class cap), then the pipeline is fitted on all of them.
    """
    from .datapath import resolve_data_root
    from .host import get_host
    from .loading import load_with_reader
    from .pipeline import PipelineRunner
    from .splits import select_samples
    from .study import check_plugins, resolve_study

    say = log or (lambda line: None)
    host = get_host()
    if isinstance(study, str):
        study = resolve_study(study)
    if profile is None and study.profile is not None:
        profile = study.profile.record()
    check_plugins(study, host)
    root = resolve_data_root(data_root)
    ev = study.evaluation
    runner = PipelineRunner(study, pipeline, host=host, cache_dir=Path(cache_dir) if cache_dir else None,
                            jobs=jobs, progress=progress)
    loader = host.create(study.dataset.loader, study.dataset.params, kind="loader")
    data = load_with_reader(loader, study.reader, root, jobs=jobs, progress=progress)
    cap = ev.max_per_class if max_per_class is None else max_per_class
    selection = select_samples(data, dedupe=ev.dedupe, max_per_class=cap, seed=ev.seed)
    data = selection.data
    say(f"loaded {selection.n_loaded} samples with {study.dataset.loader!r} from {root}; "
        f"{len(data)} selected (duplicates removed: {selection.duplicates_removed}, cap: {cap or 'none'})")
    prepared = runner.materialize(data)
    if len(prepared.failed):
        say(f"{len(prepared.failed)} sample(s) could not be prepared and were left out")
    metrics, note = None, "skipped (--no-cv)"
    if cv:
        metrics = cv_metrics(study, pipeline, data, prepared, runner)
        note = f"{ev.folds}-fold cross-validation on the training data (seed {ev.seed})"
        say(f"CV: {', '.join(f'{k}={v:.3f}' for k, v in metrics['metrics'].items() if isinstance(v, float))}")
    fitted = runner.fit(prepared, np.arange(len(prepared.y)), seed=ev.seed)
    say(f"fitted {pipeline!r} on {len(prepared.y)} samples in {getattr(fitted, 'fit_seconds_', float('nan')):.1f} s")
    needs = _pipeline_inputs(study, pipeline, host)
    table_columns = [str(c) for c in prepared.table.columns] if needs["table"] and prepared.table is not None else []
    labels = pd.Series(prepared.y).astype(str)
    manifest = {
        "study": {"name": study.name, "source": study.source, "pipeline": pipeline,
                  "description": study.description, "dataset": study.dataset,
                  "evaluation": study.evaluation, "pipelines": {
                      n: study.pipelines[n] for n in sorted(pipeline_members(study, pipeline))},
                  "blocks": {b: study.blocks[b] for n in pipeline_members(study, pipeline)
                             for b in study.pipelines[n].blocks},
                  "overrides": overrides or {},
                  **({"profile": profile} if profile else {})},
        "inputs": {"masks": needs["masks"], "table_columns": table_columns, "reader": study.reader.to_dict(),
                   **({"objects": rule} if (rule := loader.crop_rule()) is not None else {})},
        "training_data": {
            "loader": study.dataset.loader, "params": study.dataset.params, "root": str(root),
            "selection": {k: v for k, v in selection.to_dict().items() if k != "duplicate_groups"},
            "n_samples": int(len(prepared.y)), "n_failed": int(len(prepared.failed)),
            "class_counts": {str(k): int(v) for k, v in labels.value_counts().sort_index().items()},
            "fingerprint": data_fingerprint(prepared.samples["sha1"].astype(str), labels),
            "fingerprint_method": "sha1 of the sorted '<sample sha1> <label>' lines",
        },
        "cv_metrics": metrics,
        "cv_note": note,
        "seed": int(ev.seed),
    }
    return write_bundle(fitted, out, manifest=manifest, host=host, overwrite=overwrite)


def pipeline_members(study: Any, pipeline: str) -> set[str]:
    """``pipeline`` and, for an ensemble, every pipeline it names (transitively)."""
    names, stack = set(), [pipeline]
    while stack:
        m = stack.pop()
        if m not in names:
            names.add(m)
            stack.extend(study.pipelines[m].members)
    return names
