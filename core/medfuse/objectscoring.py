"""Whole-image scoring: find the cells of each smear, classify each, summarise each smear.

``medfuse score BUNDLE SMEARS -o OUT --objects FINDER`` (:func:`score_objects`):

1. each image is read (as the bundle's training read it) and ``FINDER``, an instance segmenter
   (:class:`medfuse.contracts.InstanceMaker`: ``smear_cells``, ``rbc_instances``,
   ``wbc_instances``, ``platelet_instances``, or a plugin's), gives its instance label image;
2. each object is measured (:func:`medfuse.cellfinding.measure_instances`) and cut out of the image
   with :func:`medfuse.objects.crop` (edge-repeat border) by the bundle's crop rule
   (:func:`crop_rule`): the :class:`medfuse.objects.CropRule` its training loader recorded
   (``inputs.objects``: the box plus a margin, or a fixed square centred on the box), else, for
   bundles without one, the tight box grown on every side by :data:`MARGIN` times its larger side
   (a 40 px cell is cut as a 56 px square-ish crop); ``margin`` / ``crop_size`` override it. The
   object's sample path ``IMAGE#box=x0,y0,x1,y1`` names that crop, so ``medfuse score`` on it
   reproduces the object's row;
3. the crops are classified by the bundle in batches (any image-classifier bundle; one whose
   pipeline uses dataset masks gets the object's own instance mask as the mask). The bundle's
   out-of-distribution checks apply per crop: its image descriptor holds the crop's colour
   statistics and its height and width, so an object of a size or colour the bundle never saw
   gets a ``warning``.

Outputs, both written atomically at the end, chunk parts resumable as in :mod:`medfuse.scoring`:

* ``OUT`` (per object): ``path`` (the object's sample path; the image's path on a row without an
  object), ``image``, ``object_id`` (its value in the label image), ``centroid_x``,
  ``centroid_y``, ``box_x0, box_y0, box_x1, box_y1`` (tight box, ``x1``/``y1`` exclusive),
  ``area`` (pixels), ``prediction``, ``proba.<class>``, ``warning``, ``error``. An image that
  cannot be read, or in which no object is found, is one row with an empty ``object_id`` and the
  reason in ``error`` ("no objects found by FINDER").
* ``SUMMARY`` (per image, default ``OUT`` with ``.summary`` before the suffix): ``image``,
  ``n_objects``, ``n_classified``, ``n_warned``, ``n_failed``, ``count.<class>``,
  ``proportion.<class>`` (of the classified objects), ``labels_path`` and ``error``.
* ``--write-masks DIR``: each image's instance label image as a 16-bit PNG (value = ``object_id``),
  at its path relative to the inputs' common folder, suffix ``.png``.

Parallelism: ``jobs`` local worker processes, chunks of ``chunk_size`` images (default
:data:`CHUNK_SIZE`). The Dask backend is not supported here.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .cellfinding import BOX_COLUMNS, measure_instances
from .objects import FOUND_BOX_MARGIN, CropRule, ObjectRef, crop
from .outputs import label_png_paths, write_label_png
from .scoring import (
    SCORING_THREADS,
    ChunkTask,
    LocalPool,
    ScoreSummary,
    ScoringError,
    assemble_parts,
    list_inputs,
    output_kind,
    output_metadata,
    part_name,
    prepare_parts,
    windowed,
    worker_bundle,
    write_part,
)
from .util.progress import Progress, progress_bar

MARGIN = FOUND_BOX_MARGIN  # bundles without a crop rule: tight box grown by this fraction of its larger side
CHUNK_SIZE = 8  # images per chunk
OBJECT_COLUMNS = ("image", "object_id", "centroid_x", "centroid_y", *BOX_COLUMNS, "area")

__all__ = ["MARGIN", "ObjectScoreSummary", "ObjectTask", "crop_rule", "parse_finder", "score_objects",
           "summary_path"]


@dataclass(frozen=True)
class ObjectTask:
    """What every chunk of one object-scoring job shares: the bundle task, the finder (plugin
    name and parameters as sorted ``(key, value)`` pairs), the crop rule and the masks folder."""

    chunk: ChunkTask
    finder: str
    finder_params: tuple[tuple[str, Any], ...] = ()
    crop: CropRule = CropRule("box", margin=MARGIN)
    masks_dir: str | None = None


def parse_finder(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME"`` or ``"NAME:PARAM=VALUE,PARAM=VALUE"`` -> ``(name, params)``; values are read as
    int, float, true/false, or else kept as text."""
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ScoringError(f"--objects {spec!r}: expected NAME or NAME:PARAM=VALUE,...; got {item!r}")
        params[key.strip()] = _value(value.strip())
    if not name.strip():
        raise ScoringError(f"--objects {spec!r}: no finder name (e.g. smear_cells, rbc_instances)")
    return name.strip(), params


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


