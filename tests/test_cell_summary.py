"""``cell_summary``: a whole image summarised by its cells, on tiny generated smears (flat and pale
disks on a bright background) whose summary statistics are known, its in-fold reference shares,
and the block inside a fused pipeline of a study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse_plugins._cellsummary import CellSummary
from PIL import Image

DISK9, DISK5 = 253, 81  # pixels of a digital disk of radius 9 / 5 (d <= r)


def smear(cells, size=(96, 128), bg=235, base=120, pale=215) -> np.ndarray:
    """RGB smear: ``(cy, cx, radius, pallor_radius)`` disks of grey ``base`` with a ``pale``
    centre of ``pallor_radius`` (0 = flat disk)."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), bg, np.uint8)
    for cy, cx, r, pr in cells:
        d = np.hypot(yy - cy, xx - cx)
        img[d <= r] = base
        if pr:
            img[d <= pr] = pale
    return np.repeat(img[..., None], 3, axis=2)


# 6 whole cells (3 with a pale centre 2/3 of their diameter, one microcyte) and one cut by the border
MIXED = [(20, 20, 9, 0), (20, 60, 9, 6), (20, 100, 9, 6), (60, 20, 9, 0), (60, 60, 5, 0), (60, 100, 9, 6),
         (93, 60, 9, 0)]


def _row(ex: CellSummary, image: np.ndarray) -> dict[str, float]:
    return dict(zip(ex.feature_names(), ex.prepare(image).tolist()))


def test_summary_statistics_of_a_generated_smear_are_the_known_values():
    f = _row(CellSummary(stats=["mean", "sd", "p50", "max"]), smear(MIXED))
    assert f["count"] == 7 and f["measured"] == 6  # the border cell is counted, not measured
    assert f["coverage"] == pytest.approx((6 * DISK9 + DISK5 - 0) / (96 * 128), rel=0.1)
    areas = np.array([DISK9] * 5 + [DISK5], float)
    assert f["rbc_area_mean"] == pytest.approx(areas.mean())
    assert f["rbc_area_sd"] == pytest.approx(areas.std())
    assert f["rbc_area_p50"] == DISK9 and f["rbc_area_max"] == DISK9
    # pallor: 3 of 6 cells have a pale centre of 2/3 the diameter, the others none
    assert f["rbc_pallor_diameter_ratio_mean"] == pytest.approx(0.5 * 2 / 3, abs=0.02)
    assert f["share_rbc_pallor_diameter_ratio_gt_0p5"] == pytest.approx(0.5)
    assert f["share_rbc_target_index_gt_0p1"] == 0.0 and f["share_rbc_elongation_gt_1p5"] == 0.0
    # size against the smear's median cell: one microcyte of 81/253
    assert f["rel_rbc_area_mean"] == pytest.approx((5 + DISK5 / DISK9) / 6)
    assert f["rel_rbc_area_p50"] == 1.0
    assert f["share_rel_rbc_area_lt_0p7"] == pytest.approx(1 / 6)
    assert f["share_rel_rbc_area_gt_1p3"] == 0.0


def test_all_pale_smear_and_a_neighbour_painted_out():
    # two touching cells: each is measured alone (the other painted with the background colour)
    pale = [(30, 30, 9, 6), (30, 48, 9, 6), (30, 90, 9, 6), (70, 40, 9, 6), (70, 90, 9, 6)]
    f = _row(CellSummary(stats=["mean", "min"]), smear(pale))
    assert f["measured"] == 5
    assert f["share_rbc_pallor_diameter_ratio_gt_0p5"] == 1.0
    assert f["rbc_pallor_diameter_ratio_min"] > 0.5
    flat = _row(CellSummary(stats=["mean"]), smear([(c[0], c[1], 9, 0) for c in pale]))
    assert flat["share_rbc_pallor_diameter_ratio_gt_0p5"] == 0.0 and flat["rbc_pallor_area_ratio_mean"] == 0.0


def test_empty_smear_gives_counts_and_nan():
    f = _row(CellSummary(), smear([]))
    assert f["count"] == 0 and f["measured"] == 0
    assert np.isnan(f["rbc_area_mean"]) and np.isnan(f["share_rel_rbc_area_lt_0p7"])


def test_reference_shares_use_the_training_cells_only():
    ex = CellSummary(features=["red_cell.area"], relative=[], shares=[], stats=["mean"], reference=[0.1, 0.9])
    grid = [(20, 20), (20, 60), (20, 100), (60, 20), (60, 60), (60, 100)]
    big = ex.prepare(smear([(y, x, 9, 0) for y, x in grid]))
    small = ex.prepare(smear([(y, x, 5, 0) for y, x in grid]))
    mixed = ex.prepare(smear(MIXED))
    # training cells: 6 of 253 px and 6 of 81 px -> p10 = 81, p90 = 253
    ex.fit(np.stack([big, small]))
    assert ex.thresholds_.tolist() == [[DISK5, DISK9]]
    names = ex.feature_names()
    assert names[-2:] == ["ref_rbc_area_below_p10", "ref_rbc_area_above_p90"]
    out = dict(zip(names, ex.transform(np.stack([mixed]))[0].tolist()))
    assert out["ref_rbc_area_below_p10"] == 0.0 and out["ref_rbc_area_above_p90"] == 0.0
    # another training set moves the thresholds: they come from the rows given to fit, nothing else
    ex2 = CellSummary(**ex.get_params()).fit(np.stack([big, mixed]))  # 11 of 253 px, 1 of 81 px
    assert ex2.thresholds_.tolist() == [[DISK9, DISK9]]
    ex3 = CellSummary(**ex.get_params()).fit(np.stack([big, big]))
    assert ex3.thresholds_.tolist() == [[DISK9, DISK9]]
    assert dict(zip(names, ex3.transform(small[None])[0].tolist()))["ref_rbc_area_below_p10"] == 1.0
    with pytest.raises(InvalidInputError, match="fit"):
        CellSummary(**ex.get_params()).transform(big[None])


