"""One comparison run, end to end: load a study's data, evaluate its pipelines on shared folds
(:func:`medfuse.evaluation.run_study`), write the report folder (:func:`medfuse.report.write_report`)
and record the run in the run index (:mod:`medfuse.runindex`).

The one body behind ``medfuse compare`` / ``medfuse run`` / ``medfuse demo`` and the notebook
function :func:`medfuse.compare`; the command line adds only its display, summary and exit codes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .evaluation import StudyResult
from .study import Study

Progress = Callable[..., None]


def _noop(event: str, **info: Any) -> None:
    return None


@dataclass
class CompareRun:
    """What :func:`compare_study` returns: the evaluation, the report files by role
    (``json``, ``md``, ``html``) and the report folder."""

    result: StudyResult
    paths: dict[str, Path]
    out_dir: Path


def default_out_dir(study_name: str) -> Path:
    """``runs/<study>-<YYYYmmdd-HHMMSS>``, relative to the working folder (where ``medfuse runs`` looks)."""
    return Path("runs") / f"{study_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def add_paths(predictions: dict[str, Any], *sample_tables: Any) -> None:
    """Give each prediction frame a ``path`` column (after ``id``): the image of each sample id in
    ``sample_tables`` (loaders' ``samples`` frames; ``None`` for table-only samples)."""
    where: dict[str, Any] = {}
    for samples in sample_tables:
        if samples is not None and "path" in samples.columns:
            where.update(zip(samples["id"].astype(str), samples["path"]))
    if not where:
        return
    for frame in predictions.values():
        if "path" not in frame.columns and "id" in frame.columns:
            frame.insert(1, "path", frame["id"].astype(str).map(where))


def compare_study(study: Study, pipelines: list[str] | None, root: Path, out: Path, *, host: Any,
                  jobs: int = 1, cache: Path | None = None, folds: int | None = None,
                  run_folds: int | None = None, only_folds: str | Sequence[int] | None = None,
                  max_per_class: int | None = None, bootstrap: int | None = None,
                  shortcuts: bool | None = None, meta: dict[str, Any] | None = None,
                  progress: Progress = _noop, running: contextlib.AbstractContextManager | None = None,
                  note: Callable[[str], None] | None = None, show_loading: bool = False,
                  record: bool = True) -> CompareRun:
    """Load ``study``'s data from ``root``, evaluate ``pipelines`` (default: all) and write the
    report folder ``out`` (created, probed and locked before any work).

    ``progress(event, **info)`` gets ``loading``/``loaded`` (and ``test_loading``/``test_loaded``)
    and every :func:`~medfuse.evaluation.run_study` event; ``running`` is entered around the
    evaluation (a live display); ``note`` receives output-lock notes; ``show_loading``: a progress
    bar while the loader reads files. ``meta`` is recorded in ``results["settings"]`` next to the
    data root, cache, jobs and report folder. ``record``: append the run to the run index.
    ``run_folds`` (the first N) or ``only_folds`` (fold numbers from 1) choose the folds evaluated;
    checked here, before any work.
    """
    from .evaluation import run_study
    from .loading import load_with_reader
    from .outputs import guarded_output
    from .report import write_report
    from .splits import fold_choice

    fold_choice(folds or study.evaluation.folds, run_folds, only_folds)
    t0 = time.perf_counter()
    with guarded_output(out, folder=True, create=True, note=note):
        progress("loading", study=study.name, loader=study.dataset.loader, root=str(root))
        t_load = time.perf_counter()
        loader = host.create(study.dataset.loader, study.dataset.params, kind="loader")
        data = load_with_reader(loader, study.reader, root, jobs=jobs, progress=show_loading)
        progress("loaded", n=len(data), seconds=time.perf_counter() - t_load)
        test_data = None
        if study.test is not None and study.test.loader is not None:
            progress("test_loading", loader=study.test.loader)
            test_loader = host.create(study.test.loader, study.test.params, kind="loader")
            test_data = load_with_reader(test_loader, study.reader, root, jobs=jobs, progress=show_loading)
            progress("test_loaded", n=len(test_data))
        load_seconds = time.perf_counter() - t_load

        settings = {"data_root": str(root), "cache_dir": str(cache) if cache else None, "jobs": jobs,
                    "out_dir": str(out), **(meta or {})}
        if study.profile is not None and "profile" not in settings:  # the library path records it too
            settings["profile"] = study.profile.record()
        from .evaluation import default_runner_factory

        with running or contextlib.nullcontext():
            result = run_study(study, data, pipelines,
                               runner_factory=default_runner_factory(host, cache, jobs, progress=progress),
                               folds=folds, run_folds=run_folds, only_folds=only_folds,
                               max_per_class=max_per_class, n_boot=bootstrap,
                               progress=progress, meta=settings, test_data=test_data, shortcuts=shortcuts,
                               jobs=jobs)
        result.results["timing"]["load_seconds"] = load_seconds
        result.results["timing"]["command_seconds"] = time.perf_counter() - t0
        tables = (data.samples, test_data.samples if test_data is not None else None)
        add_paths(result.predictions, *tables)
        add_paths(result.test_predictions, *tables)
        paths = write_report(result, out)
    if record:
        from .runindex import record_run

        record_run(out, result.results, note=note)
    return CompareRun(result, paths, out)


def command_line() -> str | None:
    """The ``medfuse ...`` command line of this process, when it is the medfuse command."""
    return " ".join(["medfuse", *sys.argv[1:]]) if sys.argv and "medfuse" in sys.argv[0] else None
