"""medfuse: classical and deep features for medical-image studies, fused and classified."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "get_plugin", "hookimpl", "load_bundle"]

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Bundle
    from .contracts import Plugin


def load_bundle(path: Any) -> Bundle:
    """Load a trained bundle (see :mod:`medfuse.bundle`). Only load bundles you trust."""
    from .bundle import load_bundle as _load

    return _load(path)


def get_plugin(name: str, **params: Any) -> Plugin:
    """An instance of the installed plugin ``name`` (built-in or third-party), e.g.
    ``medfuse.get_plugin("morphology", physical_units=True)``.

    ``params`` are checked as in a study file: an unknown name (with a "did you mean"), a wrong type
    or a bad value raises :class:`~medfuse.errors.PluginError` (or ``ValueError``) naming it.
    """
    from .host import get_host

    plugin = get_host().create(name, params)
    plugin.validate_params()
    return plugin
