"""A whole image summarised by its cells (multiple-instance aggregation): ``cell_summary``.

Registered by :mod:`medfuse_plugins.morphology` (the cell-morphology family). Each image (a smear
or a field of view) is one sample: its cells are found by an instance segmenter, each cell is
measured by per-cell extractors on its own crop, and the per-cell values are summarised into one
row (distribution statistics, shares of cells beyond thresholds, counts). Optionally, shares are
taken against thresholds learnt from the training fold's cells (``reference``). What each output
column measures: :class:`CellSummary` and ``docs/cell-features.md``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
from medfuse.cellfinding import expand_box, measure_instances
from medfuse.contracts import Extractor, InstanceMaker
from medfuse.errors import InvalidInputError
from medfuse.objects import crop

DEFAULT_FEATURES = ("red_cell.area", "red_cell.diameter", "red_cell.elongation", "red_cell.od_mean",
                    "red_cell.od_total", "red_cell.centre_rim_ratio", "red_cell.pallor_area_ratio",
                    "red_cell.pallor_diameter_ratio", "red_cell.target_index", "red_cell.harmonic_2",
                    "red_cell.harmonic_high", "red_cell.radius_cv")
DEFAULT_STATS = ("mean", "sd", "p10", "p50", "p90")
DEFAULT_RELATIVE = ("red_cell.area",)
DEFAULT_SHARES = ("red_cell.pallor_diameter_ratio > 0.5", "red_cell.target_index > 0.1",
                  "red_cell.elongation > 1.5", "red_cell.area/median < 0.7", "red_cell.area/median > 1.3")
COUNTS = ("count", "density", "coverage", "measured")
_STAT = re.compile(r"^(mean|sd|cv|min|max|p(\d{1,3}))$")
_RULE = re.compile(r"^\s*([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?)(/median)?\s*([<>])\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


def _tag(value: float) -> str:
    """A threshold as a column-name part: ``0.3`` -> ``0p3``, ``-1`` -> ``m1``."""
    return f"{value:g}".replace("-", "m").replace(".", "p").replace("+", "")


def summarise(values: np.ndarray, stat: str) -> float:
    """One statistic of the finite ``values`` (NaN when there are none): ``mean``, ``sd``
    (population), ``cv`` (sd / mean), ``min``, ``max`` or ``pNN`` (the NN-th percentile, linear)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    if stat == "mean":
        return float(v.mean())
    if stat == "sd":
        return float(v.std())
    if stat == "cv":
        m = float(v.mean())
        return float(v.std() / m) if m != 0 else float("nan")
    if stat == "min":
        return float(v.min())
    if stat == "max":
        return float(v.max())
    return float(np.percentile(v, int(stat[1:])))


