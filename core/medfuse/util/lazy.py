"""A module imported on first attribute access: plugin modules keep ``pd.DataFrame`` in their code
while registering them (``medfuse --help``, the plugin host, ``medfuse extract``) imports no pandas."""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for module ``name``; the first attribute read imports it (later reads go to it)."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        return getattr(module, attr)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name``: ``pd = lazy_module("pandas")`` imports pandas on ``pd.X``."""
    return LazyModule(name)
