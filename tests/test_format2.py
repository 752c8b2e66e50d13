"""Bundle format 2: nothing executable in a bundle (issue #13).

Crafted bundles (pickles, untrusted skops types, foreign pipeline classes, escaping paths) are
refused before anything runs; format-1 bundles need an explicit opt-in; every built-in pipeline
kind round-trips with the same probabilities; scoring never imports TensorFlow or Keras.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fitted_inputs
from medfuse.bundle import MANIFEST, load_bundle, write_bundle
from medfuse.cli import main
from medfuse.errors import BundleError
from medfuse.host import get_host
from medfuse.imageio import read_image, read_mask
from medfuse.pipeline import PipelineRunner
from medfuse.study import parse_study
from medfuse.synthetic import write_dataset

TESTS = Path(__file__).resolve().parent
PATH = os.pathsep.join(str(Path(m.__file__).parents[1]) for m in (__import__("medfuse"),
                                                                  __import__("medfuse_plugins")))
CNN = {"size": 16, "width": 4, "depth": 2, "embedding_dim": 8, "epochs": 1, "batch_size": 8,
       "validation_fraction": 0.0, "augment": False}
UNET = {"n_classes": 3, "patch_size": 16, "tile_size": 32, "overlap": 8, "width": 2, "depth": 2, "epochs": 1,
        "steps_per_epoch": 1, "batch_size": 2}
PIPELINES = {
    "classical": {"mask": "dataset", "blocks": ["morphology", "colour"], "classifier": {"plugin": "logreg"}},
    "fused": {"mask": "dataset", "blocks": ["morphology", "colour", "cnn"],
              "classifier": {"plugin": "xgboost", "params": {"n_estimators": 5}}},
    "deep": {"classifier": {"plugin": "cnn_classifier", "params": {**CNN, "tta": True}}},
    "tabular": {"blocks": ["tree", "chi2", "rfe", "all"], "classifier": {"plugin": "svm"}},
    "late": {"mask": "dataset", "blocks": ["morphology", "tree"], "fusion": "late", "combine": "stack",
             "classifier": {"plugin": "random_forest", "params": {"n_estimators": 5}}},
    "votes": {"transforms": [{"plugin": "hsv"}], "blocks": ["colour", "hog"],
              "classifier": {"plugin": "soft_vote", "params": {"estimators": [
                  {"plugin": "mlp"}, {"plugin": "xgboost", "params": {"n_estimators": 5}}]}}},
    "stacking": {"mask": {"plugin": "otsu_cell"}, "blocks": ["colour"],
                 "classifier": {"plugin": "stacking", "params": {"cv": 2}}},
    "intermediate": {"mask": {"plugin": "unet", "params": UNET}, "blocks": ["morphology", "tree"],
                     "fusion": "intermediate",
                     "classifier": {"plugin": "branch_mlp", "params": {"epochs": 2, "patience": 0}}},
    "ensemble": {"members": ["classical", "deep", "tabular"], "combine": "stack"},
}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Synthetic cells with masks and a lab table, the study over them, and the loaded data."""
    root = write_dataset(tmp_path_factory.mktemp("cells"), n_per_class=6, size=32, seed=1)
    study = parse_study("cells", {
        "dataset": {"loader": "folder", "params": {"path": "images", "masks": "masks", "table": "table.csv",
                                                   "group_column": "patient"}},
        "blocks": {"morphology": {"plugin": "morphology"}, "colour": {"plugin": "colour", "pca": 0.9},
                   "hog": {"plugin": "hog"}, "cnn": {"plugin": "cnn_embedding", "params": CNN},
                   "tree": {"plugin": "select_tree", "params": {"k": 3}},
                   "chi2": {"plugin": "select_chi2", "params": {"k": 3}},
                   "rfe": {"plugin": "select_rfe", "params": {"k": 3}}, "all": {"plugin": "select_all"}},
        "pipelines": PIPELINES}, str(root / "study.toml"))
    data = get_host().create("folder", study.dataset.params, "loader").load(root)
    return root, study, data


