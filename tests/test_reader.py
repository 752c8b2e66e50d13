"""A study's `reader` table: parsing, the engine and bundles decode with it, cache keys, physical units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from medfuse.errors import StudyError
from medfuse.intensity import ReadOptions
from medfuse.study import load_studies
from PIL import Image
from test_imageio_formats import dicom_bytes, tiff_bytes

STUDY = """
[studies.toy]
dataset = { loader = "folder", params = { path = "data" } }
evaluation = { folds = 2, seed = 0, shortcuts = false, bootstrap = 10 }
READER
blocks.colour = { plugin = "colour" }
pipelines.plain = { blocks = ["colour"], classifier = { plugin = "logreg" } }
"""


def study_file(tmp_path, reader: str = "", name: str = "study.toml"):
    path = tmp_path / name
    path.write_text(STUDY.replace("READER", reader))
    return path


def test_reader_table_parses_into_read_options(tmp_path):
    study = load_studies(study_file(tmp_path, "reader = { bits = 12, percentiles = [1, 99], pixel_size_um = 0.5 }"))
    assert study["toy"].reader == ReadOptions(bits=12, percentiles=(1.0, 99.0), pixel_size_um=0.5)
    assert load_studies(study_file(tmp_path, "", "plain.toml"))["toy"].reader == ReadOptions()
    assert ReadOptions.from_dict(study["toy"].reader.to_dict()) == study["toy"].reader


@pytest.mark.parametrize(("reader", "key", "message"), [
    ("reader = { bist = 12 }", "studies.toy.reader.bist", "did you mean 'bits'"),
    ("reader = { pixel_size = 0.5 }", "studies.toy.reader.pixel_size", "did you mean 'pixel_size_um'"),
    ("reader = { bits = 40 }", "studies.toy.reader.bits", "between 1 and 32"),
    ("reader = { bits = 1.5 }", "studies.toy.reader.bits", "expected an integer"),
    ("reader = { percentiles = [99, 1] }", "studies.toy.reader.percentiles", "0 <= low < high <= 100"),
    ("reader = { percentiles = [1, 50, 99] }", "studies.toy.reader.percentiles", "[low, high]"),
    ("reader = { percentiles = \"1,99\" }", "studies.toy.reader.percentiles", "a list of numbers"),
    ("reader = { pixel_size_um = 0 }", "studies.toy.reader.pixel_size_um", "> 0"),
    ("reader = 12", "studies.toy.reader", "expected a table"),
])
def test_reader_errors_name_file_key_and_suggest(tmp_path, reader, key, message):
    path = study_file(tmp_path, reader)
    with pytest.raises(StudyError) as err:
        load_studies(path)
    text = str(err.value)
    assert str(path) in text and key in text and message in text


def write_12bit(root, n: int = 8, size: int = 32) -> list:
    """12-bit RGB TIFFs of a purple cell on a bright background, two classes by the cell's colour;
    every image's maximum is below 1024, so without `bits = 12` each would be read as 10-bit
    (4x brighter): the decode rule matters."""
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    cell = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 3) ** 2)[..., None]
    paths = []
    for label, level in (("dark", (350, 200, 600)), ("bright", (450, 250, 700))):
        (root / label).mkdir(parents=True)
        for i in range(n):
            arr = np.where(cell, rng.normal(level, 40, (size, size, 3)), rng.normal(900, 30, (size, size, 3)))
            path = root / label / f"{label}{i}.tif"
            tifffile.imwrite(path, np.clip(arr, 0, 1000).astype(np.uint16), photometric="rgb")
            paths.append(path)
    return paths


def test_bundle_trained_with_bits_12_scores_as_in_training(tmp_path):
    import medfuse
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner
    from medfuse.training import train_bundle

    paths = write_12bit(tmp_path / "data")
    study = load_studies(study_file(tmp_path, "reader = { bits = 12 }"))["toy"]
    out = train_bundle(study, "plain", tmp_path, tmp_path / "bundle", cv=False, progress=False)
    bundle = medfuse.load_bundle(out)
    assert bundle.manifest["inputs"]["reader"] == {"bits": 12, "percentiles": None, "pixel_size_um": None}
    runner = PipelineRunner(study, "plain", host=get_host(), progress=False)
    loader = get_host().create("folder", {"path": "data"}, kind="loader")
    prepared = runner.materialize(loader.load(tmp_path))
    training = bundle.pipeline.predict_proba(prepared, np.arange(len(prepared.y)))
    scored = bundle.predict([tmp_path / p for p in prepared.samples["path"]])
    assert (scored["error"] == "").all()
    assert np.allclose(scored[[f"proba.{c}" for c in bundle.classes]].to_numpy(), training, atol=1e-9)
    assert len(paths) == len(scored)


def test_cache_key_changes_with_reader_options(tmp_path):
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner

    write_12bit(tmp_path / "data", n=3)
    loader = get_host().create("folder", {"path": "data"}, kind="loader")
    data = loader.load(tmp_path)
    cache = tmp_path / "cache"
    found = {}
    for reader in ("", "reader = { bits = 12 }", "reader = { bits = 12, pixel_size_um = 0.5 }",
                   "reader = { percentiles = [1, 99] }"):
        study = load_studies(study_file(tmp_path, reader, f"s{len(found)}.toml"))["toy"]
        runner = PipelineRunner(study, "plain", host=get_host(), cache_dir=cache, progress=False)
        first = runner.materialize(data)
        again = runner.materialize(data)
        assert first.cache_stats["hits"] == 0, reader  # never a stale array from another reader
        assert again.cache_stats["hits"] == len(data.samples)  # the same reader reuses its own
        found[reader] = (runner._chain_key(), runner._acq_key("0" * 40, ""), first.blocks["colour"])
    assert len({k for k, _, _ in found.values()}) == len(found)
    assert len({a for _, a, _ in found.values()}) == len(found)
    assert not np.allclose(found[""][2], found["reader = { bits = 12 }"][2])  # the rule changed the colours


def disc(size: int = 48, radius: int = 12) -> np.ndarray:
    """A dark disc on a bright 16-bit background (a cell for otsu_cell)."""
    yy, xx = np.mgrid[:size, :size]
    arr = np.full((size, size), 50000, np.uint16)
    arr[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius ** 2] = 10000
    return arr


def test_morphology_physical_units_from_file_and_study_spacing(tmp_path):
    from medfuse.extract import extract_table
    from medfuse.host import get_host

    (tmp_path / "a.dcm").write_bytes(dicom_bytes(disc(), bits=16, PixelSpacing=[0.0005, 0.0005]))  # 0.5 um
    (tmp_path / "b.tif").write_bytes(tiff_bytes(disc(), resolution=(1e4 / 2.0, 1e4 / 2.0), resolutionunit="CENTIMETER"))
    Image.fromarray(disc()).save(tmp_path / "c.png")  # no spacing in the file
    Image.fromarray(((disc() < 30000) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    paths = pd.DataFrame({"path": [str(tmp_path / n) for n in ("a.dcm", "b.tif", "c.png")],
                          "mask_path": [str(tmp_path / "mask.png")] * 3})
    host = get_host()
    plain = host.create("morphology", {}, kind="extractor")
    physical = host.create("morphology", {"physical_units": True}, kind="extractor")
    mask = "file"
    before, _ = extract_table(paths, [("morphology", plain)], mask=mask)
    df, prov = extract_table(paths, [("morphology", physical)], mask=mask,
                             options=ReadOptions(pixel_size_um=0.25))
    assert (df["error"] == "").all(), df["error"]
    pixel_cols = [c for c in before.columns if c.startswith("morphology.")]
    pd.testing.assert_frame_equal(df[pixel_cols], before[pixel_cols])  # pixel columns unchanged
    assert {"morphology.area_um2", "morphology.perimeter_um", "morphology.nucleus_area_um2"} <= set(df.columns)
    spacing = np.array([0.5, 2.0, 0.25])  # DICOM (mm -> um), TIFF (um), the study's fallback for the PNG
    assert df["morphology.area"].gt(400).all()
    assert np.allclose(df["morphology.area_um2"], df["morphology.area"] * spacing ** 2, rtol=1e-5)
    assert np.allclose(df["morphology.perimeter_um"], df["morphology.perimeter"] * spacing, rtol=1e-5)
    assert prov["reader"]["pixel_size_um"] == 0.25
    nothing, _ = extract_table(paths.iloc[[2]], [("morphology", physical)], mask=mask)
    assert np.isnan(nothing["morphology.area_um2"]).all() and nothing["morphology.area"].gt(400).all()


def test_engine_passes_spacing_to_morphology(tmp_path):
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            cell = disc(radius=12 + 2 * i + (label == "b")) < 30000
            rgb = np.where(cell[..., None], np.float64([140, 80, 200]), np.float64([230, 230, 230]))  # a purple cell
            rgb[disc(radius=6) < 30000] = [80, 20, 160]  # and its nucleus
            rgb = np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(tmp_path / "data" / label / f"{i}.png")
    text = STUDY.replace("READER", "reader = { pixel_size_um = 0.5 }").replace(
        'blocks.colour = { plugin = "colour" }',
        'blocks.colour = { plugin = "morphology", params = { physical_units = true } }').replace(
        "pipelines.plain = { blocks", 'pipelines.plain = { mask = { plugin = "otsu_cell" }, blocks')
    (tmp_path / "s.toml").write_text(text)
    study = load_studies(tmp_path / "s.toml")["toy"]
    runner = PipelineRunner(study, "plain", host=get_host(), progress=False)
    loader = get_host().create("folder", {"path": "data"}, kind="loader")
    block = runner.materialize(loader.load(tmp_path)).blocks["colour"]
    names = runner.blocks[0].plugin.feature_names()
    area, area_um2 = block[:, names.index("area")], block[:, names.index("area_um2")]
    assert np.all(area > 300) and np.allclose(area_um2, area * 0.25)
