"""Render ``docs/studies.md`` from :data:`medfuse.study.SCHEMA` so the reference cannot drift.

Regenerate with ``python -m medfuse.studydocs > docs/studies.md``; a test compares the file.
"""

from __future__ import annotations

from .study import SCHEMA

INTRO = """# Study TOML reference

*Generated from `medfuse.study.SCHEMA` by `python -m medfuse.studydocs`; do not edit by hand
(a test fails when this file and the schema disagree).*

A study file holds one or more `[studies.NAME]` tables. Built-in studies live in `registry.toml`;
your own file works the same way: `medfuse validate my.toml`, `medfuse compare my.toml:NAME --data ROOT`.
Paths in `dataset.params` are relative to the data root (`--data ROOT` or `$MEDFUSE_DATA`).
Plugin tables are `{ plugin = "name", params = { ... } }`; `medfuse plugins show NAME` lists a plugin's
parameters, and unknown plugins or parameters are refused with a "did you mean" suggestion. A classifier
can name a block's network instead of repeating its parameters (`network = "cnn"` below): it takes the
block's parameters, and a run trains that network once per fold for both.

```toml
[studies.my-cells]
description = "Blood cells, 8 classes"
dataset = { loader = "folder", params = { path = "pbc" } }
evaluation = { folds = 5, seed = 0 }
reader = { bits = 12, pixel_size_um = 0.5 }  # optional: 12-bit files, 0.5 um per pixel when a file has no spacing
blocks.morphology = { plugin = "morphology" }
blocks.texture = { plugin = "texture", pca = 0.95 }
blocks.cnn = { plugin = "cnn_embedding", params = { size = 64 }, pca = 0.95 }
pipelines.classical = { mask = { plugin = "otsu_cell" }, blocks = ["morphology", "texture"], classifier = { plugin = "xgboost" } }
pipelines.fused = { mask = { plugin = "otsu_cell" }, blocks = ["morphology", "texture", "cnn"], classifier = { plugin = "xgboost" } }
pipelines.deep = { classifier = { plugin = "cnn_classifier", network = "cnn" } }
pipelines.ensemble = { members = ["fused", "deep"], combine = "soft" }
```
"""

OBJECT_STUDY = """
## Object studies end to end: cells inside images

A smear (field of view) holds many cells, annotated by points, boxes or instance masks. With the
`annotations` loader each annotated object is one sample, cut lazily from its image when read
(`IMAGE#box=x0,y0,x1,y1`, no crop files; a box past the border is padded by repeating the edge
pixel, see `medfuse.objects`). The group of every object is its source image, so cross-validation
never puts cells of one smear on both sides of a split. Nothing else changes: blocks, masks,
classifiers, the feature cache, `medfuse data` and `medfuse compare` work on objects as on files.

**Points** (a CSV with one row per cell; columns are named in the study, no loader code):

```text
slide,cx,cy,shape
smear_01.png,40,36,round
smear_01.png,118,80,small
```

```toml
[studies.rbc-points]
description = "Cells from a point list: a 32-pixel crop centred on each point"
dataset = { loader = "annotations", params = { images = "smears", annotations = "points.csv", format = "points", image_column = "slide", x_column = "cx", y_column = "cy", class_column = "shape", size = 32 } }
evaluation = { folds = 3, seed = 0, bootstrap = 100 }
blocks.colour = { plugin = "colour", params = { bins = 8 } }
pipelines.classical = { blocks = ["colour"], classifier = { plugin = "logreg" } }
```

Whitespace text works too: one file per image (same stem as the image) with `x y class` per
line, e.g. `annotations = "points"` holding `smear_01.txt`, `format = "points"`.

**Boxes** (Pascal VOC XML, one file per image), as in the built-in `bccd-cells` study:

```toml
[studies.bccd-boxes]
description = "BCCD: one sample per VOC box"
dataset = { loader = "annotations", params = { images = "bccd/JPEGImages", annotations = "bccd/Annotations", format = "voc", min_size = 5 } }
blocks.morphology = { plugin = "morphology" }
blocks.colour = { plugin = "colour", pca = 0.95 }
pipelines.classical = { mask = { plugin = "otsu_cell" }, blocks = ["morphology", "colour"], classifier = { plugin = "xgboost" } }
```

**Instance masks**: `format = "instances"`, `annotations` a folder of label images (same stem as
the image; 0 background, each other value one cell). The box is the instance's extent and
`mask = "dataset"` gives that instance only (its neighbours are background); classes come from
`table` (columns `image`, `id`, `class`) or are all `default_class`.

Other parameters: `class_map = { wbc = "WBC" }` renames classes (a class missing from it is a
bad annotation), `classes = ["WBC", "RBC"]` keeps only those, `margin` widens boxes, `glob`
picks the annotation files. Run it:

```text
medfuse data $MEDFUSE_DATA/bccd                         # VOC layout found: counts per class, bad lines, overlaps
medfuse validate my.toml
medfuse compare my.toml:rbc-points --data ROOT
```

The data report lists each annotation that gave no object (`bad annotations`: unparseable
file or line, box not inside its image, point outside, box under `min_size`, unknown class,
missing image) and keeps every other object; identical boxes on one image are duplicate samples
(dropped before splitting by `evaluation.dedupe`), and pairs of boxes overlapping with IoU >= 0.5
are counted in a note.
"""

