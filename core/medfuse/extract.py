"""Feature tables of stateless extractors: ``medfuse extract``, :func:`medfuse.extract`.

The per-image work (decode with the given :class:`~medfuse.intensity.ReadOptions`, transforms,
mask, each extractor's ``prepare``; per-image errors kept; joblib chunks) is the one engine,
:func:`medfuse.engine.prepare_images`; the inputs are listed by :func:`medfuse.inputs.list_inputs`.

* :func:`extract_table`: the feature table (``path``, ``<block>.<feature>``, ``error``) with its
  provenance; :func:`write_table` writes it to Parquet or CSV, :func:`read_provenance` reads it back;
* :func:`extract_columns` and :func:`write_columns`: the same table as named NumPy columns, built
  and written without pandas (``medfuse extract`` of a folder, glob or image never imports it:
  start-up, issue 15); :func:`extract_table` and :func:`write_table` are these plus a DataFrame;
* :func:`make_plugins`: the extractors, transforms and mask of a run, by plugin name (shared by
  ``medfuse extract``, :func:`medfuse.extract` and :class:`medfuse.ImageFeatures`).

Nothing here imports TensorFlow; deep plugins import it themselves when used.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .contracts import Extractor, MaskMaker, Transform
from .engine import MASK_FROM_FILE, load_source, prepare_images, source_name
from .errors import DataError, InvalidInputError
from .imageio import ReadOptions
from .inputs import list_files, list_inputs
from .outputs import atomic_output, write_text

if TYPE_CHECKING:  # pandas is imported only where a DataFrame is taken or returned
    import pandas as pd

__all__ = ["DEFAULT_BLOCKS", "DEFAULT_MASK", "MASK_FROM_FILE", "Plugins", "extract_columns", "extract_table",
           "load_source", "make_plugins", "prepare_images", "provenance", "read_provenance", "source_name",
           "write_columns", "write_table"]

PROVENANCE_KEY = b"medfuse"
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
        needing = [ex.name for _, ex in extractors if getattr(ex, "needs_mask", False)]
        if needing:
            raise InvalidInputError(f"block(s) {needing} need a mask for every image, but the mask is 'none': "
                                    "give a mask plugin (e.g. otsu_cell), or 'file' for the manifest's mask column")
    elif mask_name == MASK_FROM_FILE:
        maker = MASK_FROM_FILE
    else:
        maker = host.create(mask_name, params.get(mask_name), kind="mask")
        if getattr(maker, "trainable", False):
            raise InvalidInputError(f"mask plugin {mask_name!r} must be trained; use `medfuse run`")
    return Plugins(extractors, tlist, maker)


def _plugin_record(plugin: Any) -> dict[str, Any]:
    return {"name": plugin.name, "kind": plugin.kind, "version": plugin.version,
            "params": json.loads(json.dumps(plugin.get_params(deep=False), default=repr)),
            "cache_key": plugin.cache_key()}


def provenance(inputs: str, transforms: Sequence[Transform], mask: MaskMaker | str | None,
               extractors: Sequence[tuple[str, Extractor]], n_images: int, n_errors: int,
               seconds: float, jobs: int, options: ReadOptions | None = None) -> dict[str, Any]:
    """What produced a feature table: versions, plugins with parameters, inputs and timing."""
    from . import __version__
    from .util.versions import library_versions

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
        "environment": library_versions(environment=True),  # as a results file's ``versions``
    }


def _input_columns(inputs: str | Path | pd.DataFrame) -> dict[str, np.ndarray]:
    """``path``, ``read_path`` and, when given, ``mask_path`` and ``label`` of the inputs, as arrays;
    a folder, glob or image is listed without pandas (a manifest is read by it)."""
    if isinstance(inputs, (str, Path)):
        files = list_files(inputs)
        if files is not None:
            listed = np.empty(len(files), object)
            listed[:] = files
            return {"path": listed, "read_path": listed}
        inputs = list_inputs(inputs)
    return {c: inputs[c].to_numpy() for c in ("path", "read_path", "mask_path", "label") if c in inputs.columns}


def extract_columns(inputs: str | Path | pd.DataFrame, extractors: Sequence[tuple[str, Extractor]],
                    transforms: Sequence[Transform] = (), mask: MaskMaker | str | None = None,
                    jobs: int = 1, progress: bool = False, chunk_size: int = 32,
                    options: ReadOptions | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`extract_table`'s table as ``{column: 1-D array}`` (same columns, order and values)
    and its provenance; pandas is not imported unless ``inputs`` is a manifest or a DataFrame."""
    for name, ex in extractors:
        if getattr(ex, "trainable", False):
            raise InvalidInputError(f"block {name!r}: {ex.name} is trainable (it must be fitted inside "
                                    "a training fold); use `medfuse run` / `medfuse compare` instead")
    table = _input_columns(inputs)
    paths = table["read_path"] if "read_path" in table else table["path"]
    mask_paths = table["mask_path"].tolist() if "mask_path" in table else None
    if mask == MASK_FROM_FILE and (mask_paths is None or all(m is None for m in mask_paths)):
        raise InvalidInputError("--mask file needs a CSV manifest with a 'mask' column")
    prep = prepare_images(paths.tolist(), mask_paths, transforms, mask, extractors, jobs,
                          chunk_size, progress, options=options)
    columns: dict[str, np.ndarray] = {"path": paths}
    if "label" in table:
        columns["label"] = table["label"]
    for name, ex in extractors:
        names = [f"{name}.{f}" for f in ex.feature_names()]
        block = prep.arrays[name]
        if block.shape[1] == 0:
            block = np.full((len(paths), len(names)), np.nan, np.float32)
        block = ex.transform(block) if block.ndim == 2 else block
        if block.shape[1] != len(names):
            raise InvalidInputError(f"block {name!r}: {block.shape[1]} values but {len(names)} feature names")
        columns.update({n: block[:, j] for j, n in enumerate(names)})
    errors = np.empty(len(prep.errors), object)
    errors[:] = prep.errors
    columns["error"] = errors
    prov = provenance(str(inputs) if isinstance(inputs, (str, Path)) else "<table>", transforms, mask,
                      extractors, len(paths), sum(bool(e) for e in prep.errors), prep.seconds, jobs, options)
    return columns, prov


