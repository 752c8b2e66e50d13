"""Loading a bundle's object graph (a skops file) with an explicit allow-list of types.

skops rebuilds objects without running pickle: every type in the file is named, and loading
refuses types nobody trusted. medfuse trusts, besides skops' own defaults (builtins, numpy,
scipy and scikit-learn types), exactly:

* :data:`LIBRARY_TYPES`: a few more numpy/scikit-learn types that fitted estimators hold;
* :data:`MEDFUSE_TYPES`: medfuse's own fitted-state classes;
* the class of every plugin registered with the host (``host.records[...].cls``): built-in
  plugins and third-party ones alike, since the operator installed them.

Anything else makes :func:`load_object_graph` raise :class:`~medfuse.errors.BundleError` naming
the type and the file, before anything is constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BundleError

LIBRARY_TYPES: tuple[str, ...] = (
    "numpy.dtype",  # SimpleImputer's _fit_dtype / _fill_dtype
    "sklearn.calibration._CalibratedClassifier",  # svm: CalibratedClassifierCV's fitted parts
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",  # svm: the calibration folds (a parameter)
    "sklearn.tree._tree.Tree",  # random_forest, select_tree: the fitted trees (skops' own Tree loader)
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # mlp: the fitted optimiser state
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)
MEDFUSE_TYPES: tuple[str, ...] = (
    "medfuse.pipeline.FittedPipeline",
    "medfuse.pipeline._FittedBlock",
    "medfuse.fusion.BlockPreparer",
    "medfuse.fusion.LateFusion",
    "medfuse.segbundle.FittedSegmenter",
)


def plugin_types(host: Any) -> set[str]:
    """``module.Class`` of every plugin class registered with ``host``."""
    out = set()
    for rec in host.records.values():
        cls = getattr(rec, "cls", None)
        if isinstance(cls, type):
            out.add(f"{cls.__module__}.{cls.__name__}")
    return out


def trusted_types(host: Any = None) -> set[str]:
    """The allow-list: :data:`LIBRARY_TYPES`, :data:`MEDFUSE_TYPES` and the host's plugin classes."""
    if host is None:
        from .host import get_host

        host = get_host()
    return {*LIBRARY_TYPES, *MEDFUSE_TYPES, *plugin_types(host)}


def skops_types(path: str | Path) -> list[str]:
    """Types in skops file ``path`` that skops does not trust by default (sorted)."""
    import skops.io as sio

    try:
        return sorted(sio.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001 - a corrupt zip or schema: one clear message
        raise BundleError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from None


def load_object_graph(path: str | Path, host: Any = None) -> Any:
    """Load skops file ``path``, trusting only :func:`trusted_types`; refuse anything else."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: object graph file not found")
    allowed = trusted_types(host)
    found = skops_types(path)
    bad = [t for t in found if t not in allowed]
    if bad:
        raise BundleError(f"{path}: holds type(s) {', '.join(bad)}, which are not trusted (only numpy, scipy, "
                          "scikit-learn, medfuse and installed plugin classes are); refusing to load it. "
                          "If a plugin provides these types, install that plugin; else retrain the bundle")
    try:
        return sio.load(path, trusted=found)
    except Exception as exc:  # noqa: BLE001 - skops raises many types for a damaged graph
        raise BundleError(f"{path}: loading the object graph failed: {type(exc).__name__}: {exc}") from None
