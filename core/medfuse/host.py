"""The plugin host: discovers plugin modules through entry points and keeps a catalogue.

A plugin module that fails to import, to register its hooks or to declare its plugins is
recorded as failed, with the error, and the others load; ``strict=True`` makes it fatal.
Third-party modules can be limited with ``MEDFUSE_PLUGINS=name1,name2`` (entry-point names);
the built-in modules (distribution ``medfuse``) always load.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .contracts import BASES, KINDS, Plugin
from .errors import PluginError, UnknownPluginError, did_you_mean

ENTRY_POINT_GROUP = "medfuse"
ALLOW_ENV = "MEDFUSE_PLUGINS"
BUILTIN_DIST = "medfuse"
_SEMVER = re.compile(r"^\d+\.\d+\.\d+")


@dataclass
class PluginRecord:
    """One plugin (or one failed plugin module) as the host sees it."""

    name: str
    kind: str
    version: str
    origin: str  # "<distribution>:<entry point>"
    status: str  # "ok", "failed", "missing extras"
    error: str = ""
    cls: type[Plugin] | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class PluginHost:
    """Catalogue of every discovered plugin; create instances by name with validated params."""

    def __init__(self, strict: bool = False, entry_points: list[Any] | None = None):
        self.strict = strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.failures: list[PluginRecord] = []
        self.studies: list[tuple[str, dict[str, Any]]] = []
        self.skipped: list[str] = []
        eps = entry_points if entry_points is not None else list(md.entry_points(group=ENTRY_POINT_GROUP))
        for ep in sorted(eps, key=lambda e: (self._dist(e) != BUILTIN_DIST, e.name)):
            self._load_entry_point(ep)

    @staticmethod
    def _dist(ep: Any) -> str:
        dist = getattr(ep, "dist", None)
        return dist.name if dist is not None else "?"

    def _fail(self, name: str, origin: str, error: str, kind: str = "?") -> None:
        record = PluginRecord(name, kind, "?", origin, "failed", error)
        self.failures.append(record)
        if self.strict:
            raise PluginError(f"plugin {name!r} from {origin}: {error}")

    def _load_entry_point(self, ep: Any) -> None:
        dist = self._dist(ep)
        origin = f"{dist}:{ep.name}"
        allowed = os.environ.get(ALLOW_ENV)
        if dist != BUILTIN_DIST and allowed is not None and ep.name not in {
                a.strip() for a in allowed.split(",") if a.strip()}:
            self.skipped.append(origin)
            return
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import error is reported, not raised
            self._fail(ep.name, origin, f"import failed: {type(exc).__name__}: {exc}")
            return
        try:
            self.pm.register(module, name=origin)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors and clashes
            self._fail(ep.name, origin, f"registration failed: {exc}")
            return
        # pluggy accepts hooks it has no spec for; a misspelt hook must not be ignored silently.
        implemented = [name for name in dir(module) if self.pm.parse_hookimpl_opts(module, name) is not None]
        unknown = [name for name in implemented if not hasattr(hookspecs, name)]
        if unknown or not implemented:
            self.pm.unregister(name=origin)
            why = (f"unknown hook(s) {', '.join(unknown)}; known: medfuse_plugins, medfuse_studies" if unknown
                   else "no @medfuse.hookimpl functions found (forgot the decorator?)")
            self._fail(ep.name, origin, f"registration failed: {why}")
            return
        for impl in self.pm.hook.medfuse_plugins.get_hookimpls():
            if impl.plugin_name == origin:
                self._collect_plugins(impl.function, origin, ep.name)
        for impl in self.pm.hook.medfuse_studies.get_hookimpls():
            if impl.plugin_name == origin:
                try:
                    for study in impl.function() or []:
                        self.studies.append((origin, study))
                except Exception as exc:  # noqa: BLE001
                    self._fail(ep.name, origin, f"medfuse_studies() raised {type(exc).__name__}: {exc}")

    def _collect_plugins(self, hook: Any, origin: str, ep_name: str) -> None:
        try:
            classes = list(hook() or [])
        except Exception as exc:  # noqa: BLE001
            self._fail(ep_name, origin, f"medfuse_plugins() raised {type(exc).__name__}: {exc}\n"
                       + traceback.format_exc(limit=3))
            return
        for cls in classes:
            problem = declaration_problem(cls)
            label = getattr(cls, "name", None) or getattr(cls, "__name__", repr(cls))
            if problem:
                self._fail(label, origin, f"invalid declaration: {problem}", getattr(cls, "kind", "?"))
                continue
            if cls.name in self.records:
                other = self.records[cls.name]
                self._fail(cls.name, origin, f"name clash: {cls.name!r} is declared by both "
                           f"{other.origin} and {origin}", cls.kind)
                continue
            missing = [m for m in cls.extras if importlib.util.find_spec(m.split(".")[0]) is None]
            status = "missing extras" if missing else "ok"
            error = f"needs: pip install {' '.join(missing)}" if missing else ""
            self.records[cls.name] = PluginRecord(cls.name, cls.kind, cls.version, origin, status,
                                                  error, cls, missing)

    # ---- queries -------------------------------------------------------------------------
    def names(self, kind: str | None = None) -> list[str]:
        return sorted(n for n, r in self.records.items() if kind is None or r.kind == kind)

    def get(self, name: str, kind: str | None = None) -> type[Plugin]:
        """The plugin class called ``name`` (of ``kind``); a clear error when unknown."""
        record = self.records.get(name)
        if record is None or (kind is not None and record.kind != kind):
            choices = self.names(kind)
            what = f"{kind} plugin" if kind else "plugin"
            failed = [f for f in self.failures if f.name == name]
            hint = f"; it failed to load: {failed[0].error}" if failed else did_you_mean(name, choices)
            raise UnknownPluginError(f"unknown {what} {name!r}{hint}. Available: {', '.join(choices)}")
        if not record.ok:
            raise PluginError(f"plugin {name!r} is not usable: {record.error}")
        assert record.cls is not None
        return record.cls

    def create(self, name: str, params: dict[str, Any] | None = None, kind: str | None = None) -> Plugin:
        """Instantiate plugin ``name`` with ``params`` checked against its schema."""
        cls = self.get(name, kind)
        params = dict(params or {})
        check_params(cls, params, where=f"plugin {name!r}")
        return cls(**params)


def check_params(cls: type[Plugin], params: dict[str, Any], where: str) -> None:
    """Raise ``PluginError`` for an unknown parameter (with a suggestion) or a wrong type."""
    schema = cls.param_schema()
    for key, value in params.items():
        if key not in schema:
            raise PluginError(f"{where}: unknown parameter {key!r}{did_you_mean(key, schema)}; "
                              f"accepted: {', '.join(schema)}")
        expected = schema[key].type
        if not _type_ok(value, expected):
            raise PluginError(f"{where}: parameter {key!r} expects {expected}, got {value!r}")


_SIMPLE = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _type_ok(value: Any, annotation: str) -> bool:
    """Lenient check of TOML values against a type hint written as text."""
    if value is None:
        return True
    options = [a.strip() for a in annotation.replace("Optional[", "").rstrip("]").split("|")]
    for option in options:
        base = option.split("[")[0]
        if base in ("any", "Any", "None") or base not in (*_SIMPLE, "list", "tuple", "dict"):
            return True
        if base in _SIMPLE:
            if isinstance(value, bool) and base != "bool":
                continue
            if isinstance(value, _SIMPLE[base]):
                return True
        elif base in ("list", "tuple") and isinstance(value, list | tuple) or base == "dict" and isinstance(value, dict):
            return True
    return False


def declaration_problem(cls: Any) -> str:
    """Why ``cls`` is not a valid plugin declaration, or '' when it is."""
    if not isinstance(cls, type) or not issubclass(cls, Plugin):
        return f"{cls!r} is not a subclass of medfuse.contracts.Plugin"
    if not cls.name or not isinstance(cls.name, str):
        return f"{cls.__name__} has no 'name'"
    if cls.kind not in KINDS:
        return f"{cls.__name__}.kind is {cls.kind!r}; expected one of {', '.join(KINDS)}"
    if not issubclass(cls, BASES[cls.kind]):
        return f"{cls.__name__} declares kind {cls.kind!r} but does not subclass {BASES[cls.kind].__name__}"
    if not isinstance(cls.version, str) or not _SEMVER.match(cls.version):
        return f"{cls.__name__}.version {cls.version!r} is not a semantic version like '1.2.0'"
    if cls.kind in ("extractor", "selector") and not getattr(cls, "block", ""):
        return f"{cls.__name__} has no 'block' name"
    try:
        cls.param_schema()
    except Exception as exc:  # noqa: BLE001
        return f"parameter schema unreadable: {exc}"
    return ""


_HOST: dict[bool, PluginHost] = {}


def get_host(strict: bool = False, refresh: bool = False) -> PluginHost:
    """The process-wide plugin host (built once; ``refresh=True`` rediscovers)."""
    if refresh or strict not in _HOST:
        _HOST[strict] = PluginHost(strict=strict)
    return _HOST[strict]
