"""The ``annotations`` loader: one sample per annotated object inside a source image.

A haematology dataset is usually smears (fields of view) with many cells, annotated by boxes,
points or instance masks. This loader turns each annotated object into one sample whose ``path``
is an object reference ``IMAGE#box=x0,y0,x1,y1`` (:mod:`medfuse.objects`): the crop is cut
lazily from the source image when read, no crop file is written. Built-in readers (``format``):

* ``voc``: Pascal VOC XML files (``<filename>``, ``<object><name>``, ``<bndbox>``), one per
  image. VOC boxes are 1-based and inclusive: ``(xmin, ymin, xmax, ymax)`` becomes the box
  ``(xmin - 1, ymin - 1, xmax, ymax)`` (0-based, end exclusive).
* ``points``: a point per object with a crop of ``size`` pixels centred on it. Either a table
  (CSV/TSV, read by header: ``x_column``, ``y_column``, ``class_column`` and, for one table
  covering many images, ``image_column``), or whitespace text with ``x y class`` per line (one
  file per image, matched by file stem; ``#`` starts a comment; without a class the object gets
  ``default_class``).
* ``instances``: a label image per source image (matched by stem; 0 background, each other
  value one object). An object's box is the extent of its pixels and its mask is that instance
  only (``mask_path`` = ``LABELS#box=...&id=N``); classes come from ``table`` (columns
  ``image_column``, ``id_column``, ``class_column``) or are all ``default_class``.

Checks, each problem one row of ``DataReport.bad_annotations`` (``where`` = file, line or
object; every other object is kept): unparseable files or lines, empty boxes, boxes that do not
lie inside the image (an annotation that does not match its image), points outside the image,
boxes smaller than ``min_size``, classes missing from ``class_map`` (when one is given),
annotations whose image is missing; undecodable images are ``bad_files``. Classes left out by
the ``classes`` filter are counted in a note, not reported as problems.

Output: ``id`` = ``<image stem>#<n>`` (``n`` the object's place in its annotation file, from 1,
stable under filters), ``group`` = the source image (so that no smear is split across folds),
``sha1`` = :func:`medfuse.objects.object_sha1` of the image file's hash (computed once per image)
and the box: identical boxes on one image are duplicates. Pairs of kept objects on one image
that overlap with IoU >= 0.5 are counted in a note (double annotations are common in box sets).
``margin`` widens every box by that many pixels on each side (past the border, the border rule of
:mod:`medfuse.objects` pads). ``centre_boxes = true`` cuts a ``size`` square centred on each box
instead (as for points): every crop then has one size, so the annotator's box size is no longer
a feature (a cell found by a detector will not come with the annotator's box).
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Loader, SampleTable
from medfuse.datareport import DataReport, image_properties
from medfuse.errors import DataError, InvalidInputError
from medfuse.imageio import IMAGE_SUFFIXES, ImageReadError, read_labels
from medfuse.loading import is_visible, list_images, loader_root, read_table, root_path, sample_table, unique_ids
from medfuse.objects import FOUND_BOX_MARGIN, CropRule, ObjectRef, object_sha1, point_box
from medfuse.scan import scan_files
from medfuse.util.lazy import lazy_module

pd = lazy_module("pandas")  # imported on first use: registering the plugin needs no pandas

FORMATS = ("voc", "points", "instances")
DEFAULT_GLOB = {"voc": "*.xml", "points": "*", "instances": "*"}
POINT_TABLES = (".csv", ".tsv", ".xlsx", ".xls")
OVERLAP_IOU = 0.5

Box = tuple[int, int, int, int]


@dataclass
class Annotation:
    """One annotated object as read, before it is checked against its image."""

    image: str  # how the annotation names its image: a relative path, a file name or a stem
    where: str  # file, file:line or file:object n, for report rows
    index: int  # the object's place in its file, from 1
    cls: str
    box: Box | None = None  # boxes (voc, instances): 0-based, end exclusive
    point: tuple[float, float] | None = None  # points
    labels: str | None = None  # instances: the label image
    instance: int | None = None


Bad = dict[str, str]


def _bad(where: str, reason: str) -> Bad:
    return {"where": where, "reason": reason}


# ---- readers -------------------------------------------------------------------------------------

def read_voc(path: Path) -> tuple[list[Annotation], list[Bad]]:
    """Objects of one Pascal VOC XML file, and the problems found in it."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        return [], [_bad(str(path), f"unparseable VOC XML ({exc})")]
    name = (root.findtext("filename") or "").strip() or path.stem
    out: list[Annotation] = []
    bad: list[Bad] = []
    for n, obj in enumerate(root.iter("object"), start=1):
        where = f"{path}:object {n}"
        cls = (obj.findtext("name") or "").strip()
        if not cls:
            bad.append(_bad(where, "object without a <name>"))
            continue
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{k}") or "")
                                      for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            values = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
            bad.append(_bad(where, f"<bndbox> xmin/ymin/xmax/ymax not all numbers: {values}"))
            continue
        out.append(Annotation(name, where, n, cls,
                              box=(int(round(xmin)) - 1, int(round(ymin)) - 1, int(round(xmax)), int(round(ymax)))))
    return out, bad


