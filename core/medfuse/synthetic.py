"""Synthetic cells, smears and datasets with known ground truth, for tests and the demo.

* :func:`make_cells`: single-cell images (``uint8 (size, size, 3)``) with canonical masks
  (0 background, 1 cell, 2 nucleus) and a lab-like table row; classes differ in several
  properties at once (size, elongation, outline lobes, stain hue, granularity, nucleus size and
  lobes), each drawn with per-cell variation so that no single property separates them.
* :func:`make_smear`: a full-field smear of touching red cells with instance labels and an
  exact cell count.
* :func:`write_dataset`: writes cells as a folder dataset (images, 0/128/255 masks like the
  WBC set, ``table.csv``); the same seed gives byte-identical files.
* :func:`study_toml`: a two-pipeline study (shape features alone, or with colour) of that dataset.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, class index, cell
index)``, so a cell does not change when ``n_per_class`` or the other classes change.
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CellProfile", "SyntheticCell", "make_cells", "make_smear", "write_dataset", "PROFILES"]


@dataclass(frozen=True)
class CellProfile:
    """Class-level means of the drawn properties (each cell jitters around them).

    Parameters
    ----------
    radius : cell radius as a fraction of the image side.
    elongation : ratio of the long to the short axis (1 = round).
    outline_lobes, outline_amp : number and relative amplitude of bumps on the outline.
    hue : stain hue of the cytoplasm in [0, 1] (HSV).
    granules : granule density (granules per 100 cytoplasm pixels).
    nucleus : nucleus radius as a fraction of the cell radius.
    nucleus_lobes : number of nuclear lobes (1 = one round nucleus).
    wbc, crp, mcv : mean lab values of the class (the informative table columns).
    """

    radius: float
    elongation: float
    outline_lobes: int
    outline_amp: float
    hue: float
    granules: float
    nucleus: float
    nucleus_lobes: int
    wbc: float
    crp: float
    mcv: float


PROFILES: dict[str, CellProfile] = {
    "round": CellProfile(0.30, 1.05, 0, 0.00, 0.92, 0.4, 0.62, 1, 6.5, 3.0, 88.0),
    "elongated": CellProfile(0.27, 1.55, 0, 0.00, 0.72, 1.2, 0.45, 1, 8.0, 8.0, 92.0),
    "lobed": CellProfile(0.33, 1.15, 5, 0.07, 0.83, 2.5, 0.34, 3, 10.0, 15.0, 85.0),
}


def _profile(name: str, index: int) -> CellProfile:
    """The preset profile of ``name``, or one derived deterministically from the name."""
    if name in PROFILES:
        return PROFILES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return CellProfile(
        radius=float(rng.uniform(0.24, 0.36)), elongation=float(rng.uniform(1.0, 1.7)),
        outline_lobes=int(rng.choice([0, 0, 4, 5, 6])), outline_amp=float(rng.uniform(0.03, 0.08)),
        hue=float((0.65 + 0.09 * index + rng.uniform(-0.03, 0.03)) % 1.0),
        granules=float(rng.uniform(0.2, 3.0)), nucleus=float(rng.uniform(0.3, 0.65)),
        nucleus_lobes=int(rng.integers(1, 5)), wbc=float(rng.uniform(5, 11)),
        crp=float(rng.uniform(2, 16)), mcv=float(rng.uniform(82, 95)),
    )


@dataclass
class SyntheticCell:
    """One synthetic cell.

    ``image``: ``uint8 (H, W, 3)``; ``mask``: ``uint8 (H, W)`` in {0, 1, 2}; ``label``: class
    name; ``table``: lab-like values (floats, NaN when missing); ``id``: unique sample id;
    ``group``: the synthetic patient the cell comes from.
    """

    image: np.ndarray
    mask: np.ndarray
    label: str
    table: dict[str, float]
    id: str = ""
    group: str = ""
    params: dict[str, float] = field(default_factory=dict)


TABLE_COLUMNS = ("WBC", "CRP", "MCV", "HGB", "PLT", "age")
"""Lab columns of :func:`make_cells`: WBC, CRP and MCV depend on the class; HGB, PLT and age
are noise. About 5 % of WBC, CRP and PLT values are missing (NaN)."""


def _draw_cell(profile: CellProfile, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    radius = size * profile.radius * rng.uniform(0.82, 1.18)
    elong = max(1.0, profile.elongation * rng.uniform(0.85, 1.15))
    angle = rng.uniform(0, np.pi)
    cy, cx = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    a, b = radius * np.sqrt(elong), radius / np.sqrt(elong)  # same area as a disc of ``radius``
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho = np.hypot(u / a, v / b)
    theta = np.arctan2(v / b, u / a)
    lobes = profile.outline_lobes + (int(rng.integers(-1, 2)) if profile.outline_lobes else 0)
    amp = profile.outline_amp * rng.uniform(0.5, 1.5) if lobes else 0.0
    boundary = 1.0 + amp * np.cos(lobes * theta + rng.uniform(0, 2 * np.pi))
    cell = rho < boundary

    # Nucleus: one disc, or several lobes on an arc (like a segmented neutrophil).
    n_lobes = max(1, profile.nucleus_lobes + (int(rng.integers(-1, 2)) if profile.nucleus_lobes > 1 else 0))
    nuc_r = radius * profile.nucleus * rng.uniform(0.8, 1.2)
    ncy, ncx = cy + rng.uniform(-0.12, 0.12) * radius, cx + rng.uniform(-0.12, 0.12) * radius
    nucleus = np.zeros_like(cell)
    if n_lobes == 1:
        ne, na = rng.uniform(1.0, 1.3), rng.uniform(0, np.pi)
        nu = (xx - ncx) * np.cos(na) + (yy - ncy) * np.sin(na)
        nv = -(xx - ncx) * np.sin(na) + (yy - ncy) * np.cos(na)
        nucleus = np.hypot(nu / (nuc_r * ne), nv / (nuc_r / ne)) < 1.0
    else:
        spread = radius * 0.38
        start = rng.uniform(0, 2 * np.pi)
        for k in range(n_lobes):
            t = start + k * (1.6 * np.pi / n_lobes)
            ly, lx = ncy + spread * np.sin(t), ncx + spread * np.cos(t)
            lr = nuc_r * rng.uniform(0.85, 1.15)
            nucleus |= np.hypot(xx - lx, yy - ly) < lr
    nucleus &= ndi.binary_erosion(cell, iterations=1)
    mask = cell.astype(np.uint8)
    mask[nucleus] = 2

    # Colours: background, stained cytoplasm, dark nucleus; jittered per cell.
    bg = np.array([232, 222, 228], np.float32) + rng.normal(0, 5, 3)
    hue = (profile.hue + rng.normal(0, 0.035)) % 1.0
    cyto = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.25, 0.45), rng.uniform(0.72, 0.86)), np.float32) * 255
    nuc = np.array(colorsys.hsv_to_rgb((0.76 + rng.normal(0, 0.02)) % 1.0, rng.uniform(0.5, 0.7),
                                       rng.uniform(0.35, 0.5)), np.float32) * 255
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    img[mask == 1] = cyto
    img[mask == 2] = nuc
    # Granules: small dark dots in the cytoplasm, density set by the class.
    granules = profile.granules * rng.uniform(0.6, 1.4)
    cyto_idx = np.flatnonzero(mask.ravel() == 1)
    n_gran = int(rng.poisson(granules * cyto_idx.size / 100.0)) if cyto_idx.size else 0
    if n_gran:
        picks = rng.choice(cyto_idx, size=min(n_gran, cyto_idx.size), replace=False)
        dots = np.zeros(size * size, np.float32)
        dots[picks] = 1.0
        dots = ndi.gaussian_filter(dots.reshape(size, size), 0.7) * 4.0
        img -= np.clip(dots, 0, 1)[..., None] * (cyto - nuc * 0.8)[None, None, :] * 0.6
    # Optics: slight blur, illumination gradient, sensor noise.
    img = ndi.gaussian_filter(img, sigma=(0.8, 0.8, 0))
    gy, gx = rng.normal(0, 0.04, 2)
    img *= (1.0 + gy * (yy / size - 0.5) + gx * (xx / size - 0.5))[..., None]
    img += rng.normal(0, 4.0, img.shape)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    params = {"radius": float(radius), "elongation": float(elong), "outline_lobes": float(lobes),
              "hue": float(hue), "granules": float(granules), "nucleus_lobes": float(n_lobes)}
    return image, mask, params


def _table_row(profile: CellProfile, rng: np.random.Generator) -> dict[str, float]:
    row = {
        "WBC": rng.normal(profile.wbc, 2.0),
        "CRP": max(0.1, rng.normal(profile.crp, 5.0)),
        "MCV": rng.normal(profile.mcv, 5.0),
        "HGB": rng.normal(13.0, 1.5),
        "PLT": rng.normal(250.0, 60.0),
        "age": float(rng.integers(18, 90)),
    }
    row = {k: round(float(v), 2) for k, v in row.items()}
    for key in ("WBC", "CRP", "PLT"):
        if rng.random() < 0.05:
            row[key] = float("nan")
    return row


def make_cells(n_per_class: int = 20, classes: Sequence[str] = ("round", "elongated", "lobed"),
               size: int = 64, seed: int = 0, cells_per_patient: int = 4) -> list[SyntheticCell]:
    """Synthetic single-cell images with masks, labels and table rows.

    Parameters
    ----------
    n_per_class : cells per class.
    classes : class names; ``round``, ``elongated`` and ``lobed`` have preset profiles
        (:data:`PROFILES`), other names get a profile derived from the name.
    size : image side in pixels (images are ``(size, size, 3)``); at least 16.
    seed : random seed; the same seed gives identical cells.
    cells_per_patient : consecutive cells of a class share a patient id (``group``).

    Returns
    -------
    list of :class:`SyntheticCell`, grouped by class, ids ``<class>_<nnnn>``.
    """
    if size < 16:
        raise ValueError(f"make_cells: size must be >= 16 pixels, got {size}")
    if n_per_class < 1 or not classes:
        raise ValueError("make_cells: need n_per_class >= 1 and at least one class")
    if len(set(classes)) != len(classes):
        raise ValueError(f"make_cells: class names must be unique, got {list(classes)}")
    out: list[SyntheticCell] = []
    for ci, name in enumerate(classes):
        profile = _profile(name, ci)
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, ci, i])
            image, mask, params = _draw_cell(profile, size, rng)
            out.append(SyntheticCell(image, mask, str(name), _table_row(profile, rng),
                                     id=f"{name}_{i:04d}",
                                     group=f"{name}_p{i // max(1, cells_per_patient):03d}",
                                     params=params))
    return out


def make_smear(size: tuple[int, int] = (256, 256), n_cells: int = 30, seed: int = 0,
               radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A full-field smear of red cells, many of them touching, with a known count.

    Parameters
    ----------
    size : ``(H, W)`` of the image.
    n_cells : exact number of cells drawn (every label 1..n_cells is present).
    seed : random seed.
    radius : mean cell radius in pixels (default ``min(H, W) / 16``).

    Returns
    -------
    image : ``uint8 (H, W, 3)``; pale pink cells with a central pallor on a light background.
    instance_labels : ``int32 (H, W)``; 0 background, ``k`` for the k-th cell. Where two cells
        overlap, each pixel belongs to the cell whose (scaled) centre is nearest.
    """
    h, w = int(size[0]), int(size[1])
    r0 = float(radius) if radius else min(h, w) / 16.0
    rng = np.random.default_rng(seed)
    centres: list[tuple[float, float, float]] = []
    tries = 0
    while len(centres) < n_cells:
        tries += 1
        if tries > 20000:
            raise ValueError(f"make_smear: cannot place {n_cells} cells of radius ~{r0:.1f} px in a "
                             f"{h}x{w} image; lower n_cells or radius")
        r = r0 * rng.uniform(0.85, 1.15)
        if centres and rng.random() < 0.6:  # touch an existing cell (clusters, chains)
            py, px, pr = centres[int(rng.integers(len(centres)))]
            t = rng.uniform(0, 2 * np.pi)
            dist = (pr + r) * rng.uniform(0.88, 1.0)
            cy, cx = py + dist * np.sin(t), px + dist * np.cos(t)
        else:
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        if not (r * 0.8 <= cy <= h - r * 0.8 and r * 0.8 <= cx <= w - r * 0.8):
            continue
        if all(np.hypot(cy - y, cx - x) >= (r + q) * 0.86 for y, x, q in centres):
            centres.append((cy, cx, r))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    best = np.full((h, w), np.inf, np.float32)
    labels = np.zeros((h, w), np.int32)
    pallor = np.zeros((h, w), np.float32)
    for k, (cy, cx, r) in enumerate(centres, start=1):
        d = np.hypot(yy - cy, xx - cx) / r
        take = (d < 1.0) & (d < best)
        best[take] = d[take]
        labels[take] = k
        pallor[take] = np.clip(1.0 - d[take] / 0.45, 0, 1)
    bg = np.array([228, 218, 222], np.float32)
    cell = np.array([214, 128, 132], np.float32) + rng.normal(0, 4, 3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = bg
    inside = labels > 0
    rim = np.clip((best - 0.75) / 0.25, 0, 1)  # darker rim near the membrane
    img[inside] = cell * (1.0 - 0.12 * rim[inside, None]) + (bg - cell) * 0.55 * pallor[inside, None]
    img = ndi.gaussian_filter(img, sigma=(1.0, 1.0, 0))
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), labels


