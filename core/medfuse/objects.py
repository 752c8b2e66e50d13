"""Objects inside images: a sample that is a region of a larger image (a cell in a smear).

An object is referred to by its source image and a box, written as one string so that it flows
through every place a sample path goes (loaders' tables, the feature cache, scoring manifests and
output tables)::

    smears/BloodImage_00001.jpg#box=120,48,184,112

``box=x0,y0,x1,y1`` in pixels of the decoded image, ``x1``/``y1`` exclusive. The crop is cut
lazily from the source image when the sample is read (no crop files are written).

Border rule: a box may extend past the image (a cell near the edge, a point with a fixed crop
size); the part outside is filled by repeating the nearest edge pixel (``numpy.pad`` mode
``"edge"``), so every crop has the box's size. A box entirely outside the image, or an empty
box, is an error for that sample.

Instances: ``&id=N`` after the box names one instance of a label image (0 background, each
other value one object)::

    labels/BloodImage_00001.png#box=120,48,184,112&id=7

Read as a mask (:func:`medfuse.imageio.read_mask`), it gives the box cut from the label image
with ``1`` where the label is ``N`` and ``0`` elsewhere (touching neighbours are background), so
a mask is that instance only. Read as an image, the ``id`` is ignored (the box is cut).

Content hash: an object's hash is :func:`object_sha1` of its file's SHA-1 and the fragment
(``box=...[&id=N]``), so two objects of one image differ and the same object in a copied file
is found as a duplicate.

A real file whose name contains ``#box=`` is read as that file: the fragment is only parsed when
the path as written does not exist.

Crop rules (:class:`CropRule`): how a loader cut its training objects, recorded in a bundle's
manifest (``inputs.objects``) so that whole-image scoring cuts found objects the same way:
``{"rule": "box", "margin": F, "pad": P}`` (the box grown by ``F`` times its larger side, then
by ``P`` pixels on every side) or ``{"rule": "centred", "size": S}`` (an ``S`` x ``S`` square
centred on the box).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError

__all__ = ["CropRule", "ObjectRef", "crop", "object_sha1", "point_box", "split_ref"]

_FRAGMENT = re.compile(r"^(?P<image>.+)#box=(?P<box>-?\d+,-?\d+,-?\d+,-?\d+)(?:&id=(?P<id>\d+))?$")


@dataclass(frozen=True)
class ObjectRef:
    """One object: ``image`` (path) and ``box`` ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive;
    ``instance``: the label value of the object when ``image`` is a label image (else ``None``)."""

    image: str
    box: tuple[int, int, int, int]
    instance: int | None = None

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if x1 <= x0 or y1 <= y0:
            raise InvalidInputError(f"{self.image}: empty object box {self.box} (need x1 > x0 and y1 > y0)")

    @property
    def fragment(self) -> str:
        """``box=x0,y0,x1,y1`` (and ``&id=N`` for an instance)."""
        box = f"box={','.join(str(int(v)) for v in self.box)}"
        return box if self.instance is None else f"{box}&id={int(self.instance)}"

    @property
    def path(self) -> str:
        """The sample path: ``image#box=x0,y0,x1,y1`` (``...&id=N`` for an instance)."""
        return f"{self.image}#{self.fragment}"

    @classmethod
    def parse(cls, path: str | Path) -> ObjectRef | None:
        """The object a sample path refers to, or ``None`` for a plain file path."""
        text = str(path)
        if "#box=" not in text or Path(text).exists():
            return None
        m = _FRAGMENT.match(text)
        if m is None:
            raise InvalidInputError(f"{text}: malformed object reference "
                                    "(expected IMAGE#box=x0,y0,x1,y1 or LABELS#box=x0,y0,x1,y1&id=N)")
        x0, y0, x1, y1 = (int(v) for v in m["box"].split(","))
        return cls(m["image"], (x0, y0, x1, y1), None if m["id"] is None else int(m["id"]))


def split_ref(path: str | Path) -> tuple[str, tuple[int, int, int, int] | None]:
    """``(image path, box or None)`` for a sample path (see :class:`ObjectRef`)."""
    ref = ObjectRef.parse(path)
    return (str(path), None) if ref is None else (ref.image, ref.box)


