"""`medfuse train` (write a bundle) and `medfuse score` (batch scoring with a bundle)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import (
    EXIT_FAILURE,
    JOBS,
    apply_block_sets,
    bundle_and_inputs,
    echo_bundle_written,
    out_option,
    profile_flags,
    resolve_jobs,
    select_profile,
    set_option,
    verbosity,
)


@click.command("train")
@click.argument("study")
@click.option("--pipeline", "-p", required=True, help="Pipeline of the study to train.")
@click.option("--data", "data_root", default=None,
              help="Data root (default: $MEDFUSE_DATA, then ../shared/datasets); study paths are relative to it.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--jobs", "-j", type=JOBS, default=1, show_default=True,
              help="Parallel jobs for per-image work (-1 = every core).")
@click.option("--cv/--no-cv", default=True, show_default=True,
              help="Record cross-validated metrics in the manifest (needs medfuse.evaluation).")
@click.option("--max-per-class", type=int, default=None,
              help="Cap samples per class (default: the study's evaluation.max_per_class).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="Cache folder for prepared feature blocks.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@set_option("BLOCK")
@profile_flags()
@verbosity
def train(study: str, pipeline: str, data_root: str | None, out: Path, jobs: int, cv: bool,
          max_per_class: int | None, cache_dir: Path | None, force: bool, sets: tuple[str, ...], profile: str | None,
          allow_cpu: bool, quiet: bool, verbose: bool) -> None:
    """Train PIPELINE of STUDY on all its data and write a bundle to --out.

    STUDY is a registry name, FILE.toml or FILE.toml:NAME. The bundle holds manifest.json
    (versions, plugins and params, feature schema, classes, training-data fingerprint, CV metrics,
    seed, sha256 of every artifact) and the artifacts: the object graph (skops), networks as ONNX
    (plus .keras for retraining), XGBoost JSON; nothing executable.

    --out's folder is checked for writability and locked (OUT.lock) before any work; the bundle
    is written under a temporary name and renamed, so it is complete or absent. --set
    BLOCK.PARAM=VALUE changes a block's parameter (recorded in the manifest's study.overrides);
    --profile NAME applies the study's profile first (recorded as study.profile).
    """
    from ..bundle import load_bundle
    from ..errors import MedfuseError
    from ..host import get_host
    from ..outputs import guarded_output, is_disk_full
    from ..study import resolve_study
    from ..training import train_bundle

    occupied = out.is_file() or (out.is_dir() and any(out.iterdir()))
    if occupied and not force:  # the same check write_bundle makes, before the training instead of after
        raise click.ClickException(f"{out}: already exists and is not empty; choose another --out or pass --force")
    try:
        host = get_host()
        spec, profile_record = select_profile(resolve_study(study), profile, allow_cpu, host)
        spec, overrides = apply_block_sets(spec, sets, host)
        with guarded_output(out, folder=True, note=lambda line: click.echo(line, err=True)):
            path = train_bundle(spec, pipeline, data_root, out, jobs=resolve_jobs(jobs), cv=cv,
                                max_per_class=max_per_class, cache_dir=cache_dir, overwrite=force,
                                progress=not quiet, log=None if quiet else lambda line: click.echo(line, err=True),
                                overrides=overrides, profile=profile_record)
        bundle = load_bundle(path)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise click.ClickException(f"disk full while writing the bundle {out}; nothing was written "
                                   "(free space or choose another --out, then rerun)") from None
    m = bundle.manifest
    echo_bundle_written(f"bundle written: {path}", [
        f"classes: {', '.join(bundle.classes)}",
        f"features: {len(m['feature_schema'])}, artifacts: {len(m['artifacts'])}, "
        f"plugins: {', '.join(sorted({p['name'] for p in m['plugins']}))}"],
        m, f"{m['training_data']['n_samples']} samples", "CV")


@click.command("score")
@bundle_and_inputs
@out_option("Output file, .csv or .parquet.", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--jobs", "-j", type=JOBS, default=1, show_default=True,
              help="Worker processes (loky; -1 = every core) or parallel tasks (dask; -1 = all workers).")
@click.option("--chunk-size", default=256, show_default=True, help="Inputs per chunk (unit of work and resume).")
@click.option("--batch-size", default=256, show_default=True, help="Images per pipeline call inside a chunk.")
@click.option("--resume", is_flag=True, help="Keep chunks written by an interrupted run; score only the rest.")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default=None,
              help="loky: local worker processes (default); dask: the cluster at --scheduler (default when "
                   "--scheduler is given).")
@click.option("--scheduler", default=None,
              help="Dask scheduler address, tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786); implies --backend dask "
                   "and is an error with --backend loky. A malformed or unreachable address fails before any work.")
@click.option("--keep-parts", is_flag=True, help="Keep OUT.parts/ (the chunk files) after assembling OUT.")
@click.option("--max-pixels", type=int, default=None,
              help="Refuse images whose header claims more pixels (an error row, checked before decoding). "
                   "Default: $MEDFUSE_MAX_PIXELS, else PIL's limit (89,478,485); 0 = no limit.")
@click.option("--trust-pickle", is_flag=True,
              help="Also load a format-1 bundle (pickles run code when loaded): only one you made yourself.")
@click.option("--objects", "finder", default=None, metavar="FINDER",
              help="Whole-image scoring: find the objects (cells) of each image with this instance segmenter "
                   "(smear_cells, rbc_instances, wbc_instances, platelet_instances; NAME:PARAM=VALUE,... sets "
                   "parameters), classify each, and write one row per object to --out plus a per-image summary. "
                   "--chunk-size then counts images (default 8). See docs/scoring.md.")
@click.option("--margin", type=float, default=None,
              help="With --objects: crop = the object's box grown by this fraction of its larger side on every "
                   "side. Default: the bundle's recorded crop rule (how its training objects were cut), else 0.2.")
@click.option("--crop-size", type=int, default=None, metavar="PX",
              help="With --objects: crop = a PX-pixel square centred on each object's box (overrides the "
                   "bundle's recorded crop rule, as --margin does).")
@click.option("--summary", "summary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --objects: the per-image summary file (default OUT with .summary before the suffix).")
@click.option("--write-masks", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --objects: write each image's instance label image (16-bit PNG) under this folder.")
@verbosity
def score(bundle: Path, inputs: str, out: Path, jobs: int, chunk_size: int, batch_size: int, resume: bool,
          backend: str | None, scheduler: str | None, keep_parts: bool, max_pixels: int | None, trust_pickle: bool,
          finder: str | None, margin: float | None, crop_size: int | None, summary: Path | None, write_masks: Path | None,
          quiet: bool, verbose: bool) -> None:
    """Score INPUT with BUNDLE into --out: one row per input with path, prediction, proba.<class>,
    warning, error.

    INPUT is a folder (image files, recursive), a glob ('imgs/**/*.jpg', quoted) or a CSV manifest
    with a 'path' column (optional mask_path column, for pipelines using dataset masks; other
    columns are passed as tabular data).

    A row the model cannot answer gets NaN probabilities, no prediction and the reason in 'error'
    (unreadable, truncated or oversized file, any decoder or extractor failure, no cell found, an
    all-NaN feature block) and the job goes on; the exit code is 1 only if nothing could be scored.
    'warning' is set when a scored row lies outside the training data: its distance in the model's
    feature space, or of the image's acquisition descriptor (colour, contrast, size), is above the
    99.5th percentile of the training images' cross-fitted distances. Chunks are written atomically to
    OUT.parts/, so a killed run continues with --resume without losing or repeating rows.

    A run holds the lock OUT.lock (pid, host, start time, command): a second run on the same --out
    refuses and names the holder; a lock left by a dead process on this host is taken over. An
    unwritable --out fails before any work; OUT is never left half-written (not even on a full
    disk). A .parquet OUT records the medfuse version and the bundle's path and manifest sha256 in
    its key/value metadata. On Dask, chunks of a worker that dies are rerun on the others.

    A bundle is data (format 2: skops object graph with an allow-list of types, ONNX networks,
    XGBoost JSON): a crafted bundle is refused, not run. Scoring never imports TensorFlow.
    """
    from ..errors import MedfuseError
    from ..scoring import score as run_score

    if finder is not None:
        _score_objects(bundle, inputs, out, finder, margin, crop_size, summary, write_masks, jobs, chunk_size, batch_size,
                       resume, backend, scheduler, keep_parts, max_pixels, trust_pickle, quiet)
        return
    if margin is not None or crop_size is not None or summary is not None or write_masks is not None:
        raise click.UsageError("--margin, --crop-size, --summary and --write-masks need --objects FINDER")
    try:
        summary = run_score(bundle, inputs, out, jobs=jobs, chunk_size=chunk_size, batch_size=batch_size,
                            resume=resume, backend=backend, scheduler=scheduler, progress=not quiet,
                            keep_parts=keep_parts, max_pixels=max_pixels, trust_pickle=trust_pickle,
                            note=lambda line: click.echo(line, err=True))
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.describe(), err=summary.n_failed > 0 and summary.n_scored == 0)
    if summary.n_scored == 0:
        click.echo("error: no input could be scored", err=True)
        sys.exit(EXIT_FAILURE)


def _score_objects(bundle: Path, inputs: str, out: Path, finder: str, margin: float | None, crop_size: int | None,
                   summary: Path | None,
                   write_masks: Path | None, jobs: int, chunk_size: int, batch_size: int, resume: bool,
                   backend: str | None, scheduler: str | None, keep_parts: bool, max_pixels: int | None,
                   trust_pickle: bool, quiet: bool) -> None:
    """`medfuse score --objects`: see :mod:`medfuse.objectscoring`."""
    from ..errors import MedfuseError
    from ..objectscoring import CHUNK_SIZE, score_objects

    if backend == "dask" or scheduler:
        raise click.UsageError("--objects runs on local worker processes only; drop --backend dask / --scheduler")
    chunks = CHUNK_SIZE if chunk_size == 256 else chunk_size  # 256: the option's default, meant for files
    try:
        result = score_objects(bundle, inputs, out, finder, margin=margin, crop_size=crop_size,
                               summary=summary, write_masks=write_masks, jobs=jobs, chunk_size=chunks,
                               batch_size=batch_size, resume=resume, progress=not quiet, keep_parts=keep_parts,
                               max_pixels=max_pixels, trust_pickle=trust_pickle,
                               note=lambda line: click.echo(line, err=True))
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.describe(), err=result.n_scored == 0)
    if result.n_scored == 0:
        click.echo("error: no object could be classified", err=True)
        sys.exit(EXIT_FAILURE)
