"""Images keep their bit depth until a plugin asks for 8 bits; channels map to blocks; the data
report decodes with the study's reader options (#16). Every file is generated here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.contracts import Extractor
from medfuse.extract import prepare_images
from medfuse.imageio import read_image, read_image_with_info
from medfuse.intensity import SourceImage, as_uint8
from medfuse.study import load_studies
from medfuse_plugins.colour import Colour
from medfuse_plugins.morphology import Morphology
from medfuse_plugins.segmentation import OtsuCell
from medfuse_plugins.texture import Texture
from PIL import Image
from test_imageio_formats import RAMP12


class _Probe(Extractor):
    """What reached ``_prepare``: max, min, channels, bytes per sample and the sum of samples."""

    name: ClassVar[str] = "probe"
    block: ClassVar[str] = "probe"

    def feature_names(self) -> list[str]:
        return ["max", "min", "channels", "itemsize", "sum"]

    def _prepare(self, image, mask):
        a = np.asarray(image)
        return np.asarray([a.max(), a.min(), a.shape[2], a.itemsize, a.astype(np.float64).sum()], np.float64)


class NativeProbe(_Probe):
    name: ClassVar[str] = "native_probe"
    input_dtype: ClassVar[str] = "native"


def _png16(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr.astype(np.uint16)).save(path)
    return path


def test_native_plugin_gets_the_stored_range_and_uint8_plugin_the_readers_view(tmp_path):
    path = _png16(tmp_path / "ramp12.png", RAMP12)
    out = prepare_images([str(path), RAMP12.astype(np.uint16)],
                         extractors=[("n", NativeProbe()), ("u", _Probe())])
    assert out.errors == ["", ""]
    for row in range(2):  # a file and an API array alike
        native, view = out.arrays["n"][row], out.arrays["u"][row]
        assert native[:4].tolist() == [4095, 0, 1, 2]  # 12-bit values, one channel, uint16
        assert view[:4].tolist() == [255, 0, 3, 1]  # the 8-bit RGB view ...
        assert view[4] == read_image(path).astype(np.float64).sum()  # ... exactly read_image's


def test_8bit_png_features_are_unchanged_and_deep_copies_match(tmp_path):
    """8-bit input gives the same features as before #16 (values pinned on the old code), and the
    same pixels stored as 16-bit (v * 257) give identical 8-bit features."""
    rng = np.random.default_rng(3)
    rgb = np.clip(rng.normal(140, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
    rgb[10:30, 12:28] = (200, 90, 160)
    png = tmp_path / "cell.png"
    Image.fromarray(rgb).save(png)
    tif = tmp_path / "cell16.tif"
    tifffile.imwrite(tif, rgb.astype(np.uint16) * 257, photometric="rgb")
    blocks = [("colour", Colour(bins=8)), ("texture", Texture()), ("morphology", Morphology())]
    out = prepare_images([str(png), str(tif)], extractors=blocks)
    assert out.errors == ["", ""]
    for name, plugin in blocks:
        direct = plugin.prepare(read_image(png))
        assert np.array_equal(out.arrays[name][0], direct.astype(np.float32), equal_nan=True), name
        assert np.array_equal(out.arrays[name][1], out.arrays[name][0], equal_nan=True), name
    pinned = {"colour": 22045.676737, "texture": 396.914786, "morphology": 1347.955169}  # measured on 064d406
    for name, value in pinned.items():
        assert float(np.nansum(out.arrays[name][0].astype(np.float64))) == pytest.approx(value, rel=1e-5), name


def test_source_image_keeps_its_rule_through_pickle_and_channel_views(tmp_path):
    two = np.stack([RAMP12, 4095 - RAMP12], axis=-1).astype(np.uint16)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, two, photometric="minisblack", planarconfig="contig")
    image, info = read_image_with_info(path, native=True)
    assert isinstance(image, SourceImage) and image.shape == (64, 64, 2) and image.dtype == np.uint16
    back = pickle.loads(pickle.dumps(image))
    assert back.view_rule == image.view_rule and np.array_equal(as_uint8(back), read_image(path))
    grey1 = as_uint8(image, channels=[1])  # channel 1 alone, scaled as in the whole image
    assert np.array_equal(grey1[..., 0], read_image(path)[..., 1]) and np.array_equal(grey1[..., 0], grey1[..., 2])
    with pytest.raises(ValueError, match=r"channel 2 does not exist; this image has 2 channels"):
        as_uint8(image, channels=[2])


# ---- channels mapped to blocks: a 2-channel 16-bit TIFF study ---------------------------------------

def _two_channel(label: str, i: int, rng: np.random.Generator) -> np.ndarray:
    """Channel 0: a stain with noise everywhere; channel 1: a dark (stained) nucleus disc on a bright
    background whose size is the class (radius 6 for a, 11 for b). 16-bit, values far above 255.
    The pipeline's mask (otsu_cell on darkness, i.e. the view's green = channel 1) finds the disc."""
    yy, xx = np.mgrid[:48, :48]
    radius = (6 if label == "a" else 11) + (i % 2)
    stain = 9000 + rng.normal(0, 3000, (48, 48))
    nucleus = 50000 - 40000 * ((yy - 24) ** 2 + (xx - 24) ** 2 <= radius**2) + rng.normal(0, 500, (48, 48))
    return np.clip(np.stack([stain, nucleus]), 0, 65535).astype(np.uint16)


MASK = '{ plugin = "otsu_cell", params = { channel = "darkness", classes = 2 } }'
MASK_NUCLEUS = '{ plugin = "otsu_cell", params = { channel = "darkness", classes = 2 }, channels = [1] }'


def write_two_channel_study(root: Path, channels: str = "[1]", mask: str = MASK) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / "data" / label).mkdir(parents=True)
        for i in range(8):
            tifffile.imwrite(root / "data" / label / f"{label}{i}.tif", _two_channel(label, i, rng),
                             imagej=True, metadata={"axes": "CYX"})
    study = root / "two.toml"
    study.write_text(f"""
