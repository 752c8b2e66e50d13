"""`medfuse extract`: a feature table (one row per image) from a folder, glob or CSV manifest."""

from __future__ import annotations

from pathlib import Path

import click

from .common import JOBS, parse_sets, read_options, reader_flags, resolve_jobs, verbosity
from .common import console as make_console


@click.command("extract")
@click.argument("inputs", metavar="INPUT")
@click.option("--blocks", default="morphology,texture,colour", show_default=True,
              help="Comma-separated extractor plugins; each gives the columns <block>.<feature>.")
@click.option("--mask", "mask_name", default="otsu_cell", show_default=True,
              help="Mask plugin computed once per image and shared by the blocks; 'file' reads the "
                   "manifest's mask column; 'none' lets each block use its own default.")
@click.option("--transforms", default="", help="Comma-separated transforms applied first, e.g. 'stain_normalize'.")
@click.option("--set", "sets", multiple=True, metavar="PLUGIN.PARAM=VALUE",
              help="Plugin parameter (TOML value), repeatable: --set texture.levels=16.")
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False),
              help="Output table: .parquet (provenance in its metadata) or .csv (+ .csv.json sidecar).")
@click.option("--jobs", "-j", type=JOBS, default=1, show_default=True, help="Worker processes (-1 = every core).")
@reader_flags()
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on a terminal.")
@verbosity
def extract(inputs: str, blocks: str, mask_name: str, transforms: str, sets: tuple[str, ...], out: str,
            jobs: int, bits: int | None, percentiles: str | None, pixel_size_um: float | None,
            progress: bool, quiet: bool, verbose: bool) -> None:
    """Extract classical features of every image in INPUT into one table.

    INPUT is a folder (searched recursively), a glob ('data/**/*.jpg') or a CSV manifest with a
    `path` column (optional `mask`, `label`). The table has `path` first (then `label` when the
    manifest has one), then `<block>.<feature>` columns, then `error`: an image that cannot be
    read or processed gets its reason there and NaN features. Each image is decoded once.

    --out is checked (folders created, writability probed) and locked (OUT.lock) before any
    work, and written atomically: it is either complete or absent, also on a full disk.

    The reader options (--bits, --percentiles, --pixel-size-um) are those of a study's
    `reader` table (docs/studies.md) and are recorded in the provenance.

    \b
    Example:
      medfuse extract ../shared/datasets/pbc --blocks morphology,texture,colour \\
          --mask otsu_cell --out pbc.parquet --jobs 2
    """
    from ..errors import MedfuseError
    from ..extract import extract_columns, make_plugins, write_columns
    from ..outputs import guarded_output

    console = make_console(stderr=True, quiet=quiet)
    params = parse_sets(sets, "PLUGIN")
    jobs = resolve_jobs(jobs)
    progress = progress and not quiet
    options = read_options(bits, percentiles, pixel_size_um)
    block_names = [b.strip() for b in blocks.split(",") if b.strip()]
    if not block_names:
        raise click.BadParameter("give at least one block", param_hint="--blocks")
    try:
        tnames = [t.strip() for t in transforms.split(",") if t.strip()]
        unknown = sorted(set(params) - set(block_names) - set(tnames) - {mask_name})
        if unknown:
            raise click.BadParameter(f"--set names plugin(s) {unknown} that this run does not use",
                                     param_hint="--set")
        plugins = make_plugins(block_names, mask_name, tnames, params)
        extractors, tlist, mask = plugins.extractors, plugins.transforms, plugins.mask
        if Path(out).suffix.lower() not in (".parquet", ".pq", ".csv", ".tsv"):
            raise click.BadParameter(f"{out}: the output must end in .parquet or .csv", param_hint="--out")
        with guarded_output(out):
            # columns, not a DataFrame: a folder, glob or image is extracted without importing pandas
            table, prov = extract_columns(inputs, extractors, tlist, mask, jobs=jobs, progress=progress,
                                          options=options)
            written = write_columns(table, out, prov)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
    failed = [i for i, e in enumerate(table["error"]) if e != ""]
    n_rows = len(table["error"])
    n_feat = sum(1 for c in table if "." in c and c not in ("path", "label", "error"))
    rate = n_rows / prov["seconds"] if prov["seconds"] > 0 else float("nan")
    console.print(f"{n_rows} images, {n_feat} features, {len(failed)} errors, {prov['seconds']:.1f} s "
                  f"({rate:.1f} images/s, {jobs} job(s)) -> {', '.join(str(w) for w in written)}")
    for i in failed[:3]:
        console.print(f"  [yellow]error[/]: {table['error'][i]}")
