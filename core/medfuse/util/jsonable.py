"""Plain JSON values from medfuse's objects: the one conversion used by manifests, specs and reports."""

from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any, finite: bool = False) -> Any:
    """``value`` as JSON types: dataclasses and mappings as dicts (keys as text), sequences and sets
    and arrays as lists, numpy scalars as Python numbers, paths as text, anything else as its
    ``repr``. ``finite=True`` turns NaN and infinities into ``None`` (for ``allow_nan=False``)."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value), finite)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, finite) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v, finite) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), finite)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return None if finite and not math.isfinite(v) else v
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)
