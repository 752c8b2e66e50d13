"""Top-level repository files that medfuse reads at run time (``registry.toml``, the plugin guide
``docs/plugins.md``): in a source checkout (editable install) the file in place, in a built wheel
the copy that ``setup.py`` writes at build time under the same relative path inside ``medfuse/``."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the medfuse package folder


def shipped_file(rel: str) -> Path | None:
    """The file ``rel`` (relative to the repository top level, e.g. ``"docs/plugins.md"``): the
    checkout's own (``<repo>/core/medfuse``) or the copy a wheel carries as ``medfuse/<rel>``;
    None when neither exists."""
    checkout = PACKAGE.parents[1] / rel if PACKAGE.parent.name == "core" else None
    for candidate in (checkout, PACKAGE / rel):
        if candidate is not None and candidate.is_file():
            return candidate
    return None
