"""Study profiles (#18): opt-in recipe variants (`[studies.NAME.profiles.P]`, `--profile P`), checked like the
study's own parameters, refused without a GPU when they require one, and recorded wherever a run is reported."""

from __future__ import annotations

import copy
import json
import textwrap

import medfuse.devices as devices
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.cli.common import select_profile
from medfuse.errors import StudyError
from medfuse.host import get_host
from medfuse.study import apply_profile, builtin_studies, check_plugins, load_studies
from medfuse.synthetic import write_dataset

STUDY = """
[studies.toy]
dataset = { loader = "folder", params = { path = "images", masks = "masks" } }
evaluation = { folds = 2, seed = 0, bootstrap = 20 }
blocks.morphology = { plugin = "morphology" }
blocks.colour = { plugin = "colour", params = { bins = 8 } }
blocks.cnn = { plugin = "cnn_embedding", params = { size = 32, epochs = 2, width = 8 } }
[studies.toy.pipelines]
classical = { mask = "dataset", blocks = ["morphology", "colour"], classifier = { plugin = "logreg", params = { C = 1.0 } } }
deep = { classifier = { plugin = "cnn_classifier", network = "cnn" } }
both = { members = ["classical", "deep"] }
[studies.toy.profiles.big]
description = "a larger recipe"
"""
GPU = 'requires = "gpu"\n'


def write(tmp_path, profile: str = GPU + "blocks.cnn = { size = 48, epochs = 3 }\n"):
    path = tmp_path / "toy.toml"
    path.write_text(textwrap.dedent(STUDY) + profile)
    return path


def toy(tmp_path, profile: str = GPU + "blocks.cnn = { size = 48, epochs = 3 }\n"):
    return load_studies(write(tmp_path, profile))["toy"]


def test_profile_changes_only_the_named_parameters(tmp_path):
    study = toy(tmp_path, GPU + "blocks.cnn = { size = 48, epochs = 3 }\npipelines.classical = { C = 0.5 }\n")
    before = copy.deepcopy(study)
    applied = apply_profile(study, "big")
    assert applied.blocks["cnn"].params == {"size": 48, "epochs": 3, "width": 8}
    assert applied.pipelines["deep"].classifier.params == {"size": 48, "epochs": 3, "width": 8}  # follows network
    assert applied.pipelines["classical"].classifier.params == {"C": 0.5}
    for name in ("morphology", "colour"):
        assert applied.blocks[name] == study.blocks[name]
    assert applied.pipelines["both"] == study.pipelines["both"]
    assert applied.pipelines["classical"].blocks == study.pipelines["classical"].blocks
    assert (applied.evaluation, applied.dataset, applied.reader) == (study.evaluation, study.dataset, study.reader)
    assert applied.profile.name == "big" and applied.profile.requires == "gpu"
    assert study == before and study.profile is None  # the study itself is untouched
    check_plugins(applied, get_host())


def test_no_profile_leaves_the_study_as_written(tmp_path):
    study = toy(tmp_path)
    assert apply_profile(study, None) is study
    assert select_profile(study, None, False, get_host()) == (study, None)
    registry = builtin_studies()["pbc-cells"]
    assert "gpu" in registry.profiles and registry.profile is None
    assert registry.blocks["cnn"].params["size"] == 64  # the reported CPU recipe is the default


@pytest.mark.parametrize(("profile", "key", "message"), [
    ("blocks.cnnn = { size = 48 }", "blocks.cnnn", "unknown block 'cnnn' (did you mean 'cnn'?)"),
    ("pipelines.dep = { epochs = 3 }", "pipelines.dep", "unknown pipeline 'dep' (did you mean 'deep'?)"),
    ("pipelines.both = { C = 1.0 }", "pipelines.both", "is an ensemble of classical, deep"),
    ("blocks.cnn = { sise = 48 }", "blocks.cnn", "unknown parameter 'sise' (did you mean 'size'?)"),
    ("pipelines.classical = { CC = 0.5 }", "pipelines.classical", "unknown parameter 'CC'"),
    ("blocks.colour = { bins = 7 }", "blocks.colour", "plugin 'colour': colour: bins must divide 256, got 7"),
    ("pipelines.classical = { C = -1.0 }", "pipelines.classical",
     "The 'C' parameter of LogisticRegression must be a float in the range"),
    ("blocks.cnn = 48", "blocks.cnn", "expected a table of the parameters to change"),
    ('requires = "tpu"', "requires", "'tpu' is not one of gpu"),
])
def test_profile_errors_name_study_profile_target_and_key(tmp_path, profile, key, message):
    path = write(tmp_path, profile + "\n")
    with pytest.raises(StudyError) as info:
        for study in load_studies(path).values():
            check_plugins(study, get_host())
    text = str(info.value)
    assert f"{path}: studies.toy.profiles.big.{key}:" in text and message in text, text
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 1 and f"studies.toy.profiles.big.{key}" in r.output


