"""A plugin author's whole test suite: the medfuse conformance kit over the package's plugins, and
the loader on the kit's sample dataset."""

import pytest
from medfuse.errors import DataError
from medfuse.testing import BROKEN_IMAGE, parametrize_with_checks, sample_dataset
from medfuse_example.plugins import CsvIndex, IntensityHistogram, NearestCentroid


@parametrize_with_checks([IntensityHistogram, NearestCentroid, CsvIndex])
def test_conformance(plugin, check):
    check(plugin)


def test_csv_index_loads_the_listed_images_and_reports_the_rest(tmp_path):
    root = sample_dataset(tmp_path)
    with (root / "manifest.csv").open("a") as fh:
        fh.write("classes/small/gone.png,small,p8\n")
    data = CsvIndex(index="manifest.csv").load(root)
    assert len(data) == 6 and set(data.samples["group"]) == {"p0", "p1", "p2"}
    assert sorted(r["path"].rsplit("/", 1)[1] for r in data.report.bad_files) == [BROKEN_IMAGE, "gone.png"]
    assert data.report.n_found == 8 and data.report.class_counts == {"large": 3, "small": 3}


def test_csv_index_names_a_missing_column(tmp_path):
    (tmp_path / "index.csv").write_text("path,class\na.png,x\n")
    with pytest.raises(DataError, match=r"index.csv: no column label"):
        CsvIndex().load(tmp_path)
