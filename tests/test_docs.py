"""Documentation that must not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from medfuse import hookspecs
from medfuse.studydocs import render

REPO = Path(__file__).resolve().parents[1]


def test_study_reference_matches_schema():
    assert (REPO / "docs/studies.md").read_text() == render(), \
        "docs/studies.md is stale: python -m medfuse.studydocs > docs/studies.md"


def hooks_without_test(hooks: list[str], test_sources: dict[str, str]) -> list[str]:
    """Hooks that no test implements: a test implements ``medfuse_x`` by defining a function of that
    name (``def medfuse_x(``), as a plugin module does. Mentions such as ``medfuse_plugins.texture``
    (the package) or this check's own file do not count."""
    implemented = {m.group(1) for name, text in test_sources.items() if name != Path(__file__).name
                   for m in re.finditer(r"^\s*def (medfuse_\w+)\(", text, re.MULTILINE)}
    return [hook for hook in hooks if hook not in implemented]


def test_every_hook_is_documented_and_tested():
    hooks = [n for n in dir(hookspecs) if n.startswith("medfuse_")]
    guide = (REPO / "docs/plugins.md").read_text()
    sources = {p.name: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    for hook in hooks:
        assert getattr(hookspecs, hook).__doc__, f"hook {hook} has no docstring"
        assert hook in guide, f"hook {hook} is not documented in docs/plugins.md"
    assert not hooks_without_test(hooks, sources), \
        f"hooks no test implements (def HOOK(...) in tests/test_*.py): {hooks_without_test(hooks, sources)}"


def test_hook_test_check_is_not_fooled_by_the_package_name():
    """``medfuse_plugins`` is also the built-in package's name: importing it is not a test of the hook."""
    sources = {"test_a.py": "from medfuse_plugins.texture import Texture\n",
               "test_b.py": "class M:\n    @hookimpl\n    def medfuse_studies(self):\n        return []\n"}
    assert hooks_without_test(["medfuse_plugins", "medfuse_studies"], sources) == ["medfuse_plugins"]
