"""Per-block preparation (impute, scale, PCA) and the fusion combiners."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.fusion import BlockPreparer, LateFusion, aligned_proba, early_concat, inner_folds, soft_vote
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import RobustScaler, StandardScaler


def _block(n: int = 50, f: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (n, 2))
    return base @ rng.normal(0, 1, (2, f)) + 0.05 * rng.normal(0, 1, (n, f))


def test_pca_by_variance_keeps_enough_components_and_reports_them():
    X = _block()
    prep = BlockPreparer(pca=0.95, block="tex").fit(X, feature_names=[f"tex.f{i}" for i in range(8)])
    Z = prep.transform(X)
    rep = prep.report()
    assert Z.dtype == np.float32 and Z.shape == (50, rep["n_components"])
    assert rep["n_components"] == 2 and rep["n_features_in"] == 8  # two latent factors
    assert rep["explained_variance"] >= 0.95 and len(rep["explained_variance_ratio"]) == 2
    assert list(prep.get_feature_names_out()) == ["tex.pc1", "tex.pc2"]
    ref = PCA(0.95, svd_solver="full").fit(StandardScaler().fit_transform(X))
    assert np.allclose(np.abs(Z), np.abs(ref.transform(StandardScaler().fit_transform(X))), atol=1e-4)


def test_pca_by_count_is_capped_and_no_pca_keeps_names():
    X = _block(n=5)
    assert BlockPreparer(pca=50).fit(X).n_components_ == 5
    prep = BlockPreparer(block="m").fit(X[:, :3], feature_names=["m.a", "m.b", "m.c"])
    assert list(prep.get_feature_names_out()) == ["m.a", "m.b", "m.c"]
    assert prep.report()["explained_variance_ratio"] is None


def test_impute_and_scalers():
    X = _block()
    X[::4, 1] = np.nan
    X[:, 2] = np.nan  # a column missing everywhere is kept (as zeros), not dropped
    X[3, 0] = np.inf
    Z = BlockPreparer(impute="median").fit_transform(X)
    assert Z.shape == X.shape and np.isfinite(Z).all()
    assert np.allclose(Z[:, 2], 0)
    robust = BlockPreparer(scale="robust", impute="mean").fit(X)
    assert isinstance(robust.scaler_, RobustScaler)
    raw = BlockPreparer(impute="none", scale="none").fit(_block())
    assert np.allclose(raw.transform(_block()), _block().astype(np.float32))
    with pytest.raises(InvalidInputError, match="missing values"):
        BlockPreparer(impute="none").fit(X)
    with pytest.raises(InvalidInputError, match="expected 8 columns"):
        BlockPreparer().fit(_block()).transform(_block()[:, :3])
    with pytest.raises(InvalidInputError, match="pca"):
        BlockPreparer(pca=1.5).fit(_block())
    with pytest.raises(InvalidInputError, match="no features"):
        BlockPreparer().fit(np.zeros((5, 0)))
    const = BlockPreparer(pca=0.9).fit(np.ones((6, 3)))
    assert const.pca_ is None and const.report()["note"] == "constant block: PCA skipped"
    assert const.transform(np.ones((2, 3))).shape == (2, 3)


def test_early_concat_checks_rows():
    a, b = np.ones((4, 2)), np.zeros((4, 3))
    assert early_concat([a, b]).shape == (4, 5)
    with pytest.raises(InvalidInputError, match="row counts"):
        early_concat([a, b[:3]])
    with pytest.raises(InvalidInputError):
        early_concat([])


def test_soft_vote_and_aligned_proba():
    p1 = np.asarray([[0.8, 0.2], [0.4, 0.6]])
    p2 = np.asarray([[0.6, 0.4], [0.0, 1.0]])
    assert np.allclose(soft_vote([p1, p2]), [[0.7, 0.3], [0.2, 0.8]])
    assert np.allclose(soft_vote([p1, p2], [3, 1]), [[0.75, 0.25], [0.3, 0.7]])
    X = np.asarray([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(X, ["b", "b", "c", "c"])
    out = aligned_proba(model, X, np.asarray(["a", "b", "c"]))
    assert out.shape == (4, 3) and np.allclose(out[:, 0], 0) and np.allclose(out.sum(1), 1)


def test_late_fusion_soft_and_stack():
    rng = np.random.default_rng(0)
    n = 150
    a, b = rng.normal(0, 1, n), rng.normal(0, 1, n)
    y = np.asarray([f"{int(u > 0)}{int(v > 0)}" for u, v in zip(a, b)])
    A = np.c_[a, rng.normal(0, 1, n)]
    B = np.c_[b, rng.normal(0, 1, n)]
    tr, te = np.arange(100), np.arange(100, 150)
    for combine in ("soft", "stack"):
        late = LateFusion(LogisticRegression(), combine, random_state=0).fit([A[tr], B[tr]], y[tr])
        proba = late.predict_proba([A[te], B[te]])
        assert proba.shape == (50, 4) and np.allclose(proba.sum(1), 1)
        acc = np.mean(late.predict([A[te], B[te]]) == y[te])
        single = np.mean(LogisticRegression().fit(A[tr], y[tr]).predict(A[te]) == y[te])
        assert acc > single + 0.15, (combine, acc, single)
    with pytest.raises(InvalidInputError, match="fitted on 2 blocks"):
        late.predict_proba([A[te]])


def test_inner_folds_shrink_for_rare_classes():
    y = np.asarray(["a"] * 10 + ["b"] * 2)
    assert len(inner_folds(y, 5, 0)) == 2
    with pytest.raises(InvalidInputError, match="at least 2 samples"):
        inner_folds(np.asarray(["a"] * 5 + ["b"]), 3, 0)


def _noise_and_signal(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, n)
    y = np.where(a + 0.4 * rng.normal(0, 1, n) > 0, "pos", "neg")
    A = np.c_[a, rng.normal(0, 1, n)]  # the informative block
    N = rng.normal(0, 1, (n, 6))  # pure noise
    return A, N, y


def test_select_drops_a_pure_noise_block_and_matches_the_best_block():
    """combine = "select": the noise block gets weight 0 (its inner-CV gain is not significant), so
    the fusion scores exactly as its best block; plain averaging with the noise block does worse."""
    A, N, y = _noise_and_signal()
    tr, te = np.arange(400), np.arange(400, 600)
    clf = LogisticRegression(C=100.0)
    late = LateFusion(clf, "select", random_state=0).fit([A[tr], N[tr]], y[tr], names=["signal", "noise"])
    rel = late.reliability_
    assert rel["weights"][0] > 0 and rel["weights"][1] == 0, rel  # one part kept: the fusion is that part
    assert [p["kept"] for p in rel["parts"]] == [True, False]
    assert rel["parts"][1]["p_value"] >= 0.05 and rel["parts"][0]["oof_accuracy"] > 0.8
    best = np.mean(clf.fit(A[tr], y[tr]).predict(A[te]) == y[te])
    acc = np.mean(late.predict([A[te], N[te]]) == y[te])
    soft = np.mean(LateFusion(clf, "soft").fit([A[tr], N[tr]], y[tr]).predict([A[te], N[te]]) == y[te])
    assert acc == best and acc > soft, (acc, best, soft)


def test_select_keeps_complementary_blocks_with_learnt_weights():
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.normal(0, 1, n), rng.normal(0, 1, n)
    y = np.asarray([f"{int(u > 0)}{int(v > 0)}" for u, v in zip(a, b)])
    A, B = np.c_[a, rng.normal(0, 1, n)], np.c_[b, rng.normal(0, 1, n)]
    tr, te = np.arange(200), np.arange(200, 300)
    late = LateFusion(LogisticRegression(), "select", random_state=0).fit([A[tr], B[tr]], y[tr])
    w = late.reliability_["weights"]
    assert all(v > 0.2 for v in w), late.reliability_
    single = np.mean(LogisticRegression().fit(A[tr], y[tr]).predict(A[te]) == y[te])
    assert np.mean(late.predict([A[te], B[te]]) == y[te]) > single + 0.15


def test_pool_weights_ignore_an_uninformative_model():
    from medfuse.fusion import pool_weights

    rng = np.random.default_rng(0)
    codes = np.array([0, 1] * 100)
    said = np.where(rng.uniform(size=200) < 0.8, codes, 1 - codes)  # right 80% of the time
    good = np.where(said[:, None] == np.arange(2), 0.8, 0.2)
    u = rng.uniform(0.05, 0.95, 200)
    noise = np.c_[u, 1 - u]  # confident and unrelated to the label
    w = pool_weights([good, noise], codes)
    assert w[0] > 0.5 and w[1] < 0.15 * w[0], w  # in-sample: small, not 0 (select_parts tests it)


def test_early_select_drops_a_noise_block_and_never_trails_its_best_block_on_shifted_data():
    """Early fusion, combine = "select": the noise block's inner-CV gain is not significant, so it is
    dropped and the fused model is its best block's; on a test set where the noise block shifts
    (+1..+3 sd), plain concatenation loses accuracy while the selected fusion never falls below its
    best block alone."""
    from medfuse.fusion import early_concat, select_blocks

    A, N, y = _noise_and_signal()
    tr, te = np.arange(400), np.arange(400, 600)
    clf = LogisticRegression(C=100.0)
    rel = select_blocks(lambda i, j: ([A[tr][i], N[tr][i]], [A[tr][j], N[tr][j]]), ["signal", "noise"], y[tr],
                        np.unique(y), clf)
    assert rel["weights"] == [1.0, 0.0] and rel["pool"] == "early", rel
    assert [p["kept"] for p in rel["parts"]] == [True, False] and rel["parts"][1]["p_value"] >= 0.05
    kept = [B for B, w in zip((A, N), rel["weights"]) if w > 0]
    fused = clf.fit(early_concat([B[tr] for B in kept]), y[tr])
    plain = LogisticRegression(C=100.0).fit(early_concat([A[tr], N[tr]]), y[tr])
    parts = {"signal": LogisticRegression(C=100.0).fit(A[tr], y[tr]),
             "noise": LogisticRegression(C=100.0).fit(N[tr], y[tr])}
    losses = []
    for shift in (0.0, 1.0, 2.0, 3.0):
        shifted = {"signal": A[te], "noise": N[te] + shift}
        best = max(np.mean(m.predict(shifted[b]) == y[te]) for b, m in parts.items())
        got = np.mean(fused.predict(early_concat([shifted[n] for n, w in zip(("signal", "noise"), rel["weights"])
                                                  if w > 0])) == y[te])
        assert got >= best, (shift, got, best)
        losses.append(best - np.mean(plain.predict(early_concat([shifted["signal"], shifted["noise"]])) == y[te]))
    assert losses[-1] > 0.03, losses  # without selection the shifted noise block costs accuracy


def test_early_select_keeps_complementary_blocks():
    from medfuse.fusion import select_blocks

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
    y = np.asarray([f"{int(u > 0)}{int(v > 0)}" for u, v in zip(a, b)])
    A, B = np.c_[a, rng.normal(0, 1, 300)], np.c_[b, rng.normal(0, 1, 300)]
    rel = select_blocks(lambda i, j: ([A[i], B[i]], [A[j], B[j]]), ["a", "b"], y, np.unique(y), LogisticRegression())
    assert rel["weights"] == [1.0, 1.0] and rel["oof_accuracy"] > 0.85, rel
    assert rel["parts"][1]["p_value"] < 0.05 or rel["parts"][0]["p_value"] < 0.05