def read_point_table(path: Path, image_column: str, x_column: str, y_column: str, class_column: str,
                     default_class: str) -> tuple[list[Annotation], list[Bad]]:
    """Points of a CSV/TSV/Excel table (one row per object, columns named by the parameters).

    Without an ``image_column`` in the table, every row belongs to the image with the file's stem."""
    try:
        df = read_table(path)
    except DataError as exc:
        return [], [_bad(str(path), str(exc).removeprefix(f"{path}: "))]
    missing = [c for c in (x_column, y_column) if c not in df.columns]
    if missing:
        return [], [_bad(str(path), f"missing column(s) {', '.join(map(repr, missing))}; the table has: "
                                    f"{', '.join(map(str, df.columns))} (set x_column / y_column)")]
    has_image = image_column in df.columns
    has_class = class_column in df.columns
    out: list[Annotation] = []
    bad: list[Bad] = []
    for n, row in enumerate(df.to_dict("records"), start=1):
        where = f"{path}:line {n + 1}"  # line 1 is the header
        image = str(row[image_column]).strip() if has_image and pd.notna(row[image_column]) else ""
        if has_image and not image:
            bad.append(_bad(where, f"no value in column {image_column!r}"))
            continue
        cls = _text(row[class_column]) if has_class else default_class
        if not cls:
            bad.append(_bad(where, f"no value in column {class_column!r}"))
            continue
        try:
            x, y = float(row[x_column]), float(row[y_column])
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError
        except (TypeError, ValueError):
            bad.append(_bad(where, f"{x_column}/{y_column} not numbers: {row[x_column]!r}, {row[y_column]!r}"))
            continue
        out.append(Annotation(image or path.stem, where, n, cls, point=(x, y)))
    return out, bad


def read_point_text(path: Path, default_class: str) -> tuple[list[Annotation], list[Bad]]:
    """Points of a whitespace text file: ``x y [class]`` per line, for the image with the file's stem."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return [], [_bad(str(path), f"cannot read ({exc.strerror or exc})")]
    out: list[Annotation] = []
    bad: list[Bad] = []
    n = 0
    for lineno, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        n += 1
        parts = text.split()
        where = f"{path}:line {lineno}"
        try:
            x, y = float(parts[0]), float(parts[1]) if len(parts) > 1 else float("nan")
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError
        except ValueError:
            bad.append(_bad(where, f"expected 'x y class', got {text!r}"))
            continue
        out.append(Annotation(path.stem, where, n, " ".join(parts[2:]) or default_class, point=(x, y)))
    return out, bad


def read_instances(path: Path, classes: dict[tuple[str, int], str] | None,
                   default_class: str) -> tuple[list[Annotation], list[Bad]]:
    """Objects of one label image (0 background, each other value one object): box = extent."""
    from scipy import ndimage

    try:
        labels = read_labels(path)
    except ImageReadError as exc:
        return [], [_bad(str(path), str(exc).removeprefix(f"{path}: "))]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        return [], [_bad(str(path), f"not a single-channel integer label image ({labels.dtype}, {labels.shape})")]
    ids = np.unique(labels)
    ids = ids[ids > 0]
    out: list[Annotation] = []
    bad: list[Bad] = []
    if not len(ids):
        return out, bad
    slices = ndimage.find_objects(labels.astype(np.int64, copy=False))
    for n, value in enumerate(ids.tolist(), start=1):
        sl = slices[value - 1]
        box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        where = f"{path}:id {value}"
        cls = default_class if classes is None else classes.get((path.stem, value))
        if cls is None:
            bad.append(_bad(where, f"instance {value} has no row in the class table"))
            continue
        out.append(Annotation(path.stem, where, n, cls, box=box, labels=str(path), instance=int(value)))
    return out, bad


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# ---- checks --------------------------------------------------------------------------------------

def box_problem(box: Box, width: int, height: int, min_size: int) -> str:
    """Why ``box`` cannot be an object of a ``width`` x ``height`` image ('' when it can)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return f"empty box {box}"
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return f"box {box} is not inside the {width}x{height} image (does the annotation match this image?)"
    if min(x1 - x0, y1 - y0) < min_size:
        return f"box {box} is {x1 - x0}x{y1 - y0}, smaller than min_size={min_size}"
    return ""


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def overlapping_pairs(boxes: list[Box], threshold: float = OVERLAP_IOU) -> list[tuple[int, int]]:
    """Index pairs of ``boxes`` whose IoU is at least ``threshold`` (identical boxes included)."""
    if len(boxes) < 2:
        return []
    b = np.asarray(boxes, dtype=np.float64)
    w = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area[:, None] + area[None, :] - inter
    i, j = np.nonzero(np.triu(inter >= threshold * union, k=1))
    return list(zip(i.tolist(), j.tolist()))


