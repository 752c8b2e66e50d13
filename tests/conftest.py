"""Shared fixtures. Real datasets are read in place from $MEDFUSE_DATA or ../shared/datasets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# bundles of tests/test_bundle.py's stand-in pipeline name it as their pipeline class; a bundle may
# only name allowed classes (medfuse.bundle.PIPELINE_CLASSES), so the test run allows this one too
os.environ.setdefault("MEDFUSE_TRUSTED_PIPELINE_CLASSES", "test_bundle:FakePipeline,test_bundle_publish:TinyPipeline")

REPO = Path(__file__).resolve().parents[1]

# runs: every compare appends its report folder to the run index; the tests keep theirs private
os.environ.setdefault("MEDFUSE_RUNS_INDEX", str(Path(tempfile.mkdtemp(prefix="medfuse-runs-")) / "runs.jsonl"))


def dataset_root() -> Path | None:
    """The folder laid out like ../shared/datasets, or None when it is not on this machine."""
    env = os.environ.get("MEDFUSE_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "datasets"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = dataset_root()
    if root is None:
        pytest.skip("real datasets not found: set MEDFUSE_DATA or place them at ../shared/datasets")
    return root


def write_synthetic_study(tmp_path_factory, study_text: str, name: str = "tiny") -> tuple[Path, Path]:
    """Generated cells (6 per class, 32 px, seed 0) and a study file ``<name>.toml`` beside them."""
    from medfuse.synthetic import write_dataset

    root = tmp_path_factory.mktemp("data")
    write_dataset(root, n_per_class=6, size=32, seed=0)
    study = root.parent / f"{name}.toml"
    study.write_text(study_text)
    return root, study


def after_each_part(monkeypatch, hook) -> None:
    """Call ``hook(parts on disk)`` each time :func:`medfuse.scoring.score` has written a chunk's part
    (resumed parts counted), from the scoring process: to interrupt a run or act in the middle of one."""
    import medfuse.scoring as scoring

    write = scoring.write_part

    def write_then_hook(df, target, schema) -> None:
        write(df, target, schema)
        hook(len(list(Path(target).parent.glob("part-*.parquet"))))

    monkeypatch.setattr(scoring, "write_part", write_then_hook)


def fitted_inputs(fitted) -> dict:
    """What a fitted pipeline needs besides images: ``masks`` (dataset masks) and ``table_columns``
    (columns of the table rows), over all ensemble members."""
    masks = fitted.mask_mode == "dataset"
    columns = list(fitted.table_columns_)
    for member in fitted.members_.values():
        sub = fitted_inputs(member)
        masks = masks or sub["masks"]
        columns += [c for c in sub["table_columns"] if c not in columns]
    return {"masks": masks, "table_columns": columns}


@pytest.fixture(scope="module")
def cnn_cells():
    """16 tiny synthetic cells (40 px): images, masks, labels, for the CNN plugin tests."""
    from medfuse.testing import sample_cells

    return sample_cells(16, size=40)


def prepared(est, images, masks) -> np.ndarray:
    """``est.prepare`` of every image with its mask, stacked (what a run feeds a CNN)."""
    return np.stack([est.prepare(im, m) for im, m in zip(images, masks)])

