"""Studies: a TOML table naming the dataset, the feature blocks, the pipelines and the evaluation.

The schema below is the single source of truth: validation, ``docs/studies.md`` and the
``medfuse validate`` errors all come from :data:`SCHEMA`. A study file holds one or more
``[studies.NAME]`` tables (``registry.toml`` holds the built-in ones)::

    [studies.pbc-cells]
    description = "Peripheral blood cells, 8 classes"
    dataset = { loader = "folder", params = { path = "pbc" } }
    evaluation = { folds = 5, seed = 0 }
    blocks.morphology = { plugin = "morphology" }
    blocks.cnn = { plugin = "cnn_embedding", params = { size = 64 } }
    pipelines.classical = { mask = { plugin = "otsu_cell" }, blocks = ["morphology"], classifier = { plugin = "xgboost" } }
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StudyError, did_you_mean
from .intensity import ReadOptions


@dataclass(frozen=True)
class Field:
    """One key of a study table: expected type, default, whether required, and its meaning."""

    type: str
    default: Any = None
    required: bool = False
    doc: str = ""
    choices: tuple[str, ...] = ()


PLUGIN_REF = {
    "plugin": Field("str", required=True, doc="Plugin name, as listed by `medfuse plugins`."),
    "params": Field("table", {}, doc="Constructor parameters of the plugin; unknown keys are refused."),
}
# Keys a plugin table takes only in one place (a pipeline's `classifier`, a mask): key -> (that
# place, its field, why it is refused anywhere else).
REF_EXTRAS: dict[str, tuple[str, Field, str]] = {
    "network": ("classifier", Field("str", None, doc="The name of a block whose trained network this "
                "classifier is, e.g. `classifier = { plugin = \"cnn_classifier\", network = \"cnn\" }`: its "
                "parameters are the block's (`params` here override them). Trained on the same images, rows "
                "and seed, one training serves the block and the classifier in a run."),
                "only a classifier can name a block's network"),
    "channels": ("mask", Field("list:int", None, doc="The image channels the mask plugin sees, as a block's "
                 "`channels` (e.g. `mask = { plugin = \"otsu_cell\", channels = [1] }`)."),
                 "only a mask or a block takes `channels`; give the block's channels in `blocks.NAME.channels`"),
}

SCHEMA: dict[str, dict[str, Field]] = {
    "study": {
        "extends": Field("str", None, doc="Another study (of this file, else of the built-in registry) this one "
                         "starts from: its keys are merged under this table's, table by table (a plugin or loader "
                         "table naming another plugin replaces the inherited one whole; lists and values replace). "
                         "E.g. `extends = \"all-subtypes\"` with `dataset.params.group_block = 40`."),
        "drop": Field("list:str", [], doc="Dotted keys removed from what `extends` brings, e.g. "
                      "`[\"pipelines.ensemble\", \"reported\"]`."),
        "description": Field("str", "", doc="One line shown in reports."),
        "dataset": Field("table:dataset", required=True, doc="Where the samples come from."),
        "blocks": Field("tables:block", {}, doc="Named feature blocks, referenced by pipelines."),
        "masks": Field("tables:plugin", {}, doc="Named mask plugin tables, referenced by pipelines as "
                       "`mask = \"NAME\"`: `masks.unet = { plugin = \"unet\", params = { width = 8 } }` "
                       "spells a mask's parameters once for every pipeline that uses it."),
        "pipelines": Field("tables:pipeline", required=True, doc="Named pipelines compared on the same folds."),
        "evaluation": Field("table:evaluation", {}, doc="Cross-validation and metrics."),
        "reader": Field("table:reader", {}, doc="How image files are decoded (bit depth, windowing, fallback "
                        "pixel spacing), e.g. `{ bits = 12, percentiles = [1, 99], pixel_size_um = 0.5 }`. "
                        "Used everywhere the study reads images (compare, train, the block cache key) and "
                        "recorded in a bundle so that scoring decodes exactly as training did."),
        "reported": Field("table", {}, doc="Published figures of the original study, e.g. "
                          "`{ accuracy = 0.95, source = \"...\" }`, shown beside ours."),
        "test": Field("table:test", None, doc="An external test set, never used for fitting or selection: "
                      "cross-validation runs on the development data only, then each pipeline is fitted on all "
                      "of it and scored on the test set (CV and test figures side by side, with the gap). "
                      "Either `{ pattern = \"val_*\" }` (a split of the dataset) or "
                      "`{ loader = \"folder\", params = { path = \"...\" } }` (another folder or manifest)."),
        "profiles": Field("tables:profile", {}, doc="Named opt-in recipe variants, chosen with `medfuse compare "
                          "STUDY --profile NAME` (also `run`, `train`, `validate`), e.g. a larger CNN for a lent "
                          "GPU: `[studies.NAME.profiles.gpu]` with `requires = \"gpu\"` and `blocks.cnn = "
                          "{ size = 128, epochs = 40 }`. Without `--profile` the study runs as written; a "
                          "profile's run records it in results.json (`settings.profile`) and in the report."),
    },
    "test": {
        "pattern": Field("str", None, doc="Glob on each sample's file name (`val_*`), or, when it holds a `/`, "
                         "on the end of its path (`normal/val_*`); samples without a file are matched on their "
                         "id. Matching samples form the test set and are removed before selection, dedupe and "
                         "splits."),
        "loader": Field("str", None, doc="Loader plugin reading a separate test set (`folder`, `manifest`, ...); "
                        "its ids get a `test:` prefix. Its classes must be among the development classes."),
        "params": Field("table", {}, doc="Parameters of `loader`; paths are relative to the data root. Test "
                        "images whose content (sha1) is also in the development data are dropped from the test "
                        "set and reported; the per-class cap (`max_per_class`) applies to the test set too."),
    },
    "reader": {
        "bits": Field("int", None, doc="Bit depth of integer images whose file does not state it (PNG, TIFF): "
                      "values are divided by `2**bits - 1` to 8 bits, so a 12-bit image uses `bits = 12`. "
                      "Absent: inferred per image from its maximum (8/10/12/14/16 bits); set it when all "
                      "files must share one scale. DICOM `BitsStored` wins over it."),
        "percentiles": Field("list:number", None, doc="`[low, high]` in 0-100: window every image on its own "
                             "percentiles (`[P_low, P_high] -> [0, 255]`) instead of the bit-depth rule; "
                             "also replaces a DICOM window."),
        "pixel_size_um": Field("number", None, doc="Micrometres per pixel for files that do not state a "
                               "spacing (DICOM `PixelSpacing` and TIFF resolution tags win). A known spacing "
                               "reaches extractors that ask for it (`morphology` with `physical_units = true`)."),
    },
    "dataset": {
        "loader": Field("str", required=True, doc="Loader plugin: `folder`, `manifest`, `pairs`, `table`, ..."),
        "params": Field("table", {}, doc="Loader parameters; paths are relative to the data root "
                        "(`--data` or `MEDFUSE_DATA`)."),
    },
    "block": {
        "plugin": Field("str", required=True, doc="Extractor or selector plugin producing this block."),
        "params": Field("table", {}, doc="Its parameters."),
        "impute": Field("str", "median", doc="Missing values in the block.", choices=("median", "mean", "none")),
        "scale": Field("str", "standard", doc="Scaling.", choices=("standard", "robust", "minmax", "none")),
        "pca": Field("number", None, doc="PCA per block: a float in (0, 1) keeps that explained "
                     "variance, an int keeps that many components; absent: no PCA."),
        "channels": Field("list:int", None, doc="Image channels (0-based, as decoded: a TIFF's samples or "
                          "channel axis, a DICOM's samples) fed to this block's extractor, e.g. `[1]` for a "
                          "nucleus stain; 1 channel reaches an 8-bit extractor as grey, 2 as `(c0, c1, 0)`, 3 as "
                          "RGB. Absent: every channel (8-bit extractors see the first 3 as RGB). An index the "
                          "image lacks fails that image with an error naming this key."),
    },
    "pipeline": {
        "transforms": Field("list:plugin", [], doc="Image transforms applied in order before masks and blocks."),
        "mask": Field("mask", None, doc="`\"dataset\"` for the dataset's mask files, a plugin table "
                      "(`{ plugin = \"otsu_cell\" }`), the name of one of the study's `masks`, or absent "
                      "for no mask. A plugin table takes "
                      "`channels` as a block does (`{ plugin = \"otsu_cell\", channels = [1] }`: the mask "
                      "plugin sees channel 1 only)."),
        "blocks": Field("list:str", [], doc="Names of blocks (from `blocks`) fed to the classifier."),
        "fusion": Field("str", "early", doc="`early`: concatenate prepared blocks; `intermediate`: Keras "
                        "MLP with one branch per block; `late`: one classifier per block, combined.",
                        choices=("early", "intermediate", "late")),
        "combine": Field("str", "soft", doc="Late fusion / ensembles: `soft` voting, `stack` (logistic "
                         "regression on out-of-fold probabilities) or `select` (per-part reliability: weights "
                         "learnt on out-of-fold probabilities of an inner 3-fold CV over the training rows; a "
                         "block or member is kept only when it lowers the inner log loss significantly, so the "
                         "combination falls back to its best part; weights in results.json and the report). "
                         "Early fusion takes `soft` (the plain concatenation) or `select`: a block enters the "
                         "concatenation only when it lowers the classifier's inner-CV log loss significantly "
                         "(weight 1 kept, 0 dropped); intermediate fusion takes `soft` only. A value the "
                         "pipeline's fusion does not read is refused.",
                         choices=("soft", "stack", "select")),
        "classifier": Field("plugin", None, doc="Classifier plugin table; required unless `members` is set."),
        "members": Field("list:str", [], doc="Ensemble of other pipelines of this study, averaged "
                         "(`combine = \"soft\"`) or stacked."),
        "augment": Field("bool", False, doc="Balance classes in the training fold by augmentation "
                         "(flips / 90-degree rotations) for image classifiers and trainable blocks."),
    },
    "evaluation": {
        "folds": Field("int", 5, doc="Stratified k-fold CV (grouped when the data has groups)."),
        "seed": Field("int", 0, doc="One seed fixes folds, models and bootstrap."),
        "holdout": Field("number", 0.0, doc="Fraction kept as a fixed held-out split (0 = none)."),
        "metrics": Field("list:str", ["accuracy", "balanced_accuracy", "f1_macro", "f1_weighted",
                                      "roc_auc_ovr"], doc="Metrics in the leaderboard."),
        "bootstrap": Field("int", 1000, doc="Bootstrap resamples for 95% intervals."),
        "max_per_class": Field("int", 0, doc="Cap samples per class (0 = all), for quick runs."),
        "dedupe": Field("bool", True, doc="Drop exact duplicate samples (same content hash) before splitting."),
        "jobs": Field("int", 1, doc="Parallel jobs for per-image work."),
        "shortcuts": Field("bool", True, doc="Fit shortcut baselines (logistic regression on image size/aspect, "
                           "file format/size and per-channel mean/std) on the same folds and report them."),
        "shortcut_margin": Field("number", 0.05, doc="Flag the study when a shortcut baseline's accuracy is "
                                 "within this margin of the best pipeline's (CV or test); a baseline that does "
                                 "not beat the majority-class share by more than this margin is not flagged."),
        "shortcut_separable": Field("number", 0.95, doc="Flag the study when a shortcut baseline reaches this "
                                    "accuracy (the classes are separable by acquisition alone)."),
    },
    "profile": {
        "description": Field("str", "", doc="One line: what the profile changes and why (shown in the report)."),
        "requires": Field("str", None, doc="`\"gpu\"`: `compare` and `train` refuse the profile before loading "
                          "data when TensorFlow sees no GPU (`--allow-cpu` runs it anyway). Absent: runs anywhere.",
                          choices=("gpu",)),
        "blocks": Field("table", {}, doc="`{ BLOCK = { PARAM = VALUE, ... } }`: these parameters replace the "
                        "block's (the others stay as the study has them); classifiers that name the block's "
                        "network (`network = \"BLOCK\"`) follow it, as with `--set`. Checked like the block's "
                        "own `params`: names against the plugin, values by its validation."),
        "pipelines": Field("table", {}, doc="`{ PIPELINE = { PARAM = VALUE, ... } }`: these parameters replace "
                           "those of the pipeline's `classifier` (applied after `blocks`); an ensemble has no "
                           "classifier of its own: change its members."),
    },
}


@dataclass
class PluginRef:
    plugin: str
    params: dict[str, Any] = field(default_factory=dict)
    network: str | None = None  # the block whose network this classifier is (params resolved from it)
    channels: list[int] | None = None  # a mask's image channels (as BlockSpec.channels)


@dataclass
class BlockSpec:
    name: str
    plugin: str
    params: dict[str, Any] = field(default_factory=dict)
    impute: str = "median"
    scale: str = "standard"
    pca: float | int | None = None
    channels: list[int] | None = None


MAX_CHANNELS = 16  # channels a decoder reads (medfuse.tiffio.MAX_CHANNELS)


def _channels(value: list[int] | None, source: str, key: str) -> list[int] | None:
    """A block's or mask's ``channels``: a non-empty list of distinct indices in ``0..MAX_CHANNELS - 1``."""
    if value is None:
        return None
    if not value:
        raise StudyError(source, key, "expected at least one channel index (leave the key out for every channel)")
    for c in value:
        if not 0 <= c < MAX_CHANNELS:
            raise StudyError(source, key, f"channel index {c} is out of range: indices count from 0 and medfuse "
                             f"reads at most {MAX_CHANNELS} channels (0 to {MAX_CHANNELS - 1})")
    if len(set(value)) != len(value):
        raise StudyError(source, key, f"channel indices repeat in {value}; list each channel once")
    return list(value)


@dataclass
class PipelineSpec:
    name: str
    transforms: list[PluginRef] = field(default_factory=list)
    mask: PluginRef | str | None = None
    blocks: list[str] = field(default_factory=list)
    fusion: str = "early"
    combine: str = "soft"
    classifier: PluginRef | None = None
    members: list[str] = field(default_factory=list)
    augment: bool = False


@dataclass
class TestSpec:
    """An external test set: a file-name ``pattern`` over the dataset, or a ``loader`` of its own."""

    pattern: str | None = None
    loader: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.pattern is not None:
            return f"pattern {self.pattern!r} over the dataset"
        return f"loader {self.loader!r} {self.params}"


@dataclass
class EvaluationSpec:
    folds: int = 5
    seed: int = 0
    holdout: float = 0.0
    metrics: list[str] = field(default_factory=lambda: list(SCHEMA["evaluation"]["metrics"].default))
    bootstrap: int = 1000
    max_per_class: int = 0
    dedupe: bool = True
    jobs: int = 1
    shortcuts: bool = True
    shortcut_margin: float = 0.05
    shortcut_separable: float = 0.95


@dataclass
class ProfileSpec:
    """An opt-in recipe variant of a study (``profiles.NAME``): parameter overrides of named blocks
    and of named pipelines' classifiers; ``requires = "gpu"`` asks for a GPU before it runs."""

    name: str
    description: str = ""
    requires: str | None = None
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The profile as results.json (``settings.profile``) and a bundle manifest record it."""
        return {"name": self.name, "description": self.description, "requires": self.requires,
                "blocks": copy.deepcopy(self.blocks), "pipelines": copy.deepcopy(self.pipelines)}


@dataclass
class DatasetSpec:
    loader: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Study:
    name: str
    source: str
    dataset: DatasetSpec
    pipelines: dict[str, PipelineSpec]
    blocks: dict[str, BlockSpec] = field(default_factory=dict)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    description: str = ""
    reported: dict[str, Any] = field(default_factory=dict)
    test: TestSpec | None = None
    reader: ReadOptions = field(default_factory=ReadOptions)
    profiles: dict[str, ProfileSpec] = field(default_factory=dict)
    profile: ProfileSpec | None = None  # the profile applied (apply_profile); None: the study as written


# ---- parsing & validation ---------------------------------------------------------------------

_TYPE_WORDS = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
               "table": "a table", "list:str": "a list of strings", "list:plugin": "a list of plugin tables",
               "plugin": "a plugin table like { plugin = \"name\", params = { ... } }",
               "mask": "\"dataset\", a plugin table or the name of one of the study's masks", "list:number": "a list of numbers",
               "list:int": "a list of integers",
               "table:reader": "a table like { bits = 12, percentiles = [1, 99], pixel_size_um = 0.5 }",
               "table:test": "a table like { pattern = \"val_*\" } or { loader = \"folder\", params = { path = \"...\" } }"}


def _expect(ok: bool, source: str, key: str, f: Field, value: Any) -> None:
    if not ok:
        want = _TYPE_WORDS.get(f.type, f.type.split(":")[0])
        raise StudyError(source, key, f"expected {want}, got {value!r}")


def _check_table(section: str, data: Any, source: str, key: str) -> dict[str, Any]:
    """Check keys of one table against ``SCHEMA[section]``; return it with defaults filled in."""
    if not isinstance(data, dict):
        raise StudyError(source, key, f"expected a table, got {data!r}")
    spec = SCHEMA[section]
    for k in data:
        if k not in spec:
            raise StudyError(source, f"{key}.{k}", f"unknown key{did_you_mean(k, spec)}; "
                             f"accepted: {', '.join(spec)}")
    out: dict[str, Any] = {}
    for k, f in spec.items():
        where = f"{key}.{k}"
        if k not in data:
            if f.required:
                raise StudyError(source, where, f"missing required key ({f.doc})")
            out[k] = f.default
            continue
        v = data[k]
        t = f.type
        if t == "str":
            _expect(isinstance(v, str), source, where, f, v)
            if f.choices and v not in f.choices:
                raise StudyError(source, where, f"{v!r} is not one of {', '.join(f.choices)}"
                                 f"{did_you_mean(v, f.choices)}")
        elif t == "int":
            _expect(isinstance(v, int) and not isinstance(v, bool), source, where, f, v)
        elif t == "number":
            _expect(v is None or (isinstance(v, int | float) and not isinstance(v, bool)), source, where, f, v)
        elif t == "bool":
            _expect(isinstance(v, bool), source, where, f, v)
        elif t in ("table",) or t.startswith("table:") or t.startswith("tables:"):
            _expect(isinstance(v, dict), source, where, f, v)
        elif t == "list:str":
            _expect(isinstance(v, list) and all(isinstance(x, str) for x in v), source, where, f, v)
        elif t == "list:plugin":
            _expect(isinstance(v, list), source, where, f, v)
        elif t == "list:int":
            _expect(_int_list(v), source, where, f, v)
        elif t == "list:number":
            _expect(isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v),
                    source, where, f, v)
        out[k] = v
    return out


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _plugin_ref(data: Any, source: str, key: str, place: str = "") -> PluginRef:
    """A plugin table (or a bare plugin name) standing in ``place`` (``"classifier"``, ``"mask"``,
    ``""`` elsewhere), which decides the :data:`REF_EXTRAS` keys it takes."""
    if isinstance(data, str):
        return PluginRef(data)
    table = _check_table_plugin(data, source, key, place)
    return PluginRef(table["plugin"], dict(table["params"]), table["network"], table["channels"])


def _check_table_plugin(data: Any, source: str, key: str, place: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StudyError(source, key, f"expected {_TYPE_WORDS['plugin']}, got {data!r}")
    accepted = [*PLUGIN_REF, *(k for k, (where, _, _) in REF_EXTRAS.items() if where == place)]
    for k in data:
        if k in REF_EXTRAS and k not in accepted:
            raise StudyError(source, f"{key}.{k}", REF_EXTRAS[k][2])
        if k not in accepted:
            raise StudyError(source, f"{key}.{k}", f"unknown key{did_you_mean(k, accepted)}; "
                             f"accepted: {', '.join(accepted)}")
    if not isinstance(data.get("plugin"), str):
        raise StudyError(source, f"{key}.plugin", "missing plugin name (a string)")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise StudyError(source, f"{key}.params", f"expected a table, got {params!r}")
    network = data.get("network")
    if network is not None and not isinstance(network, str):
        raise StudyError(source, f"{key}.network", f"expected a block name (a string), got {network!r}")
    channels = data.get("channels")
    if channels is not None:
        _expect(_int_list(channels), source, f"{key}.channels", REF_EXTRAS["channels"][1], channels)
    return {"plugin": data["plugin"], "params": params, "network": network,
            "channels": _channels(channels, source, f"{key}.channels")}


def _mask_ref(value: Any, masks: dict[str, PluginRef], source: str, key: str) -> PluginRef | str | None:
    """A pipeline's ``mask``: absent, ``"dataset"``, a plugin table, or the name of one of the
    study's ``masks`` (resolved to a copy of its plugin table, as if written in place)."""
    if value is None or value == "dataset":
        return value
    if not isinstance(value, str):
        return _plugin_ref(value, source, key, "mask")
    if value not in masks:
        raise StudyError(source, key, f"unknown mask {value!r}{did_you_mean(value, masks)}; defined masks: "
                         f"{', '.join(masks) or 'none'} (define one as `masks.NAME = {{ plugin = ..., params = "
                         f"... }}`; \"dataset\" uses the dataset's mask files)")
    return copy.deepcopy(masks[value])


