"""What a written bundle carries for others: a model card, the user's permissions, and warnings
when it comes from a newer medfuse or newer major library versions than the ones installed."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from medfuse import __version__
from medfuse.bundle import MANIFEST, BundleWarning, load_bundle, read_manifest, write_bundle
from medfuse.modelcard import MODEL_CARD, render_model_card


class TinyPipeline:
    """The least a FittedPipeline must offer to be bundled: classes, spec, save/load."""

    classes_ = np.asarray(["a", "b"], dtype=object)
    feature_names_ = ["block.x", "block.y"]

    def spec(self) -> dict:
        return {"classifier": {"name": "tiny", "version": "1.0.0", "params": {"c": 1}}}

    def save(self, directory: Path) -> None:
        (Path(directory) / "sub").mkdir()
        (Path(directory) / "sub" / "state.json").write_text("{}")

    @classmethod
    def load(cls, directory: Path, host: object = None) -> TinyPipeline:
        json.loads((Path(directory) / "sub" / "state.json").read_text())
        return cls()


NO_PLUGINS = SimpleNamespace(records={}, failures=[])


def bundle(tmp_path: Path, **manifest) -> Path:
    return write_bundle(TinyPipeline(), tmp_path / "b", manifest={"training_data": {"fingerprint": "f"}, **manifest})


def test_bundle_carries_its_model_card_and_still_loads(tmp_path):
    b = bundle(tmp_path, study={"name": "s", "pipeline": "p", "description": "Toy cells"})
    manifest, _ = read_manifest(b)
    card = (b / MODEL_CARD).read_text(encoding="utf-8")
    assert card == render_model_card(manifest)
    assert card.startswith("# Model card: s / p") and "Toy cells" in card
    assert MODEL_CARD not in manifest["artifacts"]  # documentation, not a checked artifact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_bundle(b, check_plugins=False).classes == ["a", "b"]


def test_bundle_is_written_with_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        b = bundle(tmp_path)
    finally:
        os.umask(old)
    for path in [b, *b.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o755 if path.is_dir() else 0o644
        assert mode == want, f"{path.relative_to(tmp_path)}: mode {oct(mode)}, expected {oct(want)}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def edit_manifest(b: Path, **changes) -> None:
    m = json.loads((b / MANIFEST).read_text())
    for key, value in changes.items():
        m[key] = value if not isinstance(value, dict) else {**m.get(key, {}), **value}
    (b / MANIFEST).write_text(json.dumps(m))


def newer(version: str, part: int = 0) -> str:
    """``version`` with release component ``part`` raised by one (``"1.9.1"`` -> ``"2.0.0"``)."""
    nums = [int(x) for x in version.split(".")[:3]]
    nums[part] += 1
    return ".".join(str(n) if i <= part else "0" for i, n in enumerate(nums))


def test_bundle_from_a_newer_medfuse_warns_with_both_versions(tmp_path):
    b = bundle(tmp_path)
    made = newer(__version__, 1)
    edit_manifest(b, medfuse_version=made)
    with pytest.warns(BundleWarning, match=rf"made by medfuse {made}, newer than the installed medfuse {__version__}"):
        load_bundle(b, check_plugins=False)


def test_bundle_from_a_newer_major_library_version_warns_and_only_then(tmp_path):
    import sklearn
    import xgboost

    b = bundle(tmp_path)
    made = newer(sklearn.__version__)
    edit_manifest(b, medfuse_version=__version__ + ".dev0",  # same release: no medfuse warning
                  libraries={"scikit-learn": made, "xgboost": newer(xgboost.__version__, 1),  # newer minor: fine
                             "numpy": "1.26.4", "not-installed-lib": "99.0"})  # older major; absent: left to loading
    with pytest.warns(BundleWarning) as record:
        load_bundle(b, check_plugins=False)
    messages = [str(w.message) for w in record if issubclass(w.category, BundleWarning)]
    assert len(messages) == 1, messages
    assert f"scikit-learn {made}" in messages[0] and f"installed scikit-learn {sklearn.__version__}" in messages[0]
    assert f"install scikit-learn {made.split('.')[0]}.x" in messages[0]
