"""`medfuse train-seg` (a segmentation bundle) and `medfuse segment` (masks of image files, with
Dice/Hausdorff against ground-truth masks); see :mod:`medfuse.segbundle`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import (
    EXIT_FAILURE,
    JOBS,
    bundle_and_inputs,
    echo_bundle_written,
    jobs_option,
    out_option,
    resolve_jobs,
    verbosity,
)


@click.command("train-seg")
@click.argument("study")
@click.option("--pipeline", "-p", default=None,
              help="Pipeline of the study whose mask plugin is trained (default: the study's only mask plugin).")
@click.option("--mask", "mask", default=None, metavar="NAME[:PARAM=VALUE,...]",
              help="Train this mask plugin instead (unet, unet_instances, otsu_cell, rbc_instances, ...), "
                   "e.g. unet_instances:epochs=10,scale=0.5.")
@click.option("--data", "data_root", default=None,
              help="Data root (default: $MEDFUSE_DATA, then ../shared/datasets); study paths are relative to it.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--folds", type=int, default=0, show_default=True,
              help="Also record held-out Dice/Hausdorff in the manifest: K folds by group (trains K more times; "
                   "0 = skip).")
@click.option("--jobs", "-j", type=JOBS, default=1, show_default=True, help="Parallel jobs for loading.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@verbosity
def train_seg(study: str, pipeline: str | None, mask: str | None, data_root: str | None, out: Path, folds: int,
              jobs: int, force: bool, quiet: bool, verbose: bool) -> None:
    """Train the mask plugin of STUDY on its image/mask pairs and write a segmentation bundle to --out.

    STUDY is a registry name, FILE.toml or FILE.toml:NAME; its loader must give mask files for a
    trainable plugin (U-Net). The bundle is data like a classifier bundle (manifest with sha256 of
    every artifact, skops object graph, the network as ONNX, no pickle), marked kind =
    "segmentation": apply it with `medfuse segment`.
    """
    from ..errors import MedfuseError
    from ..outputs import guarded_output
    from ..segbundle import load_segmenter, train_segmenter

    occupied = out.is_file() or (out.is_dir() and any(out.iterdir()))
    if occupied and not force:
        raise click.ClickException(f"{out}: already exists and is not empty; choose another --out or pass --force")
    if folds == 1 or folds < 0:
        raise click.BadParameter("give 0 (no held-out metrics) or K >= 2", param_hint="--folds")
    say = None if quiet else (lambda line: click.echo(line, err=True))
    try:
        with guarded_output(out, folder=True, note=lambda line: click.echo(line, err=True)):
            path = train_segmenter(study, out, pipeline=pipeline, mask=mask, data_root=data_root, folds=folds,
                                   jobs=resolve_jobs(jobs), overwrite=force, log=say, progress=not quiet)
        seg, manifest = load_segmenter(path)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    td = manifest["training_data"]
    echo_bundle_written(f"segmentation bundle written: {path}",
                        [f"mask plugin: {seg.maker_.name} ({'instances' if seg.instances_ else 'mask'}; "
                         f"regions {', '.join(seg.regions_)})"],
                        manifest, f"{td['n_samples']} images ({td['n_with_mask']} with masks)", "held-out")


@click.command("segment")
@bundle_and_inputs
@out_option("Output folder: masks/, segment.csv, summary.json.", required=True,
            type=click.Path(file_okay=False, path_type=Path))
@click.option("--truth", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of ground-truth masks with the inputs' relative paths and stems (any image suffix); "
                   "adds Dice and Hausdorff per image and their mean/median.")
@click.option("--max-pixels", type=int, default=None,
              help="Refuse images whose header claims more pixels (an error row). Default: $MEDFUSE_MAX_PIXELS, "
                   "else PIL's limit; 0 = no limit.")
@jobs_option(1, help="Worker processes segmenting chunks of images; rows stay in input order")
@click.option("--resume", is_flag=True,
              help="Keep the masks and rows of an interrupted run into --out and segment only the rest "
                   "(refused when the bundle, inputs, --truth or --max-pixels differ).")
@verbosity
def segment(bundle: Path, inputs: str, out: Path, truth: Path | None, max_pixels: int | None, jobs: int,
            resume: bool, quiet: bool, verbose: bool) -> None:
    """Segment INPUT with the segmentation BUNDLE into the folder --out.

    INPUT is a folder (image files, recursive), a glob or a CSV manifest with a 'path' column (its
    'mask_path' column, when present, gives the truth masks). Each image's mask is written to
    OUT/masks/<relative path>.png: the canonical mask (0 background, 1 cell, 2 nucleus, 8-bit), or
    for an instance plugin the label image (one value per object, 16-bit). OUT/segment.csv has one
    row per input (mask, size, foreground pixels, objects, truth, cell_dice, cell_hd95, cell_hd_max,
    error, truth_error) and OUT/summary.json the mean and median of each metric. An image that
    cannot be read or segmented is an error row and the batch goes on; exit code 1 only when no
    image was segmented. Every file is written atomically; OUT is locked while the run lasts.
    segment.csv is rewritten after every chunk of images, so --resume after an interruption
    segments only the images without a row and mask.
    """
    from ..errors import MedfuseError
    from ..outputs import guarded_output
    from ..segbundle import segment_files

    try:
        with guarded_output(out, folder=True, note=lambda line: click.echo(line, err=True)):
            summary = segment_files(bundle, inputs, out, truth=truth, max_pixels=max_pixels,
                                    jobs=resolve_jobs(jobs), resume=resume, progress=not quiet,
                                    note=None if quiet else (lambda line: click.echo(line, err=True)))
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.describe())
    if summary.n_segmented == 0:
        click.echo("error: no image could be segmented", err=True)
        sys.exit(EXIT_FAILURE)
