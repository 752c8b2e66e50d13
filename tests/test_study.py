"""Study files: schema validation with file/key/suggestion in every error; the registry validates."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from medfuse.errors import StudyError
from medfuse.host import get_host
from medfuse.study import SCHEMA, builtin_studies, check_plugins, load_studies, resolve_study

BASE = """
[studies.toy]
description = "toy"
dataset = { loader = "folder", params = { path = "images" } }
blocks.morph = { plugin = "morphology", pca = 0.95 }
pipelines.classical = { mask = "dataset", blocks = ["morph"], classifier = { plugin = "logreg" } }
"""


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_study_parses_with_defaults(tmp_path):
    study = load_studies(write(tmp_path, BASE))["toy"]
    assert study.pipelines["classical"].mask == "dataset"
    assert study.blocks["morph"].pca == 0.95
    assert study.evaluation.folds == SCHEMA["evaluation"]["folds"].default
    check_plugins(study, get_host())


@pytest.mark.parametrize(("edit", "key", "message"), [
    (("logreg", "logregg"), "pipelines.classical.classifier.plugin", "did you mean 'logreg'"),
    (('plugin = "morphology"', 'plugin = "morpholgy"'), "blocks.morph.plugin", "did you mean 'morphology'"),
    (("pca = 0.95", "pca = 1.5"), "blocks.morph.pca", "variance fraction"),
    (('blocks = ["morph"]', 'blocks = ["morf"]'), "pipelines.classical.blocks[0]", "did you mean 'morph'"),
    (("description", "descripton"), "studies.toy.descripton", "did you mean 'description'"),
    (('mask = "dataset"', 'mask = "dataset", fusion = "earli"'), "fusion", "did you mean 'early'"),
])
def test_errors_name_file_key_and_suggest(tmp_path, edit, key, message):
    path = write(tmp_path, BASE.replace(*edit))
    with pytest.raises(StudyError) as info:
        for study in load_studies(path).values():
            check_plugins(study, get_host())
    text = str(info.value)
    assert str(path) in text and key in text and message in text, text


def test_unknown_plugin_param_is_refused(tmp_path):
    path = write(tmp_path, BASE.replace('plugin = "logreg"', 'plugin = "logreg", params = { CC = 1.0 }'))
    with pytest.raises(StudyError, match=r"classifier.params.*unknown parameter 'CC'"):
        check_plugins(load_studies(path)["toy"], get_host())


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(StudyError, match="not valid TOML"):
        load_studies(write(tmp_path, "[studies.x\n"))
    with pytest.raises(StudyError, match="file not found"):
        load_studies(tmp_path / "nope.toml")


def test_every_registry_study_validates():
    host = get_host()
    studies = builtin_studies()
    assert {"demo", "pbc-cells", "all-subtypes", "anemia-cbc", "anemia-multimodal", "cxr-pneumonia"} <= set(studies)
    for study in studies.values():
        check_plugins(study, host)


def test_resolve_by_name_and_file(tmp_path):
    assert resolve_study("demo").name == "demo"
    assert resolve_study(str(write(tmp_path, BASE))).name == "toy"
    with pytest.raises(StudyError, match="did you mean 'demo'"):
        resolve_study("demoo")


def test_validate_cli_reports_typo(tmp_path):
    path = write(tmp_path, BASE.replace("logreg", "logregg"))
    out = subprocess.run([sys.executable, "-m", "medfuse", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "pipelines.classical.classifier.plugin" in out.stderr and "did you mean 'logreg'" in out.stderr
    ok = subprocess.run([sys.executable, "-m", "medfuse", "validate", str(write(tmp_path, BASE))],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ok  toy" in ok.stdout