# ---- the loader ----------------------------------------------------------------------------------

class AnnotationLoader(Loader):
    """Objects inside images from annotations (Pascal VOC boxes, point lists, instance masks).

    One sample per object, read lazily as ``IMAGE#box=x0,y0,x1,y1`` (no crop files), grouped
    by source image. Bad annotation lines are data-report rows; see the module docstring.

    Parameters
    ----------
    images
        Folder of the source images (searched recursively), relative to the data root.
    annotations
        Annotation file or folder, relative to the data root.
    glob
        Pattern of annotation files inside the folder (`**/` for sub-folders); default per format: voc `*.xml`, points
        `*` (tables .csv/.tsv/.xlsx by header, other files as `x y class` text), instances `*` (label images).
    format
        `voc` (Pascal VOC XML boxes), `points` (point lists) or `instances` (label images).
    image_column
        Points table / instance class table: column naming the image (path, file name or stem).
    x_column
        Points table: column of the x coordinate (pixels, from the left).
    y_column
        Points table: column of the y coordinate (pixels, from the top).
    class_column
        Points table / instance class table: column of the class.
    id_column
        Instance class table: column of the instance id (the label value).
    table
        Instances: CSV/TSV/Excel table giving each instance's class (default: all `default_class`).
    size
        Points (and boxes with centre_boxes): side in pixels of the square crop centred on each point.
    centre_boxes
        Boxes and instances: cut a `size` square centred on each box instead of the box (margin ignored).
    margin
        Boxes and instances: pixels added on each side of every box (past the border: edge repeat).
    class_map
        Rename classes, e.g. { wbc = "WBC" }; when given, a class not in it is a bad annotation.
    classes
        Keep only these classes (after class_map); others are left out and counted in a note.
    min_size
        Boxes and instances: objects whose box is narrower than this (pixels) are bad annotations.
    default_class
        Class of points without a class and of instances without a class table.
    """

    name: ClassVar[str] = "annotations"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {"format": "instances", "images": "images",
                                                    "annotations": "masks", "glob": "**/*.png"}

    def __init__(self, images: str = "images", annotations: str = "annotations", glob: str | None = None,
                 format: str = "voc", image_column: str = "image", x_column: str = "x", y_column: str = "y",
                 class_column: str = "class", id_column: str = "id", table: str | None = None, size: int = 64,
                 margin: int = 0, class_map: dict[str, str] | None = None, classes: list[str] | None = None,
                 min_size: int = 0, default_class: str = "object", centre_boxes: bool = False):
        self._store_params(locals())

    def validate_params(self) -> None:
        if self.format not in FORMATS:
            raise InvalidInputError(f"annotations loader: format={self.format!r}; use one of {', '.join(FORMATS)}")
        for key, low in (("size", 1), ("margin", 0), ("min_size", 0)):
            value = getattr(self, key)
            if not isinstance(value, int | np.integer) or value < low:
                raise InvalidInputError(f"annotations loader: {key}={value!r}; expected an integer >= {low}")
        if self.class_map is not None and not isinstance(self.class_map, dict):
            raise InvalidInputError("annotations loader: class_map must be a table { raw = \"name\" }")
        if self.table is not None and self.format != "instances":
            raise InvalidInputError("annotations loader: `table` (classes per instance) needs format='instances'")

    def crop_rule(self) -> dict[str, Any]:
        """How the objects are cut (:class:`medfuse.objects.CropRule`): a ``size`` square for points
        and ``centre_boxes``; else the box plus ``margin`` pixels, where a VOC box (looser than a
        finder's tight box) adds :data:`~medfuse.objects.FOUND_BOX_MARGIN` and an instance's extent
        (tight) adds nothing."""
        if self.format == "points" or self.centre_boxes:
            return CropRule("centred", size=int(self.size)).to_dict()
        loose = FOUND_BOX_MARGIN if self.format == "voc" else 0.0
        return CropRule("box", margin=loose, pad=int(self.margin)).to_dict()

    # -- reading ---------------------------------------------------------------------------------
    def _files(self, root: Path) -> list[Path]:
        path = root / self.annotations
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise DataError(f"annotations loader 'annotations': {path} not found (relative to the data root {root})")
        pattern = self.glob or DEFAULT_GLOB[self.format]
        files = sorted(p for p in path.glob(pattern) if p.is_file() and is_visible(p))
        if self.format == "instances":
            files = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(f"annotations loader: no annotation files match {pattern!r} in {path} "
                            f"(format={self.format!r}; set glob)")
        return files

    def _instance_classes(self, root: Path) -> dict[tuple[str, int], str] | None:
        if self.table is None:
            return None
        tpath = root_path(root, self.table, "annotations loader 'table'", want_dir=False)
        df = read_table(tpath)
        missing = [c for c in (self.image_column, self.id_column, self.class_column) if c not in df.columns]
        if missing:
            raise DataError(f"{tpath}: missing column(s) {', '.join(map(repr, missing))}; the table has: "
                            f"{', '.join(map(str, df.columns))}")
        out: dict[tuple[str, int], str] = {}
        for image, ident, cls in zip(df[self.image_column], df[self.id_column], df[self.class_column]):
            if pd.notna(ident) and _text(cls):
                out[(Path(str(image)).stem, int(ident))] = _text(cls)
        return out

    def read(self, root: Path) -> tuple[list[Annotation], list[Bad]]:
        """Every annotation under ``root`` with the problems of parsing (no image checks)."""
        anns: list[Annotation] = []
        bad: list[Bad] = []
        classes = self._instance_classes(root) if self.format == "instances" else None
        for f in self._files(root):
            if self.format == "voc":
                a, b = read_voc(f)
            elif self.format == "instances":
                a, b = read_instances(f, classes, self.default_class)
            elif f.suffix.lower() in POINT_TABLES:
                a, b = read_point_table(f, self.image_column, self.x_column, self.y_column, self.class_column,
                                        self.default_class)
            else:
                a, b = read_point_text(f, self.default_class)
            anns += a
            bad += b
        return anns, bad

    # -- loading ---------------------------------------------------------------------------------
    def load(self, root: Path | str = ".", jobs: int = 1, progress: bool = False) -> SampleTable:
        self.validate_params()
        root = loader_root(root)
        folder = root_path(root, self.images, "annotations loader 'images'", want_dir=True)
        anns, bad = self.read(root)
        report = DataReport(source=str(root / self.annotations), loader=self.name)
        report.bad_annotations = bad
        report.n_found = len(anns) + len(bad)
        images, ignored = list_images(folder, recursive=True)
        report.ignored_files = [str(p) for p in ignored if p.suffix.lower() not in (".xml", ".csv", ".txt")]
        index = _image_index(folder, images)
        scans = dict(zip(images, scan_files([str(p) for p in images], jobs=jobs, progress=progress,
                                            description="scanning source images")))
        for p, s in scans.items():
            if s.error:
                report.bad_files.append({"path": str(p), "reason": s.error})
        report.n_found += len(report.bad_files)  # an undecodable source image is a rejected candidate too
        rows, excluded, used = self._objects(anns, index, scans, folder, report.bad_annotations)
        unused = [p for p in images if p not in used and not scans[p].error]
        if unused:
            report.notes.append(f"{len(unused)} image(s) without any annotated object, e.g. "
                                + ", ".join(p.name for p in unused[:5]))
        if excluded:
            report.notes.append("left out by the class filter: "
                                + ", ".join(f"{k} x{v}" for k, v in sorted(excluded.items())))
        frame = pd.DataFrame(rows, columns=["id", "path", "mask_path", "label", "group", "sha1", "box"])
        _overlap_note(frame, report.notes)
        report.image_properties, report.mixed_image_properties = _properties(scans, used)
        return sample_table(unique_ids(frame, report).drop(columns="box"), report)

    def _objects(self, anns: Iterable[Annotation], index: dict[str, Path], scans: dict[Path, Any], folder: Path,
                 bad: list[Bad]) -> tuple[list[dict[str, Any]], Counter, set[Path]]:
        rows: list[dict[str, Any]] = []
        excluded: Counter = Counter()
        used: set[Path] = set()
        keep = None if self.classes is None else {str(c) for c in self.classes}
        for a in anns:
            image = index.get(a.image) or index.get(Path(a.image).name) or index.get(Path(a.image).stem)
            if image is None:
                bad.append(_bad(a.where, f"image {a.image!r} not found under {folder}"))
                continue
            scan = scans[image]
            if scan.error:
                continue  # reported once, as a bad file
            cls = a.cls
            if self.class_map is not None:
                if cls not in self.class_map:
                    bad.append(_bad(a.where, f"unknown class {cls!r} (class_map has: "
                                             f"{', '.join(map(str, self.class_map))})"))
                    continue
                cls = str(self.class_map[cls])
            if keep is not None and cls not in keep:
                excluded[cls] += 1
                continue
            if a.point is not None:
                x, y = a.point
                if not (0 <= x < scan.width and 0 <= y < scan.height):
                    bad.append(_bad(a.where, f"point ({x:g}, {y:g}) is outside the {scan.width}x{scan.height} image"))
                    continue
                box = point_box(x, y, int(self.size))
            else:
                assert a.box is not None
                problem = box_problem(a.box, scan.width, scan.height, int(self.min_size))
                if problem:
                    bad.append(_bad(a.where, problem))
                    continue
                m = int(self.margin)
                box = (point_box((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2, int(self.size))
                       if self.centre_boxes else (a.box[0] - m, a.box[1] - m, a.box[2] + m, a.box[3] + m))
            ref = ObjectRef(str(image), box)
            if a.labels is not None:
                if (read_shape := _label_shape(a.labels)) != (scan.height, scan.width):
                    bad.append(_bad(a.where, f"label image {read_shape} does not match image "
                                             f"{(scan.height, scan.width)}"))
                    continue
                mask = ObjectRef(a.labels, box, a.instance).path
                sha = object_sha1(scan.sha1, ObjectRef(str(image), box, a.instance))
            else:
                mask, sha = None, object_sha1(scan.sha1, ref)
            stem = image.relative_to(folder).with_suffix("").as_posix()
            used.add(image)
            rows.append({"id": f"{stem}#{a.index}", "path": ref.path, "mask_path": mask, "label": cls,
                         "group": stem, "sha1": sha, "box": box})
        return rows, excluded, used


@functools.lru_cache(maxsize=64)
def _label_shape(path: str) -> tuple[int, int]:
    """``(height, width)`` of a label image, from its header."""
    from PIL import Image

    with Image.open(path) as img:
        return img.size[1], img.size[0]


def _image_index(folder: Path, images: list[Path]) -> dict[str, Path]:
    """Lookup of source images by relative path, file name and stem (first one wins)."""
    index: dict[str, Path] = {}
    for p in images:
        for key in (p.relative_to(folder).as_posix(), p.name, p.stem):
            index.setdefault(key, p)
    return index


def _overlap_note(frame: pd.DataFrame, notes: list[str]) -> None:
    """Count pairs of objects on one image overlapping with IoU >= 0.5 (possible double annotations)."""
    pairs: list[str] = []
    mixed = 0
    for _, g in frame.groupby("group", sort=False):
        boxes = list(g["box"])
        for i, j in overlapping_pairs(boxes):
            a, b = g.iloc[i], g.iloc[j]
            mixed += a["label"] != b["label"]
            pairs.append(f"{a['id']} ({a['label']}) ~ {b['id']} ({b['label']}) IoU {iou(boxes[i], boxes[j]):.2f}")
    if pairs:
        notes.append(f"{len(pairs)} pair(s) of objects on one image overlap with IoU >= {OVERLAP_IOU} "
                     f"(possible double annotations; {mixed} with different classes), e.g. " + "; ".join(pairs[:5]))


def _properties(scans: dict[Path, Any], used: set[Path]) -> tuple[dict, list[str]]:
    return image_properties([(s.format, s.bit_depth, s.channels, s.spacing_um)
                             for p, s in scans.items() if p in used])


@hookimpl
def medfuse_plugins():
    return [AnnotationLoader]
