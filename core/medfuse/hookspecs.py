"""Hook specifications: the whole surface a plugin package can implement.

A plugin package is a module registered under the ``medfuse`` entry-point group::

    [project.entry-points.medfuse]
    my_plugins = "my_package.medfuse_plugins"

and that module answers one or more hooks with ``@medfuse.hookimpl``.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "medfuse"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def medfuse_plugins() -> list[type]:
    """Return the plugin classes (subclasses of ``medfuse.contracts.Plugin``) this module provides."""


@hookspec
def medfuse_studies() -> list[dict[str, Any]]:
    """Return study tables (dicts shaped like a ``[studies.NAME]`` TOML table, with a ``name`` key)."""
