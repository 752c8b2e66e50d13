"""Streaming per-image work: decode -> transforms -> mask -> ``prepare`` of each extractor.

Each image is decoded once (:func:`medfuse.imageio.read_image`, with the given
:class:`~medfuse.intensity.ReadOptions`: a study's ``reader`` table), passed through the transforms,
given a mask (a mask plugin, a mask file, or none) and handed to every extractor's ``prepare``.
Images are processed in chunks, in this process (``jobs=1``) or in joblib worker processes;
results come back in input order. A failing image never stops the run: its row gets the error
message and NaN features.

* :func:`resolve_inputs`: a folder, a glob or a CSV manifest -> a table of paths (and masks);
* :func:`prepare_images`: the loop itself, returning stacked prepared arrays per extractor;
* :func:`extract_table`: the feature table of ``medfuse extract`` (``path``, ``<block>.<feature>``,
  ``error``) with its provenance; :func:`write_table` writes it to Parquet or CSV;
* :func:`make_plugins`: the extractors, transforms and mask of a run, by plugin name (shared by
  ``medfuse extract``, :func:`medfuse.extract` and :class:`medfuse.ImageFeatures`).

An image source is a file path (or object reference ``IMAGE#box=...``) or an in-memory array
(:func:`load_source`: made canonical by the same intensity and channel rules as files).

Nothing here imports TensorFlow; deep plugins import it themselves when used.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .contracts import Extractor, MaskMaker, Transform, prepare_one
from .errors import DataError, InvalidInputError, MedfuseError
from .imageio import IMAGE_SUFFIXES, ReadOptions, read_image_with_info, read_mask
from .outputs import atomic_output, write_text

PROVENANCE_KEY = b"medfuse"
MASK_FROM_FILE = "file"
DEFAULT_BLOCKS = ("morphology", "texture", "colour")
DEFAULT_MASK = "otsu_cell"


@dataclass
class Plugins:
    """What :func:`make_plugins` builds: ``(block, extractor)`` pairs, transforms and the mask."""

    extractors: list[tuple[str, Extractor]]
    transforms: list[Transform]
    mask: MaskMaker | str | None


def make_plugins(blocks: Sequence[str], mask: str | None = DEFAULT_MASK, transforms: Sequence[str] = (),
                 params: dict[str, dict[str, Any]] | None = None, host: Any = None,
                 allow_trainable: bool = False) -> Plugins:
    """Create the named extractor, transform and mask plugins (``params``: plugin name -> parameters).

    ``mask``: a mask plugin name, ``"file"`` (the manifest's mask column) or ``None``/``"none"``.
    Raises :class:`InvalidInputError` for an empty block list, ``params`` naming a plugin the run
    does not use, or a trainable mask (and a trainable block unless ``allow_trainable``);
    :class:`~medfuse.errors.PluginError` for unknown plugins or parameters.
    """
    from .host import get_host

    host = host or get_host()
    params = dict(params or {})
    block_names = [str(b).strip() for b in blocks if str(b).strip()]
    if not block_names:
        raise InvalidInputError("give at least one block (extractor plugin), e.g. ['morphology']")
    tnames = [str(t).strip() for t in transforms if str(t).strip()]
    mask_name = (mask or "none").strip()
    unknown = sorted(set(params) - set(block_names) - set(tnames) - {mask_name})
    if unknown:
        raise InvalidInputError(f"parameters given for plugin(s) {unknown} that this run does not use "
                                f"(blocks {block_names}, transforms {tnames}, mask {mask_name!r})")
    extractors = []
    for b in block_names:
        ex = host.create(b, params.get(b), kind="extractor")
        if getattr(ex, "trainable", False) and not allow_trainable:
            raise InvalidInputError(f"block {b!r}: {ex.name} is trainable (it must be fitted inside a training "
                                    "fold); use medfuse.ImageFeatures, `medfuse run` or `medfuse compare`")
        extractors.append((ex.block, ex))
    tlist = [host.create(t, params.get(t), kind="transform") for t in tnames]
    maker: MaskMaker | str | None
    if mask_name in ("none", ""):
        maker = None
    elif mask_name == MASK_FROM_FILE:
        maker = MASK_FROM_FILE
    else:
        maker = host.create(mask_name, params.get(mask_name), kind="mask")
        if getattr(maker, "trainable", False):
            raise InvalidInputError(f"mask plugin {mask_name!r} must be trained; use `medfuse run`")
    return Plugins(extractors, tlist, maker)


def load_source(source: str | Path | np.ndarray,
                options: ReadOptions | None = None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """A canonical image and its spacing (micrometres per pixel, or None) from a file or an array.

    An array (``(H, W)`` grey or ``(H, W, C)``, any numeric dtype) is mapped to ``uint8`` RGB by
    :func:`medfuse.intensity.to_uint8` and :func:`~medfuse.intensity.channels_to_rgb`, the rules
    used for decoded files; its spacing is ``options.pixel_size_um`` when set.
    """
    if isinstance(source, np.ndarray):
        from .intensity import channels_to_rgb, to_uint8

        if source.ndim not in (2, 3) or min(source.shape[:2]) < 1:
            raise InvalidInputError(f"image array: expected (H, W) or (H, W, C), got shape {source.shape}")
        if source.dtype.kind not in "uifb":
            raise InvalidInputError(f"image array: expected a numeric dtype, got {source.dtype}")
        opts = options or ReadOptions()
        arr = source.astype(np.uint8) if source.dtype.kind == "b" else source
        image = channels_to_rgb(to_uint8(arr, opts)[0])
        px = opts.pixel_size_um
        return image, ((float(px), float(px)) if px else None)
    image, info = read_image_with_info(source, options=options)
    return image, info.spacing_um


def source_name(source: str | Path | np.ndarray) -> str:
    """How an image source is named in error messages."""
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return str(source)


def resolve_inputs(spec: str | Path) -> pd.DataFrame:
    """Image paths named by ``spec``: a folder (searched recursively), a glob, or a CSV manifest.

    A manifest has a ``path`` column (else its first column is taken), optionally ``mask`` (or
    ``mask_path``) and ``label``; relative paths are relative to the manifest's folder.

    Returns
    -------
    DataFrame with ``path`` and ``mask_path`` (``None`` where absent), plus ``label`` when the
    manifest has one. Raises :class:`DataError` when nothing matches.
    """
    text = str(spec)
    p = Path(text)
    if p.is_dir():
        paths = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return pd.DataFrame({"path": paths, "mask_path": [None] * len(paths)})
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".txt"):
        try:
            table = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: unreadable manifest ({exc})") from None
        if table.empty:
            raise DataError(f"{p}: the manifest has no rows")
        col = "path" if "path" in table.columns else table.columns[0]
        base = p.parent

        def absolute(v: Any) -> str | None:
            if not isinstance(v, str) or not v.strip():
                return None
            q = Path(v.strip())
            return str(q if q.is_absolute() else base / q)

        out = pd.DataFrame({"path": [absolute(v) for v in table[col]]})
        mcol = next((c for c in ("mask", "mask_path") if c in table.columns), None)
        out["mask_path"] = [absolute(v) for v in table[mcol]] if mcol else None
        if "label" in table.columns:
            out["label"] = table["label"].to_numpy()
        missing = out["path"].isna()
        if missing.any():
            raise DataError(f"{p}: {int(missing.sum())} row(s) with an empty '{col}' value "
                            f"(first at row {int(np.flatnonzero(missing.to_numpy())[0]) + 2})")
        return out
    if p.is_file():
        return pd.DataFrame({"path": [str(p)], "mask_path": [None]})
    paths = sorted(f for f in glob.glob(text, recursive=True) if Path(f).is_file())
    if not paths:
        raise DataError(f"{text}: not a folder, a CSV manifest or a glob matching any file")
    return pd.DataFrame({"path": paths, "mask_path": [None] * len(paths)})


@dataclass
class Prepared:
    """Output of :func:`prepare_images`: one stacked array per extractor and one error per image."""

    arrays: dict[str, np.ndarray]
    errors: list[str]
    seconds: float = 0.0
    names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        return np.asarray([not e for e in self.errors], bool)


def _one(path: str | np.ndarray, mask_path: str | None, transforms: Sequence[Transform],
         mask: MaskMaker | str | None, extractors: Sequence[tuple[str, Extractor]],
         options: ReadOptions | None = None) -> tuple[list[np.ndarray] | None, str]:
    try:
        image, spacing = load_source(path, options)
        m = None
        if mask == MASK_FROM_FILE:
            if mask_path is None:
                raise InvalidInputError(f"{source_name(path)}: no mask file given for this image")
            m = read_mask(mask_path)
            if m.shape != image.shape[:2]:
                raise InvalidInputError(f"{mask_path}: mask shape {m.shape} differs from image {image.shape[:2]}")
        for t in transforms:
            image, m = t.apply(image, m)
        if isinstance(mask, MaskMaker):
            m = mask.predict_mask(image)
        return [prepare_one(ex, image, m, spacing) for _, ex in extractors], ""
    except MedfuseError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
        return None, f"{source_name(path)}: {type(exc).__name__}: {exc}"


def _chunk(items: Sequence[tuple[str, str | None]], transforms, mask, extractors, options=None):
    return [_one(p, m, transforms, mask, extractors, options) for p, m in items]


def prepare_images(paths: Sequence[str | np.ndarray], mask_paths: Sequence[str | None] | None = None,
                   transforms: Sequence[Transform] = (), mask: MaskMaker | str | None = None,
                   extractors: Sequence[tuple[str, Extractor]] = (), jobs: int = 1,
                   chunk_size: int = 32, progress: bool = False,
                   description: str = "extracting", options: ReadOptions | None = None) -> Prepared:
    """Decode, transform, mask and ``prepare`` every image; results in the order of ``paths``.

    Parameters
    ----------
    paths : image files, or image arrays (:func:`load_source`).
    mask_paths : one mask file (or ``None``) per image; used when ``mask == "file"``.
    transforms : applied in order to ``(image, mask)``.
    mask : a fitted :class:`MaskMaker`, ``"file"`` (read ``mask_paths``) or ``None`` (no mask).
    extractors : ``(block name, extractor)`` pairs.
    jobs : worker processes (1 = this process; -1 = every core).
    chunk_size : images per task sent to a worker (down to 8 when there are few images; a
        single chunk runs in this process).
    progress : rich progress bar on stderr (only on a terminal).
    options : how files are decoded (bit depth, windowing, fallback spacing; default: the
        documented rule of :mod:`medfuse.imageio`).

    Returns
    -------
    :class:`Prepared` whose ``arrays[name]`` is ``(n_images, ...)``, NaN rows where an image
    failed, and ``errors[i]`` is ``""`` or the reason image ``i`` failed.
    """
    from .scan import progress_bar

    paths = [p if isinstance(p, np.ndarray) else str(p) for p in paths]
    masks = list(mask_paths) if mask_paths is not None else [None] * len(paths)
    if len(masks) != len(paths):
        raise InvalidInputError(f"prepare_images: {len(paths)} images but {len(masks)} mask paths")
    masks = [str(m) if isinstance(m, str | Path) and str(m) else None for m in masks]
    items = list(zip(paths, masks))
    n_workers = jobs if jobs > 0 else (os.cpu_count() or 1)
    size = max(8, min(int(chunk_size), -(-len(items) // (4 * n_workers)))) if n_workers > 1 else chunk_size
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    advance, close = progress_bar(len(items), description, progress)
    results: list[tuple[list[np.ndarray] | None, str]] = []
    start = time.perf_counter()
    try:
        if n_workers == 1 or len(chunks) <= 1:
            for c in chunks:
                results.extend(_chunk(c, transforms, mask, extractors, options))
                advance(len(c))
        else:
            from joblib import Parallel, delayed

            runner = Parallel(n_jobs=jobs, return_as="generator")
            for c, out in zip(chunks, runner(delayed(_chunk)(c, transforms, mask, extractors, options)
                                                for c in chunks)):
                results.extend(out)
                advance(len(c))
    finally:
        close()
    seconds = time.perf_counter() - start
    arrays: dict[str, np.ndarray] = {}
    for k, (name, _) in enumerate(extractors):
        first = next((r[0][k] for r in results if r[0] is not None), None)
        if first is None:
            arrays[name] = np.full((len(results), 0), np.nan, np.float32)
            continue
        out = np.full((len(results), *first.shape), np.nan, dtype=np.float32)
        for i, (vecs, _) in enumerate(results):
            if vecs is not None:
                out[i] = vecs[k]
        arrays[name] = out
    return Prepared(arrays, [e for _, e in results], seconds)


def _plugin_record(plugin: Any) -> dict[str, Any]:
    return {"name": plugin.name, "kind": plugin.kind, "version": plugin.version,
            "params": json.loads(json.dumps(plugin.get_params(deep=False), default=repr)),
            "cache_key": plugin.cache_key()}


def provenance(inputs: str, transforms: Sequence[Transform], mask: MaskMaker | str | None,
               extractors: Sequence[tuple[str, Extractor]], n_images: int, n_errors: int,
               seconds: float, jobs: int, options: ReadOptions | None = None) -> dict[str, Any]:
    """What produced a feature table: versions, plugins with parameters, inputs and timing."""
    from . import __version__
    from .util.versions import dist_version, installed_versions

    return {
        "medfuse": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": str(inputs),
        "n_images": int(n_images),
        "n_errors": int(n_errors),
        "seconds": round(float(seconds), 3),
        "jobs": int(jobs),
        "reader": (options or ReadOptions()).to_dict(),
        "transforms": [_plugin_record(t) for t in transforms],
        "mask": (_plugin_record(mask) if isinstance(mask, MaskMaker) else {"name": mask or "none"}),
        "blocks": {name: _plugin_record(ex) for name, ex in extractors},
        "environment": {**installed_versions(["numpy", "scikit-image", "scikit-learn", "pandas"], python=True),
                        "medfuse_dist": dist_version("medfuse", "not installed")},
    }


def extract_table(inputs: str | Path | pd.DataFrame, extractors: Sequence[tuple[str, Extractor]],
                  transforms: Sequence[Transform] = (), mask: MaskMaker | str | None = None,
                  jobs: int = 1, progress: bool = False, chunk_size: int = 32,
                  options: ReadOptions | None = None) -> tuple[pd.DataFrame, dict]:
    """Feature table of stateless extractors: ``path``, [``label``], ``<block>.<feature>``..., ``error``.

    ``inputs`` is anything :func:`resolve_inputs` accepts, or its output; ``options`` how files are
    decoded (a study's ``reader``; recorded in the provenance). Returns the table and its provenance
    dictionary.
    """
    for name, ex in extractors:
        if getattr(ex, "trainable", False):
            raise InvalidInputError(f"block {name!r}: {ex.name} is trainable (it must be fitted inside "
                                    "a training fold); use `medfuse run` / `medfuse compare` instead")
    table = inputs if isinstance(inputs, pd.DataFrame) else resolve_inputs(inputs)
    mask_paths = table["mask_path"].tolist() if "mask_path" in table.columns else None
    if mask == MASK_FROM_FILE and (mask_paths is None or all(m is None for m in mask_paths)):
        raise InvalidInputError("--mask file needs a CSV manifest with a 'mask' column")
    prep = prepare_images(table["path"].tolist(), mask_paths, transforms, mask, extractors, jobs,
                          chunk_size, progress, options=options)
    columns: dict[str, Any] = {"path": table["path"].to_numpy()}
    if "label" in table.columns:
        columns["label"] = table["label"].to_numpy()
    for name, ex in extractors:
        names = [f"{name}.{f}" for f in ex.feature_names()]
        block = prep.arrays[name]
        if block.shape[1] == 0:
            block = np.full((len(table), len(names)), np.nan, np.float32)
        block = ex.transform(block) if block.ndim == 2 else block
        if block.shape[1] != len(names):
            raise InvalidInputError(f"block {name!r}: {block.shape[1]} values but {len(names)} feature names")
        columns.update({n: block[:, j] for j, n in enumerate(names)})
    columns["error"] = prep.errors
    df = pd.DataFrame(columns)
    prov = provenance(str(inputs) if not isinstance(inputs, pd.DataFrame) else "<table>", transforms, mask,
                      extractors, len(df), sum(bool(e) for e in prep.errors), prep.seconds, jobs, options)
    return df, prov


def write_table(df: pd.DataFrame, out: str | Path, prov: dict[str, Any]) -> list[Path]:
    """Write ``df`` as Parquet (provenance in the schema metadata under ``b"medfuse"``) or CSV
    (provenance in a sidecar ``<out>.json``), each file atomically (never half-written, not even
    on a full disk: :func:`medfuse.outputs.atomic_output`). Returns the files written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        tbl = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(tbl.schema.metadata or {})
        meta[PROVENANCE_KEY] = json.dumps(prov).encode()
        with atomic_output(out) as tmp:
            pq.write_table(tbl.replace_schema_metadata(meta), tmp)
        return [out]
    if suffix in (".csv", ".tsv"):
        with atomic_output(out) as tmp:
            df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
        side = write_text(out.with_name(out.name + ".json"), json.dumps(prov, indent=2))
        return [out, side]
    raise InvalidInputError(f"{out}: output must end in .parquet or .csv")


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance written by :func:`write_table` (Parquet metadata or CSV sidecar)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        if PROVENANCE_KEY not in meta:
            raise DataError(f"{path}: no medfuse provenance in the Parquet metadata")
        return json.loads(meta[PROVENANCE_KEY])
    side = path.with_name(path.name + ".json")
    if not side.exists():
        raise DataError(f"{path}: no provenance sidecar {side.name}")
    return json.loads(side.read_text())


class _CallableModule(types.ModuleType):
    """This module's class: ``medfuse.extract(inputs, blocks=[...])`` calls :func:`medfuse.api.extract`
    (the package attribute ``medfuse.extract`` is this module once anything imports it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        from .api import extract

        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
