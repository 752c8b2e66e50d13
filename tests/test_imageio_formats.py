"""12/16-bit PNG/TIFF, DICOM and TIFF decoding, spacing, and their rows in the data report.

Every file is generated here (pydicom writes DICOM, tifffile and PIL write TIFF/PNG); pydicom's
bundled ``CT_small.dcm`` is used when it ships with the installed pydicom.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.imageio import ImageReadError, ReadOptions, decode_image, decode_image_info, read_image, read_image_info
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, SecondaryCaptureImageStorage, generate_uid

RAMP12 = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


def dicom_bytes(arr: np.ndarray, syntax=ExplicitVRLittleEndian, bits: int = 12, **attrs) -> bytes:
    """A minimal secondary-capture DICOM file holding ``arr`` (uint16, one or more frames)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    for key, value in attrs.items():
        setattr(ds, key, value)
    if syntax == ExplicitVRLittleEndian:
        ds.PixelData = arr.astype(np.uint16).tobytes()
    else:  # a compressed syntax: the bytes are never decoded in these tests
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7" + bytes(16) + b"\xff\xd9"])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def tiff_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---- 12/16-bit ------------------------------------------------------------------------------------

def test_12bit_png_keeps_its_range():
    arr, info = decode_image_info(png_bytes(RAMP12), "ramp.png")
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[..., 0], (RAMP12.astype(np.uint32) * 255 // 4095).astype(np.uint8))
    assert arr.max() == 255 and info.bit_depth == 12 and info.channels == 1
    # an explicit bit depth gives the old full-16-bit scale; percentiles window on the image
    assert decode_image(png_bytes(RAMP12), options=ReadOptions(bits=16)).max() == 4095 // 257
    win = decode_image(png_bytes(RAMP12), options=ReadOptions(percentiles=(25, 75)))
    assert win.min() == 0 and win.max() == 255 and (win[..., 0] == 0).mean() == pytest.approx(0.25, abs=0.01)
    full = (RAMP12.astype(np.uint32) * 16).astype(np.uint16)  # uses all 16 bits: v // 257 as before
    assert np.array_equal(decode_image(png_bytes(full))[..., 0], (full // 257).astype(np.uint8))
    with pytest.raises(ValueError, match="percentiles"):
        ReadOptions(percentiles=(50, 10))


# ---- DICOM ----------------------------------------------------------------------------------------

def test_dicom_windows_rescale_and_monochrome1():
    plain = decode_image(dicom_bytes(RAMP12), "plain.dcm")[..., 0]
    assert np.array_equal(plain, (RAMP12.astype(np.uint32) * 255 // 4095).astype(np.uint8))  # BitsStored=12

    low = decode_image(dicom_bytes(RAMP12, WindowCenter=1024, WindowWidth=512), "low.dcm")[..., 0]
    high = decode_image(dicom_bytes(RAMP12, WindowCenter=3072, WindowWidth=512), "high.dcm")[..., 0]
    flat = RAMP12.ravel()
    assert low.ravel()[flat <= 700].max() == 0 and low.ravel()[flat >= 1300].min() == 255
    assert 100 < low.ravel()[flat == 1024].mean() < 155
    assert high.ravel()[flat <= 2700].max() == 0 and 100 < high.ravel()[flat == 3072].mean() < 155
    assert not np.array_equal(low, high)

    # rescale slope/intercept come before the window (window in rescaled units)
    rescaled = decode_image(dicom_bytes(RAMP12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1048,
                                        WindowWidth=1024), "rs.dcm")[..., 0]
    assert np.abs(rescaled.astype(int) - low).max() <= 1  # same window up to rounding

    mono1 = decode_image(dicom_bytes(RAMP12, PhotometricInterpretation="MONOCHROME1"), "m1.dcm")[..., 0]
    assert np.array_equal(mono1, 255 - plain)


def test_dicom_multiframe_uses_first_frame_and_pixel_limit():
    frames = np.stack([RAMP12, 4095 - RAMP12])
    arr, info = decode_image_info(dicom_bytes(frames), "mf.dcm")
    assert info.frames == 2 and np.array_equal(arr[..., 0], (RAMP12.astype(np.uint32) * 255 // 4095))
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(dicom_bytes(RAMP12), "big.dcm", max_pixels=100)
    # no .dcm suffix: the DICM preamble is enough
    assert decode_image(dicom_bytes(RAMP12), "noext").shape == (64, 64, 3)


def test_dicom_spacing(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(dicom_bytes(RAMP12, PixelSpacing=[0.1, 0.2]))
    info = read_image_info(path)
    assert info.format == "dicom" and info.bit_depth == 12 and info.channels == 1
    assert info.spacing_um == pytest.approx((100.0, 200.0))
    path.write_bytes(dicom_bytes(RAMP12, ImagerPixelSpacing=[0.15, 0.15]))
    assert read_image_info(path).spacing_um == pytest.approx((150.0, 150.0))


def test_unsupported_transfer_syntax_is_a_bad_file_row(tmp_path):
    from medfuse_plugins.loaders import FolderLoader

    data = dicom_bytes(RAMP12, syntax=JPEGLSLossless)
    with pytest.raises(ImageReadError, match="JPEG-LS"):
        decode_image(data, "c.dcm")
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "ok.dcm").write_bytes(dicom_bytes(RAMP12))
    (tmp_path / "a" / "compressed.dcm").write_bytes(data)
    table = FolderLoader(path=".").load(tmp_path)
    bad = table.report.bad_files
    assert len(table.samples) == 2 and len(bad) == 1 and bad[0]["path"].endswith("compressed.dcm")
    assert "JPEG-LS Lossless" in bad[0]["reason"] and "install one of" in bad[0]["reason"]
    assert "pyjpegls" in bad[0]["reason"] or "pylibjpeg" in bad[0]["reason"]


def test_pydicom_bundled_ct_decodes():
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file("CT_small.dcm")
    except Exception:  # noqa: BLE001 - the data files may be stripped from a slim install
        path = None
    if not path:
        pytest.skip("pydicom's bundled CT_small.dcm is not installed")
    arr, info = decode_image_info(Path(path).read_bytes(), path)
    assert arr.shape == (128, 128, 3) and info.format == "dicom" and info.bit_depth == 16
    assert arr.min() < arr.max() and info.spacing_um is not None


# ---- TIFF -----------------------------------------------------------------------------------------

def test_tiff_16bit_two_channels_float_and_spacing():
    two = np.stack([RAMP12, 4095 - RAMP12], axis=-1)
    arr, info = decode_image_info(tiff_bytes(two, photometric="minisblack", planarconfig="contig",
                                             resolution=(1e4 / 0.5, 1e4 / 0.25), resolutionunit="CENTIMETER"),
                                  "two.tif")
    assert info.channels == 2 and info.bit_depth == 12 and info.spacing_um == pytest.approx((0.25, 0.5))
    assert np.array_equal(arr[..., 0], (RAMP12.astype(np.uint32) * 255 // 4095).astype(np.uint8))
    assert np.array_equal(arr[..., 1], ((4095 - RAMP12).astype(np.uint32) * 255 // 4095)) and arr[..., 2].max() == 0

    hyper = tiff_bytes(np.stack([RAMP12, RAMP12 // 2]), imagej=True, resolution=(2.0, 2.0),
                       metadata={"axes": "CYX", "unit": "um"})
    arr, info = decode_image_info(hyper, "hyper.tif")
    assert info.channels == 2 and info.spacing_um == pytest.approx((0.5, 0.5))
    assert arr[..., 0].max() == 255 and arr[..., 1].max() == 127

    ramp = np.linspace(-1, 3, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr, info = decode_image_info(tiff_bytes(ramp), "f.tif")
    assert info.bit_depth == 32 and arr.min() == 0 and arr.max() == 255 and info.spacing_um is None

    pages = decode_image(tiff_bytes(np.stack([RAMP12, 4095 - RAMP12])), "pages.tif")
    assert np.array_equal(pages[..., 0], (RAMP12.astype(np.uint32) * 255 // 4095))  # first page
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(tiff_bytes(two, photometric="minisblack"), "big.tif", max_pixels=100)

    rgb8 = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(tiff_bytes(rgb8), "rgb.tif"), rgb8)  # 8-bit as before


# ---- data report and a study ----------------------------------------------------------------------

def _radiograph(label: str, rng: np.random.Generator) -> np.ndarray:
    """A 12-bit 32x32 'radiograph': class a has vertical bars, class b a bright disc."""
    yy, xx = np.mgrid[:32, :32]
    base = 800 + rng.normal(0, 60, (32, 32))
    if label == "a":
        base += 1800 * ((xx // 4) % 2)
    else:
        base += 2400 * ((yy - 16) ** 2 + (xx - 16) ** 2 < 90)
    return np.clip(base, 0, 4095).astype(np.uint16)


def write_radiographs(root: Path, n_per_class: int = 8) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            arr = _radiograph(label, rng)
            attrs: dict = {"PixelSpacing": [0.1, 0.1]}
            if i % 2:
                attrs.update(WindowCenter=2048 + 200 * (i % 3), WindowWidth=4000)
            if label == "a" and i == 0:  # one MONOCHROME1 file, stored inverted
                arr, attrs["PhotometricInterpretation"] = 4095 - arr, "MONOCHROME1"
            (root / label / f"{label}{i}.dcm").write_bytes(dicom_bytes(arr, **attrs))


def test_data_report_lists_depths_and_flags_mixed(tmp_path):
    write_radiographs(tmp_path / "data", n_per_class=2)
    (tmp_path / "data" / "b" / "extra.png").write_bytes(png_bytes(np.full((32, 32), 90, np.uint8)))
    r = CliRunner().invoke(main, ["data", str(tmp_path / "data")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "dicom images: bit depth 12 x4; channels 1 x4; spacing um 100x100 um x4" in r.output
    assert "png images: bit depth 8 x1" in r.output
    assert "mixed bit depths in one study: 12 (dicom x4); 8 (png x1)" in r.output
    assert "mixed pixel spacings" in r.output


STUDY = """
[studies.xray]
dataset = { loader = "folder", params = { path = "." } }
evaluation = { folds = 2, seed = 0, bootstrap = 50 }
blocks.colour = { plugin = "colour", params = { bins = 8 } }
blocks.texture = { plugin = "texture" }
[studies.xray.pipelines]
classical = { mask = { plugin = "whole_image" }, blocks = ["colour", "texture"], classifier = { plugin = "random_forest", params = { n_estimators = 50 } } }
"""


def test_compare_runs_on_dicom_radiographs(tmp_path):
    write_radiographs(tmp_path / "data")
    study = tmp_path / "xray.toml"
    study.write_text(STUDY)
    assert read_image(tmp_path / "data" / "a" / "a0.dcm").shape == (32, 32, 3)
    r = CliRunner().invoke(main, ["compare", str(study), "--data", str(tmp_path / "data"), "-q",
                                  "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    run = results["pipelines"]["classical"]
    assert run["status"] == "ok" and results["data"]["n_selected"] == 16
    assert run["metrics"]["accuracy"] >= 0.9
