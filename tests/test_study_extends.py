"""Study references (`extends`, `drop`) and `medfuse validate` never showing a traceback."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import medfuse
import medfuse.host
import pytest
from click.testing import CliRunner
from medfuse.contracts import Transform
from medfuse.errors import StudyError
from medfuse.host import PluginHost
from medfuse.study import load_studies, registry_path

# The two registry studies as they were written out in full before `extends`.
OLD = '''
[studies.all-subtypes-blocked]
description = "ALL subtypes on a blocked split (no patient ids): runs of 40 consecutive file numbers per class stay in one fold, a proxy for the slide"
dataset = { loader = "folder", params = { path = "all/images", masks = "all/masks", group_block = 40 } }
evaluation = { folds = 5, seed = 0, jobs = 2 }
reported = { accuracy = 0.9325, source = "ALL study: gray, blur+sharpen, ROI crop, balancing augmentation, custom CNN (test split)" }
blocks.morphology = { plugin = "morphology" }
blocks.texture = { plugin = "texture", pca = 0.95 }
blocks.colour = { plugin = "colour", pca = 0.95 }
blocks.cnn = { plugin = "cnn_embedding", params = { size = 64, epochs = 12, batch_size = 16, learning_rate = 0.001, zoom = 0, brightness = 0, tta = true } }
[studies.all-subtypes-blocked.pipelines]
classical = { mask = "dataset", blocks = ["morphology", "texture", "colour"], classifier = { plugin = "xgboost" } }
deep = { classifier = { plugin = "cnn_classifier", params = { size = 64, epochs = 12, batch_size = 16, learning_rate = 0.001, zoom = 0, brightness = 0, tta = true } } }
fused = { mask = "dataset", blocks = ["morphology", "texture", "colour", "cnn"], classifier = { plugin = "xgboost" } }

[studies.anemia-pediatric]
description = "Anemia from a pediatric hematology table (gender, age, Hb, RBC, PCV, MCV, MCH, MCHC), selectors compared"
dataset = { loader = "table", params = { path = "anemia_tables/anemia_pediatric.xlsx", label_column = "Decision_Class" } }
evaluation = { folds = 5, seed = 0 }
blocks.all = { plugin = "select_all" }
blocks.tree = { plugin = "select_tree", params = { k = 4 } }
blocks.chi2 = { plugin = "select_chi2", params = { k = 4 } }
blocks.rfe = { plugin = "select_rfe", params = { k = 4 } }
[studies.anemia-pediatric.pipelines]
all-logreg = { blocks = ["all"], classifier = { plugin = "logreg" } }
tree-logreg = { blocks = ["tree"], classifier = { plugin = "logreg" } }
chi2-logreg = { blocks = ["chi2"], classifier = { plugin = "logreg" } }
rfe-logreg = { blocks = ["rfe"], classifier = { plugin = "logreg" } }
all-xgboost = { blocks = ["all"], classifier = { plugin = "xgboost" } }
'''


def _fields(study):
    """The study's resolved content; a classifier's ``network`` reference counts by the params it resolves to."""
    import copy

    study = copy.deepcopy(study)
    for p in study.pipelines.values():
        if p.classifier is not None:
            p.classifier.network = None
    return {k: v for k, v in vars(study).items() if k not in ("source", "profiles")}  # profiles: added later (#18)


def test_registry_studies_that_extend_expand_to_their_old_full_text(tmp_path):
    (tmp_path / "old.toml").write_text(OLD)
    old = load_studies(tmp_path / "old.toml")
    new = load_studies(registry_path())
    registry = registry_path().read_text()
    for name in old:
        assert f'[studies.{name}]\n# ' in registry and "extends" in registry.split(f"[studies.{name}]")[1][:200]
        assert _fields(new[name]) == _fields(old[name]), name
        assert list(new[name].pipelines) == list(old[name].pipelines)
    assert new["all-subtypes-blocked"].profiles == new["all-subtypes"].profiles != {}  # inherited through extends


def test_extends_merges_tables_and_a_new_plugin_replaces_its_table(tmp_path):
    (tmp_path / "mine.toml").write_text('''
[studies.base]
dataset = { loader = "folder", params = { path = "a", masks = "m" } }
blocks.texture = { plugin = "texture", params = { distances = [1, 2] }, pca = 0.95 }
pipelines.classical = { blocks = ["texture"], classifier = { plugin = "xgboost", params = { n_estimators = 50 } } }
pipelines.other = { blocks = ["texture"], classifier = { plugin = "logreg" } }

[studies.child]
extends = "base"
dataset.params.path = "b"
blocks.texture.pca = 5
pipelines.classical.classifier = { plugin = "svm" }
drop = ["pipelines.other"]

[studies.mine-pbc]
extends = "pbc-cells"
dataset.params.path = "my-pbc"
''')
    studies = load_studies(tmp_path / "mine.toml")
    child = studies["child"]
    assert child.dataset.params == {"path": "b", "masks": "m"}
    assert child.blocks["texture"].params == {"distances": [1, 2]} and child.blocks["texture"].pca == 5
    assert list(child.pipelines) == ["classical"]
    assert child.pipelines["classical"].classifier.plugin == "svm"
    assert child.pipelines["classical"].classifier.params == {}  # not xgboost's n_estimators
    pbc = load_studies(registry_path())["pbc-cells"]
    assert studies["mine-pbc"].dataset.params == {"path": "my-pbc"}
    assert studies["mine-pbc"].pipelines == pbc.pipelines and studies["mine-pbc"].blocks == pbc.blocks


@pytest.mark.parametrize(("text", "key", "message"), [
    ('[studies.a]\nextends = "b"\n[studies.b]\nextends = "a"\n', "studies.b.extends", "cycle: a -> b -> a"),
    ('[studies.a]\nextends = "a"\n', "studies.a.extends", "cycle: a -> a"),
    ('[studies.a]\nextends = "pbc-cell"\n', "studies.a.extends", "did you mean 'pbc-cells'"),
    ('[studies.a]\nextends = "pbc-cells"\ndrop = ["pipelines.ensembel"]\n', "studies.a.drop[0]",
     "did you mean 'ensemble'"),
    ('[studies.a]\nextends = 3\n', "studies.a.extends", "expected a study name"),
])
def test_extends_errors_name_the_key(tmp_path, text, key, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(StudyError) as info:
        load_studies(tmp_path / "bad.toml")
    assert key in str(info.value) and message in str(info.value)


class _Crashes(Transform):
    """A transform whose value check has a bug."""

    name: ClassVar[str] = "kit_crashes"
    param_docs: ClassVar[dict[str, str]] = {}

    def validate_params(self) -> None:
        raise RuntimeError("boom")


def test_validate_never_shows_a_traceback(tmp_path, monkeypatch):
    """A plugin's own bug in validate_params is one message, like every study error."""
    for case in ("plugin bug", "cycle", "not utf-8", "folder", "unknown name"):
        for res in _validate_outputs(tmp_path, monkeypatch, case):
            assert res.exit_code == 1, (case, res.output)
            assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output, (case, res.output)