def _network_ref(ref: PluginRef, blocks: dict[str, BlockSpec], source: str, key: str) -> PluginRef:
    """``ref`` with the parameters of the block its ``network`` names (its own ``params`` on top)."""
    if ref.network is None:
        return ref
    if ref.network not in blocks:
        raise StudyError(source, f"{key}.network", f"unknown block {ref.network!r}"
                         f"{did_you_mean(ref.network, blocks)}; defined: {', '.join(blocks) or 'none'}")
    return PluginRef(ref.plugin, {**blocks[ref.network].params, **ref.params}, ref.network)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged onto ``base`` table by table; a table naming another ``plugin``/``loader``
    replaces the inherited one, lists and values replace."""
    out = dict(base)
    for k, v in over.items():
        old = out.get(k)
        same_kind = isinstance(old, dict) and isinstance(v, dict) and all(
            v.get(t, old.get(t)) == old.get(t) for t in ("plugin", "loader"))
        out[k] = _merge(old, v) if same_kind else v
    return out


def _drop(table: dict[str, Any], paths: Any, source: str, key: str) -> dict[str, Any]:
    """``table`` without the dotted keys ``paths``; a key that is not there is a :class:`StudyError`."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise StudyError(source, f"{key}.drop", f"expected a list of dotted keys, got {paths!r}")
    for i, path in enumerate(paths):
        parts = path.split(".")
        node: Any = table
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            there = list(node) if isinstance(node, dict) else []
            raise StudyError(source, f"{key}.drop[{i}]", f"{path!r} is not a key of the extended study"
                             f"{did_you_mean(parts[-1], there)}" + (f"; there: {', '.join(there)}" if there else ""))
        table = _without(table, parts)
    return table