def extract_table(inputs: str | Path | pd.DataFrame, extractors: Sequence[tuple[str, Extractor]],
                  transforms: Sequence[Transform] = (), mask: MaskMaker | str | None = None,
                  jobs: int = 1, progress: bool = False, chunk_size: int = 32,
                  options: ReadOptions | None = None) -> tuple[pd.DataFrame, dict]:
    """Feature table of stateless extractors: ``path``, [``label``], ``<block>.<feature>``..., ``error``.

    ``inputs`` is anything :func:`medfuse.inputs.list_inputs` accepts, or a DataFrame with ``path``
    (and ``mask_path``, ``label``); ``path`` holds where each image was read. ``options`` how files are
    decoded (a study's ``reader``; recorded in the provenance). Returns the table and its provenance
    dictionary.
    """
    import pandas as pd

    columns, prov = extract_columns(inputs, extractors, transforms, mask, jobs, progress, chunk_size, options)
    return pd.DataFrame(columns), prov


def write_table(df: pd.DataFrame, out: str | Path, prov: dict[str, Any]) -> list[Path]:
    """Write ``df`` as Parquet (provenance in the schema metadata under ``b"medfuse"``) or CSV
    (provenance in a sidecar ``<out>.json``), each file atomically (never half-written, not even
    on a full disk: :func:`medfuse.outputs.atomic_output`). Returns the files written."""
    return write_columns({str(c): df[c].to_numpy() for c in df.columns}, out, prov)


def write_columns(columns: Mapping[str, np.ndarray], out: str | Path, prov: dict[str, Any]) -> list[Path]:
    """:func:`write_table` of ``{column: 1-D array}`` (the one writer of feature tables; no pandas):
    Parquet through pyarrow (text columns as ``large_string``, NaN as null, as pandas' conversion
    writes them), CSV through :mod:`csv` with pandas' ``to_csv`` cells (float32 at their shortest
    round-trip digits, NaN and missing text as empty cells)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        tbl = pa.table({name: _arrow_column(col) for name, col in columns.items()},
                       metadata={PROVENANCE_KEY: json.dumps(prov).encode()})
        with atomic_output(out) as tmp:
            pq.write_table(tbl, tmp)
        return [out]
    if suffix in (".csv", ".tsv"):
        with atomic_output(out) as tmp:
            _write_csv(columns, tmp, "\t" if suffix == ".tsv" else ",")
        side = write_text(out.with_name(out.name + ".json"), json.dumps(prov, indent=2))
        return [out, side]
    raise InvalidInputError(f"{out}: output must end in .parquet or .csv")


def _is_text(col: np.ndarray) -> bool:
    """An object column of strings (missing values aside): pandas' ``str`` dtype."""
    return col.dtype == object and all(isinstance(v, str) or _missing(v) for v in col) and any(
        isinstance(v, str) for v in col)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _arrow_column(col: np.ndarray) -> Any:
    """``col`` as the Arrow array ``pa.Table.from_pandas`` makes of its DataFrame column. Float and
    text columns are assembled from their buffers: ``pa.array`` imports pandas to inspect its input."""
    import pyarrow as pa

    def validity(valid: np.ndarray) -> Any:
        return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))

    if col.dtype.kind == "f" and col.dtype.itemsize in (4, 8):
        data = np.ascontiguousarray(col)
        valid = ~np.isnan(data)
        kind = pa.float32() if data.dtype.itemsize == 4 else pa.float64()
        return pa.Array.from_buffers(kind, len(data), [validity(valid), pa.py_buffer(data)],
                                     null_count=int((~valid).sum()))
    if _is_text(col):
        encoded = [b"" if _missing(v) else v.encode() for v in col]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        offsets[1:] = np.cumsum([len(e) for e in encoded])
        valid = np.array([not _missing(v) for v in col], bool)
        return pa.Array.from_buffers(pa.large_string(), len(encoded),
                                     [validity(valid), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
                                     null_count=int((~valid).sum()))
    return pa.array(col, from_pandas=True)


def _csv_cells(col: np.ndarray) -> np.ndarray:
    """One column's CSV cells as pandas' ``to_csv`` writes them (default options)."""
    if col.dtype.kind == "f":
        cells = col.astype(str).astype(object)
        cells[np.isnan(col)] = ""
        return cells
    cells = np.asarray(col, dtype=object).copy()
    if col.dtype == object:
        cells[[_missing(v) for v in col]] = ""
    return cells


def _write_csv(columns: Mapping[str, np.ndarray], path: Path, sep: str) -> None:
    """``columns`` as a CSV file (header, then one row per index; pandas' default quoting and line ends)."""
    cells = [_csv_cells(np.asarray(c)) for c in columns.values()]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=sep, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(list(columns))
        writer.writerows(zip(*cells))


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
