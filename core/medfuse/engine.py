"""The per-image engine: decode -> transforms -> mask -> each plugin's ``prepare``.

One loop serves ``medfuse extract`` (:mod:`medfuse.extract`), :class:`medfuse.ImageFeatures`,
``compare``/``train`` (:meth:`medfuse.pipeline.PipelineRunner.materialize`) and scoring
(:meth:`medfuse.pipeline.FittedPipeline.score_images` runs :func:`process_image` on decoded
images). Each image is decoded once (:func:`load_source`: a file, an object reference
``IMAGE#box=...`` or an in-memory array), given its mask file when :class:`ImageSteps` asks for
one, passed through the transforms, masked by a mask plugin (if any) and handed to the ``prepare``
of every plugin in ``slots``. Images are processed in chunks, in this process (``jobs=1``) or in
joblib worker processes; results come back in input order. A failing image never stops the run:
its row gets the reason (:func:`medfuse.errors.describe_exception`).

* :func:`iter_images`: the loop, streaming ``(position, result, error)`` per image;
* :func:`prepare_images`: the loop's results stacked per plugin, NaN rows where an image failed.

Nothing here imports TensorFlow; deep plugins import it themselves when used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .contracts import MaskMaker, Plugin
from .errors import DataError, InvalidInputError, MedfuseError, describe_exception
from .imageio import ReadOptions, read_image_with_info, read_mask
from .util.progress import Progress, progress_bar

ACQUISITION = "__acquisition__"  # slot: descriptor of the image as decoded, before transforms (medfuse.ood)
MASK_PIXELS = "__mask_pixels__"  # slot: mask pixels after the mask step (-1: no mask)
RAW = "__raw__"  # result key with ImageSteps(keep_raw=True): (image, mask, spacing_um) after the mask step
SPECIAL = (ACQUISITION, MASK_PIXELS)
MASK_FROM_FILE = "file"  # prepare_images(mask=...): read each image's mask file
MASK_FILES = ("none", "optional", "required")

Source = str | Path | np.ndarray


@dataclass(frozen=True)
class ImageSteps:
    """What happens to every image after decoding.

    ``mask_files``: ``"required"`` (each image's mask file is read; an image without one fails),
    ``"optional"`` (read when given) or ``"none"``. ``maker``: a fitted mask plugin whose
    ``predict_mask`` runs after the transforms. ``slots``: name -> plugin whose ``prepare`` runs
    (:data:`ACQUISITION` and :data:`MASK_PIXELS` map to ``None``). ``keep_raw``: return the
    transformed image and mask (:data:`RAW`) instead of preparing them. ``options``: how files are
    decoded; ``min_side``: smallest side a file may be decoded at (reduced-scale JPEG decoding);
    ``max_pixels``: refuse image and mask files whose header claims more pixels (see
    :func:`medfuse.imageio.read_image`). ``name_errors``: prefix errors that are not medfuse's own with the image's name (feature
    tables, whose readers see only the message).
    """

    transforms: Sequence[Plugin] = ()
    mask_files: str = "none"
    maker: Plugin | None = None
    slots: Mapping[str, Plugin | None] = field(default_factory=dict)
    keep_raw: bool = False
    options: ReadOptions | None = None
    name_errors: bool = False
    min_side: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.mask_files not in MASK_FILES:
            raise InvalidInputError(f"ImageSteps(mask_files={self.mask_files!r}): expected one of {MASK_FILES}")


def load_source(source: Source, options: ReadOptions | None = None, min_side: int | None = None,
                max_pixels: int | None = None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """A canonical image and its spacing (micrometres per pixel, or None) from a file or an array
    (``min_side``/``max_pixels``: file read limits, as in :func:`medfuse.imageio.read_image`).

    The image keeps its depth (:class:`~medfuse.intensity.SourceImage`; plugins taking ``uint8``
    get its 8-bit view). An array (``(H, W)`` grey or ``(H, W, C)``, any numeric dtype) gets the
    8-bit rule of decoded files (:func:`medfuse.intensity.to_uint8`,
    :func:`~medfuse.intensity.channels_to_rgb`); its spacing is ``options.pixel_size_um`` when set.
    """
    if isinstance(source, np.ndarray):
        from .intensity import SourceImage, choose_rule

        if source.ndim not in (2, 3) or min(source.shape[:2]) < 1:
            raise InvalidInputError(f"image array: expected (H, W) or (H, W, C), got shape {source.shape}")
        if source.dtype.kind not in "uifb":
            raise InvalidInputError(f"image array: expected a numeric dtype, got {source.dtype}")
        opts = options or ReadOptions()
        arr = source.astype(np.uint8) if source.dtype.kind == "b" else source
        rule = choose_rule(arr, opts)
        plain = arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and rule.kind == "identity"
        image = np.ascontiguousarray(arr) if plain else SourceImage(arr, rule)
        px = opts.pixel_size_um
        return image, ((float(px), float(px)) if px else None)
    if not is_path(source):
        raise DataError("sample has no image file")
    image, info = read_image_with_info(source, min_side=min_side, max_pixels=max_pixels, options=options,
                                       native=True)  # at its depth (#16)
    return image, info.spacing_um


def source_name(source: Source) -> str:
    """How an image source is named in error messages."""
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return str(source)


def is_path(value: Any) -> bool:
    """A non-empty file path (not None, NaN or '')."""
    return isinstance(value, str | Path) and bool(str(value))


def prepare_one(plugin: Plugin, image: np.ndarray, mask: np.ndarray | None,
                spacing_um: tuple[float, float] | None = None) -> np.ndarray:
    """``plugin.prepare(image, mask)``, with ``spacing_um`` (micrometres per pixel, ``(row, col)``,
    or None) passed only to plugins that declare ``wants_spacing = True``."""
    if getattr(plugin, "wants_spacing", False):
        return np.asarray(plugin.prepare(image, mask, spacing_um=spacing_um))
    return np.asarray(plugin.prepare(image, mask))


def process_image(image: np.ndarray, mask: np.ndarray | None, steps: ImageSteps,
                  needed: Iterable[str] | None = None, spacing_um: tuple[float, float] | None = None
                  ) -> dict[str, Any]:
    """Transforms, mask and the ``prepare`` of the ``needed`` slots (default: all of ``steps.slots``)
    of one decoded image; the special slots :data:`ACQUISITION` and :data:`MASK_PIXELS` are computed
    here. ``spacing_um``: the decoded file's spacing, for plugins that want it (:func:`prepare_one`)."""
    if mask is not None and mask.shape != image.shape[:2]:
        raise InvalidInputError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    names = list(steps.slots if needed is None else needed)
    extra: dict[str, Any] = {}
    if ACQUISITION in names:
        from .ood import image_descriptor

        extra[ACQUISITION] = image_descriptor(image)
    for t in steps.transforms:
        image, mask = t.apply(image, mask)
    if steps.maker is not None:
        mask = steps.maker.predict_mask(image)
    if MASK_PIXELS in names:
        extra[MASK_PIXELS] = np.asarray(-1 if mask is None else int(np.count_nonzero(mask)))
    if steps.keep_raw:
        return {RAW: (image, mask, spacing_um), **extra}
    return {**extra, **{s: prepare_one(steps.slots[s], image, mask, spacing_um) for s in names if s not in SPECIAL}}


def decode(source: Source, mask_path: Any, steps: ImageSteps
           ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float] | None]:
    """The decoding step of every image: ``(image, mask or None, spacing_um)`` under ``steps``'
    reader options, read limits and mask policy (``mask_files``)."""
    image, spacing = load_source(source, steps.options, steps.min_side, steps.max_pixels)
    mask = None
    if steps.mask_files != "none":
        if is_path(mask_path):
            mask = read_mask(mask_path, max_pixels=steps.max_pixels)
            if mask.shape != image.shape[:2]:
                raise InvalidInputError(f"{mask_path}: mask shape {mask.shape} differs from image {image.shape[:2]}")
        elif steps.mask_files == "required":
            raise DataError(f"{source_name(source)}: no mask file given for this image (masks are read from "
                            "files here: give one per image, e.g. a mask_path column in a CSV manifest)")
    return image, mask, spacing


