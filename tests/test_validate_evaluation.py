"""`medfuse validate` refuses the evaluation values that `compare` refuses (or crashes on) only
after loading the data: unknown metrics, a seed numpy cannot take, a hold-out that is no fraction."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from medfuse.cli import main

STUDY = """
[studies.toy]
dataset = { loader = "folder", params = { path = "images" } }
blocks.morph = { plugin = "morphology" }
pipelines.classical = { blocks = ["morph"], classifier = { plugin = "logreg" } }
evaluation = { EVALUATION }
"""


@pytest.mark.parametrize(("evaluation", "key", "message"), [
    ('metrics = ["accuracyy"]', "metrics", "unknown metric 'accuracyy' (did you mean 'accuracy'?)"),
    ("seed = -1", "seed", "expected a seed between 0 and 4294967295, got -1"),
    ("holdout = 1.5", "holdout", "expected a fraction in [0, 1) (0: no hold-out), got 1.5"),
    ("holdout = -0.2", "holdout", "expected a fraction in [0, 1) (0: no hold-out), got -0.2"),
    ("bootstrap = -5", "bootstrap", "expected 0 (no intervals) or more, got -5"),
    ("max_per_class = -1", "max_per_class", "expected 0 (all) or more, got -1"),
])
def test_validate_refuses_evaluation_values_compare_cannot_run(tmp_path, evaluation, key, message):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("EVALUATION", evaluation))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert f"{path}: studies.toy.evaluation.{key}: {message}" in " ".join(result.output.split()), result.output


def test_default_evaluation_still_validates(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("EVALUATION", 'seed = 4294967295, holdout = 0.2, bootstrap = 0, metrics = ["accuracy"]'))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
