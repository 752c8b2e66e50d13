"""``ImageFeatures``: medfuse's feature blocks as a scikit-learn transformer.

``make_pipeline(ImageFeatures(blocks=["morphology", "colour"]), LogisticRegression())`` takes
images and works with ``cross_val_score``, ``GridSearchCV`` and ``clone``. Each image goes through
the same steps as ``medfuse extract`` (:func:`medfuse.engine.prepare_images`: decode, transforms,
mask, each block's ``prepare``), then each block's ``fit``/``transform`` — so a trainable block
(a CNN) is fitted on the training fold only, like in ``medfuse compare``.

Input ``X`` (scikit-learn input tags ``string`` and ``three_d_array``; not ``two_d_array``: a 2-D
feature matrix is refused): a list, tuple, 1-D array or Series of image paths (object references
``IMAGE#box=...`` too); a DataFrame with a ``path`` column (and ``mask`` for ``mask="file"``);
a list of image arrays ``(H, W)`` or ``(H, W, C)``; or one stacked array ``(n, H, W)`` (grey) or
``(n, H, W, C)``. Arrays are made canonical by the rules used for files
(:func:`medfuse.engine.load_source`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .contracts import store_params
from .errors import InvalidInputError

__all__ = ["ImageFeatures"]


def _sources(X: Any) -> tuple[list[Any], list[str | None] | None]:
    """``X`` as a list of image sources (paths or arrays) and mask paths (or None)."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        if "path" not in X.columns:
            raise InvalidInputError(f"ImageFeatures: a DataFrame X needs a 'path' column; it has {list(X.columns)}")
        mcol = next((c for c in ("mask", "mask_path") if c in X.columns), None)
        masks = [m if isinstance(m, str) and m else None for m in X[mcol]] if mcol else None
        return [str(p) for p in X["path"]], masks
    if isinstance(X, pd.Series):
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if (X.dtype.kind in "OUS" and X.ndim == 1) or (X.dtype.kind in "uifb" and X.ndim in (3, 4)):
            items = list(X)
        elif X.dtype.kind in "uifb" and X.ndim == 2:
            raise InvalidInputError(f"ImageFeatures: X is a 2-D numeric array {X.shape}; give image paths, a list "
                                    "of images, or a stack (n, H, W) / (n, H, W, C) — not a feature matrix")
        else:
            raise InvalidInputError(f"ImageFeatures: cannot read images from an array of shape {X.shape} and "
                                    f"dtype {X.dtype}; give image paths or a stack (n, H, W[, C])")
    elif isinstance(X, list | tuple):
        items = list(X)
    else:
        raise InvalidInputError(f"ImageFeatures: X must be image paths or images, got {type(X).__name__}")
    if not items:
        raise InvalidInputError("ImageFeatures: X holds no images (0 samples); at least 1 is required")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray) and item.dtype.kind in "uifb":
            out.append(item)
        elif isinstance(item, str | np.str_) or hasattr(item, "__fspath__"):
            out.append(str(item))
        else:
            raise InvalidInputError(f"ImageFeatures: X[{i}] is a {type(item).__name__}; expected an image path "
                                    "or an image array")
    return out, None