[studies.two]
dataset = {{ loader = "folder", params = {{ path = "." }} }}
evaluation = {{ folds = 2, seed = 0, bootstrap = 20, shortcuts = false }}
blocks.morphology = {{ plugin = "morphology", channels = {channels} }}
blocks.stain = {{ plugin = "texture", channels = [0] }}
blocks.nucleus = {{ plugin = "texture", channels = [1] }}
blocks.colour = {{ plugin = "colour", params = {{ bins = 8 }} }}
[studies.two.pipelines.classical]
mask = {mask}
blocks = ["morphology", "stain", "nucleus", "colour"]
classifier = {{ plugin = "random_forest", params = {{ n_estimators = 30 }} }}
""")
    return study


def test_two_channel_16bit_tiff_study_maps_channels_to_blocks(tmp_path):
    from medfuse.pipeline import PipelineRunner

    study_path = write_two_channel_study(tmp_path)
    study = load_studies(study_path)["two"]
    assert study.blocks["morphology"].channels == [1] and study.blocks["colour"].channels is None
    from medfuse.host import get_host

    host = get_host()
    data = host.create("folder", {"path": str(tmp_path / "data")}, kind="loader").load(tmp_path / "data")
    prepared = PipelineRunner(study, "classical", host=host, cache_dir=None, progress=False).materialize(data)
    names = list(Morphology().feature_names())
    area = prepared.blocks["morphology"][:, names.index("area")]
    radius = np.where(prepared.samples["label"] == "a", 6, 11) + np.asarray([int(Path(p).stem[1:]) % 2
                                                                           for p in prepared.samples["path"]])
    assert np.allclose(area, np.pi * radius.astype(float) ** 2, rtol=0.2)  # the nucleus channel's disc
    first = str(prepared.samples["path"].iloc[0])
    image = read_image_with_info(first, native=True)[0]
    prepared_mask = OtsuCell(channel="darkness", classes=2).predict_mask(image)
    for block, channel in (("stain", 0), ("nucleus", 1)):  # each texture block saw its own channel
        direct = Texture().prepare(as_uint8(image, [channel]), prepared_mask)
        assert np.allclose(prepared.blocks[block][0], direct, equal_nan=True), block
    assert not np.allclose(prepared.blocks["stain"][0], prepared.blocks["nucleus"][0], equal_nan=True)

    r = CliRunner().invoke(main, ["compare", str(study_path), "--data", str(tmp_path / "data"), "-q",
                                  "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    run = results["pipelines"]["classical"]
    assert run["status"] == "ok" and run["metrics"]["accuracy"] >= 0.9


def test_a_channel_the_image_lacks_fails_naming_the_study_key(tmp_path):
    from medfuse.pipeline import PipelineRunner

    study = load_studies(write_two_channel_study(tmp_path, channels="[2]"))["two"]
    from medfuse.errors import DataError
    from medfuse.host import get_host

    host = get_host()
    data = host.create("folder", {"path": str(tmp_path / "data")}, kind="loader").load(tmp_path / "data")
    with pytest.raises(DataError, match=r"studies\.two\.blocks\.morphology\.channels = \[2\]: channel 2 does "
                                        r"not exist; this image has 2 channels"):
        PipelineRunner(study, "classical", host=host, cache_dir=None, progress=False).materialize(data)


def _morphology_area(study_path: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The morphology block's area of every sample of the 2-channel study, and its disc's area."""
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner

    host = get_host()
    data = host.create("folder", {"path": str(root / "data")}, kind="loader").load(root / "data")
    prepared = PipelineRunner(load_studies(study_path)["two"], "classical", host=host, cache_dir=None,
                              progress=False).materialize(data)
    area = prepared.blocks["morphology"][:, list(Morphology().feature_names()).index("area")]
    radius = np.where(prepared.samples["label"] == "a", 6, 11) + np.asarray([int(Path(p).stem[1:]) % 2
                                                                           for p in prepared.samples["path"]])
    return area, np.pi * radius.astype(float) ** 2


