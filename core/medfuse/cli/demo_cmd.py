"""`medfuse demo`: the whole compare flow on embedded synthetic cells, no download."""

from __future__ import annotations

from pathlib import Path

import click

from .common import JOBS, resolve_jobs, set_option, verbosity


@click.command("demo")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Folder for the synthetic data (data/) and the report (report/).")
@click.option("--n-per-class", type=click.IntRange(6), default=60, show_default=True,
              help="Synthetic cells per class (3 classes).")
@click.option("--size", type=click.IntRange(32), default=64, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic data.")
@click.option("--pipelines", "-p", default=None, help="Comma-separated subset of the demo study's pipelines.")
@click.option("--jobs", "-j", type=JOBS, default=2, show_default=True,
              help="Parallel worker processes (-1 = every core).")
@set_option("BLOCK")
@verbosity
def demo(out_dir: str, n_per_class: int, size: int, seed: int, pipelines: str | None, jobs: int,
         sets: tuple[str, ...], quiet: bool, verbose: bool) -> None:
    """Write synthetic cells (3 shapes, masks, a lab table) and run `medfuse compare demo` on them.

    The `demo` study in registry.toml compares a classical pipeline (morphology, texture, colour ->
    XGBoost), an end-to-end CNN, a fused pipeline (classical + CNN embedding), a tabular pipeline
    (lab values) and a soft-vote ensemble, on the same grouped folds. Open OUT/report/report.html.
    --set BLOCK.PARAM=VALUE changes a block's parameter, as in `compare` (e.g. --set cnn.epochs=1
    for a quick run).
    """
    from ..synthetic import write_dataset
    from .compare_cmd import execute

    out = Path(out_dir)
    data = out / "data"
    if not (data / "table.csv").exists():
        if not quiet:
            click.echo(f"writing synthetic cells to {data} ...", err=True)
        write_dataset(data, n_per_class=n_per_class, size=size, seed=seed)
    chosen = [p.strip() for p in pipelines.split(",")] if pipelines else None
    execute("demo", chosen, data_root=str(data), out_dir=str(out / "report"), jobs=resolve_jobs(jobs), quiet=quiet,
            sets=sets, verbose=verbose)