def train(cells, name: str, out: Path):
    """Fit pipeline ``name`` on all cells, write its bundle to ``out``; return (fitted, prepared)."""
    _, study, data = cells
    runner = PipelineRunner(study, name, progress=False)
    prepared = runner.materialize(data)
    fitted = runner.fit(prepared, np.arange(len(prepared)), 0)
    write_bundle(fitted, out, host=get_host(), manifest={
        "study": {"name": "cells", "source": study.source, "pipeline": name},
        "inputs": fitted_inputs(fitted)})
    return fitted, prepared


def image_inputs(prepared):
    rows = prepared.samples
    return ([read_image(p) for p in rows["path"]], [read_mask(p) for p in rows["mask_path"]], prepared.table)


@pytest.fixture(scope="module")
def trained(cells, tmp_path_factory):
    """``trained(name)`` -> (bundle folder, fitted, prepared): :func:`train` once per pipeline in this module
    (tests copy a bundle before changing it)."""
    done: dict[str, tuple[Path, object, object]] = {}

    def get(name: str):
        if name not in done:
            out = tmp_path_factory.mktemp("bundles") / name
            done[name] = (out, *train(cells, name, out))
        return done[name]

    return get


@pytest.fixture(scope="module")
def classical(trained):
    return trained("classical")


def rewrite(bundle: Path, **changes) -> dict:
    """Edit the manifest (keys in ``changes``) and re-hash every file under pipeline/."""
    m = json.loads((bundle / MANIFEST).read_text())
    m.update(changes)
    m["artifacts"] = {f.relative_to(bundle).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
                      for f in sorted((bundle / "pipeline").rglob("*")) if f.is_file()}
    (bundle / MANIFEST).write_text(json.dumps(m))
    return m


