"""Trained bundles: a fitted pipeline on disk with a manifest that makes it checkable.

A bundle (format 2) is a folder of data, with nothing executable in it::

    bundle/
      manifest.json            # versions, plugins (name, version, params), feature schema, classes,
                               # training-data fingerprint, CV metrics, seed, sha256 of every artifact
      MODEL_CARD.md            # the manifest for people (medfuse.modelcard); not a checksummed artifact
      pipeline/pipeline.skops  # the fitted object graph (skops: types named, no pickle)
      pipeline/artifacts/<slot>/...
                               # native files: networks as ONNX (run by onnxruntime) beside their
                               # .keras file (for retraining/inspection; never loaded by scoring),
                               # XGBoost boosters as XGBoost JSON

Trust model. A bundle may come from anyone; loading it must not run its author's code.
:func:`load_bundle` therefore refuses (:class:`~medfuse.errors.BundleError`), before loading
anything: a missing or malformed manifest; a manifest path (``pipeline_dir``, artifacts) that is
absolute or leaves the bundle folder; a ``pipeline_class`` other than
``medfuse.pipeline:FittedPipeline`` (checked as text, never imported; :data:`PIPELINE_CLASSES`);
any pickle/joblib file (``.pkl``, ``.pickle``, ``.joblib``); a checksum mismatch or a file the
manifest does not list; a missing plugin or one of another major version. The object graph then
loads with an explicit allow-list of types (:mod:`medfuse.trust`: numpy, scipy, scikit-learn,
medfuse's own classes and the classes of the plugins installed here); any other type is refused by
name. Networks load as ONNX, so scoring never imports TensorFlow or Keras. What is trusted is the
code installed on this machine (medfuse and its plugins), not the bundle.

Format-1 bundles (joblib pickles) are refused with the command that retrains them; they load
only with ``trust_pickle=True`` (``medfuse score --trust-pickle``), which runs pickle: use it only
for bundles you made yourself.

Python API, mirroring ``medfuse score``::

    import medfuse
    bundle = medfuse.load_bundle("bundle/")
    df = bundle.predict(["a.jpg", "b.jpg"])  # path, prediction, proba.<class>..., warning, error

Every per-image failure (unreadable or oversized file, a decoder or extractor exception, no cell
found, an all-NaN feature block) is that row's ``error`` with NaN probabilities and no
prediction; ``warning`` says when a scored row lies outside the training data (:mod:`medfuse.ood`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import BundleError, MedfuseError, describe_exception
from .modelcard import MODEL_CARD, render_model_card
from .util.hashing import sha256_file, source_sha256
from .util.jsonable import to_jsonable as _jsonable
from .util.versions import dist_version, library_versions

MANIFEST = "manifest.json"
FORMAT = "medfuse-bundle"
FORMAT_VERSION = 2
PIPELINE_DIR = "pipeline"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
# 'module:Class' names a bundle's manifest may give as its pipeline_class (compared as text, never
# imported otherwise). MEDFUSE_TRUSTED_PIPELINE_CLASSES (comma-separated) adds names: the
# environment is the operator's, not the bundle author's (the test suite uses it for a stand-in).
PIPELINE_CLASSES = ("medfuse.pipeline:FittedPipeline", "medfuse.segbundle:FittedSegmenter")
PIPELINE_CLASSES_ENV = "MEDFUSE_TRUSTED_PIPELINE_CLASSES"


class BundleWarning(UserWarning):
    """A bundle loads, but something may make its predictions differ from training time."""


# key -> (expected JSON type(s), meaning); checked by :func:`validate_manifest`.
REQUIRED_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((str,), f"the string {FORMAT!r}"),
    "format_version": ((int,), "an integer"),
    "medfuse_version": ((str,), "a version string"),
    "pipeline_class": ((str,), "'module:Class' of the fitted pipeline"),
    "pipeline_dir": ((str,), "the artifact folder inside the bundle"),
    "plugins": ((list,), "a list of {name, version, params}"),
    "classes": ((list,), "a list of class labels"),
    "feature_schema": ((list,), "a list of feature column names"),
    "inputs": ((dict,), "a table {masks: bool, table_columns: [...]}"),
    "seed": ((int,), "an integer"),
    "artifacts": ((dict,), "a table {relative path: sha256}"),
}


# ---- hashing & versions -------------------------------------------------------------------------

def data_fingerprint(sha1s: Iterable[str], labels: Iterable[Any]) -> str:
    """SHA-1 of the sorted ``"<sample sha1> <label>"`` lines: identifies the training data."""
    lines = sorted(f"{s} {lab}" for s, lab in zip(sha1s, labels, strict=True))
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def _major(version: str) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def plugins_from_spec(spec: Any) -> list[dict[str, Any]]:
    """Every plugin named in a ``FittedPipeline.spec()``: dicts with a ``name`` (or ``plugin``)
    and a ``version``; duplicates (same name, version and params) are listed once."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("name", node.get("plugin"))
            if isinstance(name, str) and isinstance(node.get("version"), str):
                entry = {"name": name, "version": node["version"],
                         "params": _jsonable(node.get("params", {}))}
                if "kind" in node:
                    entry["kind"] = node["kind"]
                found.setdefault(json.dumps(entry, sort_keys=True), entry)
            for v in node.values():
                walk(v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v)

    walk(spec)
    return list(found.values())


