"""Built-in dataset loaders: ``folder``, ``manifest``, ``pairs`` and ``table``.

Every loader returns a :class:`~medfuse.contracts.SampleTable` whose ``samples`` has the columns
``id, path, mask_path, label, group, sha1`` and whose ``report`` is a
:class:`~medfuse.datareport.DataReport`. Image files are scanned once (read, hashed, fully
decoded, masks checked) with ``jobs`` workers; unusable images are reported and dropped, unusable
masks are reported and the sample is kept without a mask.

Tables (CSV, TSV or Excel) are joined on an id column. Table values become ``SampleTable.table``
(float64, aligned with ``samples``): numeric columns as they are; text columns whose values are
all numbers are parsed; other text columns (e.g. ``Gender`` f/m) are encoded as integer codes in
the sorted order of their distinct values (f=0, m=1), the mapping being stored in
``SampleTable.meta["categories"]``. Missing values stay NaN. Labels are always strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Loader, SampleTable
from medfuse.datareport import DataReport, image_properties, row_sha1
from medfuse.errors import DataError
from medfuse.loading import is_visible, list_images, loader_root, read_table, root_path, sample_table, unique_ids
from medfuse.objects import ObjectRef, split_ref
from medfuse.scan import scan_files
from medfuse.util.lazy import lazy_module

pd = lazy_module("pandas")  # imported on first use: registering the plugin needs no pandas


# ---- paths and files ---------------------------------------------------------------------------

def _is_path(value: Any) -> bool:
    """A non-empty string (pandas may hold a missing path as None, NaN or NA)."""
    return isinstance(value, str) and value != ""


def _mask_index(mask_root: Path) -> dict[tuple[str, str], Path]:
    """``(relative folder, stem) -> mask file`` for every image file under ``mask_root``."""
    index: dict[tuple[str, str], Path] = {}
    for p in list_images(mask_root, recursive=True)[0]:
        index.setdefault((p.parent.relative_to(mask_root).as_posix(), p.stem), p)
    return index


def _require_columns(df: pd.DataFrame, columns: Sequence[str | None], where: str) -> None:
    missing = [c for c in columns if c and c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"the table has: {', '.join(map(str, df.columns))}")


def encode_table(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Numeric float64 copy of ``df``: text columns parsed as numbers or encoded as sorted codes."""
    out = pd.DataFrame(index=df.index)
    categories: dict[str, dict[str, int]] = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(float)
            continue
        if pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype(float)
            continue
        text = s.astype("string").str.strip()
        text = text.mask(text == "")
        parsed = pd.to_numeric(text, errors="coerce")
        if parsed.notna().sum() == text.notna().sum():
            out[col] = parsed.astype(float)
            continue
        values = sorted(text.dropna().unique().tolist())
        mapping = {str(v): i for i, v in enumerate(values)}
        categories[str(col)] = mapping
        out[col] = text.map(mapping).astype(float)
    return out, categories


def _label_proxies(table: pd.DataFrame, labels: pd.Series) -> list[str]:
    """Columns in which every value occurs with one label only: restatements of the label
    (``Cohort`` = Anemic/Healthy) or identifiers nested in the classes (patient ids); either
    would leak the answer into the features."""
    proxies = []
    labels = labels.astype(str)
    for col in table.columns:
        s = table[col]
        keep = s.notna() & labels.notna()
        if keep.sum() < 2 or labels[keep].nunique() < 2:
            continue
        per_value = pd.DataFrame({"v": s[keep].astype(str), "y": labels[keep]}).groupby("v")["y"].nunique()
        if (per_value == 1).all():
            proxies.append(str(col))
    return proxies


# ---- shared assembly -----------------------------------------------------------------------------

