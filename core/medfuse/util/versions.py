"""Installed versions of distributions, read from their metadata (nothing is imported)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from collections.abc import Iterable

LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "scikit-image", "xgboost", "keras",
             "tensorflow", "tensorflow-cpu", "joblib", "pillow", "simplejpeg", "pyarrow", "skops",
             "onnx", "onnxruntime", "tf2onnx")
"""The libraries medfuse's results and bundles depend on (recorded beside both)."""


def dist_version(name: str, missing: str | None = None) -> str | None:
    """The installed version of distribution ``name``, or ``missing`` when it is not installed."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return missing


def installed_versions(names: Iterable[str], python: bool = False) -> dict[str, str]:
    """``{distribution: version}`` of the installed ones among ``names`` (absent ones left out);
    with ``python``, also ``python`` and ``platform`` first."""
    out = {"python": platform.python_version(), "platform": platform.platform()} if python else {}
    for name in names:
        version = dist_version(name)
        if version is not None:
            out[name] = version
    return out


def library_versions(environment: bool = False) -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (absent ones left out); with ``environment``, also
    ``python``, ``platform`` and ``medfuse`` first (a results file's ``versions``; a bundle's
    manifest records those under keys of its own)."""
    names = ("medfuse", *LIBRARIES) if environment else LIBRARIES
    return installed_versions(names, python=environment)
