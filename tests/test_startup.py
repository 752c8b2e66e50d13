"""Start-up stays light (issue 15): a command imports only what it uses.

Each case runs in a fresh interpreter and lists ``sys.modules`` at the end: ``import medfuse``,
``medfuse --help``, building the plugin host (every plugin module is imported) and a whole
``medfuse extract`` of one image must not import TensorFlow, Keras, scikit-learn or XGBoost
(about a second or more each); the classical extraction does not need scikit-image, pandas'
plotting, jinja2 or matplotlib either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "sklearn", "xgboost", "onnxruntime", "skimage", "jinja2", "matplotlib")


def modules_after(code: str) -> set[str]:
    """Top-level names of the modules imported by ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(REPO / "core"), str(REPO / "plugins"),
                                           *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def cli(*args: str) -> str:
    """Code running ``medfuse ARGS`` in-process (no exit), as the console script does."""
    return ("from medfuse.cli import main\n"
            f"try:\n    main({list(args)!r}, standalone_mode=False)\nexcept SystemExit:\n    pass")


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    """A small stained-cell-like image: a dark purple disk on a light background."""
    yy, xx = np.mgrid[:48, :48]
    image = np.full((48, 48, 3), 225, np.uint8)
    image[(yy - 24) ** 2 + (xx - 24) ** 2 < 150] = (120, 60, 160)
    image[(yy - 24) ** 2 + (xx - 24) ** 2 < 40] = (60, 20, 110)
    path = tmp_path_factory.mktemp("startup") / "cell.png"
    Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize("what, code", [
    ("import medfuse", "import medfuse"),
    ("medfuse --help", cli("--help")),
    ("medfuse extract --help", cli("extract", "--help")),
    ("the plugin host (every plugin module)", "from medfuse.host import get_host\nget_host()"),
])
def test_light_commands_import_no_heavy_library(what: str, code: str) -> None:
    loaded = modules_after(code)
    assert not loaded & set(HEAVY), f"{what} imports {sorted(loaded & set(HEAVY))}"
    assert "numba" not in loaded, f"{what} imports numba (only running a compiled kernel needs it)"


def test_extract_one_image_imports_no_heavy_library(one_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.parquet"
    loaded = modules_after(cli("extract", str(one_image), "--out", str(out), "--no-progress", "-q"))
    assert out.is_file(), "the extraction did not write its table"
    assert not loaded & set(HEAVY), f"medfuse extract imports {sorted(loaded & set(HEAVY))}"


# ---- no pandas, no numba on the one-image path (issue 15: start-up under 1 s) ----------------------
TABLE_LIBS = ("pandas", "pyarrow", "scipy")  # ~0.4, 0.1 and 0.2 s of start-up that registering plugins needs not


def test_plugin_host_imports_no_pandas_or_scipy() -> None:
    loaded = modules_after("from medfuse.host import get_host\nget_host()")
    assert not loaded & set(TABLE_LIBS), f"the plugin host imports {sorted(loaded & set(TABLE_LIBS))}"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_extract_one_image_imports_no_pandas_or_numba(one_image: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"one.{fmt}"
    loaded = modules_after(cli("extract", str(one_image), "--out", str(out), "--no-progress", "-q"))
    assert out.is_file(), "the extraction did not write its table"
    assert "pandas" not in loaded, f"medfuse extract --out one.{fmt} imports pandas (a folder, glob or image needs none)"
    assert not loaded & {"numba", "llvmlite", "scipy"}, (
        f"a one-image run imports {sorted(loaded & {'numba', 'llvmlite', 'scipy'})}: it should use the NumPy kernels")
    if fmt == "csv":
        assert "pyarrow" not in loaded, "a CSV table is written without pyarrow"


def test_columns_writer_writes_what_pandas_wrote(tmp_path: Path) -> None:
    """The pandas-free writer: the same CSV bytes as ``DataFrame.to_csv`` and the same Arrow table
    as ``pa.Table.from_pandas`` (NaN, empty and quoted text, int and text labels)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from medfuse.extract import write_columns

    def text(*values: object) -> np.ndarray:
        out = np.empty(len(values), object)
        out[:] = values
        return out

    base = {"path": text("a.png", 'b,"q".png', "c d.png"),
            "f.x": np.array([0.1, np.nan, 1e20], np.float32),
            "f.y": np.array([1 / 3, -0.0, 2.5e-8], np.float32),
            "error": text("", "unreadable, really", "")}
    for label in (np.array([1, 2, 3]), text("x", None, "y")):
        cols = {"path": base["path"], "label": label, **{k: v for k, v in base.items() if k != "path"}}
        frame = pd.DataFrame(cols)
        write_columns(cols, tmp_path / "new.csv", {"k": 1})
        frame.to_csv(tmp_path / "old.csv", index=False)
        assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
        write_columns(cols, tmp_path / "new.parquet", {"k": 1})
        new = pq.read_table(tmp_path / "new.parquet")
        old = pa.Table.from_pandas(frame, preserve_index=False)
        assert new.schema.remove_metadata().equals(old.schema.remove_metadata())
        assert new.replace_schema_metadata(None).equals(old.replace_schema_metadata(None))
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "new.parquet"), frame)
