"""Bundles: writing, verifying (checksums, plugins, manifest), loading and predicting."""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import medfuse
import numpy as np
import pytest
from medfuse.bundle import (
    MANIFEST,
    BundleWarning,
    data_fingerprint,
    load_bundle,
    plugins_from_spec,
    read_manifest,
    write_bundle,
)
from medfuse.errors import BundleError, InvalidInputError
from medfuse.host import PluginRecord
from PIL import Image


class FakePipeline:
    """A tiny stand-in FittedPipeline: P(light) = mean brightness; optional delay per image.

    Its state is JSON; bundles name it as their pipeline class, which conftest.py allows through
    ``MEDFUSE_TRUSTED_PIPELINE_CLASSES``. ``threads_probe``: P(light) = brightness / (1 + 2 x the
    onnxruntime threads the bundle was loaded with) (0 = onnxruntime's default).
    """

    def __init__(self, delay: float = 0.0, plugins: list[dict] | None = None, threads_probe: bool = False,
                 threads: int | None = None):
        self.delay = delay
        self.plugins = plugins or []
        self.threads_probe = threads_probe
        self.threads = threads
        self.classes_ = np.asarray(["dark", "light"], dtype=object)
        self.feature_names_ = ["colour.mean"]
        self.calls: list[int] = []

    def predict_proba_images(self, images, masks=None, table=None):
        self.calls.append(len(images))
        out = []
        for im in images:
            if min(im.shape[:2]) < 4:
                raise InvalidInputError(f"image of shape {im.shape} is too small")
            time.sleep(self.delay)
            m = float(im.mean()) / 255.0
            if self.threads_probe:
                m /= 1 + 2 * (self.threads or 0)
            out.append([1.0 - m, m])
        return np.asarray(out)

    def spec(self):
        return {"classifier": {"params": {"delay": self.delay}}, "plugins": self.plugins}

    def save(self, directory: Path) -> list[Path]:
        f = Path(directory) / "fake.json"
        f.write_text(json.dumps({"delay": self.delay, "plugins": self.plugins, "threads_probe": self.threads_probe,
                                 "classes": list(self.classes_)}))
        return [f]

    @classmethod
    def load(cls, directory: Path, host=None) -> FakePipeline:
        from medfuse import onnxrt

        state = json.loads((Path(directory) / "fake.json").read_text())
        return cls(state["delay"], state["plugins"], state["threads_probe"], onnxrt._THREADS)


def fake_host(**versions: str) -> SimpleNamespace:
    """A host-like object whose records hold the given plugin versions."""
    records = {n: PluginRecord(n, "classifier", v, "medfuse:classifiers", "ok", cls=object) for n, v in versions.items()}
    return SimpleNamespace(records=records, failures=[])


FAKE = [{"name": "fake", "version": "1.0.0", "params": {"delay": 0.0}}]


def make_bundle(path: Path, delay: float = 0.0, plugins: list[dict] | None = None,
                threads_probe: bool = False) -> Path:
    """A bundle of :class:`FakePipeline`; ``plugins`` (e.g. :data:`FAKE`) go into its spec."""
    return write_bundle(FakePipeline(delay, plugins, threads_probe), path, host=fake_host(fake="1.0.0"),
                        manifest={"seed": 3, "training_data": {"fingerprint": "x"}})