def test_mask_channels_pick_the_channel_the_mask_plugin_sees(tmp_path):
    """#16: `mask = { plugin = ..., channels = [1] }`: the mask plugin sees channel 1 alone (as grey),
    so otsu_cell (on darkness) finds channel 1's nucleus disc; with `channels = [0]` it sees the
    noisy stain and the area no longer matches the disc."""
    area, want = _morphology_area(write_two_channel_study(tmp_path, mask=MASK_NUCLEUS), tmp_path)
    assert np.allclose(area, want, rtol=0.2)
    study = load_studies(tmp_path / "two.toml")["two"]
    assert study.pipelines["classical"].mask.channels == [1]
    noise = MASK_NUCLEUS.replace("channels = [1]", "channels = [0]")
    area0, _ = _morphology_area(write_two_channel_study(tmp_path / "noise", mask=noise), tmp_path / "noise")
    assert not np.allclose(area0, want, rtol=0.2)


_MASK_REF = 'pipelines.p = {{ mask = {}, blocks = ["shape"], classifier = {{ plugin = "logreg" }} }}'
_PLAIN = 'pipelines.p = { blocks = ["shape"], classifier = { plugin = "logreg" } }'


def _channels_case(where: str, ref: str, message: str) -> tuple[str, str, str, str]:
    """(blocks.shape line, pipeline line, the key the error must name, message) for one bad ``channels``."""
    if where == "mask":
        return ('{ plugin = "morphology" }', _MASK_REF.format(ref), "studies.bad.pipelines.p.mask.channels", message)
    return (ref, _PLAIN, "studies.bad.blocks.shape.channels", message)


_BAD_CHANNELS = [  # (where, channels value, plugin, message)
    ("mask", "[16]", "otsu_cell", "channel index 16 is out of range"),
    ("mask", "[1, 1]", "otsu_cell", "channel indices repeat"),
    ("mask", "[]", "otsu_cell", "at least one channel index"),
    ("mask", '"1"', "otsu_cell", "expected a list of integers"),
    ("mask", "[0, 1, 2, 3]", "otsu_cell", "takes 8-bit RGB images: give it at most 3 channels"),
    ("block", "[-1]", "morphology", "channel index -1 is out of range"),
    ("block", "[16]", "morphology", "channel index 16 is out of range"),
    ("block", "[0, 0]", "morphology", "channel indices repeat"),
    ("block", "[]", "morphology", "at least one channel index"),
    ("block", '["1"]', "morphology", "expected a list of integers"),
    ("block", "[0, 1, 2, 3]", "colour", "takes 8-bit RGB images: give it at most 3 channels"),
]


@pytest.mark.parametrize(("block", "pipeline", "key", "message"),
                         [_channels_case(w, f'{{ plugin = "{p}", channels = {c} }}', m) for w, c, p, m in _BAD_CHANNELS])
def test_validate_refuses_bad_channels_naming_the_key(tmp_path, block, pipeline, key, message):
    """A bad ``channels`` on a block or on a mask: ``medfuse validate`` names that key and the problem."""
    study = tmp_path / "bad.toml"
    study.write_text(f"""
[studies.bad]
dataset = {{ loader = "folder", params = {{ path = "." }} }}
blocks.shape = {block}
{pipeline}
""")
    r = CliRunner().invoke(main, ["validate", str(study)])
    assert r.exit_code == 1
    assert key in r.output and message in r.output, r.output