def _validate_outputs(tmp_path, monkeypatch, case: str) -> list:
    """``medfuse validate`` (plain and --json) on a study broken as ``case`` says."""
    from medfuse.cli.validate_cmd import validate

    study = tmp_path / "s.toml"
    args = [str(study)]
    if case == "cycle":
        study.write_text('[studies.a]\nextends = "b"\n[studies.b]\nextends = "a"\n')
    elif case == "plugin bug":
        module = SimpleNamespace(medfuse_plugins=medfuse.hookimpl(lambda: [_Crashes]))
        ep = SimpleNamespace(name="kit", dist=SimpleNamespace(name="kit-dist"), load=lambda: module)
        host = PluginHost(entry_points=[ep])
        host.records = {**medfuse.host.get_host().records, **host.records}
        monkeypatch.setitem(medfuse.host._HOST, False, host)
        study.write_text('[studies.a]\ndataset = { loader = "folder" }\n'
                         'pipelines.p = { transforms = [{ plugin = "kit_crashes" }], classifier = { plugin = "logreg" } }\n')
    elif case == "not utf-8":
        study.write_bytes(b'[studies.a]\ndescription = "caf\xe9"\n')
    elif case == "folder":
        args = [str(tmp_path)]
    else:
        args = ["no-such-study"]
    outputs = [CliRunner().invoke(validate, [*args, *extra]) for extra in ([], ["--json"])]
    if case == "plugin bug":
        assert "unexpected RuntimeError: boom" in outputs[-1].output
    return outputs


