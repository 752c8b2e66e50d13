"""Model cards: the manifest rendered for people (medfuse.modelcard.render_model_card)."""

from __future__ import annotations

import copy
import re

from medfuse.modelcard import render_model_card

MANIFEST = {
    "format": "medfuse-bundle", "format_version": 1, "created": "2026-01-02T03:04:05+00:00",
    "medfuse_version": "0.1.0", "python": "3.11.7", "platform": "Linux-x86_64",
    "libraries": {"numpy": "2.4.6", "scikit-learn": "1.9.1", "xgboost": "3.2.0"},
    "pipeline_class": "medfuse.pipeline:FittedPipeline", "pipeline_dir": "pipeline",
    "plugins": [
        {"name": "otsu_cell", "version": "1.0.0", "params": {"min_area": 20}, "kind": "mask", "package": "medfuse"},
        {"name": "morphology", "version": "1.2.0", "params": {"pixel_size": 0.5}, "kind": "extractor",
         "package": "medfuse"},
        {"name": "xgboost", "version": "2.0.0", "params": {"n_estimators": 300, "max_depth": 4}, "kind": "classifier",
         "package": "medfuse"},
    ],
    "classes": ["lymphocyte", "neutrophil", "platelet"],
    "feature_schema": [f"morphology.f{i}" for i in range(31)] + [f"colour.c{i}" for i in range(12)],
    "block_reports": {"morphology": {"n_features_in": 31, "n_components": 8, "pca": {"variance": 0.95}},
                      "colour": {"n_features_in": 12, "n_components": 12, "pca": None}},
    "inputs": {"masks": False, "table_columns": []}, "seed": 7,
    "study": {"name": "pbc-cells", "source": "registry.toml", "pipeline": "classical",
              "description": "Peripheral blood cells, 3 classes", "evaluation": {"bootstrap": 1000}},
    "training_data": {"loader": "folder", "params": {"path": "PBC"}, "root": "/data/pbc", "n_samples": 330,
                      "n_failed": 2, "class_counts": {"lymphocyte": 150, "neutrophil": 160, "platelet": 20},
                      "selection": {"n_loaded": 340, "n_selected": 332, "duplicates_removed": 8},
                      "fingerprint": "185910e3da56a26e8cd4e9af2bf9519076c4db9a",
                      "fingerprint_method": "sha1 of the sorted '<sample sha1> <label>' lines"},
    "cv_metrics": {"folds": 5, "grouped": True, "n_evaluated": 330,
                   "metrics": {"accuracy": 0.91234, "f1_macro": 0.8765},
                   "ci95": {"accuracy": [0.88, 0.94], "f1_macro": [0.8312, 0.9111]}},
    "cv_note": "5-fold cross-validation on the training data (seed 7)",
    "artifacts": {"pipeline/pipeline.joblib": "0" * 64},
}


def section(card: str, title: str) -> str:
    """The text under ``## title`` up to the next heading."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |^---|\Z)", card, re.S | re.M)
    assert m, f"no section {title!r} in\n{card}"
    return m.group(1)


def test_card_holds_every_section_from_the_manifest():
    card = render_model_card(MANIFEST)
    assert card.startswith("# Model card: pbc-cells / classical\n")
    assert "Peripheral blood cells, 3 classes" in section(card, "Intended use")
    assert all(f"`{c}`" in section(card, "Classes") for c in MANIFEST["classes"])
    data = section(card, "Training data")
    assert "| `neutrophil` | 160 |" in data and "| `platelet` | 20 |" in data
    assert "185910e3da56a26e8cd4e9af2bf9519076c4db9a" in data and "330 samples" in data
    evaluation = section(card, "Evaluation")
    assert "| accuracy | 0.912 | [0.880, 0.940] |" in evaluation
    assert "| f1_macro | 0.876 | [0.831, 0.911] |" in evaluation and "1000 resamples" in evaluation
    pipeline = section(card, "Pipeline")
    assert '| `xgboost` | classifier | 2.0.0 | medfuse | `{"max_depth": 4, "n_estimators": 300}` |' in pipeline
    assert "43 columns (morphology: 31, colour: 12)" in pipeline and "morphology: 31 -> 8" in pipeline
    versions = section(card, "Versions")
    assert "medfuse 0.1.0" in versions and "- scikit-learn 1.9.1" in versions
    limits = section(card, "Known limits")
    assert "one source (`folder` at `/data/pbc`)" in limits and "`warning`" in limits
    assert "none of these" in limits and "not for diagnosis" in limits
    assert "`platelet` (20)" in limits and "`neutrophil`" not in limits  # only small classes are named
    assert "not grouped" not in limits


def test_card_of_a_sparse_manifest_says_what_is_missing():
    sparse = {k: v for k, v in MANIFEST.items() if k not in ("study", "training_data", "block_reports")}
    sparse["cv_metrics"], sparse["cv_note"] = None, "skipped (--no-cv)"
    card = render_model_card(sparse)
    assert card.startswith("# Model card: medfuse bundle\n")
    assert "no description" in section(card, "Intended use")
    assert section(card, "Training data").strip() == "Not recorded in the manifest."
    assert "No cross-validated metrics (skipped (--no-cv))" in section(card, "Evaluation")


def test_card_escapes_table_cells_and_flags_ungrouped_folds():
    m = copy.deepcopy(MANIFEST)
    m["plugins"][0]["params"] = {"sep": "a|b"}
    m["cv_metrics"]["grouped"] = False
    card = render_model_card(m)
    assert '`{"sep": "a\\|b"}`' in section(card, "Pipeline")
    assert "not grouped by patient or slide" in section(card, "Known limits")
    assert render_model_card(m) == card  # pure: same manifest, same text