_FINDERS: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}


def make_finder(name: str, params: dict[str, Any] | tuple[tuple[str, Any], ...]) -> Any:
    """The instance segmenter ``name`` with ``params`` (cached per process); a clear error when the
    plugin is unknown or returns masks only."""
    from .contracts import InstanceMaker
    from .host import get_host

    key = (name, tuple(sorted(dict(params).items())))
    finder = _FINDERS.get(key)
    if finder is None:
        host = get_host()
        cls = host.get(name, kind="mask")
        if not issubclass(cls, InstanceMaker):
            finders = [n for n in host.names("mask") if issubclass(host.get(n), InstanceMaker)]
            raise ScoringError(f"--objects {name}: this mask plugin gives no instances (no predict_instances); "
                               f"use one of: {', '.join(finders)}")
        finder = host.create(name, dict(params), kind="mask")
        finder.validate_params()
        _FINDERS[key] = finder
    return finder


def crop_rule(manifest: dict[str, Any], where: str, margin: float | None = None, crop_size: int | None = None,
              note: Callable[[str], None] | None = None) -> CropRule:
    """How to cut found objects for a bundle: ``--crop-size`` (a centred square) or ``--margin``
    (the box plus that fraction) when given, else the rule recorded at training
    (``inputs.objects``, validated), else the box plus :data:`MARGIN` (bundles without one).
    An override that differs from the recorded rule is said through ``note``."""
    if margin is not None and crop_size is not None:
        raise ScoringError("--margin and --crop-size both choose the crop: give one")
    if margin is not None and not margin >= 0:
        raise ScoringError(f"--margin {margin}: expected a fraction >= 0 of the object's larger side (e.g. 0.2)")
    if crop_size is not None and (isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1):
        raise ScoringError(f"--crop-size {crop_size}: expected a side in pixels >= 1 (e.g. 128)")
    raw = manifest.get("inputs", {}).get("objects")
    recorded = None if raw is None else CropRule.from_dict(raw, f"{where}: manifest.json inputs.objects")
    if crop_size is not None or margin is not None:
        chosen = CropRule("centred", size=crop_size) if crop_size is not None else CropRule("box", margin=margin)
        if recorded is not None and chosen != recorded and note is not None:
            flag = "--crop-size" if crop_size is not None else "--margin"
            note(f"note: {flag} overrides the bundle's crop rule: cutting {chosen.describe()}, while its training "
                 f"objects were cut as {recorded.describe()} (expect out-of-distribution warnings)")
        return chosen
    return recorded if recorded is not None else CropRule("box", margin=MARGIN)


def summary_path(out: Path) -> Path:
    """The default per-image summary beside ``out``: ``cells.parquet`` -> ``cells.summary.parquet``."""
    return out.with_name(f"{out.stem}.summary{out.suffix}")


@dataclass
class ObjectScoreSummary(ScoreSummary):
    """A :class:`~medfuse.scoring.ScoreSummary` whose rows are objects, with the image count."""

    n_images: int = 0
    summary_out: Path | None = None

    def describe(self) -> str:
        lines = super().describe().replace("input(s)", "row(s)").replace("images/s", "rows/s").split("\n")
        rate = self.n_images / self.seconds if self.seconds > 0 else float("nan")
        lines.insert(1, f"{self.n_images} image(s), {rate:.2f} images/s; {self.n_scored} object(s) classified, "
                        f"per-image summary -> {self.summary_out}")
        return "\n".join(lines)


# ---- the worker -----------------------------------------------------------------------------------

