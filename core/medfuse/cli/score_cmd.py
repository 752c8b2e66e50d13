"""`medfuse train` (write a bundle) and `medfuse score` (batch scoring with a bundle)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


@click.command("train")
@click.argument("study")
@click.option("--pipeline", "-p", required=True, help="Pipeline of the study to train.")
@click.option("--data", "data_root", default=None,
              help="Data root (default: $MEDFUSE_DATA, then ../shared/datasets); study paths are relative to it.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--jobs", "-j", default=1, show_default=True, help="Parallel jobs for per-image work.")
@click.option("--cv/--no-cv", default=True, show_default=True,
              help="Record cross-validated metrics in the manifest (needs medfuse.evaluation).")
@click.option("--max-per-class", type=int, default=None,
              help="Cap samples per class (default: the study's evaluation.max_per_class).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="Cache folder for prepared feature blocks.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def train(study: str, pipeline: str, data_root: str | None, out: Path, jobs: int, cv: bool,
          max_per_class: int | None, cache_dir: Path | None, force: bool, quiet: bool) -> None:
    """Train PIPELINE of STUDY on all its data and write a bundle to --out.

    STUDY is a registry name, FILE.toml or FILE.toml:NAME. The bundle holds manifest.json
    (versions, plugins and params, feature schema, classes, training-data fingerprint, CV metrics,
    seed, sha256 of every artifact) and the artifacts: the object graph (skops), networks as ONNX
    (plus .keras for retraining), XGBoost JSON; nothing executable.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..bundle import load_bundle, train_bundle
    from ..errors import MedfuseError

    try:
        path = train_bundle(study, pipeline, data_root, out, jobs=jobs, cv=cv, max_per_class=max_per_class,
                            cache_dir=cache_dir, overwrite=force, progress=not quiet,
                            log=lambda line: click.echo(line, err=True))
        bundle = load_bundle(path)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    m = bundle.manifest
    click.echo(f"bundle written: {path}")
    click.echo(f"  classes: {', '.join(bundle.classes)}")
    click.echo(f"  features: {len(m['feature_schema'])}, artifacts: {len(m['artifacts'])}, "
               f"plugins: {', '.join(sorted({p['name'] for p in m['plugins']}))}")
    click.echo(f"  training data: {m['training_data']['n_samples']} samples, "
               f"fingerprint {m['training_data']['fingerprint'][:12]}")
    click.echo(f"  CV: {m.get('cv_note', '')}")


@click.command("score")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", metavar="INPUT")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file, .csv or .parquet.")
@click.option("--jobs", "-j", default=1, show_default=True,
              help="Worker processes (loky) or parallel tasks (dask; -1 = all workers).")
@click.option("--chunk-size", default=256, show_default=True, help="Inputs per chunk (unit of work and resume).")
@click.option("--batch-size", default=256, show_default=True, help="Images per pipeline call inside a chunk.")
@click.option("--resume", is_flag=True, help="Keep chunks written by an interrupted run; score only the rest.")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky", show_default=True)
@click.option("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://10.0.0.5:8786.")
@click.option("--keep-parts", is_flag=True, help="Keep OUT.parts/ (the chunk files) after assembling OUT.")
@click.option("--trust-pickle", is_flag=True,
              help="Also load a format-1 bundle (pickles run code when loaded): only one you made yourself.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def score(bundle: Path, inputs: str, out: Path, jobs: int, chunk_size: int, batch_size: int, resume: bool,
          backend: str, scheduler: str | None, keep_parts: bool, trust_pickle: bool, quiet: bool) -> None:
    """Score INPUT with BUNDLE into --out: one row per input with path, label, proba.<class>, error.

    INPUT is a folder (image files, recursive), a glob ('imgs/**/*.jpg', quoted) or a CSV manifest
    with a 'path' column (optional mask_path column, for pipelines using dataset masks; other
    columns are passed as tabular data). Unreadable inputs get an error row and the job goes on;
    the exit code is 1 only if nothing could be scored. Chunks are written atomically to
    OUT.parts/, so a killed run continues with --resume without losing or repeating rows.

    A bundle is data (format 2: skops object graph with an allow-list of types, ONNX networks,
    XGBoost JSON): a crafted bundle is refused, not run. Scoring never imports TensorFlow.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..errors import MedfuseError
    from ..scoring import score as run_score

    try:
        summary = run_score(bundle, inputs, out, jobs=jobs, chunk_size=chunk_size, batch_size=batch_size,
                            resume=resume, backend=backend, scheduler=scheduler, progress=not quiet,
                            keep_parts=keep_parts, trust_pickle=trust_pickle)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.describe(), err=summary.n_failed > 0 and summary.n_scored == 0)
    if summary.n_scored == 0:
        click.echo("error: no input could be scored", err=True)
        sys.exit(1)
