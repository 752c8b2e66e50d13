"""Named masks: `masks.NAME = { plugin = ..., params = ... }` once, `mask = "NAME"` in pipelines."""

from __future__ import annotations

import textwrap
import tomllib

import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.errors import StudyError
from medfuse.study import PluginRef, builtin_studies, load_studies, registry_path

HEAD = """
[studies.toy]
dataset = { loader = "folder", params = { path = "images" } }
blocks.morph = { plugin = "morphology" }
"""
OTSU = '{ plugin = "otsu_cell", params = { classes = 3 }, channels = [1] }'


def study(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(HEAD + text))
    return path, load_studies(path)["toy"]


def test_a_named_mask_resolves_as_if_written_in_place(tmp_path):
    _, named = study(tmp_path, f"""
        masks.cells = {OTSU}
        pipelines.a = {{ mask = "cells", blocks = ["morph"], classifier = {{ plugin = "logreg" }} }}
        pipelines.b = {{ mask = "cells", blocks = ["morph"], classifier = {{ plugin = "logreg" }} }}
        pipelines.c = {{ mask = "dataset", blocks = ["morph"], classifier = {{ plugin = "logreg" }} }}
    """)
    _, inline = study(tmp_path, f"""
        pipelines.a = {{ mask = {OTSU}, blocks = ["morph"], classifier = {{ plugin = "logreg" }} }}
    """)
    assert named.pipelines["a"].mask == inline.pipelines["a"].mask == PluginRef("otsu_cell", {"classes": 3},
                                                                                channels=[1])
    assert named.pipelines["c"].mask == "dataset"
    named.pipelines["a"].mask.params["classes"] = 4  # each pipeline holds its own copy
    assert named.pipelines["b"].mask.params == {"classes": 3}


@pytest.mark.parametrize(("text", "key", "message"), [
    (f'masks.cells = {OTSU}\npipelines.p = {{ mask = "cell", blocks = ["morph"], classifier = {{ plugin = "logreg" }} }}',
     "pipelines.p.mask", "unknown mask 'cell' (did you mean 'cells'?); defined masks: cells"),
    ('pipelines.p = { mask = "otsu_cell", blocks = ["morph"], classifier = { plugin = "logreg" } }',
     "pipelines.p.mask", "unknown mask 'otsu_cell'; defined masks: none"),
    ('masks.dataset = { plugin = "otsu_cell" }\npipelines.p = { blocks = ["morph"], classifier = { plugin = "logreg" } }',
     "masks.dataset", "give this mask another name"),
    ('masks.m = "otsu_cell"\npipelines.p = { blocks = ["morph"], classifier = { plugin = "logreg" } }',
     "masks.m", "expected a plugin table"),
    ('masks.m = { plugin = "otsu_cell", network = "morph" }\npipelines.p = { blocks = ["morph"], classifier = { plugin = "logreg" } }',
     "masks.m.network", "only a classifier can name a block's network"),
])
def test_bad_mask_references_are_refused_naming_the_key(tmp_path, text, key, message):
    with pytest.raises(StudyError) as info:
        study(tmp_path, text)
    assert f"studies.toy.{key}:" in str(info.value) and message in str(info.value), str(info.value)


def test_validate_cli_refuses_an_unknown_mask(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(HEAD + f"""
        masks.cells = {OTSU}
        pipelines.p = {{ mask = "cels", blocks = ["morph"], classifier = {{ plugin = "logreg" }} }}
    """))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "studies.toy.pipelines.p.mask" in result.output and "defined masks: cells" in result.output


def test_anemia_multimodal_names_its_unet_mask_once():
    raw = tomllib.loads(registry_path().read_text())["studies"]["anemia-multimodal"]
    assert [raw["pipelines"][p].get("mask") for p in raw["pipelines"]].count("unet") == 3 and "unet" in raw["masks"]
    pipelines = builtin_studies()["anemia-multimodal"].pipelines
    masks = [pipelines[p].mask for p in ("image", "fused", "fused-cells")]
    assert masks[0] == masks[1] == masks[2] == PluginRef("unet", {"width": 8, "scale": 0.5, "epochs": 12,
                                                                  "steps_per_epoch": 25, "validation_fraction": 0.0})


@pytest.mark.parametrize(("table", "key", "accepted"), [
    ('masks.m = { plugin = "otsu_cell", chanels = [1] }', "masks.m.chanels", "accepted: plugin, params, channels\n"),
    ('pipelines.p = { transforms = [{ plugin = "equalize", parms = {} }], blocks = ["morph"], classifier = '
     '{ plugin = "logreg" } }', "pipelines.p.transforms[0].parms", "accepted: plugin, params\n"),
    ('pipelines.p = { blocks = ["morph"], classifier = { plugin = "logreg", netwrk = "morph" } }',
     "pipelines.p.classifier.netwrk", "accepted: plugin, params, network\n"),
])
def test_a_plugin_table_accepts_the_keys_of_its_place(tmp_path, table, key, accepted):
    with pytest.raises(StudyError) as info:
        study(tmp_path, table + "\npipelines.q = { blocks = [\"morph\"], classifier = { plugin = \"logreg\" } }")
    assert f"studies.toy.{key}:" in str(info.value) and (str(info.value) + "\n").endswith(accepted), str(info.value)
