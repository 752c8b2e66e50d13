"""`medfuse new-plugin NAME`: write a plugin package skeleton whose own tests pass straight away."""

from __future__ import annotations

import re
from pathlib import Path

import click

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "medfuse plugins: {dist}"
requires-python = ">=3.11"
dependencies = ["medfuse"]

# This entry point is all medfuse needs to find the plugins (see `medfuse plugins guide`).
[project.entry-points.medfuse]
{entry} = "{package}.plugins"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

PLUGINS = '''"""The plugins of {dist}; medfuse finds them through the `medfuse` entry point in pyproject.toml."""

from __future__ import annotations

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Extractor


class ChannelMeans(Extractor):
    """Mean of each colour channel over the cell (the whole image when there is no mask).

    Replace the body of ``_prepare`` with your features; keep ``feature_names`` in step with it.

    Parameters
    ----------
    scale
        Divide the means by this (255 gives values in 0..1).
    """

{attributes}
    conformance_params = {{"scale": 255.0}}

    def __init__(self, scale: float = 1.0):
        self._store_params(locals())   # stores each parameter, unchanged: no work, no validation

    def validate_params(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"{{self.name}}: scale must be > 0, got {{self.scale!r}}")

    def feature_names(self) -> list[str]:
        return ["mean_r", "mean_g", "mean_b"]

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        # image: uint8 (H, W, 3) RGB; mask: uint8 (H, W), 0 background, 1 cell, 2 nucleus, or None
        pixels = image[mask > 0] if mask is not None and mask.any() else image.reshape(-1, 3)
        return (pixels.mean(axis=0) / self.scale).astype(np.float32)


@hookimpl
def medfuse_plugins():
    return [ChannelMeans]
'''

TEST = '''"""The medfuse conformance kit over this package's plugins: one test per (plugin, check)."""

from medfuse.testing import parametrize_with_checks
from {package}.plugins import ChannelMeans


@parametrize_with_checks([ChannelMeans])
def test_conformance(plugin, check):
    check(plugin)
'''

README = '''# {dist}

medfuse plugins, made with `medfuse new-plugin {dist}`.

    pip install -e .
    medfuse plugins            # lists {package}_channel_means, origin {dist}:{entry}
    pytest                     # the conformance kit over every plugin

Add plugins to `src/{package}/plugins.py` (return them from `medfuse_plugins()`) and to the list in
`tests/test_conformance.py`. The guide (the contract of each kind, the loader helpers, the cache
rules, the conformance kit) comes with medfuse:

    medfuse plugins guide | less
    python -m pydoc medfuse.contracts   # the base classes, also medfuse.testing and medfuse.loading
'''


def _attributes(package: str) -> str:
    """The extractor's class attributes, their comments in one column whatever the name's length."""
    lines = [(f'name = "{package}_channel_means"', "unique across every installed plugin"),
             (f'block = "{package}"', f"feature columns are {package}.<feature>"),
             ('version = "0.1.0"', "bump it whenever the output changes")]
    width = max(len(code) for code, _ in lines) + 3
    return "\n".join(f"    {code:<{width}}# {comment}" for code, comment in lines)


def write_skeleton(name: str, parent: Path) -> Path:
    """Write the package ``name`` under ``parent``; return its folder. Refuses to overwrite."""
    if not _NAME.match(name):
        raise click.UsageError(f"NAME {name!r}: use lower-case letters, digits, '-' and '_', starting with a "
                               "letter (e.g. medfuse-texture-extras)")
    package = name.replace("-", "_")
    entry = package.removeprefix("medfuse_") or package
    root = parent / name
    if root.exists():
        raise click.ClickException(f"{root} already exists; choose another NAME or --dir")
    fields = {"dist": name, "package": package, "entry": entry, "attributes": _attributes(package)}
    files = {"pyproject.toml": PYPROJECT, "README.md": README, f"src/{package}/__init__.py": '"""{dist}."""\n',
             f"src/{package}/plugins.py": PLUGINS, "tests/test_conformance.py": TEST}
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields), encoding="utf-8")
    return root


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to create the package in.")
def new_plugin(name: str, parent: Path) -> None:
    """Write a plugin package NAME: pyproject.toml with the `medfuse` entry point, an extractor in
    src/<package>/plugins.py, and a conformance test that passes as written.

    \b
    Then:
      cd NAME && pip install -e . && medfuse plugins && pytest
    """
    root = write_skeleton(name, parent)
    click.echo(f"wrote {root}: pyproject.toml, src/{name.replace('-', '_')}/plugins.py, tests/test_conformance.py")
    click.echo(f"next: cd {root} && pip install -e . && pytest")
