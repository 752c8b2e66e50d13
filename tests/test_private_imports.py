"""No module reaches into another module's private names (``from .x import _y``): a helper two
modules share is public where it lives. ``LEFT`` (what was left to clean up) is empty: keep it so."""

from __future__ import annotations

import ast
from pathlib import Path

import medfuse
import medfuse_plugins

LEFT: set[tuple[str, str, str]] = set()  # (importing file, module, private name) still to be made public


def private_imports(package: Path, top: str) -> set[tuple[str, str, str]]:
    """``(file relative to package, imported module's last part, name)`` for every private name
    imported from a module of the same package (relative imports or ``top``.*); the package's
    private modules themselves (``from . import _keras``) are its to import."""
    found = set()
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").split(".")[0] == top):
                continue
            module = (node.module or "").rsplit(".", 1)[-1]
            found |= {(source.relative_to(package).as_posix(), module, a.name) for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")
                      and not (package / f"{a.name}.py").is_file()}  # a private module of the package
    return found


def test_no_new_private_imports_across_modules():
    found = (private_imports(Path(medfuse.__file__).parent, "medfuse")
             | private_imports(Path(medfuse_plugins.__file__).parent, "medfuse_plugins"))
    assert found <= LEFT, f"private names imported from another module: {sorted(found - LEFT)}"