def _without(table: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    out = dict(table)
    if len(parts) == 1:
        del out[parts[0]]
    else:
        out[parts[0]] = _without(out[parts[0]], parts[1:])
    return out


def expand_studies(tables: dict[str, Any], source: str,
                   fallback: Callable[[], dict[str, dict[str, Any]]] | None = None) -> dict[str, dict[str, Any]]:
    """Resolve ``extends``/``drop`` in raw ``[studies.NAME]`` tables: each becomes the full table
    it stands for. A name is looked up among ``tables``, then in ``fallback()`` (the built-in
    registry's expanded tables); a cycle or an unknown name is a :class:`StudyError`."""
    done: dict[str, dict[str, Any]] = {}

    def expand(name: str, chain: list[str]) -> dict[str, Any]:
        if name in done:
            return done[name]
        table = tables[name]
        key = f"studies.{name}"
        if not isinstance(table, dict) or ("extends" not in table and "drop" not in table):
            done[name] = table
            return table
        table = dict(table)
        parent = table.pop("extends", None)
        drops = table.pop("drop", [])
        if parent is None:
            raise StudyError(source, f"{key}.drop", "drop removes keys of an extended study: add `extends`")
        if not isinstance(parent, str):
            raise StudyError(source, f"{key}.extends", f"expected a study name, got {parent!r}")
        if parent == name or parent in chain:
            cycle = " -> ".join([*chain, name, parent][[*chain, name, parent].index(parent):])
            raise StudyError(source, f"{key}.extends", f"studies extend each other in a cycle: {cycle}")
        if parent in tables:
            base = expand(parent, [*chain, name])
        else:
            others = fallback() if fallback is not None else {}
            if parent not in others:
                known = [*tables, *others]
                raise StudyError(source, f"{key}.extends", f"no study {parent!r} to extend"
                                 f"{did_you_mean(parent, known)}; known: {', '.join(n for n in known if n != name)}")
            base = others[parent]
        if not isinstance(base, dict):
            raise StudyError(source, f"studies.{parent}", f"expected a table, got {base!r}")
        done[name] = _drop(_merge(base, table), drops, source, key)
        return done[name]

    return {name: expand(name, []) for name in tables}


def _registry_tables() -> dict[str, dict[str, Any]]:
    """The built-in registry's study tables, expanded (empty when there is no registry)."""
    try:
        path = registry_path()
    except StudyError:
        return {}
    studies = read_toml(path).get("studies")
    return expand_studies(studies, str(path)) if isinstance(studies, dict) else {}


def parse_study(name: str, data: dict[str, Any], source: str) -> Study:
    """Turn one ``[studies.NAME]`` table into a :class:`Study`; structural checks only. A table with
    ``extends`` is expanded first (against the built-in registry; :func:`load_studies` resolves
    names of the same file)."""
    key = f"studies.{name}"
    if isinstance(data, dict) and ("extends" in data or "drop" in data):
        data = expand_studies({name: data}, source, _registry_tables)[name]
    top = _check_table("study", data, source, key)
    ds = _check_table("dataset", top["dataset"], source, f"{key}.dataset")
    ev = _check_table("evaluation", top["evaluation"], source, f"{key}.evaluation")
    blocks = {}
    for bname, b in top["blocks"].items():
        t = _check_table("block", b, source, f"{key}.blocks.{bname}")
        pca = t["pca"]
        if pca is not None and not ((isinstance(pca, float) and 0 < pca < 1) or (isinstance(pca, int) and pca > 0)):
            raise StudyError(source, f"{key}.blocks.{bname}.pca",
                             f"expected a variance fraction in (0, 1) or a component count > 0, got {pca!r}")
        blocks[bname] = BlockSpec(bname, t["plugin"], dict(t["params"]), t["impute"], t["scale"], pca,
                                  _channels(t["channels"], source, f"{key}.blocks.{bname}.channels"))
    masks = {}
    for mname, m in top["masks"].items():
        if mname == "dataset":
            raise StudyError(source, f"{key}.masks.dataset", "\"dataset\" means the dataset's mask files in "
                             "`mask = \"dataset\"`; give this mask another name")
        where = f"{key}.masks.{mname}"
        if not isinstance(m, dict):
            raise StudyError(source, where, f"expected {_TYPE_WORDS['plugin']}, got {m!r}")
        masks[mname] = _plugin_ref(m, source, where, "mask")
    pipelines = {}
    if not top["pipelines"]:
        raise StudyError(source, f"{key}.pipelines", "a study needs at least one pipeline")
    for pname, p in top["pipelines"].items():
        pk = f"{key}.pipelines.{pname}"
        t = _check_table("pipeline", p, source, pk)
        for i, b in enumerate(t["blocks"]):
            if b not in blocks:
                raise StudyError(source, f"{pk}.blocks[{i}]",
                                 f"unknown block {b!r}{did_you_mean(b, blocks)}; defined: {', '.join(blocks)}")
        transforms = [_plugin_ref(x, source, f"{pk}.transforms[{i}]") for i, x in enumerate(t["transforms"])]
        mask = _mask_ref(t["mask"], masks, source, f"{pk}.mask")
        classifier = _plugin_ref(t["classifier"], source, f"{pk}.classifier", "classifier") if t["classifier"] else None
        if classifier is not None:
            classifier = _network_ref(classifier, blocks, source, f"{pk}.classifier")
        if classifier is None and not t["members"]:
            raise StudyError(source, f"{pk}.classifier", "missing: give a classifier or ensemble members")
        _check_combine(t, source, pk)
        pipelines[pname] = PipelineSpec(pname, transforms, mask, list(t["blocks"]), t["fusion"], t["combine"],
                                        classifier, list(t["members"]), t["augment"])
    _check_members(pipelines, source, key)
    evaluation = EvaluationSpec(**ev)
    if evaluation.folds < 2:
        raise StudyError(source, f"{key}.evaluation.folds", f"expected at least 2, got {evaluation.folds}")
    _check_evaluation_values(evaluation, source, f"{key}.evaluation")
    for k in ("shortcut_margin", "shortcut_separable"):
        v = getattr(evaluation, k)
        if v is None or not 0 <= v <= 1:
            raise StudyError(source, f"{key}.evaluation.{k}", f"expected an accuracy between 0 and 1, got {v!r}")
    test = _test_spec(top["test"], source, f"{key}.test")
    if test is not None and evaluation.holdout:
        raise StudyError(source, f"{key}.evaluation.holdout", "a study with a `test` set takes no `holdout` "
                         "fraction as well; drop one of them")
    return Study(name, source, DatasetSpec(ds["loader"], dict(ds["params"])), pipelines, blocks,
                 evaluation, top["description"], dict(top["reported"]), test,
                 _reader(top["reader"], source, f"{key}.reader"),
                 _profiles(top["profiles"], blocks, pipelines, source, key))


def _profiles(data: dict[str, Any], blocks: dict[str, BlockSpec], pipelines: dict[str, PipelineSpec],
              source: str, key: str) -> dict[str, ProfileSpec]:
    """Validate ``profiles`` (structure only: the blocks and pipelines they name exist, each override
    is a table; parameter names and values are checked against the plugins by :func:`check_profile`)."""
    out = {}
    for name, p in data.items():
        pk = f"{key}.profiles.{name}"
        t = _check_table("profile", p, source, pk)
        for what, defined in (("blocks", blocks), ("pipelines", pipelines)):
            for target, params in t[what].items():
                where = f"{pk}.{what}.{target}"
                if target not in defined:
                    raise StudyError(source, where, f"profile {name!r} overrides unknown {what[:-1]} {target!r}"
                                     f"{did_you_mean(target, defined)}; the study's {what}: "
                                     f"{', '.join(defined) or 'none'} (name one of them or remove the line)")
                if not isinstance(params, dict) or not params:
                    raise StudyError(source, where, "expected a table of the parameters to change, e.g. "
                                     f"{{ size = 128, epochs = 40 }}, got {params!r}")
                if what == "pipelines" and defined[target].classifier is None:
                    raise StudyError(source, where, f"pipeline {target!r} is an ensemble of "
                                     f"{', '.join(defined[target].members)}: it has no classifier of its own; "
                                     "override its members (or the blocks whose network they name) instead")
        out[name] = ProfileSpec(name, t["description"], t["requires"],
                                {b: dict(v) for b, v in t["blocks"].items()},
                                {n: dict(v) for n, v in t["pipelines"].items()})
    return out


def with_params(study: Study, blocks: dict[str, dict[str, Any]],
                pipelines: dict[str, dict[str, Any]] | None = None) -> Study:
    """A copy of ``study`` whose named blocks take the parameters ``blocks`` gives (classifiers that
    name a block's network follow it), then whose named pipelines' classifiers take those of
    ``pipelines``. The one place ``--set`` and profiles change parameters; names must exist."""
    study = copy.deepcopy(study)
    for block, params in blocks.items():
        spec = study.blocks[block]
        spec.params = {**spec.params, **params}
        for pipe in study.pipelines.values():  # classifiers naming this block's network follow it
            if pipe.classifier is not None and pipe.classifier.network == block:
                pipe.classifier.params = {**pipe.classifier.params, **params}
    for name, params in (pipelines or {}).items():
        classifier = study.pipelines[name].classifier
        classifier.params = {**classifier.params, **params}
    return study


def apply_profile(study: Study, name: str | None) -> Study:
    """``study`` with its profile ``name`` applied (a copy recording it in ``profile``); ``None``: the
    study itself, unchanged. An unknown name is a :class:`StudyError` listing the study's profiles."""
    if name is None:
        return study
    profile = study.profiles.get(name)
    if profile is None:
        defined = ", ".join(study.profiles) or "none"
        raise StudyError(study.source, f"studies.{study.name}.profiles", f"study {study.name!r} has no profile "
                         f"{name!r}{did_you_mean(name, study.profiles)}; its profiles: {defined} (declare one as "
                         f"[studies.{study.name}.profiles.{name}], or run without --profile)")
    applied = with_params(study, profile.blocks, profile.pipelines)
    applied.profile = profile
    return applied


def _check_evaluation_values(ev: EvaluationSpec, source: str, key: str) -> None:
    """Ranges ``compare`` needs (numpy seeds, a hold-out fraction, counts), checked before any data."""
    if not 0 <= ev.seed < 2**32:
        raise StudyError(source, f"{key}.seed", f"expected a seed between 0 and {2**32 - 1}, got {ev.seed}")
    if not 0 <= ev.holdout < 1:
        raise StudyError(source, f"{key}.holdout", f"expected a fraction in [0, 1) (0: no hold-out), got {ev.holdout}")
    if ev.bootstrap < 0:
        raise StudyError(source, f"{key}.bootstrap", f"expected 0 (no intervals) or more, got {ev.bootstrap}")
    if ev.max_per_class < 0:
        raise StudyError(source, f"{key}.max_per_class", f"expected 0 (all) or more, got {ev.max_per_class}")


COMBINE_BY_FUSION = {  # the combine values each fit path reads (medfuse.pipeline.PipelineRunner.fit)
    "members": ("soft", "stack", "select"),  # ensembles: averaged, stacked or weighted members
    "late": ("soft", "stack", "select"),  # medfuse.fusion.LateFusion
    "early": ("soft", "select"),  # one classifier on the concatenation; `select` drops blocks
    "intermediate": ("soft",),  # one Keras branch per block: nothing to combine
}


def _check_combine(t: dict[str, Any], source: str, key: str) -> None:
    """``combine`` must be one the pipeline's fusion mode (or its ensemble) reads (#18)."""
    mode = "members" if t["members"] else t["fusion"]
    allowed = COMBINE_BY_FUSION[mode]
    if t["combine"] not in allowed:
        what = "an ensemble" if mode == "members" else f"{mode} fusion"
        hint = {"early": " (`soft`, the default, is the plain concatenation; for stacking use "
                         "fusion = \"late\" or an ensemble of pipelines)",
                "intermediate": " (the default; leave the key out)"}.get(mode, "")
        raise StudyError(source, f"{key}.combine", f"{t['combine']!r} does not apply to {what}; it takes "
                         f"{', '.join(map(repr, allowed))}{hint}")


def _reader(data: Any, source: str, key: str) -> ReadOptions:
    """Validate the ``reader`` table into :class:`~medfuse.intensity.ReadOptions`."""
    t = _check_table("reader", data, source, key)
    bits, pct, size = t["bits"], t["percentiles"], t["pixel_size_um"]
    if bits is not None and not 1 <= bits <= 32:
        raise StudyError(source, f"{key}.bits", f"expected a bit depth between 1 and 32 (12 for 12-bit "
                         f"images), got {bits!r}")
    if pct is not None and not (len(pct) == 2 and 0 <= pct[0] < pct[1] <= 100):
        raise StudyError(source, f"{key}.percentiles", f"expected [low, high] with 0 <= low < high <= 100, "
                         f"e.g. [1, 99], got {pct!r}")
    if size is not None and not size > 0:
        raise StudyError(source, f"{key}.pixel_size_um", f"expected micrometres per pixel > 0, got {size!r}")
    return ReadOptions(bits=bits, percentiles=None if pct is None else (float(pct[0]), float(pct[1])),
                       pixel_size_um=None if size is None else float(size))


def _check_members(pipelines: dict[str, PipelineSpec], source: str, key: str) -> None:
    """Ensemble members name other pipelines of the study, and no pipeline reaches itself."""
    for pname, p in pipelines.items():
        for i, m in enumerate(p.members):
            where = f"{key}.pipelines.{pname}.members[{i}]"
            if m == pname:
                raise StudyError(source, where, f"pipeline {pname!r} lists itself as a member; an ensemble "
                                 "combines other pipelines of the study")
            if m not in pipelines:
                others = [n for n in pipelines if n != pname]
                raise StudyError(source, where, f"unknown pipeline {m!r}{did_you_mean(m, others)}; "
                                 f"defined: {', '.join(others)}")
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise StudyError(source, f"{key}.pipelines.{cycle[0]}.members",
                             f"ensemble members form a cycle: {' -> '.join(cycle)}; an ensemble cannot "
                             "contain itself, directly or through its members")
        if name in done:
            return
        for m in pipelines[name].members:
            visit(m, [*path, name])
        done.add(name)

    for pname in pipelines:
        visit(pname, [])


def _test_spec(data: Any, source: str, key: str) -> TestSpec | None:
    """Validate the ``test`` table: exactly one of ``pattern`` and ``loader``."""
    if data is None:
        return None
    t = _check_table("test", data, source, key)
    if (t["pattern"] is None) == (t["loader"] is None):
        raise StudyError(source, key, "give exactly one of `pattern` (a split of the dataset by file name, "
                         "e.g. { pattern = \"val_*\" }) or `loader` (another folder or manifest, e.g. "
                         "{ loader = \"folder\", params = { path = \"test\" } })")
    if t["pattern"] is not None:
        if not t["pattern"].strip():
            raise StudyError(source, f"{key}.pattern", "empty pattern; give a glob such as \"val_*\"")
        if t["params"]:
            raise StudyError(source, f"{key}.params", "`params` belong to a test `loader`; a `pattern` takes none")
        return TestSpec(pattern=t["pattern"])
    return TestSpec(loader=t["loader"], params=dict(t["params"]))


def check_plugins(study: Study, host: Any) -> None:
    """Every check of ``study`` that needs no data, as ``compare`` and ``train`` run them: plugin
    names and kinds, parameter names and types, parameter values (each plugin is instantiated and
    its :meth:`~medfuse.contracts.Plugin.validate_params` run), how each pipeline fits its parts
    together (the engine's own rules, by building each pipeline without fitting it), and the
    parameters each of its ``profiles`` sets (:func:`check_profile`)."""
    key = f"studies.{study.name}"

    def check(ref: PluginRef, kinds: tuple[str, ...], where: str) -> None:
        _check_ref(study, host, ref, kinds, where)

    from .metrics import check_metric_names

    check_metric_names(study)
    check(PluginRef(study.dataset.loader, study.dataset.params), ("loader",), f"{key}.dataset")
    if study.test is not None and study.test.loader is not None:
        check(PluginRef(study.test.loader, study.test.params), ("loader",), f"{key}.test")
    for b in study.blocks.values():
        check(PluginRef(b.plugin, b.params), ("extractor", "selector"), f"{key}.blocks.{b.name}")
        if b.channels is not None:
            cls = host.records[b.plugin].cls
            if getattr(cls, "kind", "") != "extractor":
                raise StudyError(study.source, f"{key}.blocks.{b.name}.channels",
                                 f"{b.plugin!r} is a {cls.kind} plugin; channels apply to image extractors only")
            _check_channel_count(cls, b.plugin, b.channels, study.source, f"{key}.blocks.{b.name}.channels")
    for p in study.pipelines.values():
        pk = f"{key}.pipelines.{p.name}"
        for i, t in enumerate(p.transforms):
            check(t, ("transform",), f"{pk}.transforms[{i}]")
        if isinstance(p.mask, PluginRef):
            check(p.mask, ("mask",), f"{pk}.mask")
            if p.mask.channels is not None:
                _check_channel_count(host.records[p.mask.plugin].cls, p.mask.plugin, p.mask.channels,
                                     study.source, f"{pk}.mask.channels", hint="")
        if p.classifier is not None:
            check(p.classifier, ("classifier",), f"{pk}.classifier")
    from .pipeline import PipelineRunner  # the engine's rules for putting a pipeline together

    for name in study.pipelines:
        PipelineRunner(study, name, host=host, cache_dir=None, jobs=1, progress=False)
    for profile in study.profiles.values():
        check_profile(study, profile, host)


def _check_ref(study: Study, host: Any, ref: PluginRef, kinds: tuple[str, ...], where: str,
               params_at: str = ".params") -> None:
    """One plugin table of ``study``: its plugin exists with one of ``kinds``, its parameter names and
    types match the plugin's, and the plugin's ``validate_params`` accepts the values; errors name
    ``where`` (``where + params_at`` for the parameters)."""
    from .errors import MedfuseError, PluginError
    from .host import check_params

    record = host.records.get(ref.plugin)
    if record is None or record.kind not in kinds:
        choices = [n for k in kinds for n in host.names(k)]
        raise StudyError(study.source, f"{where}.plugin",
                         f"unknown {' or '.join(kinds)} plugin {ref.plugin!r}{did_you_mean(ref.plugin, choices)}")
    if record.cls is None:
        raise StudyError(study.source, f"{where}.plugin", f"plugin {ref.plugin!r} failed: {record.error}")
    try:
        check_params(record.cls, ref.params, where=f"plugin {ref.plugin!r}")
    except PluginError as exc:
        raise StudyError(study.source, f"{where}{params_at}", str(exc)) from None
    try:
        record.cls(**ref.params).validate_params()
    except (MedfuseError, ValueError, TypeError) as exc:
        raise StudyError(study.source, f"{where}{params_at}", f"plugin {ref.plugin!r}: {exc}") from None


def check_profile(study: Study, profile: ProfileSpec, host: Any) -> None:
    """The parameters ``profile`` sets, checked as the study's own are (:func:`_check_ref`: names and
    types against each plugin, values by its ``validate_params``) on the blocks and classifiers as the
    profile leaves them; errors name ``studies.NAME.profiles.PROFILE.blocks.BLOCK`` (or ``.pipelines.P``)."""
    where = f"studies.{study.name}.profiles.{profile.name}"
    applied = with_params(study, profile.blocks, profile.pipelines)
    for b in profile.blocks:
        spec = applied.blocks[b]
        _check_ref(study, host, PluginRef(spec.plugin, spec.params), ("extractor", "selector"),
                   f"{where}.blocks.{b}", params_at="")
    for name in profile.pipelines:
        _check_ref(study, host, applied.pipelines[name].classifier, ("classifier",),
                   f"{where}.pipelines.{name}", params_at="")


def _check_channel_count(cls: type, plugin: str, channels: list[int], source: str, key: str,
                         hint: str = " (or make one block per channel group)") -> None:
    """An 8-bit plugin (``input_dtype`` not ``"native"``) sees at most 3 channels (as RGB)."""
    if getattr(cls, "input_dtype", "uint8") != "native" and len(channels) > 3:
        raise StudyError(source, key, f"{plugin!r} takes 8-bit RGB images: give it at most 3 channels, got "
                         f"{channels}{hint}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML document at ``path``; a :class:`StudyError` naming the file for anything unreadable."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.toml"))
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise StudyError(source, "<file>", f"is a folder, not a study file: give a .toml file{hint}")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise StudyError(source, "<file>", "file not found") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise StudyError(source, "<file>", f"not UTF-8 text (byte {exc.object[exc.start]:#04x} on line {line}); "
                         "TOML files are UTF-8: save it as UTF-8") from None
    except OSError as exc:
        raise StudyError(source, "<file>", f"cannot read the file ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(source, "<toml>", f"not valid TOML: {exc}") from None


def check_catalogue(path: str | Path, host: Any) -> int:
    """Check the ``[plugins]`` catalogue of a TOML file (``registry.toml``: built-in plugins by kind)
    against the discovered plugins; return how many names it lists (0 when it has no catalogue)."""
    from .contracts import KINDS

    path = Path(path)
    catalogue = read_toml(path).get("plugins")
    if catalogue is None:
        return 0
    source = str(path)
    if not isinstance(catalogue, dict):
        raise StudyError(source, "plugins", f"expected a table of plugin names by kind, got {catalogue!r}")
    count = 0
    for kind, names in catalogue.items():
        if kind not in KINDS:
            raise StudyError(source, f"plugins.{kind}", f"unknown plugin kind{did_you_mean(kind, KINDS)}; "
                             f"kinds: {', '.join(KINDS)}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise StudyError(source, f"plugins.{kind}", f"expected a list of plugin names, got {names!r}")
        for i, name in enumerate(names):
            record = host.records.get(name)
            if record is None or record.kind != kind:
                known = host.names(kind)
                what = f"; {name!r} is a {record.kind} plugin" if record is not None else did_you_mean(name, known)
                raise StudyError(source, f"plugins.{kind}[{i}]", f"no {kind} plugin {name!r}{what}; "
                                 f"{kind} plugins: {', '.join(known)}")
        count += len(names)
    return count


def load_studies(path: str | Path) -> dict[str, Study]:
    """Parse every ``[studies.*]`` table of a TOML file."""
    path = Path(path)
    source = str(path)
    data = read_toml(path)
    studies = data.get("studies")
    if not isinstance(studies, dict) or not studies:
        raise StudyError(source, "studies", "expected one or more [studies.NAME] tables")
    is_registry = path.name == "registry.toml" and _is_registry(path)
    expanded = expand_studies(studies, source, None if is_registry else _registry_tables)
    return {name: parse_study(name, table, source) for name, table in expanded.items()}


def _is_registry(path: Path) -> bool:
    try:
        return path.resolve() == registry_path().resolve()
    except StudyError:
        return False


def registry_path() -> Path:
    """The built-in ``registry.toml``: the repository's top-level file in a source checkout
    (``<repo>/core/medfuse``, editable install) or the copy a built wheel carries in ``medfuse/``."""
    from .util.shipped import PACKAGE, shipped_file

    path = shipped_file("registry.toml")
    if path is not None:
        return path
    raise StudyError(str(PACKAGE / "registry.toml"), "<file>",
                     "built-in registry not found; reinstall medfuse (a wheel ships it as medfuse/registry.toml)")


def plugin_studies(host: Any = None) -> list[Study]:
    """The studies declared by installed plugins (``medfuse_studies`` hook)."""
    if host is None:
        from .host import get_host

        host = get_host()
    studies = []
    for origin, table in host.studies:
        table = dict(table)
        name = table.pop("name", None)
        if not name:
            raise StudyError(origin, "medfuse_studies", "a study table needs a 'name' key")
        studies.append(parse_study(name, table, origin))
    return studies


def builtin_studies() -> dict[str, Study]:
    """Studies of ``registry.toml`` plus those declared by plugins (``medfuse_studies`` hook)."""
    studies = load_studies(registry_path())
    studies.update({s.name: s for s in plugin_studies()})
    return studies


def resolve_study(name_or_path: str) -> Study:
    """A study by registry name, or ``FILE.toml`` (its only study) or ``FILE.toml:NAME``."""
    if name_or_path.endswith(".toml") or ".toml:" in name_or_path:
        path, _, name = name_or_path.partition(".toml")
        studies = load_studies(path + ".toml")
        name = name.lstrip(":")
        if not name:
            if len(studies) != 1:
                raise StudyError(path + ".toml", "studies", f"holds {len(studies)} studies; "
                                 f"say which with FILE.toml:NAME ({', '.join(studies)})")
            return next(iter(studies.values()))
        if name not in studies:
            raise StudyError(path + ".toml", f"studies.{name}", f"no such study{did_you_mean(name, studies)}")
        return studies[name]
    studies = builtin_studies()
    if name_or_path not in studies:
        raise StudyError("registry.toml", f"studies.{name_or_path}",
                         f"no such study{did_you_mean(name_or_path, studies)}; known: {', '.join(studies)}")
    return studies[name_or_path]