def object_sha1(file_hash: str, ref: ObjectRef) -> str:
    """Content hash of an object: SHA-1 of its file's hash (hex) and its fragment."""
    return hashlib.sha1(f"{file_hash}#{ref.fragment}".encode()).hexdigest()


def point_box(x: float, y: float, size: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """The box of ``size`` (side, or ``(width, height)``) centred on the point ``(x, y)``."""
    w, h = (size, size) if isinstance(size, int | np.integer) else size
    x0 = int(round(x - w / 2))
    y0 = int(round(y - h / 2))
    return x0, y0, x0 + int(w), y0 + int(h)


def crop(array: np.ndarray, box: tuple[int, int, int, int], where: str = "image") -> np.ndarray:
    """Cut ``box`` out of an image ``(H, W[, C])`` or mask ``(H, W)``, padding past the border by
    repeating the edge (the module's border rule). ``where`` names the source in errors."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = array.shape[:2]
    if x1 <= x0 or y1 <= y0:
        raise InvalidInputError(f"{where}: empty object box {box}")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise InvalidInputError(f"{where}: object box {box} lies outside the {w}x{h} image")
    inner = array[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    pad = [(max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w))] + [(0, 0)] * (array.ndim - 2)
    if not any(p for pair in pad for p in pair):
        return np.ascontiguousarray(inner)
    return np.pad(inner, pad, mode="edge")


FOUND_BOX_MARGIN = 0.2  # annotators' boxes are looser than a finder's tight box: grow it by this fraction


@dataclass(frozen=True)
class CropRule:
    """How an object's crop is cut from its box: ``"box"`` (grown by ``margin`` times its larger
    side, then by ``pad`` pixels, on every side) or ``"centred"`` (a ``size`` square centred on
    the box). Stored as plain JSON in a bundle manifest (:meth:`to_dict`, :meth:`from_dict`)."""

    rule: str = "box"
    margin: float = 0.0
    pad: int = 0
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.rule == "centred":
            return {"rule": "centred", "size": int(self.size)}
        return {"rule": "box", "margin": float(self.margin), "pad": int(self.pad)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "objects") -> CropRule:
        """The rule of a manifest entry, validated: a clear error naming ``where`` otherwise."""
        def bad(what: str) -> InvalidInputError:
            return InvalidInputError(f"{where}: {what}; expected {{rule = \"box\", margin = 0.2, pad = 0}} or "
                                     "{rule = \"centred\", size = 128} (retrain the bundle, or pass --margin / "
                                     "--crop-size to choose the crop)")

        if not isinstance(data, dict):
            raise bad(f"not a table ({type(data).__name__})")
        rule = data.get("rule")
        allowed = {"box": {"rule", "margin", "pad"}, "centred": {"rule", "size"}}.get(rule)  # type: ignore[arg-type]
        if allowed is None:
            raise bad(f"rule={rule!r}")
        if extra := sorted(set(data) - allowed):
            raise bad(f"unknown key(s) {', '.join(map(str, extra))} for rule={rule!r}")
        if rule == "centred":
            size = data.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise bad(f"size={size!r} (an integer >= 1)")
            return cls("centred", size=size)
        margin, pad = data.get("margin", 0.0), data.get("pad", 0)
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 100:
            raise bad(f"margin={margin!r} (a fraction >= 0)")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise bad(f"pad={pad!r} (an integer >= 0)")
        return cls("box", margin=float(margin), pad=pad)

    def box(self, tight: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The crop box of an object whose box is ``tight`` (may extend past the image)."""
        x0, y0, x1, y1 = (int(v) for v in tight)
        if self.rule == "centred":
            return point_box((x0 + x1) / 2, (y0 + y1) / 2, int(self.size))
        p = int(round(self.margin * max(x1 - x0, y1 - y0))) + int(self.pad)
        return x0 - p, y0 - p, x1 + p, y1 + p

    def describe(self) -> str:
        if self.rule == "centred":
            return f"a {self.size}-px square centred on each object"
        pad = f" + {self.pad} px" if self.pad else ""
        return f"each object's box + {self.margin:g} x its larger side{pad}"