class Evil:
    """Unpickling it writes ``marker`` (stands for any code a bundle author wants run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


# ---- crafted bundles are refused, nothing runs --------------------------------------------------

@pytest.mark.parametrize("version", [2, 1])
def test_crafted_pickle_bundle_is_refused_by_load_and_score(classical, tmp_path, version):
    import pickle

    b = tmp_path / "evil"
    shutil.copytree(classical[0], b)
    for old in ("pipeline.skops", "pipeline.joblib"):
        (b / "pipeline" / old).unlink(missing_ok=True)
    marker = tmp_path / "pwned.txt"
    (b / "pipeline" / "pipeline.joblib").write_bytes(pickle.dumps(Evil(marker)))
    rewrite(b, format_version=version)  # the checksums match: the author signed it
    refusal = "holds pickle/joblib file" if version == 2 else "stores the pipeline as pickle"
    with pytest.raises(BundleError, match=refusal) as info:
        load_bundle(b)
    if version == 1:
        assert "medfuse train" in str(info.value) and "--pipeline classical" in str(info.value)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(classical[2].samples["path"].iloc[0], imgs / "a.png")
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(tmp_path / "s.csv"), "-q"])
    assert res.exit_code != 0 and refusal in res.output
    assert not marker.exists()


def test_untrusted_type_in_the_object_graph_is_refused_by_name(cells, tmp_path):
    _, study, data = cells
    runner = PipelineRunner(study, "classical", progress=False)
    prepared = runner.materialize(data)
    fitted = runner.fit(prepared, np.arange(len(prepared)), 0)
    marker = tmp_path / "pwned.txt"
    import functools

    fitted.hook_ = functools.partial(os.system, f"touch {marker}")  # a callable skops can name
    b = write_bundle(fitted, tmp_path / "b", host=get_host())
    with pytest.raises(BundleError, match=r"pipeline\.skops: holds type\(s\) .*(posix|os)\.system") as info:
        load_bundle(b)
    assert "functools.partial" in str(info.value) and not marker.exists()


def test_foreign_pipeline_class_is_refused_without_importing_it(classical, tmp_path, monkeypatch):
    b = tmp_path / "b"
    shutil.copytree(classical[0], b)
    marker = tmp_path / "imported.txt"
    (tmp_path / "sneaky.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass P: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for target in ("os:system", "sneaky:P"):
        rewrite(b, pipeline_class=target)
        with pytest.raises(BundleError, match=f"pipeline_class '{target}' is not a medfuse pipeline class"):
            load_bundle(b)
    assert not marker.exists() and "sneaky" not in sys.modules


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_pipeline_dir_leaving_the_bundle_is_refused_cleanly(classical, tmp_path, where):
    b = tmp_path / "b"
    shutil.copytree(classical[0], b)
    shutil.copytree(b / "pipeline", tmp_path / "elsewhere")
    target = str(tmp_path / "elsewhere") if where == "absolute" else "../elsewhere"
    m = json.loads((b / MANIFEST).read_text())
    m["pipeline_dir"] = target
    m["artifacts"] = {k.replace("pipeline/", f"{target}/", 1): v for k, v in m["artifacts"].items()}
    (b / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=f"pipeline_dir '{target}' leaves the bundle"):
        load_bundle(b)


# ---- format 1 --------------------------------------------------------------------------------------

def test_format_1_bundle_says_how_to_retrain_and_loads_with_trust_pickle(classical, tmp_path):
    import joblib

    out, fitted, prepared = classical
    b = tmp_path / "old"
    shutil.copytree(out, b)
    (b / "pipeline" / "pipeline.skops").unlink(missing_ok=True)
    joblib.dump(fitted, b / "pipeline" / "pipeline.joblib")  # what format 1 wrote for a classical pipeline
    rewrite(b, format_version=1)
    with pytest.raises(BundleError, match="format 1") as info:
        load_bundle(b)
    source = json.loads((b / MANIFEST).read_text())["study"]["source"]
    assert f"medfuse train {source}:cells --pipeline classical --out" in str(info.value)
    assert "trust_pickle=True" in str(info.value)
    bundle = load_bundle(b, trust_pickle=True)
    images, masks, _ = image_inputs(prepared)
    np.testing.assert_array_equal(bundle.predict_proba_images(images, masks),
                                  fitted.predict_proba_images(images, masks))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(prepared.samples["path"].iloc[0], imgs / "a.png")
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(tmp_path / "s.csv"), "-q"])
    assert res.exit_code != 0 and "--trust-pickle" in res.output
    # the bundle needs dataset masks: the row fails for want of one, but the bundle loaded
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(tmp_path / "s.csv"), "-q",
                                    "--trust-pickle"])
    assert "mask" in res.output and "stores the pipeline as pickle" not in res.output


# ---- every built-in pipeline kind round-trips ------------------------------------------------------

HEAVY = ("intermediate", "ensemble")  # a U-Net and three networks / a stacked CNN: tens of seconds


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in PIPELINES])
def test_every_pipeline_kind_round_trips_with_the_same_probabilities(trained, name):
    out, fitted, prepared = trained(name)
    files = {f.name for f in out.rglob("*") if f.is_file()}
    assert "pipeline.skops" in files and not [f for f in files if f.endswith((".joblib", ".pkl", ".pickle"))]
    bundle = load_bundle(out)
    images, masks, table = image_inputs(prepared)
    before = fitted.predict_proba_images(images, masks, table)
    after = bundle.predict_proba_images(images, masks, table)
    keras = any(f.endswith(".onnx") for f in files)
    assert np.abs(after - before).max() <= (1e-4 if keras else 1e-12), name


# ---- scoring never imports TensorFlow or Keras ------------------------------------------------------

def test_scoring_workers_never_import_tensorflow(trained, tmp_path):
    """A fused bundle (classical blocks + cnn_embedding) scored with jobs=1 and jobs=2 (loky): the
    scoring process and every worker that scored a chunk hold neither tensorflow nor keras."""
    bundle, _, prepared = trained("fused")  # the round-trip test's training
    csv = tmp_path / "inputs.csv"
    prepared.samples[["path", "mask_path"]].to_csv(csv, index=False)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from medfuse.scoring import score

        def probe():
            import os, sys, time
            import medfuse.scoring as s
            time.sleep(0.3)  # let both workers take a task
            return os.getpid(), bool(s._BUNDLES), "tensorflow" in sys.modules, "keras" in sys.modules

        images = {str(csv)!r}
        one = score({str(bundle)!r}, images, {str(tmp_path / "one.parquet")!r}, jobs=1,
                    chunk_size=6, progress=False)
        here = ("tensorflow" in sys.modules, "keras" in sys.modules)
        from medfuse.scoring import ChunkTask, LocalPool, score_chunk
        kept, close = [], LocalPool.close
        LocalPool.close = lambda pool: kept.append(pool)  # score() leaves its pool to be probed below
        try:
            two = score({str(bundle)!r}, images, {str(tmp_path / "two.parquet")!r}, jobs=2,
                        chunk_size=6, progress=False)
        finally:
            LocalPool.close = close
        # the workers of score()'s own pool: score a chunk on each, then probe the same processes
        import pandas as pd
        from medfuse.bundle import verify_bundle
        _, _, digest = verify_bundle({str(bundle)!r})
        rows = pd.read_csv(images).rename(columns={{"path": "read_path"}}).assign(path=lambda d: d["read_path"])
        [pool] = kept
        try:
            done = [pool.executor.submit(score_chunk, ChunkTask({str(bundle)!r}, digest), i,
                                         rows.iloc[i::2])
                    for i in range(2)]
            [f.result() for f in done]
            workers = [f.result() for f in [pool.executor.submit(probe) for _ in range(4)]]
        finally:
            pool.close()
        print("RESULT", json.dumps([one.n_scored, two.n_scored, here, sorted(set(workers))]))
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PATH, str(TESTS)])}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))
    n1, n2, here, workers = json.loads(line.split(" ", 1)[1])
    assert n1 == n2 == 18 and here == [False, False]
    assert workers and all(scored and not tf and not k for _, scored, tf, k in workers), workers
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"),
                                  check_exact=True)


# ---- ONNX = Keras on real images ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pbc_cnn(data_root, tmp_path_factory):
    """One briefly trained CNN on 12 real PBC images per class (96), shared by ``cnn_classifier`` and
    ``cnn_embedding`` (they train the same network), its ONNX files written once."""
    from medfuse_plugins.cnn import CNNClassifier, CNNEmbedding

    folders = sorted(p for p in (data_root / "pbc").iterdir() if p.is_dir())
    if not folders:
        pytest.skip("pbc images not found")
    paths, labels = [], []
    for f in folders:
        for p in sorted(f.glob("*.jpg"))[:12]:
            paths.append(p)
            labels.append(f.name)
    assert len(paths) >= 80
    params = {"size": 48, "width": 8, "depth": 3, "embedding_dim": 16, "epochs": 2, "batch_size": 32,
              "validation_fraction": 0.0, "augment": False}
    clf = CNNClassifier(**params)
    P = np.stack([clf.prepare(read_image(p), None) for p in paths])
    clf.fit(P, np.asarray(labels))
    emb = CNNEmbedding(**params).adopt_training(clf)
    out = tmp_path_factory.mktemp("pbc_cnn")
    for est in (clf, emb):
        est.save_artifacts(out / est.name)
    return P, out, (clf, emb)


@pytest.mark.slow
@pytest.mark.parametrize("tta", [False, True])
def test_onnx_equals_keras_on_real_pbc_images(pbc_cnn, tta):
    """A briefly trained CNN: ONNX (onnxruntime) and Keras probabilities and embeddings agree
    within 1e-4 on 96 real PBC images, with and without test-time augmentation."""
    P, saved, nets = pbc_cnn
    for est, method in ((nets[0], "predict_proba"), (nets[1], "transform")):
        keras_est = type(est)(**{**est.get_params(), "tta": tta}).adopt_training(est)
        onnx_est = type(est)(**{**est.get_params(), "tta": tta}).adopt_training(est)
        onnx_est.load_artifacts(saved / est.name)
        assert onnx_est.onnx_ and not keras_est.onnx_  # one runs ONNX, the other Keras
        diff = np.abs(getattr(onnx_est, method)(P) - getattr(keras_est, method)(P)).max()
        assert diff <= 1e-4, (est.name, tta, diff)


def test_a_bundle_saved_before_a_plugin_gained_a_parameter_still_loads():
    """Fitted state restored without a constructor parameter added later (here morphology's
    physical_units, added after format-2 bundles existed) reads as that parameter's default."""
    from medfuse_plugins.morphology import Morphology

    old = Morphology(lobe_erosion=1)
    del old.__dict__["physical_units"]  # what an older bundle's state holds
    assert old.physical_units is False and old.wants_spacing is False
    assert old.get_params()["lobe_erosion"] == 1 and old.get_params()["physical_units"] is False
    with pytest.raises(AttributeError, match="no attribute 'not_a_param'"):
        _ = old.not_a_param