class _Assembler:
    """Collects candidate samples, scans their files and builds the SampleTable."""

    def __init__(self, source: str, loader: str):
        self.report = DataReport(source=source, loader=loader)
        self.meta: dict[str, Any] = {}

    def scan(self, rows: pd.DataFrame, jobs: int, progress: bool) -> pd.DataFrame:
        """Scan image files; drop unreadable ones, clear unusable masks, fill ``sha1``."""
        rows = rows.reset_index(drop=True)
        has_masks = rows["mask_path"].notna().any()
        masks = [m if _is_path(m) else None for m in rows["mask_path"]]
        scans = scan_files(rows["path"].tolist(), masks if has_masks else None,
                           jobs=jobs, progress=progress)
        rows["sha1"] = [s.sha1 for s in scans]
        keep = np.ones(len(rows), bool)
        for i, s in enumerate(scans):
            if s.error:
                self.report.bad_files.append({"path": str(rows.at[i, "path"]), "reason": s.error})
                keep[i] = False
            elif s.mask_error:
                self.report.mask_problems.append({"id": str(rows.at[i, "id"]), "path": str(rows.at[i, "path"]),
                                                  "mask_path": str(rows.at[i, "mask_path"]),
                                                  "reason": s.mask_error})
                rows.at[i, "mask_path"] = None
        # A bad image is reported once, as a bad file, not also for its mask or table row.
        dropped = {b["path"] for b in self.report.bad_files}
        self.report.mask_problems = [m for m in self.report.mask_problems if m["path"] not in dropped]
        bad_ids = set(rows.loc[~keep, "id"].astype(str))
        self.report.image_properties, self.report.mixed_image_properties = image_properties(
            [(s.format, s.bit_depth, s.channels, s.spacing_um) for s, k in zip(scans, keep) if k])
        self.report.images_without_table = [i for i in self.report.images_without_table if i not in bad_ids]
        return rows[keep].reset_index(drop=True)

    def missing_mask(self, rows: pd.DataFrame) -> None:
        miss = rows[rows["mask_path"].isna()]
        self.report.mask_problems += [{"id": str(i), "path": str(p), "mask_path": "", "reason": "no mask file found"}
                                      for i, p in zip(miss["id"], miss["path"])]

    def table_block(self, rows: pd.DataFrame, table: pd.DataFrame | None, columns: Sequence[str] | None,
                    auto: bool) -> pd.DataFrame | None:
        """Encoded table columns aligned on ``rows`` (``table`` indexed by the join key)."""
        if table is None or (columns is not None and not len(columns)):
            return None
        if columns is not None:
            _require_columns(table, list(columns), "table_columns")
            table = table[list(columns)]
        encoded, categories = encode_table(table)
        aligned = encoded.reindex(rows["key"].tolist()).reset_index(drop=True)
        if auto and categories:
            # Only text columns are checked: a numeric flag that happens to match the label in a
            # small set is a real (if strong) feature, a text column like Cohort is a restatement.
            proxies = _label_proxies(aligned[list(categories)], rows["label"])
            if proxies:
                self.report.label_proxies = proxies
                n_labels = rows["label"].nunique()
                for col in proxies:
                    if table[col].nunique() > n_labels:
                        self.report.notes.append(f"table column {col!r} looks like a group id nested in the "
                                                 f"classes; pass group_column={col!r} for grouped CV")
                aligned = aligned.drop(columns=proxies)
                categories = {k: v for k, v in categories.items() if k not in proxies}
        if categories:
            self.meta["categories"] = categories
        return aligned

    def build(self, rows: pd.DataFrame, table: pd.DataFrame | None, raw_table: pd.DataFrame | None = None,
              raw_ids: Sequence[str] | None = None) -> SampleTable:
        return sample_table(rows, self.report, table, self.meta, raw_table, raw_ids)


def _table_rows(table: pd.DataFrame, id_column: str, where: str, report: DataReport) -> pd.DataFrame:
    """Index ``table`` by its id column (text); duplicated ids keep their first row."""
    _require_columns(table, [id_column], where)
    table = table.copy()
    table[id_column] = table[id_column].astype("string").str.strip()
    missing_id = table[id_column].isna()
    if missing_id.any():
        report.notes.append(f"{where}: {int(missing_id.sum())} table row(s) without an id were ignored")
        table = table[~missing_id]
    dup = table[id_column].duplicated()
    if dup.any():
        report.notes.append(f"{where}: ids repeated in the table (first row kept): "
                            + ", ".join(table.loc[dup, id_column].astype(str).unique()[:10]))
        table = table[~dup]
    return table.set_index(id_column)


