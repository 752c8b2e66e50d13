"""The one per-image engine (medfuse.engine) and the one input resolver (medfuse.inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from medfuse.contracts import SampleTable
from medfuse.engine import ImageSteps, iter_images, prepare_images
from medfuse.errors import DataError, InvalidInputError
from medfuse.extract import extract_table
from medfuse.fusion import aligned_proba
from medfuse.imageio import ImageReadError
from medfuse.inputs import list_inputs
from medfuse.pipeline import PipelineRunner
from medfuse.scoring import list_inputs as scoring_list_inputs
from test_pipeline import BLOCKS, HOST, TinyStats, study_of, write_samples


@pytest.fixture()
def samples(tmp_path) -> pd.DataFrame:
    s = write_samples(tmp_path / "img", np.linspace(60, 200, 6), np.asarray(["a", "b"] * 3))
    s.loc[2, "mask_path"] = None
    return s


def test_runner_and_extract_give_the_same_rows_and_errors(samples):
    runner = PipelineRunner(study_of({"p": {"blocks": ["stats"], "mask": "dataset", "classifier": {"plugin": "logreg"}}},
                                     BLOCKS), "p", HOST, progress=False)
    prepared = runner.materialize(SampleTable(samples.copy()))
    table = samples.rename(columns={"mask_path": "mask"})[["path", "mask"]]
    df, _ = extract_table(table.assign(mask_path=table["mask"]), [("stats", TinyStats())], mask="file")
    assert prepared.failed["error"].tolist() == [df["error"].iloc[2]]
    assert "s0002.png: no mask file given for this image" in df["error"].iloc[2]
    ok = df["error"] == ""
    stats = [c for c in df.columns if c.startswith("stats.")]
    np.testing.assert_array_equal(prepared.blocks["stats"], df.loc[ok, stats].to_numpy(np.float32))


def test_progress_callback_and_input_order(samples):
    seen: list[tuple[int, int, str]] = []
    prep = prepare_images(samples["path"].tolist(), extractors=[("stats", TinyStats())], chunk_size=4,
                          progress=lambda done, total, what: seen.append((done, total, what)))
    assert seen == [(4, 6, "extracting"), (6, 6, "extracting")]
    assert prep.ok.all() and prep.arrays["stats"].shape == (6, 6)
    steps = ImageSteps(slots={"stats": TinyStats()}, mask_files="required")
    items = [(p, m, None) for p, m in zip(samples["path"], samples["mask_path"])]
    got = list(iter_images(items, steps, jobs=2, chunk_size=2))
    assert [i for i, _, _ in got] == list(range(6))
    assert [bool(e) for _, _, e in got] == [False, False, True, False, False, False]
    with pytest.raises(InvalidInputError, match="mask_files"):
        ImageSteps(mask_files="maybe")


def test_one_input_resolver(samples, tmp_path):
    assert scoring_list_inputs is list_inputs
    one = list_inputs(samples["path"].iloc[0])  # one image: `medfuse score` used to refuse it
    assert one["path"].tolist() == one["read_path"].tolist() == [samples["path"].iloc[0]]
    tsv = tmp_path / "img" / "m.tsv"
    pd.DataFrame({"path": ["s0000.png", "s0001.png"], "mask": ["s0000_mask.png", ""],
                  "label": ["a", "b"]}).to_csv(tsv, sep="\t", index=False)
    m = list_inputs(tsv)
    assert m["path"].tolist() == ["s0000.png", "s0001.png"] and m["label"].tolist() == ["a", "b"]
    assert m["read_path"].tolist() == samples["path"].iloc[:2].tolist()
    assert m["mask_path"].tolist() == [samples["mask_path"].iloc[0], None]
    df, _ = extract_table(str(tsv), [("stats", TinyStats())])
    assert df["path"].tolist() == m["read_path"].tolist() and df["label"].tolist() == ["a", "b"]
    (tmp_path / "gap.csv").write_text("path,label\na.png,x\n,y\n")
    with pytest.raises(DataError, match="1 row\\(s\\) with an empty 'path' value \\(first at row 3\\)"):
        list_inputs(tmp_path / "gap.csv")


def test_aligned_proba_names_a_class_outside_the_labels():
    class Model:
        classes_ = np.asarray(["a", "z"])

        def predict_proba(self, X):
            return np.asarray([[0.25, 0.75]])

    np.testing.assert_array_equal(aligned_proba(Model(), None, np.asarray(["z", "b", "a"])), [[0.75, 0.0, 0.25]])
    with pytest.raises(ValueError, match=r"classes \['z'\] not in the study's labels"):
        aligned_proba(Model(), None, np.asarray(["a", "b"]))


def test_decode_applies_the_read_limits_to_image_and_mask_files(tmp_path):
    from medfuse.engine import decode
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "im.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "mask.png")
    image, mask, _ = decode(str(tmp_path / "im.png"), str(tmp_path / "mask.png"),
                            ImageSteps(mask_files="required", max_pixels=64))
    assert image.shape == (8, 8, 3) and mask.shape == (8, 8)
    with pytest.raises(ImageReadError, match="im.png.*pixels"):  # the image file's header is checked
        decode(str(tmp_path / "im.png"), None, ImageSteps(max_pixels=63))
    with pytest.raises(ImageReadError, match="mask.png.*pixels"):  # and so is the mask file's
        decode(np.zeros((8, 8, 3), np.uint8), str(tmp_path / "mask.png"),
               ImageSteps(mask_files="required", max_pixels=63))
