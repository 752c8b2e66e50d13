"""Helpers for loader authors: build a :class:`~medfuse.contracts.SampleTable` and its
:class:`~medfuse.datareport.DataReport` one candidate sample at a time.

A loader finds candidate samples (files, rows of an index), hands each to
:meth:`SampleTableBuilder.add` (or reports it with :meth:`~SampleTableBuilder.bad_file` /
:meth:`~SampleTableBuilder.drop`), and returns :meth:`~SampleTableBuilder.build`. The builder
scans every image once (decoded in full, hashed, masks checked), drops undecodable images into
``report.bad_files``, keeps a sample whose mask is unusable without its mask
(``report.mask_problems``), drops samples without a label (``report.dropped``), makes ids unique,
fills ``sha1`` and ``group``, aligns the tabular values as float64 and calls
:func:`medfuse.datareport.finalize`::

    from medfuse.loading import SampleTableBuilder

    def load(self, root=".", jobs=1, progress=False):
        root = loader_root(root)
        build = SampleTableBuilder(source=str(root), loader=self.name)
        for line in (root / "index.txt").read_text().splitlines():
            image, label, patient = line.split(",")
            build.add(id=Path(image).stem, label=label, path=root / image, group=patient)
        return build.build(jobs=jobs, progress=progress)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .contracts import SampleTable
from .datareport import DataReport, finalize, image_properties, row_sha1
from .errors import DataError
from .util.lazy import lazy_module

pd = lazy_module("pandas")  # imported on first use: registering loader plugins needs no pandas

__all__ = ["SAMPLE_COLUMNS", "TABLE_SUFFIXES", "SampleTableBuilder", "read_table", "derived_dir", "is_visible",
           "label_text", "list_images", "loader_root", "root_path", "sample_table", "unique_ids"]

SAMPLE_COLUMNS = ("id", "path", "mask_path", "label", "group", "sha1")
"""The columns of ``SampleTable.samples``, in order."""

DERIVED_ENV = "MEDFUSE_DERIVED"

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xls", ".xlsm")
"""Table files :func:`read_table` reads."""


def loader_root(root: Path | str) -> Path:
    """``root`` as an existing folder, or a :class:`~medfuse.errors.DataError` naming it."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: data root not found (it does not exist or is not a folder); "
                        "pass --data ROOT or set $MEDFUSE_DATA")
    return path


def root_path(root: Path, rel: str | None, what: str, want_dir: bool) -> Path:
    """``root / rel`` (``root`` itself for an empty ``rel``) as an existing folder (``want_dir``) or
    file, else a :class:`~medfuse.errors.DataError` naming ``what`` (the loader and its parameter)."""
    path = root / str(rel) if rel not in (None, "") else root
    if not (path.is_dir() if want_dir else path.is_file()):
        kind = "folder" if want_dir else "file"
        raise DataError(f"{what}: {kind} {path} not found (relative to the data root {root})")
    return path


def is_visible(path: Path) -> bool:
    """False for hidden files (``.name``) and desktop clutter (``Thumbs.db``, ``desktop.ini``)."""
    return not path.name.startswith(".") and path.name not in ("Thumbs.db", "desktop.ini")


