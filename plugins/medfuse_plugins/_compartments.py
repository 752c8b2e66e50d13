"""White cells per compartment: stain density, chromatin texture, cytoplasm granularity, granules.

Registered by :mod:`medfuse_plugins.morphology` (the cell-morphology family). The feature list
and what each measures are in :class:`Compartments` and ``docs/cell-features.md``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError

from ._cellparts import background_level, granularity, main_component, opening_series, optical_density, ratio, spots
from .segmentation import bbox, components, resolve_mask
from .texture import glcm_angle_stats, lbp_histograms
from .transforms import to_gray

PARTS = ("nucleus", "cytoplasm")
_GLCM_KEEP = {"contrast": 0, "homogeneity": 2, "energy": 4, "correlation": 5, "entropy": 6}
_N_GLCM_PROPS = 12  # texture.GLCM_PROPS
LBP_BINS = 10  # uniform LBP, P = 8: P + 2 codes


class Compartments(Extractor):
    """Texture and colour per compartment of a white cell: chromatin, cytoplasm, granules.

    The cell is the main component of ``mask > 0`` (``keep``: largest or centred); its nucleus is
    ``mask == 2``, its cytoplasm ``mask == 1``; without a mask the ``otsu_cell`` mask is computed.
    Stain is measured as optical density (OD = -log10(I / I0), ``I0`` the bright background),
    ``od`` being the sum over R, G, B. Per compartment (``nucleus_*``, ``cytoplasm_*``):

    * ``od_mean``, ``od_std``, ``od_p90``: stain density and its spread (dense, clumped
      chromatin: high mean and std; basophilic cytoplasm: higher than neutrophilic);
    * ``od_red_share``, ``od_blue_share``: OD of the red/blue channel over the sum, i.e. the
      hue of the stain independent of its amount (eosinophilic orange granules absorb little red:
      low red share; basophilic / azurophilic purple: high red share);
    * ``glcm_<prop>_d<d>``: GLCM contrast, homogeneity, energy, correlation and entropy of the OD
      (quantised to ``levels`` over the compartment's 1-99th percentiles, so it describes the
      pattern, not the density), mean over 4 angles, per distance (chromatin coarse vs fine);
    * ``lbp_<k>``: uniform LBP (P = 8, R = 1) histogram of the grey image (10 codes);
    * ``granularity_r<r>``: share of the compartment's OD removed by successive grey openings
      with disks of radius ``r`` (CellProfiler granularity spectrum: granular cytoplasm gives
      large values at the granule's radius, smooth cytoplasm ~0);
    * ``granules``, ``granule_density``, ``granule_cover``, ``granule_red_share``: dense spots
      (white top-hat of OD with a disk of ``granule_radius`` above ``granule_threshold``): count,
      count per 1,000 px (full resolution), share of the compartment's pixels, and their
      red-channel OD share (eosinophil granules low, basophil granules high). Granularity and
      granules are measured on OD averaged over ``scale`` x ``scale`` blocks, radii in those units.

    Cell-wide: ``cell_granules`` (spots over the whole cell: basophil granules lie on the
    nucleus too), ``nc_od_ratio`` (nucleus over cytoplasm OD mean), ``valid``. An empty mask
    gives NaN everywhere and ``valid = 0``; an empty compartment gives NaN for its columns
    (its ``granules`` 0).

    Parameters
    ----------
    radii
        Disk radii (px at 1/scale) of the granularity spectrum; None = [1, 2, 3] (PBC: ~0.1 um/px, so 0.2-0.6 um at
        scale 2).
    granule_radius
        Top-hat disk radius (px at 1/scale): spots narrower than about twice this are granules.
    scale
        Granularity and granules are measured on OD block-averaged over scale x scale pixels (1 = full resolution; 2 is
        ~10x cheaper on PBC-sized cells).
    granule_threshold
        Top-hat OD (sum over R, G, B) above which a pixel is in a granule.
    levels
        Grey levels of the GLCM (OD quantised over the compartment's 1-99th percentiles).
    distances
        GLCM pixel distances; None = [1, 2].
    keep
        Main cell of the mask: 'largest' component or the one nearest the image 'centre'.
    """

    name: ClassVar[str] = "compartments"
    block: ClassVar[str] = "compartments"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"radii": [1, 2], "distances": [1]}

    def __init__(self, radii: list | None = None, granule_radius: int = 2, granule_threshold: float = 0.3,
                 levels: int = 16, distances: list | None = None, keep: str = "largest", scale: int = 2):
        self._store_params(locals())

    def _radii(self) -> tuple[int, ...]:
        return tuple(int(r) for r in ([1, 2, 3] if self.radii is None else self.radii))

    def _distances(self) -> tuple[int, ...]:
        return tuple(int(d) for d in ([1, 2] if self.distances is None else self.distances))

    def validate_params(self) -> None:
        """Positive radii and distances, 2-256 levels, keep 'largest' or 'centre'."""
        if self.keep not in ("largest", "centre"):
            raise InvalidInputError(f"compartments: keep={self.keep!r}; expected 'largest' or 'centre'")
        if not 2 <= int(self.levels) <= 256:
            raise InvalidInputError(f"compartments: levels must be in 2..256, got {self.levels}")
        if min(self._radii(), default=0) < 1 or min(self._distances(), default=0) < 1 or int(self.granule_radius) < 1:
            raise InvalidInputError("compartments: radii, distances and granule_radius must be >= 1 px")
        if int(self.scale) < 1:
            raise InvalidInputError(f"compartments: scale must be >= 1, got {self.scale}")

    def _part_names(self) -> list[str]:
        names = ["od_mean", "od_std", "od_p90", "od_red_share", "od_blue_share"]
        names += [f"glcm_{p}_d{d}" for p in _GLCM_KEEP for d in self._distances()]
        names += [f"lbp_{k}" for k in range(LBP_BINS)]
        names += [f"granularity_r{r}" for r in self._radii()]
        names += ["granules", "granule_density", "granule_cover", "granule_red_share"]
        return names

    def feature_names(self) -> list[str]:
        names = [f"{part}_{n}" for part in PARTS for n in self._part_names()]
        return names + ["cell_granules", "nc_od_ratio", "valid"]

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self.validate_params()
        mask = resolve_mask(image, mask)
        names = self.feature_names()
        out = dict.fromkeys(names, float("nan"))
        cell_full = main_component(mask > 0, self.keep)
        radii = self._radii()
        box = bbox(cell_full, (max(max(radii), int(self.granule_radius)) + 2) * int(self.scale))
        if box is None:
            out["valid"] = 0.0
            return np.asarray([out[n] for n in names], np.float32)
        level = background_level(image, mask == 0)
        img, m, cell = image[box], mask[box], cell_full[box]
        od3 = optical_density(img, level)
        od = od3.sum(axis=2)
        gray = to_gray(img)
        # granularity and granules at 1/scale resolution (block means): the openings dominate the cost
        s = int(self.scale)
        od3_c = pool(od3, s)
        od_c, cell_c = od3_c.sum(axis=2), pool(cell, s) >= 0.5
        removed = opening_series(od_c, cell_c, radii)
        hit, n_cell = spots(od_c, cell_c, int(self.granule_radius), float(self.granule_threshold))
        out.update(valid=1.0, cell_granules=float(n_cell))
        means = {}
        for part, code in zip(PARTS, (2, 1)):
            region = cell & (m == code)
            coarse = (pool(region, s) >= 0.5, od3_c, od_c, removed, hit)
            feats = self._part(region, od3, od, gray, coarse)
            means[part] = feats["od_mean"]
            out.update({f"{part}_{k}": v for k, v in feats.items()})
        out["nc_od_ratio"] = ratio(means["nucleus"], means["cytoplasm"])
        return np.asarray([out[n] for n in names], np.float32)

    def _part(self, region: np.ndarray, od3: np.ndarray, od: np.ndarray, gray: np.ndarray,
              coarse: tuple[np.ndarray, ...]) -> dict[str, float]:
        """The :meth:`_part_names` values of one compartment (NaN when it is empty); ``coarse``:
        the region, OD per channel, OD sum, opening series and granule pixels at 1/scale."""
        names = self._part_names()
        n = int(np.count_nonzero(region))
        feats = dict.fromkeys(names, float("nan"))
        feats["granules"] = 0.0
        if n == 0:
            return feats
        v = od[region]
        total = float(v.sum())
        per_channel = od3[region].sum(axis=0)
        feats.update(od_mean=float(v.mean()), od_std=float(v.std()), od_p90=float(np.percentile(v, 90)),
                     od_red_share=ratio(per_channel[0], total), od_blue_share=ratio(per_channel[2], total))
        feats.update(self._glcm(od, region, v))
        h = lbp_histograms(gray, [(8, 1.0)], region)[0].astype(np.float64)
        feats.update({f"lbp_{k}": float(x) for k, x in enumerate(h / max(h.sum(), 1.0))})
        region_c, od3_c, od_c, removed, hit = coarse
        shares = granularity(removed, od_c, region_c)
        feats.update({f"granularity_r{r}": float(s) for r, s in zip(self._radii(), shares)})
        spot = hit & region_c
        count = components(spot)[1].size - 1
        spot_od = od3_c[spot].sum(axis=0)
        feats.update(granules=float(count), granule_density=1000.0 * count / n,
                     granule_cover=float(np.count_nonzero(spot)) / max(np.count_nonzero(region_c), 1),
                     granule_red_share=ratio(spot_od[0], spot_od.sum()) if count else float("nan"))
        return feats

    def _glcm(self, od: np.ndarray, region: np.ndarray, v: np.ndarray) -> dict[str, float]:
        levels, dists = int(self.levels), self._distances()
        lo, hi = np.percentile(v, [1, 99])
        q = np.clip((od - lo) / max(hi - lo, 1e-6) * (levels - 1) + 0.5, 0, levels - 1).astype(np.uint16)
        ib = bbox(region)
        stats = glcm_angle_stats(q[ib], region[ib], levels, dists).reshape(_N_GLCM_PROPS, len(dists), 2)
        return {f"glcm_{p}_d{d}": float(stats[i, j, 0]) for p, i in _GLCM_KEEP.items() for j, d in enumerate(dists)}


def pool(a: np.ndarray, s: int) -> np.ndarray:
    """Mean over ``s`` x ``s`` blocks of the first two axes (edges cut to a multiple of ``s``),
    float32; ``a`` itself (as float32) when ``s == 1``."""
    a = np.asarray(a, np.float32)
    if s <= 1:
        return a
    h, w = (a.shape[0] // s) * s, (a.shape[1] // s) * s
    b = a[:h, :w].reshape(h // s, s, w // s, s, *a.shape[2:])
    return b.mean(axis=(1, 3))


__all__ = ["Compartments", "pool"]
