"""Three example plugins: what a plugin author writes, and nothing more."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Classifier, Extractor, Loader, SampleTable
from medfuse.errors import DataError, InvalidInputError
from medfuse.loading import SampleTableBuilder, loader_root


class IntensityHistogram(Extractor):
    """Grey-level histogram of the cell (or of the whole image when there is no mask)."""

    name = "intensity_histogram"
    block = "intensity"
    version = "0.1.0"
    param_docs = {"bins": "Number of equal-width bins over 0..255.",
                  "normalise": "Divide counts by the number of pixels (fractions instead of counts)."}
    conformance_params = {"bins": 8}

    def __init__(self, bins: int = 16, normalise: bool = True):
        self.bins = bins
        self.normalise = normalise

    def feature_names(self) -> list[str]:
        return [f"bin{i:02d}" for i in range(self.bins)]

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        grey = image.mean(axis=2)
        values = grey[mask > 0] if mask is not None and mask.any() else grey.ravel()
        counts = np.bincount((values * self.bins / 256).astype(int), minlength=self.bins)[: self.bins]
        if self.normalise:
            counts = counts / max(values.size, 1)
        return counts.astype(np.float32)


class NearestCentroid(Classifier):
    """Nearest class centroid with a softmax over negative distances."""

    name = "nearest_centroid"
    version = "0.1.0"
    param_docs = {"temperature": "Softmax temperature applied to negative Euclidean distances."}

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        self.classes_ = np.asarray(sorted(set(y)), dtype=object)
        y = np.asarray(y, dtype=object)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.centroids_.shape[1]:
            raise InvalidInputError(f"nearest_centroid: expected (n, {self.centroids_.shape[1]}) features, "
                                    f"got {X.shape}")
        d = np.linalg.norm(X[:, None, :] - self.centroids_[None], axis=2)
        z = -d / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


class CsvIndex(Loader):
    """Images listed in a CSV index with the columns ``path``, ``label`` and optionally ``group``
    (the patient) and a mask column; paths are relative to the data root."""

    name = "csv_index"
    version = "0.1.0"
    param_docs = {"index": "The CSV index, relative to the data root.",
                  "mask_column": "Column holding each image's mask file (relative to the root), if any."}
    conformance_params = {"index": "manifest.csv"}  # the index layout of medfuse.testing.sample_dataset

    def __init__(self, index: str = "index.csv", mask_column: str | None = None):
        self.index = index
        self.mask_column = mask_column

    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        root = loader_root(root)
        index = root / self.index
        if not index.is_file():
            raise DataError(f"{index}: index file not found (parameter 'index' is relative to the data root)")
        build = SampleTableBuilder(source=str(index), loader=self.name)
        with index.open(newline="", encoding="utf-8") as fh:
            rows = csv.DictReader(fh)
            missing = [c for c in ("path", "label", self.mask_column) if c and c not in (rows.fieldnames or ())]
            if missing:                              # the data's fault: say which file and what to do
                raise DataError(f"{index}: no column {', '.join(missing)}; the index needs path,label "
                                "(optionally group and the mask_column)")
            for row in rows:
                path = root / row["path"]
                if not path.is_file():
                    build.bad_file(path, "listed in the index but not found")
                    continue
                mask = row.get(self.mask_column) if self.mask_column else None
                build.add(id=path.stem, label=row.get("label"), path=path,
                          mask_path=root / mask if mask else None, group=row.get("group") or None)
        return build.build(jobs=jobs, progress=progress)


@hookimpl
def medfuse_plugins():
    return [IntensityHistogram, NearestCentroid, CsvIndex]
