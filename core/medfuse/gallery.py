"""Images of the report's diagnostics: thumbnails of misclassified samples (read from their files)
and saliency overlays (from the maps stored in ``results``), small JPEGs by file name.

Names: ``gallery/<slug>-wrong-<i>.jpg`` (the ``i``-th entry of ``misclassified.samples``) and
``gallery/<slug>-saliency-<i>.jpg`` (``saliency.samples``). An image that cannot be read is left
out (the report then shows the entry without a picture).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from .diagnostics import decode_png

THUMB_SIDE = 96
JPEG_QUALITY = 70


def jpeg(array: np.ndarray, side: int, quality: int = JPEG_QUALITY) -> bytes:
    """``uint8`` RGB image as a JPEG whose longer side is ``side`` (downscaled or upscaled)."""
    img = Image.fromarray(np.ascontiguousarray(array[..., :3] if array.ndim == 3 else array)).convert("RGB")
    scale = side / max(img.size)
    if abs(scale - 1) > 1e-6:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def thumbnail(path: str, side: int) -> bytes | None:
    """JPEG thumbnail of the image at ``path`` (object references ``IMAGE#box=...`` included); None
    when it cannot be read."""
    from .imageio import read_image

    try:
        return jpeg(read_image(path, min_side=side), side)
    except Exception:  # noqa: BLE001 - a missing picture must not lose the report
        return None


def overlay(image_b64: str, map_b64: str, side: int, alpha: float = 0.6) -> bytes:
    """The network's input image with its saliency map blended on top (jet colour map) as a JPEG."""
    from matplotlib import colormaps

    image = decode_png(image_b64).astype(np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    heat = Image.fromarray(decode_png(map_b64)).resize((image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
    h = np.asarray(heat, dtype=np.float32) / 255.0
    colour = colormaps["jet"](h)[..., :3] * 255.0
    weight = alpha * h[..., None]  # none where the map is low: the image stays readable there
    out = (1 - weight) * image[..., :3] + weight * colour
    return jpeg(np.clip(out, 0, 255).astype(np.uint8), side)


def gallery_images(results: dict[str, Any], slug: Callable[[str], str], side: int = THUMB_SIDE,
                   limit: int = 24) -> dict[str, bytes]:
    """Every gallery picture of ``results`` by name: at most ``limit`` misclassified thumbnails per
    pipeline (each file read once even when several pipelines got it wrong) and its saliency overlays."""
    out: dict[str, bytes] = {}
    if side <= 0 or limit <= 0:
        return out
    seen: dict[str, bytes | None] = {}  # each file read once, each overlay blended once
    blended: dict[tuple[str, str], bytes | None] = {}
    for name, p in results["pipelines"].items():
        if p.get("status") != "ok":
            continue
        s = slug(name)
        for i, g in enumerate(((p.get("misclassified") or {}).get("samples") or [])[:limit]):
            path = g.get("path") or ""
            if path not in seen:
                seen[path] = thumbnail(path, side) if path else None
            if seen[path]:
                out[f"gallery/{s}-wrong-{i}.jpg"] = seen[path]
        for i, g in enumerate((p.get("saliency") or {}).get("samples") or []):
            key = (g["image"], g["map"])
            if key not in blended:
                try:
                    blended[key] = overlay(g["image"], g["map"], side)
                except Exception:  # noqa: BLE001 - a bad map loses its picture, not the report
                    blended[key] = None
            if blended[key]:
                out[f"gallery/{s}-saliency-{i}.jpg"] = blended[key]
    return out
