"""Shape features: one cell (``morphology``) and a whole smear of red cells (``smear_morphology``).

Lengths are in pixels times ``pixel_size`` and areas in pixels times ``pixel_size ** 2``.
``morphology`` with ``physical_units = true`` adds the same lengths and areas in micrometres
(``area_um2``, ``perimeter_um``, ``nucleus_area_um2``, ...) from each image's spacing (the file's,
else the study's ``reader.pixel_size_um``; NaN when unknown); the pixel columns are unchanged.
Everything is computed on the bounding box of the cell, in one compiled pass per object
(:func:`._kernels.shape_stats`: moments, Crofton perimeter, convex hull, Feret diameters) and a
compiled component labelling (:func:`._kernels.label_components`); no ``regionprops`` object.

Degenerate inputs give documented values, never an exception: an empty mask gives NaN for every
feature and ``valid = 0``; ratios whose denominator is zero (the perimeter of a one-pixel cell,
the cytoplasm of a cell that is all nucleus, the axes of a line) are NaN, and so are the
perimeter, axes and shape ratios of objects under 3 pixels; without nucleus pixels
``has_nucleus = 0`` and the nucleus features are NaN (``lobe_count`` is 0).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError

from .segmentation import bbox, binary_erosion, components, resolve_mask, split_cells

_ANGLES = np.linspace(0, np.pi, 90, endpoint=False)
_DIRS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1).astype(np.float32)
_DIR_COS, _DIR_SIN = np.ascontiguousarray(_DIRS[:, 0]), np.ascontiguousarray(_DIRS[:, 1])

SHAPE_NAMES = ("area", "perimeter", "equivalent_diameter", "major_axis", "minor_axis", "aspect_ratio",
               "eccentricity", "circularity", "roundness", "solidity", "convexity", "extent",
               "feret_max", "feret_min", "convex_area")


MIN_SHAPE_AREA = 3


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b and np.isfinite(b) else float("nan")


# skimage.measure.perimeter_crofton(directions=4) weights of the 16 2x2 configurations
_CROFTON4 = np.array([0, np.pi / 4 * (1 + 1 / np.sqrt(2)), np.pi / (4 * np.sqrt(2)), np.pi / (2 * np.sqrt(2)),
                      0, np.pi / 4 * (1 + 1 / np.sqrt(2)), 0, np.pi / (4 * np.sqrt(2)), np.pi / 4, np.pi / 2,
                      np.pi / (4 * np.sqrt(2)), np.pi / (4 * np.sqrt(2)), np.pi / 4, np.pi / 2, 0, 0])


def _shape(binary: np.ndarray) -> tuple[dict[str, float], float, float]:
    """:func:`shape_features` and the centroid ``(row, col)`` of the object, from the raw
    quantities of the compiled :func:`._kernels.shape_stats` (one pass over the box)."""
    from ._kernels_np import kernel
    shape_stats = kernel("shape_stats")

    st = shape_stats(np.ascontiguousarray(binary, np.bool_), _CROFTON4, _DIR_COS, _DIR_SIN)
    area, my, mx, syy, sxx, sxy, perim, hull_area, hull_perim, feret_max, feret_min, h, w = st.tolist()
    if area == 0:
        return dict.fromkeys(SHAPE_NAMES, float("nan")), float("nan"), float("nan")
    return _shape_dict(area, syy, sxx, sxy, perim, hull_area, hull_perim, feret_max, feret_min, h * w), my, mx


def _shape_dict(area: float, syy: float, sxx: float, sxy: float, perim: float, hull_area: float,
                hull_perim: float, feret_max: float, feret_min: float, box_area: float) -> dict[str, float]:
    """The :data:`SHAPE_NAMES` values from the object's raw quantities (area, central second
    moments, Crofton perimeter, hull area/perimeter, Feret diameters, bounding-box area)."""
    half_tr, det_part = (syy + sxx) / 2, np.sqrt(((syy - sxx) / 2) ** 2 + sxy ** 2)
    l1, l2 = max(half_tr + det_part, 0.0), max(half_tr - det_part, 0.0)
    major, minor = 4.0 * np.sqrt(l1), 4.0 * np.sqrt(l2)
    if area < MIN_SHAPE_AREA:  # too few pixels to have a shape: ratios are undefined
        perim = major = minor = float("nan")
        l1 = 0.0
    return {
        "area": area,
        "perimeter": perim,
        "equivalent_diameter": float(np.sqrt(4 * area / np.pi)),
        "major_axis": float(major),
        "minor_axis": float(minor),
        "aspect_ratio": _div(major, minor),
        "eccentricity": float(np.sqrt(1 - l2 / l1)) if l1 > 0 else float("nan"),
        "circularity": _div(4 * np.pi * area, perim ** 2),
        "roundness": _div(4 * area, np.pi * major ** 2),
        "solidity": _div(area, hull_area),
        "convexity": _div(hull_perim, perim),
        "extent": area / float(box_area),
        "feret_max": feret_max,
        "feret_min": feret_min,
        "convex_area": hull_area,
    }



def shape_features(binary: np.ndarray) -> dict[str, float]:
    """Shape descriptors of one object (bool ``(H, W)``, a single component) in pixels.

    circularity = 4 pi area / perimeter^2 (1 for a disc); roundness = 4 area / (pi major^2);
    solidity = area / convex area; convexity = convex perimeter / perimeter; extent = area /
    bounding-box area; Feret diameters are the largest and smallest calliper widths of the
    convex hull (smallest over 90 directions, 2 degree steps); the perimeter is Crofton's
    estimate (4 directions), so a digital disc has circularity ~0.99. Empty input gives NaN;
    objects under 3 pixels get NaN perimeter, axes and the ratios built on them.

    Computed in one compiled pass (:func:`._kernels.shape_stats`): integer moment sums, the 2x2
    configuration counts (Crofton perimeter) and a monotone-chain convex hull of the row ends'
    pixel corners; equal to ``tests/reference_impl.shape_reference`` (projections + Qhull) to float64 round-off.
    """
    return _shape(binary)[0]


_LENGTHS = {"perimeter", "equivalent_diameter", "major_axis", "minor_axis", "feret_max", "feret_min"}
_AREAS = {"area", "convex_area"}

def _physical_names() -> dict[str, tuple[str, str]]:
    """``morphology``'s physical-unit columns: name -> (pixel column, unit), cell then nucleus."""
    out = {}
    for name in (*SHAPE_NAMES, *NUCLEUS_NAMES):
        bare = name.removeprefix("nucleus_")
        if bare in _AREAS:
            out[f"{name}_um2"] = (name, "um2")
        elif bare in _LENGTHS:
            out[f"{name}_um"] = (name, "um")
    return out