def _join(asm: _Assembler, rows: pd.DataFrame, table: pd.DataFrame, label_column: str | None,
          group_column: str | None) -> pd.DataFrame:
    """Attach labels/groups from ``table`` (indexed by key) to ``rows``; report orphans."""
    keys = set(rows["key"])
    asm.report.table_without_image = sorted(str(k) for k in table.index if k not in keys)
    has_row = rows["key"].isin(table.index)
    asm.report.images_without_table = rows.loc[~has_row, "id"].astype(str).tolist()
    if group_column:
        rows["group"] = rows["key"].map(table[group_column])
    if label_column:
        rows["label"] = rows["key"].map(table[label_column])
        no_label = rows["label"].isna()
        for ident in rows.loc[no_label & has_row, "id"]:
            asm.report.dropped.append({"id": str(ident), "reason": f"no value in label column {label_column!r}"})
        for ident in rows.loc[~has_row, "id"]:
            asm.report.dropped.append({"id": str(ident), "reason": "no table row, so no label"})
        rows = rows[~no_label]
    return rows


def _feature_columns(table: pd.DataFrame, exclude: Sequence[str | None]) -> list[str]:
    drop = {c for c in exclude if c}
    return [c for c in table.columns if c not in drop]


# ---- plugins -------------------------------------------------------------------------------------

class FolderLoader(Loader):
    """Images in one sub-folder per class, with optional mirrored masks and a table joined by id.

    The id of a sample is its file stem. Masks live under ``masks`` in the same relative folder
    with the same stem (any image suffix). With ``label_from`` set to a table column, images are
    collected from every sub-folder and labelled from the table.

    Parameters
    ----------
    path
        Folder holding one sub-folder per class (relative to the data root).
    masks
        Optional folder mirroring `path` with mask files of the same stem.
    table
        Optional CSV/TSV/XLSX table joined on `id_column`.
    id_column
        Table column holding the image stem.
    group_column
        Optional table column with the patient/smear id used for grouped CV.
    group_block
        Without patient ids: group runs of N consecutive file numbers per sub-folder (`cell-0123.jpg`: number 123, group
        123 // N), a proxy for the slide when a set numbers each slide's images in sequence; files without a trailing
        number keep their own group.
    label_from
        `folder` (the class sub-folder) or the name of a table column.
    table_columns
        Table columns to keep as the tabular block (default: all but id/label/group; text columns in which each value
        occurs with one label only are left out and reported, as they restate the label).
    """

    name: ClassVar[str] = "folder"
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict[str, Any]] = {"path": "classes", "masks": "masks"}

    def __init__(self, path: str = ".", masks: str | None = None, table: str | None = None,
                 id_column: str = "id", group_column: str | None = None, label_from: str = "folder",
                 table_columns: list[str] | None = None, group_block: int | None = None):
        self._store_params(locals())

    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        root = loader_root(root)
        folder = root_path(root, self.path, "folder loader 'path'", want_dir=True)
        asm = _Assembler(str(folder), self.name)
        by_folder = self.label_from == "folder"
        if not by_folder and not self.table:
            raise DataError(f"folder loader: label_from={self.label_from!r} names a table column, "
                            "but no 'table' was given")
        if self.group_block is not None and (self.group_column or int(self.group_block) < 1):
            raise DataError("folder loader: group_block must be a positive number of files, and cannot be "
                            "combined with group_column")
        records = []
        if by_folder:
            classes = sorted(d for d in folder.iterdir() if d.is_dir() and is_visible(d))
            if not classes:
                raise DataError(f"folder loader: {folder} has no class sub-folders")
            loose, _ = list_images(folder, recursive=False)
            if loose:
                asm.report.notes.append(f"{len(loose)} image(s) directly in {folder} (not in a class "
                                        "folder) were ignored")
            for d in classes:
                images, ignored = list_images(d, recursive=True)
                asm.report.ignored_files += [str(p) for p in ignored]
                if not images:
                    asm.report.empty_labels.append(d.name)
                records += [(p, d.name) for p in images]
        else:
            images, ignored = list_images(folder, recursive=True)
            asm.report.ignored_files += [str(p) for p in ignored]
            records = [(p, None) for p in images]
        asm.report.n_found = len(records)
        rows = pd.DataFrame({
            "key": [p.stem for p, _ in records], "id": [p.stem for p, _ in records],
            "path": [str(p) for p, _ in records], "label": [lab for _, lab in records],
            "group": [None] * len(records), "rel": [p.parent.relative_to(folder).as_posix() for p, _ in records],
        })
        if self.group_block:
            rows["group"] = [block_group(rel, stem, int(self.group_block)) for rel, stem in zip(rows["rel"], rows["key"])]
        if self.masks:
            mask_root = root_path(root, self.masks, "folder loader 'masks'", want_dir=True)
            index = _mask_index(mask_root)
            rows["mask_path"] = [str(index[(r, k)]) if (r, k) in index else None
                                 for r, k in zip(rows["rel"], rows["key"])]
            asm.missing_mask(rows)
        else:
            rows["mask_path"] = None
        rows = unique_ids(rows, asm.report)
        table = raw = raw_ids = None
        if self.table:
            tpath = root_path(root, self.table, "folder loader 'table'", want_dir=False)
            raw_df = read_table(tpath, self.id_column)
            label_col = None if by_folder else self.label_from
            _require_columns(raw_df, [self.id_column, label_col, self.group_column], str(tpath))
            indexed = _table_rows(raw_df, self.id_column, str(tpath), asm.report)
            rows = _join(asm, rows, indexed, label_col, self.group_column)
            features = indexed[_feature_columns(indexed, [label_col, self.group_column])]
            raw, raw_ids = indexed.drop(columns=[c for c in [self.group_column] if c]), list(indexed.index)
            table = features
        rows = asm.scan(rows, jobs, progress)
        block = asm.table_block(rows, table, self.table_columns, auto=self.table_columns is None)
        if by_folder:
            asm.report.empty_labels = sorted(set(asm.report.empty_labels)
                                             | {d for d in {lab for _, lab in records}
                                                if d not in set(rows["label"])})
        return asm.build(rows, block, raw, raw_ids)


