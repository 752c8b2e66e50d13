"""Histogram of oriented gradients (HOG) of the whole image, at a fixed size.

HOG (Dalal and Triggs, 2005) describes the layout of edges: the grey image is resized to
``size x size`` (so every image gives the same number of features), split into cells of
``pixels_per_cell`` pixels, and each cell's gradient orientations are histogrammed into
``orientations`` bins, normalised over blocks of ``cells_per_block`` cells (L2-Hys). Suits
images that are the region of interest themselves (chest X-rays); the mask is not used. With
``normalize`` (and ``smooth``) the grey image is first normalised per image
(:func:`medfuse_plugins.transforms.normalize_gray`) against exposure and contrast shift.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError
from PIL import Image

from .transforms import NORMALIZE, normalize_gray


def hog_vector(image: np.ndarray, size: int, orientations: int, pixels_per_cell: int,
               cells_per_block: int, normalize: str = "none", smooth: float = 0.0) -> np.ndarray:
    """HOG of ``image`` (uint8 ``(H, W, 3)``) resized to ``size x size``: float32 ``(n_features,)``;
    ``normalize`` / ``smooth``: :func:`~medfuse_plugins.transforms.normalize_gray` of the grey image first."""
    from skimage.feature import hog

    grey = Image.fromarray(image).convert("L")
    if normalize != "none" or smooth:
        grey = Image.fromarray(normalize_gray(np.asarray(grey), normalize, smooth))
    grey = np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    v = hog(grey, orientations=orientations, pixels_per_cell=(pixels_per_cell, pixels_per_cell),
            cells_per_block=(cells_per_block, cells_per_block), block_norm="L2-Hys", feature_vector=True)
    return v.astype(np.float32)


class Hog(Extractor):
    """Histogram of oriented gradients of the whole image resized to ``size x size``.

    Features ``hog.<i>`` (``blocks_per_side**2 * cells_per_block**2 * orientations`` of them,
    with ``blocks_per_side = size // pixels_per_cell - cells_per_block + 1``). The mask is ignored.

    Parameters
    ----------
    size
        Side (px) the grey image is resized to before HOG.
    orientations
        Orientation bins per cell (unsigned gradients, 0-180 degrees).
    pixels_per_cell
        Side of a HOG cell in pixels (after resizing).
    cells_per_block
        Side of a normalisation block in cells.
    normalize
        Per-image grey normalisation first: 'none', 'equalize' (invariant to gamma/contrast/brightness changes) or
        'stretch' (1st-99th percentile range to 0-255).
    smooth
        Gaussian sigma (px) applied before the normalisation (0: none).
    """

    name: ClassVar[str] = "hog"
    block: ClassVar[str] = "hog"
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict] = {"size": 16, "pixels_per_cell": 4}

    def __init__(self, size: int = 64, orientations: int = 9, pixels_per_cell: int = 8, cells_per_block: int = 2,
                 normalize: str = "none", smooth: float = 0.0):
        self._store_params(locals())

    def _cells_per_side(self) -> int:
        n = int(self.size) // int(self.pixels_per_cell)
        if n < int(self.cells_per_block) or int(self.orientations) < 1:
            raise InvalidInputError(f"hog: size {self.size} with pixels_per_cell {self.pixels_per_cell} gives "
                                    f"{n} cells per side, fewer than cells_per_block {self.cells_per_block}")
        return n

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self._cells_per_side()
        if self.normalize not in NORMALIZE:
            raise InvalidInputError(f"hog: normalize {self.normalize!r} is not one of {', '.join(NORMALIZE)}")
        return hog_vector(image, int(self.size), int(self.orientations), int(self.pixels_per_cell),
                          int(self.cells_per_block), self.normalize, float(self.smooth))

    def feature_names(self) -> list[str]:
        b = self._cells_per_side() - int(self.cells_per_block) + 1
        return [str(i) for i in range(b * b * int(self.cells_per_block) ** 2 * int(self.orientations))]


@hookimpl
def medfuse_plugins():
    return [Hog]
