"""One way to declare a plugin's parameters: ``__init__`` is ``self._store_params(locals())`` and
the docs are the class's numpydoc ``Parameters`` section, inherited along the MRO."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pytest
import sklearn.utils.estimator_checks as ec
from click.testing import CliRunner
from medfuse.contracts import Extractor, split_param_section, store_params
from medfuse.host import get_host
from sklearn.base import clone

HOST = get_host()
BUILTIN = sorted(n for n in HOST.names() if HOST.records[n].ok and HOST.records[n].origin.startswith("medfuse:"))
SKLEARN_NO_DATA = ["check_no_attributes_set_in_init", "check_parameters_default_constructible",
                   "check_estimator_cloneable", "check_get_params_invariance", "check_set_params",
                   "check_do_not_raise_errors_in_init_or_set_params"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_plugins_pass_sklearn_init_checks(name):
    """scikit-learn's own checks of ``__init__`` (stores each parameter, sets nothing else) and of
    ``clone``/``get_params``/``set_params`` hold for every built-in plugin."""
    cls = HOST.records[name].cls
    est = cls(**cls.conformance_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for check in SKLEARN_NO_DATA:
            getattr(ec, check)(name, est)
    assert sorted(vars(cls())) == sorted(cls.param_schema())


class _Mixin:
    """Shared bits.

    Parameters
    ----------
    shared
        Documented once, on the mixin.
    dropped
        Not a parameter of _Scale: left out of its param_docs.
    """


class _Scale(_Mixin, Extractor):
    """Multiplies the mean.

    Longer text.

    Parameters
    ----------
    factor : float
        The multiplier, on two
        lines.

    Notes
    -----
    Not a parameter section.
    """

    name: ClassVar[str] = "kit_scale"
    block: ClassVar[str] = "scale"

    def __init__(self, factor: float = 2.0, shared: int = 1):
        self._store_params(locals())


class _Scale2(_Scale):
    """Adds an offset.

    Parameters
    ----------
    offset
        Added last.
    """

    def __init__(self, factor: float = 2.0, shared: int = 1, offset: float = 0.0):
        self._store_params(locals())


def test_param_docs_come_from_docstrings_along_the_mro():
    assert _Scale.param_docs == {"factor": "The multiplier, on two lines.", "shared": "Documented once, on the mixin."}
    assert _Scale2.param_docs == {**_Scale.param_docs, "offset": "Added last."}
    explicit = type("_Explicit", (_Scale2,), {"param_docs": {}, "__doc__": "No docs."})
    assert explicit.param_docs == {}  # a class's own param_docs table replaces what it inherits
    rest, params = split_param_section(_Scale.__doc__)
    assert list(params) == ["factor"] and "Parameters" not in rest and "Not a parameter section." in rest


def test_store_params_keeps_the_objects_and_clone_works():
    marker = object()
    est = _Scale2(factor=marker, offset=3.0)
    assert est.factor is marker and est.get_params(deep=False) == {"factor": marker, "shared": 1, "offset": 3.0}
    assert clone(_Scale2(factor=5.0)).get_params() == {"factor": 5.0, "shared": 1, "offset": 0.0}
    assert np.isclose(clone(est).offset, 3.0)


def test_store_params_names_a_missing_parameter():
    class _Partial(_Scale):
        def __init__(self, factor: float = 2.0, shared: int = 1, extra: int = 0):
            super().__init__(factor, shared)

    with pytest.raises(TypeError, match=r"_Partial: store_params got no 'extra'.*locals\(\)"):
        _Partial()
    holder = type("Holder", (), {"__init__": lambda self, a=1: store_params(self, {"a": a})})()
    assert holder.a == 1


def test_plugins_show_prints_the_parameters_once():
    from medfuse.cli import main

    out = CliRunner().invoke(main, ["plugins", "show", "logreg"]).output
    assert out.count("Inverse regularisation strength.") == 1 and "----------" not in out


def test_a_parameter_without_default_or_annotation_is_described_as_such() -> None:
    """``param_schema`` reads a missing default as None and a missing annotation as ``any`` (a second
    sentinel once shadowed ``inspect.Parameter.empty`` and leaked it into both)."""
    from medfuse.contracts import Plugin

    class Bare(Plugin):
        kind = "extractor"
        name = "bare"

        def __init__(self, a, b=1):  # noqa: ANN001 - the point of the test
            self._store_params(locals())

    schema = Bare.param_schema()
    assert schema["a"].default is None
    assert (schema["a"].type, schema["b"].type) == ("any", "any")
