"""Where the data lives: the root folder that study paths are relative to.

Order: an explicit ``--data ROOT``, then ``$MEDFUSE_DATA``, then ``<repo>/../shared/datasets``
(the development layout, next to a source checkout). Nothing found is an error saying how to
set it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

DATA_ENV = "MEDFUSE_DATA"


def _repo_default() -> Path:
    """``<repo>/../shared/datasets`` for a source checkout (``core/medfuse/`` inside ``<repo>``)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def resolve_data_root(option: str | os.PathLike[str] | None = None, required: bool = True) -> Path | None:
    """The data root folder.

    Parameters
    ----------
    option : path, optional
        Value of ``--data``; wins when given and must be an existing folder.
    required : bool
        Raise :class:`~medfuse.errors.DataError` when nothing is found (else return ``None``).
    """
    if option:
        root = Path(option).expanduser()
        if not root.is_dir():
            raise DataError(f"--data {option}: not a folder")
        return root.resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(f"${DATA_ENV}={env}: not a folder")
        return root.resolve()
    fallback = _repo_default()
    if fallback.is_dir():
        return fallback
    if required:
        raise DataError(f"no data root: pass --data ROOT or set {DATA_ENV}=ROOT, where ROOT holds the study's "
                        "data folders (study paths are relative to it)")
    return None