NUCLEUS_NAMES = ("nucleus_area", "nucleus_perimeter", "nucleus_equivalent_diameter",
                 "nucleus_eccentricity", "nucleus_circularity", "nucleus_solidity",
                 "nucleus_convexity", "nucleus_feret_max", "nucleus_aspect_ratio", "nc_ratio",
                 "nucleus_fraction", "lobe_count", "nucleus_offset")


class Morphology(Extractor):
    """Shape of the main cell and of its nucleus: size, elongation, outline and lobes.

    The main cell is the largest 8-connected component of ``mask > 0``; its nucleus is the
    ``mask == 2`` part. Without a mask, the ``otsu_cell`` mask (default parameters) is computed.
    Features: area, perimeter, equivalent diameter, major/minor axis, aspect ratio, eccentricity,
    circularity, roundness, solidity, convexity, extent, Feret max/min, convex area; the same for
    the nucleus plus nucleus/cytoplasm ratio, nucleus fraction, lobe count and nucleus offset;
    indicators ``valid``, ``has_nucleus`` and ``objects`` (components of the mask).

    Parameters
    ----------
    pixel_size
        Physical size of a pixel (e.g. micrometres); lengths scale by it, areas by its square.
    physical_units
        Add columns in micrometres (`<length>_um`, `<area>_um2`) from each image's spacing (DICOM/TIFF, else the study's
        `reader.pixel_size_um`); NaN when it is unknown.
    lobe_erosion
        Erosion radius (px) that cuts thin filaments between nuclear lobes before counting.
    lobe_min_fraction
        A lobe must hold at least this fraction of the nucleus area.
    """

    name: ClassVar[str] = "morphology"
    block: ClassVar[str] = "morphology"
    input_dtype: ClassVar[str] = "uint8"  # its default mask (otsu_cell) thresholds the 8-bit view
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict] = {"lobe_erosion": 1}

    def __init__(self, pixel_size: float = 1.0, lobe_erosion: int = 2, lobe_min_fraction: float = 0.08,
                 physical_units: bool = False):
        self._store_params(locals())

    @property
    def wants_spacing(self) -> bool:  # type: ignore[override]
        """The engine passes ``spacing_um`` only when physical-unit columns are asked for."""
        return bool(self.physical_units)

    def feature_names(self) -> list[str]:
        names = [*SHAPE_NAMES, *NUCLEUS_NAMES, "valid", "has_nucleus", "objects"]
        return names + list(_physical_names()) if self.physical_units else names

    @staticmethod
    def _physical(feats: dict[str, float], spacing_um: tuple[float, float] | None) -> dict[str, float]:
        """The ``_um`` / ``_um2`` columns from pixel-valued ``feats``: areas times ``row * col``
        spacing, lengths times its geometric mean (exact for square pixels); NaN without a spacing."""
        sy, sx = (float(v) for v in spacing_um) if spacing_um else (float("nan"), float("nan"))
        out = {}
        for name, (base, unit) in _physical_names().items():
            out[name] = feats[base] * (sy * sx if unit == "um2" else float(np.sqrt(sy * sx)))
        return out

    def _scale(self, feats: dict[str, float]) -> dict[str, float]:
        """Apply ``pixel_size`` to lengths and areas (cell and nucleus), once."""
        s = float(self.pixel_size)
        for k in list(feats):
            bare = k.removeprefix("nucleus_")
            if bare in _LENGTHS:
                feats[k] *= s
            elif bare in _AREAS:
                feats[k] *= s * s
        return feats

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None,
                 spacing_um: tuple[float, float] | None = None) -> np.ndarray:
        if float(self.pixel_size) <= 0:
            raise InvalidInputError(f"morphology: pixel_size must be > 0, got {self.pixel_size}")
        mask = resolve_mask(image, mask)
        names = self.feature_names()
        out = dict.fromkeys(names, float("nan"))
        box = bbox(mask > 0, 1)
        if box is None:
            out.update(valid=0.0, has_nucleus=0.0, objects=0.0, lobe_count=0.0)
            return np.asarray([out.get(n, float("nan")) for n in names], np.float32)
        m = mask[box]
        labels, area = components(m > 0)
        n_obj = area.size - 1
        if n_obj > 1:
            cell = labels == int(np.argmax(area))
            objects = int((area[1:] >= 0.05 * area.max()).sum())
            sub = bbox(cell, 1)
            cell, m = cell[sub], m[sub]
        else:
            cell, objects = labels > 0, n_obj
        cell_feats, cy, cx = _shape(cell)
        out.update(cell_feats)
        nucleus = cell & (m == 2)
        n_area = float(np.count_nonzero(nucleus))
        out.update(valid=1.0, objects=float(objects), has_nucleus=float(n_area > 0), lobe_count=0.0)
        if n_area > 0:
            nf, ny, nx = _shape(nucleus)  # all lobes together: lobed nuclei are less circular
            out.update({
                "nucleus_area": n_area,
                "nucleus_perimeter": nf["perimeter"],
                "nucleus_equivalent_diameter": nf["equivalent_diameter"],
                "nucleus_eccentricity": nf["eccentricity"],
                "nucleus_circularity": nf["circularity"],
                "nucleus_solidity": nf["solidity"],
                "nucleus_convexity": nf["convexity"],
                "nucleus_feret_max": nf["feret_max"],
                "nucleus_aspect_ratio": nf["aspect_ratio"],
                "nc_ratio": _div(n_area, out["area"] - n_area),
                "nucleus_fraction": n_area / out["area"],
                "lobe_count": float(self._lobes(nucleus, n_area)),
            })
            out["nucleus_offset"] = _div(np.hypot(cy - ny, cx - nx), out["equivalent_diameter"] / 2)
        if self.physical_units:
            out.update(self._physical(out, spacing_um))
        self._scale(out)
        return np.asarray([out[n] for n in names], np.float32)

    def _lobes(self, nucleus: np.ndarray, n_area: float) -> int:
        r = int(self.lobe_erosion)
        core = binary_erosion(nucleus, r) if r > 0 else nucleus
        if not core.any():
            core = nucleus
        area = components(core)[1][1:]
        if area.size == 0:
            return 0
        return max(int((area >= float(self.lobe_min_fraction) * area.sum()).sum()), 1)