def score_objects_chunk(task: ObjectTask, index: int, rows: pd.DataFrame,
                        parent_pid: int | None = None) -> tuple[int, pd.DataFrame, float]:
    """Find, cut and classify the objects of one chunk of images: ``(index, frame, seconds)``."""
    from threadpoolctl import threadpool_limits

    from .bundle import row_error
    from .imageio import read_image_with_info
    from .intensity import keep_rule

    if parent_pid:
        from .scoring import exit_with_parent

        exit_with_parent(parent_pid)
    t0 = time.perf_counter()
    c = task.chunk
    bundle = worker_bundle(c.bundle_path, c.manifest_sha256, c.threads, c.trust_pickle)
    finder = make_finder(task.finder, task.finder_params)
    meta: list[dict[str, Any]] = []  # one per output row
    crops: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    with threadpool_limits(limits=c.threads):
        for path, read_path, labels_path in zip(rows["path"], rows["read_path"], rows["labels_path"]):
            try:
                image = read_image_with_info(read_path, max_pixels=c.max_pixels, options=bundle.read_options,
                                             native=True)[0]  # at its depth, as training's objects (#16)
                labels = finder.predict_instances(image)
                if task.masks_dir and labels_path:
                    write_label_png(Path(task.masks_dir) / labels_path, labels)
            except Exception as exc:  # noqa: BLE001 - the image's row carries the reason, the job goes on
                meta.append({"path": path, "image": path, "error": row_error(exc, path)})
                continue
            table = measure_instances(labels)
            if table.empty:
                meta.append({"path": path, "image": path,
                             "error": f"{path}: no objects found by {task.finder} (an empty smear, or the finder "
                                      "does not suit these images)"})
                continue
            for row in table.itertuples(index=False):
                tight = (row.box_x0, row.box_y0, row.box_x1, row.box_y1)
                box = task.crop.box(tight)
                crops.append(keep_rule(image, crop(image, box, path)))
                if bundle.needs_masks:
                    masks.append((crop(labels, box, path) == row.object_id).astype(np.uint8))
                meta.append({"path": ObjectRef(path, box).path, "image": path, "error": "",
                             "crop": len(crops) - 1, **row._asdict()})
        proba, errors, warns = _classify(bundle, crops, masks if bundle.needs_masks else None, c.batch_size)
    df = _frame(bundle.classes, meta, proba, errors, warns)
    return index, df, time.perf_counter() - t0


