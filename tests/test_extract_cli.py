"""`medfuse extract`: one row per image, bad images as error rows, provenance, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.extract import read_provenance
from medfuse.inputs import list_inputs
from medfuse.testing import sample_cells
from PIL import Image


@pytest.fixture()
def folder(tmp_path):
    images, masks, labels = sample_cells(6, size=40)
    root = tmp_path / "cells"
    (root / "a").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    rows = []
    for i, (im, m, lab) in enumerate(zip(images, masks, labels)):
        Image.fromarray(im).save(root / "a" / f"c{i}.png")
        Image.fromarray((m * 127).astype(np.uint8)).save(tmp_path / "masks" / f"c{i}.png")
        rows.append({"path": f"cells/a/c{i}.png", "mask": f"masks/c{i}.png", "label": lab})
    rgba = np.dstack([images[0], np.full((40, 40), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "a" / "rgba.png")
    Image.fromarray(images[1][..., 1].astype(np.uint16) * 257).save(root / "a" / "grey16.png")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path


def test_folder_to_parquet_with_error_rows_and_provenance(folder):
    out = folder / "f.parquet"
    res = CliRunner().invoke(main, ["extract", str(folder / "cells"), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert len(df) == 9 and df.columns[0] == "path" and df.columns[-1] == "error"
    blocks = {c.split(".")[0] for c in df.columns[1:-1]}
    assert blocks == {"morphology", "texture", "colour"}
    bad = df[df["error"] != ""]
    assert list(bad["path"].str.rsplit("/", n=1).str[-1]) == ["broken.jpg"]
    assert "JPEG" in bad["error"].iloc[0]
    assert bad.drop(columns=["path", "error"]).isna().all(axis=None)
    name = df["path"].str.rsplit("/", n=1).str[-1]
    valid = dict(zip(name, df["morphology.valid"]))
    assert valid["rgba.png"] == 1 and all(valid[f"c{i}.png"] == 1 for i in range(6))
    # a 16-bit grey image decodes; with no stain colour the B-G channel is flat, so the default
    # otsu_cell mask is empty: documented NaN features with valid = 0, not an error
    assert valid["grey16.png"] == 0 and df.loc[name == "grey16.png", "error"].iloc[0] == ""
    prov = read_provenance(out)
    assert prov["n_images"] == 9 and prov["n_errors"] == 1
    assert prov["mask"]["name"] == "otsu_cell"
    assert prov["blocks"]["texture"]["params"]["levels"] == 32
    assert prov["blocks"]["morphology"]["version"]


def test_manifest_with_mask_files_to_csv_and_sidecar(folder):
    out = folder / "f.csv"
    res = CliRunner().invoke(main, ["extract", str(folder / "manifest.csv"), "--mask", "file",
                                    "--blocks", "morphology", "--out", str(out), "--no-progress",
                                    "--set", "morphology.pixel_size=0.5"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(df.columns[:2]) == ["path", "label"] and len(df) == 6
    assert df["error"].isna().all()
    masks = sample_cells(6, size=40)[1]
    assert df["morphology.area"].iloc[0] == pytest.approx((masks[0] > 0).sum() * 0.25)
    prov = json.loads((folder / "f.csv.json").read_text())
    assert prov["mask"] == {"name": "file"} and prov["blocks"]["morphology"]["params"]["pixel_size"] == 0.5


def test_glob_input_and_bad_options(folder):
    assert len(list_inputs(str(folder / "cells" / "a" / "c*.png"))) == 6
    runner = CliRunner()
    res = runner.invoke(main, ["extract", str(folder / "nothing*.png"), "--out", str(folder / "x.csv")])
    assert res.exit_code != 0 and "glob matches no files" in res.output
    res = runner.invoke(main, ["extract", str(folder / "cells"), "--blocks", "textur", "--out", str(folder / "x.csv")])
    assert res.exit_code != 0 and "did you mean 'texture'" in res.output
    res = runner.invoke(main, ["extract", str(folder / "cells"), "--out", str(folder / "x.txt"), "--no-progress"])
    assert res.exit_code != 0 and ".parquet or .csv" in res.output


def test_two_jobs_give_the_same_table(folder):
    from medfuse.extract import extract_table
    from medfuse.host import get_host

    host = get_host()
    paths = sorted(str(p) for p in (folder / "cells" / "a").glob("c*.png")) * 3  # 18 images, 3 chunks
    table = pd.DataFrame({"path": paths, "mask_path": [None] * len(paths)})
    ex = [("texture", host.create("texture", {"lbp": [[8, 1]]})), ("colour", host.create("colour"))]
    mask = host.create("otsu_cell")
    one, _ = extract_table(table, ex, mask=mask, jobs=1, chunk_size=8)
    two, prov = extract_table(table, ex, mask=mask, jobs=2, chunk_size=8)
    pd.testing.assert_frame_equal(one, two)
    assert prov["jobs"] == 2


def test_classical_extract_does_not_import_tensorflow(folder):
    code = (
        "import sys\n"
        "from medfuse.cli import main\n"
        f"main(['extract', {str(folder / 'cells')!r}, '--out', {str(folder / 't.parquet')!r}, '--no-progress'],"
        " standalone_mode=False)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('HEAVY', heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HEAVY []" in res.stdout, res.stdout


@pytest.mark.dataset
def test_real_pbc_cells_get_a_mask_and_finite_features(data_root):
    """Two PBC images per class: the default otsu_cell mask finds a cell with a nucleus in each."""
    from medfuse.extract import extract_table
    from medfuse.host import get_host

    pbc = data_root / "pbc"
    if not pbc.is_dir():
        pytest.skip(f"{pbc} not found")
    paths = [str(p) for d in sorted(pbc.iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg"))[:2]]
    host = get_host()
    ex = [(n, host.create(n)) for n in ("morphology", "texture", "colour")]
    df, prov = extract_table(pd.DataFrame({"path": paths, "mask_path": [None] * len(paths)}), ex,
                             mask=host.create("otsu_cell"))
    assert (df["error"] == "").all() and prov["n_errors"] == 0
    assert df["morphology.valid"].eq(1).all() and df["morphology.has_nucleus"].eq(1).all()
    assert df["morphology.nucleus_fraction"].between(0.05, 1.0).all()
    assert np.isfinite(df.filter(like="texture.").to_numpy()).all()