def write_images(folder: Path, n: int = 6, size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        value = int(20 + 200 * i / max(1, n - 1))
        p = folder / f"img{i:03d}.png"
        Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(p)
        paths.append(p)
    return paths


def load(path: Path, **kw):
    return load_bundle(path, host=kw.pop("host", fake_host(fake="1.2.0")), **kw)


def test_roundtrip_manifest_and_predict(tmp_path):
    b = make_bundle(tmp_path / "b", plugins=FAKE)
    manifest, digest = read_manifest(b)
    assert manifest["classes"] == ["dark", "light"]
    assert manifest["seed"] == 3
    assert set(manifest["artifacts"]) == {"pipeline/fake.json"}
    assert manifest["plugins"] == [{"name": "fake", "version": "1.0.0", "params": {"delay": 0.0},
                                    "kind": "classifier", "package": "medfuse"}]
    assert manifest["libraries"]["numpy"] == np.__version__
    assert len(digest) == 64
    paths = write_images(tmp_path / "imgs")
    bundle = load(b)
    df = bundle.predict(paths, batch_size=4)
    assert list(df.columns) == ["path", "prediction", "proba.dark", "proba.light", "warning", "error"]
    assert df["path"].tolist() == [str(p) for p in paths]
    assert (df["error"] == "").all()
    assert df["prediction"].tolist() == ["dark"] * 3 + ["light"] * 3
    assert np.allclose(df[["proba.dark", "proba.light"]].sum(axis=1), 1.0)
    assert bundle.pipeline.calls == [4, 2]  # batched


def test_public_api_and_error_rows(tmp_path):
    b = make_bundle(tmp_path / "b")
    good = write_images(tmp_path / "imgs", n=2)
    corrupt = tmp_path / "imgs" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    tiny = tmp_path / "imgs" / "tiny.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tiny)
    missing = tmp_path / "imgs" / "missing.png"
    df = medfuse.load_bundle(b).predict([good[0], corrupt, tiny, missing, good[1]])
    assert df["error"].astype(bool).tolist() == [False, True, True, True, False]
    assert re.search("(corrupt|truncated) JPEG", df.loc[1, "error"]) and str(corrupt) in df.loc[1, "error"]
    assert "too small" in df.loc[2, "error"]
    assert "cannot read file" in df.loc[3, "error"]
    assert df.loc[[1, 2, 3], ["prediction", "proba.dark"]].isna().all().all()
    assert df.loc[[0, 4], "proba.light"].notna().all()


def test_checksum_mismatch_names_the_file(tmp_path):
    b = make_bundle(tmp_path / "b")
    with open(b / "pipeline" / "fake.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(BundleError, match=r"checksum mismatch for pipeline/fake\.json"):
        load(b)


def test_missing_and_unlisted_artifacts_are_refused(tmp_path):
    b = make_bundle(tmp_path / "b")
    (b / "pipeline" / "extra.json").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"pipeline/extra\.json is not listed"):
        load(b)
    (b / "pipeline" / "extra.json").unlink()
    (b / "pipeline" / "fake.json").unlink()
    with pytest.raises(BundleError, match=r"artifact pipeline/fake\.json .* is missing"):
        load(b)


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", "invalid JSON"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "classes"}), "missing key 'classes'"),
    (lambda m: json.dumps({**m, "seed": "zero"}), "'seed' should be an integer"),
    (lambda m: json.dumps({**m, "format": "other"}), "not a medfuse bundle"),
    (lambda m: json.dumps({**m, "format_version": 99}), "newer than this medfuse"),
    (lambda m: json.dumps({**m, "artifacts": {"../x": "0" * 64}}), "leaves the bundle"),
    (lambda m: json.dumps([1, 2]), "expected a JSON object"),
])
def test_malformed_manifest(tmp_path, edit, message):
    b = make_bundle(tmp_path / "b")
    m = json.loads((b / MANIFEST).read_text())
    (b / MANIFEST).write_text(edit(m))
    with pytest.raises(BundleError, match="malformed manifest|not a medfuse bundle|newer than") as info:
        load(b)
    assert message in str(info.value)


def test_no_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load(tmp_path / "empty")
    with pytest.raises(BundleError, match="not found"):
        load(tmp_path / "nowhere")


def test_missing_plugin_is_named_with_its_package(tmp_path):
    b = write_bundle(FakePipeline(plugins=[{"name": "stain_magic", "version": "2.1.0", "params": {}}, *FAKE]),
                     tmp_path / "b", host=SimpleNamespace(
                         records={"stain_magic": PluginRecord("stain_magic", "transform", "2.1.0",
                                                              "medfuse-stains:stains", "ok", cls=object),
                                  "fake": PluginRecord("fake", "classifier", "1.0.0", "medfuse:x", "ok", cls=object)},
                         failures=[]))
    with pytest.raises(BundleError, match=r"needs plugin 'stain_magic' \(version 2\.1\.0\).*'medfuse-stains'"):
        load(b)


