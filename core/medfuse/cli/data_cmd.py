"""`medfuse data PATH`: build the sample table of a folder, manifest or table and report its problems."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from .common import EXIT_FAILURE, JOBS, reader_flags, resolve_jobs, verbosity
from .common import console as make_console

LOADERS = ("folder", "manifest", "pairs", "table", "annotations")
"""The built-in loaders whose parameters ``detect`` guesses from PATH; any other registered loader
(a third-party one) gets PATH as its root and the ``--param`` values."""
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xls", ".xlsm")


def _has_subdirs(folder: Path) -> bool:
    from ..loading import is_visible

    return any(p.is_dir() and is_visible(p) for p in folder.iterdir())


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _column_params(label: str | None, id_column: str | None) -> dict[str, str]:
    """``label_column`` / ``id_column`` loader parameters from ``--label`` / ``--id-column`` (when given)."""
    return {k: v for k, v in (("label_column", label), ("id_column", id_column)) if v}


def _columns(path: Path) -> list[str]:
    from ..loading import read_table

    return list(read_table(path).columns)


def detect(path: Path, loader: str | None = None, masks: Path | None = None, table: Path | None = None,
           label: str | None = None, id_column: str | None = None) -> tuple[str, dict[str, Any], Path]:
    """Choose the loader and its parameters for ``path``; return ``(loader, params, root)``.

    * a table file: ``manifest`` when it has a ``path`` column, else ``table``;
    * a folder whose ``images/`` has class sub-folders: ``folder`` on ``images/``, with
      ``masks/`` and ``table.csv`` when present;
    * a folder with flat ``images/`` and ``masks/``: ``pairs`` (with ``labels.csv`` when present);
    * a folder with ``Annotations/*.xml`` (Pascal VOC) beside ``JPEGImages/`` or ``images/``:
      ``annotations`` (one sample per box; see :func:`_annotation_params`);
    * any other folder: ``folder`` (one sub-folder per class).
    Paths are passed absolute, so the root only matters for relative ones. Any other ``loader``
    (a third-party one) gets no guessed parameters and ``path`` as its root.
    """
    path = path.resolve()
    params: dict[str, Any] = {}
    if loader is not None and loader not in LOADERS:
        return loader, params, path
    if path.is_file():
        from ..loading import TABLE_SUFFIXES

        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise click.UsageError(f"{path} is a file but not a table ({', '.join(TABLE_SUFFIXES)})")
        if loader is None:
            loader = "manifest" if "path" in _columns(path) else "table"
        params["path"] = str(path)
        if loader == "table" and label is None:
            cols = _columns(path)
            label = "label" if "label" in cols else cols[-1]
        if loader in ("table", "manifest"):
            params |= _column_params(label, id_column)
        else:
            raise click.UsageError(f"--loader {loader} needs a folder, not the file {path}")
        return loader, params, path.parent
    images, mask_dir = path / "images", path / "masks"
    classes_in_images = images.is_dir() and _has_subdirs(images)
    voc = _annotation_params(path)
    if loader == "annotations" or (loader is None and voc and voc["format"] == "voc"):
        if voc is None:
            raise click.UsageError(f"--loader annotations: {path} has no Annotations/ or annotations/ folder "
                                   "beside JPEGImages/ or images/ (other layouts: write a study file)")
        return "annotations", voc, path
    if loader is None:
        flat_pairs = images.is_dir() and not classes_in_images and (mask_dir.is_dir() or masks is not None)
        loader = "pairs" if flat_pairs else "folder"
    if loader == "pairs":
        params = {"images": str(images if images.is_dir() else path),
                  "masks": str(masks or mask_dir)}
        labels = table or _first_existing(path, ("labels.csv", "labels.xlsx"))
        if labels:
            params["labels"] = str(labels)
        params |= _column_params(label, id_column)
    elif loader == "folder":
        # root/images/<class>/ (+ root/masks/<class>/, root/table.csv) or root/<class>/
        params = {"path": str(images if classes_in_images else path)}
        mask_root = masks or (mask_dir if classes_in_images and mask_dir.is_dir() else None)
        if mask_root:
            params["masks"] = str(mask_root)
        tab = table or (_first_existing(path, ("table.csv", "table.xlsx")) if classes_in_images else None)
        if tab:
            params["table"] = str(tab)
        if id_column:
            params["id_column"] = id_column
        if label:
            params["label_from"] = label
    else:
        raise click.UsageError(f"--loader {loader} needs a table file, not the folder {path}")
    return loader, params, path


def _annotation_params(path: Path) -> dict[str, Any] | None:
    """``annotations`` loader parameters for ``JPEGImages/`` (or ``images/``) beside ``Annotations/``
    (or ``annotations/``): ``voc`` when it holds XML files, ``points`` for CSV/TXT, else ``instances``."""
    images = next((path / n for n in ("JPEGImages", "images") if (path / n).is_dir()), None)
    notes = next((path / n for n in ("Annotations", "annotations") if (path / n).is_dir()), None)
    if images is None or notes is None:
        return None
    suffixes = {p.suffix.lower() for p in notes.iterdir() if p.is_file()}
    fmt = "voc" if ".xml" in suffixes else "points" if suffixes & {".csv", ".tsv", ".txt"} else "instances"
    return {"images": str(images), "annotations": str(notes), "format": fmt}


def _parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; VALUE is TOML when it parses, else text."""
    import tomllib

    out: dict[str, Any] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--param {raw!r}: expected KEY=VALUE, e.g. --param path=labels.csv")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


@click.command("data")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--loader", metavar="NAME",
              help="Any registered loader (`medfuse plugins --kind loader`); default: guessed from PATH "
                   f"among the built-in {', '.join(LOADERS)}. Another loader gets PATH as its root.")
@click.option("--param", "-p", "loader_params", multiple=True, metavar="KEY=VALUE",
              help="A loader parameter (repeatable); VALUE is read as TOML (1, 0.5, true, \"text\", [..]) "
                   "or else as text. Overrides what is guessed from PATH.")
@click.option("--masks", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Mask folder mirroring the image folder (folder/pairs loaders).")
@click.option("--table", "table", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Table joined by id (folder loader) or labels file (pairs loader).")
@click.option("--label", help="Label column (table/manifest/pairs), or table column to label a folder by.")
@click.option("--id-column", help="Id column of the table (default: 'id').")
@click.option("--jobs", "-j", type=JOBS, default=1, show_default=True,
              help="Worker processes for decoding (-1 = every core).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report (and the loader parameters) as JSON.")
@click.option("--samples", "samples_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the sample table (CSV, or Parquet when the name ends in .parquet).")
@click.option("--max-items", type=int, default=20, show_default=True,
              help="Examples shown per problem kind (bad files and mask problems are always all listed).")
@click.option("--study", "study_ref", metavar="STUDY",
              help="Decode as this study does: its `reader` table (FILE.toml, FILE.toml:NAME or a registry name).")
@reader_flags("overrides --study's")
@verbosity
def data(path: Path, loader: str | None, loader_params: tuple[str, ...], masks: Path | None,
         table: Path | None, label: str | None, id_column: str | None, jobs: int, json_path: Path | None, samples_path: Path | None,
         max_items: int, study_ref: str | None, bits: int | None, percentiles: str | None,
         pixel_size_um: float | None, quiet: bool, verbose: bool) -> None:
    """Load PATH (a folder, a CSV manifest or a table), decode every image once, and report.

    \b
    Prints counts per class, every bad file with its reason, duplicate images (same bytes),
    missing or mismatched masks, table rows without images and images without table rows.
    Exit code 0 if anything loaded, 1 if nothing did. --json and --samples are checked for
    writability and locked before any work, and written atomically.

    \b
    Examples:
      medfuse data $MEDFUSE_DATA/pbc --jobs 2
      medfuse data $MEDFUSE_DATA/all/images --masks $MEDFUSE_DATA/all/masks
      medfuse data $MEDFUSE_DATA/wbc_seg                  # images/ + masks/ + labels.csv: pairs
      medfuse data $MEDFUSE_DATA/bccd                     # JPEGImages/ + Annotations/*.xml: one sample per box
      medfuse data $MEDFUSE_DATA/anemia_tables/anemia_kaggle.csv --label Result
      medfuse data ./my-set --loader my_loader -p split=\"train\"   # a third-party loader
      medfuse data ./xrays --study xray.toml              # bit depths/spacings as the study reads them

    \b
    The per-format lines (bit depth, channels, spacing) and the mixed-depth/spacing warnings come
    from decoding with the reader options: a study's `reader` (--study), else --bits/--percentiles/
    --pixel-size-um, else the defaults (depth inferred per image, spacing from the file).
    """
    from ..errors import MedfuseError
    from ..outputs import guarded_output

    console = make_console()
    jobs = resolve_jobs(jobs)
    start = time.perf_counter()
    try:
        options = _reader(study_ref, bits, percentiles, pixel_size_um)
        with guarded_output(json_path, samples_path, note=lambda line: click.echo(line, err=True)):
            _load_and_report(console, start, path, loader, masks, table, label, id_column, jobs, json_path,
                             samples_path, max_items, progress=not quiet, extra=_parse_params(loader_params),
                             options=options)
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None


def _reader(study_ref: str | None, bits: int | None, percentiles: str | None,
            pixel_size_um: float | None) -> Any:
    """Reader options: the study's ``reader`` (``--study``), with the fields given as flags replaced."""
    from dataclasses import replace

    from ..intensity import ReadOptions
    from .common import read_options

    base = ReadOptions()
    if study_ref:
        from ..study import resolve_study

        base = resolve_study(study_ref).reader
    flags = read_options(bits, percentiles, pixel_size_um)
    given = {k: getattr(flags, k) for k in ("bits", "percentiles", "pixel_size_um") if getattr(flags, k) is not None}
    return replace(base, **given)


def _load_and_report(console: Any, start: float, path: Path, loader: str | None, masks: Path | None,
                     table: Path | None, label: str | None, id_column: str | None, jobs: int,
                     json_path: Path | None, samples_path: Path | None, max_items: int,
                     progress: bool = True, extra: dict[str, Any] | None = None, options: Any = None) -> None:
    """The body of ``medfuse data``, run while holding the locks of its output files."""
    from rich.table import Table

    from ..host import get_host
    from ..outputs import atomic_output, write_text

    name, params, root = detect(path, loader, masks, table, label, id_column)
    params.update(extra or {})
    plugin = get_host().create(name, params, kind="loader")
    from ..intensity import ReadOptions
    from ..loading import load_with_reader

    st = load_with_reader(plugin, options, root, jobs=jobs, progress=progress)
    elapsed = time.perf_counter() - start
    report = st.report
    # the heading goes on its own line: a table title wraps to the (narrow) table's width
    console.print(f"{report.source} — loader {name}", markup=False, highlight=False, soft_wrap=True)
    counts = Table(show_footer=True)
    counts.add_column("label", footer="total")
    counts.add_column("samples", justify="right", footer=str(report.n_loaded))
    for lab, n in report.class_counts.items():
        counts.add_row(str(lab), str(n))
    console.print(counts)
    if st.table is not None:
        console.print(f"table: {st.table.shape[1]} columns: {', '.join(map(str, st.table.columns))}")
        for col, mapping in st.meta.get("categories", {}).items():
            console.print(f"  {col} encoded as " + ", ".join(f"{k}={v}" for k, v in mapping.items()))
    for line in report.summary_lines(max_items=max_items)[2 if report.class_counts else 1:]:
        console.print(line, markup=False, highlight=False)
    console.print(f"{report.n_loaded} of {report.n_found} samples loaded in {elapsed:.1f} s "
                  f"with {jobs} job(s)", highlight=False)
    if json_path:
        payload = {"loader": name, "params": params, "root": str(root), "elapsed_s": round(elapsed, 3),
                   "reader": (options or ReadOptions()).to_dict(), "report": report.to_dict()}
        from ..util.jsonable import to_jsonable

        write_text(json_path, json.dumps(to_jsonable(payload, finite=True), indent=2, allow_nan=False))
    if samples_path:
        import pandas as pd

        out = st.samples if st.table is None else pd.concat([st.samples, st.table.add_prefix("table.")], axis=1)
        with atomic_output(samples_path) as tmp:
            if samples_path.suffix == ".parquet":
                out.to_parquet(tmp, index=False)
            else:
                out.to_csv(tmp, index=False)
    if not report.ok:
        console.print("[red]nothing could be loaded[/]")
        raise SystemExit(EXIT_FAILURE)