def _one(source: Source, mask_path: Any, needed: Sequence[str] | None, steps: ImageSteps
         ) -> tuple[dict[str, Any] | None, str]:
    try:
        image, mask, spacing = decode(source, mask_path, steps)
        return process_image(image, mask, steps, needed, spacing), ""
    except Exception as exc:  # noqa: BLE001 - one bad image is reported, the run goes on
        message = describe_exception(exc)
        if steps.name_errors and not isinstance(exc, MedfuseError):
            message = f"{source_name(source)}: {message}"
        return None, message


RUN_IMAGES: ContextVar[int | None] = ContextVar("medfuse_run_images", default=None)
"""While :func:`iter_images` processes a chunk: the images of its run, or of every run this process
has prepared when more (None outside one). A plugin may take a path that starts faster for a short
run (``medfuse_plugins._kernels_np``: the NumPy twins of the compiled kernels, no numba)."""
_prepared = [0]  # images this process has prepared in iter_images chunks


def _chunk(items: Sequence[tuple[Source, Any, Sequence[str] | None]], steps: ImageSteps,
           run_images: int | None = None) -> list[tuple[dict[str, Any] | None, str]]:
    token = RUN_IMAGES.set(None if run_images is None else max(run_images, _prepared[0] + len(items)))
    try:
        return [_one(source, mask_path, needed, steps) for source, mask_path, needed in items]
    finally:
        RUN_IMAGES.reset(token)
        _prepared[0] += len(items)


