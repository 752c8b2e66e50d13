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
parameters, and unknown plugins or parameters are refused with a "did you mean" suggestion.

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
pipelines.deep = { classifier = { plugin = "cnn_classifier", params = { size = 64 } } }
pipelines.ensemble = { members = ["fused", "deep"], combine = "soft" }
```
"""

TITLES = {
    "study": "`[studies.NAME]`",
    "dataset": "`dataset`",
    "test": "`test`",
    "block": "`blocks.NAME`",
    "pipeline": "`pipelines.NAME`",
    "evaluation": "`evaluation`",
    "reader": "`reader`",
}


def render() -> str:
    lines = [INTRO]
    for section, fields in SCHEMA.items():
        lines += [f"\n## {TITLES[section]}\n", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, f in fields.items():
            default = "required" if f.required else f"`{f.default!r}`"
            doc = f.doc + (f" One of: {', '.join(f'`{c}`' for c in f.choices)}." if f.choices else "")
            lines.append(f"| `{key}` | {f.type} | {default} | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