def block_group(rel: str, stem: str, block: int) -> str | None:
    """``<sub-folder>#<number // block>`` for a stem ending in a number (``cell-0123``: 123), else
    None (the sample keeps its own group); the groups of ``group_block``."""
    match = re.search(r"(\d+)$", stem)
    return f"{rel}#{int(match.group(1)) // block}" if match else None


class ManifestLoader(Loader):
    """A CSV manifest with one row per image: ``path,label[,group][,mask]`` plus optional table columns.

    Paths in the manifest are relative to the manifest's folder (or absolute). A path may be an
    object inside an image, ``IMAGE#box=x0,y0,x1,y1`` (:mod:`medfuse.objects`: cut lazily, no crop
    files), grouped by IMAGE unless a group column says otherwise. Other columns become the tabular
    block unless ``table_columns`` says otherwise.

    Parameters
    ----------
    path
        Manifest file (CSV/TSV/XLSX) relative to the data root.
    path_column
        Column with the image path.
    label_column
        Column with the label.
    group_column
        Column with the patient/smear id (used when present).
    mask_column
        Column with the mask path (used when present; empty cells mean no mask).
    id_column
        Column with the sample id (when absent: the image stem, or the path if stems repeat).
    table_columns
        Columns kept as the tabular block (default: every other column; columns that restate the label are left out and
        reported; [] for none).
    """

    name: ClassVar[str] = "manifest"
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict[str, Any]] = {"path": "manifest.csv"}

    def __init__(self, path: str = "manifest.csv", path_column: str = "path", label_column: str = "label",
                 group_column: str = "group", mask_column: str = "mask", id_column: str = "id",
                 table_columns: list[str] | None = None):
        self._store_params(locals())

    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        root = loader_root(root)
        mpath = root_path(root, self.path, "manifest loader 'path'", want_dir=False)
        df = read_table(mpath, self.id_column)
        _require_columns(df, [self.path_column, self.label_column], f"manifest {mpath}")
        base = mpath.parent
        asm = _Assembler(str(mpath), self.name)
        asm.report.n_found = len(df)
        paths = df[self.path_column].astype("string").str.strip()

        def resolve(p: Any) -> str | None:
            if p is None or p is pd.NA or (isinstance(p, float) and np.isnan(p)) or str(p) == "":
                return None
            q = Path(str(p)).expanduser()
            return str(q if q.is_absolute() else base / q)

        rows = pd.DataFrame({"path": [resolve(p) for p in paths]})
        rows["id"] = (df[self.id_column].astype(str).tolist() if self.id_column in df.columns
                      else [Path(p).stem if _is_path(p) else f"row{i}" for i, p in enumerate(rows["path"])])
        rows["key"] = list(df.index)
        rows["label"] = df[self.label_column].tolist()
        # objects (IMAGE#box=...) are grouped by their image unless the manifest names groups
        rows["group"] = (df[self.group_column].tolist() if self.group_column in df.columns
                         else [split_ref(p)[0] if _is_path(p) and ObjectRef.parse(p) else None for p in rows["path"]])
        has_mask_col = self.mask_column in df.columns
        rows["mask_path"] = ([resolve(m) for m in df[self.mask_column].astype("string").str.strip()]
                             if has_mask_col else None)
        no_path = rows["path"].isna()
        for i in np.flatnonzero(no_path):
            asm.report.dropped.append({"id": str(rows.at[i, "id"]), "reason": f"empty {self.path_column!r}"})
        no_label = rows["label"].isna() & ~no_path
        for i in np.flatnonzero(no_label):
            asm.report.dropped.append({"id": str(rows.at[i, "id"]), "reason": f"empty {self.label_column!r}"})
        missing = ~no_path & ~no_label & ~rows["path"].map(lambda p: _is_path(p) and Path(split_ref(p)[0]).is_file())
        for i in np.flatnonzero(missing):
            asm.report.bad_files.append({"path": str(rows.at[i, "path"]), "reason": "file not found"})
        if has_mask_col:
            gone = rows["mask_path"].notna() & ~rows["mask_path"].map(
                lambda m: _is_path(m) and Path(split_ref(m)[0]).is_file())
            for i in np.flatnonzero(gone & ~missing & ~no_path & ~no_label):
                asm.report.mask_problems.append({"id": str(rows.at[i, "id"]), "path": str(rows.at[i, "path"]),
                                                 "mask_path": str(rows.at[i, "mask_path"]),
                                                 "reason": "mask file not found"})
            rows.loc[gone, "mask_path"] = None
        rows = rows[~no_path & ~no_label & ~missing]
        if self.id_column not in df.columns:
            dup = rows["id"].duplicated(keep=False)
            rows.loc[dup, "id"] = rows.loc[dup, "path"]
        else:
            rows = unique_ids(rows, asm.report)
        rows = asm.scan(rows, jobs, progress)
        used = [self.path_column, self.label_column, self.group_column, self.mask_column, self.id_column]
        columns = _feature_columns(df, used) if self.table_columns is None else list(self.table_columns)
        _require_columns(df, columns, f"manifest {mpath} table_columns")
        block = (asm.table_block(rows, df[columns], None, auto=self.table_columns is None)
                 if columns else None)
        return asm.build(rows, block)


