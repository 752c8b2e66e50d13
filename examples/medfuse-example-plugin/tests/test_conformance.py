"""A plugin author's whole test suite: the medfuse conformance kit over the package's plugins."""

from medfuse.testing import parametrize_with_checks
from medfuse_example.plugins import IntensityHistogram, NearestCentroid


@parametrize_with_checks([IntensityHistogram, NearestCentroid])
def test_conformance(plugin, check):
    check(plugin)