# ---- writing ------------------------------------------------------------------------------------

def write_bundle(fitted: Any, out: str | Path, *, manifest: dict[str, Any] | None = None,
                 host: Any = None, overwrite: bool = False) -> Path:
    """Save ``fitted`` (a FittedPipeline) and its manifest as a bundle folder ``out``.

    Parameters
    ----------
    fitted : object with ``classes_``, ``spec()``, ``save(directory)`` and a ``load`` classmethod.
    out : the bundle folder; written under a temporary name, then renamed (never half-written).
    manifest : extra manifest entries (study, training_data, cv_metrics, seed, ...).
    host : the plugin host, used to record which package provides each plugin.
    overwrite : replace an existing ``out``.
    """
    out = Path(out)
    occupied = out.is_file() or (out.is_dir() and any(out.iterdir()))
    if occupied and not overwrite:
        raise BundleError(f"{out}: already exists and is not empty; choose another --out or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}"  # not mkdtemp: its 0700 would ignore the umask
    tmp.mkdir()
    try:
        (tmp / PIPELINE_DIR).mkdir()
        fitted.save(tmp / PIPELINE_DIR)
        artifacts = {}
        for f in sorted((tmp / PIPELINE_DIR).rglob("*")):
            if f.is_file():
                artifacts[f.relative_to(tmp).as_posix()] = sha256_file(f)
        if not artifacts:
            raise BundleError(f"{type(fitted).__name__}.save() wrote no files into {tmp / PIPELINE_DIR}")
        spec = _jsonable(fitted.spec())
        plugins = plugins_from_spec(spec)
        if host is not None:
            for p in plugins:
                rec = host.records.get(p["name"])
                if rec is not None:
                    p.setdefault("kind", rec.kind)
                    p["package"] = rec.origin.split(":")[0]
                    digest = source_sha256(rec.cls)
                    if digest:
                        p["source_sha256"] = digest
        from . import __version__

        cls = type(fitted)
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "medfuse_version": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": library_versions(),
            "pipeline_class": f"{cls.__module__}:{cls.__qualname__}",
            "pipeline_dir": PIPELINE_DIR,
            "plugins": plugins,
            "spec": spec,
            "classes": [str(c) for c in fitted.classes_],
            "feature_schema": [str(c) for c in getattr(fitted, "feature_names_", [])],
            "block_reports": _jsonable(getattr(fitted, "block_reports_", {})),
            "fit_seconds": _jsonable(getattr(fitted, "fit_seconds_", None)),
            "inputs": {"masks": False, "table_columns": []},
            "seed": 0,
            "cv_metrics": None,
        }
        data.update(_jsonable(manifest or {}))
        data["artifacts"] = artifacts
        validate_manifest(data, str(out / MANIFEST))
        (tmp / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        (tmp / MODEL_CARD).write_text(render_model_card(data), encoding="utf-8")
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---- reading ------------------------------------------------------------------------------------

def validate_manifest(data: Any, where: str) -> dict[str, Any]:
    """Check the manifest's structure; raise :class:`BundleError` naming the first problem."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: malformed manifest: expected a JSON object, got {type(data).__name__}")
    for key, (types, what) in REQUIRED_KEYS.items():
        if key not in data:
            raise BundleError(f"{where}: malformed manifest: missing key {key!r} ({what})")
        value = data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BundleError(f"{where}: malformed manifest: {key!r} should be {what}, got {value!r:.80}")
    if data["format"] != FORMAT:
        raise BundleError(f"{where}: not a medfuse bundle (format {data['format']!r}, expected {FORMAT!r})")
    if data["format_version"] > FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format {data['format_version']} is newer than this medfuse "
                          f"({__name__} reads format <= {FORMAT_VERSION}); upgrade medfuse")
    if not data["classes"]:
        raise BundleError(f"{where}: malformed manifest: 'classes' is empty")
    for i, p in enumerate(data["plugins"]):
        if not (isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("version"), str)):
            raise BundleError(f"{where}: malformed manifest: plugins[{i}] needs string 'name' and 'version', "
                              f"got {p!r:.80}")
    _check_relative(data["pipeline_dir"], "pipeline_dir", where)
    for rel, digest in data["artifacts"].items():
        _check_relative(rel, "artifact path", where)
        if not (isinstance(digest, str) and len(digest) == 64):
            raise BundleError(f"{where}: malformed manifest: artifact {rel!r} has no sha256 digest")
    return data


def _check_relative(rel: str, what: str, where: str) -> None:
    """``rel`` is a plain relative path that stays inside the bundle folder."""
    p = Path(rel)
    if p.is_absolute() or p.drive or ".." in p.parts or not p.parts or "\\" in rel or "\0" in rel:
        raise BundleError(f"{where}: malformed manifest: {what} {rel!r} leaves the bundle (it must be a "
                          "relative path inside the bundle folder); refusing to load")


def read_manifest(path: str | Path) -> tuple[dict[str, Any], str]:
    """The validated manifest of bundle folder ``path`` and the sha256 of its bytes."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle folder not found" if not path.exists()
                          else f"{path}: a bundle is a folder holding {MANIFEST}, not a file")
    mpath = path / MANIFEST
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no {MANIFEST}; not a medfuse bundle (train one with `medfuse train`)") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: malformed manifest: invalid JSON ({exc})") from None
    return validate_manifest(data, str(mpath)), hashlib.sha256(raw).hexdigest()


