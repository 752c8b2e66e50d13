"""`medfuse runs`: past comparison runs (study, time, best pipeline, report folder)."""

from __future__ import annotations

from typing import Any

import click

from .common import console as make_console
from .common import echo_json, verbosity


def _score(row: dict[str, Any]) -> str:
    if row.get("score") is None:
        return "–"
    ci = row.get("ci95")
    text = f"{row['score']:.3f}"
    if ci and None not in ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


@click.command("runs")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--study", default=None, help="Only runs of this study.")
@click.option("--limit", "-n", type=click.IntRange(0), default=20, show_default=True,
              help="Newest N runs (0 = all).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the runs as a JSON list (keys in docs/cli.md) on stdout.")
@verbosity
def runs(folders: tuple[str, ...], study: str | None, limit: int, as_json: bool, quiet: bool, verbose: bool) -> None:
    """List past `compare`/`run`/`demo` runs, newest first: study, time, best pipeline with its
    score and 95% interval, samples, failed pipelines and the report folder.

    Runs come from the run index, where every compare records its report folder
    ($MEDFUSE_RUNS_INDEX, default ~/.local/state/medfuse/runs.jsonl), and from FOLDERS (report
    folders or folders of them; default: runs/ in the working folder). Each run's details are read
    from its results.json; deleted folders are left out.

    \b
    Example:
      medfuse runs --study pbc-cells -n 5
      medfuse runs --json | jq '.[0].path'
    """
    from ..runindex import list_runs

    rows = list_runs(list(folders) or None, study=study)
    if limit:
        rows = rows[:limit]
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    out = make_console()
    if not rows:
        if not quiet:
            make_console(stderr=True).print("no runs found (run `medfuse compare STUDY` first)")
        return
    table = Table(title=f"{len(rows)} run(s), newest first")
    for name, justify in (("created", "left"), ("study", "left"), ("best", "left"), ("score (95% CI)", "right"),
                          ("n", "right"), ("failed", "left"), ("path", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        metric = f"{r['metric']} " if r.get("metric") else ""
        table.add_row(str(r.get("created") or "–"), str(r.get("study")), str(r.get("best") or "–"),
                      metric + _score(r), str(r.get("n_samples") or "–"), ", ".join(r.get("failed") or []) or "–",
                      r["path"])
    out.print(table)
