"""The pipeline engine: one study pipeline, materialised once, fitted per training fold.

Two stages, so that every fitted statistic comes from the training fold only:

1. :meth:`PipelineRunner.materialize` does the per-image, stateless work once per run: decode,
   transforms, mask, every block's ``prepare`` (and an image classifier's ``prepare``), by the
   per-image engine (:mod:`medfuse.engine`: parallel chunks, per-image errors). It caches each
   array on disk, keyed by the image's content hash and the cache keys of every plugin involved
   (:mod:`medfuse.cache`).
2. :meth:`PipelineRunner.fit` fits, on the given training rows only: trainable masks and
   blocks, selectors, per-block impute/scale/PCA (:class:`medfuse.fusion.BlockPreparer`),
   fusion (early, intermediate, late) and the classifier; ensembles fit each member pipeline.

A :class:`FittedPipeline` predicts probabilities for prepared rows or for raw decoded images,
reports what each block kept, ranks features, and saves/loads itself (skops object graph plus
native files; nothing executable, see :mod:`medfuse.bundle`). For scoring,
:meth:`FittedPipeline.score_images` gives per-row results: probabilities, an error for a row the
model cannot answer (unreadable, no cell found, a block with no usable feature) and a warning
for a row outside the training data (:mod:`medfuse.ood`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .cache import BlockCache, make_key
from .contracts import Extractor, Plugin, SampleTable
from .engine import ACQUISITION, MASK_PIXELS, RAW, ImageSteps, is_path, iter_images, prepare_one, process_image
from .errors import DataError, InvalidInputError, MedfuseError, StudyError, describe_exception
from .fusion import (
    BlockPreparer,
    LateFusion,
    aligned_proba,
    early_concat,
    fit_stacked,
    log_pool,
    oof_probas,
    select_blocks,
    select_parts,
    soft_vote,
)
from .imageio import file_sha1
from .ood import fit_checks, warnings_for
from .study import PipelineSpec, PluginRef, Study
from .trained import TrainedCache, for_run
from .util.jsonable import to_jsonable as _jsonable
from .util.progress import Progress

_IMAGES = "__images__"  # slot of an image classifier's prepared arrays
ACQ_FORMAT = 1  # bump when medfuse.ood.image_descriptor changes
CHUNK = 32
GRAPH = "pipeline.skops"  # a saved pipeline's object graph
ARTIFACTS = "artifacts"  # its components' native files, one folder per slot
CACHE_FORMAT = 1  # bump when the meaning of cached arrays changes inside medfuse itself
INNER_CV = 3  # inner folds over the training rows for combine = "stack" / "select"


@dataclass
class Prepared:
    """Everything per-sample a pipeline needs, computed once per run.

    Row ``i`` of every array is ``samples`` row ``i``. ``raw`` holds the transformed images and
    dataset masks when the pipeline has a trainable mask maker (blocks are then computed in
    :meth:`PipelineRunner.fit`); ``members`` holds the member pipelines' data of an ensemble.
    """

    samples: pd.DataFrame
    y: np.ndarray
    blocks: dict[str, np.ndarray]
    images: np.ndarray | None = None
    table: pd.DataFrame | None = None
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "path", "error"]))
    raw: list[tuple[np.ndarray, np.ndarray | None, Any]] | None = None  # (image, mask, spacing_um)
    members: dict[str, Prepared] = field(default_factory=dict)
    cache_stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    acquisition: np.ndarray | None = None  # (n, d) image descriptors (medfuse.ood), when images were read

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, idx: np.ndarray) -> Prepared:
        """The rows ``idx`` (positions), as a new :class:`Prepared` with a reset index."""
        idx = np.asarray(idx)
        return Prepared(
            self.samples.iloc[idx].reset_index(drop=True), self.y[idx],
            {k: v[idx] for k, v in self.blocks.items()},
            None if self.images is None else self.images[idx],
            None if self.table is None else self.table.iloc[idx].reset_index(drop=True),
            self.failed, None if self.raw is None else [self.raw[i] for i in idx],
            {k: m.subset(idx) for k, m in self.members.items()}, dict(self.cache_stats), self.seconds,
            None if self.acquisition is None else self.acquisition[idx])


def _uncounted(cache: BlockCache, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a cache method without counting it in the cache's hits/misses/writes (the
    acquisition descriptors ride along with the blocks; the counts are about blocks)."""
    saved = (cache.hits, cache.misses, cache.writes)
    try:
        return fn(*args)
    finally:
        cache.hits, cache.misses, cache.writes = saved


def _stack(name: str, arrays: list[np.ndarray]) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise InvalidInputError(f"{name}: prepare() returned arrays of different shapes {sorted(shapes)[:4]}; "
                                "a block must give the same shape for every image")
    return np.stack(arrays)