def verify_artifacts(path: Path, manifest: dict[str, Any]) -> None:
    """Every listed artifact exists with its sha256; no unlisted file in the artifact folder."""
    root = path.resolve()
    for rel in [manifest["pipeline_dir"], *manifest["artifacts"]]:
        if not (path / rel).resolve().is_relative_to(root):
            raise BundleError(f"{path}: {rel} leads outside the bundle folder (a link?); refusing to load")
    for rel, digest in manifest["artifacts"].items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{path}: artifact {rel} listed in the manifest is missing")
        actual = sha256_file(f)
        if actual != digest:
            raise BundleError(f"{path}: checksum mismatch for {rel} (manifest sha256 {digest[:12]}..., "
                              f"file {actual[:12]}...): the file was modified or corrupted; refusing to load")
    listed = set(manifest["artifacts"])
    art_dir = path / manifest["pipeline_dir"]
    if art_dir.is_dir():
        for f in sorted(art_dir.rglob("*")):
            rel = f.relative_to(path).as_posix()
            if f.is_file() and rel not in listed:
                raise BundleError(f"{path}: file {rel} is not listed in the manifest; refusing to load "
                                  "a bundle with unverified artifacts")


def check_bundle_plugins(manifest: dict[str, Any], host: Any, where: str) -> list[str]:
    """Each plugin the bundle used is installed, usable and of the same major version.

    Returns warnings (not errors) for plugins whose version matches but whose source file
    changed since training: their output may differ if the author did not bump the version.
    """
    notes: list[str] = []
    for p in manifest["plugins"]:
        name, version = p["name"], p["version"]
        rec = host.records.get(name)
        if rec is None:
            failed = [f for f in host.failures if f.name == name]
            package = p.get("package")
            hint = (f"; it failed to load: {failed[0].error}" if failed else
                    f"; install the package that provides it ({package!r})" if package and package != "medfuse"
                    else "; it is a built-in plugin: reinstall medfuse" if package == "medfuse" else "")
            raise BundleError(f"{where}: the bundle needs plugin {name!r} (version {version}), "
                              f"which is not installed{hint}")
        if not rec.ok:
            raise BundleError(f"{where}: plugin {name!r} is installed but not usable: {rec.error}")
        want, have = _major(version), _major(rec.version)
        if want is None or have is None or want != have:
            raise BundleError(f"{where}: plugin {name!r} was version {version} when the bundle was trained; "
                              f"installed is {rec.version} (major version differs, artifacts may not load). "
                              f"Install {name} {want}.x or retrain the bundle")
        trained = p.get("source_sha256")
        if trained and rec.cls is not None and source_sha256(rec.cls) not in (None, trained):
            notes.append(f"plugin {name!r} {rec.version}: its source file changed since the bundle was trained "
                         f"(same version {version}); predictions may differ from training-time ones")
    return notes


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string, trailing zeros dropped (``"1.9.0rc1"`` -> ``(1, 9)``)."""
    m = re.match(r"\d+(?:\.\d+)*", str(version).strip())
    parts = [int(x) for x in m.group().split(".")] if m else []
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check_versions(manifest: dict[str, Any]) -> list[str]:
    """Warnings for a bundle made by a newer medfuse, or with a newer major version of a library
    in its ``libraries`` than the one installed here (its artifacts may not load or may predict
    differently). Libraries not installed here are left to the loading step to report."""
    from . import __version__

    notes = []
    made = str(manifest.get("medfuse_version", ""))
    if _release(made) > _release(__version__):
        notes.append(f"the bundle was made by medfuse {made}, newer than the installed medfuse {__version__}; "
                     f"upgrade medfuse to {made} or later")
    for name, trained in (manifest.get("libraries") or {}).items():
        try:
            installed = dist_version(name)
        except ValueError:  # not a distribution name
            continue
        if installed is None:
            continue
        want, have = _major(trained), _major(installed)
        if want is not None and have is not None and want > have:
            notes.append(f"the bundle was made with {name} {trained}, a newer major version than the installed "
                         f"{name} {installed}; its artifacts may not load or may predict differently: "
                         f"install {name} {want}.x")
    return notes


def check_no_pickle(path: Path) -> None:
    """Refuse a bundle holding any pickle/joblib file (format 2 never writes one)."""
    found = sorted(f.relative_to(path).as_posix() for f in path.rglob("*")
                   if f.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise BundleError(f"{path}: holds pickle/joblib file(s) {', '.join(found[:5])}; loading pickle runs "
                          "code, and a format-2 bundle never contains any: refusing to load")


def pipeline_classes() -> set[str]:
    """The ``pipeline_class`` names a bundle may give (:data:`PIPELINE_CLASSES` and the environment's)."""
    extra = os.environ.get(PIPELINE_CLASSES_ENV, "")
    return {*PIPELINE_CLASSES, *(c.strip() for c in extra.split(",") if c.strip())}


def check_pipeline_class(manifest: dict[str, Any], where: str) -> None:
    """Refuse a ``pipeline_class`` that is not allowed, without importing it."""
    target = manifest["pipeline_class"]
    if target not in pipeline_classes():
        raise BundleError(f"{where}: pipeline_class {target!r} is not a medfuse pipeline class "
                          f"(allowed: {', '.join(sorted(pipeline_classes()))}); refusing to load (nothing "
                          "was imported)")


def retrain_hint(manifest: dict[str, Any]) -> str:
    """The ``medfuse train`` command that rebuilds this bundle, from the manifest's study info."""
    study = manifest.get("study") if isinstance(manifest.get("study"), dict) else {}
    source, name = study.get("source"), study.get("name")
    target = (f"{source}:{name}" if source and str(source).endswith(".toml") and name else name) or "STUDY"
    return f"medfuse train {target} --pipeline {study.get('pipeline') or 'PIPELINE'} --out NEW_BUNDLE"


def check_format(manifest: dict[str, Any], where: str, trust_pickle: bool) -> None:
    """Format 1 (pickles) only with ``trust_pickle``; else say how to retrain."""
    if manifest["format_version"] < FORMAT_VERSION and not trust_pickle:
        raise BundleError(
            f"{where}: bundle format {manifest['format_version']} stores the pipeline as pickle, which runs "
            f"code when loaded; this medfuse loads format {FORMAT_VERSION} (no executable content). Retrain "
            f"it: `{retrain_hint(manifest)}`; or, only for a bundle you made yourself, load it with "
            f"trust_pickle=True (medfuse score --trust-pickle)")


def _import_class(target: str, where: str) -> type:
    check_pipeline_class({"pipeline_class": target}, where)
    module_name, _, qual = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BundleError(f"{where}: cannot import pipeline class {target!r}: {exc}") from None
    return obj


def verify_bundle(path: str | Path, host: Any = None, check_plugins: bool = True, *,
                  trust_pickle: bool = False) -> tuple[Path, dict[str, Any], str]:
    """Every check of :func:`load_bundle` without loading anything.

    Returns the resolved folder, the manifest and the manifest's sha256.
    """
    path = Path(path).resolve()
    manifest, digest = read_manifest(path)
    where = str(path)
    check_format(manifest, where, trust_pickle)
    check_pipeline_class(manifest, where)
    verify_artifacts(path, manifest)
    for note in check_versions(manifest):
        warnings.warn(f"{path}: {note}", BundleWarning, stacklevel=2)
    if manifest["format_version"] >= 2:
        check_no_pickle(path)
    if check_plugins and manifest["plugins"]:
        for note in check_bundle_plugins(manifest, _host(host), where):
            warnings.warn(f"{path}: {note}", BundleWarning, stacklevel=2)
    return path, manifest, digest


def _host(host: Any) -> Any:
    if host is None:
        from .host import get_host

        host = get_host()
    return host


def load_bundle(path: str | Path, host: Any = None, check_plugins: bool = True, *,
                threads: int | None = None, trust_pickle: bool = False) -> Bundle:
    """Load and verify the bundle folder ``path`` (see the trust model in this module's docstring).

    ``threads``: intra- and inter-op threads of the bundle's onnxruntime sessions (default:
    onnxruntime's own). ``trust_pickle``: also load format-1 bundles, whose pickles run code on
    load; only for bundles you made yourself.

    Raises :class:`BundleError` for a missing/malformed manifest, a path leaving the bundle, a
    pipeline class that is not medfuse's, a pickle file, a checksum mismatch (naming the file), an
    unlisted artifact, a missing plugin, a plugin of another major version, or an untrusted type
    in the object graph (naming it).
    """
    path, manifest, digest = verify_bundle(path, host, check_plugins, trust_pickle=trust_pickle)
    return load_verified(path, manifest, digest, threads=threads, host=host)


def load_verified(path: Path, manifest: dict[str, Any], digest: str, *, threads: int | None = None,
                  host: Any = None) -> Bundle:
    """Load the artifacts of a bundle already checked by :func:`verify_bundle` (no second hashing)."""
    from .onnxrt import onnx_threads

    if manifest.get("kind", "classifier") != "classifier":  # segmentation bundles: medfuse.segbundle
        raise BundleError(f"{path}: a {manifest['kind']} bundle, not a classifier; apply it with `medfuse segment`")
    cls = _import_class(manifest["pipeline_class"], str(path))
    folder = path / manifest["pipeline_dir"]
    try:
        with onnx_threads(threads):
            pipeline = cls.load_pickled(folder) if manifest["format_version"] < 2 else cls.load(folder, host=host)
    except MedfuseError:
        raise
    except Exception as exc:
        raise BundleError(f"{path}: loading the fitted pipeline failed: {type(exc).__name__}: {exc}") from exc
    classes = [str(c) for c in getattr(pipeline, "classes_", [])]
    if classes != manifest["classes"]:
        raise BundleError(f"{path}: the loaded pipeline's classes {classes} differ from the manifest's "
                          f"{manifest['classes']}")
    bundle = Bundle(path, manifest, pipeline, digest)
    bundle.threads = threads
    return bundle


# ---- the bundle ---------------------------------------------------------------------------------

class Bundle:
    """A loaded, verified bundle: the fitted pipeline plus its manifest.

    Attributes
    ----------
    path : the bundle folder.
    manifest : the parsed ``manifest.json``.
    pipeline : the FittedPipeline.
    manifest_sha256 : hash of ``manifest.json`` (identifies this exact bundle).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], pipeline: Any, manifest_sha256: str):
        self.path = path
        self.manifest = manifest
        self.pipeline = pipeline
        self.manifest_sha256 = manifest_sha256
        self.threads: int | None = None  # onnxruntime threads of its networks (None: onnxruntime's default)

    def __repr__(self) -> str:
        study = self.manifest.get("study", {}) or {}
        return (f"Bundle({str(self.path)!r}, study={study.get('name')!r}, pipeline={study.get('pipeline')!r}, "
                f"classes={self.classes})")

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def needs_masks(self) -> bool:
        return bool(self.manifest["inputs"].get("masks"))

    @property
    def table_columns(self) -> list[str]:
        return list(self.manifest["inputs"].get("table_columns") or [])

    @property
    def decode_min_side(self) -> int | None:
        """Smallest side images may be decoded at (fast reduced-scale JPEG decoding), if known."""
        value = self.manifest["inputs"].get("min_side")
        return int(value) if value else None

    @property
    def read_options(self) -> Any:
        """The training study's reader options (``inputs.reader``; defaults for older bundles), so
        that scoring decodes images exactly as training did (:class:`medfuse.intensity.ReadOptions`)."""
        from .intensity import ReadOptions

        return ReadOptions.from_dict(self.manifest["inputs"].get("reader"))

    @property
    def columns(self) -> list[str]:
        """Output columns: ``path, prediction, proba.<class>..., warning, error``."""
        return ["path", "prediction", *[f"proba.{c}" for c in self.classes], "warning", "error"]

    def predict_proba_images(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None,
                             table: pd.DataFrame | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` for decoded canonical images (one batch)."""
        proba = np.asarray(self.pipeline.predict_proba_images(list(images), masks=masks, table=table), dtype=float)
        if proba.shape != (len(images), len(self.classes)):
            raise BundleError(f"{self.path}: pipeline returned probabilities of shape {proba.shape}, "
                              f"expected {(len(images), len(self.classes))}")
        return proba

    def predict(self, paths: Iterable[str | Path], masks: Iterable[str | Path | None] | None = None,
                table: pd.DataFrame | None = None, batch_size: int = 256,
                max_pixels: int | None = None) -> pd.DataFrame:
        """Score image files; one row per path, in order.

        Parameters
        ----------
        paths : image files.
        masks : mask files aligned with ``paths`` (needed when the pipeline used ``mask = "dataset"``).
        table : tabular columns aligned with ``paths`` (for pipelines with a table block).
        batch_size : images per pipeline call (Keras inference is batched).
        max_pixels : refuse images whose header claims more pixels (default: ``$MEDFUSE_MAX_PIXELS``
            or PIL's ``Image.MAX_IMAGE_PIXELS``; 0: no limit; see :mod:`medfuse.imageio`).

        Returns
        -------
        DataFrame with columns ``path, prediction, proba.<class>..., warning, error``. ``error`` is
        empty for scored rows; a row that could not be scored (any exception while reading,
        transforming or extracting it, no cell found, an all-NaN block) gets NaN probabilities, no
        prediction and the reason. ``warning`` is empty unless the row lies outside the training
        data (how far, in the model's feature space or by the image's acquisition descriptor).
        """
        paths = [str(p) for p in paths]
        mask_list = [None if m is None or (isinstance(m, float) and np.isnan(m)) else str(m)
                     for m in masks] if masks is not None else [None] * len(paths)
        if len(mask_list) != len(paths):
            raise BundleError(f"predict: {len(mask_list)} masks for {len(paths)} paths")
        if table is not None and len(table) != len(paths):
            raise BundleError(f"predict: table has {len(table)} rows for {len(paths)} paths")
        frames = []
        for start in range(0, len(paths), max(1, batch_size)):
            stop = start + max(1, batch_size)
            sub_table = table.iloc[start:stop].reset_index(drop=True) if table is not None else None
            frames.append(self._predict_batch(paths[start:stop], mask_list[start:stop], sub_table, max_pixels))
        if not frames:
            return self._frame([], np.zeros((0, len(self.classes))), [], [])
        return pd.concat(frames, ignore_index=True)

    # -- internals ---------------------------------------------------------------------------
    def _read(self, path: str, mask_path: str | None,
              max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """The decoded image, its mask (or None) and its spacing in micrometres (or None): the engine's
        decoding step under the training study's reader options and this bundle's read limits."""
        from .engine import ImageSteps, decode

        return decode(path, mask_path, ImageSteps(mask_files="required" if self.needs_masks else "none",
                                                  options=self.read_options, min_side=self.decode_min_side,
                                                  max_pixels=max_pixels))

    def _score(self, images: list[np.ndarray], masks: list[np.ndarray | None] | None,
               table: pd.DataFrame | None, spacings: list[Any] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
        """``(proba, errors, warnings)`` for one batch: the pipeline's per-row ``score_images`` when
        it has one, else its ``predict_proba_images`` (no per-row errors or warnings). ``spacings``
        (per image, micrometres or None) are passed on only when one is known."""
        n = len(images)
        score_images = getattr(self.pipeline, "score_images", None)
        if score_images is None:
            return self.predict_proba_images(images, masks, table), [""] * n, [""] * n
        extra = {"spacings": list(spacings)} if spacings is not None and any(sp is not None for sp in spacings) else {}
        res = score_images(list(images), masks=masks, table=table, **extra)
        proba = np.asarray(res.proba, dtype=float)
        if proba.shape != (n, len(self.classes)) or len(res.errors) != n or len(res.warnings) != n:
            raise BundleError(f"{self.path}: pipeline returned probabilities of shape {proba.shape} and "
                              f"{len(res.errors)} errors for {n} images, {len(self.classes)} classes")
        return proba, list(res.errors), list(res.warnings)

    def _predict_batch(self, paths: list[str], mask_paths: list[str | None],
                       table: pd.DataFrame | None, max_pixels: int | None = None) -> pd.DataFrame:
        n = len(paths)
        proba = np.full((n, len(self.classes)), np.nan)
        errors, warns = [""] * n, [""] * n
        images, masks, spacings, ok = [], [], [], []
        for i, (p, m) in enumerate(zip(paths, mask_paths)):
            try:
                image, mask, spacing = self._read(p, m, max_pixels)
            except Exception as exc:  # noqa: BLE001 - bombs, MemoryError, decoder crashes: the row's error
                errors[i] = row_error(exc, p)
                continue
            images.append(image)
            masks.append(mask)
            spacings.append(spacing)
            ok.append(i)
        if ok:
            mask_arg = masks if self.needs_masks else None
            try:
                got = [self._score(images, mask_arg, self._table_rows(table, ok), spacings)]
                rows = [ok]
            except Exception:  # noqa: BLE001 - find the bad image(s) one by one
                got, rows = [], []
                for j, i in enumerate(ok):
                    try:
                        got.append(self._score([images[j]], [masks[j]] if self.needs_masks else None,
                                               self._table_rows(table, [i]), [spacings[j]]))
                        rows.append([i])
                    except Exception as exc:  # noqa: BLE001 - one row's error, the job goes on
                        errors[i] = row_error(exc, paths[i])
            for idx, (p, e, w) in zip(rows, got):
                proba[idx] = p
                for i, ei, wi in zip(idx, e, w):
                    errors[i] = _message_text(ei, paths[i]) if ei else ""
                    warns[i] = wi
        bad = ~np.isfinite(proba).all(axis=1)
        for i in np.flatnonzero(bad):
            if not errors[i]:
                errors[i] = f"{paths[i]}: pipeline returned non-finite probabilities"
            proba[i] = np.nan
        return self._frame(paths, proba, errors, warns)

    def _table_rows(self, table: pd.DataFrame | None, rows: list[int]) -> pd.DataFrame | None:
        if table is None:
            return None
        cols = [c for c in self.table_columns if c in table.columns] or list(table.columns)
        return table.iloc[rows][cols].reset_index(drop=True)

    def _frame(self, paths: list[str], proba: np.ndarray, errors: list[str], warns: list[str]) -> pd.DataFrame:
        classes = np.asarray(self.classes, dtype=object)
        scored = np.isfinite(proba).all(axis=1) if len(paths) else np.zeros(0, bool)
        labels = np.where(scored, classes[np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)] if len(paths)
                          else np.zeros(0, object), None)
        df = pd.DataFrame({"path": pd.Series(paths, dtype=object),
                           "prediction": pd.Series(labels, dtype=object)})
        for k, c in enumerate(self.classes):
            df[f"proba.{c}"] = proba[:, k].astype(np.float64)
        df["warning"] = pd.Series(warns, dtype=object)
        df["error"] = pd.Series(errors, dtype=object)
        return df


def row_error(exc: BaseException, path: str) -> str:
    """A row's error: the file and the reason (any exception, MemoryError included)."""
    return _message_text(describe_exception(exc), path)


def _message_text(text: str, path: str) -> str:
    return text if path in text else f"{path}: {text}"
