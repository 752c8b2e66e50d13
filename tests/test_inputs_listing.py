"""`medfuse extract`/`score` list a folder as loaders do (medfuse.loading.list_images): hidden files,
macOS `._` companions and files in hidden folders are not images to read."""

from __future__ import annotations

import numpy as np
from medfuse.inputs import list_files, list_inputs
from medfuse.loading import list_images
from PIL import Image


def test_folder_inputs_skip_hidden_files_and_folders(tmp_path):
    img = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    for rel in ("b/a.png", "a.png", "._a.png", ".cache/c.png", "b/.d.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            img.save(tmp_path / rel, format="PNG")
        else:
            (tmp_path / rel).write_text("x")
    want = [str(tmp_path / "a.png"), str(tmp_path / "b" / "a.png")]
    assert list_files(tmp_path) == want
    assert list_inputs(tmp_path)["path"].tolist() == want
    assert sorted(map(str, list_images(tmp_path, recursive=True)[0])) == want  # the loaders' rule
