"""Documentation that must not drift from the code."""

from __future__ import annotations

from pathlib import Path

from medfuse import hookspecs
from medfuse.studydocs import render

REPO = Path(__file__).resolve().parents[1]


def test_study_reference_matches_schema():
    assert (REPO / "docs/studies.md").read_text() == render(), \
        "docs/studies.md is stale: python -m medfuse.studydocs > docs/studies.md"


def test_every_hook_is_documented_and_tested():
    hooks = [n for n in dir(hookspecs) if n.startswith("medfuse_")]
    guide = (REPO / "docs/plugins.md").read_text()
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    for hook in hooks:
        assert getattr(hookspecs, hook).__doc__, f"hook {hook} has no docstring"
        assert hook in guide, f"hook {hook} is not documented in docs/plugins.md"
        assert hook in tests.replace("test_every_hook", ""), f"hook {hook} has no test"
