"""Every discovered plugin (built-in and the installed example package) runs the conformance kit."""

from __future__ import annotations

import tomllib

import pytest
from medfuse.host import get_host
from medfuse.study import registry_path
from medfuse.testing import COMMON_CHECKS, KIND_CHECKS, iter_checks, parametrize_with_checks

HOST = get_host()
PLUGINS = [HOST.records[n].cls for n in HOST.names() if HOST.records[n].ok]


@parametrize_with_checks(PLUGINS)
def test_conformance(plugin, check):
    check(plugin)


COMMON = ["check_declaration", "check_params_roundtrip", "check_validate_params", "check_set_params"]


def test_every_builtin_plugin_is_catalogued_and_checked():
    """registry.toml's catalogue and the discovered built-ins must agree, and each gets the common
    checks and every check of its kind (no built-in declares tags that skip any; a classifier that
    does not take a feature matrix has no wrong-feature-count check), and no other kind's."""
    catalogue = tomllib.loads(registry_path().read_text())["plugins"]
    listed = {name for names in catalogue.values() for name in names}
    builtin = {n for n in HOST.names() if HOST.records[n].origin.startswith("medfuse:")}
    assert builtin == listed, f"not catalogued: {sorted(builtin - listed)}; missing: {sorted(listed - builtin)}"
    checked = {cls.name for cls in PLUGINS}
    assert builtin <= checked
    for n in sorted(builtin):
        cls = HOST.records[n].cls
        got = [check.__name__ for check in iter_checks(cls)]
        assert got[:4] == COMMON == [c.__name__ for c in COMMON_CHECKS], f"{n} gets {got}"
        own = [c.__name__ for c in KIND_CHECKS[cls.kind]
               if c.__name__ != "check_classifier_bad_input" or cls.input == "features"]
        assert got[4:] == own, f"{n} ({cls.kind}) gets {got}"


def test_example_package_is_discovered():
    if "intensity_histogram" not in HOST.records:
        pytest.skip("examples/medfuse-example-plugin is not installed (make test installs it)")
    assert HOST.records["intensity_histogram"].origin == "medfuse-example-plugin:example"
