"""Object references (a box inside an image) read lazily, with the border rule."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.imageio import read_image, read_mask
from medfuse.objects import ObjectRef, crop, point_box
from PIL import Image


def test_crop_inside_and_past_the_border_repeats_the_edge():
    img = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6)
    assert np.array_equal(crop(img, (1, 2, 4, 4)), img[2:4, 1:4])
    out = crop(img, (-2, 3, 3, 7))
    assert out.shape == (4, 5)
    assert np.array_equal(out[0, :2], [img[3, 0]] * 2)      # left pad = first column
    assert np.array_equal(out[-1], out[1])                  # bottom pad repeats the last row
    with pytest.raises(InvalidInputError, match="outside"):
        crop(img, (6, 0, 9, 2))


def test_point_box_is_centred():
    assert point_box(10, 20, 8) == (6, 16, 14, 24)
    assert point_box(10, 20, (4, 6)) == (8, 17, 12, 23)


def test_object_reference_reads_the_box_of_image_and_mask(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "smear.png")
    labels = np.zeros((40, 50), np.uint8)
    labels[10:20, 5:15] = 255
    Image.fromarray(labels).save(tmp_path / "smear_mask.png")
    ref = ObjectRef(str(tmp_path / "smear.png"), (5, 10, 15, 20))
    assert ObjectRef.parse(ref.path) == ref
    assert np.array_equal(read_image(ref.path), arr[10:20, 5:15])
    assert read_mask(str(tmp_path / "smear_mask.png") + "#box=5,10,15,20").min() == 1
    assert ObjectRef.parse(tmp_path / "smear.png") is None
    with pytest.raises(InvalidInputError, match="empty object box"):
        ObjectRef("x.png", (5, 5, 5, 9))


def test_a_real_file_named_like_a_reference_is_read_as_that_file(tmp_path):
    arr = np.full((8, 8, 3), 7, np.uint8)
    odd = tmp_path / "odd.png#box=0,0,2,2"
    Image.fromarray(arr).save(odd, format="PNG")
    assert read_image(odd).shape == (8, 8, 3)


def test_instance_reference_selects_one_label_and_objects_hash_by_file_and_box(tmp_path):
    from medfuse.imageio import file_sha1
    from medfuse.objects import object_sha1

    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 2:10] = 4
    labels[5:15, 10:20] = 300                    # 16-bit ids; touches instance 4's box
    Image.fromarray(labels).save(tmp_path / "labels.png")
    ref = ObjectRef(str(tmp_path / "labels.png"), (1, 1, 12, 10), 4)
    assert ref.path.endswith("#box=1,1,12,10&id=4") and ObjectRef.parse(ref.path) == ref
    mask = read_mask(ref.path)
    assert mask.shape == (9, 11) and mask.sum() == 6 * 8 and mask.max() == 1   # instance 300 is background
    assert read_mask(str(tmp_path / "labels.png") + "#box=9,4,21,16&id=300").sum() == 100
    whole = file_sha1(tmp_path / "labels.png")
    assert file_sha1(ref.path) == object_sha1(whole, ref) != file_sha1(ObjectRef(ref.image, ref.box).path) != whole


def test_a_manifest_of_object_references_loads_them_grouped_by_image(tmp_path):
    from medfuse_plugins.loaders import ManifestLoader

    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    rows = [("a.png#box=0,0,20,20", "x"), ("a.png#box=20,10,40,30", "y"), ("b.png#box=5,5,25,25", "x"),
            ("b.png#box=100,100,120,120", "y"), ("c.png#box=0,0,5,5", "x")]
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f'"{p}",{c}\n' for p, c in rows))
    data = ManifestLoader(path="m.csv").load(tmp_path)
    s = data.samples
    assert len(s) == 3 and s["path"].str.contains("#box=").all()
    assert s["group"].tolist() == [str(tmp_path / "a.png")] * 2 + [str(tmp_path / "b.png")]
    assert s["sha1"].nunique() == 3
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in data.report.bad_files}
    assert "outside" in reasons["b.png#box=100,100,120,120"] and "not found" in reasons["c.png#box=0,0,5,5"]
    assert read_image(s["path"].iloc[1]).shape == (20, 20, 3)


def test_objects_of_one_image_listed_together_decode_it_once(tmp_path, monkeypatch):
    import medfuse.scan as scan

    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "s.png")
    calls = []
    decode = scan.decode_image_info
    monkeypatch.setattr(scan, "decode_image_info", lambda data, name, **kw: calls.append(name) or decode(data, name, **kw))
    paths = [f"{tmp_path / 's.png'}#box={x},0,{x + 10},10" for x in (0, 10, 20)] + [f"{tmp_path / 's.png'}#box=40,0,50,10"]
    out = scan.scan_files(paths)
    assert len(calls) == 1
    assert [o.width for o in out[:3]] == [10, 10, 10] and "outside" in out[3].error
    assert len({o.sha1 for o in out}) == 4
