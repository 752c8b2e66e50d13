"""The reader flags (--bits, --percentiles, --pixel-size-um) are declared once (cli.common.reader_flags)
and mean the same in `medfuse extract` and `medfuse data`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from medfuse.cli import main
from PIL import Image


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 4095).astype(np.uint16)).save(path)
    return path


def test_extract_records_the_reader_flags_and_refuses_a_bad_window(tmp_path: Path) -> None:
    image = _image(tmp_path)
    out = tmp_path / "x.csv"
    flags = ["--bits", "12", "--percentiles", "1,99", "--pixel-size-um", "0.5"]
    result = CliRunner().invoke(main, ["extract", str(image), "--out", str(out), "--blocks", "colour",
                                       "--no-progress", *flags])
    assert result.exit_code == 0, result.output
    reader = json.loads(Path(f"{out}.json").read_text())["reader"]
    assert reader == {"bits": 12, "percentiles": [1.0, 99.0], "pixel_size_um": 0.5}

    bad = CliRunner().invoke(main, ["extract", str(image), "--out", str(tmp_path / "y.csv"), "--percentiles", "1"])
    assert bad.exit_code == 2 and "--percentiles" in bad.output and "LOW,HIGH" in bad.output


def test_data_and_extract_offer_the_same_reader_flags() -> None:
    def reader_params(name: str) -> dict[str, tuple]:
        import click

        command = main.get_command(click.Context(main), name)
        return {p.name: (p.opts, p.type.name) for p in command.params
                if p.name in ("bits", "percentiles", "pixel_size_um")}

    assert reader_params("data") == reader_params("extract")
    assert set(reader_params("data")) == {"bits", "percentiles", "pixel_size_um"}
