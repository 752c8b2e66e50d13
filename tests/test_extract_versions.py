"""A feature table's provenance records the environment as results files do: one list of libraries
(medfuse.util.versions.LIBRARIES), not four of its own."""

from __future__ import annotations

from medfuse.extract import provenance
from medfuse.util.versions import LIBRARIES, library_versions


def test_provenance_environment_is_the_shared_library_list():
    env = provenance("images", [], None, [], n_images=0, n_errors=0, seconds=0.0, jobs=1)["environment"]
    assert env == library_versions(environment=True)
    assert {"python", "platform", "scipy", "pillow"} <= set(env) and set(env) <= {"python", "platform", "medfuse",
                                                                                  *LIBRARIES}