def weighted_quantile(points: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q``-quantile of ``points`` where each point stands for ``weights`` observations."""
    ok = np.isfinite(points) & (weights > 0)
    if not ok.any():
        return float("nan")
    order = np.argsort(points[ok])
    p, w = points[ok][order], weights[ok][order]
    cum = np.cumsum(w) / w.sum()
    return float(p[min(int(np.searchsorted(cum, q)), p.size - 1)])


def share_below(sketch: np.ndarray, threshold: float) -> float:
    """Share of a smear's cells below ``threshold``, read off its quantile sketch (values at equal
    steps of probability from 0 to 1); NaN for an empty sketch."""
    if not np.isfinite(sketch).all() or not np.isfinite(threshold):
        return float("nan")
    probs = np.linspace(0.0, 1.0, sketch.size)
    if threshold <= sketch[0]:
        return 0.0
    if threshold > sketch[-1]:
        return 1.0
    return float(np.interp(threshold, sketch, probs))


class CellSummary(Extractor):
    """A whole image as the distribution of its cells: found, measured one by one, summarised.

    1. **Find**: ``finder`` (an instance segmenter, default ``rbc_instances``; ``"mask"``: the
       pipeline's mask, touching cells split by a distance-transform watershed) gives one label
       per cell. Cells whose box touches the image border, or under ``min_area`` px, are counted but
       not measured; ``max_cells`` > 0 measures that many, evenly spread over the label order.
    2. **Measure**: each measured cell is cut with its box grown by ``margin`` (edge-repeat rule
       of :func:`medfuse.objects.crop`); the other cells' pixels in the crop are painted with the
       image's background colour (median of the pixels outside every cell) and the cell's own
       instance is the mask, so the per-cell extractors named in ``features`` (``PLUGIN`` for all
       its columns, ``PLUGIN.column`` for one; parameters in ``feature_params``) see one cell.
    3. **Summarise** (block ``cells``; per-cell column ``<extractor block>_<feature>``, e.g.
       ``rbc_pallor_area_ratio``): ``count`` (cells found), ``density`` (per megapixel),
       ``coverage`` (share of the image in cells), ``measured``; per feature and per
       ``stats`` entry ``<col>_<stat>`` (``mean``, ``sd``, ``cv``, ``min``, ``max``, ``pNN``);
       ``rel_<col>_<stat>`` for the ``relative`` features, each cell's value over the image's
       median cell (size against the same smear); ``share_<col>_gt|lt_<v>`` for each ``shares`` rule
       (``"red_cell.pallor_area_ratio > 0.3"``, ``"red_cell.area/median < 0.7"``): the share of
       measured cells meeting it.
    4. **In-fold reference** (``reference``, quantiles, default none): ``fit`` learns each
       feature's quantiles over the pooled cells of the *training* images only; ``transform``
       gives ``ref_<col>_below_pNN`` (q < 0.5) or ``ref_<col>_above_pNN`` (q >= 0.5): the share of
       an image's cells beyond the training cells' quantile. Computed from a quantile sketch
       (``sketch`` points per feature) kept in the prepared row.

    Steps 1-3 are per image and stateless (cached); only step 4 is fitted. An image without
    measured cells gives ``count``/``measured`` and NaN statistics.

    Parameters
    ----------
    finder
        Instance segmenter plugin that finds the cells, or "mask" (the pipeline's mask, split by watershed).
    finder_params
        Parameters of the finder (for "mask": min_distance, min_area of the watershed).
    features
        Per-cell columns: "PLUGIN" (all its columns) or "PLUGIN.column"; default 12 red_cell columns.
    feature_params
        Parameters per feature plugin, e.g. { red_cell = { pallor_fraction = 0.8 } }.
    stats
        Statistics per column: mean, sd, cv, min, max, pNN (percentile).
    relative
        Features also summarised relative to the image's median cell ("PLUGIN.column").
    shares
        Rules "PLUGIN.column > value" or "PLUGIN.column/median < value": share of cells meeting each.
    reference
        Quantiles (0-1) of the training fold's cells; the share of cells beyond each is output.
    sketch
        Quantile points per feature kept for the reference shares.
    margin
        Each cell's crop: its box grown by this times its larger side on every side.
    min_area
        Cells smaller than this (px) are counted but not measured.
    exclude_border
        Leave cells touching the image border out of the measurement.
    max_cells
        Measure at most this many cells per image (evenly spread; 0 = all).
    """

    name: ClassVar[str] = "cell_summary"
    block: ClassVar[str] = "cells"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {"finder_params": {"min_distance": 3, "min_area": 4},
                                                    "feature_params": {"red_cell": {"min_area": 4}},
                                                    "margin": 0.5}

    def __init__(self, finder: str = "rbc_instances", finder_params: dict | None = None,
                 features: list | None = None, feature_params: dict | None = None, stats: list | None = None,
                 relative: list | None = None, shares: list | None = None, reference: list | None = None,
                 sketch: int = 21, margin: float = 0.25, min_area: int = 0, exclude_border: bool = True,
                 max_cells: int = 0):
        self._store_params(locals())

    @property
    def needs_mask(self) -> bool:  # type: ignore[override]
        """``finder = "mask"`` splits the pipeline's mask, so every image needs one."""
        return self.finder == "mask"

    # ---- parameters -----------------------------------------------------------------------------

    def _features(self) -> list[str]:
        return list(DEFAULT_FEATURES if self.features is None else self.features)

    def _stats(self) -> list[str]:
        return list(DEFAULT_STATS if self.stats is None else self.stats)

    def _relative(self) -> list[str]:
        return list(DEFAULT_RELATIVE if self.relative is None else self.relative)

    def _rules(self) -> list[tuple[str, bool, str, float]]:
        """``(feature, relative, op, value)`` per ``shares`` rule."""
        out = []
        for rule in DEFAULT_SHARES if self.shares is None else self.shares:
            m = _RULE.match(str(rule))
            if m is None:
                raise InvalidInputError(f"cell_summary: shares rule {rule!r} is not \"PLUGIN.column > value\" "
                                        "or \"PLUGIN.column/median < value\"")
            out.append((m.group(1), bool(m.group(2)), m.group(3), float(m.group(4))))
        return out

    def _plugins(self) -> dict[str, Extractor]:
        """The per-cell extractors, one per plugin named in ``features``."""
        import medfuse

        params = dict(self.feature_params or {})
        out: dict[str, Extractor] = {}
        for entry in self._features():
            plugin = str(entry).split(".", 1)[0]
            if plugin in out:
                continue
            ex = medfuse.get_plugin(plugin, "extractor", **dict(params.get(plugin, {})))
            if getattr(ex, "trainable", False):
                raise InvalidInputError(f"cell_summary: features plugin {plugin!r} is trainable; per-cell "
                                        "features must be stateless extractors")
            out[plugin] = ex
        unknown = set(params) - set(out)
        if unknown:
            raise InvalidInputError(f"cell_summary: feature_params names {sorted(unknown)} not used in features")
        return out

    def _columns(self, plugins: dict[str, Extractor]) -> list[tuple[str, str, int]]:
        """``(column name, plugin, index in its prepared vector)`` per per-cell feature."""
        cols = []
        for entry in self._features():
            plugin, _, feature = str(entry).partition(".")
            ex = plugins[plugin]
            names = ex.feature_names()
            for f in ([feature] if feature else names):
                if f not in names:
                    raise InvalidInputError(f"cell_summary: {plugin!r} has no feature {f!r}; it has: {', '.join(names)}")
                cols.append((f"{ex.block}_{f}", plugin, names.index(f)))
        return cols

    def _entry_column(self, entry: str, columns: list[tuple[str, str, int]], plugins: dict[str, Extractor],
                      where: str) -> int:
        plugin, _, feature = entry.partition(".")
        if plugin not in plugins or not feature:
            raise InvalidInputError(f"cell_summary: {where} {entry!r} must be \"PLUGIN.column\" of a plugin in features")
        name = f"{plugins[plugin].block}_{feature}"
        for i, (c, _, _) in enumerate(columns):
            if c == name:
                return i
        raise InvalidInputError(f"cell_summary: {where} {entry!r} is not among the features")

    def validate_params(self) -> None:
        """Statistics, rules, references and sizes are well formed; plugins exist and give the columns."""
        if not isinstance(self.finder, str) or not self.finder:
            raise InvalidInputError("cell_summary: finder must be a plugin name or \"mask\"")
        if self.finder != "mask":
            import medfuse

            if not isinstance(medfuse.get_plugin(self.finder, "mask"), InstanceMaker):
                raise InvalidInputError(f"cell_summary: finder {self.finder!r} gives no instances (not an instance "
                                        "segmenter such as rbc_instances); use one, or \"mask\"")
        for s in self._stats():
            m = _STAT.match(str(s))
            if m is None or (m.group(2) is not None and int(m.group(2)) > 100):
                raise InvalidInputError(f"cell_summary: stats entry {s!r}; expected mean, sd, cv, min, max or pNN (0-100)")
        for q in self.reference or []:
            if not 0 < float(q) < 1:
                raise InvalidInputError(f"cell_summary: reference quantile {q!r} must be in (0, 1)")
        if int(self.sketch) < 3:
            raise InvalidInputError(f"cell_summary: sketch={self.sketch}; expected >= 3")
        if float(self.margin) < 0 or int(self.min_area) < 0 or int(self.max_cells) < 0:
            raise InvalidInputError("cell_summary: margin, min_area and max_cells must be >= 0")
        plugins = self._plugins()
        cols = self._columns(plugins)
        for entry in self._relative():
            self._entry_column(str(entry), cols, plugins, "relative entry")
        for feature, _, _, _ in self._rules():
            self._entry_column(feature, cols, plugins, "shares rule feature")

    # ---- layout ---------------------------------------------------------------------------------

    def _layout(self, plugins: dict[str, Extractor] | None = None) -> tuple[list[str], list[str], int]:
        """(summary names computed in prepare, per-cell column names, sketch length or 0)."""
        plugins = self._plugins() if plugins is None else plugins
        cols = self._columns(plugins)
        names = list(COUNTS)
        names += [f"{c}_{s}" for c, _, _ in cols for s in self._stats()]
        rel = [cols[self._entry_column(str(e), cols, plugins, "relative entry")][0] for e in self._relative()]
        names += [f"rel_{c}_{s}" for c in rel for s in self._stats()]
        names += [self._share_name(rule, cols, plugins) for rule in self._rules()]
        return names, [c for c, _, _ in cols], int(self.sketch) if self.reference else 0

    def _share_name(self, rule: tuple[str, bool, str, float], cols: list[tuple[str, str, int]],
                    plugins: dict[str, Extractor]) -> str:
        feature, relative, op, value = rule
        c = cols[self._entry_column(feature, cols, plugins, "shares rule feature")][0]
        return f"share_{'rel_' if relative else ''}{c}_{'gt' if op == '>' else 'lt'}_{_tag(value)}"

    def _reference_names(self, columns: list[str]) -> list[str]:
        out = []
        for c in columns:
            for q in self.reference or []:
                side = "below" if float(q) < 0.5 else "above"
                out.append(f"ref_{c}_{side}_p{_tag(100 * float(q))}")
        return out

    def feature_names(self) -> list[str]:
        names, columns, _ = self._layout()
        return names + self._reference_names(columns)

    # ---- per image --------------------------------------------------------------------------------

    def _labels(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        params = dict(self.finder_params or {})
        if self.finder == "mask":
            from .segmentation import split_cells

            if mask is None:
                raise InvalidInputError("cell_summary: finder \"mask\" needs a pipeline mask (mask = ...)")
            return split_cells(mask > 0, int(params.get("min_distance", 5)), int(params.get("min_area", 20)))[0]
        import medfuse

        finder = medfuse.get_plugin(self.finder, "mask", **params)
        return finder.predict_instances(image)

    def per_cell(self, image: np.ndarray, mask: np.ndarray | None = None,
                 plugins: dict[str, Extractor] | None = None) -> tuple[np.ndarray, dict[str, float]]:
        """The measured cells of one image, ``(n_cells, n_columns)`` float64 (one column per
        per-cell feature, in ``features`` order), and the count features."""
        plugins = self._plugins() if plugins is None else plugins
        cols = self._columns(plugins)
        labels = self._labels(image, mask)
        table = measure_instances(labels)
        h, w = labels.shape
        fg = labels > 0
        counts = {"count": float(len(table)), "density": len(table) / (h * w) * 1e6,
                  "coverage": float(fg.mean()), "measured": 0.0}
        if table.empty:
            return np.zeros((0, len(cols))), counts
        keep = table["area"].to_numpy() >= int(self.min_area)
        if self.exclude_border:
            keep &= ((table["box_x0"] > 0) & (table["box_y0"] > 0) & (table["box_x1"] < w)
                     & (table["box_y1"] < h)).to_numpy()
        rows = table[keep]
        if int(self.max_cells) and len(rows) > int(self.max_cells):
            rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, int(self.max_cells)).round().astype(int))]
        background = np.median(image[~fg], axis=0) if (~fg).any() else np.full(3, 255.0)
        background = np.round(background).astype(np.uint8)
        out = np.full((len(rows), len(cols)), np.nan)
        for k, row in enumerate(rows.itertuples(index=False)):
            box = expand_box((row.box_x0, row.box_y0, row.box_x1, row.box_y1), float(self.margin))
            lab = crop(labels, box, "labels")
            own = lab == row.object_id
            img = crop(image, box).copy()
            img[(lab > 0) & ~own] = background  # the neighbours become background
            cell_mask = own.astype(np.uint8)
            vectors = {p: np.asarray(ex.prepare(img, cell_mask), np.float64) for p, ex in plugins.items()}
            out[k] = [vectors[p][i] for _, p, i in cols]
        counts["measured"] = float(len(rows))
        return out, counts

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self.validate_params()
        plugins = self._plugins()
        cols = self._columns(plugins)
        names, columns, sketch = self._layout(plugins)
        values, counts = self.per_cell(image, mask, plugins)
        out = dict.fromkeys(names, float("nan"))
        out.update(counts)
        stats = self._stats()
        for j, c in enumerate(columns):
            out.update({f"{c}_{s}": summarise(values[:, j], s) for s in stats})
        for e in self._relative():
            j = self._entry_column(str(e), cols, plugins, "relative entry")
            out.update({f"rel_{columns[j]}_{s}": summarise(self._over_median(values[:, j]), s) for s in stats})
        for rule in self._rules():
            feature, relative, op, value = rule
            v = values[:, self._entry_column(feature, cols, plugins, "shares rule feature")]
            v = self._over_median(v) if relative else v
            v = v[np.isfinite(v)]
            share = float(np.mean(v > value if op == ">" else v < value)) if v.size else float("nan")
            out[self._share_name(rule, cols, plugins)] = share
        row = [out[n] for n in names]
        if sketch:
            probs = np.linspace(0.0, 1.0, sketch)
            for j in range(len(columns)):
                v = values[:, j][np.isfinite(values[:, j])]
                row += list(np.quantile(v, probs)) if v.size else [float("nan")] * sketch
        return np.asarray(row, np.float32)

    @staticmethod
    def _over_median(v: np.ndarray) -> np.ndarray:
        finite = v[np.isfinite(v)]
        med = float(np.median(finite)) if finite.size else float("nan")
        return v / med if med and np.isfinite(med) else np.full(v.shape, np.nan)

    # ---- fitted part: reference shares ------------------------------------------------------------

    def fit(self, P: np.ndarray, y: np.ndarray | None = None):
        """Learn, from the training images' rows ``P`` only, each feature's ``reference``
        quantiles over their pooled cells (each image weighs by its measured cells)."""
        P = np.asarray(P, np.float64)
        names, columns, sketch = self._layout()
        self.n_prepared_ = len(names) + sketch * len(columns)
        if not sketch:
            self.thresholds_ = np.zeros((0, 0))
            return self
        self._check_width(P)
        weights = P[:, names.index("measured")]
        thresholds = np.full((len(columns), len(self.reference)), np.nan)
        for j in range(len(columns)):
            block = P[:, len(names) + j * sketch: len(names) + (j + 1) * sketch]
            points = block.ravel()
            w = np.repeat(weights / sketch, sketch)
            thresholds[j] = [weighted_quantile(points, w, float(q)) for q in self.reference]
        self.thresholds_ = thresholds
        return self

    def _check_width(self, P: np.ndarray) -> None:
        names, columns, sketch = self._layout()
        want = len(names) + sketch * len(columns)
        if P.ndim != 2 or P.shape[1] != want:
            raise InvalidInputError(f"cell_summary: expected prepared rows of width {want}, got {P.shape}; "
                                    "prepare them with the same parameters")

    def transform(self, P: np.ndarray) -> np.ndarray:
        """Summary columns, then (with ``reference``) the shares beyond the fitted thresholds."""
        P = np.asarray(P, np.float64)
        self._check_width(P)
        names, columns, sketch = self._layout()
        out = P[:, :len(names)]
        if not sketch:
            return out.astype(np.float32)
        if not hasattr(self, "thresholds_"):
            raise InvalidInputError("cell_summary: reference shares need fit() on the training images first "
                                    "(use `medfuse compare` / `medfuse run`, not `medfuse extract`)")
        extra = np.full((P.shape[0], len(columns) * len(self.reference)), np.nan)
        for i in range(P.shape[0]):
            k = 0
            for j in range(len(columns)):
                sk = P[i, len(names) + j * sketch: len(names) + (j + 1) * sketch]
                for qi, q in enumerate(self.reference):
                    below = share_below(sk, self.thresholds_[j, qi])
                    extra[i, k] = below if float(q) < 0.5 else 1.0 - below
                    k += 1
        return np.hstack([out, extra]).astype(np.float32)


__all__ = ["CellSummary", "share_below", "summarise", "weighted_quantile"]