def test_validate_with_profile_lists_and_checks_it(tmp_path):
    path = write(tmp_path)
    r = CliRunner().invoke(main, ["validate", str(path), "--profile", "big"])
    assert r.exit_code == 0 and "profiles: big (big applied and checked)" in r.output, r.output
    r = CliRunner().invoke(main, ["validate", str(path), "--profile", "bgi"])
    assert r.exit_code == 1 and "has no profile 'bgi' (did you mean 'big'?); its profiles: big" in r.output


def test_gpu_profile_is_refused_before_data_without_a_gpu(tmp_path, monkeypatch):
    path = write(tmp_path)
    args = ["compare", str(path), "--profile", "big", "--data", str(tmp_path / "no-data"), "-q",
            "--out", str(tmp_path / "out")]
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "requires a GPU, and TensorFlow sees none" in r.output, r.output
    assert "would take hours on a CPU" in r.output and "--allow-cpu" in r.output
    assert not (tmp_path / "out").exists()  # refused before the report folder or any data
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["/physical_device:GPU:0"])
    r = CliRunner().invoke(main, args)  # with a GPU it goes on, and stops at the missing data root
    assert r.exit_code == 1 and "TensorFlow sees none" not in r.output and "no-data" in r.output, r.output


def test_allow_cpu_runs_the_profile_and_the_report_records_it(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_dataset(root, n_per_class=4, size=24, seed=0)
    path = write(tmp_path, GPU + "blocks.colour = { bins = 16 }\npipelines.classical = { C = 0.5 }\n")
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    base = ["compare", str(path), "--pipelines", "classical", "--data", str(root), "--no-cache", "--no-shortcuts",
            "--bootstrap", "0", "-q", "--json"]
    r = CliRunner().invoke(main, [*base, "--profile", "big", "--allow-cpu", "--out", str(tmp_path / "p")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "p" / "results.json").read_text())
    assert res["settings"]["profile"] == {
        "name": "big", "description": "a larger recipe", "requires": "gpu", "blocks": {"colour": {"bins": 16}},
        "pipelines": {"classical": {"C": 0.5}}, "gpus": [], "allow_cpu": True}
    assert res["pipelines"]["classical"]["status"] == "ok"
    report = (tmp_path / "p" / "report.md").read_text()
    assert "**Profile:** profile 'big' (a larger recipe); changes block colour: bins = 16; pipeline classical: " \
           "C = 0.5; GPUs seen: none (run on the CPU with --allow-cpu)" in report
    assert "Profile:" in (tmp_path / "p" / "report.html").read_text()
    assert '"name": "big"' in r.output  # the --json summary names it too
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "plain")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert "profile" not in plain["settings"] and "Profile:" not in (tmp_path / "plain" / "report.md").read_text()


def test_train_with_a_profile_records_it_in_the_bundle(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_dataset(root, n_per_class=4, size=24, seed=0)
    path = write(tmp_path, GPU + "blocks.colour = { bins = 16 }\n")
    base = ["train", str(path), "-p", "classical", "--data", str(root), "--no-cv", "-q"]
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    r = CliRunner().invoke(main, [*base, "--profile", "big", "--out", str(tmp_path / "refused")])
    assert r.exit_code == 1 and "requires a GPU" in r.output and not (tmp_path / "refused").exists()
    r = CliRunner().invoke(main, [*base, "--profile", "big", "--allow-cpu", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    study = json.loads((tmp_path / "b" / "manifest.json").read_text())["study"]
    assert study["profile"]["name"] == "big" and study["blocks"]["colour"]["params"] == {"bins": 16}
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    study = json.loads((tmp_path / "plain" / "manifest.json").read_text())["study"]
    assert "profile" not in study and study["blocks"]["colour"]["params"] == {"bins": 8}


def test_mlflow_parameters_name_the_profile_and_its_changes():
    from medfuse.mlflowlog import run_params

    settings = {"profile": {"name": "big", "blocks": {"cnn": {"size": 48}}, "pipelines": {"classical": {"C": 0.5}}}}
    params = run_params({"study": {"name": "toy"}, "settings": settings, "data": {}})
    assert params["profile"] == "big" and params["profile.blocks.cnn.size"] == "48"
    assert params["profile.pipelines.classical.C"] == "0.5"
    assert not any(k.startswith("profile") for k in run_params({"study": {"name": "toy"}, "settings": {}, "data": {}}))


def test_notebook_compare_takes_the_profile_and_its_gpu_check(tmp_path, monkeypatch):
    from medfuse import api
    from medfuse.errors import MedfuseError

    root = tmp_path / "data"
    write_dataset(root, n_per_class=4, size=24, seed=0)
    path = write(tmp_path, GPU + "blocks.colour = { bins = 16 }\n")
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    kw = dict(data=root, cache=False, shortcuts=False, bootstrap=0)
    with pytest.raises(MedfuseError, match="requires a GPU"):
        api.compare(f"{path}:toy", ["classical"], out=tmp_path / "refused", profile="big", **kw)
    assert not (tmp_path / "refused").exists()
    res = api.compare(f"{path}:toy", ["classical"], out=tmp_path / "p", profile="big", allow_cpu=True, **kw)
    assert res.results["settings"]["profile"]["blocks"] == {"colour": {"bins": 16}}
