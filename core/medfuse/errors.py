"""Exceptions raised by medfuse. Every message names what was wrong and where."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedfuseError(Exception):
    """Base class of every medfuse error."""


class InvalidInputError(MedfuseError, ValueError):
    """An image, mask or table given to a plugin is not usable (shape, dtype, emptiness)."""


class PluginError(MedfuseError):
    """A plugin failed to import, register or declare itself."""


class UnknownPluginError(PluginError, KeyError):
    """A plugin name that no loaded plugin answers to."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StudyError(MedfuseError):
    """A study file is malformed: the message names the file, the key path and what was expected."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}")


class DataError(MedfuseError):
    """A dataset could not be loaded at all (missing folder, wrong columns)."""


class BundleError(MedfuseError):
    """A trained bundle is malformed, tampered with or incompatible."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_exception(exc: BaseException) -> str:
    """One line for a per-image failure: medfuse's own messages as they are, others with their type."""
    if isinstance(exc, MemoryError):
        return f"MemoryError: out of memory{f' ({exc})' if str(exc) else ''}"
    if isinstance(exc, MedfuseError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
