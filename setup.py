"""Build hook: ship the top-level ``registry.toml`` inside the ``medfuse`` package.

``registry.toml`` (built-in plugins and named studies) stays at the repository top level, the one
file developers edit; every project setting lives in ``pyproject.toml``. An editable checkout reads
that file in place; a built wheel (or a wheel built from the sdist) carries a copy as
``medfuse/registry.toml``, written here at build time (see ``medfuse.study.registry_path``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

REGISTRY = Path(__file__).resolve().parent / "registry.toml"
PACKAGED = Path("medfuse") / "registry.toml"


class BuildPyWithRegistry(build_py):
    """``build_py`` that also copies ``registry.toml`` into the built ``medfuse`` package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level file in place
        if not REGISTRY.is_file():
            raise FileNotFoundError(f"{REGISTRY}: the built-in registry is missing; it must sit beside pyproject.toml")
        target = Path(self.build_lib) / PACKAGED
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REGISTRY, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, str(Path(self.build_lib) / PACKAGED)]


setup(cmdclass={"build_py": BuildPyWithRegistry})