class ImageFeatures(TransformerMixin, BaseEstimator):
    """Image paths or arrays -> the ``<block>.<feature>`` columns of ``medfuse extract``.

    Parameters
    ----------
    blocks : extractor plugins (default: morphology, texture, colour).
    mask : mask plugin shared by the blocks (default ``"otsu_cell"``), ``"file"`` (X is a
        DataFrame with a ``mask`` column) or ``None``.
    transforms : transform plugins applied first.
    params : plugin parameters by plugin name, e.g. ``{"texture": {"levels": 16}}``; entries for
        installed plugins this instance does not use are ignored (one dict can serve a grid search
        over ``blocks``), unknown plugin names are an error.
    reader : :class:`~medfuse.intensity.ReadOptions` or its dict (bit depth, windowing, spacing).
    jobs : worker processes for per-image work (1 = this process, -1 = every core).
    on_error : ``"raise"`` (default): an image that cannot be read or processed raises, naming it;
        ``"nan"``: its row is NaN (put an imputer next in the pipeline).

    Attributes
    ----------
    extractors_ : ``(block, fitted extractor)`` pairs.
    feature_names_out_ : the output column names, as :meth:`get_feature_names_out`.
    n_features_out_ : their number.
    errors_ : ``""`` or the reason for each image of the last ``fit``/``transform``.
    """

    def __init__(self, blocks: Sequence[str] | None = None, mask: str | None = "otsu_cell",
                 transforms: Sequence[str] = (), params: dict[str, dict[str, Any]] | None = None,
                 reader: Any = None, jobs: int = 1, on_error: str = "raise"):
        store_params(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.input_tags.allow_nan = True  # float images: NaN -> 0 by the rule for float files
        tags.transformer_tags.preserves_dtype = []
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags

    # ---- steps -------------------------------------------------------------------------------

    def _plugins(self) -> Any:
        from .extract import DEFAULT_BLOCKS, make_plugins

        if self.on_error not in ("raise", "nan"):
            raise InvalidInputError(f"ImageFeatures: on_error={self.on_error!r}; expected 'raise' or 'nan'")
        from .errors import PluginError, did_you_mean
        from .host import get_host

        host = get_host()
        blocks = [self.blocks] if isinstance(self.blocks, str) else self.blocks
        blocks = list(blocks) if blocks is not None else list(DEFAULT_BLOCKS)
        transforms = [self.transforms] if isinstance(self.transforms, str) else list(self.transforms or ())
        params = dict(self.params or {})
        for name in params:
            if name not in host.records:
                raise PluginError(f"ImageFeatures(params=...): no plugin {name!r}{did_you_mean(name, host.records)}")
        used = {*blocks, *transforms, self.mask}
        return make_plugins(blocks, self.mask, transforms, {k: v for k, v in params.items() if k in used},
                            host=host, allow_trainable=True)

    def _prepare(self, X: Any, extractors: Any, transforms: Any, mask: Any) -> tuple[dict[str, np.ndarray], list[str]]:
        from .cli.common import resolve_jobs
        from .engine import MASK_FROM_FILE, prepare_images
        from .intensity import ReadOptions

        sources, masks = _sources(X)
        if mask == MASK_FROM_FILE and (masks is None or all(m is None for m in masks)):
            raise InvalidInputError("ImageFeatures(mask='file'): X must be a DataFrame with 'path' and 'mask' columns")
        prep = prepare_images(sources, masks, transforms, mask, extractors, jobs=resolve_jobs(self.jobs),
                              options=ReadOptions.coerce(self.reader))
        bad = [e for e in prep.errors if e]
        if bad and (self.on_error == "raise" or len(bad) == len(sources)):
            raise InvalidInputError(f"ImageFeatures: {len(bad)} of {len(sources)} image(s) failed; first: {bad[0]}"
                                    + (" (on_error='nan' keeps the others as NaN rows)" if self.on_error == "raise"
                                       else ""))
        return prep.arrays, prep.errors

    def _stack(self, arrays: dict[str, np.ndarray], fit_y: Any = None, fitting: bool = False) -> np.ndarray:
        blocks = []
        for name, ex in self.extractors_:
            P = arrays[name]
            ok = ~np.isnan(P.reshape(len(P), -1)).all(axis=1)
            if fitting:
                ex.fit(P[ok], None if fit_y is None else np.asarray(fit_y)[ok])
            out = np.full((len(P), len(ex.feature_names())), np.nan, np.float64)
            if ok.any():
                out[ok] = ex.transform(P[ok])
            blocks.append(out)
        return np.hstack(blocks)

    # ---- scikit-learn API --------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> ImageFeatures:
        """Create the plugins and fit the trainable blocks on ``X`` (stateless blocks need no pass
        over the images; ``X`` is still checked)."""
        self._fit(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform`, preparing each image once."""
        out = self._fit(X, y, want_output=True)
        assert out is not None
        return out

    def _fit(self, X: Any, y: Any, want_output: bool = False) -> np.ndarray | None:
        plugins = self._plugins()
        self.extractors_ = plugins.extractors
        self.transform_plugins_ = plugins.transforms
        self.mask_plugin_ = plugins.mask
        self.feature_names_out_ = np.asarray([f"{name}.{f}" for name, ex in self.extractors_
                                              for f in ex.feature_names()], dtype=object)
        self.n_features_out_ = len(self.feature_names_out_)
        trainable = any(getattr(ex, "trainable", False) for _, ex in self.extractors_)
        if not (trainable or want_output):
            sources, _ = _sources(X)  # validate only
            self.errors_ = [""] * len(sources)
            return None
        arrays, self.errors_ = self._prepare(X, self.extractors_, self.transform_plugins_, self.mask_plugin_)
        out = self._stack(arrays, y, fitting=True)
        self.feature_names_out_ = np.asarray([f"{name}.{f}" for name, ex in self.extractors_
                                              for f in ex.feature_names()], dtype=object)
        self.n_features_out_ = len(self.feature_names_out_)
        return out

    def transform(self, X: Any) -> np.ndarray:
        """Features of each image: ``float64 (n_images, n_features_out_)``."""
        check_is_fitted(self, "extractors_")
        arrays, self.errors_ = self._prepare(X, self.extractors_, self.transform_plugins_, self.mask_plugin_)
        return self._stack(arrays)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``<block>.<feature>`` names of the output columns (``input_features`` is ignored: the
        input is images)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()