SMEAR_STATS = ("mean", "std", "cv", "p10", "p50", "p90")


class SmearMorphology(Extractor):
    """A full-field smear as one row: red-cell count and the distribution of their sizes/shapes.

    Cells are the 4-connected components of ``mask > 0`` (``rbc_watershed`` output, or a binary
    RBC mask split by a distance-transform watershed when ``split`` is true); without a mask the
    ``rbc_watershed`` mask is computed. Cells touching the image border are counted but left out
    of the size and shape statistics. Features: count, density per megapixel, coverage;
    mean/std/cv/p10/p50/p90 of area, equivalent diameter, circularity, eccentricity, solidity and
    central-pallor ratio; micro/macrocytic share (diameter below/above ``1 -/+ size_tolerance``
    times the median); elongated share (eccentricity > 0.8); hypochromic share (pallor ratio >
    ``pallor_cut``); mean grey level of the cells. Per-cell circularity, eccentricity and solidity
    are those of :func:`shape_features` (on each cell's box). No cell gives count 0 and NaN elsewhere.

    Parameters
    ----------
    split
        Split touching cells of the given mask by a watershed (keep true for binary RBC masks).
    min_distance
        Watershed: minimal distance (px) between two cell centres.
    min_area
        Objects smaller than this (px) are not cells (debris, platelets).
    size_tolerance
        Micro/macrocytic: diameter below (1 - t) or above (1 + t) times the median.
    pallor_cut
        A cell is hypochromic when its bright central pallor covers more than this fraction.
    exclude_border
        Leave cells touching the image border out of the size/shape statistics.
    pixel_size
        Physical size of a pixel; lengths scale by it, areas by its square.
    """

    name: ClassVar[str] = "smear_morphology"
    block: ClassVar[str] = "smear"
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict] = {"min_distance": 3, "min_area": 4}

    def __init__(self, split: bool = True, min_distance: int = 7, min_area: int = 30,
                 size_tolerance: float = 0.2, pallor_cut: float = 0.3, exclude_border: bool = True,
                 pixel_size: float = 1.0):
        self._store_params(locals())

    _PER_CELL = ("area", "diameter", "circularity", "eccentricity", "solidity", "pallor")

    def feature_names(self) -> list[str]:
        names = ["count", "density", "coverage", "counted"]
        names += [f"{p}_{s}" for p in self._PER_CELL for s in SMEAR_STATS]
        names += ["micro_share", "macro_share", "elongated_share", "hypochromic_share", "gray_mean"]
        return names

    def _instances(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        from scipy import ndimage as ndi

        from .segmentation import smear_foreground

        if mask is None:
            fg = smear_foreground(image)
            return split_cells(fg, self.min_distance, self.min_area)[0]
        fg = mask > 0
        if self.split:
            return split_cells(fg, self.min_distance, self.min_area)[0]
        labels, _ = ndi.label(fg)
        return labels

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        from scipy import ndimage as ndi

        from .transforms import to_gray

        names = self.feature_names()
        out = dict.fromkeys(names, float("nan"))
        labels = self._instances(image, mask)
        n = int(labels.max())
        area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
        keep = area >= float(self.min_area)
        keep[0] = False
        count = int(keep.sum())
        h, w = labels.shape
        out.update(count=float(count), density=count / (h * w) * 1e6,
                   coverage=float(area[keep].sum() / (h * w)), counted=0.0)
        if count == 0:
            return np.asarray([out[k] for k in names], np.float32)
        if self.exclude_border:
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            inner = keep.copy()
            inner[border] = False
            if not inner.any():  # every cell touches the border: use them all
                inner = keep
        else:
            inner = keep
        gray = to_gray(image).astype(np.float64)
        fg = labels > 0
        bg_level = np.median(gray[~fg]) if (~fg).any() else 255.0
        cell_level = np.median(gray[fg])
        bright = (gray > (bg_level + cell_level) / 2) & fg
        pallor = np.bincount(labels[bright], minlength=n + 1) / np.maximum(area, 1)
        ids = np.flatnonzero(inner)
        per = {"area": area[ids], "diameter": np.sqrt(4 * area[ids] / np.pi), "pallor": pallor[ids]}
        boxes = ndi.find_objects(labels)
        shapes = [_shape(labels[boxes[i - 1]] == i)[0] for i in ids]
        per.update({key: np.array([f[key] for f in shapes]) for key in ("circularity", "eccentricity", "solidity")})
        s = float(self.pixel_size)
        per["area"] = per["area"] * s * s
        per["diameter"] = per["diameter"] * s
        for key in self._PER_CELL:
            v = per[key][np.isfinite(per[key])]
            if v.size == 0:
                continue
            mean = float(v.mean())
            out.update({f"{key}_mean": mean, f"{key}_std": float(v.std()),
                        f"{key}_cv": _div(v.std(), mean),
                        f"{key}_p10": float(np.percentile(v, 10)), f"{key}_p50": float(np.median(v)),
                        f"{key}_p90": float(np.percentile(v, 90))})
        d = per["diameter"]
        med = np.median(d)
        t = float(self.size_tolerance)
        out.update(counted=float(len(ids)),
                   micro_share=float((d < (1 - t) * med).mean()),
                   macro_share=float((d > (1 + t) * med).mean()),
                   elongated_share=float((per["eccentricity"] > 0.8).mean()),
                   hypochromic_share=float((per["pallor"] > float(self.pallor_cut)).mean()),
                   gray_mean=float(cell_level))
        return np.asarray([out[k] for k in names], np.float32)


@hookimpl
def medfuse_plugins():
    # the cell-biology blocks live in their own (private) modules and register with this family,
    # so an installed distribution needs no new entry point for them
    from ._cellsummary import CellSummary
    from ._compartments import Compartments
    from ._redcell import RedCell

    return [Morphology, SmearMorphology, Compartments, RedCell, CellSummary]