def test_plugin_major_version_differs(tmp_path):
    b = make_bundle(tmp_path / "b", plugins=FAKE)
    load(b, host=fake_host(fake="1.9.3"))  # same major: fine
    with pytest.raises(BundleError, match=r"plugin 'fake' was version 1\.0\.0 .* installed is 2\.0\.0"):
        load(b, host=fake_host(fake="2.0.0"))


def test_write_refuses_existing_folder(tmp_path):
    b = make_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="already exists"):
        make_bundle(b)
    write_bundle(FakePipeline(), b, host=fake_host(fake="1.0.0"), overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_fingerprint_and_spec_walk():
    assert data_fingerprint(["b", "a"], ["x", "y"]) == data_fingerprint(["a", "b"], ["y", "x"])
    assert data_fingerprint(["a", "b"], ["x", "y"]) != data_fingerprint(["a", "b"], ["y", "x"])
    spec = {"transforms": [{"name": "resize", "version": "1.0.0", "params": {"size": 64}}],
            "blocks": {"m": {"plugin": "morphology", "version": "0.2.0", "params": {}}},
            "members": [{"transforms": [{"name": "resize", "version": "1.0.0", "params": {"size": 64}}]}]}
    assert [p["name"] for p in plugins_from_spec(spec)] == ["resize", "morphology"]


def test_predict_reads_masks_when_the_pipeline_needs_them(tmp_path):
    b = make_bundle(tmp_path / "b")
    m = json.loads((b / MANIFEST).read_text())
    m["inputs"] = {"masks": True, "table_columns": []}
    (b / MANIFEST).write_text(json.dumps(m))
    paths = write_images(tmp_path / "imgs", n=2)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), 8)).save(mask)
    df = load(b).predict(paths, masks=[mask, None])
    assert df.loc[0, "error"] == ""
    assert "mask_path column" in df.loc[1, "error"]
    assert df["path"].tolist() == [str(p) for p in paths]


STUDY = """
[studies.tiny]
dataset = { loader = "folder", params = { path = "images", masks = "masks" } }
evaluation = { folds = 2, seed = 0, bootstrap = 20 }
blocks.morphology = { plugin = "morphology" }
blocks.colour = { plugin = "colour" }
[studies.tiny.pipelines]
classical = { mask = { plugin = "otsu_cell" }, blocks = ["morphology", "colour"], classifier = { plugin = "logreg" } }
"""


