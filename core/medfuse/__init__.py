"""medfuse: classical and deep features for medical-image studies, fused and classified."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl", "load_bundle"]

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Bundle


def load_bundle(path: Any) -> Bundle:
    """Load a trained bundle (see :mod:`medfuse.bundle`). Only load bundles you trust."""
    from .bundle import load_bundle as _load

    return _load(path)