# ---- a classifier naming a block's network ------------------------------------------------------

NETWORK = '''
[studies.net]
dataset = { loader = "folder", params = { path = "a" } }
blocks.cnn = { plugin = "cnn_embedding", params = { size = 32, epochs = 3 } }
pipelines.deep = { classifier = { plugin = "cnn_classifier", network = "cnn", params = { tta = true } } }
pipelines.fused = { blocks = ["cnn"], classifier = { plugin = "logreg" } }

[studies.net-child]
extends = "net"
blocks.cnn.params.epochs = 5
'''


def test_a_classifier_names_a_blocks_network_instead_of_copying_its_params(tmp_path):
    (tmp_path / "net.toml").write_text(NETWORK)
    studies = load_studies(tmp_path / "net.toml")
    deep = studies["net"].pipelines["deep"].classifier
    assert (deep.plugin, deep.network, deep.params) == ("cnn_classifier", "cnn", {"size": 32, "epochs": 3, "tta": True})
    child = studies["net-child"].pipelines["deep"].classifier  # an extending study's block change follows
    assert child.params == {"size": 32, "epochs": 5, "tta": True}


@pytest.mark.parametrize("edit, key, message", [
    ('network = "cnn"', "pipelines.deep.classifier.network", "unknown block 'cnm'"),
    ("network = 3", "pipelines.deep.classifier.network", "expected a block name"),
])
def test_a_bad_network_reference_names_the_key(tmp_path, edit, key, message):
    text = NETWORK.split("[studies.net-child]")[0].replace('network = "cnn"', edit.replace('"cnn"', '"cnm"'))
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(StudyError, match=message) as err:
        load_studies(tmp_path / "bad.toml")
    assert key in str(err.value) and ("did you mean 'cnn'" in str(err.value) or "3" in str(err.value))


def test_only_a_classifier_names_a_network(tmp_path):
    text = NETWORK.split("[studies.net-child]")[0].replace(
        'pipelines.fused = { blocks', 'pipelines.fused = { mask = { plugin = "unet", network = "cnn" }, blocks')
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(StudyError, match="only a classifier can name a block's network"):
        load_studies(tmp_path / "bad.toml")


def test_set_on_a_block_also_changes_the_classifier_naming_its_network(tmp_path):
    from medfuse.cli.common import apply_block_sets

    (tmp_path / "net.toml").write_text(NETWORK)
    study = load_studies(tmp_path / "net.toml")["net"]
    changed, _ = apply_block_sets(study, ["cnn.epochs=1"], medfuse.host.get_host())
    assert changed.pipelines["deep"].classifier.params["epochs"] == 1 == changed.blocks["cnn"].params["epochs"]
    assert study.pipelines["deep"].classifier.params["epochs"] == 3  # the original is untouched


def test_registry_has_no_copies_of_the_cnn_parameters():
    """Every registry pipeline with the CNN classifier names the `cnn` block's network."""
    text = registry_path().read_text()
    assert 'plugin = "cnn_classifier", params' not in text
    for study in load_studies(registry_path()).values():
        for p in study.pipelines.values():
            if p.classifier is not None and p.classifier.plugin == "cnn_classifier":
                assert p.classifier.network == "cnn" and p.classifier.params == study.blocks["cnn"].params