class PairsLoader(Loader):
    """An image folder and a mask folder matched by file stem, with optional labels (CSV id,label).

    Without ``labels`` every sample's label is ``None`` (segmentation data). With ``labels``,
    images with no label row are reported and dropped.

    Parameters
    ----------
    images
        Folder of images (searched recursively), relative to the data root.
    masks
        Folder of masks with the same stems.
    labels
        Optional CSV/XLSX with the id and label columns.
    id_column
        Id column of the labels table (the image stem).
    label_column
        Label column of the labels table.
    group_column
        Optional group column of the labels table.
    """

    name: ClassVar[str] = "pairs"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, images: str = "images", masks: str = "masks", labels: str | None = None,
                 id_column: str = "id", label_column: str = "label", group_column: str | None = None):
        self._store_params(locals())

    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        root = loader_root(root)
        folder = root_path(root, self.images, "pairs loader 'images'", want_dir=True)
        mask_root = root_path(root, self.masks, "pairs loader 'masks'", want_dir=True)
        asm = _Assembler(str(folder), self.name)
        images, ignored = list_images(folder, recursive=True)
        asm.report.ignored_files = [str(p) for p in ignored]
        asm.report.n_found = len(images)
        index = _mask_index(mask_root)
        by_stem: dict[str, Path] = {}
        for (_, stem), p in index.items():
            by_stem.setdefault(stem, p)
        rows = pd.DataFrame({"key": [p.stem for p in images], "id": [p.stem for p in images],
                             "path": [str(p) for p in images], "label": [None] * len(images),
                             "group": [None] * len(images)})
        rels = [p.parent.relative_to(folder).as_posix() for p in images]
        rows["mask_path"] = [str(index.get((r, k)) or by_stem.get(k)) if (index.get((r, k)) or by_stem.get(k))
                             else None for r, k in zip(rels, rows["key"])]
        asm.missing_mask(rows)
        rows = unique_ids(rows, asm.report)
        table = raw = raw_ids = None
        if self.labels:
            lpath = root_path(root, self.labels, "pairs loader 'labels'", want_dir=False)
            raw_df = read_table(lpath, self.id_column)
            _require_columns(raw_df, [self.id_column, self.label_column, self.group_column], str(lpath))
            indexed = _table_rows(raw_df, self.id_column, str(lpath), asm.report)
            rows = _join(asm, rows, indexed, self.label_column, self.group_column)
            table = indexed[_feature_columns(indexed, [self.label_column, self.group_column])]
            raw, raw_ids = indexed, list(indexed.index)
        rows = asm.scan(rows, jobs, progress)
        block = asm.table_block(rows, table, None, auto=True) if table is not None and len(table.columns) else None
        st = asm.build(rows, block, raw if block is not None else None, raw_ids if block is not None else None)
        return st


