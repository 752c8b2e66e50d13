"""Every discovered plugin (built-in and the installed example package) runs the conformance kit."""

from __future__ import annotations

import tomllib

import pytest
from medfuse.host import get_host
from medfuse.study import registry_path
from medfuse.testing import iter_checks, parametrize_with_checks

HOST = get_host()
PLUGINS = [HOST.records[n].cls for n in HOST.names() if HOST.records[n].ok]


@parametrize_with_checks(PLUGINS)
def test_conformance(plugin, check):
    check(plugin)


def test_every_builtin_plugin_is_catalogued_and_checked():
    """registry.toml's catalogue and the discovered built-ins must agree, and each gets checks."""
    catalogue = tomllib.loads(registry_path().read_text())["plugins"]
    listed = {name for names in catalogue.values() for name in names}
    builtin = {n for n in HOST.names() if HOST.records[n].origin.startswith("medfuse:")}
    assert builtin == listed, f"not catalogued: {sorted(builtin - listed)}; missing: {sorted(listed - builtin)}"
    checked = {cls.name for cls in PLUGINS}
    assert builtin <= checked
    assert all(list(iter_checks(HOST.records[n].cls)) for n in builtin)


def test_example_package_is_discovered():
    if "intensity_histogram" not in HOST.records:
        pytest.skip("examples/medfuse-example-plugin is not installed (make test installs it)")
    assert HOST.records["intensity_histogram"].origin == "medfuse-example-plugin:example"