def balance_augment(P: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balance classes of image-shaped ``P (n, H, W, C)`` with flips / 90-degree rotations.

    Minority classes get transformed copies of randomly chosen members until every class has
    as many rows as the largest. Non-image arrays are returned unchanged.
    """
    from .util.arrays import dihedral

    if P.ndim != 4:
        return P, y
    rng = np.random.default_rng(seed)
    ks = list(range(1, 8)) if P.shape[1] == P.shape[2] else [1, 2, 3]
    classes, counts = np.unique(y, return_counts=True)
    extra_P, extra_y = [P], [y]
    for c, n in zip(classes, counts):
        need = counts.max() - n
        if need <= 0:
            continue
        rows = rng.choice(np.flatnonzero(y == c), size=need, replace=True)
        turns = rng.choice(ks, size=need)
        extra_P.append(np.stack([dihedral(P[r], int(k)) for r, k in zip(rows, turns)]))
        extra_y.append(np.full(need, c, dtype=y.dtype))
    return np.concatenate(extra_P), np.concatenate(extra_y)


# ---- the runner -------------------------------------------------------------------------------

@dataclass
class _Block:
    name: str
    kind: str  # "extractor" or "selector"
    plugin: Plugin
    spec: Any  # BlockSpec


class PipelineRunner:
    """Builds one pipeline of a study from the plugin host; materialises data and fits folds.

    Parameters
    ----------
    study : Study
        The parsed study.
    pipeline : str
        Name of one of ``study.pipelines``.
    host : PluginHost, optional
        Plugin host (default: the process-wide one).
    cache_dir : Path, optional
        Folder of the block cache; None disables caching.
    jobs : int
        Parallel processes for per-image work.
    progress : bool or callable
        ``True``: a progress bar on a terminal; a callable ``f(done, total, what)`` is called
        after every chunk; ``False``: silent.
    ood_checks : bool
        Fit the out-of-distribution checks (:mod:`medfuse.ood`) with every fit, for bundles and
        scoring; ``compare``'s fold fits never score new images and skip them (a few seconds a fit).
    trained : TrainedCache, optional
        Trainings shared with the other runners of the same run (:mod:`medfuse.trained`); default:
        the ``with cache.shared()`` one, else a new one shared by this runner and its ensemble members.
    """

    def __init__(self, study: Study, pipeline: str, host: Any = None, cache_dir: Path | None = None,
                 jobs: int = 1, progress: Progress = True, ood_checks: bool = True,
                 trained: TrainedCache | None = None):
        from .host import get_host

        if pipeline not in study.pipelines:
            from .errors import did_you_mean

            raise StudyError(study.source, f"studies.{study.name}.pipelines",
                             f"no pipeline {pipeline!r}{did_you_mean(pipeline, study.pipelines)}; "
                             f"defined: {', '.join(study.pipelines)}")
        self.study = study
        self.name = pipeline
        self.spec: PipelineSpec = study.pipelines[pipeline]
        self.host = host if host is not None else get_host()
        self.cache = BlockCache(cache_dir) if cache_dir is not None else None
        self.jobs = max(1, int(jobs))
        self.progress = progress
        self.where = f"{study.source}: studies.{study.name}.pipelines.{pipeline}"
        self._fixed_seed: set[int] = set()
        self.ood_checks = ood_checks
        self.trained = for_run(trained)
        self.members = {m: PipelineRunner(study, m, self.host, cache_dir, jobs, progress, ood_checks, self.trained)
                        for m in self.spec.members}
        for r in self.members.values():
            r._share_cache(self.cache)
        self.transforms = [self._create(t, "transform") for t in self.spec.transforms]
        self.mask_maker: Plugin | None = None
        if self.spec.mask is None:
            self.mask_mode = "none"
        elif self.spec.mask == "dataset":
            self.mask_mode = "dataset"
        else:
            self.mask_maker = self._create(self.spec.mask, "mask")
            if getattr(self.spec.mask, "channels", None) is not None:  # the mask's channels, as a block's
                self.mask_maker.input_channels = tuple(self.spec.mask.channels)
                self.mask_maker.input_channels_where = f"{self._key}.mask.channels"
            self.mask_mode = "trainable" if getattr(self.mask_maker, "trainable", False) else "plugin"
        self.blocks: list[_Block] = []
        for b in self.spec.blocks:
            bs = study.blocks[b]
            plugin = self._create(PluginRef(bs.plugin, bs.params), None)
            if plugin.kind not in ("extractor", "selector"):
                raise StudyError(study.source, f"studies.{study.name}.blocks.{b}.plugin",
                                 f"{bs.plugin!r} is a {plugin.kind} plugin; a block needs an extractor or selector")
            if getattr(bs, "channels", None) is not None:  # the block's channels (#16; see contracts)
                plugin.input_channels = tuple(bs.channels)
                plugin.input_channels_where = f"studies.{study.name}.blocks.{b}.channels"
            self.blocks.append(_Block(b, plugin.kind, plugin, bs))
        self.classifier = self._create(self.spec.classifier, "classifier") if self.spec.classifier else None
        self._validate()

    def _share_cache(self, cache: BlockCache | None) -> None:
        """Use one cache object (and so one hit count) for an ensemble and all its members."""
        self.cache = cache
        for r in self.members.values():
            r._share_cache(cache)

    def _create(self, ref: PluginRef, kind: str | None) -> Plugin:
        plugin = self.host.create(ref.plugin, ref.params, kind)
        if "random_state" in ref.params:
            self._fixed_seed.add(id(plugin))
        return plugin

    def _seeded(self, plugin: Plugin, seed: int) -> Plugin:
        """A fresh clone of ``plugin`` with ``random_state = seed`` unless the study set it."""
        est = clone(plugin)
        if id(plugin) not in self._fixed_seed and "random_state" in est.get_params(deep=False):
            est.set_params(random_state=seed)
        return est

    def _validate(self) -> None:
        if self.members:
            return
        if self.mask_mode == "none":
            self._refuse_mask_needing_blocks()
        clf = self.classifier
        assert clf is not None  # parse_study guarantees a classifier or members
        if clf.input == "images":
            if self.mask_mode == "trainable":
                raise StudyError(self.study.source, f"{self._key}.mask",
                                 f"{clf.name!r} classifies images end to end; a trainable mask is not supported")
            if self.blocks:
                raise StudyError(self.study.source, f"{self._key}.blocks",
                                 f"{clf.name!r} classifies images end to end; it takes no feature blocks")
            return
        if not self.blocks:
            raise StudyError(self.study.source, f"{self._key}.blocks",
                             f"{clf.name!r} needs feature blocks; list at least one")
        if self.spec.fusion == "intermediate" and clf.input != "blocks":
            raise StudyError(self.study.source, f"{self._key}.classifier",
                             f"intermediate fusion needs a classifier taking one input per block "
                             f"(e.g. branch_mlp), got {clf.name!r}")
        if self.spec.fusion == "late" and clf.input != "features":
            raise StudyError(self.study.source, f"{self._key}.classifier",
                             f"late fusion fits one {clf.name!r} per block; it must take feature matrices")

    def _refuse_mask_needing_blocks(self) -> None:
        """A block whose extractor declares ``needs_mask`` in a pipeline without ``mask`` would be NaN
        everywhere (or fail on every image): refuse it before any data is loaded."""
        for b in self.blocks:
            if getattr(b.plugin, "needs_mask", False):
                raise StudyError(self.study.source, f"{self._key}.mask",
                                 f"block {b.name!r} ({b.plugin.name!r}) needs a mask for every image, but pipeline "
                                 f"{self.name!r} of study {self.study.name!r} has no mask: add mask = \"dataset\" "
                                 "(the loader's mask files) or mask = { plugin = \"otsu_cell\" } to the pipeline, "
                                 "or leave the block out")

    @property
    def _key(self) -> str:
        return f"studies.{self.study.name}.pipelines.{self.name}"

    @property
    def image_classifier(self) -> bool:
        return self.classifier is not None and self.classifier.input == "images"

    def _slot_plugins(self) -> dict[str, Plugin]:
        slots: dict[str, Plugin] = {b.name: b.plugin for b in self.blocks if b.kind == "extractor"}
        if self.image_classifier:
            slots[_IMAGES] = self.classifier
        return slots

    # ---- materialize --------------------------------------------------------------------------
    def materialize(self, data: SampleTable) -> Prepared:
        """Decode, transform, mask and prepare every sample once (cached, parallel)."""
        t0 = time.perf_counter()
        if self.members:
            return self._materialize_members(data, t0)
        samples = data.samples.reset_index(drop=True)
        table = None if data.table is None else data.table.reset_index(drop=True)
        if any(b.kind == "selector" for b in self.blocks) and table is None:
            raise DataError(f"{self.where}: blocks {[b.name for b in self.blocks if b.kind == 'selector']} "
                            "need a table, but the dataset has none")
        slots = self._slot_plugins()
        keep_raw = self.mask_mode == "trainable"
        n = len(samples)
        arrays: dict[str, list[Any]] = {s: [None] * n for s in slots}
        raw: list[Any] = [None] * n
        acq: list[np.ndarray | None] = [None] * n
        errors: dict[int, str] = {}
        stats = {"hits": 0, "misses": 0, "writes": 0}
        todo: list[tuple[int, str, str | None, list[str]]] = []
        keys: dict[tuple[int, str], str] = {}
        h0, m0 = (self.cache.hits, self.cache.misses) if self.cache is not None else (0, 0)
        if slots or keep_raw:
            paths = samples["path"].tolist()
            mask_paths = samples["mask_path"].tolist() if "mask_path" in samples else [None] * n
            use_cache = self.cache is not None and not keep_raw
            if use_cache:
                shas = samples["sha1"].tolist() if "sha1" in samples else [None] * n
                chain = self._chain_key()
                plugin_keys = {s: p.cache_key() for s, p in slots.items()}
                acq_keys: dict[int, str] = {}
                for i in range(n):
                    if not is_path(paths[i]):
                        continue
                    try:
                        for s, k in self._row_keys(shas[i], paths[i], mask_paths[i], chain, plugin_keys).items():
                            keys[(i, s)] = k
                        acq_keys[i] = self._acq_key(shas[i], paths[i])
                    except OSError as exc:
                        errors[i] = f"{type(exc).__name__}: {exc}"
                order = list(keys)
                for (i, s), hit in zip(order, self.cache.get_many([keys[o] for o in order])):
                    arrays[s][i] = hit
                rows = list(acq_keys)
                for i, hit in zip(rows, _uncounted(self.cache, self.cache.get_many, [acq_keys[i] for i in rows])):
                    acq[i] = hit
            for i in range(n):
                if i in errors:
                    continue
                needed = [s for s in slots if arrays[s][i] is None]
                if acq[i] is None:
                    needed.append(ACQUISITION)
                if needed or keep_raw:
                    todo.append((i, paths[i], mask_paths[i], needed))
            if self.cache is not None:
                stats["hits"] = self.cache.hits - h0
                stats["misses"] = self.cache.misses - m0
            for i, result, err in self._run(todo, {**slots, ACQUISITION: None}, keep_raw):
                if err:
                    errors[i] = err
                    continue
                if ACQUISITION in result:
                    acq[i] = result.pop(ACQUISITION)
                    if use_cache:
                        _uncounted(self.cache, self.cache.put, acq_keys[i], acq[i])
                if keep_raw:
                    raw[i] = result[RAW]
                    continue
                for s, arr in result.items():
                    arrays[s][i] = arr
                    if use_cache:
                        self.cache.put(keys[(i, s)], arr)
                        stats["writes"] += 1
        keep = np.asarray([i for i in range(n) if i not in errors], dtype=np.int64)
        if n and not len(keep):
            first = min(errors)
            raise DataError(f"{self.where}: all {n} samples failed to prepare; first "
                            f"({samples['id'].iloc[first]}): {errors[first]}")
        failed = pd.DataFrame({"id": [samples["id"].iloc[i] for i in sorted(errors)],
                               "path": [samples["path"].iloc[i] if "path" in samples else None
                                        for i in sorted(errors)],
                               "error": [errors[i] for i in sorted(errors)]},
                              columns=["id", "path", "error"])
        blocks = {s: _stack(f"{self.where}: block {s!r}", [arrays[s][i] for i in keep])
                  for s in slots if s != _IMAGES and len(keep) and not keep_raw}
        images = (_stack(f"{self.where}: classifier {self.classifier.name!r}", [arrays[_IMAGES][i] for i in keep])
                  if _IMAGES in slots and len(keep) and not keep_raw else None)
        kept = samples.iloc[keep].reset_index(drop=True)
        return Prepared(kept, kept["label"].astype(str).to_numpy(dtype=object), blocks, images,
                        None if table is None else table.iloc[keep].reset_index(drop=True), failed,
                        [raw[i] for i in keep] if keep_raw else None, {}, stats, time.perf_counter() - t0,
                        np.stack([acq[i] for i in keep]) if len(keep) and all(acq[i] is not None for i in keep)
                        else None)

    def _materialize_members(self, data: SampleTable, t0: float) -> Prepared:
        parts = {m: r.materialize(data) for m, r in self.members.items()}
        common = set.intersection(*(set(p.samples["id"]) for p in parts.values()))
        base = data.samples.reset_index(drop=True)
        order = [i for i in base["id"] if i in common]
        members = {}
        for m, p in parts.items():
            pos = pd.Series(np.arange(len(p)), index=p.samples["id"].to_numpy())
            members[m] = p.subset(pos.loc[order].to_numpy())
        first = next(iter(members.values()))
        failed = pd.concat([p.failed for p in parts.values() if len(p.failed)] or [first.failed])
        failed = failed.drop_duplicates("id").reset_index(drop=True)
        stats = {k: sum(p.cache_stats.get(k, 0) for p in parts.values()) for k in ("hits", "misses", "writes")}
        return Prepared(first.samples, first.y, {}, None, first.table, failed, None, members, stats,
                        time.perf_counter() - t0)

    def _chain_key(self) -> str:
        """Key of everything before the block: medfuse's decoder (its version and the study's reader
        options), transforms, mask."""
        from . import __version__

        mask = self.mask_maker.cache_key() if self.mask_maker is not None else self.mask_mode
        return make_key(__version__, CACHE_FORMAT, self.study.reader.to_dict(),
                        [t.cache_key() for t in self.transforms], mask)

    def _acq_key(self, sha: Any, path: str) -> str:
        """Cache key of an image's acquisition descriptor: image content and medfuse's decoder
        (with the study's reader options)."""
        from . import __version__

        if not isinstance(sha, str) or not sha:
            sha = file_sha1(path)
        return make_key(sha, "acquisition", ACQ_FORMAT, __version__, CACHE_FORMAT, self.study.reader.to_dict())

    def _row_keys(self, sha: Any, path: str, mask_path: Any, chain: str,
                  plugin_keys: dict[str, str]) -> dict[str, str]:
        """Cache key per slot of one sample: image content, mask content, chain, plugin."""
        if not isinstance(sha, str) or not sha:
            sha = file_sha1(path)
        mask_sha = file_sha1(mask_path) if self.mask_mode == "dataset" and is_path(mask_path) else None
        return {s: make_key(sha, mask_sha, chain, k) for s, k in plugin_keys.items()}

    def _run(self, todo: list[tuple[int, str, str | None, list[str]]], slots: dict[str, Plugin],
             keep_raw: bool) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
        """The engine over ``todo`` rows ``(position, path, mask path, needed slots)``:
        ``(position, result, error)`` as chunks finish."""
        mask_files = {"dataset": "required", "trainable": "optional"}.get(self.mask_mode, "none")
        steps = ImageSteps(self.transforms, mask_files, self.mask_maker if self.mask_mode == "plugin" else None,
                           slots, keep_raw, self.study.reader)
        items = [(path, mask_path, needed) for _, path, mask_path, needed in todo]
        for k, result, error in iter_images(items, steps, self.jobs, CHUNK, self.progress,
                                            f"{self.name}: preparing images"):
            yield todo[k][0], result, error

    # ---- fit ----------------------------------------------------------------------------------
    def fit(self, prepared: Prepared, train_idx: np.ndarray, seed: int, _inner: bool = False) -> FittedPipeline:
        """Fit everything on the rows ``train_idx`` (positions into ``prepared``) only.

        ``_inner``: a fit inside the inner folds of ``combine = "select"`` (late fusion then
        averages its blocks and no out-of-distribution checks are fitted)."""
        t0 = time.perf_counter()
        train_idx = np.asarray(train_idx, dtype=np.int64)
        if len(train_idx) < 2:
            raise InvalidInputError(f"{self.where}: need at least 2 training rows, got {len(train_idx)}")
        classes = np.unique(prepared.y)
        fitted = FittedPipeline()
        fitted.name = self.name
        fitted.classes_ = classes
        fitted.fusion = self.spec.fusion
        fitted.combine = self.spec.combine
        fitted.transforms = list(self.transforms)
        fitted.mask_mode = self.mask_mode
        fitted.mask_maker_ = self.mask_maker
        fitted.seed = seed
        if self.members:
            self._fit_members(fitted, prepared, train_idx, seed)
            fitted.fit_seconds_ = time.perf_counter() - t0
            return fitted
        y_tr = prepared.y[train_idx]
        if self.mask_mode == "trainable":
            maker = self._seeded(self.mask_maker, seed)
            imgs = [prepared.raw[i][0] for i in train_idx]
            masks = [prepared.raw[i][1] for i in train_idx]
            if any(m is None for m in masks):
                raise DataError(f"{self.where}: the trainable mask maker {maker.name!r} needs a dataset mask "
                                "for every training image")
            fitted.mask_maker_ = self.trained.fit(maker, imgs, masks, owner=f"{self._key}.mask")
        fitted.blocks_ = []
        fitted.block_reports_ = {}
        if self.image_classifier:
            P = prepared.images[train_idx]
            y_fit = y_tr
            if self.spec.augment:
                P, y_fit = balance_augment(P, y_tr, seed)
            network = self.spec.classifier.network if self.spec.classifier else None
            owner = f"studies.{self.study.name}.blocks.{network}" if network else f"{self._key}.classifier"
            fitted.model_ = self.trained.fit(self._seeded(self.classifier, seed), P, y_fit, owner=owner)
            fitted.feature_names_ = []
            if self.ood_checks:
                fitted.ood_ = fit_checks(None, _rows(prepared.acquisition, train_idx), seed)
            fitted.fit_seconds_ = time.perf_counter() - t0
            return fitted
        inputs = fitted._block_inputs(prepared, train_idx,
                                      [(b.name, b.plugin) for b in self.blocks if b.kind == "extractor"])
        Zs = []
        for b in self.blocks:
            if b.kind == "extractor":
                ex = self._seeded(b.plugin, seed)
                P = inputs[b.name]
                if self.spec.augment and getattr(ex, "trainable", False):
                    P_fit, y_fit = balance_augment(P, y_tr, seed)
                    ex = self.trained.fit(ex, P_fit, y_fit, owner=f"studies.{self.study.name}.blocks.{b.name}")
                else:
                    ex = self.trained.fit(ex, P, y_tr, owner=f"studies.{self.study.name}.blocks.{b.name}")
                X = ex.transform(P)
                names = list(ex.get_feature_names_out())
            else:
                ex = self._seeded(b.plugin, seed).fit(prepared.table.iloc[train_idx], y_tr)
                X = ex.transform(prepared.table.iloc[train_idx])
                names = list(ex.get_feature_names_out())
            prep = BlockPreparer(b.spec.impute, b.spec.scale, b.spec.pca, block=b.name, random_state=seed)
            Zs.append(prep.fit_transform(X, feature_names=names))
            fitted.blocks_.append(_FittedBlock(b.name, b.kind, ex, prep, b.spec.plugin, dict(b.spec.params)))
            fitted.block_reports_[b.name] = {"plugin": b.spec.plugin, **prep.report()}
            if b.kind == "selector":
                fitted.block_reports_[b.name]["selected"] = [str(c) for c in ex.selected_]
        fitted.feature_names_ = [n for fb in fitted.blocks_ for n in fb.preparer.get_feature_names_out()]
        if any(fb.kind == "selector" for fb in fitted.blocks_):
            fitted.table_columns_ = [str(c) for c in prepared.table.columns]
        clf = self._seeded(self.classifier, seed)
        if self.spec.fusion == "early" and self.spec.combine == "select" and not _inner and len(Zs) > 1:
            Zs = self._select_early_blocks(fitted, prepared, train_idx, seed, clf, Zs)
        if self.spec.fusion == "late":
            combine = "soft" if _inner else self.spec.combine
            oof = self._inner_block_oof(prepared, train_idx, seed) if combine == "select" else None
            fitted.model_ = LateFusion(clf, combine, cv=INNER_CV, random_state=seed).fit(
                Zs, y_tr, names=[b.name for b in self.blocks], oof=oof)
            fitted.reliability_ = fitted.model_.reliability_
        elif self.spec.fusion == "intermediate":
            fitted.model_ = clf.fit(Zs, y_tr)
        elif clf.input == "blocks":
            fitted.model_ = clf.fit([early_concat(Zs)], y_tr)
        else:
            fitted.model_ = clf.fit(early_concat(Zs), y_tr)
        if self.ood_checks and not _inner:
            fitted.ood_ = fit_checks(early_concat(Zs), _rows(prepared.acquisition, train_idx), seed)
        fitted.fit_seconds_ = time.perf_counter() - t0
        return fitted

    def _select_early_blocks(self, fitted: FittedPipeline, prepared: Prepared, train_idx: np.ndarray, seed: int,
                             clf: Plugin, Zs: list[np.ndarray]) -> list[np.ndarray]:
        """Early fusion, ``combine = "select"``: :func:`medfuse.fusion.select_blocks` on inner folds of
        ``train_idx`` (every block chain refitted inside them); dropped blocks leave ``fitted``."""
        def fit_blocks(tr: np.ndarray, te: np.ndarray) -> tuple[list[np.ndarray], ...]:
            inner = self.fit(prepared, train_idx[tr], seed, _inner=True)
            return tuple(inner._features(inner._block_inputs(prepared, train_idx[r]), None if prepared.table is None
                                         else prepared.table.iloc[train_idx[r]]) for r in (tr, te))

        fitted.reliability_ = select_blocks(fit_blocks, [b.name for b in self.blocks], prepared.y[train_idx],
                                            np.unique(prepared.y), clf, INNER_CV, seed)
        keep = [w > 0 for w in fitted.reliability_["weights"]]
        fitted.blocks_ = [fb for fb, k in zip(fitted.blocks_, keep) if k]
        fitted.feature_names_ = [n for fb in fitted.blocks_ for n in fb.preparer.get_feature_names_out()]
        return [Z for Z, k in zip(Zs, keep) if k]

    def _inner_block_oof(self, prepared: Prepared, train_idx: np.ndarray, seed: int) -> list[np.ndarray]:
        """Each block's out-of-fold probabilities over the training rows ``train_idx``: the whole
        block chain (trainable extractors, impute/scale/PCA, the block's classifier) refitted inside
        :data:`INNER_CV` inner folds of those rows only, so a block is judged on rows it never saw."""
        y_tr = prepared.y[train_idx]
        classes = np.unique(prepared.y)

        def fit_predict(tr: np.ndarray, te: np.ndarray) -> list[np.ndarray]:
            inner = self.fit(prepared, train_idx[tr], seed, _inner=True)
            rows = train_idx[te]
            table = None if prepared.table is None else prepared.table.iloc[rows]
            Zs = inner._features(inner._block_inputs(prepared, rows), table)
            return [aligned_proba(m, Z, classes) for m, Z in zip(inner.model_.estimators_, Zs)]

        return oof_probas(fit_predict, len(self.blocks), y_tr, classes, INNER_CV, seed)

    def _fit_members(self, fitted: FittedPipeline, prepared: Prepared, train_idx: np.ndarray, seed: int) -> None:
        fitted.members_ = {m: r.fit(prepared.members[m], train_idx, seed) for m, r in self.members.items()}
        fitted.blocks_ = []
        fitted.block_reports_ = {f"{m}/{k}": v for m, f in fitted.members_.items()
                                 for k, v in f.block_reports_.items()}
        fitted.feature_names_ = []
        if self.spec.combine in ("stack", "select"):
            y_tr = prepared.y[train_idx]
            names = list(self.members)

            def fit_predict(tr: np.ndarray, te: np.ndarray) -> list[np.ndarray]:
                inner = {m: self.members[m].fit(prepared.members[m], train_idx[tr], seed) for m in names}
                return [inner[m].predict_proba(prepared.members[m], train_idx[te]) for m in names]

            if self.spec.combine == "stack":
                fitted.meta_ = fit_stacked(fit_predict, len(names), y_tr, fitted.classes_, INNER_CV, seed)
            else:
                oof = oof_probas(fit_predict, len(names), y_tr, fitted.classes_, INNER_CV, seed)
                fitted.reliability_ = select_parts(oof, y_tr, fitted.classes_, names)
                fitted.weights_ = np.asarray(fitted.reliability_["weights"])


@dataclass
class ImageScores:
    """Per-row results of :meth:`FittedPipeline.score_images` for ``n`` images.

    ``proba``: ``(n, n_classes)``, a row of NaN where ``errors[i]`` is set; ``errors``: why a row has
    no answer ('' when scored); ``warnings``: why a row lies outside the training data ('' when not).
    """

    proba: np.ndarray
    errors: list[str]
    warnings: list[str]


@dataclass
class _FittedBlock:
    name: str
    kind: str
    plugin: Plugin  # fitted extractor or selector
    preparer: BlockPreparer
    plugin_name: str
    params: dict[str, Any]


class FittedPipeline:
    """A pipeline fitted on one training fold: predicts, reports, saves and loads.

    Attributes
    ----------
    classes_ : ndarray of str
        Column order of every probability matrix (all labels of the materialised data).
    feature_names_ : list of str
        Fused feature schema: ``<block>.<feature>``, or ``<block>.pcN`` after PCA.
    block_reports_ : dict
        Per block: plugin, n_features_in, n_components, explained_variance_ratio, ...
    ood_ : dict
        Out-of-distribution checks fitted on the training rows (:func:`medfuse.ood.fit_checks`):
        ``{"feature": {...}, "image": {...}}``, numpy arrays and floats only; empty for ensembles
        (each member has its own) and for pipelines saved before the checks existed.
    fit_seconds_ : float
        Wall time of the fit.
    """

    name: str
    classes_: np.ndarray
    feature_names_: list[str]
    block_reports_: dict[str, dict[str, Any]]
    fit_seconds_: float

    def __init__(self) -> None:
        self.members_: dict[str, FittedPipeline] = {}
        self.meta_ = None
        self.model_: Any = None
        self.blocks_: list[_FittedBlock] = []
        self.mask_maker_: Plugin | None = None
        self.transforms: list[Plugin] = []
        self.mask_mode = "none"
        self.fusion = "early"
        self.combine = "soft"
        self.seed = 0
        self.table_columns_: list[str] = []
        self.ood_: dict[str, dict[str, Any]] = {}
        self.weights_: np.ndarray | None = None  # ensemble, combine = "select": weight per member
        self.reliability_: dict[str, Any] = {}  # combine = "select": medfuse.fusion.select_parts' record

    # ---- prediction ---------------------------------------------------------------------------
    @property
    def image_classifier(self) -> bool:
        return getattr(self.model_, "input", None) == "images"

    def _block_inputs(self, prepared: Prepared, idx: np.ndarray,
                      extractors: list[tuple[str, Plugin]] | None = None) -> dict[str, np.ndarray]:
        """Prepared arrays of the extractor blocks for rows ``idx``; with a trainable mask maker,
        masks are predicted by the fitted maker and the blocks prepared now (not cached)."""
        if self.mask_mode != "trainable":
            return {k: v[idx] for k, v in prepared.blocks.items()}
        if extractors is None:
            extractors = [(fb.name, fb.plugin) for fb in self.blocks_ if fb.kind == "extractor"]
        images = [prepared.raw[i][0] for i in idx]
        masks = self.mask_maker_.predict_masks(images)
        return _prepare_slots(images, masks, extractors, [prepared.raw[i][2] for i in idx])

    def _block_matrices(self, inputs: dict[str, np.ndarray], table: pd.DataFrame | None) -> list[Any]:
        """Each fitted block's features (before impute / scale / PCA)."""
        Xs = []
        for fb in self.blocks_:
            if fb.kind == "extractor":
                Xs.append(fb.plugin.transform(inputs[fb.name]))
            else:
                if table is None:
                    raise InvalidInputError(f"pipeline {self.name!r}: block {fb.name!r} needs table rows")
                Xs.append(fb.plugin.transform(table))
        return Xs

    def _features(self, inputs: dict[str, np.ndarray], table: pd.DataFrame | None) -> list[np.ndarray]:
        return [fb.preparer.transform(X) for fb, X in zip(self.blocks_, self._block_matrices(inputs, table))]

    def _proba_from_features(self, Zs: list[np.ndarray]) -> np.ndarray:
        model = self.model_
        if self.fusion in ("late", "intermediate"):  # one input per block
            X: Any = Zs
        elif getattr(model, "input", "features") == "blocks":
            X = [early_concat(Zs)]
        else:
            X = early_concat(Zs)
        return aligned_proba(model, X, self.classes_)

    def _combine(self, probas: list[np.ndarray]) -> np.ndarray:
        """Combine the members' probabilities (in ``members_`` order, or only the kept members'
        when ``combine = "select"`` dropped some: see :meth:`_used_members`)."""
        if self.meta_ is not None:
            return aligned_proba(self.meta_, np.hstack(probas), self.classes_)
        weights = getattr(self, "weights_", None)
        if weights is not None:
            return log_pool(probas, [w for w in weights if w > 0])
        return soft_vote(probas)

    def _used_members(self) -> dict[str, FittedPipeline]:
        """The members whose probabilities enter :meth:`_combine` (those with weight > 0)."""
        weights = getattr(self, "weights_", None)
        if weights is None:
            return dict(self.members_)
        return {m: f for (m, f), w in zip(self.members_.items(), weights) if w > 0}

    def predict_proba(self, prepared: Prepared, idx: np.ndarray) -> np.ndarray:
        """Probabilities ``(len(idx), n_classes)`` for rows ``idx`` of ``prepared``."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.members_:
            return self._combine([f.predict_proba(prepared.members[m], idx) for m, f in self._used_members().items()])
        if len(idx) == 0:
            return np.zeros((0, len(self.classes_)))
        if self.image_classifier:
            return aligned_proba(self.model_, prepared.images[idx], self.classes_)
        table = None if prepared.table is None else prepared.table.iloc[idx]
        return self._proba_from_features(self._features(self._block_inputs(prepared, idx), table))

    def predict(self, prepared: Prepared, idx: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(prepared, idx), axis=1)]

    def predict_proba_images(self, images: list[np.ndarray], masks: list[np.ndarray | None] | None = None,
                             table: pd.DataFrame | None = None, spacings: list[Any] | None = None) -> np.ndarray:
        """Probabilities for raw canonical images (``uint8 (H, W, 3)``), optional masks and table rows.

        Applies the pipeline's transforms, mask, prepare, fitted blocks and classifier. Call
        with batches of 64-512 images. ``masks`` are required when the pipeline uses dataset
        masks; ``table`` (one row per image) when it has tabular blocks. An image that fails
        raises; every row gets the classifier's answer (see :meth:`score_images` for per-row
        errors and warnings). ``spacings``: each image's ``(row, col)`` micrometres per pixel (or
        None), for extractors that report physical units (as decoded, ``ImageInfo.spacing_um``).
        """
        return self._score(images, masks, table, strict=True, spacings=spacings).proba

    def score_images(self, images: list[np.ndarray], masks: list[np.ndarray | None] | None = None,
                     table: pd.DataFrame | None = None, spacings: list[Any] | None = None) -> ImageScores:
        """Per-row scoring of raw canonical images (arguments as :meth:`predict_proba_images`).

        A row gets an error, NaN probabilities and no answer when its image fails anywhere
        (transform, mask, extractor: any exception), when the mask step finds no cell, or when a
        feature block is all NaN for it; an ensemble row fails when any member fails. Every row
        gets a warning when it lies outside the training data (:mod:`medfuse.ood`).
        """
        return self._score(images, masks, table, strict=False, spacings=spacings)

    def _score(self, images: list[np.ndarray], masks: list[np.ndarray | None] | None,
               table: pd.DataFrame | None, strict: bool, spacings: list[Any] | None = None) -> ImageScores:
        n, k = len(images), len(self.classes_)
        if self.members_:
            parts = {m: f._score(images, masks, table, strict, spacings) for m, f in self._used_members().items()}
            label = len(parts) > 1
            errors = [_join([f"{m}: {p.errors[i]}" if label and p.errors[i] else p.errors[i]
                             for m, p in parts.items()]) for i in range(n)]
            warns = [_join([p.warnings[i] for p in parts.values()]) for i in range(n)]
            proba = np.full((n, k), np.nan)
            ok = [i for i in range(n) if not errors[i]]
            if ok:
                proba[ok] = self._combine([p.proba[ok] for p in parts.values()])
            return ImageScores(proba, errors, warns)
        if self.mask_mode == "none" and masks is not None:
            masks = [None] * n  # this pipeline was trained without masks
        if masks is None:
            if self.mask_mode == "dataset":
                raise InvalidInputError(f"pipeline {self.name!r} uses dataset masks: pass masks=")
            masks = [None] * n
        if len(masks) != n or (table is not None and len(table) != n):
            raise InvalidInputError(f"pipeline {self.name!r}: {n} images, {len(masks)} masks, "
                                    f"{'no' if table is None else len(table)} table rows")
        proba, errors, warns = np.full((n, k), np.nan), [""] * n, [""] * n
        if n == 0:
            return ImageScores(np.zeros((0, k)), errors, warns)
        table = None if table is None else table.reset_index(drop=True)
        checks = {} if strict else dict(getattr(self, "ood_", None) or {})
        values: dict[str, np.ndarray] = {}
        slots: list[tuple[str, Any]] = [(fb.name, fb.plugin) for fb in self.blocks_ if fb.kind == "extractor"]
        if self.image_classifier:
            slots = [(_IMAGES, self.model_)]
        rows = list(range(n))
        inputs: dict[str, np.ndarray] = {}
        if slots:
            extra = [] if strict else [(ACQUISITION, None), (MASK_PIXELS, None)]
            maker = self.mask_maker_ if self.mask_mode in ("plugin", "trainable") else None
            steps = ImageSteps(self.transforms, maker=maker, slots=dict(slots + extra))
            processed: list[dict[str, Any] | None] = [None] * n
            spacings = list(spacings) if spacings is not None else [None] * n
            for i, (im, m) in enumerate(zip(images, masks)):
                try:
                    processed[i] = process_image(im, m, steps, spacing_um=spacings[i])
                except Exception as exc:  # noqa: BLE001 - strict: raise as before; else the row's error
                    if strict:
                        if isinstance(exc, MedfuseError):
                            raise type(exc)(f"pipeline {self.name!r}, image {i}: {exc}") from None
                        raise
                    errors[i] = describe_exception(exc)
                    continue
                if int(processed[i].get(MASK_PIXELS, -1)) == 0:
                    errors[i] = f"no cell found: the {self._mask_name()} mask is empty"
            if "image" in checks:
                values["image"] = np.full((n, len(checks["image"]["scale"])), np.nan)
                for i, p in enumerate(processed):
                    if p is not None:
                        values["image"][i] = p[ACQUISITION]
            rows = [i for i in range(n) if processed[i] is not None and not errors[i]]
            inputs = {s: _stack(f"block {s!r}", [processed[i][s] for i in rows]) for s, _ in slots} if rows else {}
        if rows and self.image_classifier:
            proba[rows] = aligned_proba(self.model_, inputs[_IMAGES], self.classes_)
        elif rows:
            sub = None if table is None else table.iloc[rows].reset_index(drop=True)
            Xs = self._block_matrices(inputs, sub)
            if not strict:
                for fb, X in zip(self.blocks_, Xs):
                    for j in np.flatnonzero(np.isnan(np.asarray(X, dtype=np.float64)).all(axis=1)):
                        errors[rows[j]] = _join([errors[rows[j]], f"block {fb.name!r} is all NaN (no usable "
                                                 f"{fb.name} feature for this image)"])
            Zs = [fb.preparer.transform(X) for fb, X in zip(self.blocks_, Xs)]
            keep = np.asarray([j for j, i in enumerate(rows) if not errors[i]], dtype=np.int64)
            if len(keep):
                proba[np.asarray(rows)[keep]] = self._proba_from_features([Z[keep] for Z in Zs])
            if "feature" in checks:
                values["feature"] = np.full((n, sum(Z.shape[1] for Z in Zs)), np.nan)
                values["feature"][rows] = early_concat(Zs)
        if checks:
            warns = warnings_for(checks, values, n)
        return ImageScores(proba, errors, warns)

    def _mask_name(self) -> str:
        return self.mask_maker_.name if self.mask_maker_ is not None else f"{self.mask_mode} mask file's"

    # ---- reports ------------------------------------------------------------------------------
    def top_features(self, prepared: Prepared, idx: np.ndarray, n: int = 20, n_repeats: int = 3,
                     max_rows: int = 2000) -> pd.DataFrame | None:
        """Most important fused features: XGBoost gain (or forest impurity) for early fusion with a
        tree model, else permutation importance (mean drop in accuracy over ``n_repeats``
        shuffles) on rows ``idx`` (a seeded sample of ``max_rows`` of them when there are more).

        Returns columns ``feature, importance, method`` (``n`` rows), or None for image
        classifiers and ensembles.
        """
        if self.members_ or self.image_classifier or not self.blocks_:
            return None
        idx = np.asarray(idx, dtype=np.int64)
        imp = getattr(self.model_, "feature_importances_", None) if self.fusion == "early" else None
        if imp is not None and len(imp) == len(self.feature_names_):
            method = "gain" if getattr(self.model_, "name", "") == "xgboost" else "impurity"
            scores = np.asarray(imp, dtype=float)
        else:
            method = "permutation"
            rng = np.random.default_rng(self.seed)
            if len(idx) > max_rows:
                idx = np.sort(rng.choice(idx, size=max_rows, replace=False))
            table = None if prepared.table is None else prepared.table.iloc[idx]
            Zs = self._features(self._block_inputs(prepared, idx), table)
            y = prepared.y[idx]
            base = np.mean(self.classes_[np.argmax(self._proba_from_features(Zs), 1)] == y)
            scores = []
            for b, Z in enumerate(Zs):
                for j in range(Z.shape[1]):
                    drops = []
                    for _ in range(n_repeats):
                        Zp = [z.copy() if k == b else z for k, z in enumerate(Zs)]
                        Zp[b][:, j] = Zp[b][rng.permutation(len(y)), j]
                        acc = np.mean(self.classes_[np.argmax(self._proba_from_features(Zp), 1)] == y)
                        drops.append(base - acc)
                    scores.append(float(np.mean(drops)))
            scores = np.asarray(scores)
        order = np.argsort(-scores, kind="stable")[:n]
        return pd.DataFrame({"feature": [self.feature_names_[i] for i in order],
                             "importance": scores[order], "method": method})

    def raw_importance(self, prepared: Prepared, idx: np.ndarray, n_repeats: int = 1, max_rows: int = 500,
                       seed: int | None = None, chunk: int = 32) -> pd.DataFrame | None:
        """Permutation importance on the **raw** block features (before impute / scale / PCA).

        Each raw column of each block is shuffled over rows ``idx`` (a seeded sample of ``max_rows``
        of them when there are more), the block is prepared again by its fitted preparer and the
        classifier re-scored; importance = mean drop in accuracy over ``n_repeats`` shuffles.
        Columns ``chunk`` at a time are scored in one stacked call. Returns ``feature, block,
        importance`` for every raw feature, or None for image classifiers and ensembles.
        """
        if self.members_ or self.image_classifier or not self.blocks_:
            return None
        rng = np.random.default_rng(self.seed if seed is None else seed)
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) > max_rows:
            idx = np.sort(rng.choice(idx, size=max_rows, replace=False))
        if len(idx) < 2:
            return None
        table = None if prepared.table is None else prepared.table.iloc[idx]
        Xs = [np.asarray(X, dtype=np.float64) for X in self._block_matrices(self._block_inputs(prepared, idx), table)]
        Zs = [fb.preparer.transform(X) for fb, X in zip(self.blocks_, Xs)]
        y = np.asarray(prepared.y[idx]).astype(str)
        classes = np.asarray(self.classes_).astype(str)
        n = len(y)

        def accuracy(zs: list[np.ndarray], reps: int) -> np.ndarray:
            pred = classes[np.argmax(self._proba_from_features(zs), axis=1)]
            return (pred == np.tile(y, reps)).reshape(reps, n).mean(axis=1)

        base = float(accuracy(Zs, 1)[0])
        rows: list[dict[str, Any]] = []
        for b, (fb, X) in enumerate(zip(self.blocks_, Xs)):
            names = list(fb.preparer.feature_names_in_)
            drops = np.zeros(X.shape[1])
            for _ in range(n_repeats):
                for start in range(0, X.shape[1], chunk):
                    cols = range(start, min(start + chunk, X.shape[1]))
                    stacked = np.tile(X, (len(cols), 1))
                    for r, j in enumerate(cols):
                        stacked[r * n:(r + 1) * n, j] = X[rng.permutation(n), j]
                    zs = [np.tile(z, (len(cols), 1)) if k != b else fb.preparer.transform(stacked)
                          for k, z in enumerate(Zs)]
                    drops[start:start + len(cols)] += base - accuracy(zs, len(cols))
            rows += [{"feature": str(f), "block": fb.name, "importance": float(d / n_repeats)}
                     for f, d in zip(names, drops)]
        return pd.DataFrame(rows)

    def training_histories(self) -> dict[str, dict[str, Any]]:
        """Per-epoch training histories (``history_`` with a ``loss`` list) of every network this
        fit trained, by component slot (``block-cnn``, ``classifier``, ``mask``; members prefixed)."""
        out = {}
        for slot, plugin in self._components():
            hist = plugin.__dict__.get("history_") if hasattr(plugin, "__dict__") else None
            if isinstance(hist, dict) and hist.get("loss"):
                out[slot] = {"plugin": plugin.name, **hist}
        return out

    def saliency(self, prepared: Prepared, idx: np.ndarray, targets: Sequence[str]) -> dict[str, Any] | None:
        """Saliency maps of this pipeline's network for rows ``idx``, towards class ``targets[i]``.

        The network is the image classifier itself, else the first extractor block whose plugin
        offers ``saliency(P, target_codes)`` (explained through that network's own softmax head).
        Returns ``{"maps": (n, s, s) in [0, 1], "images": (n, s, s, 3) uint8, "plugin", "slot",
        "method"}``, or None when no component offers saliency (classical pipelines, ensembles).
        """
        if self.members_:
            return None
        idx = np.asarray(idx, dtype=np.int64)
        found: tuple[str, Plugin, np.ndarray] | None = None
        if self.image_classifier:
            if callable(getattr(type(self.model_), "saliency", None)):
                found = ("classifier", self.model_, prepared.images[idx])
        else:
            for fb in self.blocks_:
                if fb.kind == "extractor" and callable(getattr(type(fb.plugin), "saliency", None)):
                    P = self._block_inputs(prepared, idx, [(fb.name, fb.plugin)])[fb.name]
                    found = (f"block-{fb.name}", fb.plugin, np.asarray(P))
                    break
        if found is None:
            return None
        slot, plugin, P = found
        known = [str(c) for c in plugin.classes_]
        codes = np.array([known.index(str(t)) if str(t) in known else 0 for t in targets])
        maps = np.asarray(plugin.saliency(P, codes), dtype=np.float32)
        return {"maps": maps, "images": P, "plugin": plugin.name, "slot": slot,
                "method": str(getattr(type(plugin), "saliency_method", "saliency"))}

    def spec(self) -> dict[str, Any]:
        """Name, version and parameters of every component (for manifests)."""
        def plug(p: Plugin | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {"name": p.name, "version": p.version, "params": _jsonable(p.get_params(deep=False))}

        out: dict[str, Any] = {"pipeline": self.name, "classes": [str(c) for c in self.classes_],
                               "seed": self.seed}
        if self.members_:
            out["combine"] = self.combine
            out["members"] = {m: f.spec() for m, f in self.members_.items()}
            if getattr(self, "reliability_", None):
                out["weights"] = dict(zip(self.members_, self.reliability_["weights"]))
            return out
        out["transforms"] = [plug(t) for t in self.transforms]
        out["mask"] = plug(self.mask_maker_) if self.mask_maker_ is not None else self.mask_mode
        out["blocks"] = [{"block": fb.name, **plug(fb.plugin),
                          "prepare": _jsonable({k: v for k, v in fb.preparer.get_params().items()
                                                if k != "random_state"})}
                         for fb in self.blocks_]
        out["fusion"] = self.fusion
        if self.fusion == "late":
            out["combine"] = self.combine
            out["classifier"] = plug(self.model_.estimator)
            if getattr(self, "reliability_", None):
                out["weights"] = {fb.name: w for fb, w in zip(self.blocks_, self.reliability_["weights"])}
        else:
            out["classifier"] = plug(self.model_)
        out["feature_names"] = list(self.feature_names_)
        return out

    # ---- persistence --------------------------------------------------------------------------
    def _components(self, prefix: str = "") -> list[tuple[str, Plugin]]:
        comps: list[tuple[str, Plugin]] = []
        if self.mask_maker_ is not None:
            comps.append((f"{prefix}mask", self.mask_maker_))
        comps += [(f"{prefix}block-{fb.name}", fb.plugin) for fb in self.blocks_]
        if isinstance(self.model_, LateFusion):
            comps += [(f"{prefix}classifier-{i}", m) for i, m in enumerate(self.model_.estimators_)]
        elif isinstance(self.model_, Plugin):
            comps.append((f"{prefix}classifier", self.model_))
        for m, f in self.members_.items():
            comps += f._components(f"{prefix}{m}-")
        return comps

    def save(self, directory: Path) -> list[Path]:
        """Write ``pipeline.skops`` (the object graph: plain data only) plus each component's native
        files under ``artifacts/<slot>/`` (ONNX and ``.keras`` networks, XGBoost JSON); return
        every file written."""
        import skops.io as sio

        from .contracts import saving_state_separately

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        for slot, plugin in self._components():
            files += plugin.save_artifacts(directory / ARTIFACTS / slot)
        path = directory / GRAPH
        try:
            with saving_state_separately():
                sio.dump(self, path)
        except (TypeError, sio.exceptions.UnsupportedTypeException) as exc:
            raise MedfuseError(f"{path}: a fitted attribute is not plain data that skops can write ({exc}); "
                               "a plugin holding other objects writes them in save_artifacts and leaves them "
                               "out of __getstate__ (see medfuse.contracts.Plugin.save_artifacts)") from exc
        return [path, *files]

    @classmethod
    def load(cls, directory: Path, host: Any = None) -> FittedPipeline:
        """Load what :meth:`save` wrote; the object graph may hold only trusted types
        (:mod:`medfuse.trust`: numpy/scipy/scikit-learn, medfuse, the ``host``'s plugin classes)."""
        from .trust import load_object_graph

        directory = Path(directory)
        path = directory / GRAPH
        if not path.is_file():
            raise MedfuseError(f"{directory}: no {GRAPH} (not a saved pipeline)")
        obj = load_object_graph(path, host)
        if not isinstance(obj, cls):
            raise MedfuseError(f"{path}: holds a {type(obj).__name__}, not a FittedPipeline")
        for slot, plugin in obj._components():
            plugin.load_artifacts(directory / ARTIFACTS / slot)
        return obj

    @classmethod
    def load_pickled(cls, directory: Path) -> FittedPipeline:
        """Load a format-1 ``pipeline.joblib``. Unpickling runs code: only for files you trust."""
        import joblib

        path = Path(directory) / "pipeline.joblib"
        if not path.is_file():
            raise MedfuseError(f"{directory}: no pipeline.joblib (not a format-1 saved pipeline)")
        obj = joblib.load(path)  # the pickle holds every model too (Keras as .keras bytes)
        if not isinstance(obj, cls):
            raise MedfuseError(f"{path}: holds a {type(obj).__name__}, not a FittedPipeline")
        return obj


def _rows(X: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if X is None else X[idx]


def _join(parts: list[str]) -> str:
    return "; ".join(p for p in parts if p)


def _prepare_slots(images: list[np.ndarray], masks: list[np.ndarray | None],
                   extractors: list[tuple[str, Extractor]], spacings: list[Any]) -> dict[str, np.ndarray]:
    return {name: _stack(f"block {name!r}", [prepare_one(ex, im, m, sp) for im, m, sp in zip(images, masks, spacings)])
            for name, ex in extractors}