def test_bad_parameters_are_named():
    with pytest.raises(InvalidInputError, match="stats entry 'median'"):
        CellSummary(stats=["median"]).validate_params()
    with pytest.raises(InvalidInputError, match="shares rule"):
        CellSummary(shares=["red_cell.area >> 3"]).validate_params()
    with pytest.raises(InvalidInputError, match="no feature 'pallor'"):
        CellSummary(features=["red_cell.pallor"]).validate_params()
    with pytest.raises(InvalidInputError, match="gives no instances"):
        CellSummary(finder="otsu_cell").validate_params()


STUDY = """
[studies.smears]
description = "generated smears: pale microcytic vs flat normocytic"
dataset = { loader = "folder", params = { path = "images" } }
evaluation = { folds = 3, seed = 0, bootstrap = 20, shortcuts = false }
blocks.cells = { plugin = "cell_summary", params = { stats = ["mean", "p50"], reference = [0.9] }, pca = 0.95 }
blocks.colour = { plugin = "colour", params = { bins = 8 }, pca = 0.9 }
[studies.smears.pipelines]
cells = { blocks = ["cells"], classifier = { plugin = "logreg" } }
fused = { blocks = ["cells", "colour"], classifier = { plugin = "logreg" } }
"""


def _write_smears(root: Path, n: int = 5) -> None:
    rng = np.random.default_rng(0)
    grid = [(20, 20), (20, 60), (60, 20), (60, 60)]
    for label in ("anemic", "healthy"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(n):
            cells = []
            for y, x in grid:
                y, x = y + int(rng.integers(-3, 4)), x + int(rng.integers(-3, 4))  # no two smears alike
                r = int(rng.integers(8, 10))
                if label == "anemic":  # pale centres, some microcytes
                    r = r if rng.random() < 0.6 else 5
                    cells.append((y, x, r, int(round(0.65 * r))))
                else:
                    cells.append((y, x, r, 0))
            Image.fromarray(smear(cells, size=(80, 80))).save(root / "images" / label / f"{label}_{i}.png")


def test_cell_summary_block_inside_a_fused_pipeline(tmp_path):
    from medfuse.evaluation import default_runner_factory, run_study
    from medfuse.host import get_host
    from medfuse.study import load_studies

    _write_smears(tmp_path / "data")
    study = tmp_path / "smears.toml"
    study.write_text(STUDY)
    st = load_studies(study)["smears"]
    host = get_host()
    data = host.create(st.dataset.loader, st.dataset.params, kind="loader").load(tmp_path / "data")
    res = run_study(st, data, runner_factory=default_runner_factory(host), n_boot=20, top_features_folds=0)
    board = {r["pipeline"]: r for r in res.results["leaderboard"]}
    assert board["cells"]["accuracy"] >= 0.8 and board["fused"]["accuracy"] >= 0.8  # chance: 0.5
    fused = res.results["pipelines"]["fused"]
    assert set(fused["blocks"]) == {"cells", "colour"}
    # the cells block reached the fused classifier: its columns were fitted in every fold
    assert fused["blocks"]["cells"]["n_features_in"] == len(CellSummary(stats=["mean", "p50"], reference=[0.9])
                                                            .feature_names())
    assert all(n >= 1 for n in fused["blocks"]["cells"]["n_components"])


def test_fitted_cell_summary_pipeline_saves_loads_and_scores_raw_images(tmp_path):
    from medfuse.host import get_host
    from medfuse.imageio import read_image
    from medfuse.pipeline import FittedPipeline, PipelineRunner
    from medfuse.study import load_studies

    _write_smears(tmp_path / "data", n=3)
    study = tmp_path / "smears.toml"
    study.write_text(STUDY)
    st = load_studies(study)["smears"]
    host = get_host()
    data = host.create(st.dataset.loader, st.dataset.params, kind="loader").load(tmp_path / "data")
    runner = PipelineRunner(st, "fused", host, progress=False)
    prepared = runner.materialize(data)
    train, test = np.arange(0, len(data), 2), np.arange(1, len(data), 2)
    fitted = runner.fit(prepared, train, 0)
    cells = next(fb.plugin for fb in fitted.blocks_ if fb.name == "cells")
    # the reference thresholds are those of the training images' cells
    assert np.allclose(cells.thresholds_, CellSummary(**cells.get_params()).fit(prepared.blocks["cells"][train])
                       .thresholds_, equal_nan=True)
    expected = fitted.predict_proba(prepared, test)
    fitted.save(tmp_path / "model")
    loaded = FittedPipeline.load(tmp_path / "model", host=host)
    images = [read_image(p) for p in prepared.samples.iloc[test]["path"]]
    assert np.allclose(loaded.predict_proba_images(images, None, None), expected, atol=1e-5)