def write_dataset(root: str | Path, n_per_class: int = 20, size: int = 64, seed: int = 0,
                  classes: Sequence[str] = ("round", "elongated", "lobed")) -> Path:
    """Write :func:`make_cells` output as a folder dataset; return ``root``.

    Layout: ``root/images/<class>/<id>.png``, ``root/masks/<class>/<id>.png`` (0 background,
    128 cell, 255 nucleus, like the WBC set) and ``root/table.csv`` with columns
    ``id, label, patient`` and :data:`TABLE_COLUMNS` (missing values empty). Load it with the
    ``folder`` loader: ``{path="images", masks="masks", table="table.csv",
    group_column="patient"}``. Same arguments give byte-identical files.
    """
    from PIL import Image

    root = Path(root)
    cells = make_cells(n_per_class=n_per_class, classes=classes, size=size, seed=seed)
    coding = np.array([0, 128, 255], np.uint8)
    lines = [",".join(["id", "label", "patient", *TABLE_COLUMNS])]
    for c in cells:
        for sub, arr in (("images", c.image), ("masks", coding[c.mask])):
            folder = root / sub / c.label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / f"{c.id}.png", optimize=False)
        values = ["" if np.isnan(c.table[k]) else f"{c.table[k]:.2f}" for k in TABLE_COLUMNS]
        lines.append(",".join([c.id, c.label, c.group, *values]))
    (root / "table.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def study_toml(name: str = "synthetic", *, folds: int = 3, bootstrap: int = 50, description: str | None = None,
               shortcuts: bool | None = None, colour_pca: float | None = None, fused: str = "both") -> str:
    """Study file text for a :func:`write_dataset` folder: pipelines ``shape`` (``morphology``) and ``fused``
    (``morphology`` + ``colour`` with 8 bins, PCA ``colour_pca`` on colour when given), logistic regression.

    ``folds``/``bootstrap``/``shortcuts`` go to ``evaluation`` (``shortcuts`` only when given; seed 0).
    """
    evaluation = f"folds = {folds}, seed = 0, bootstrap = {bootstrap}"
    if shortcuts is not None:
        evaluation += f", shortcuts = {str(bool(shortcuts)).lower()}"
    pca = "" if colour_pca is None else f", pca = {colour_pca}"
    logreg = 'classifier = { plugin = "logreg" }'
    lines = [f"[studies.{name}]",
             *([f'description = "{description}"'] if description else []),
             'dataset = { loader = "folder", params = { path = "images", masks = "masks", table = "table.csv", '
             'group_column = "patient" } }',
             f"evaluation = {{ {evaluation} }}",
             'blocks.morphology = { plugin = "morphology" }',
             f'blocks.colour = {{ plugin = "colour", params = {{ bins = 8 }}{pca} }}',
             f"[studies.{name}.pipelines]",
             f'shape = {{ mask = "dataset", blocks = ["morphology"], {logreg} }}',
             f'{fused} = {{ mask = "dataset", blocks = ["morphology", "colour"], {logreg} }}']
    return "\n".join(lines) + "\n"