def _classify(bundle: Any, crops: list[np.ndarray], masks: list[np.ndarray] | None,
              batch_size: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Probabilities, errors and warnings of the crops, in batches; a batch that raises is scored
    crop by crop, so one bad object costs only its own row."""
    n = len(crops)
    proba = np.full((n, len(bundle.classes)), np.nan)
    errors, warns = [""] * n, [""] * n
    step = max(1, batch_size)
    for start in range(0, n, step):
        idx = list(range(start, min(n, start + step)))
        try:
            groups = [(idx, bundle._score([crops[i] for i in idx], [masks[i] for i in idx] if masks else None, None))]
        except Exception:  # noqa: BLE001 - find the bad crop(s) one by one
            groups = []
            for i in idx:
                try:
                    groups.append(([i], bundle._score([crops[i]], [masks[i]] if masks else None, None)))
                except Exception as exc:  # noqa: BLE001 - one object's error
                    from .errors import describe_exception

                    errors[i] = describe_exception(exc)
        for rows, (p, e, w) in groups:
            proba[rows] = p
            for i, ei, wi in zip(rows, e, w):
                errors[i], warns[i] = ei, wi
    bad = ~np.isfinite(proba).all(axis=1)
    for i in np.flatnonzero(bad):
        errors[i] = errors[i] or "pipeline returned non-finite probabilities"
        proba[i] = np.nan
    return proba, errors, warns


def _frame(classes: list[str], meta: list[dict[str, Any]], proba: np.ndarray, errors: list[str],
           warns: list[str]) -> pd.DataFrame:
    """The per-object rows of one chunk, in the column order of :func:`_schema`."""
    k = len(classes)
    n = len(meta)
    P = np.full((n, k), np.nan)
    err, warn = [""] * n, [""] * n
    for j, m in enumerate(meta):
        err[j] = m.get("error", "")
        if "crop" in m:
            i = m["crop"]
            P[j] = proba[i]
            warn[j] = warns[i]
            if errors[i]:
                err[j] = f"{m['path']}: {errors[i]}" if m["path"] not in errors[i] else errors[i]
                P[j] = np.nan
    scored = np.isfinite(P).all(axis=1) if n else np.zeros(0, bool)
    labels = np.asarray(classes, dtype=object)[np.argmax(np.nan_to_num(P, nan=-1.0), axis=1)] if n else []
    df = pd.DataFrame({"path": pd.Series([m["path"] for m in meta], dtype=object),
                       "image": pd.Series([m["image"] for m in meta], dtype=object)})
    for col in OBJECT_COLUMNS[1:]:
        values = [m.get(col) for m in meta]
        df[col] = pd.Series(values, dtype="Float64" if col.startswith("centroid") else "Int64")
    df["prediction"] = pd.Series(np.where(scored, labels, None) if n else [], dtype=object)
    for c, cls in enumerate(classes):
        df[f"proba.{cls}"] = P[:, c].astype(np.float64)
    df["warning"] = pd.Series(warn, dtype=object)
    df["error"] = pd.Series(err, dtype=object)
    return df


def _schema(classes: list[str]) -> Any:
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("image", pa.string()), ("object_id", pa.int64()),
                      ("centroid_x", pa.float64()), ("centroid_y", pa.float64()),
                      *[(c, pa.int64()) for c in BOX_COLUMNS], ("area", pa.int64()), ("prediction", pa.string()),
                      *[(f"proba.{c}", pa.float64()) for c in classes], ("warning", pa.string()),
                      ("error", pa.string())])


# ---- the job --------------------------------------------------------------------------------------

def score_objects(bundle: str | Path, inputs: str | Path | pd.DataFrame, out: str | Path, finder: str, *,
                  margin: float | None = None, crop_size: int | None = None, summary: str | Path | None = None, write_masks: str | Path | None = None,
                  jobs: int = 1, chunk_size: int = CHUNK_SIZE, batch_size: int = 256, resume: bool = False,
                  progress: Progress = True, keep_parts: bool = False, max_pixels: int | None = None,
                  note: Callable[[str], None] | None = None,
                  trust_pickle: bool = False) -> ObjectScoreSummary:
    """Find, cut and classify the objects of every image of ``inputs`` (see the module docstring).

    Parameters
    ----------
    bundle : trained bundle folder (an image classifier, e.g. trained on object crops).
    inputs : folder, glob, CSV manifest (``path`` column) or a DataFrame from :func:`list_inputs`.
    out : the per-object table, ``.csv`` or ``.parquet``.
    finder : ``NAME`` or ``NAME:PARAM=VALUE,...`` of an instance segmenter (:func:`parse_finder`).
    margin : crop = tight box grown by ``margin`` x its larger side on every side (>= 0); overrides
        the bundle's crop rule (default: the rule recorded at training, see :func:`crop_rule`).
    crop_size : crop = a ``crop_size`` square centred on the object's box; overrides likewise.
    summary : the per-image table (default :func:`summary_path` of ``out``, same format).
    write_masks : folder for each image's instance label image (16-bit PNG).
    jobs, batch_size, resume, progress, keep_parts, max_pixels, note, trust_pickle : as in
        :func:`medfuse.scoring.score`; ``chunk_size``: images per chunk.

    Returns the :class:`ObjectScoreSummary` of the per-object table (its rows are objects, plus
    one row per image without objects; ``n_images`` the images).
    """
    from .bundle import load_verified, verify_bundle
    from .outputs import guarded_output

    t0 = time.perf_counter()
    out = Path(out)
    kind = output_kind(out)
    summary_out = Path(summary) if summary is not None else summary_path(out)
    if output_kind(summary_out) != kind or summary_out == out:
        raise ScoringError(f"--summary {summary_out}: must differ from --out and have its format ({out.suffix})")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be >= 1, got {chunk_size}")
    name, params = parse_finder(finder)
    make_finder(name, params)  # an unknown or mask-only finder fails before any work
    with guarded_output(out, summary_out, note=note):
        path, manifest, digest = verify_bundle(bundle, trust_pickle=trust_pickle)
        loaded = load_verified(path, manifest, digest, threads=SCORING_THREADS)
        rule = crop_rule(manifest, str(path), margin, crop_size, note)
        if loaded.table_columns:
            raise ScoringError(f"{path}: the bundle needs tabular columns ({', '.join(loaded.table_columns)}); "
                               "objects found in images have none")
        task = ObjectTask(ChunkTask(str(path), digest, batch_size, SCORING_THREADS, max_pixels, trust_pickle),
                          name, tuple(sorted(params.items())), rule,
                          str(Path(write_masks).resolve()) if write_masks else None)
        table = inputs.copy() if isinstance(inputs, pd.DataFrame) else list_inputs(inputs)
        if "read_path" not in table:
            table["read_path"] = table["path"]
        table = table[["path", "read_path"]].reset_index(drop=True)
        table["labels_path"] = label_png_paths(table["read_path"].astype(str).tolist())
        parts = out.with_name(out.name + ".parts")
        from .inputs import inputs_digest

        plan = {"bundle": str(path), "manifest_sha256": digest, "chunk_size": chunk_size, "n_inputs": len(table),
                "inputs_sha1": inputs_digest(table),
                "objects": {"finder": name, "params": params, "crop": rule.to_dict()}}
        table = prepare_parts(parts, plan, table, resume)
        n = len(table)
        n_chunks = -(-n // chunk_size)
        classes = [str(c) for c in manifest["classes"]]
        schema = _schema(classes)
        done = {i for i in range(n_chunks) if (parts / part_name(i)).is_file()}
        todo = [i for i in range(n_chunks) if i not in done]
        resumed = sum(min(chunk_size, n - i * chunk_size) for i in done)
        from .scoring import keep_bundle

        keep_bundle(str(path), digest, loaded)

        def chunk_rows(i: int) -> pd.DataFrame:
            return table.iloc[i * chunk_size:(i + 1) * chunk_size].reset_index(drop=True)

        advance, close = progress_bar(n, "scoring", progress, completed=resumed, rate=True)
        try:
            for i, df, _secs in _run(task, todo, chunk_rows, jobs):
                write_part(df, parts / part_name(i), schema)
                advance(len(chunk_rows(i)))
        finally:
            close()
        result = assemble_parts(parts, n_chunks, out, kind, schema, output_metadata(str(path), digest))
        _write_summary(parts, n_chunks, table, classes, summary_out, kind, schema, write_masks is not None)
    result = ObjectScoreSummary(**vars(result), n_images=n, summary_out=summary_out)
    result.n_chunks, result.chunks_resumed, result.resumed_rows = n_chunks, len(done), 0
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    result.seconds = time.perf_counter() - t0
    return result


def _run(task: ObjectTask, todo: list[int], chunk_rows: Callable[[int], pd.DataFrame], jobs: int):
    if not todo:
        return
    if jobs == 1:
        for i in todo:
            yield score_objects_chunk(task, i, chunk_rows(i))
        return
    pool = LocalPool(jobs)
    try:
        yield from windowed(pool.executor.submit, task, todo, chunk_rows, os.getpid(), window=2 * pool.workers,
                             fn=score_objects_chunk)
    finally:
        pool.close()


def summarise(objects: pd.DataFrame, images: list[str], classes: list[str]) -> pd.DataFrame:
    """Per-image counts from the per-object table: ``image, n_objects, n_classified, n_warned,
    n_failed, count.<class>..., proportion.<class>..., error`` (one row per image, in order)."""
    has_obj = objects["object_id"].notna()
    classified = objects["prediction"].notna()
    warned = classified & objects["warning"].fillna("").astype(bool)
    failed = has_obj & ~classified
    g = pd.DataFrame({"image": objects["image"], "obj": has_obj, "cls": classified, "warn": warned,
                      "fail": failed}).groupby("image", sort=False).sum()
    counts = pd.crosstab(objects.loc[classified, "image"], objects.loc[classified, "prediction"])
    image_error = objects.loc[~has_obj].drop_duplicates("image").set_index("image")["error"]
    out = pd.DataFrame({"image": pd.Series(images, dtype=object)})
    idx = out["image"]
    out["n_objects"] = g["obj"].reindex(idx).fillna(0).astype(np.int64).to_numpy()
    out["n_classified"] = g["cls"].reindex(idx).fillna(0).astype(np.int64).to_numpy()
    out["n_warned"] = g["warn"].reindex(idx).fillna(0).astype(np.int64).to_numpy()
    out["n_failed"] = g["fail"].reindex(idx).fillna(0).astype(np.int64).to_numpy()
    for c in classes:
        col = counts[c].reindex(idx).fillna(0) if c in counts else pd.Series(0, index=idx)
        out[f"count.{c}"] = col.astype(np.int64).to_numpy()
    denom = out["n_classified"].replace(0, np.nan)
    for c in classes:
        out[f"proportion.{c}"] = (out[f"count.{c}"] / denom).astype(np.float64)
    out["error"] = image_error.reindex(idx).fillna("").astype(object).to_numpy()
    return out


def _write_summary(parts: Path, n_chunks: int, table: pd.DataFrame, classes: list[str], target: Path, kind: str,
                   schema: Any, with_masks: bool) -> None:
    import pyarrow.parquet as pq

    from .outputs import atomic_output

    cols = ["image", "object_id", "prediction", "warning", "error"]
    objects = pd.concat([pq.read_table(parts / part_name(i), schema=schema, columns=cols).to_pandas()
                         for i in range(n_chunks)], ignore_index=True) if n_chunks else pd.DataFrame(columns=cols)
    df = summarise(objects, table["path"].astype(str).tolist(), classes)
    df.insert(len(df.columns) - 1, "labels_path", table["labels_path"].to_numpy() if with_masks else "")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        if kind == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