# ---- the data report decodes as the study does ------------------------------------------------------

def test_data_report_uses_the_readers_options(tmp_path):
    """Two 12-bit PNGs, one dark (max 900: inferred 10-bit): by default the report flags mixed
    depths; with the study's `reader.bits = 12` (or --bits 12) every file is 12-bit, and the
    study's `pixel_size_um` is the spacing shown."""
    data = tmp_path / "data" / "a"
    data.mkdir(parents=True)
    _png16(data / "bright.png", RAMP12)
    _png16(data / "dark.png", RAMP12 % 900)
    study = tmp_path / "s.toml"
    study.write_text("""
[studies.s]
dataset = { loader = "folder", params = { path = "." } }
reader = { bits = 12, pixel_size_um = 0.5 }
blocks.colour = { plugin = "colour" }
pipelines.p = { blocks = ["colour"], classifier = { plugin = "logreg" } }
""")
    plain = CliRunner().invoke(main, ["data", str(tmp_path / "data")], catch_exceptions=False)
    assert plain.exit_code == 0 and "mixed bit depths in one study" in plain.output
    for flags in (["--study", str(study)], ["--bits", "12", "--pixel-size-um", "0.5"]):
        r = CliRunner().invoke(main, ["data", str(tmp_path / "data"), *flags, "--json", str(tmp_path / "r.json")],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "png images: bit depth 12 x2; channels 1 x2; spacing um 0.5x0.5 um x2" in r.output
        assert "mixed bit depths" not in r.output
        payload = json.loads((tmp_path / "r.json").read_text())
        assert payload["reader"] == {"bits": 12, "percentiles": None, "pixel_size_um": 0.5}


@pytest.mark.slow
def test_bundle_keeps_block_channels_and_scores_as_in_training(tmp_path):
    """A bundle of the 2-channel study scores files exactly as training prepared them: the blocks'
    and the mask's channels travel in the bundle (they are not constructor parameters)."""
    import medfuse
    from medfuse.host import get_host
    from medfuse.pipeline import PipelineRunner
    from medfuse.training import train_bundle

    study = load_studies(write_two_channel_study(tmp_path, mask=MASK_NUCLEUS))["two"]
    out = train_bundle(study, "classical", tmp_path / "data", tmp_path / "bundle", cv=False, progress=False)
    bundle = medfuse.load_bundle(out)
    channels = {fb.name: getattr(fb.plugin, "input_channels", None) for fb in bundle.pipeline.blocks_}
    assert channels == {"morphology": (1,), "stain": (0,), "nucleus": (1,), "colour": None}
    assert bundle.pipeline.mask_maker_.input_channels == (1,)
    assert bundle.pipeline.mask_maker_.input_channels_where == "studies.two.pipelines.classical.mask.channels"
    host = get_host()
    data = host.create("folder", {"path": str(tmp_path / "data")}, kind="loader").load(tmp_path / "data")
    prepared = PipelineRunner(study, "classical", host=host, cache_dir=None, progress=False).materialize(data)
    training = bundle.pipeline.predict_proba(prepared, np.arange(len(prepared.y)))
    scored = bundle.predict(list(prepared.samples["path"]))
    assert (scored["error"] == "").all()
    assert np.allclose(scored[[f"proba.{c}" for c in bundle.classes]].to_numpy(), training, atol=1e-9)


@pytest.mark.parametrize(("line", "key"), [
    ('transforms = [{ plugin = "equalize", channels = [0] }], blocks = ["shape"], classifier = { plugin = "logreg" }',
     "transforms[0].channels"),
    ('blocks = ["shape"], classifier = { plugin = "logreg", channels = [0] }', "classifier.channels"),
])
def test_channels_only_on_masks_and_blocks(tmp_path, line, key):
    study = tmp_path / "bad.toml"
    study.write_text(f"""
[studies.bad]
dataset = {{ loader = "folder", params = {{ path = "." }} }}
blocks.shape = {{ plugin = "morphology" }}
pipelines.p = {{ {line} }}
""")
    r = CliRunner().invoke(main, ["validate", str(study)])
    assert r.exit_code == 1
    assert f"studies.bad.pipelines.p.{key}" in r.output and "only a mask or a block takes `channels`" in r.output, \
        r.output
