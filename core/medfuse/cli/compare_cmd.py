"""`medfuse compare` and `medfuse run`: evaluate a study's pipelines on shared folds and write a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_CODES,
    EXIT_FAILURE,
    JOBS,
    PartialFailure,
    apply_block_sets,
    echo_json,
    profile_flags,
    resolve_jobs,
    select_profile,
    set_option,
    verbosity,
)
from .common import console as make_console


def _options(fn):
    """Options shared by ``compare`` and ``run``."""
    opts = [
        click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
                     help="Data root the study's paths are relative to (default: $MEDFUSE_DATA)."),
        click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default=None,
                     help="Report folder (default: runs/<study>-<timestamp>/)."),
        click.option("--jobs", "-j", type=JOBS, default=None,
                     help="Parallel processes for loading and per-image work (-1 = every core; "
                          "default: evaluation.jobs)."),
        click.option("--folds", type=click.IntRange(2), default=None, help="Override evaluation.folds."),
        click.option("--run-folds", type=click.IntRange(1), default=None,
                     help="Evaluate only the first N folds (--folds 5 --run-folds 1: one 80/20 split; default: all)."),
        click.option("--only-folds", default=None, metavar="LIST",
                     help="Evaluate only these folds, numbered from 1: 2, 2-5 or 1,3 (e.g. leave out a fold on "
                          "which a recipe was chosen); the folds are the same as without it. Not with --run-folds."),
        click.option("--max-per-class", type=click.IntRange(0), default=None,
                     help="Cap samples per class for a quick run (0 = all; default: evaluation.max_per_class)."),
        click.option("--bootstrap", type=click.IntRange(0), default=None,
                     help="Bootstrap resamples for the 95% intervals (default: evaluation.bootstrap)."),
        click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
                     help="Feature-block cache folder (default: $MEDFUSE_CACHE or ~/.cache/medfuse/blocks)."),
        click.option("--no-cache", is_flag=True, help="Compute every block afresh, read and write no cache."),
        click.option("--no-shortcuts", is_flag=True,
                     help="Skip the shortcut baselines (size/format/intensity logistic regression; "
                          "default: evaluation.shortcuts)."),
        set_option("BLOCK"),
        profile_flags(),
        click.option("--fail-on-error", is_flag=True,
                     help=f"Exit with code {PartialFailure.exit_code} when any pipeline failed (default: exit 0 "
                          "when at least one succeeded)."),
        click.option("--mlflow", "mlflow_uri", default=None, metavar="URI",
                     help="Also log parameters, metrics with intervals, figures and the report to this MLflow "
                          "tracking store (a folder such as ./mlruns, or a server URI); needs medfuse[mlflow]."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the summary as JSON on stdout (keys in docs/cli.md); progress stays on stderr."),
        verbosity,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.command("compare")
@click.argument("study")
@click.option("--pipelines", "-p", default=None, help="Comma-separated pipelines to run (default: all of the study).")
@_options
def compare(study: str, pipelines: str | None, **kwargs: Any) -> None:
    """Run STUDY's pipelines on the same folds and write one comparison report.

    STUDY is a registry name (`medfuse validate` lists them), FILE.toml or FILE.toml:NAME.
    The report folder holds report.html (self-contained), report.md, results.json (every
    number), figures/ and predictions/ (out-of-fold). Exit code 1 when every pipeline failed;
    with --fail-on-error, 3 when some did. --set BLOCK.PARAM=VALUE changes a block's parameter
    for this run (recorded in results.json under settings.overrides). --profile NAME applies the
    study's profile NAME first (e.g. a larger recipe for a GPU; recorded under settings.profile and
    at the top of the report); without it the study runs as written.
    The report folder is created, probed for writability and locked (OUT.lock) before any work;
    each report file is written atomically.

    \b
    Example:
      medfuse compare pbc-cells --data /data --pipelines classical,deep,fused --folds 5
    """
    names = [p.strip() for p in pipelines.split(",") if p.strip()] if pipelines else None
    execute(study, names, **kwargs)


@click.command("run")
@click.argument("study")
@click.option("--pipeline", "-p", required=True, help="The one pipeline to run.")
@_options
def run(study: str, pipeline: str, **kwargs: Any) -> None:
    """Run one pipeline of STUDY (cross-validated) and write its report; like `compare --pipelines P`."""
    execute(study, [pipeline], **kwargs)


# ---- implementation ---------------------------------------------------------------------------

def execute(study_ref: str, pipelines: list[str] | None, data_root: str | None = None, out_dir: str | None = None,
            jobs: int | None = None, folds: int | None = None, run_folds: int | None = None,
            only_folds: str | None = None, max_per_class: int | None = None, bootstrap: int | None = None, cache_dir: str | None = None,
            no_cache: bool = False, quiet: bool = False, no_shortcuts: bool = False, sets: tuple[str, ...] = (),
            fail_on_error: bool = False, as_json: bool = False, verbose: bool = False,
            mlflow_uri: str | None = None, profile: str | None = None, allow_cpu: bool = False) -> dict[str, Any]:
    """The body of both commands; returns the results dict (exits 1 when every pipeline failed, 3 with
    ``fail_on_error`` when any did)."""
    from ..errors import MedfuseError

    err = make_console(stderr=True, quiet=quiet)
    try:
        return _execute(study_ref, pipelines, data_root, out_dir, jobs, folds, run_folds, max_per_class, bootstrap,
                        cache_dir, no_cache, quiet, err, no_shortcuts, sets, fail_on_error, as_json, mlflow_uri,
                        only_folds, profile, allow_cpu)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None


def _execute(study_ref, pipelines, data_root, out_dir, jobs, folds, run_folds, max_per_class, bootstrap, cache_dir,
             no_cache, quiet, err, no_shortcuts=False, sets=(), fail_on_error=False, as_json=False,
             mlflow_uri=None, only_folds=None, profile=None, allow_cpu=False) -> dict[str, Any]:
    from ..cache import default_cache_dir
    from ..datapath import resolve_data_root
    from ..host import get_host
    from ..study import check_plugins, resolve_study
    from ..studyrun import command_line, compare_study, default_out_dir

    if mlflow_uri:
        from ..mlflowlog import check_available

        check_available()  # before any work
    host = get_host()
    study, profile_record = select_profile(resolve_study(study_ref), profile, allow_cpu, host)
    study, overrides = apply_block_sets(study, sets, host)
    check_plugins(study, host)
    if pipelines:
        unknown = [p for p in pipelines if p not in study.pipelines]
        if unknown:
            from ..errors import did_you_mean

            raise click.UsageError(f"study {study.name!r} has no pipeline {unknown[0]!r}"
                                   f"{did_you_mean(unknown[0], study.pipelines)}; defined: {', '.join(study.pipelines)}")
    root = resolve_data_root(data_root)
    jobs = resolve_jobs(jobs, study.evaluation.jobs)
    cache = None if no_cache else Path(cache_dir) if cache_dir else default_cache_dir()
    out = Path(out_dir) if out_dir else default_out_dir(study.name)

    # before any work: the report folder is created and probed, and locked (<out>.lock)
    display = _Display(err, quiet)
    run = compare_study(study, pipelines, root, out, host=host, jobs=jobs, cache=cache, folds=folds,
                        run_folds=run_folds, only_folds=only_folds, max_per_class=max_per_class,
                        bootstrap=bootstrap, shortcuts=False if no_shortcuts else None,
                        meta={"command": command_line(), "overrides": overrides,
                              **({"profile": profile_record} if profile_record else {})}, progress=display.event,
                        running=display, note=lambda line: err.print(line, markup=False, highlight=False),
                        show_loading=not quiet and sys.stderr.isatty())
    result, paths = run.result, run.paths
    if mlflow_uri and result.ok:
        from ..mlflowlog import log_run

        run_id = log_run(mlflow_uri, result.results, run.out_dir)
        err.print(f"mlflow: run {run_id} in {mlflow_uri}", markup=False, highlight=False)
    failed = [n for n, p in result.results["pipelines"].items() if p["status"] != "ok"]
    code = EXIT_FAILURE if not result.ok else PartialFailure.exit_code if failed and fail_on_error else 0
    if as_json:
        echo_json(json_summary(result.results, paths, code))
    else:
        _print_summary(result.results, paths, quiet)
    if not result.ok:
        raise click.ClickException("every pipeline failed (errors above and in the report)")
    if code:
        raise PartialFailure(f"{len(failed)} pipeline(s) failed: {', '.join(failed)} (--fail-on-error)")
    return result.results


class _Display:
    """Live progress on a terminal (rich), plain lines otherwise; fed by run_study events."""

    def __init__(self, console: Any, quiet: bool):
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.progress = None
        self.overall = None
        self.images = None
        self.folds = 1
        self.total = 1

    def __enter__(self) -> _Display:
        if self.live:
            from rich.progress import TimeElapsedColumn

            from ..util.progress import new_progress

            self.progress = new_progress(TimeElapsedColumn(), console=self.console, transient=False)
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        elif not self.quiet:
            self.console.print(text)

    def event(self, event: str, **info: Any) -> None:
        p = self.progress
        if event == "loading":
            self._say(f"[bold]{info['study']}[/]: loading data with [cyan]{info['loader']}[/] from {info['root']}")
        elif event == "loaded":
            self._say(f"  {info['n']} samples loaded in {info['seconds']:.1f} s")
        elif event == "test_loading":
            self._say(f"  test set: loading with [cyan]{info['loader']}[/]")
        elif event == "test_loaded":
            self._say(f"  {info['n']} test samples loaded")
        elif event == "selected":
            msg = f"  {info['n_selected']} samples evaluated"
            if info.get("duplicates_removed"):
                msg += f" ({info['duplicates_removed']} exact duplicates removed)"
            if info.get("capped"):
                msg += f" (capped: {sum(info['capped'].values())} removed)"
            self._say(msg)
        elif event == "test_selected":
            msg = f"  external test set ({info['source']}): {info['n_selected']} samples"
            if info.get("duplicates_of_development"):
                msg += (f" ([yellow]{info['duplicates_of_development']} duplicates of development images "
                        "dropped[/])")
            self._say(msg)
        elif event == "tested":
            if "metrics" in info:
                m, g = info["metrics"], info["gap"]
                self._say(f"  {info['pipeline']} test ({info['n']}): accuracy {m['accuracy']:.3f} "
                          f"(gap to CV {g['accuracy']:+.3f})"
                          + (f", {info['n_failed']} could not be prepared" if info.get("n_failed") else ""))
            else:
                self._say(f"  [red]{info['pipeline']}: no test sample could be prepared[/]")
        elif event == "shortcuts":
            self._say("[bold]shortcut baselines[/] (logistic regression on size / file / intensity)")
        elif event == "shortcut":
            test = f", test {info['test_accuracy']:.3f}" if info.get("test_accuracy") is not None else ""
            self._say(f"  {info['baseline']}: accuracy {info['accuracy']:.3f}{test}")
        elif event == "splits":
            from ..splits import cv_text

            self.folds = info["run_folds"]
            leak = "no leakage" if info["leakage"]["ok"] else "[red]LEAKAGE[/]"
            hold = ""
            if info.get("holdout"):
                kind = "external test set" if info["holdout_method"].startswith("external") else "held-out"
                hold = f", {kind} {info['holdout']}"
            self._say(f"  {info['method']}, {cv_text(info)}{hold}; {leak}")
            for w in info.get("warnings", []):
                self._say(f"  [yellow]warning:[/] {w}")
        elif event == "pipeline":
            self.total = info["total"]
            if p is not None:
                if self.overall is None:
                    self.overall = p.add_task("all pipelines", total=info["total"] * (self.folds + 1))
                p.update(self.overall, description=f"[bold]{info['pipeline']}[/] ({info['index'] + 1}/{info['total']})")
            else:
                self._say(f"[bold]{info['pipeline']}[/] ({info['index'] + 1}/{info['total']})")
        elif event == "prepare" and p is not None:
            if self.images is None:
                self.images = p.add_task(info["what"], total=info["total"])
            p.update(self.images, description=f"  {info['what']}", completed=info["done"], total=info["total"])
        elif event == "materialized":
            if p is not None:
                if self.images is not None:
                    p.remove_task(self.images)
                    self.images = None
                p.advance(self.overall)
            failed = f", {info['failed']} could not be prepared" if info.get("failed") else ""
            self._say(f"  {info['pipeline']}: {info['n']} samples prepared in {info['seconds']:.1f} s{failed}")
            for w in info.get("warnings", []):
                self._say(f"  [yellow]warning:[/] {w}")
        elif event == "fold":
            if p is not None:
                p.advance(self.overall)
            m = info["metrics"]
            self._say(f"  {info['pipeline']} fold {info['fold']}/{info['folds']}: accuracy {m['accuracy']:.3f}, "
                      f"balanced {m['balanced_accuracy']:.3f}")
        elif event == "done":
            m = info["metrics"]
            self._say(f"  [green]{info['pipeline']}[/]: accuracy {m['accuracy']:.3f}, "
                      f"balanced accuracy {m['balanced_accuracy']:.3f}, macro F1 {m['f1_macro']:.3f}")
        elif event == "failed":
            if p is not None and self.overall is not None:
                task = p.tasks[[t.id for t in p.tasks].index(self.overall)]
                done_pipes = -(-int(task.completed) // (self.folds + 1))
                p.update(self.overall, completed=max(task.completed, done_pipes * (self.folds + 1)))
            if self.images is not None and p is not None:
                p.remove_task(self.images)
                self.images = None
            self._say(f"  [red]{info['pipeline']} failed:[/] {info['error']}")


def _print_shortcuts(out: Any, results: dict[str, Any]) -> None:
    """The shortcut-baseline table and, when the study is flagged, its warning lines."""
    from rich.table import Table

    from ..report import shortcut_rows

    sc = results.get("shortcuts") or {}
    if sc.get("status") == "ok":
        header, rows = shortcut_rows(results)
        table = Table(title="shortcut baselines (logistic regression on what the acquisition leaks; "
                            f"chance {sc['chance']:.3f})")
        for h in header:
            table.add_column(h, justify="left" if h in ("baseline", "features") else "right")
        for r in rows:
            table.add_row(*r)
        out.print(table)
    elif sc.get("status") in ("skipped", "failed"):
        out.print(f"shortcut baselines {sc['status']}: {sc.get('reason') or sc.get('error')}")
    for w in sc.get("warnings") or []:
        out.print(f"[bold red]SHORTCUT WARNING:[/] {w}")


def paired_line(results: dict[str, Any]) -> str | None:
    """One line: each pipeline against the best (Δ accuracy with its paired interval, Holm-adjusted
    McNemar p, and whether it is significantly worse)."""
    from ..util.formatting import fmt_interval, fmt_p, fmt_signed

    sec = (results.get("paired") or {}).get("cv") or {}
    if sec.get("status") != "ok":
        return None
    parts = []
    for p in sec["pairs"]:
        if p["a"] != sec["best"] or not p.get("mcnemar"):
            continue
        verdict = "≈ best" if p["b"] in sec["not_worse_than_best"] else "worse"
        ci = (p.get("ci95") or {}).get("accuracy")
        ci_text = fmt_interval([-ci[1], -ci[0]]) if ci and None not in ci else ""
        parts.append(f"{p['b']} {fmt_signed(-p['diff']['accuracy'])} {ci_text}".rstrip()
                     + f" p={fmt_p(p['p_holm'])} {verdict}")
    return (f"paired vs best {sec['best']} (Δ accuracy, 95% paired bootstrap; McNemar exact, Holm): "
            + "; ".join(parts)) if parts else None


def _print_paired(out: Any, results: dict[str, Any]) -> None:
    line = paired_line(results)
    if line:
        out.print(line, markup=False, highlight=False)


TERMINAL_LEAVES_OUT = ("Brier", "ECE", "predict img/s")
"""Columns of :func:`medfuse.report.leaderboard_rows` that the terminal summary leaves to the report."""


def _print_summary(results: dict[str, Any], paths: dict[str, Path], quiet: bool) -> None:
    from rich.table import Table

    from ..report import leaderboard_rows
    from ..splits import cv_text

    out = make_console()
    test = results["data"].get("test")
    table = Table(title=f"{results['study']['name']}: {cv_text(results['settings'])}, "
                        f"{results['data']['n_selected']} samples"
                        + (f"; external test set {test['n_selected']} samples ({test['source']})" if test else "")
                        + (f"; profile {prof['name']}" if (prof := results["settings"].get("profile")) else "")
                        + " (95% bootstrap intervals)")
    header, rows = leaderboard_rows(results)
    keep = [i for i, h in enumerate(header) if h not in TERMINAL_LEAVES_OUT]
    for i in keep:
        table.add_column(header[i], justify="left" if header[i] == "pipeline" else "right",
                         style="bold" if header[i] == "pipeline" else None)
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    for name, p in results["pipelines"].items():
        if p["status"] != "ok":
            error = p["error"] if not out.is_terminal else p["error"][:80]
            table.add_row("–", f"[red]{name}[/]", f"[red]failed: {error}[/]", *[""] * (len(keep) - 3))
    out.print(table)
    _print_paired(out, results)
    _print_shortcuts(out, results)
    if not quiet:
        out.print(f"report: {paths['html']}  ({paths['md'].name}, {paths['json'].name} beside it)")


def json_summary(results: dict[str, Any], paths: dict[str, Path], exit_code: int) -> dict[str, Any]:
    """The ``compare --json`` summary; its keys are documented in docs/cli.md (keep them stable)."""
    metrics = list(results["settings"]["metrics"])
    board = []
    for i, r in enumerate(results.get("leaderboard") or [], 1):
        test = {m: r[f"test_{m}"] for m in metrics if r.get(f"test_{m}") is not None}
        board.append({"rank": i, "pipeline": r["pipeline"], "metrics": {m: r.get(m) for m in metrics},
                      "ci95": {m: r.get(f"{m}_ci95") for m in metrics}, "test": test or None})
    paired = (results.get("paired") or {}).get("cv") or {}
    return {
        "medfuse_summary": 1,
        "study": results["study"]["name"],
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "exit_meaning": EXIT_CODES.get(exit_code, ""),
        "out_dir": str(paths["html"].parent),
        "report": {k: str(v) for k, v in paths.items() if k in ("html", "md", "json")},
        "n_samples": results["data"]["n_selected"],
        "folds": results["settings"]["folds"],
        "run_folds": results["settings"]["run_folds"],
        "fold_numbers": results["settings"].get("fold_numbers"),
        "metrics": metrics,
        "best": board[0]["pipeline"] if board else None,
        "not_worse_than_best": paired.get("not_worse_than_best") if paired.get("status") == "ok" else None,
        "leaderboard": board,
        "failed": {n: p.get("error") for n, p in results["pipelines"].items() if p["status"] != "ok"},
        "overrides": results["settings"].get("overrides") or {},
        "profile": results["settings"].get("profile"),
    }