def chunk_length(n: int, workers: int, chunk_size: int) -> int:
    """Images per task: ``chunk_size``, down to 8 so that each of the ``workers`` gets about four tasks."""
    return max(8, min(int(chunk_size), -(-n // (4 * workers)))) if workers > 1 else int(chunk_size)


def iter_images(items: Sequence[tuple[Source, Any, Sequence[str] | None]], steps: ImageSteps, jobs: int = 1,
                chunk_size: int = 32, progress: Progress = False, description: str = "preparing images"
                ) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """Run ``steps`` on each ``(source, mask path, needed slots or None)``; yield ``(position,
    result, error)`` in input order as chunks finish: ``result`` maps slot -> prepared array (or
    :data:`RAW`), ``error`` is ``""`` or why the image failed (then ``result`` is None).

    ``jobs``: worker processes (1 = this process; -1 = every core); a single chunk runs in this
    process. ``progress``: a rich bar on a terminal (``True``) or ``f(done, total, description)``.
    """
    workers = jobs if jobs > 0 else (os.cpu_count() or 1)
    size = chunk_length(len(items), workers, chunk_size)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    if not chunks:
        return
    advance, close = progress_bar(len(items), description, progress)
    try:
        if workers == 1 or len(chunks) <= 1:
            results: Iterable[list[tuple[dict[str, Any] | None, str]]] = (_chunk(c, steps, len(items))
                                                                            for c in chunks)
        else:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=jobs, return_as="generator")(delayed(_chunk)(c, steps, len(items))
                                                                for c in chunks)
        start = 0
        for out in results:
            for k, (result, error) in enumerate(out):
                yield start + k, result, error
            start += len(out)
            advance(len(out))
    finally:
        close()


@dataclass
class PreparedImages:
    """Output of :func:`prepare_images`: one stacked array per slot and one error per image."""

    arrays: dict[str, np.ndarray]
    errors: list[str]
    seconds: float = 0.0

    @property
    def ok(self) -> np.ndarray:
        return np.asarray([not e for e in self.errors], bool)


def prepare_images(paths: Sequence[Source], mask_paths: Sequence[str | None] | None = None,
                   transforms: Sequence[Plugin] = (), mask: Plugin | str | None = None,
                   extractors: Sequence[tuple[str, Plugin]] = (), jobs: int = 1,
                   chunk_size: int = 32, progress: Progress = False,
                   description: str = "extracting", options: ReadOptions | None = None) -> PreparedImages:
    """Decode, transform, mask and ``prepare`` every image; results in the order of ``paths``.

    Parameters
    ----------
    paths : image files, or image arrays (:func:`load_source`).
    mask_paths : one mask file (or ``None``) per image; used when ``mask == "file"``.
    transforms : applied in order to ``(image, mask)``.
    mask : a fitted mask plugin, ``"file"`` (read ``mask_paths``) or ``None`` (no mask).
    extractors : ``(block name, extractor)`` pairs.
    jobs, chunk_size, progress : as :func:`iter_images`.
    options : how files are decoded (bit depth, windowing, fallback spacing; default: the
        documented rule of :mod:`medfuse.imageio`).

    Returns
    -------
    :class:`PreparedImages` whose ``arrays[name]`` is ``(n_images, ...)`` float32, NaN rows where
    an image failed, and ``errors[i]`` is ``""`` or the reason image ``i`` failed.
    """
    paths = [p if isinstance(p, np.ndarray) else str(p) for p in paths]
    masks = list(mask_paths) if mask_paths is not None else [None] * len(paths)
    if len(masks) != len(paths):
        raise InvalidInputError(f"prepare_images: {len(paths)} images but {len(masks)} mask paths")
    from_file = isinstance(mask, str) and mask == MASK_FROM_FILE
    steps = ImageSteps(tuple(transforms), "required" if from_file else "none",
                       mask if isinstance(mask, MaskMaker) else None, dict(extractors), options=options,
                       name_errors=True)
    items = [(p, m if from_file and is_path(m) else None, None) for p, m in zip(paths, masks)]
    start = time.perf_counter()
    results = [(result, error) for _, result, error in iter_images(items, steps, jobs, chunk_size, progress,
                                                                     description)]
    arrays: dict[str, np.ndarray] = {}
    for name, _ in extractors:
        first = next((r[name] for r, _ in results if r is not None), None)
        if first is None:
            arrays[name] = np.full((len(results), 0), np.nan, np.float32)
            continue
        out = np.full((len(results), *first.shape), np.nan, dtype=np.float32)
        for i, (result, _) in enumerate(results):
            if result is not None:
                out[i] = result[name]
        arrays[name] = out
    return PreparedImages(arrays, [e for _, e in results], time.perf_counter() - start)
