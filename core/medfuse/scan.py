"""Parallel scan of image files: each file is read once, hashed and fully decoded.

A scan catches what would otherwise fail deep inside a pipeline (truncated, corrupt, empty or
non-image files, unreadable masks, masks whose shape differs from their image) and gives the
content hash used for duplicate and leakage checks. Work is split into chunks and run with
joblib on ``jobs`` worker processes; a rich progress bar is shown when asked for and when the
output is a terminal.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .imageio import ImageReadError, decode_image_info, read_mask
from .intensity import ReadOptions, current_read_options
from .objects import ObjectRef, crop, object_sha1
from .util.progress import progress_bar

__all__ = ["FileScan", "scan_files", "progress_bar"]


@dataclass
class FileScan:
    """What the scan learnt about one image (and its mask).

    ``sha1``: hash of the image file's bytes ('' when unreadable); ``height``/``width``: decoded
    size (0 when not decodable); ``error``: why the image is unusable ('' when fine);
    ``mask_error``: why the mask is unusable ('' when fine or when there is no mask);
    ``format``/``bit_depth``/``channels``/``spacing_um``: from the decoder's
    :class:`~medfuse.intensity.ImageInfo` (spacing ``None`` when the file states none).
    """

    sha1: str = ""
    height: int = 0
    width: int = 0
    error: str = ""
    mask_error: str = ""
    format: str = ""
    bit_depth: int = 0
    channels: int = 0
    spacing_um: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return not self.error


def _reason(exc: Exception, path: str) -> str:
    """The reason of an ImageReadError without the leading '<path>: '."""
    msg = str(exc)
    return msg[len(path) + 2:] if msg.startswith(path + ": ") else msg


def scan_one(path: str, mask_path: str | None = None, last: dict[str, Any] | None = None,
             options: ReadOptions | None = None) -> FileScan:
    """Read, hash and decode one image (at its stored depth, with the reader ``options``: the bit
    depth and spacing reported are the ones the study's pipelines use); decode its mask and
    compare shapes. An object reference
    ``IMAGE#box=...`` (:mod:`medfuse.objects`) is its box of IMAGE, hashed as ``object_sha1``;
    ``last`` (a dict the caller keeps between calls) holds the last decoded source image, so the
    objects of one image listed together decode it once."""
    out = FileScan()
    ref = ObjectRef.parse(path)
    source = ref.image if ref is not None else path
    if ref is not None and last is not None and last.get("source") == source:
        out.sha1, image, info = last["sha1"], last["image"], last["info"]
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            out.error = f"cannot read file ({exc.strerror or exc})"
            return out
        out.sha1 = hashlib.sha1(data).hexdigest()
        try:
            image, info = decode_image_info(data, source, options=options, native=True)
        except InvalidInputError as exc:  # ImageReadError included
            out.error = _reason(exc, source)
            return out
        except Exception as exc:  # noqa: BLE001 - a decoder crash is a bad file, not a crashed scan
            out.error = f"cannot decode ({type(exc).__name__}: {exc})"
            return out
        if ref is not None and last is not None:
            last.update(source=source, sha1=out.sha1, image=image, info=info)
    if ref is not None:
        out.sha1 = object_sha1(out.sha1, ref)
        try:
            image = crop(image, ref.box, source)
        except InvalidInputError as exc:  # a box outside its image
            out.error = _reason(exc, source)
            return out
    out.height, out.width = int(image.shape[0]), int(image.shape[1])
    out.format, out.bit_depth, out.channels, out.spacing_um = info.format, info.bit_depth, info.channels, info.spacing_um
    if mask_path:
        try:
            mask = read_mask(mask_path)
        except ImageReadError as exc:
            out.mask_error = _reason(exc, str(mask_path))
        except Exception as exc:  # noqa: BLE001
            out.mask_error = f"unreadable mask ({type(exc).__name__}: {exc})"
        else:
            if mask.shape != image.shape[:2]:
                out.mask_error = f"mask shape {mask.shape} does not match image {image.shape[:2]}"
    return out


def _scan_chunk(pairs: Sequence[tuple[str, str | None]], options: ReadOptions | None = None) -> list[FileScan]:
    last: dict[str, Any] = {}
    return [scan_one(p, m, last, options) for p, m in pairs]


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def scan_files(paths: Sequence[str | Path], mask_paths: Sequence[str | Path | None] | None = None,
               jobs: int = 1, progress: bool = False, chunk_size: int = 128,
               description: str = "scanning images", options: ReadOptions | None = None) -> list[FileScan]:
    """Scan ``paths`` (and their masks) in parallel; results are in the order of ``paths``.

    Parameters
    ----------
    paths : image files.
    mask_paths : one mask file or ``None`` per image (``None``: no masks at all).
    jobs : worker processes (1 runs in this process; -1 uses every core).
    progress : show a progress bar (only when stderr is a terminal).
    chunk_size : files per task sent to a worker.
    options : reader options (default: those of an enclosing :func:`medfuse.intensity.reading`
        block, e.g. a study's ``reader`` while its loader runs, else the defaults).
    """
    options = options or current_read_options()
    masks = list(mask_paths) if mask_paths is not None else [None] * len(paths)
    if len(masks) != len(paths):
        raise ValueError(f"scan_files: {len(paths)} images but {len(masks)} mask paths")
    # Anything that is not a path (None, NaN, pd.NA, '') means "no mask".
    pairs = [(str(p), str(m) if isinstance(m, str | Path) and str(m) else None) for p, m in zip(paths, masks)]
    advance, close = progress_bar(len(pairs), description, progress)
    results: list[FileScan] = []
    try:
        if jobs == 1 or len(pairs) <= chunk_size:
            for chunk in _chunks(pairs, chunk_size):
                results.extend(_scan_chunk(chunk, options))
                advance(len(chunk))
        else:
            from joblib import Parallel, delayed

            # Smaller chunks when few files, so that every worker gets some.
            n_workers = jobs if jobs > 0 else os.cpu_count() or 1
            size = max(1, min(chunk_size, -(-len(pairs) // (4 * n_workers))))
            chunks = list(_chunks(pairs, size))
            runner = Parallel(n_jobs=jobs, return_as="generator")
            for chunk, out in zip(chunks, runner(delayed(_scan_chunk)(c, options) for c in chunks)):
                results.extend(out)
                advance(len(chunk))
    finally:
        close()
    return results
