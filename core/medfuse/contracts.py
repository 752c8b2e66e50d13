"""The plugin contracts: one base class per plugin kind, following scikit-learn conventions.

Rules every plugin follows (checked by :mod:`medfuse.testing`):

* ``__init__`` only stores its keyword parameters (no work, no validation);
  every parameter has a default, a type hint and, ideally, an entry in ``param_docs``.
* ``fit`` returns ``self``; learned attributes end in ``_``.
* Randomness comes from a ``random_state`` parameter (an int seed) and nowhere else.
* Class attributes declare the plugin: ``name`` (unique), ``kind``, ``version`` (semver),
  ``extras`` (import names of optional dependencies) and ``conformance_params``
  (small, fast parameters the conformance kit uses).

Canonical data passed between plugins:

* **image**: ``uint8`` array of shape ``(H, W, 3)``, RGB. Grey images are replicated to three
  channels; transforms that change colour space (HSV, Lab) still return ``uint8 (H, W, 3)``.
  That is what a plugin gets by default (``input_dtype = "uint8"``): the engine keeps an image
  at its stored depth (a :class:`~medfuse.intensity.SourceImage`, for files deeper than 8 bits or
  with other than 3 channels) and makes the 8-bit view by the reader's rule
  (:func:`~medfuse.intensity.as_uint8`) only for a plugin that takes ``uint8``. A plugin declaring
  ``input_dtype = "native"`` gets the image as decoded: ``(H, W, C)`` in its stored dtype and
  range (plain ``uint8 (H, W, 3)`` for 8-bit files). A block's ``channels`` (the study's
  ``blocks.NAME.channels``, set as the plugin's ``input_channels``) selects channels first.
* **mask**: ``uint8`` array of shape ``(H, W)``: 0 background, 1 cell (cytoplasm), 2 nucleus.
  Nucleus pixels belong to the cell, so ``mask > 0`` is the whole cell. ``None`` means no mask
  (an extractor that cannot work without one declares ``needs_mask = True``).
* **feature block**: ``float32`` array ``(n_samples, n_features)`` with column names
  ``<block>.<feature>`` from ``get_feature_names_out()``, identical across calls.

:class:`Plugin` implements scikit-learn's estimator protocol itself (``get_params``,
``set_params``, ``clone``, ``__sklearn_tags__``, ``_validate_params``) and imports neither
scikit-learn nor pandas: a command that only extracts features does not pay their import
(about a second of start-up); the methods that need them import them when called.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import inspect
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import InvalidInputError
from .intensity import as_uint8, keep_rule, select_channels

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

KINDS = ("transform", "extractor", "selector", "mask", "classifier", "loader")
INPUT_DTYPES = ("uint8", "native")  # what a plugin's ``input_dtype`` may say (see the module docstring)

_MISSING = inspect.Parameter.empty
_SEPARATE: contextvars.ContextVar[bool] = contextvars.ContextVar("medfuse_separate_artifacts", default=False)


@contextlib.contextmanager
def saving_state_separately() -> Iterator[None]:
    """Inside this block (a bundle's skops dump), plugins' ``__getstate__`` leaves out what their
    :meth:`Plugin.save_artifacts` writes natively (networks, boosters): a bundle's object graph
    holds plain data only. Outside it, ``__getstate__`` keeps everything (pickle, joblib)."""
    token = _SEPARATE.set(True)
    try:
        yield
    finally:
        _SEPARATE.reset(token)


def state_saved_separately() -> bool:
    """True inside :func:`saving_state_separately` (see there)."""
    return _SEPARATE.get()


@dataclass(frozen=True)
class ParamSpec:
    """One constructor parameter of a plugin: its default, type and documentation."""

    name: str
    default: Any
    type: str
    doc: str = ""


def _type_name(annotation: Any) -> str:
    if annotation is _MISSING:
        return "any"
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", str(annotation))


_NO_DEFAULT = object()  # not a default of any parameter (``__getattr__``'s lookup)


def store_params(estimator: Any, given: dict[str, Any]) -> None:
    """Store each ``__init__`` parameter of ``estimator`` under its own name, unchanged: the whole
    body of an estimator's ``__init__`` is ``self._store_params(locals())`` (plugins) or
    ``store_params(self, locals())`` (other scikit-learn estimators). That is scikit-learn's rule
    (``__init__`` stores its parameters and does nothing else; ``get_params`` reads them back by
    the names in the signature, ``clone`` rebuilds from them), written once."""
    cls = type(estimator)
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in given:
            raise TypeError(f"{cls.__name__}: store_params got no {p.name!r}; call it as the whole body of "
                            f"{cls.__name__}.__init__, with that __init__'s locals()")
        setattr(estimator, p.name, given[p.name])


_RULE = re.compile(r"\s*-{3,}\s*$")


def split_param_section(doc: str | None) -> tuple[str, dict[str, str]]:
    """A numpydoc docstring without its ``Parameters`` section, and that section parsed:
    ``{name: description}`` (a name line ``name`` or ``name : type``, then its indented
    description, whose lines are joined by single spaces)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    heads = [i for i in range(len(lines) - 1) if _RULE.match(lines[i + 1]) and lines[i].strip()]
    start = next((i for i in heads if lines[i].strip() == "Parameters"), None)
    if start is None:
        return "\n".join(lines), {}
    end = next((i for i in heads if i > start), len(lines))
    params: dict[str, list[str]] = {}
    names: list[str] = []
    for line in lines[start + 2:end]:
        if line.strip() and not line[0].isspace():
            names = [n.strip() for n in line.split(" : ")[0].split(",")]
            params.update((n, []) for n in names)
        elif line.strip():
            for n in names:
                params[n].append(line.strip())
    rest = "\n".join(lines[:start] + lines[end:]).strip()
    return rest, {n: " ".join(words) for n, words in params.items()}


def _gather_param_docs(cls: type) -> dict[str, str]:
    """``cls``'s parameter docs: along the MRO (bases first), a class's own ``param_docs`` table
    replaces what came before and its docstring's ``Parameters`` section adds to it; unless ``cls``
    sets ``param_docs`` itself, only its ``__init__`` parameters are kept."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "param_docs" in vars(klass):
            docs = dict(vars(klass)["param_docs"])
        docs.update(split_param_section(vars(klass).get("__doc__"))[1])
    if "param_docs" in vars(cls):
        return docs
    names = set(inspect.signature(cls.__init__).parameters)
    return {k: v for k, v in docs.items() if k in names}


class _Estimator:
    """scikit-learn's estimator protocol (as ``sklearn.base.BaseEstimator`` 1.x implements it),
    without importing scikit-learn: parameters are the ``__init__`` arguments, stored unchanged;
    ``sklearn.base.clone`` rebuilds from ``get_params(deep=False)``."""

    _store_params = store_params

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The ``__init__`` parameter names, sorted (no ``*args``)."""
        init = cls.__init__
        if init is object.__init__:
            return []
        params = [p for p in inspect.signature(init).parameters.values()
                  if p.name != "self" and p.kind != p.VAR_KEYWORD]
        for p in params:
            if p.kind == p.VAR_POSITIONAL:
                raise RuntimeError(f"{cls.__name__}: estimators must name their parameters in the signature "
                                   f"of __init__ (no *args); got {inspect.signature(init)}")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameter names mapped to their values (``deep``: also ``<param>__<sub>`` of estimators)."""
        out: dict[str, Any] = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params: Any) -> Any:
        """Set parameters (``<param>__<sub>`` for nested estimators); returns ``self``."""
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = defaultdict(dict)
        for key, value in params.items():
            key, delim, sub_key = key.partition("__")
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {self}. "
                                 f"Valid parameters are: {self._get_param_names()!r}.")
            if delim:
                nested[key][sub_key] = value
            else:
                setattr(self, key, value)
                valid[key] = value
        for key, sub_params in nested.items():
            valid[key].set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        """``Name(param=value, ...)`` with the parameters whose repr differs from their default's
        (scikit-learn's ``print_changed_only``)."""
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items()
                 if k not in defaults or repr(v) != repr(defaults[k])]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False), transformer_tags=None,
                    regressor_tags=None, classifier_tags=None)

    def _validate_params(self) -> None:
        """scikit-learn's validation of ``_parameter_constraints`` (see ``sklearn.utils._param_validation``)."""
        from sklearn.utils._param_validation import validate_parameter_constraints

        validate_parameter_constraints(self._parameter_constraints, self.get_params(deep=False),
                                       caller_name=type(self).__name__)