def test_train_real_pipeline_then_score_matches_training_predictions(tmp_path):
    """`medfuse train` on synthetic cells writes a verifiable bundle whose image predictions
    equal the fitted pipeline's predictions on the prepared training rows."""
    from click.testing import CliRunner
    from medfuse.cli import main
    from medfuse.synthetic import write_dataset

    write_dataset(tmp_path / "data", n_per_class=6, size=32, seed=1)
    (tmp_path / "study.toml").write_text(STUDY)
    out = tmp_path / "bundle"
    res = CliRunner().invoke(main, ["train", str(tmp_path / "study.toml"), "-p", "classical", "--data",
                                    str(tmp_path / "data"), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    bundle = medfuse.load_bundle(out)
    m = bundle.manifest
    assert bundle.classes == ["elongated", "lobed", "round"]
    assert {p["name"] for p in m["plugins"]} == {"otsu_cell", "morphology", "colour", "logreg"}
    assert all(p["package"] == "medfuse" for p in m["plugins"])
    assert m["feature_schema"] and all(f.split(".")[0] in ("morphology", "colour") for f in m["feature_schema"])
    assert m["training_data"]["n_samples"] == 18 and len(m["training_data"]["fingerprint"]) == 40
    assert set(m["cv_metrics"]["metrics"]) >= {"accuracy", "f1_macro"} and m["cv_metrics"]["folds"] == 2
    assert "pipeline/pipeline.skops" in m["artifacts"] and m["format_version"] == 2
    assert not [a for a in m["artifacts"] if a.endswith((".joblib", ".pkl", ".pickle"))]
    assert m["libraries"]["scikit-learn"] and m["python"]
    paths = sorted((tmp_path / "data" / "images").rglob("*.png"))
    scored = bundle.predict(paths)
    assert (scored["error"] == "").all()
    # scoring files = the fitted pipeline on the training run's prepared rows (train/score parity)
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner
    from medfuse.study import resolve_study

    study = resolve_study(str(tmp_path / "study.toml"))
    data = get_host().create("folder", study.dataset.params).load(tmp_path / "data")
    prepared = PipelineRunner(study, "classical", progress=False).materialize(data)
    expected = bundle.pipeline.predict_proba(prepared, np.arange(len(prepared)))
    order = scored.set_index("path").loc[[str(p) for p in prepared.samples["path"]]]
    np.testing.assert_allclose(order[[f"proba.{c}" for c in bundle.classes]].to_numpy(), expected, atol=1e-9)
    res = CliRunner().invoke(main, ["train", str(tmp_path / "study.toml"), "-p", "classical", "--data",
                                    str(tmp_path / "data"), "--out", str(out), "-q", "--no-cv"])
    assert res.exit_code == 1 and "already exists" in res.output


def test_changed_plugin_source_warns(tmp_path):
    host = SimpleNamespace(records={"fake": PluginRecord("fake", "classifier", "1.0.0", "medfuse:x", "ok",
                                                         cls=FakePipeline)}, failures=[])
    b = write_bundle(FakePipeline(plugins=FAKE), tmp_path / "b", host=host)
    m = json.loads((b / MANIFEST).read_text())
    assert len(m["plugins"][0]["source_sha256"]) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_bundle(b, host=host)  # unchanged source: no warning
    m["plugins"][0]["source_sha256"] = "0" * 64
    (b / MANIFEST).write_text(json.dumps(m))
    with pytest.warns(BundleWarning, match="source file changed since the bundle was trained"):
        load_bundle(b, host=host)


def test_select_fusion_and_ensemble_train_into_bundles_that_keep_their_weights(tmp_path):
    """combine = "select" (late fusion and an ensemble) trains into a bundle: the manifest's spec
    lists the learnt weights, the skops graph keeps them, and scoring files equals the fitted
    pipeline's predictions."""
    from click.testing import CliRunner
    from medfuse.cli import main
    from medfuse.synthetic import write_dataset

    write_dataset(tmp_path / "data", n_per_class=6, size=32, seed=1)
    (tmp_path / "study.toml").write_text(STUDY + (
        'late = { mask = { plugin = "otsu_cell" }, blocks = ["morphology", "colour"], fusion = "late", '
        'combine = "select", classifier = { plugin = "logreg" } }\n'
        'colour = { mask = { plugin = "otsu_cell" }, blocks = ["colour"], classifier = { plugin = "logreg" } }\n'
        'ens = { members = ["classical", "colour"], combine = "select" }\n'))
    paths = sorted((tmp_path / "data" / "images").rglob("*.png"))
    for name, parts in (("late", ["morphology", "colour"]), ("ens", ["classical", "colour"])):
        out = tmp_path / name
        res = CliRunner().invoke(main, ["train", str(tmp_path / "study.toml"), "-p", name, "--data",
                                        str(tmp_path / "data"), "--out", str(out), "-q", "--no-cv"])
        assert res.exit_code == 0, res.output
        bundle = medfuse.load_bundle(out)
        weights = bundle.manifest["spec"]["weights"]
        assert list(weights) == parts and any(w > 0 for w in weights.values()), weights
        assert bundle.pipeline.reliability_["weights"] == list(weights.values())
        scored = bundle.predict(paths)
        assert (scored["error"] == "").all()
        assert np.allclose(scored[[f"proba.{c}" for c in bundle.classes]].sum(axis=1), 1.0)
