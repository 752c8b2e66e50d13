"""medfuse.ImageFeatures: a scikit-learn transformer over image paths or arrays."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from unittest import mock

import medfuse
import numpy as np
import pandas as pd
import pytest
import sklearn.utils.estimator_checks as ec
from medfuse.errors import InvalidInputError
from medfuse.synthetic import make_cells, write_dataset
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BLOCKS = ["morphology", "colour"]
PARAMS = {"colour": {"bins": 8}}


@pytest.fixture(scope="module")
def cells():
    cells = make_cells(n_per_class=6, size=32, seed=0)
    return np.stack([c.image for c in cells]), np.array([c.label for c in cells])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    write_dataset(root, n_per_class=4, size=32, seed=1)
    return root


def test_inside_a_pipeline_with_cross_val_score(cells):
    X, y = cells
    pipe = make_pipeline(ImageFeatures_(), StandardScaler(), LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6  # chance is 1/3; the shapes separate
    search = GridSearchCV(pipe, {"imagefeatures__blocks": [["morphology"], BLOCKS]}, cv=2).fit(X, y)
    assert search.best_params_["imagefeatures__blocks"] in (["morphology"], BLOCKS)


def ImageFeatures_(**kw):
    return medfuse.ImageFeatures(blocks=BLOCKS, params=PARAMS, **kw)


def test_paths_give_the_extract_table(folder):
    df = medfuse.extract(folder / "images", blocks=BLOCKS, params=PARAMS)
    t = ImageFeatures_().fit(df["path"].tolist())
    names = t.get_feature_names_out()
    assert names.tolist() == [c for c in df.columns if c not in ("path", "error")]
    np.testing.assert_allclose(t.transform(df["path"].to_numpy()), df[names].to_numpy(np.float64), rtol=1e-6)
    # a DataFrame with a path column, and pandas output named by get_feature_names_out
    out = ImageFeatures_().set_output(transform="pandas").fit_transform(df[["path"]])
    assert isinstance(out, pd.DataFrame) and out.columns.tolist() == names.tolist() and len(out) == len(df)


def test_arrays_are_read_like_files(folder, cells):
    from medfuse.imageio import read_image

    paths = sorted(str(p) for p in (folder / "images").rglob("*.png"))[:4]
    images = [read_image(p) for p in paths]
    t = ImageFeatures_().fit(paths)
    np.testing.assert_allclose(t.transform(images), t.transform(paths))
    grey = np.stack([im[..., 0] for im in images])  # (n, H, W) grey stack
    assert t.transform(grey).shape == (4, t.n_features_out_)
    floats = [im.astype(np.float32) / 255 for im in images]  # floats in [0, 1]: times 255, as for files
    np.testing.assert_allclose(t.transform(floats), t.transform(images), atol=1e-3)


def test_clear_errors(cells, tmp_path):
    X, _ = cells
    with pytest.raises(InvalidInputError, match="2-D numeric array.*not a feature matrix"):
        ImageFeatures_().fit_transform(np.zeros((5, 3)))
    with pytest.raises(NotFittedError):
        ImageFeatures_().transform(X)
    with pytest.raises(InvalidInputError, match="1 of 2 image.*missing.png"):
        ImageFeatures_().fit_transform([X[0], str(tmp_path / "missing.png")])
    kept = ImageFeatures_(on_error="nan").fit_transform([X[0], str(tmp_path / "missing.png")])
    assert np.isfinite(kept[0]).all() and np.isnan(kept[1]).all()
    with pytest.raises(medfuse.errors.PluginError, match="nosuchblock"):
        medfuse.ImageFeatures(blocks=["nosuchblock"]).fit(X)


# ---- scikit-learn's own estimator checks --------------------------------------------------------
# ImageFeatures declares (tags) that it takes strings and 3-D/4-D arrays, not a 2-D feature matrix,
# so check_estimator skips it as a whole. The checks that apply are run one by one: those that need
# no data as they are, those that build a random 2-D X with each row turned into a small image (the
# checks pass X through _enforce_estimator_tags_X, which is what adapts data to an estimator's tags).

NO_DATA = ["check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
           "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
           "check_estimator_tags_renamed", "check_valid_tag_types", "check_mixin_order",
           "check_do_not_raise_errors_in_init_or_set_params"]
ON_IMAGES = ["check_estimators_fit_returns_self", "check_dont_overwrite_parameters", "check_fit_score_takes_y",
             "check_methods_sample_order_invariance", "check_estimators_pickle", "check_fit_idempotent",
             "check_fit_check_is_fitted", "check_estimators_overwrite_params", "check_dict_unchanged",
             "check_readonly_memmap_input", "check_estimators_unfitted", "check_transformers_unfitted",
             "check_transformer_get_feature_names_out", "check_set_output_transform", "check_transformer_n_iter",
             "check_positive_only_tag_during_fit", "check_requires_y_none", "check_estimators_dtypes",
             "check_pipeline_consistency", "check_f_contiguous_array_estimator"]


def _rows_as_images(estimator, X, X_test=None, kernel=None):
    def convert(A):
        A = np.asarray(A, dtype=np.float64)
        return np.stack([(np.resize(row, (12, 12, 3)) * 0.15 + 0.5).clip(0, 1) for row in A])  # floats in [0, 1]

    return convert(X) if X_test is None else (convert(X), convert(X_test))


def test_check_estimator_sees_the_input_tags():
    tags = medfuse.ImageFeatures().__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.string and tags.input_tags.three_d_array
    with pytest.warns(ec.SkipTestWarning, match="requires input"):
        ec.check_estimator(medfuse.ImageFeatures())


@pytest.mark.parametrize("check", NO_DATA + ON_IMAGES)
def test_sklearn_check(check):
    estimator = medfuse.ImageFeatures(blocks=["colour"], mask=None, params={"colour": {"bins": 4}})
    with mock.patch.object(ec, "_enforce_estimator_tags_X", _rows_as_images), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(ec, check)("ImageFeatures", estimator)


def test_fit_transform_and_subsets_agree(cells):
    # what check_transformer_general and check_methods_subset_invariance test, on image input
    X, y = cells
    t = ImageFeatures_()
    full = clone(t).fit_transform(X, y)
    np.testing.assert_allclose(full, clone(t).fit(X, y).transform(X))
    fitted = clone(t).fit(X[:6])
    np.testing.assert_allclose(fitted.transform(X[6:12]), full[6:12])
    np.testing.assert_allclose(pickle.loads(pickle.dumps(fitted)).transform(X[:3]), full[:3])