TITLES = {
    "study": "`[studies.NAME]`",
    "dataset": "`dataset`",
    "test": "`test`",
    "block": "`blocks.NAME`",
    "pipeline": "`pipelines.NAME`",
    "evaluation": "`evaluation`",
    "reader": "`reader`",
    "profile": "`profiles.NAME`",
}


IMAGES_STUDY = """
## Images as they come: bit depth, DICOM, TIFF, channels

**Reading.** PNG/JPEG/BMP through PIL, TIFF through `tifffile` (16-bit, float, multi-page: the
first page; an ImageJ/OME channel axis: up to 16 channels), DICOM through `pydicom` (rescale
slope/intercept, VOI LUT or the first window centre/width, `MONOCHROME1`, the first frame). A file
that cannot be decoded (e.g. a transfer syntax without an installed decoder) is a bad-file row
naming the reason. Pixel spacing comes from DICOM `PixelSpacing`/`ImagerPixelSpacing`, TIFF
resolution tags, else `reader.pixel_size_um`; `morphology` with `physical_units = true` reports
`_um`/`_um2` columns from it.

**Bit depth until a plugin decides.** An image deeper than 8 bits, or with other than 3 channels,
reaches plugins at its stored depth and channels (`medfuse.intensity.SourceImage`, `(H, W, C)`).
A plugin declares what it takes with the class attribute `input_dtype`: `"uint8"` (the default, and
what `texture`, `colour`, `morphology` and every built-in plugin declare) gets the 8-bit RGB view
made by one helper, `medfuse.intensity.as_uint8`, with the reader's rule:

| input | 8-bit view |
|---|---|
| 8-bit PNG/JPEG/TIFF | unchanged (features identical to earlier versions) |
| integers deeper than 8 bits | `v * 255 // (2**bits - 1)`; `bits` = DICOM `BitsStored`, else `reader.bits`, else the smallest of 8/10/12/14/16 holding the maximum (a 12-bit PNG 0-4095 keeps its range) |
| DICOM with a window / VOI LUT / rescale | the window's output range (or the rescaled stored range) to 0-255; `MONOCHROME1` inverted after scaling |
| floats | within [0, 1]: times 255; else their own [min, max] |
| `reader.percentiles = [lo, hi]` | each image's own percentile window, replacing the rules above |

`"native"` plugins get the decoded samples (a DICOM's values after its modality and VOI LUTs, as
stored for `MONOCHROME1`; the view's rule is `image.view_rule`). Scaling is fixed per image when it
is decoded, so a channel shown alone has the same values as in the whole image's view.

**Channels to blocks.** `blocks.NAME.channels` lists the channels (0-based, as decoded) a block's
extractor sees (its intensities, and its own fallback mask when the pipeline has none); absent:
every channel (8-bit plugins see the first 3 as RGB, 2 channels as `(c0, c1, 0)`). One channel
reaches an 8-bit plugin as grey. The pipeline's mask is computed once per image; by default on the
whole image's 8-bit view (for a 2-channel image the view's green is channel 1: `otsu_cell` with
`channel = "darkness"`). The mask table takes the same key, `mask = { plugin = "otsu_cell",
channels = [1] }`, so the mask plugin sees only the channel that shows the objects:

```toml
[studies.two-stains]
dataset = { loader = "folder", params = { path = "stains" } }   # 2-channel 16-bit TIFFs
blocks.shape = { plugin = "morphology" }                          # the mask's shape (nucleus, channel 1)
blocks.nucleus_texture = { plugin = "texture", channels = [1] }
blocks.stain_texture = { plugin = "texture", channels = [0] }
blocks.colour = { plugin = "colour" }                             # per-channel statistics, all channels
pipelines.classical = { mask = { plugin = "otsu_cell", params = { channel = "darkness", classes = 2 }, channels = [1] }, blocks = ["shape", "nucleus_texture", "stain_texture", "colour"], classifier = { plugin = "logreg" } }
```

`medfuse validate` refuses an empty list, repeated or negative indices, indices past 15, more than 3
channels for an 8-bit plugin, and `channels` on a selector, a transform or a classifier, naming the
key; an image lacking a listed channel fails with an error naming `studies.NAME.blocks.BLOCK.channels`
(or `studies.NAME.pipelines.P.mask.channels`). The channels are part of the block's (or mask's)
cache key and travel in bundles.

**Data report.** `medfuse data PATH --study STUDY` (or `--bits`, `--percentiles`,
`--pixel-size-um`) and `medfuse compare` decode with the study's `reader`: per file type the bit
depths, channels and spacings found, and a warning when one study mixes bit depths or spacings.
"""


