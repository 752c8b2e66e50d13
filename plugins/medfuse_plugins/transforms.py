"""Image transforms: ``(image, mask) -> (image, mask)``, uint8 RGB in and out, stateless.

Plugins: ``grayscale``, ``resize``, ``equalize``, ``clahe``, ``gaussian_blur``, ``unsharp``,
``hsv``, ``lab``, ``roi_crop``, ``stain_normalize``, ``colour_normalize``. Transforms that change geometry (``resize``,
``roi_crop``) change the mask the same way (nearest neighbour); the others leave it unchanged.

The colour-space helpers (:func:`rgb_to_hsv8`, :func:`rgb_to_lab8`, :func:`rgb_to_lab`,
:func:`rgb_to_xyz`, :func:`lab_to_rgb`) are float32 numpy code shared with the colour extractor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Transform
from medfuse.errors import InvalidInputError

# ---- colour spaces ----------------------------------------------------------------------------

_SRGB_LUT = np.where(np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92,
                     ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4).astype(np.float32)
_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423],
                     [0.212671, 0.715160, 0.072169],
                     [0.019334, 0.119193, 0.950227]], np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)
_XYZ2RGB = np.linalg.inv(_RGB2XYZ).astype(np.float32)
_XYZ_N = np.ascontiguousarray((_RGB2XYZ / _WHITE[:, None]).T)  # linear RGB -> XYZ / white, row vectors


def rgb_to_xyz(image: np.ndarray) -> np.ndarray:
    """CIE XYZ relative to the D65 white (``X/Xn, Y/Yn, Z/Zn``) of uint8 RGB, float32 ``(..., 3)``:
    the linear step of :func:`rgb_to_lab`."""
    return np.take(_SRGB_LUT, image) @ _XYZ_N  # np.take: faster than fancy indexing


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of a uint8 RGB image, float32 ``(..., 3)``: L in [0, 100], a, b ~ [-128, 127]."""
    xyz = rgb_to_xyz(image)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1).astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_lab`: float Lab ``(..., 3)`` to uint8 RGB (clipped)."""
    lab = lab.astype(np.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * _WHITE
    lin = np.clip(xyz @ _XYZ2RGB.T, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.clip(srgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def rgb_to_lab8(image: np.ndarray) -> np.ndarray:
    """Lab encoded as uint8: ``L * 255 / 100``, ``a + 128``, ``b + 128`` (clipped)."""
    lab = rgb_to_lab(image)
    lab[..., 0] *= 2.55
    lab[..., 1:] += 128.0
    return np.clip(lab + 0.5, 0, 255).astype(np.uint8)


def rgb_to_hsv8(image: np.ndarray) -> np.ndarray:
    """HSV encoded as uint8: hue, saturation and value each scaled to 0-255."""
    r, g, b = (image[..., k].astype(np.float32) for k in range(3))
    v = np.maximum(np.maximum(r, g), b)
    c = v - np.minimum(np.minimum(r, g), b)
    s = np.where(v > 0, c / np.maximum(v, 1e-6), 0.0)
    safe = np.maximum(c, 1e-6)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(c > 0, (h / 6.0) % 1.0, 0.0)
    out = np.stack([h * 255.0, s * 255.0, v], axis=-1)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luminance of a uint8 RGB image, uint8 ``(H, W)``."""
    g = image[..., 0] * np.float32(0.299) + image[..., 1] * np.float32(0.587) \
        + image[..., 2] * np.float32(0.114)
    return (g + 0.5).astype(np.uint8)


NORMALIZE = ("none", "equalize", "stretch")
"""Per-image grey normalisations of :func:`normalize_gray` (the ``normalize`` parameter of the
``texture`` and ``hog`` extractors)."""


def normalize_gray(gray: np.ndarray, method: str = "none", smooth: float = 0.0,
                   inside: np.ndarray | None = None) -> np.ndarray:
    """A uint8 grey image normalised against intensity and contrast shift, for features.

    ``smooth``: Gaussian sigma (px) applied first, so that sensor noise is not stretched into
    texture. ``method``: ``"equalize"``: histogram equalisation over the ``inside`` pixels (all
    when None): invariant to any increasing change of the grey levels (gamma, contrast,
    brightness) up to ties; ``"stretch"``: the 1st-99th percentile range of those pixels mapped
    linearly to 0-255 (invariant to contrast and brightness); ``"none"``.
    """
    if method not in NORMALIZE:
        raise InvalidInputError(f"normalize must be one of {', '.join(NORMALIZE)}, got {method!r}")
    if float(smooth) < 0:
        raise InvalidInputError(f"smooth must be a Gaussian sigma >= 0, got {smooth}")
    if float(smooth) > 0:
        from scipy import ndimage as ndi

        gray = np.clip(ndi.gaussian_filter(gray.astype(np.float32), float(smooth)) + 0.5, 0, 255).astype(np.uint8)
    values = gray[inside] if inside is not None else gray.ravel()
    if method == "none" or values.size == 0:
        return gray
    if method == "equalize":
        return Equalize._lut(values)[gray]
    lo, hi = np.percentile(values, [1.0, 99.0])
    out = (gray.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _scale_value(image: np.ndarray, new_v: np.ndarray) -> np.ndarray:
    """Scale RGB so that max(R, G, B) becomes ``new_v``: hue and saturation are kept."""
    v = image.max(axis=-1).astype(np.float32)
    ratio = np.where(v > 0, new_v.astype(np.float32) / np.maximum(v, 1.0), 0.0)
    out = image.astype(np.float32) * ratio[..., None]
    out[v == 0] = new_v[v == 0, None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _rgb3(channel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(channel[..., None], 3, axis=2))


# ---- plugins ----------------------------------------------------------------------------------

class Grayscale(Transform):
    """Grey image (luminance, green channel or channel mean), replicated to three channels.

    Parameters
    ----------
    method
        'luminance' (0.299 R + 0.587 G + 0.114 B), 'green' or 'mean'.
    """

    name: ClassVar[str] = "grayscale"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}

    def __init__(self, method: str = "luminance"):
        self._store_params(locals())

    def _apply(self, image, mask):
        if self.method == "luminance":
            g = to_gray(image)
        elif self.method == "green":
            g = image[..., 1]
        elif self.method == "mean":
            g = (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
        else:
            raise InvalidInputError(f"grayscale: method {self.method!r} is not luminance, green or mean")
        return _rgb3(g), mask


class Resize(Transform):
    """Resize to ``size`` x ``size``: stretched, or keeping the aspect ratio and padding.

    Parameters
    ----------
    size
        Output side in pixels (the output is size x size).
    keep_aspect
        Keep the aspect ratio: scale the long side to size and pad the short one.
    pad_value
        Grey level (0-255) of the padding when keep_aspect is true (mask padding is 0).
    """

    name: ClassVar[str] = "resize"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"size": 24}

    def __init__(self, size: int = 224, keep_aspect: bool = True, pad_value: int = 255):
        self._store_params(locals())

    def _apply(self, image, mask):
        from PIL import Image

        if int(self.size) < 1:
            raise InvalidInputError(f"resize: size must be >= 1, got {self.size}")
        h, w = image.shape[:2]
        n = int(self.size)
        if self.keep_aspect:
            scale = n / max(h, w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        else:
            nh, nw = n, n
        img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))
        m = None if mask is None else np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
        if (nh, nw) == (n, n):
            return np.ascontiguousarray(img), m
        top, left = (n - nh) // 2, (n - nw) // 2
        out = np.full((n, n, 3), int(self.pad_value), np.uint8)
        out[top:top + nh, left:left + nw] = img
        if m is not None:
            mm = np.zeros((n, n), np.uint8)
            mm[top:top + nh, left:left + nw] = m
            m = mm
        return out, m


class Equalize(Transform):
    """Histogram equalisation of the brightness (hue and saturation kept) or of each channel.

    Parameters
    ----------
    per_channel
        Equalise R, G and B separately (changes colours) instead of the brightness.
    """

    name: ClassVar[str] = "equalize"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}

    def __init__(self, per_channel: bool = False):
        self._store_params(locals())

    @staticmethod
    def _lut(channel: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(np.bincount(channel.ravel(), minlength=256)).astype(np.float64)
        lo = cdf[np.flatnonzero(cdf)[0]]
        span = cdf[-1] - lo
        if span <= 0:
            return np.arange(256, dtype=np.uint8)
        return np.clip(np.round((cdf - lo) / span * 255.0), 0, 255).astype(np.uint8)

    def _apply(self, image, mask):
        if self.per_channel:
            return np.stack([self._lut(image[..., c])[image[..., c]] for c in range(3)], axis=-1), mask
        v = image.max(axis=-1)
        return _scale_value(image, self._lut(v)[v]), mask


class Clahe(Transform):
    """Contrast-limited adaptive histogram equalisation (CLAHE) of the brightness.

    Parameters
    ----------
    clip_limit
        Clipping limit in (0, 1]; higher gives more contrast.
    kernel_size
        Tile size in pixels; 0 uses 1/8 of the image side.
    """

    name: ClassVar[str] = "clahe"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"kernel_size": 8}

    def __init__(self, clip_limit: float = 0.01, kernel_size: int = 0):
        self._store_params(locals())

    def _apply(self, image, mask):
        from skimage.exposure import equalize_adapthist

        if not 0 < float(self.clip_limit) <= 1:
            raise InvalidInputError(f"clahe: clip_limit must be in (0, 1], got {self.clip_limit}")
        v = image.max(axis=-1)
        ks = int(self.kernel_size) or None
        eq = equalize_adapthist(v, kernel_size=ks, clip_limit=float(self.clip_limit))
        return _scale_value(image, np.clip(eq * 255.0 + 0.5, 0, 255).astype(np.uint8)), mask


class GaussianBlur(Transform):
    """Gaussian blur of each channel (denoising before sharpening, as in the ALL study).

    Parameters
    ----------
    sigma
        Standard deviation of the Gaussian, in pixels.
    """

    name: ClassVar[str] = "gaussian_blur"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}

    def __init__(self, sigma: float = 1.0):
        self._store_params(locals())

    def _apply(self, image, mask):
        from scipy import ndimage as ndi

        if float(self.sigma) < 0:
            raise InvalidInputError(f"gaussian_blur: sigma must be >= 0, got {self.sigma}")
        out = ndi.gaussian_filter(image.astype(np.float32), sigma=(self.sigma, self.sigma, 0))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask


class Unsharp(Transform):
    """Unsharp-mask sharpening: ``image + amount * (image - gaussian(image, radius))``.

    Parameters
    ----------
    radius
        Sigma (pixels) of the blur that defines the detail removed.
    amount
        How much detail is added back (0 = unchanged).
    """

    name: ClassVar[str] = "unsharp"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}

    def __init__(self, radius: float = 2.0, amount: float = 1.0):
        self._store_params(locals())

    def _apply(self, image, mask):
        from scipy import ndimage as ndi

        f = image.astype(np.float32)
        blur = ndi.gaussian_filter(f, sigma=(self.radius, self.radius, 0))
        out = f + float(self.amount) * (f - blur)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask


class _ColourSpace(Transform):
    """A parameter-free conversion of the RGB image by ``convert`` (uint8 in, uint8 out); mask unchanged."""

    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}
    convert: ClassVar[Callable[[np.ndarray], np.ndarray]]

    def _apply(self, image, mask):
        return self.convert(image), mask


class Hsv(_ColourSpace):
    """HSV colour space, encoded as uint8 (H, S and V each scaled to 0-255)."""

    name: ClassVar[str] = "hsv"
    convert = staticmethod(rgb_to_hsv8)


class Lab(_ColourSpace):
    """CIE Lab (D65) colour space, encoded as uint8 (L * 2.55, a + 128, b + 128)."""

    name: ClassVar[str] = "lab"
    convert = staticmethod(rgb_to_lab8)


class RoiCrop(Transform):
    """Crop around the main cell (largest mask component, or the ``otsu_cell`` mask when no mask
    is given), with padding; the image is returned unchanged when no cell is found.

    Parameters
    ----------
    pad
        Margin around the cell's bounding box, in pixels.
    square
        Grow the shorter side so the crop is square (clipped at the image border).
    """

    name: ClassVar[str] = "roi_crop"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"pad": 2}

    def __init__(self, pad: int = 16, square: bool = True):
        self._store_params(locals())

    def _apply(self, image, mask):
        from .segmentation import bbox, cell_mask, largest_component

        m = mask if mask is not None else cell_mask(image)
        box = bbox(largest_component(m > 0), int(self.pad))
        if box is None:
            return image, mask
        if self.square:
            h, w = image.shape[:2]
            ys, xs = box
            side = max(ys.stop - ys.start, xs.stop - xs.start)

            def grow(s: slice, n: int) -> slice:
                extra = side - (s.stop - s.start)
                start = min(max(s.start - extra // 2, 0), max(n - side, 0))
                return slice(start, min(start + side, n))

            box = (grow(ys, h), grow(xs, w))
        img = np.ascontiguousarray(image[box])
        return img, (None if mask is None else np.ascontiguousarray(mask[box]))


_MACENKO_REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]], np.float32)
_MACENKO_MAXC = np.array([1.9705, 1.0308], np.float32)


class StainNormalize(Transform):
    """Colour normalisation to a reference: Reinhard (Lab mean/std) or Macenko (stain vectors).

    Reinhard matches each Lab channel's mean and standard deviation to ``target_mean`` /
    ``target_std``. Macenko estimates the two stain vectors in optical density (angles at the
    ``alpha`` percentiles of the plane of the two main directions) and maps their
    concentrations onto a fixed reference stain matrix.

    Parameters
    ----------
    method
        'reinhard' or 'macenko'.
    target_mean
        Reinhard: target Lab means [L, a, b] (defaults: a typical PBC image).
    target_std
        Reinhard: target Lab standard deviations [L, a, b].
    alpha
        Macenko: percentile (0-50) of the stain angles taken as the two stains.
    beta
        Macenko: optical-density threshold below which pixels count as background.
    """

    name: ClassVar[str] = "stain_normalize"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}

    def __init__(self, method: str = "reinhard", target_mean: tuple = (79.0, 11.0, 8.0),
                 target_std: tuple = (16.0, 9.0, 14.0), alpha: float = 1.0, beta: float = 0.15):
        self._store_params(locals())

    def _apply(self, image, mask):
        if self.method == "reinhard":
            return self._reinhard(image), mask
        if self.method == "macenko":
            return self._macenko(image), mask
        raise InvalidInputError(f"stain_normalize: method {self.method!r} is not reinhard or macenko")

    def _reinhard(self, image):
        lab = rgb_to_lab(image).reshape(-1, 3)
        mean, std = lab.mean(axis=0), lab.std(axis=0)
        tm = np.asarray(self.target_mean, np.float32)
        ts = np.asarray(self.target_std, np.float32)
        out = (lab - mean) / np.maximum(std, 1e-3) * ts + tm
        return lab_to_rgb(out.reshape(image.shape))

    def _macenko(self, image):
        h, w = image.shape[:2]
        od = -np.log((image.reshape(-1, 3).astype(np.float32) + 1.0) / 256.0)
        keep = od[(od > float(self.beta)).all(axis=1)]
        if len(keep) < 10:
            return image
        _, vecs = np.linalg.eigh(np.cov(keep.T))
        plane = vecs[:, 1:3]
        proj = keep @ plane
        phi = np.arctan2(proj[:, 1], proj[:, 0])
        lo, hi = np.percentile(phi, [self.alpha, 100 - self.alpha])
        v1 = plane @ np.array([np.cos(lo), np.sin(lo)], np.float32)
        v2 = plane @ np.array([np.cos(hi), np.sin(hi)], np.float32)
        stains = np.stack([v1, v2], axis=1) if v1[0] > v2[0] else np.stack([v2, v1], axis=1)
        stains *= np.sign(stains.sum(axis=0, keepdims=True) + 1e-9)
        conc, *_ = np.linalg.lstsq(stains, od.T, rcond=None)
        max_c = np.percentile(conc[:, (od > float(self.beta)).all(axis=1)], 99, axis=1)
        conc *= (_MACENKO_MAXC / np.maximum(max_c, 1e-6))[:, None]
        out = 256.0 * np.exp(-(_MACENKO_REF @ conc)) - 1.0
        return np.clip(out.T.reshape(h, w, 3) + 0.5, 0, 255).astype(np.uint8)


class ColourNormalize(Transform):
    """Per-image colour balance without a reference: grey world or white patch (no fitting).

    ``greyworld`` scales R, G and B so that their means over the image become equal (their
    common value is the mean of the three): a colour cast of the light or the stain is removed,
    the overall brightness is kept. ``white_patch`` scales each channel so that its
    ``percentile``-th value (the bright background of a smear) becomes 255: exposure and the
    cast of the background are removed. Both apply one gain per channel: an image whose channels
    were multiplied by other gains maps (up to rounding and clipping) to the same output under
    ``white_patch``, and to the same output up to one common brightness factor under ``greyworld``.

    Parameters
    ----------
    method
        'greyworld' (equal channel means) or 'white_patch' (each channel's percentile to 255).
    percentile
        white_patch: the percentile (50-100] of each channel mapped to 255.
    """

    name: ClassVar[str] = "colour_normalize"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {}
    METHODS: ClassVar[tuple[str, ...]] = ("greyworld", "white_patch")

    def __init__(self, method: str = "greyworld", percentile: float = 99.0):
        self._store_params(locals())

    def _apply(self, image, mask):
        if self.method not in self.METHODS:
            raise InvalidInputError(f"colour_normalize: method {self.method!r} is not one of "
                                    f"{', '.join(self.METHODS)}")
        pixels = image.reshape(-1, 3).astype(np.float32)
        if self.method == "greyworld":
            ref = pixels.mean(axis=0)
            target = np.full(3, ref.mean(), np.float32)
        else:
            if not 50 < float(self.percentile) <= 100:
                raise InvalidInputError(f"colour_normalize: percentile must be in (50, 100], got {self.percentile}")
            ref = np.percentile(pixels, float(self.percentile), axis=0).astype(np.float32)
            target = np.full(3, 255.0, np.float32)
        gain = np.where(ref > 0, target / np.maximum(ref, 1e-6), 1.0).astype(np.float32)
        out = image.astype(np.float32) * gain
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask


@hookimpl
def medfuse_plugins():
    return [Grayscale, Resize, Equalize, Clahe, GaussianBlur, Unsharp, Hsv, Lab, RoiCrop, StainNormalize,
            ColourNormalize]
