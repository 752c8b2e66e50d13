"""Numbers as text in result tables (report.md/html, the terminal summary of ``compare``, model
cards): the one place their rounding, the missing-value mark ``–`` and what counts as missing
(:func:`finite`, also used for the values logged to MLflow) are set."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = "–"


def finite(v: Any) -> float | None:
    """``v`` as a finite float; ``None`` when it is missing: None, NaN, inf or not a number (a string,
    even ``"0.5"``, is text to show, not a number to format)."""
    if isinstance(v, (str, bytes)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _missing(v: Any) -> bool:
    return finite(v) is None


def fmt_number(v: Any, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals (integers as they are); ``–`` for None, NaN or inf."""
    if _missing(v):
        return MISSING
    if isinstance(v, int | np.integer):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def fmt_interval(ci: Any, digits: int = 3) -> str:
    """``[low, high]`` of a two-value interval; empty when it is missing or not finite."""
    if not ci or any(_missing(v) for v in ci):
        return ""
    return f"[{float(ci[0]):.{digits}f}, {float(ci[1]):.{digits}f}]"


def fmt_signed(v: Any) -> str:
    """A difference with its sign (``+0.012``); ``–`` when missing."""
    return MISSING if _missing(v) else f"{float(v):+.3f}"


def fmt_p(v: Any) -> str:
    """A p-value: ``<0.001`` below that, else three decimals; ``–`` when missing."""
    if _missing(v):
        return MISSING
    return "<0.001" if v < 0.001 else f"{float(v):.3f}"
