"""The data report: every problem found while loading a dataset, in one object.

A loader fills a :class:`DataReport` as it goes (bad files, mask problems, rows without
images, ...) and calls :func:`finalize` with the kept samples, which adds the counts per class,
duplicate images (same content hash), NaNs per table column and exact duplicate table rows.
``DataReport.leakage(train_idx, test_idx)`` lists samples whose content appears on both
sides of a split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .util.lazy import lazy_module

pd = lazy_module("pandas")  # imported on first use: registering loader plugins needs no pandas

__all__ = ["DataReport", "finalize", "image_properties", "duplicate_groups", "table_duplicate_rows", "conflicting_rows", "row_sha1"]


@dataclass
class DataReport:
    """Problems and counts of one loaded dataset.

    Attributes
    ----------
    source, loader : what was loaded, with which loader.
    n_found : candidate samples found (image files or table rows) before dropping any.
    n_loaded : samples kept.
    class_counts : kept samples per label.
    bad_files : ``{"path", "reason"}`` of image files that could not be decoded (rows dropped).
    mask_problems : ``{"id", "path", "mask_path", "reason"}``: missing, unreadable or
        mis-shaped masks (sample kept, its ``mask_path`` set to ``None``).
    empty_labels : class folders with no usable image.
    ignored_files : files skipped because their suffix is not an image suffix.
    duplicate_images : groups of sample ids whose image files have identical bytes.
    duplicate_ids : ids that occur more than once (made unique as ``<label>/<id>``).
    table_without_image : table ids with no image.
    images_without_table : sample ids with no table row.
    dropped : ``{"id", "reason"}`` of samples dropped for another reason (e.g. no label).
    bad_annotations : ``{"where", "reason"}`` of annotation lines or files that gave no object
        (unparseable, box outside the image, unknown class, image missing); ``where`` is
        ``file`` or ``file:line`` / ``file:object N`` (object samples, see
        :mod:`medfuse_plugins.annotations`).
    nan_per_column : missing values per table column (only columns with any).
    duplicate_table_rows : groups of ids whose table rows are identical (ignoring the id).
    conflicting_table_rows : groups ``label:id`` whose table values are identical but whose
        labels differ (label noise that caps any model's accuracy).
    label_proxies : text table columns left out because each of their values occurs with one
        label only (a restatement of the label, or an id nested in the classes).
    image_properties : per file type (``dicom``, ``png``, ``tiff``, ...) of the kept images, counts
        of each ``bit_depth``, ``channels`` and ``spacing_um`` (``"row x col"`` micrometres per
        pixel, or ``"unknown"``) found; see :func:`image_properties`.
    mixed_image_properties : flags when the study mixes bit depths or spacings (across all files).
    notes : anything else worth knowing.
    """

    source: str = ""
    loader: str = ""
    n_found: int = 0
    n_loaded: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    bad_files: list[dict[str, str]] = field(default_factory=list)
    mask_problems: list[dict[str, str]] = field(default_factory=list)
    empty_labels: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    duplicate_images: list[list[str]] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    table_without_image: list[str] = field(default_factory=list)
    images_without_table: list[str] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    bad_annotations: list[dict[str, str]] = field(default_factory=list)
    nan_per_column: dict[str, int] = field(default_factory=dict)
    duplicate_table_rows: list[list[str]] = field(default_factory=list)
    conflicting_table_rows: list[list[str]] = field(default_factory=list)
    label_proxies: list[str] = field(default_factory=list)
    image_properties: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    mixed_image_properties: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list, repr=False)
    sha1: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when at least one sample was loaded."""
        return self.n_loaded > 0

    @property
    def n_problems(self) -> int:
        """Number of individual problems (bad files, mask problems, drops, orphans)."""
        return (len(self.bad_files) + len(self.mask_problems) + len(self.dropped) + len(self.empty_labels)
                + len(self.table_without_image) + len(self.images_without_table) + len(self.bad_annotations))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (without the per-sample ``ids``/``sha1`` lists)."""
        out = asdict(self)
        out.pop("ids")
        out.pop("sha1")
        out["n_problems"] = self.n_problems
        return out

    def leakage(self, train_idx: Sequence[int] | np.ndarray, test_idx: Sequence[int] | np.ndarray,
                samples: pd.DataFrame | None = None) -> list[tuple[str, str]]:
        """``(train id, test id)`` pairs with identical content on both sides of a split.

        ``train_idx``/``test_idx`` are positions (as given by scikit-learn splitters) into the
        loaded samples, or into ``samples`` (a table with ``id`` and ``sha1`` columns, e.g. a
        subset of the loaded samples). Content is the image file's bytes, or the table row for
        table-only data.
        """
        if samples is not None:
            ids = samples["id"].astype(str).tolist()
            sha1 = samples["sha1"].where(samples["sha1"].notna(), "").astype(str).tolist()
        else:
            ids, sha1 = self.ids, self.sha1
        if not sha1:
            raise ValueError("DataReport.leakage: this report has no per-sample hashes (not finalized); "
                             "pass samples=")
        by_hash: dict[str, list[str]] = {}
        for i in np.asarray(train_idx, dtype=int):
            if sha1[i]:
                by_hash.setdefault(sha1[i], []).append(ids[i])
        pairs = []
        for j in np.asarray(test_idx, dtype=int):
            for train_id in by_hash.get(sha1[j], []) if sha1[j] else []:
                pairs.append((train_id, ids[j]))
        return pairs

    def summary_lines(self, max_items: int | None = 10) -> list[str]:
        """Human-readable lines: counts, then each kind of problem.

        Bad files and mask problems are always listed in full; other sections show up to
        ``max_items`` examples (``None``: all).
        """
        lines = [f"{self.source or 'dataset'} ({self.loader}): {self.n_loaded} of {self.n_found} samples loaded"]
        if self.class_counts:
            lines.append("per class: " + ", ".join(f"{k}={v}" for k, v in self.class_counts.items()))

        def section(title: str, items: Sequence[str], full: bool = False) -> None:
            if not items:
                return
            limit = len(items) if full or max_items is None else max_items
            lines.append(f"{title}: {len(items)}")
            lines.extend(f"  {it}" for it in items[:limit])
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more")

        section("bad image files (dropped)", [f"{b['path']}: {b['reason']}" for b in self.bad_files], True)
        section("mask problems (kept without mask)",
                [f"{m['path']}: {m['reason']}" + (f" ({m['mask_path']})" if m.get("mask_path") else "")
                 for m in self.mask_problems], True)
        section("labels with no images", self.empty_labels)
        section("dropped samples", [f"{d['id']}: {d['reason']}" for d in self.dropped])
        section("bad annotations (no object)", [f"{b['where']}: {b['reason']}" for b in self.bad_annotations])
        section("duplicate images (identical files)", [", ".join(g) for g in self.duplicate_images])
        section("duplicate ids (renamed <label>/<id>)", self.duplicate_ids)
        section("table rows with no image", self.table_without_image)
        section("images with no table row", self.images_without_table)
        section("identical table rows", [", ".join(g) for g in self.duplicate_table_rows])
        section("identical table values with different labels (label noise; no model can get both right)",
                [", ".join(g) for g in self.conflicting_table_rows])
        if self.nan_per_column:
            lines.append("missing values per column: "
                         + ", ".join(f"{k}={v}" for k, v in self.nan_per_column.items()))
        if self.label_proxies:
            lines.append("table columns left out (each value goes with one label only): "
                         + ", ".join(self.label_proxies))
        section("ignored files (not images)", self.ignored_files)
        for fmt, props in self.image_properties.items():
            lines.append(f"{fmt} images: " + "; ".join(
                f"{key.replace('_', ' ')} " + ", ".join(f"{v} x{n}" for v, n in counts.items())
                for key, counts in props.items()))
        lines.extend(f"warning: {m}" for m in self.mixed_image_properties)
        lines.extend(f"note: {n}" for n in self.notes)
        if (self.n_problems == 0 and not self.duplicate_images and not self.duplicate_table_rows
                and not self.conflicting_table_rows and not self.mixed_image_properties):
            lines.append("no problems found")
        return lines


def _spacing_text(spacing: Sequence[float] | None) -> str:
    return "unknown" if not spacing else f"{float(spacing[0]):.4g}x{float(spacing[1]):.4g} um"


def image_properties(files: Sequence[tuple[str, int, int, Sequence[float] | None]]
                     ) -> tuple[dict[str, dict[str, dict[str, int]]], list[str]]:
    """Per file type, counts of bit depths, channels and spacings of ``(format, bit_depth,
    channels, spacing_um)`` rows; and flags when bit depths or spacings differ across the rows.

    A study mixing bit depths (8-bit PNGs with 12-bit DICOMs) or spacings (two scanners) gives
    features whose differences may be the acquisition rather than the class.
    """
    props: dict[str, dict[str, dict[str, int]]] = {}
    depths: dict[str, dict[str, int]] = {}
    spacings: dict[str, dict[str, int]] = {}
    for fmt, depth, channels, spacing in files:
        fmt = fmt or "unknown"
        entry = props.setdefault(fmt, {"bit_depth": {}, "channels": {}, "spacing_um": {}})
        for key, value in (("bit_depth", str(depth)), ("channels", str(channels)),
                           ("spacing_um", _spacing_text(spacing))):
            entry[key][value] = entry[key].get(value, 0) + 1
        by_depth = depths.setdefault(str(depth), {})
        by_depth[fmt] = by_depth.get(fmt, 0) + 1
        by_spacing = spacings.setdefault(_spacing_text(spacing), {})
        by_spacing[fmt] = by_spacing.get(fmt, 0) + 1
    mixed = []
    for what, found in (("bit depths", depths), ("pixel spacings", spacings)):
        if len(found) > 1:
            mixed.append(f"mixed {what} in one study: " + "; ".join(
                f"{value} ({', '.join(f'{fmt} x{n}' for fmt, n in by_fmt.items())})"
                for value, by_fmt in found.items()))
    return props, mixed


def duplicate_groups(keys: Sequence[str], ids: Sequence[str]) -> list[list[str]]:
    """Groups (size >= 2) of ``ids`` sharing a non-empty key, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for key, ident in zip(keys, ids):
        if key:
            groups.setdefault(key, []).append(str(ident))
    return [g for g in groups.values() if len(g) > 1]


def row_sha1(df: pd.DataFrame) -> list[str]:
    """SHA-1 of each row's values (column names included, so column order does not matter)."""
    import hashlib

    cols = sorted(df.columns, key=str)
    out = []
    for row in df[cols].itertuples(index=False, name=None):
        text = "\x1f".join(f"{c}={_canon(v)}" for c, v in zip(cols, row))
        out.append(hashlib.sha1(text.encode("utf-8")).hexdigest())
    return out


def _canon(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "nan"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def table_duplicate_rows(df: pd.DataFrame, ids: Sequence[str]) -> list[list[str]]:
    """Groups of ``ids`` whose rows of ``df`` are identical."""
    return duplicate_groups(row_sha1(df), ids)


def finalize(report: DataReport, samples: pd.DataFrame, table: pd.DataFrame | None = None,
             raw_table: pd.DataFrame | None = None, raw_ids: Sequence[str] | None = None) -> DataReport:
    """Fill the counts and duplicate checks from the kept ``samples`` (and table).

    ``raw_table``/``raw_ids``: the table as read (all rows, id column removed) for the
    duplicate-row check; defaults to ``table`` and the sample ids.
    """
    report.n_loaded = len(samples)
    labels = samples["label"].astype(str)
    report.class_counts = {str(k): int(v) for k, v in labels.value_counts(sort=False).sort_index().items()}
    report.ids = samples["id"].astype(str).tolist()
    report.sha1 = samples["sha1"].fillna("").astype(str).tolist()
    if samples["path"].notna().any():
        report.duplicate_images = duplicate_groups(report.sha1, report.ids)
    if table is not None:
        nans = table.isna().sum()
        report.nan_per_column = {str(k): int(v) for k, v in nans.items() if v}
    if raw_table is None and table is not None:
        raw_table, raw_ids = table, report.ids
    if raw_table is not None and len(raw_table.columns):
        report.duplicate_table_rows = table_duplicate_rows(raw_table, list(raw_ids or []))
    if table is not None and len(table.columns) and len(table) == len(samples):
        report.conflicting_table_rows = conflicting_rows(table, labels.tolist(), report.ids)
    return report


def conflicting_rows(table: pd.DataFrame, labels: Sequence[str], ids: Sequence[str]) -> list[list[str]]:
    """Groups of ids ``label:id`` whose table values are identical but whose labels differ."""
    keys = row_sha1(table.reset_index(drop=True))
    frame = pd.DataFrame({"key": keys, "label": [str(v) for v in labels], "id": [str(i) for i in ids]})
    mixed = frame.groupby("key")["label"].transform("nunique") > 1
    return [[f"{r.label}:{r.id}" for r in g.sort_values(["label", "id"]).itertuples()]
            for _, g in frame[mixed].groupby("key", sort=False)]
