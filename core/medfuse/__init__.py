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


# ---- notebook API (docs/api.md): loaded on first use, so `import medfuse` stays light ---------
_API = {"compare": "medfuse.api", "runs": "medfuse.api", "Results": "medfuse.api",
        "ImageFeatures": "medfuse.imagefeatures", "extract": "medfuse.extract"}
__all__ += list(_API)


def __getattr__(name: str) -> Any:
    # medfuse.extract is the module medfuse/extract.py, made callable (it calls medfuse.api.extract),
    # because importing a submodule always rebinds the package attribute of its name
    if name in _API:
        import importlib

        module = importlib.import_module(_API[name])
        return module if name == "extract" else getattr(module, name)
    raise AttributeError(f"module 'medfuse' has no attribute {name!r}")


def get_plugin(name: str, kind: str | None = None, **params: Any) -> Plugin:
    """An instance of the installed plugin ``name`` (built-in or third-party), e.g.
    ``medfuse.get_plugin("morphology", physical_units=True)``; with ``kind`` (``"classifier"``,
    ``"loader"``, ...), only a plugin of that kind is accepted.

    ``params`` are checked as in a study file: an unknown name (with a "did you mean"), a wrong type
    or a bad value raises :class:`~medfuse.errors.PluginError` (or ``ValueError``) naming it.
    """
    from .host import get_host

    plugin = get_host().create(name, params, kind)
    plugin.validate_params()
    return plugin
