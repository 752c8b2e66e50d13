"""`medfuse validate` runs, without data, every check `compare` would run, and never tracebacks."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.errors import StudyError
from medfuse.host import get_host
from medfuse.study import check_catalogue, check_plugins, load_studies, registry_path

HEAD = """
[studies.toy]
dataset = { loader = "folder", params = { path = "images" } }
blocks.morph = { plugin = "morphology" }
pipelines.classical = { blocks = ["morph"], classifier = { plugin = "logreg" } }
"""


def write(tmp_path, text: str, name: str = "study.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(HEAD + text))
    return path


def validate(path) -> None:
    for study in load_studies(path).values():
        check_plugins(study, get_host())


def _assert_refused(tmp_path, line: str, key: str, message: str) -> None:
    """``validate`` refuses the study with ``line`` added, naming the file, ``studies.toy.<key>`` and ``message``."""
    path = write(tmp_path, line)
    with pytest.raises(StudyError) as info:
        validate(path)
    text = str(info.value)
    assert str(path) in text and f"studies.toy.{key}:" in text and message in text, text


@pytest.mark.parametrize(("line", "key", "message"), [
    ('pipelines.p = { blocks = ["morph"], classifier = { plugin = "cnn_classifier" } }',
     "pipelines.p.blocks", "takes no feature blocks"),
    ('pipelines.p = { blocks = ["morph"], fusion = "intermediate", classifier = { plugin = "logreg" } }',
     "pipelines.p.classifier", "intermediate fusion needs a classifier taking one input per block"),
    ('pipelines.p = { blocks = ["morph"], fusion = "late", classifier = { plugin = "branch_mlp" } }',
     "pipelines.p.classifier", "late fusion fits one 'branch_mlp' per block"),
    ('pipelines.p = { mask = { plugin = "unet" }, classifier = { plugin = "cnn_classifier" } }',
     "pipelines.p.mask", "a trainable mask is not supported"),
])
def test_pipeline_structure_is_checked_without_data(tmp_path, line, key, message):
    _assert_refused(tmp_path, line, key, message)


@pytest.mark.parametrize(("line", "key", "message"), [
    ('pipelines.p = { blocks = ["morph"], classifier = { plugin = "logreg", params = { C = -1.0 } } }',
     "pipelines.p.classifier.params", "The 'C' parameter of LogisticRegression must be a float in the range"),
    ('blocks.colour = { plugin = "colour", params = { bins = 7 } }',
     "blocks.colour.params", "bins must divide 256, got 7"),
    ('pipelines.p = { blocks = ["morph"], mask = { plugin = "unet", params = { patch_size = 30 } }, '
     'classifier = { plugin = "logreg" } }', "pipelines.p.mask.params", "patch_size=30 must be a positive multiple"),
    ('pipelines.p = { blocks = ["morph"], classifier = { plugin = "soft_vote", params = { estimators = '
     '[{ plugin = "svm", params = { C = 0 } }] } } }', "pipelines.p.classifier.params", "estimators[0] 'svm'"),
])
def test_parameter_values_are_checked_by_the_plugin(tmp_path, line, key, message):
    _assert_refused(tmp_path, line, key, message)


def test_member_cycle_is_refused_with_the_cycle(tmp_path):
    path = write(tmp_path, 'pipelines.a = { members = ["classical", "b"] }\npipelines.b = { members = ["a"] }\n')
    with pytest.raises(StudyError, match=r"studies\.toy\.pipelines\.a\.members: ensemble members form a cycle: "
                                         r"a -> b -> a"):
        validate(path)


def test_self_reference_does_not_suggest_itself(tmp_path):
    path = write(tmp_path, 'pipelines.a = { members = ["classical", "a"] }\n')
    with pytest.raises(StudyError) as info:
        validate(path)
    text = str(info.value)
    assert "pipelines.a.members[1]" in text and "lists itself as a member" in text
    assert "did you mean 'a'" not in text


def test_valid_ensemble_still_validates(tmp_path):
    path = write(tmp_path, 'pipelines.t = { blocks = ["morph"], classifier = { plugin = "svm" } }\n'
                           'pipelines.a = { members = ["classical", "t"] }\npipelines.b = { members = ["a", "t"] }\n')
    validate(path)
    assert set(load_studies(path)["toy"].pipelines) == {"classical", "t", "a", "b"}


def test_unreadable_files_are_clear_errors(tmp_path):
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(HEAD.encode() + 'description = "Hämatologie"\n'.encode("latin-1"))
    with pytest.raises(StudyError, match=r"latin1\.toml: <file>: not UTF-8 text \(byte 0xe4 on line 6\)"):
        load_studies(latin)
    folder = tmp_path / "studies.toml"
    folder.mkdir()
    with pytest.raises(StudyError, match=r"studies\.toml: <file>: is a folder, not a study file"):
        load_studies(folder)


@pytest.mark.parametrize("what", ["latin1", "folder", "folder-without-suffix"])
def test_validate_cli_never_tracebacks_on_unreadable_input(tmp_path, what):
    if what == "latin1":
        target = tmp_path / "latin1.toml"
        target.write_bytes(b'[studies.x]\ndescription = "H\xe4m"\n')
    else:
        target = tmp_path / ("dir.toml" if what == "folder" else "dir")
        target.mkdir()
        write(target, "")
    result = CliRunner().invoke(main, ["validate", str(target)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert str(target) in result.output
    assert ("not UTF-8" if what == "latin1" else "is a folder, not a study file") in result.output


def test_catalogue_names_must_exist(tmp_path):
    host = get_host()
    assert check_catalogue(registry_path(), host) == sum(r.origin.startswith("medfuse:") for r in host.records.values())
    path = tmp_path / "registry.toml"
    for catalogue, message in [
        ('loader = ["folder", "manifst"]', r"plugins\.loader\[1\]: no loader plugin 'manifst' \(did you mean 'manifest'\?\)"),
        ('loaders = ["folder"]', r"plugins\.loaders: unknown plugin kind \(did you mean 'loader'\?\)"),
        ('mask = ["logreg"]', r"plugins\.mask\[0\]: no mask plugin 'logreg'; 'logreg' is a classifier plugin"),
    ]:
        path.write_text(f"[plugins]\n{catalogue}\n" + textwrap.dedent(HEAD))
        with pytest.raises(StudyError, match=message):
            check_catalogue(path, host)
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 1 and "plugins." in result.output and str(path) in result.output, result.output


@pytest.mark.parametrize(("fusion", "combine", "allowed"), [
    ("early", "stack", "'soft', 'select'"),
    ("intermediate", "select", "'soft'"),
    ("intermediate", "stack", "'soft'"),
])
def test_validate_refuses_a_combine_the_fusion_mode_ignores(tmp_path, fusion, combine, allowed):
    """#18: `combine = "stack"` on an early-fusion pipeline used to run silently as plain concatenation."""
    clf = "branch_mlp" if fusion == "intermediate" else "logreg"
    path = write(tmp_path, f'pipelines.p = {{ blocks = ["morph"], fusion = "{fusion}", combine = "{combine}", '
                           f'classifier = {{ plugin = "{clf}" }} }}\n')
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 1, r.output
    assert "studies.toy.pipelines.p.combine" in r.output, r.output
    assert f"{combine!r} does not apply to {fusion} fusion; it takes {allowed}" in r.output, r.output


@pytest.mark.parametrize("line", [
    'pipelines.p = { blocks = ["morph"], fusion = "early", combine = "select", classifier = { plugin = "logreg" } }',
    'pipelines.p = { blocks = ["morph"], fusion = "late", combine = "stack", classifier = { plugin = "logreg" } }',
    'pipelines.t = { blocks = ["morph"], classifier = { plugin = "svm" } }\n'
    'pipelines.p = { members = ["classical", "t"], combine = "stack" }',
])
def test_combine_values_the_fusion_mode_reads_still_validate(tmp_path, line):
    r = CliRunner().invoke(main, ["validate", str(write(tmp_path, line + "\n"))])
    assert r.exit_code == 0, r.output