def list_images(folder: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (sorted; hidden files and folders skipped) and the other files,
    which a loader lists in ``report.ignored_files``."""
    from .imageio import IMAGE_SUFFIXES

    entries = folder.rglob("*") if recursive else folder.iterdir()
    images, ignored = [], []
    for p in sorted(entries):
        if not p.is_file() or not is_visible(p) or any(not is_visible(q) for q in p.relative_to(folder).parents
                                                        if q != Path(".")):
            continue
        (images if p.suffix.lower() in IMAGE_SUFFIXES else ignored).append(p)
    return images, ignored


def derived_dir(loader: str, root: Path | str) -> Path:
    """The folder for files a loader derives from the data under ``root`` (converted images,
    crops, an index it had to build): ``$MEDFUSE_DERIVED/<loader>/<hash of root>``, by default
    under ``~/.cache/medfuse/derived``. Created on demand. Never write under the data root: it may be
    read-only or shared, and a second run would find your files as new samples."""
    base = Path(os.environ.get(DERIVED_ENV) or Path.home() / ".cache" / "medfuse" / "derived")
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    folder = base / loader / digest
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_table(path: Path, id_column: str | None = None, sheet: str | int = 0) -> pd.DataFrame:
    """Read a CSV/TSV/Excel table; the id column (if any) is read as text."""
    suffix = path.suffix.lower()
    dtype = {id_column: str} if id_column else None
    try:
        if suffix in (".xlsx", ".xls", ".xlsm"):
            df = pd.read_excel(path, sheet_name=sheet, dtype=dtype)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(path, sep=None if suffix != ".csv" else ",", engine="python" if suffix != ".csv"
                             else "c", dtype=dtype)
        else:
            raise DataError(f"{path}: unsupported table format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors name the file
        raise DataError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise DataError(f"{path}: the table has no rows")
    return df


def label_text(value: Any) -> str | None:
    """Labels are text: ``1.0`` read from a column with gaps becomes ``'1'``; missing is ``None``."""
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _path_or_none(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
        return None
    return str(value)


class SampleTableBuilder:
    """Collects a loader's candidate samples and builds its ``SampleTable`` and ``DataReport``.

    Parameters
    ----------
    source : what is loaded (the root or index file), shown in the report.
    loader : the loader's ``name``.
    """

    def __init__(self, source: str, loader: str):
        self.report = DataReport(source=source, loader=loader)
        self.meta: dict[str, Any] = {}
        self._rows: list[dict[str, Any]] = []
        self._values: list[Mapping[str, Any]] = []

    def add(self, id: str, label: Any, path: str | Path | None = None, mask_path: str | Path | None = None,
            group: str | None = None, values: Mapping[str, Any] | None = None) -> None:
        """One candidate sample.

        ``id``: unique name (a file stem); ``label``: its class (text; ``None``/NaN/'' drops the
        sample into ``report.dropped``); ``path``: the image file (absolute, or ``None`` for
        table-only data); ``mask_path``: its mask file or ``None``; ``group``: patient/slide/smear
        id for grouped cross-validation (default: the id, i.e. every sample its own group);
        ``values``: tabular values of this sample (``{"HGB": 12.1, ...}``), numbers or ``None``.
        """
        self.report.n_found += 1
        if not label_text(label):
            self.drop(id, "no label", counted=True)
            return
        self._rows.append({"id": str(id), "path": _path_or_none(path), "mask_path": _path_or_none(mask_path),
                           "label": label_text(label), "group": None if group is None else str(group)})
        self._values.append(dict(values or {}))

    def bad_file(self, path: str | Path, reason: str) -> None:
        """Report a candidate image file the loader could not use itself (the builder already
        reports files that do not decode)."""
        self.report.n_found += 1
        self.report.bad_files.append({"path": str(path), "reason": reason})

    def drop(self, id: str, reason: str, counted: bool = False) -> None:
        """Report a candidate sample left out for ``reason`` (``counted``: already counted by ``add``)."""
        if not counted:
            self.report.n_found += 1
        self.report.dropped.append({"id": str(id), "reason": reason})

    def mask_problem(self, id: str, path: str | Path, mask_path: str | Path, reason: str) -> None:
        """Report a mask the loader found unusable itself (values it cannot map, a file it expected
        and did not find); then ``add`` the sample with ``mask_path=None`` to keep it without a mask.
        The builder already reports mask files that are missing, do not decode or differ in size."""
        self.report.mask_problems.append({"id": str(id), "path": str(path), "mask_path": str(mask_path),
                                          "reason": reason})

    def note(self, text: str) -> None:
        """Anything else the user should read in the report."""
        self.report.notes.append(text)

    def build(self, jobs: int = 1, progress: bool = False) -> SampleTable:
        """Scan the images, drop or clear what is unusable, and return the ``SampleTable``."""
        rows = pd.DataFrame(self._rows, columns=["id", "path", "mask_path", "label", "group"])
        values = pd.DataFrame(self._values, index=rows.index)
        rows["sha1"] = None
        if rows["path"].notna().any():
            rows, values = self._scan(rows, values, jobs, progress)
        table = self._table(values)
        if table is not None:
            no_image = rows["path"].isna()
            rows.loc[no_image, "sha1"] = row_sha1(table[no_image].assign(label=rows.loc[no_image, "label"]))
        else:
            rows.loc[rows["path"].isna(), "sha1"] = rows.loc[rows["path"].isna(), "id"]
        rows = unique_ids(rows, self.report)
        rows["sha1"] = rows["sha1"].astype(str)
        return sample_table(rows, self.report, table, self.meta)

    def _scan(self, rows: pd.DataFrame, values: pd.DataFrame, jobs: int, progress: bool
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
        from .scan import scan_files

        has_image = rows["path"].notna().to_numpy()
        idx = np.flatnonzero(has_image)
        masks = rows["mask_path"].iloc[idx].tolist()
        scans = scan_files(rows["path"].iloc[idx].tolist(), masks if any(m is not None for m in masks) else None,
                           jobs=jobs, progress=progress)
        keep = np.ones(len(rows), bool)
        for i, s in zip(idx, scans):
            if s.error:
                self.report.bad_files.append({"path": str(rows.at[i, "path"]), "reason": s.error})
                keep[i] = False
                continue
            rows.at[i, "sha1"] = s.sha1
            if s.mask_error:
                self.report.mask_problems.append({"id": str(rows.at[i, "id"]), "path": str(rows.at[i, "path"]),
                                                  "mask_path": str(rows.at[i, "mask_path"]), "reason": s.mask_error})
                rows.at[i, "mask_path"] = None
        self.report.image_properties, self.report.mixed_image_properties = image_properties(
            [(s.format, s.bit_depth, s.channels, s.spacing_um) for i, s in zip(idx, scans) if keep[i]])
        return rows[keep].reset_index(drop=True), values[keep].reset_index(drop=True)

    def _table(self, values: pd.DataFrame) -> pd.DataFrame | None:
        if not len(values.columns):
            return None
        out = pd.DataFrame(index=values.index)
        for col in values.columns:
            try:
                out[str(col)] = pd.to_numeric(values[col], errors="raise").astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{self.report.source}: table value {col!r} is not numeric ({exc}); encode text "
                                "as numbers (e.g. f=0, m=1) before SampleTableBuilder.add(values=...)") from None
        return out


def unique_ids(rows: pd.DataFrame, report: DataReport) -> pd.DataFrame:
    """Make ``rows["id"]`` unique: repeated ids become ``<label>/<id>`` (then the path), listed in
    ``report.duplicate_ids``."""
    dup = rows["id"].duplicated(keep=False)
    if dup.any():
        report.duplicate_ids = sorted(rows.loc[dup, "id"].astype(str).unique().tolist())
        rows.loc[dup, "id"] = rows.loc[dup, "label"].astype(str) + "/" + rows.loc[dup, "id"].astype(str)
        still = rows["id"].duplicated(keep=False)
        if still.any():
            rows.loc[still, "id"] = rows.loc[still, "path"].astype(str)
    return rows


def sample_table(rows: pd.DataFrame, report: DataReport, table: pd.DataFrame | None = None,
                 meta: dict[str, Any] | None = None, raw_table: pd.DataFrame | None = None,
                 raw_ids: Sequence[str] | None = None) -> SampleTable:
    """A loader's ``SampleTable`` from its final ``rows`` (the :data:`SAMPLE_COLUMNS`, ids unique):
    a missing or empty group becomes the id, labels text, missing paths ``None``; ``table`` (one
    row per sample, in order) re-indexed on them; ``report`` completed by
    :func:`medfuse.datareport.finalize` (``raw_table``/``raw_ids``: the table as read, for its checks)."""
    rows = rows.reset_index(drop=True)
    group = rows["group"]
    rows["group"] = group.where(group.notna() & (group.astype(str) != ""), rows["id"])
    rows["label"] = [label_text(v) for v in rows["label"]]
    samples = rows[list(SAMPLE_COLUMNS)].astype(object)
    samples = samples.where(samples.notna(), None).astype({"id": str, "group": str})
    if table is not None:
        table = table.reset_index(drop=True)
        table.index = samples.index
    finalize(report, samples, table, raw_table, raw_ids)
    return SampleTable(samples=samples, table=table, report=report, meta={} if meta is None else meta)


def load_with_reader(loader: Any, reader: Any, root: str | Path, *, jobs: int = 1,
                     progress: Any = False) -> SampleTable:
    """``loader.load(root)`` while its scan decodes with a study's ``reader`` options
    (:func:`medfuse.intensity.reading`), so the data report's depths and spacings are the study's.
    Any other exception than a :class:`~medfuse.errors.MedfuseError` (a bug in a third-party loader)
    becomes a :class:`DataError` naming the loader, its class and the failing line (the original is
    its ``__cause__``). Used by ``medfuse data``, ``compare``, ``train`` and ``train-seg``."""
    from .errors import MedfuseError
    from .intensity import reading

    try:
        with reading(reader):
            return loader.load(root, jobs=jobs, progress=progress)
    except (MedfuseError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a loader's own bug: name the plugin and where it failed
        raise DataError(_loader_crash(loader, root, exc)) from exc


def _loader_crash(loader: Any, root: str | Path, exc: Exception) -> str:
    """The message for an exception a loader did not turn into a :class:`DataError`: the plugin,
    its class, the last line of its own module in the traceback, and what the author should do."""
    import sys
    import traceback

    cls = type(loader)
    own = getattr(sys.modules.get(cls.__module__), "__file__", None)
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in frames if f.filename == own] or frames  # the loader's own line, else the last
    at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (f"loader {getattr(loader, 'name', cls.__name__)!r} ({cls.__module__}.{cls.__qualname__}) failed on "
            f"{root}: {type(exc).__name__}: {exc}{at}. If the data is at fault (a missing column, an unreadable "
            "index), the loader should raise medfuse.errors.DataError naming the file and what to do, and report "
            "single bad rows in its DataReport instead (docs/plugins.md, 'Writing a loader')")