class Plugin(_Estimator):
    """Base of every medfuse plugin; a scikit-learn estimator with declared metadata."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    extras: ClassVar[tuple[str, ...]] = ()
    param_docs: ClassVar[dict[str, str]] = {}
    conformance_params: ClassVar[dict[str, Any]] = {}
    input_dtype: ClassVar[str] = "uint8"
    """Images this plugin takes (see the module docstring): ``"uint8"`` (the 8-bit RGB view) or
    ``"native"`` (the decoded image at its stored depth, ``(H, W, C)``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``param_docs`` comes from the class's numpydoc ``Parameters`` section (scikit-learn's
        convention) and its bases' (see :func:`_gather_param_docs`)."""
        super().__init_subclass__(**kwargs)
        cls.param_docs = _gather_param_docs(cls)

    def input_image(self, image: Any, where: str = "image") -> np.ndarray:
        """``image`` as this plugin takes it: its ``input_channels`` (a block's ``channels``)
        selected, then the 8-bit view unless ``input_dtype`` is ``"native"`` (the one conversion
        point, :func:`medfuse.intensity.as_uint8`)."""
        if self.input_dtype not in INPUT_DTYPES:
            raise InvalidInputError(f"{type(self).__name__}.input_dtype = {self.input_dtype!r}: expected one of "
                                    f"{', '.join(map(repr, INPUT_DTYPES))}")
        channels = getattr(self, "input_channels", None)
        label = getattr(self, "input_channels_where", None) or f"{self.name}: input_channels"
        if self.input_dtype == "native":
            arr = check_native_image(image, where)
            return select_channels(arr, channels, label) if channels is not None else arr
        if channels is not None or getattr(image, "view_rule", None) is not None:
            if not isinstance(image, np.ndarray):
                raise InvalidInputError(f"{where}: expected a numpy array, got {type(image).__name__}")
            try:
                image = as_uint8(image, channels, label)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None
        return check_image(image, where)

    def __sklearn_clone__(self):
        """sklearn's clone, keeping a block's ``input_channels`` (set by the engine, not a parameter)."""
        from sklearn.base import _clone_parametrized  # what BaseEstimator.__sklearn_clone__ calls

        est = _clone_parametrized(self)
        for attr in ("input_channels", "input_channels_where"):
            if getattr(self, attr, None) is not None:
                setattr(est, attr, getattr(self, attr))
        return est

    def __getattr__(self, name: str) -> Any:
        """A constructor parameter missing from a restored state (a bundle saved before the
        plugin gained that parameter) reads as its default, so older bundles keep loading."""
        if not name.startswith("_"):
            spec = type(self)._init_defaults().get(name, _NO_DEFAULT)
            if spec is not _NO_DEFAULT:
                return spec
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def _init_defaults(cls) -> dict[str, Any]:
        """``__init__`` parameters that have a default, with it."""
        sig = inspect.signature(cls.__init__)
        return {p.name: p.default for p in list(sig.parameters.values())[1:]
                if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}

    @classmethod
    def param_schema(cls) -> dict[str, ParamSpec]:
        """Parameters read from ``__init__``'s signature, with defaults, types and docs."""
        sig = inspect.signature(cls.__init__)
        specs: dict[str, ParamSpec] = {}
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = None if p.default is _MISSING else p.default
            specs[p.name] = ParamSpec(
                p.name, default, _type_name(p.annotation), cls.param_docs.get(p.name, "")
            )
        return specs

    @classmethod
    def describe(cls) -> str:
        """First paragraph of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.split("\n\n")[0].replace("\n", " ")

    def validate_params(self) -> None:
        """Check the parameter values (ranges, choices) without data; raise ``ValueError`` (e.g.
        :class:`~medfuse.errors.InvalidInputError`) naming the parameter. ``medfuse validate`` calls
        it on every plugin of a study, so a bad value is refused before any data is loaded.

        The default runs scikit-learn's parameter validation when the class declares
        ``_parameter_constraints`` (see ``sklearn.utils._param_validation``); plugins with their
        own rules override it (and may call it from ``fit``).
        """
        if getattr(type(self), "_parameter_constraints", None):
            self._validate_params()

    def cache_key(self) -> str:
        """Hash of name, version, parameters and the class's source file: changes whenever output
        could change, including an edit to the plugin's source without a version bump (helper
        modules it imports are not hashed: bump the version, or run with ``--no-cache``)."""
        from .util.hashing import source_sha256

        record = {"name": self.name, "version": self.version, "params": self.get_params(deep=False),
                  "source": source_sha256(type(self))}
        if getattr(self, "input_channels", None) is not None:
            record["channels"] = list(self.input_channels)
        payload = json.dumps(
            record,
            sort_keys=True,
            default=repr,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # Persistence (bundle format 2): a plugin's fitted attributes go into the bundle's skops file,
    # which may hold only builtins, numpy, scipy and scikit-learn types and registered plugin
    # classes. Plugins holding anything else (Keras networks, XGBoost boosters) write it natively
    # in ``save_artifacts`` (ONNX, XGBoost JSON), leave it out of ``__getstate__`` while
    # :func:`state_saved_separately` is true, and read it back in ``load_artifacts``.
    def save_artifacts(self, directory: Path) -> list[Path]:
        """Write state that is not plain data (networks, boosters) into ``directory``; return the files."""
        return []

    def load_artifacts(self, directory: Path) -> None:
        """Restore the state written by :meth:`save_artifacts` (without importing TensorFlow)."""


def check_image(image: Any, where: str = "image") -> np.ndarray:
    """Validate a canonical image and return it; raise :class:`InvalidInputError` otherwise."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"{where}: expected shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"{where}: empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"{where}: expected dtype uint8, got {image.dtype}")
    return image


