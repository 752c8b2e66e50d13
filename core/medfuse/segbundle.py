"""Segmentation bundles: a mask maker trained into a bundle, applied to image files, scored
against ground-truth masks.

A segmentation bundle is a format-2 bundle (:mod:`medfuse.bundle`: manifest with the sha256 of
every artifact, skops object graph with an allow-list of types, networks as ONNX, no pickle) whose
manifest says ``"kind": "segmentation"`` and whose pipeline is a :class:`FittedSegmenter`: one
mask plugin (``unet``, ``unet_instances``, a classical one such as ``otsu_cell``, or an instance
finder such as ``rbc_instances``), fitted on a study's image/mask pairs when it is trainable.
It loads through the same checks as a classifier bundle (:func:`medfuse.bundle.verify_bundle`);
``medfuse score`` refuses it and ``medfuse segment`` refuses a classifier bundle.

Outputs of :func:`segment_files` (``medfuse segment``), in the folder ``out``:

* ``masks/<path relative to the INPUT folder>.png``: the mask of each image, its pixel
  values the canonical mask (0 background, 1 cell, 2 nucleus; 8-bit) or, for an instance maker,
  the instance label image (0 background, ``1..n`` one value per object; 16-bit);
* ``segment.csv``: one row per input (``path, mask, height, width, foreground, n_objects, truth``,
  the metrics, ``error``, ``truth_error``); a file that cannot be read or segmented is a row with
  its ``error`` and the batch goes on; a missing, unreadable or mis-sized truth mask is that
  row's ``truth_error`` (its mask is still written);
* ``summary.json``: counts and the mean and median of each metric over the images with a truth;
* ``segment.run.json``: what ``resume`` must match (bundle manifest sha256, inputs, truth, max_pixels).

``jobs`` > 1 segments chunks of images in joblib worker processes (rows in input order, equal to
the 1-job rows); ``segment.csv`` is rewritten after every chunk, so ``resume`` segments only the
images without a row and a mask file.

Metrics (:mod:`medfuse.segmetrics`, in pixels): ``cell_dice``, ``cell_hd95``, ``cell_hd_max`` on
``mask > 0``, plus the ``nucleus_*`` ones when the maker predicts 3 classes. Every file is
written under a temporary name and renamed, so each is complete or absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import BundleError, MedfuseError, describe_exception
from .util.jsonable import to_jsonable
from .util.progress import Progress

KIND = "segmentation"
SEGMENTER_CLASS = "medfuse.segbundle:FittedSegmenter"
GRAPH = "segmenter.skops"
ARTIFACTS = "artifacts"
TABLE = "segment.csv"
SUMMARY = "summary.json"
MASKS = "masks"
RUN = "segment.run.json"  # what a --resume must match: bundle sha256, inputs, truth folder, max_pixels
CHUNK_SIZE = 8  # images per chunk: the unit of parallelism and of checkpointing segment.csv
TRUTH_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")


# ---- the fitted segmenter -----------------------------------------------------------------------

class FittedSegmenter:
    """One fitted mask plugin as a bundle's pipeline (``spec``, ``save``, ``load``, ``segment``).

    Attributes
    ----------
    maker_ : the fitted :class:`~medfuse.contracts.MaskMaker` (an ``InstanceMaker`` gives instances).
    instances_ : whether :meth:`segment` returns instance labels (int32) rather than a mask (uint8).
    regions_ : the regions scored against truth masks (``cell``, plus ``nucleus`` for 3 classes).
    classes_ : ``background, cell[, nucleus]`` (the manifest's ``classes``).
    """

    def __init__(self, maker: Any):
        self.maker_ = maker
        self.instances_ = bool(getattr(maker, "instances", False))
        three = int(getattr(maker, "n_classes", 2) or 2) == 3 and not self.instances_
        self.regions_ = ["cell", "nucleus"] if three else ["cell"]
        self.classes_ = ["background", "cell", "nucleus"] if three else ["background", "cell"]

    def spec(self) -> dict[str, Any]:
        m = self.maker_
        return {"kind": KIND, "mask": {"name": m.name, "version": m.version, "kind": "mask",
                                       "params": m.get_params(deep=False)},
                "instances": self.instances_, "regions": list(self.regions_)}

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Instance labels ``int32 (H, W)`` (instance makers) or the canonical mask ``uint8 (H, W)``."""
        if self.instances_:
            return self.maker_.predict_instances(image)
        return self.maker_.predict_mask(image)

    def save(self, directory: Path) -> list[Path]:
        """``segmenter.skops`` (plain data) plus the maker's native files under ``artifacts/mask/``."""
        import skops.io as sio

        from .contracts import saving_state_separately

        directory = Path(directory)
        files = self.maker_.save_artifacts(directory / ARTIFACTS / "mask")
        path = directory / GRAPH
        with saving_state_separately():
            sio.dump(self, path)
        return [path, *files]

    @classmethod
    def load(cls, directory: Path, host: Any = None) -> FittedSegmenter:
        """Load what :meth:`save` wrote, trusting only :func:`medfuse.trust.trusted_types`."""
        from .trust import load_object_graph

        path = Path(directory) / GRAPH
        obj = load_object_graph(path, host)
        if not isinstance(obj, cls):
            raise BundleError(f"{path}: holds a {type(obj).__name__}, not a FittedSegmenter")
        obj.maker_.load_artifacts(Path(directory) / ARTIFACTS / "mask")
        return obj


# ---- training -----------------------------------------------------------------------------------

def mask_spec(study: Any, pipeline: str | None, mask: str | None) -> tuple[str, dict[str, Any]]:
    """The mask plugin to train: ``mask`` (``NAME[:PARAM=VALUE,...]``) or the ``mask`` table of
    ``pipeline`` (default: the study's only plugin mask)."""
    from .objectscoring import parse_finder
    from .study import PluginRef

    if mask is not None:
        return parse_finder(mask)
    with_plugin = {n: p for n, p in study.pipelines.items() if isinstance(p.mask, PluginRef)}
    if pipeline is None:
        specs = {(p.mask.plugin, json.dumps(p.mask.params, sort_keys=True)) for p in with_plugin.values()}
        if len(specs) != 1:
            raise MedfuseError(f"study {study.name!r}: {len(specs)} different mask plugins in its pipelines "
                               f"({', '.join(sorted(with_plugin)) or 'none'}); name one with --pipeline, or "
                               "give --mask NAME[:PARAM=VALUE,...]")
        pipeline = sorted(with_plugin)[0]
    if pipeline not in study.pipelines:
        raise MedfuseError(f"study {study.name!r} has no pipeline {pipeline!r}; pipelines: "
                           f"{', '.join(study.pipelines)}")
    p = study.pipelines[pipeline]
    if pipeline not in with_plugin:
        raise MedfuseError(f"study {study.name!r}, pipeline {pipeline!r}: its mask is {p.mask!r}, not a mask "
                           "plugin; choose a pipeline with mask = {{ plugin = ... }} or give --mask NAME")
    if p.transforms:
        raise MedfuseError(f"study {study.name!r}, pipeline {pipeline!r}: has transforms; a segmentation bundle "
                           "applies its mask plugin to the decoded image only (give --mask NAME instead)")
    return p.mask.plugin, dict(p.mask.params)


def _read_pairs(samples: pd.DataFrame, reader: Any, say: Callable[[str], None]
                ) -> tuple[list[np.ndarray], list[np.ndarray | None], list[int], list[str]]:
    """Images and masks of the samples (a mask is ``None`` when the sample has none); the row
    numbers read and one line per sample that could not be read."""
    from .engine import ImageSteps, decode

    steps = ImageSteps(mask_files="optional", options=reader)  # decoded as compare and train decode
    images, masks, rows, failed = [], [], [], []
    for i, row in enumerate(samples.itertuples(index=False)):
        try:
            image, m, _ = decode(row.path, getattr(row, "mask_path", None), steps)
        except Exception as exc:  # noqa: BLE001 - a bad training file is left out and reported
            failed.append(f"{row.path}: {describe_exception(exc)}")
            continue
        images.append(image)
        masks.append(m)
        rows.append(i)
    for line in failed:
        say(f"left out: {line}")
    return images, masks, rows, failed


def heldout_metrics(make: Callable[[], Any], images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    groups: Sequence[Any], folds: int, seed: int = 0) -> dict[str, Any]:
    """Dice/Hausdorff of ``make()`` (a fresh mask maker) fitted on ``folds - 1`` folds of groups
    and scored on the held-out fold (every image scored once; no group in two folds)."""
    from sklearn.model_selection import GroupKFold

    from .segmetrics import score_table

    groups = np.asarray([str(g) for g in groups])
    n_groups = len(set(groups))
    if n_groups < folds:
        raise MedfuseError(f"--folds {folds}: the training data has only {n_groups} groups (patients/smears)")
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    shuffled = dict(zip(names, rng.permutation(len(names))))  # GroupKFold is deterministic by size: shuffle ids
    split = GroupKFold(n_splits=folds).split(np.zeros(len(groups)), groups=[shuffled[g] for g in groups])
    preds: dict[int, np.ndarray] = {}
    regions = ["cell"]
    for train, test in split:
        seg = FittedSegmenter(make().fit([images[i] for i in train], [masks[i] for i in train]))
        regions = seg.regions_
        for i in test:
            preds[int(i)] = seg.segment(images[i])
    done = sorted(preds)
    table = score_table([preds[i] if preds[i].dtype == np.uint8 else (preds[i] > 0) for i in done],
                        [masks[i] for i in done], regions=regions).drop(index="mean")
    return {"folds": folds, "grouped": True, "n_images": len(done), "seed": seed,
            **summarise(table[[c for c in table.columns if c != "n_undefined"]])}


def summarise(metrics: pd.DataFrame) -> dict[str, Any]:
    """``{"mean": {...}, "median": {...}}`` of each metric column over the rows where it is defined."""
    return to_jsonable({"mean": metrics.mean(numeric_only=True).to_dict(),
                        "median": metrics.median(numeric_only=True).to_dict()})


def train_segmenter(study: Any, out: str | Path, *, pipeline: str | None = None, mask: str | None = None,
                    data_root: str | Path | None = None, folds: int = 0, jobs: int = 1, overwrite: bool = False,
                    log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Fit the mask plugin of ``study`` (see :func:`mask_spec`) on all its image/mask pairs and
    write a segmentation bundle to ``out``.

    ``folds`` >= 2 first records grouped held-out Dice/Hausdorff (``cv_metrics`` in the
    manifest; trains the plugin ``folds`` more times). Samples without a mask file are left out
    of training (a trainable plugin needs at least one pair); unreadable files are left out and counted.
    """
    from .bundle import data_fingerprint, write_bundle
    from .datapath import resolve_data_root
    from .host import get_host
    from .loading import load_with_reader
    from .study import resolve_study

    say = log or (lambda line: None)
    host = get_host()
    if isinstance(study, str):
        study = resolve_study(study)
    name, params = mask_spec(study, pipeline, mask)
    make = lambda: host.create(name, params, kind="mask")  # noqa: E731 - a fresh, unfitted plugin each call
    maker = make()
    root = resolve_data_root(data_root)
    loader = host.create(study.dataset.loader, study.dataset.params, kind="loader")
    data = load_with_reader(loader, study.reader, root, jobs=jobs, progress=progress)
    samples = data.samples
    has_mask = samples["mask_path"].notna() if "mask_path" in samples.columns else pd.Series(False, samples.index)
    trainable = bool(getattr(maker, "trainable", False))
    if trainable:
        samples = samples[has_mask].reset_index(drop=True)
        if samples.empty:
            raise MedfuseError(f"study {study.name!r}: no sample has a mask file; {name!r} learns from image/mask "
                               "pairs (give the loader a masks folder)")
    say(f"{len(samples)} image(s) from {study.dataset.loader!r} under {root}; mask plugin {name!r} {params}")
    images, masks, rows, failed = _read_pairs(samples, study.reader, say)
    if not images:
        raise MedfuseError(f"study {study.name!r}: none of the {len(samples)} images could be read")
    paired = [k for k, m in enumerate(masks) if m is not None]
    seed = int(study.evaluation.seed)
    metrics, note = None, "none (--folds 0)"
    if folds >= 2:
        if not paired:
            raise MedfuseError(f"--folds {folds}: no image has a mask file to score against")
        groups = samples.iloc[rows]["group"].to_numpy() if "group" in samples.columns else np.arange(len(rows))
        metrics = heldout_metrics(make, [images[k] for k in paired], [masks[k] for k in paired],
                                  [groups[k] for k in paired], folds, seed)
        note = f"{folds}-fold held-out Dice/Hausdorff, folds by group (seed {seed})"
        say("held-out: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics["mean"].items()))
    if trainable:
        maker.fit([images[k] for k in paired], [masks[k] for k in paired])
    fitted = FittedSegmenter(maker)
    used = samples.iloc[rows]
    sha1s = used["sha1"].astype(str) if "sha1" in used.columns else used["path"].astype(str)
    manifest = {
        "kind": KIND,
        "study": {"name": study.name, "source": study.source, "pipeline": pipeline,
                  "description": study.description, "dataset": study.dataset, "mask": {"plugin": name,
                                                                                       "params": params}},
        "inputs": {"masks": False, "table_columns": [], "reader": study.reader.to_dict()},
        "segmentation": fitted.spec(),
        "training_data": {"loader": study.dataset.loader, "params": study.dataset.params, "root": str(root),
                          "n_samples": len(rows), "n_with_mask": len(paired), "n_failed": len(failed),
                          "fingerprint": data_fingerprint(sha1s, ["mask"] * len(used)),
                          "fingerprint_method": "sha1 of the sorted '<sample sha1> mask' lines"},
        "cv_metrics": metrics,
        "cv_note": note,
        "seed": seed,
    }
    return write_bundle(fitted, out, manifest=manifest, host=host, overwrite=overwrite)


# ---- loading ------------------------------------------------------------------------------------

def load_segmenter(path: str | Path, host: Any = None) -> tuple[FittedSegmenter, dict[str, Any]]:
    """Verify a segmentation bundle like any bundle (:func:`medfuse.bundle.verify_bundle`:
    manifest, checksums, no pickle, plugins) and load its segmenter; ``(segmenter, manifest)``."""
    seg, manifest, _, _ = _load_verified(path, host)
    return seg, manifest


def _load_verified(path: str | Path, host: Any = None) -> tuple[FittedSegmenter, dict[str, Any], Path, str]:
    """:func:`load_segmenter` plus the bundle's resolved folder and manifest sha256."""
    from .bundle import verify_bundle

    folder, manifest, digest = verify_bundle(path, host)
    if manifest.get("kind") != KIND or manifest["pipeline_class"] != SEGMENTER_CLASS:
        raise BundleError(f"{folder}: a classifier bundle, not a segmentation bundle; score images with it "
                          "using `medfuse score`, or train a segmentation bundle with `medfuse train-seg`")
    seg = FittedSegmenter.load(folder / manifest["pipeline_dir"], host)
    return seg, manifest, folder, digest


# ---- applying -----------------------------------------------------------------------------------

@dataclass
class SegmentSummary:
    """What :func:`segment_files` did."""

    out: Path
    n_images: int = 0
    n_failed: int = 0
    n_truth: int = 0
    n_truth_failed: int = 0
    mean: dict[str, float] = field(default_factory=dict)
    median: dict[str, float] = field(default_factory=dict)
    n_resumed: int = 0

    @property
    def n_segmented(self) -> int:
        return self.n_images - self.n_failed

    def describe(self) -> str:
        lines = [f"segmented {self.n_segmented} of {self.n_images} image(s) into {self.out / MASKS}; "
                 f"{self.n_failed} error row(s); table {self.out / TABLE}"]
        if self.n_resumed:
            lines.append(f"resumed: {self.n_resumed} image(s) were already segmented by the interrupted run")
        if self.n_truth or self.n_truth_failed:
            lines.append(f"against truth: {self.n_truth} image(s) scored, {self.n_truth_failed} truth error(s)")
            for k in self.mean:
                lines.append(f"  {k:14s} mean {self.mean[k]:.4f}  median {self.median.get(k, float('nan')):.4f}")
        return "\n".join(lines)


def find_truth(truth_dir: Path, rel_png: str) -> Path | None:
    """The truth mask of the image whose mask goes to ``rel_png``: the file with the same
    relative path and stem under ``truth_dir``, any of :data:`TRUTH_SUFFIXES`."""
    base = truth_dir / Path(rel_png).with_suffix("")
    for suffix in TRUTH_SUFFIXES:
        for cand in (base.with_name(base.name + suffix), base.with_name(base.name + suffix.upper())):
            if cand.is_file():
                return cand
    return None


def _truth_scores(pred: np.ndarray, truth_path: Path, regions: list[str], max_pixels: int | None,
                  instances: bool) -> dict[str, float]:
    from .imageio import read_mask
    from .segmetrics import scores

    truth = read_mask(truth_path, max_pixels=max_pixels)
    if truth.shape != pred.shape:
        raise MedfuseError(f"{truth_path}: truth mask has shape {truth.shape}, the image is {pred.shape}; "
                           "a truth mask must have the image's size")
    return scores((pred > 0).astype(np.uint8) if instances else pred, truth, regions)


def segment_files(bundle: str | Path, inputs: str | Path, out: str | Path, *, truth: str | Path | None = None,
                  max_pixels: int | None = None, host: Any = None, jobs: int = 1, resume: bool = False,
                  chunk_size: int = CHUNK_SIZE, progress: Progress = False,
                  note: Callable[[str], None] | None = None) -> SegmentSummary:
    """Segment every input image with the segmentation ``bundle`` into the folder ``out`` (see
    the module docstring); ``truth``: folder of ground-truth masks (same relative paths and
    stems as the inputs), or a CSV manifest's ``mask_path`` column when ``inputs`` is one.

    ``jobs`` > 1: chunks of ``chunk_size`` images in joblib (loky) worker processes, each loading
    the bundle once; rows stay in input order and equal those of ``jobs=1``. After every chunk
    ``segment.csv`` is rewritten (atomically) with the rows done so far. ``resume``: keep the rows
    (and masks) of an interrupted run into ``out`` whose mask file exists and segment only the
    rest; refused when :data:`RUN` names another bundle, inputs, truth folder or ``max_pixels``.
    ``progress``: a bar on stderr, or ``f(done, total, description)`` (:mod:`medfuse.util.progress`).
    """
    from .inputs import inputs_digest, list_inputs
    from .outputs import write_text
    from .util.progress import progress_bar

    say = note or (lambda line: None)
    if chunk_size < 1:
        raise MedfuseError(f"chunk_size must be >= 1, got {chunk_size}")
    seg, manifest, folder, digest = _load_verified(bundle, host)
    reader = manifest["inputs"].get("reader")
    table = list_inputs(inputs)
    out = Path(out)
    truth_dir = Path(truth) if truth is not None else None
    if truth_dir is not None and not truth_dir.is_dir():
        raise MedfuseError(f"--truth {truth_dir}: not a folder of mask files")
    rel = _mask_paths(table["path"].tolist(), inputs)
    metric_cols = [f"{r}_{m}" for r in seg.regions_ for m in ("dice", "hd95", "hd_max")]
    items = [_Item(str(it.path), str(it.read_path), rel[k], _truth_path(it, truth_dir, rel[k]))
             for k, it in enumerate(table.itertuples(index=False))]
    run = {"bundle_sha256": digest, "inputs_sha1": inputs_digest(table),
           "truth": str(truth_dir.resolve()) if truth_dir is not None else None, "max_pixels": max_pixels}
    out.mkdir(parents=True, exist_ok=True)
    done = _resumable_rows(out, run, [it.path for it in items]) if resume else {}
    if not resume:  # a previous run's rows and summary must not pass for this run's (on a later --resume)
        (out / TABLE).unlink(missing_ok=True)
        (out / SUMMARY).unlink(missing_ok=True)
    write_text(out / RUN, json.dumps(run, indent=2) + "\n")
    if done:
        say(f"resuming: {len(done)} of {len(items)} image(s) already segmented in {out}")
    todo = [k for k in range(len(items)) if items[k].path not in done]
    size = min(chunk_size, -(-len(todo) // jobs)) if jobs > 1 and todo else chunk_size  # every worker gets one
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    job = _Job(str(folder), digest, reader, max_pixels, str(truth_dir) if truth_dir is not None else None, str(out),
               metric_cols)
    rows: dict[str, dict[str, Any]] = dict(done)
    advance, close = progress_bar(len(items), "segmenting", progress, completed=len(done))
    try:
        for chunk, result in zip(chunks, _run_chunks(job, seg, [[items[k] for k in c] for c in chunks], jobs)):
            rows.update((items[k].path, row) for k, row in zip(chunk, result))
            write_text(out / TABLE, _table([rows[it.path] for it in items if it.path in rows], metric_cols)
                       .to_csv(index=False))
            advance(len(chunk))
    finally:
        close()
    df = _table([rows[it.path] for it in items], metric_cols)
    write_text(out / TABLE, df.to_csv(index=False))
    scored = df[(df["error"] == "") & (df["truth"] != "") & (df["truth_error"] == "")]
    stats = summarise(scored[metric_cols]) if len(scored) else {"mean": {}, "median": {}}
    summary = SegmentSummary(out, n_images=len(df), n_failed=int((df["error"] != "").sum()), n_truth=len(scored),
                             n_truth_failed=int((df["truth_error"] != "").sum()), mean=stats["mean"],
                             median=stats["median"], n_resumed=len(done))
    write_text(out / SUMMARY, json.dumps(to_jsonable({
        "bundle": str(Path(bundle).resolve()), "inputs": str(inputs), "truth": str(truth_dir) if truth_dir else None,
        "n_images": summary.n_images, "n_failed": summary.n_failed, "n_truth": summary.n_truth,
        "n_truth_failed": summary.n_truth_failed, "mean": summary.mean, "median": summary.median,
        "regions": seg.regions_, "instances": seg.instances_}), indent=2) + "\n")
    say(f"wrote {out / TABLE} and {out / SUMMARY}")
    return summary


@dataclass(frozen=True)
class _Item:
    """One input: its path as listed, where to read it, its mask's path under ``masks/``, its truth mask."""

    path: str
    read_path: str
    rel: str
    truth: Path | None


@dataclass(frozen=True)
class _Job:
    """What every chunk of one run shares (sent to the worker processes with each chunk)."""

    bundle: str
    digest: str
    reader: dict[str, Any] | None
    max_pixels: int | None
    truth_dir: str | None
    out: str
    metric_cols: list[str]


_SEGMENTERS: dict[tuple[str, str], FittedSegmenter] = {}  # per worker process: the bundle loaded once


def _segment_chunk(job: _Job, items: list[_Item], seg: FittedSegmenter | None = None) -> list[dict[str, Any]]:
    """The rows of one chunk (in a worker process, ``seg`` is loaded from ``job.bundle`` once)."""
    if seg is None:
        key = (job.bundle, job.digest)
        if key not in _SEGMENTERS:
            loaded, _ = load_segmenter(job.bundle)
            _SEGMENTERS.clear()
            _SEGMENTERS[key] = loaded
        seg = _SEGMENTERS[key]
    return [_segment_one(job, seg, item) for item in items]


def _run_chunks(job: _Job, seg: FittedSegmenter, chunks: list[list[_Item]], jobs: int
                ) -> Iterator[list[dict[str, Any]]]:
    """The rows of each chunk, in order: in this process (``jobs == 1``) or in joblib's loky workers."""
    if jobs == 1 or len(chunks) <= 1:
        for items in chunks:
            yield _segment_chunk(job, items, seg)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator")
    yield from parallel(delayed(_segment_chunk)(job, items) for items in chunks)


def _segment_one(job: _Job, seg: FittedSegmenter, item: _Item) -> dict[str, Any]:
    """One image's row: segment it, write its mask, score it against its truth mask."""
    from .engine import load_source
    from .intensity import ReadOptions
    from .outputs import write_mask_png

    row: dict[str, Any] = {"path": item.path, "mask": "", "height": np.nan, "width": np.nan,
                           "foreground": np.nan, "n_objects": np.nan, "truth": "",
                           **dict.fromkeys(job.metric_cols, np.nan), "error": "", "truth_error": ""}
    try:
        image, _ = load_source(item.read_path, ReadOptions.from_dict(job.reader), max_pixels=job.max_pixels)
        pred = seg.segment(image)
        write_mask_png(Path(job.out) / MASKS / item.rel, pred, labels=seg.instances_)
    except Exception as exc:  # noqa: BLE001 - any per-image failure is that row's error; the batch goes on
        text = describe_exception(exc)
        row["error"] = text if item.path in text else f"{item.path}: {text}"
        return row
    row.update(mask=f"{MASKS}/{Path(item.rel).as_posix()}", height=pred.shape[0], width=pred.shape[1],
               foreground=int((pred > 0).sum()))
    if seg.instances_:
        row["n_objects"] = int(len(np.unique(pred[pred > 0])))
    if item.truth is not None or job.truth_dir is not None:
        try:
            if item.truth is None:
                raise MedfuseError(f"no truth mask for {item.path} under {job.truth_dir} "
                                   f"(looked for {Path(item.rel).with_suffix('')}.png/.tif/...)")
            row["truth"] = str(item.truth)
            row.update(_truth_scores(pred, item.truth, seg.regions_, job.max_pixels, seg.instances_))
        except Exception as exc:  # noqa: BLE001 - a bad truth file is that row's truth_error
            row["truth_error"] = describe_exception(exc)
    return row


def _table(rows: list[dict[str, Any]], metric_cols: list[str]) -> pd.DataFrame:
    """``segment.csv`` as a frame with fixed column types, so that fresh and resumed rows print alike."""
    cols = ["path", "mask", "height", "width", "foreground", "n_objects", "truth", *metric_cols, "error",
            "truth_error"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("height", "width", "foreground", "n_objects"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in metric_cols:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("path", "mask", "truth", "error", "truth_error"):
        df[c] = df[c].fillna("").astype(str)
    return df


def _resumable_rows(out: Path, run: dict[str, Any], paths: list[str]) -> dict[str, dict[str, Any]]:
    """The rows of an interrupted run into ``out`` that a resumed run keeps: those of the current
    inputs with no error and their mask file present. Raises when that run was another job."""
    run_file, table = out / RUN, out / TABLE
    if not table.is_file():
        return {}
    try:
        old = json.loads(run_file.read_text())
    except FileNotFoundError:
        raise MedfuseError(f"{out}: cannot resume: {table.name} has no {RUN} beside it (written by an older "
                           "medfuse or by hand); rerun without --resume to start over") from None
    except (OSError, ValueError):
        old = {}
    for key, what in (("bundle_sha256", "bundle (manifest sha256)"), ("inputs_sha1", "list of inputs"),
                      ("truth", "--truth folder"), ("max_pixels", "--max-pixels")):
        if old.get(key) != run[key]:
            raise MedfuseError(f"{out}: cannot resume: the {what} differs from the interrupted run's "
                               f"({old.get(key)!r} there, {run[key]!r} now); rerun with the same arguments, "
                               "or without --resume to start over")
    df = pd.read_csv(table, keep_default_na=False, dtype=str)
    wanted = set(paths)
    keep = {}
    for row in df.to_dict("records"):
        if row["path"] in wanted and row["error"] == "" and row["mask"] and (out / row["mask"]).is_file():
            keep[row["path"]] = row
    return keep


def _mask_paths(paths: list[str], inputs: str | Path) -> list[str]:
    """Where each image's mask goes under ``masks/``: its path relative to the INPUT folder (or,
    for a glob or CSV, to the images' common folder), suffix ``.png``."""
    from .outputs import label_png_paths

    return label_png_paths(paths, inputs if Path(inputs).is_dir() else None)


def _truth_path(item: Any, truth_dir: Path | None, rel_png: str) -> Path | None:
    """The truth mask of one input: from ``--truth`` when given, else a CSV manifest's ``mask_path``."""
    if truth_dir is not None:
        return find_truth(truth_dir, rel_png)
    mp = getattr(item, "mask_path", None)
    if mp is None or (isinstance(mp, float) and np.isnan(mp)):
        return None
    return Path(os.fspath(mp))