class TableLoader(Loader):
    """A table with no images (CSV/TSV/XLSX): one sample per row, label from a column.

    ``sha1`` of a sample is the hash of its row values (label included, id excluded), so exact
    duplicate rows are found and flagged as leakage when they straddle a split. Without a
    ``group_column``, the group of a row is the hash of its feature values (label excluded): rows
    with identical values but different labels stay in one fold, so that no model is scored on the
    twin of a training row that carries the other label.

    Parameters
    ----------
    path
        Table file relative to the data root.
    label_column
        Column with the label.
    id_column
        Optional id column (default: `row<n>` from the row number).
    group_column
        Optional patient/group column (default: rows with identical feature values form a group).
    table_columns
        Columns kept as features (default: all but id/label/group).
    sheet
        Excel sheet name or index.
    """

    name: ClassVar[str] = "table"
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict[str, Any]] = {"path": "table.csv", "id_column": "id"}

    def __init__(self, path: str = "table.csv", label_column: str = "label", id_column: str | None = None,
                 group_column: str | None = None, table_columns: list[str] | None = None,
                 sheet: str | int = 0):
        self._store_params(locals())

    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        root = loader_root(root)
        tpath = root_path(root, self.path, "table loader 'path'", want_dir=False)
        df = read_table(tpath, self.id_column, self.sheet).reset_index(drop=True)
        _require_columns(df, [self.label_column, self.id_column, self.group_column], str(tpath))
        asm = _Assembler(str(tpath), self.name)
        asm.report.n_found = len(df)
        ids = (df[self.id_column].astype(str) if self.id_column else pd.Series([f"row{i}" for i in range(len(df))]))
        features = (list(self.table_columns) if self.table_columns is not None
                    else _feature_columns(df, [self.label_column, self.id_column, self.group_column]))
        _require_columns(df, features, f"{tpath} table_columns")
        rows = pd.DataFrame({"key": df.index, "id": ids.values, "path": None, "mask_path": None,
                             "label": df[self.label_column].values,
                             "group": (df[self.group_column].values if self.group_column
                                       else row_sha1(df[features]))})
        content = df[[*features, self.label_column]]
        rows["sha1"] = row_sha1(content)
        no_label = rows["label"].isna()
        for ident in rows.loc[no_label, "id"]:
            asm.report.dropped.append({"id": str(ident), "reason": f"no value in label column {self.label_column!r}"})
        rows = rows[~no_label]
        rows = unique_ids(rows, asm.report)
        block = asm.table_block(rows, df[features], None, auto=False)
        raw_ids = list(ids)
        return asm.build(rows, block, content, raw_ids)


@hookimpl
def medfuse_plugins():
    return [FolderLoader, ManifestLoader, PairsLoader, TableLoader]
