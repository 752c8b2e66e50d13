"""Build hook: ship the top-level ``registry.toml`` and the plugin guide ``docs/plugins.md`` inside
the ``medfuse`` package.

``registry.toml`` (built-in plugins and named studies) stays at the repository top level, the one
file developers edit; every project setting lives in ``pyproject.toml``. An editable checkout reads
that file in place; a built wheel (or a wheel built from the sdist) carries a copy as
``medfuse/registry.toml``, written here at build time (see ``medfuse.study.registry_path``). The
plugin guide travels the same way, as ``medfuse/docs/plugins.md`` (``medfuse plugins guide`` prints
it; see ``medfuse.util.shipped``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TOP = Path(__file__).resolve().parent
SHIPPED = ("registry.toml", "docs/plugins.md")  # copied to medfuse/<the same path>


class BuildPyWithRegistry(build_py):
    """``build_py`` that also copies the :data:`SHIPPED` files into the built ``medfuse`` package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level file in place
        for rel in SHIPPED:
            if not (TOP / rel).is_file():
                raise FileNotFoundError(f"{TOP / rel}: missing; medfuse ships it, so it must sit at that path "
                                        "beside pyproject.toml")
            target = Path(self.build_lib) / "medfuse" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(TOP / rel, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, *(str(Path(self.build_lib) / "medfuse" / rel) for rel in SHIPPED)]


setup(cmdclass={"build_py": BuildPyWithRegistry})
