"""The images a command works on: a folder, a glob, one image file or a CSV manifest -> a table.

One resolver for ``medfuse extract`` (:mod:`medfuse.extract`) and ``medfuse score``
(:mod:`medfuse.scoring`, :mod:`medfuse.objectscoring`).
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError
from .imageio import IMAGE_SUFFIXES

if TYPE_CHECKING:  # pandas is imported when a table is built: listing files needs none
    import pandas as pd

MASK_COLUMNS = ("mask_path", "mask")  # a manifest's mask column, first found
MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")


def list_inputs(spec: str | Path) -> pd.DataFrame:
    """The images named by ``spec``, as a DataFrame with ``path`` (as written), ``read_path`` (where
    to read it) and, from a manifest, ``mask_path`` (when it has a ``mask_path`` or ``mask`` column)
    and every other column (``label``, tabular values...).

    ``spec`` is a folder (image files found recursively as loaders list them, hidden files and
    folders skipped: :func:`medfuse.loading.list_images`; sorted), a glob pattern (sorted), one
    image file, or a CSV manifest (``.csv``; ``.tsv`` tab-separated; ``.txt``) with a ``path``
    column, order kept; relative paths in it are relative to the manifest's folder.
    Raises :class:`~medfuse.errors.DataError` when nothing matches or the manifest is unusable.
    """
    import pandas as pd

    files = list_files(spec)
    if files is None:
        return _manifest(Path(str(spec)))
    return pd.DataFrame({"path": files, "read_path": files})


def list_files(spec: str | Path) -> list[str] | None:
    """The image files named by a folder, glob or single-image ``spec`` (as :func:`list_inputs`
    lists them, without building a table: no pandas), or None when ``spec`` is a CSV manifest.
    Raises :class:`~medfuse.errors.DataError` when nothing matches."""
    text = str(spec)
    p = Path(text)
    if p.is_dir():
        from .loading import list_images  # the one folder-listing rule (hidden files and folders skipped)

        files = sorted(str(f) for f in list_images(p, recursive=True)[0])
        if not files:
            raise DataError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) found in this folder")
        return files
    if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
        return None
    if p.is_file():
        return [text]
    if any(ch in text for ch in "*?["):
        files = sorted(f for f in glob.glob(text, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(f"{text}: the glob matches no files")
        return files
    raise DataError(f"{p}: no such folder or file (give a folder, a glob, an image or a CSV manifest)")


def _manifest(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype={"path": str})
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
        raise DataError(f"{path}: unreadable CSV manifest ({exc})") from None
    if "path" not in df.columns:
        raise DataError(f"{path}: a CSV manifest needs a 'path' column; found {', '.join(map(str, df.columns))}")
    if df.empty:
        raise DataError(f"{path}: the CSV manifest lists no paths")
    missing = df["path"].isna().to_numpy() | (df["path"].astype(str).str.strip() == "").to_numpy()
    if missing.any():
        raise DataError(f"{path}: {int(missing.sum())} row(s) with an empty 'path' value "
                        f"(first at row {int(np.flatnonzero(missing)[0]) + 2}); fill them in or delete those rows")
    base = path.parent

    def resolve(v: Any) -> str | None:
        if not isinstance(v, str) or not v.strip():
            return None
        q = Path(v.strip())
        return str(q if q.is_absolute() else base / q)

    out = pd.DataFrame({"path": df["path"].astype(str).tolist(),
                        "read_path": pd.Series([resolve(v) for v in df["path"]], dtype=object)})
    mask_col = next((c for c in MASK_COLUMNS if c in df.columns), None)
    if mask_col:
        out["mask_path"] = pd.Series([resolve(v) for v in df[mask_col]], dtype=object)
    for c in df.columns:
        if c not in ("path", *MASK_COLUMNS):
            out[c] = df[c].to_numpy()
    return out


def inputs_digest(inputs: pd.DataFrame) -> str:
    """A digest of the input list (``path``, ``read_path``, ``mask_path``): a resumed run checks it."""
    h = hashlib.sha1()
    for col in ("path", "read_path", "mask_path"):
        if col in inputs:
            h.update(col.encode())
            h.update("\0".join(map(str, inputs[col].tolist())).encode())
    return h.hexdigest()