MASKS_STUDY = """
## Named masks: one mask table for several pipelines

A mask plugin table that several pipelines share is written once under `masks.NAME` and named in
each pipeline by `mask = "NAME"` (as `blocks` are named in `blocks = [...]`); the pipeline then
reads exactly as if the table stood in its place (same parameters, `channels`, cache keys and
trained network). `"dataset"` stays the dataset's mask files and cannot be a mask's name; an unknown
name is refused by `medfuse validate` with the key and the defined masks
(`studies.NAME.pipelines.P.mask: unknown mask 'unte' (did you mean 'unet'?); defined masks: unet`).

```toml
masks.unet = { plugin = "unet", params = { width = 8, scale = 0.5, epochs = 12 } }
pipelines.image = { mask = "unet", blocks = ["smear"], classifier = { plugin = "logreg" } }
pipelines.fused = { mask = "unet", blocks = ["smear", "cnn"], classifier = { plugin = "xgboost" } }
```
"""


PROFILES_STUDY = """
## Profiles: opt-in larger recipes (e.g. for a GPU)

A study may declare named profiles that change some parameters of its blocks and of its pipelines'
classifiers; everything else comes from the study. `medfuse compare STUDY --profile NAME` (also
`run`, `train` and `validate`) applies one; without `--profile` the study runs exactly as written,
and that default is what `RESULTS.md` reports. A profile with `requires = "gpu"` is refused before
any data is loaded when TensorFlow sees no GPU (its larger recipes would take hours on a CPU);
`--allow-cpu` runs it anyway. The profile that ran (its name, description and overrides, and the
GPUs TensorFlow saw) is recorded in `results.json` under `settings.profile`, at the top of the
report, and in a bundle's manifest (`study.profile`).

```toml
[studies.my-cells.profiles.gpu]
requires = "gpu"
description = "128 px CNN, 40 epochs: for a lent GPU; not the reported CPU recipe"
blocks.cnn = { size = 128, epochs = 40 }            # the classifiers naming network = "cnn" follow
pipelines.other = { epochs = 40 }                   # a pipeline's own classifier (not an ensemble)
```

`medfuse validate` checks every profile as it checks the study's own parameters: an unknown block or
pipeline, a parameter the plugin does not have, or a value its validation refuses is an error naming
the key, e.g. `studies.my-cells.profiles.gpu.blocks.cnn: plugin 'cnn_embedding': unknown parameter
'sise' (did you mean 'size'?)`.
"""


def render() -> str:
    lines = [INTRO]
    for section, fields in SCHEMA.items():
        lines += [f"\n## {TITLES[section]}\n", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, f in fields.items():
            default = "required" if f.required else f"`{f.default!r}`"
            doc = f.doc + (f" One of: {', '.join(f'`{c}`' for c in f.choices)}." if f.choices else "")
            lines.append(f"| `{key}` | {f.type} | {default} | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n" + OBJECT_STUDY + IMAGES_STUDY + MASKS_STUDY + PROFILES_STUDY


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