def check_native_image(image: Any, where: str = "image") -> np.ndarray:
    """Validate an image at its stored depth (``(H, W)`` or ``(H, W, C)``, numeric); ``(H, W)``
    comes back as ``(H, W, 1)``."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1 or image.shape[2] < 1:
        raise InvalidInputError(f"{where}: expected shape (H, W, C), got {image.shape}")
    if image.dtype.kind not in "uifb":
        raise InvalidInputError(f"{where}: expected a numeric dtype, got {image.dtype}")
    return image


def check_mask(mask: Any, image: np.ndarray | None = None, where: str = "mask") -> np.ndarray | None:
    """Validate a canonical mask (or ``None``) against its image."""
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        shape = getattr(mask, "shape", None)
        raise InvalidInputError(f"{where}: expected a 2-D array (H, W), got {shape}")
    if image is not None and mask.shape != image.shape[:2]:
        raise InvalidInputError(f"{where}: shape {mask.shape} does not match image {image.shape[:2]}")
    if mask.dtype != np.uint8:
        mask = mask.astype(np.uint8)
    return mask


class Transform(Plugin):
    """Image preprocessing: ``(image, mask) -> (image, mask)``; stateless."""

    kind: ClassVar[str] = "transform"

    def apply(self, image: np.ndarray, mask: np.ndarray | None = None):
        """Validate inputs and return the transformed ``(image, mask)``."""
        source = image
        image = self.input_image(image)
        mask = check_mask(mask, image)
        out_image, out_mask = self._apply(image, mask)
        if self.input_dtype != "native":
            return check_image(out_image, f"{self.name} output"), check_mask(out_mask, out_image)
        out_image = keep_rule(source, check_native_image(out_image, f"{self.name} output"))
        return out_image, check_mask(out_mask, out_image)

    def _apply(self, image: np.ndarray, mask: np.ndarray | None):
        raise NotImplementedError

    def fit(self, X=None, y=None):
        return self


class MaskMaker(Plugin):
    """Segmentation: ``image -> mask`` (0 background, 1 cell, 2 nucleus).

    Classical segmenters are stateless (``trainable = False``); trainable ones (U-Net) learn
    from ``fit(images, masks)`` on the training fold only.
    """

    kind: ClassVar[str] = "mask"
    trainable: ClassVar[bool] = False

    def fit(self, images: Sequence[np.ndarray] | None = None, masks: Sequence[np.ndarray] | None = None):
        return self

    def predict_mask(self, image: np.ndarray) -> np.ndarray:
        """Validate the image and return its mask, shape ``(H, W)``, uint8."""
        image = self.input_image(image)
        mask = self._predict_mask(image)
        return check_mask(mask, image, f"{self.name} output")

    def predict_masks(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        """Masks for many images; trainable segmenters override this to batch."""
        return [self.predict_mask(im) for im in images]

    def _predict_mask(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def check_instances(labels: Any, image: np.ndarray | None = None, where: str = "instances") -> np.ndarray:
    """Validate an instance label image: integer ``(H, W)`` matching the image, 0 background,
    ``1..n`` one label per object. Returned as ``int32``."""
    if not isinstance(labels, np.ndarray) or labels.ndim != 2:
        raise InvalidInputError(f"{where}: expected a 2-D label image (H, W), got {getattr(labels, 'shape', None)}")
    if image is not None and labels.shape != image.shape[:2]:
        raise InvalidInputError(f"{where}: shape {labels.shape} does not match image {image.shape[:2]}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"{where}: expected integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InvalidInputError(f"{where}: negative labels (0 is background, 1..n the objects)")
    return labels.astype(np.int32, copy=False)


class InstanceMaker(MaskMaker):
    """Segmentation into objects: ``image -> int32 label image`` (0 background, ``1..n`` one
    label per object, e.g. one per cell of a smear). A mask maker too: its ``predict_mask`` is
    ``1`` on every object, so it also serves where a foreground mask is wanted.

    Subclasses implement ``_predict_instances``. Labels need not be consecutive; each non-zero
    value is one object (``medfuse.objectscoring`` measures and crops each).
    """

    instances: ClassVar[bool] = True

    def predict_instances(self, image: np.ndarray) -> np.ndarray:
        """Validate the image and return its instance labels, int32 ``(H, W)``."""
        image = self.input_image(image)
        return check_instances(self._predict_instances(image), image, f"{self.name} output")

    def _predict_instances(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _predict_mask(self, image: np.ndarray) -> np.ndarray:
        return (self._predict_instances(image) > 0).astype(np.uint8)


class Extractor(Plugin):
    """Image -> one named feature block, in two steps.

    1. ``prepare(image, mask)``: per-image and stateless (so it is cached on disk and run in
       parallel). Classical extractors return their feature vector here; trainable ones (CNN)
       return a compact input, e.g. the image resized to 64x64.
    2. ``fit(P, y)`` / ``transform(P)`` on the stacked prepared arrays ``P``: identity for
       stateless extractors; training and embedding for trainable ones (inside the fold).
    """

    kind: ClassVar[str] = "extractor"
    block: ClassVar[str] = ""
    trainable: ClassVar[bool] = False
    wants_spacing: ClassVar[bool] = False
    """True: the engine passes each image's ``spacing_um`` (``(row, col)`` micrometres per pixel
    from the file or the study's ``reader.pixel_size_um``; ``None`` when unknown) to
    ``prepare``/``_prepare``. The spacing is part of the file's content or of the study's reader
    options, both already in the block cache key."""
    needs_mask: ClassVar[bool] = False
    """True: every image must come with a mask (its features are NaN, or ``prepare`` raises,
    when ``mask`` is ``None``). A class attribute, or a property when a parameter decides it (as
    ``cell_summary``'s ``finder = "mask"`` does). ``medfuse validate``, ``compare`` and ``train``
    refuse a pipeline without ``mask`` that uses such a block, before loading data; the
    conformance kit (:mod:`medfuse.testing`) fails an extractor that gives only NaN or raises
    without a mask unless it declares this."""

    def prepare(self, image: np.ndarray, mask: np.ndarray | None = None,
                spacing_um: tuple[float, float] | None = None) -> np.ndarray:
        """Validate inputs and return this image's prepared array (``spacing_um`` reaches
        ``_prepare`` only when the class sets ``wants_spacing``)."""
        image = self.input_image(image)
        mask = check_mask(mask, image)
        if self.wants_spacing:
            return self._prepare(image, mask, spacing_um=spacing_um)
        return self._prepare(image, mask)

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def feature_names(self) -> list[str]:
        """Bare feature names (without the block prefix), in column order."""
        raise NotImplementedError

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray([f"{self.block}.{f}" for f in self.feature_names()], dtype=object)

    def fit(self, P: np.ndarray, y: np.ndarray | None = None):
        return self

    def transform(self, P: np.ndarray) -> np.ndarray:
        P = np.asarray(P, dtype=np.float32)
        if P.ndim != 2:
            raise InvalidInputError(f"{self.name}: expected stacked vectors (n, f), got {P.shape}")
        return P

    def fit_transform(self, P, y=None, **fit_params):
        return self.fit(P, y).transform(P)

    def extract(self, items: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> pd.DataFrame:
        """Convenience: prepare and transform ``(image, mask)`` pairs into a named DataFrame."""
        import pandas as pd

        P = np.stack([self.prepare(im, m) for im, m in items])
        return pd.DataFrame(self.transform(P), columns=self.get_feature_names_out())


class Selector(Plugin):
    """Tabular block: impute and select columns of a lab table; fitted on the training fold.

    ``fit(X: DataFrame, y)`` sets ``selected_`` (column names) and ``scores_`` (a Series over
    all candidate columns); ``transform(X)`` returns ``float32 (n, len(selected_))``.
    """

    kind: ClassVar[str] = "selector"
    block: ClassVar[str] = "table"

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray([f"{self.block}.{c}" for c in self.selected_], dtype=object)

    # pandas objects are not plain data for a bundle's skops file: fitted Series attributes
    # (``scores_``, medians, ...) travel as {index, values} and come back as Series
    def __getstate__(self) -> dict[str, Any]:
        pd = sys.modules.get("pandas")  # no Series can exist before pandas is imported
        if pd is None:
            return dict(self.__dict__)
        return {k: _SeriesState.of(v) if isinstance(v, pd.Series) else v for k, v in self.__dict__.items()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: _SeriesState.back(v) if _SeriesState.holds(v) else v for k, v in state.items()})


class _SeriesState:
    """A pandas Series as plain data: ``{"__series__": name, "index": [...], "values": ndarray}``."""

    @staticmethod
    def of(series: pd.Series) -> dict[str, Any]:
        return {"__series__": None if series.name is None else str(series.name),
                "index": [i.item() if isinstance(i, np.generic) else i for i in series.index],
                "values": series.to_numpy()}

    @staticmethod
    def holds(value: Any) -> bool:
        return isinstance(value, dict) and "__series__" in value and set(value) == {"__series__", "index", "values"}

    @staticmethod
    def back(state: dict[str, Any]) -> pd.Series:
        import pandas as pd

        return pd.Series(state["values"], index=list(state["index"]), name=state["__series__"])


class Classifier(Plugin):
    """Classifier over a feature matrix (``input = "features"``) or over images.

    Image classifiers (``input = "images"``) also implement ``prepare(image, mask)`` like an
    extractor and are fitted on the stacked prepared arrays. All expose ``predict_proba`` with
    columns in the order of ``classes_``. A scikit-learn classifier (tags and ``score`` as
    ``sklearn.base.ClassifierMixin`` gives them).
    """

    kind: ClassVar[str] = "classifier"
    input: ClassVar[str] = "features"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.target_tags.required = True
        return tags

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of ``predict(X)`` against ``y`` (scikit-learn's classifier ``score``)."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def prepare(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        image = self.input_image(image)
        mask = check_mask(mask, image)
        return self._prepare(image, mask)

    def _prepare(self, image, mask):
        raise NotImplementedError(f"{self.name} takes feature matrices, not images")


@dataclass
class SampleTable:
    """What a loader returns.

    ``samples`` has one row per sample and the columns ``id``, ``path`` (image file or ``None``
    for table-only data), ``mask_path`` (or ``None``), ``label``, ``group`` (patient/smear, or
    the id when the data has no grouping) and ``sha1`` (content hash of the image file, or of
    the table row). ``table`` holds tabular columns aligned on the same index, or ``None``.
    ``report`` is the :class:`medfuse.datareport.DataReport` of problems found while loading.
    """

    samples: pd.DataFrame
    table: pd.DataFrame | None = None
    report: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.samples["label"].to_numpy()

    def __len__(self) -> int:
        return len(self.samples)


class Loader(Plugin):
    """Dataset format: ``load(root) -> SampleTable``; paths in params are relative to ``root``."""

    kind: ClassVar[str] = "loader"

    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        raise NotImplementedError

    def crop_rule(self) -> dict[str, Any] | None:
        """How this loader cuts its samples out of larger images, as a
        :class:`medfuse.objects.CropRule` dict (recorded in bundles as ``inputs.objects``, used by
        whole-image scoring); ``None`` (the default) when samples are whole files."""
        return None


BASES: dict[str, type[Plugin]] = {
    "transform": Transform,
    "extractor": Extractor,
    "selector": Selector,
    "mask": MaskMaker,
    "classifier": Classifier,
    "loader": Loader,
}
