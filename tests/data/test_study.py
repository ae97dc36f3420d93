"""Large studies: per-sample subsampling at load time and a folder of Parquet files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellbench.cli import app
from cellbench.data import load_table
from cellbench.data.study import open_study
from cellbench.data.subsample import draw_cells, subsample_rows
from cellbench.exceptions import DataError, InvalidParameterError
from cellbench.experiment import run_predict
from synthetic import make_table  # tests/ is on sys.path (pytest rootdir)


@pytest.fixture
def cells() -> pd.DataFrame:
    return make_table(n=1800, n_donors=6, seed=3)


@pytest.fixture
def study(tmp_path, cells):
    """One Parquet file per donor, named after it; the donor column itself is left out."""
    root = tmp_path / "study"
    root.mkdir()
    for donor, part in cells.groupby("donor"):
        part.drop(columns="donor").to_parquet(root / f"{donor}.parquet", index=False)
    return root


def test_a_draw_keeps_each_labels_share_and_depends_only_on_seed_and_sample():
    labels = np.array(["a"] * 700 + ["b"] * 250 + ["c"] * 50)
    rows = draw_cells(1000, 100, labels=labels, seed=7, sample="p1")
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert [int((labels[rows] == k).sum()) for k in "abc"] == [70, 25, 5]
    assert np.array_equal(rows, draw_cells(1000, 100, labels=labels, seed=7, sample="p1"))
    assert not np.array_equal(rows, draw_cells(1000, 100, labels=labels, seed=8, sample="p1"))
    assert not np.array_equal(rows, draw_cells(1000, 100, labels=labels, seed=7, sample="p2"))
    assert np.array_equal(draw_cells(40, 100, seed=0, sample="x"), np.arange(40))  # all kept


def test_largest_remainders_give_rare_labels_their_cells():
    labels = np.array(["a"] * 97 + ["b"] * 2 + ["c"] * 1)
    rows = draw_cells(100, 10, labels=labels, seed=0, sample="s")
    counts = {k: int((labels[rows] == k).sum()) for k in "abc"}
    assert sum(counts.values()) == 10 and counts["a"] >= 9


def test_a_samples_draw_does_not_change_when_other_samples_are_added():
    rng = np.random.default_rng(0)
    samples = np.repeat(["s1", "s2"], 500)
    labels = rng.integers(0, 3, 1000)
    first = subsample_rows(samples, labels, 50, seed=1)
    more = subsample_rows(np.concatenate([samples, np.repeat("s0", 300)]),
                          np.concatenate([labels, rng.integers(0, 3, 300)]), 50, seed=1)
    assert np.array_equal(first, more[np.isin(more, np.arange(1000))])


def test_a_parquet_folder_loads_like_the_table_it_was_cut_from(study, cells):
    whole = load_table(cells, target="label", groups="donor")
    folder = load_table(study, target="label")
    assert folder.group_name == "sample" and folder.X.dtype == np.float32
    order = np.argsort(cells["donor"].to_numpy(), kind="stable")  # files in name order
    np.testing.assert_array_equal(folder.X, whole.X[order])
    assert folder.classes == whole.classes
    np.testing.assert_array_equal(folder.y, whole.y[order])
    np.testing.assert_array_equal(folder.groups.astype(str), whole.groups[order])


def test_cells_per_sample_draws_the_same_cells_from_a_folder_and_a_table(study, cells):
    folder = load_table(study, target="label", cells_per_sample=120, subsample_seed=4)
    table = load_table(cells, target="label", groups="donor", cells_per_sample=120,
                       subsample_seed=4)
    assert folder.n_samples == table.n_samples == 6 * 120
    assert folder.drawn == {"cells_per_sample": 120, "samples": 6, "cells_in_study": 1800,
                            "cells_drawn": 720}
    assert sorted(map(tuple, folder.X.tolist())) == sorted(map(tuple, table.X.tolist()))
    counts = pd.Series(folder.groups.astype(str)).value_counts()
    assert set(counts) == {120}


def test_only_the_needed_columns_are_read(study, monkeypatch):
    import pyarrow.parquet as pq

    asked = []
    real = pq.ParquetFile.read

    def read(self, columns=None, **kwargs):
        asked.append(tuple(columns))
        return real(self, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", read)
    ds = load_table(study, target="label", drop=["CD1*"], cells_per_sample=50)
    assert all(not any(c.startswith("CD1") for c in cols) for cols in asked)
    assert ds.feature_names == [f"CD{i}" for i in range(2, 10)]


def test_an_fcs_folder_is_drawn_file_by_file(tmp_path, fcs_writer):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for k in range(2):
            fcs_writer(tmp_path / label / f"{label}{k}.fcs",
                       rng.normal(size=(300 + 50 * k, 3)).astype(np.float32),
                       ["FL1", "FL2", "FL3"])
    ds = load_table(tmp_path, cells_per_sample=100)
    assert ds.n_samples == 400
    assert set(pd.Series(ds.groups).value_counts()) == {100}


def test_bad_study_inputs_are_named(tmp_path, study, cells):
    with pytest.raises(DataError, match=r"cells_per_sample needs to know each cell's sample.*"
                                        r"--groups"):
        load_table(cells, target="label", cells_per_sample=10)
    with pytest.raises(InvalidParameterError, match=r"cells_per_sample must be an int >= 1.*"
                                                    r"got 0"):
        load_table(study, target="label", cells_per_sample=0)
    odd = cells.iloc[:10].drop(columns=["donor", "CD3"])
    odd.to_parquet(study / "odd.parquet", index=False)
    with pytest.raises(DataError, match=r"share their columns; 'odd.parquet' differs.*"
                                        r"missing \['CD3'\]"):
        open_study(study)
    (study / "odd.parquet").unlink()
    text = cells.iloc[:10].drop(columns="donor").assign(CD2="x")
    text.to_parquet(study / "zz.parquet", index=False)
    with pytest.raises(DataError, match=r"feature columns must be numeric; 'CD2'"):
        load_table(study, target="label")


def test_compare_records_the_draw_and_predict_scores_every_cell(tmp_path, study):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["compare", str(study), "--target", "label",
                                      "--cells-per-sample", "100", "-m", "lda", "--out",
                                      str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "data.json").read_text())
    assert data["n"] == 600 and data["subsample"]["cells_drawn"] == 600
    model = next(out.glob("units/lda/seed*/*/model.pt"))
    done = run_predict(model, study, tmp_path / "pred.csv")
    frame = pd.read_csv(tmp_path / "pred.csv")
    assert len(frame) == 1800 == done.n_rows
    assert frame["sample"].value_counts().to_dict() == {f"D{d:02d}": 300 for d in range(6)}


def test_label_codes_draw_the_cells_the_labels_draw():
    """Stratified draws from Arrow dictionary codes (no Python string per cell) equal the
    draws from the labels themselves, whatever order the labels first appear in."""
    import pyarrow as pa

    from cellbench.data.study import _label_codes

    labels = np.random.default_rng(0).choice(["T cell", "B cell", "NK", "Mono"], 5000)
    codes = _label_codes(pa.chunked_array([labels[:2000], labels[2000:]]))
    assert codes.dtype.kind == "i"
    np.testing.assert_array_equal(draw_cells(5000, 400, labels=codes, seed=1, sample="s"),
                                  draw_cells(5000, 400, labels=labels, seed=1, sample="s"))


@pytest.mark.parametrize("kind", ["str", "int", "object"])
def test_group_index_is_np_unique_with_inverse(kind, monkeypatch):
    import cellbench.data.dataset as dataset

    monkeypatch.setattr(dataset, "GROUP_CHUNK", 7)  # many chunks
    raw = np.random.default_rng(2).integers(0, 30, 500)
    groups = {"str": raw.astype(str), "int": raw,
              "object": np.array([f"P{v}" for v in raw], dtype=object)}[kind]
    ids, codes = dataset.group_index(groups)
    want_ids, want_codes = np.unique(groups, return_inverse=True)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(codes, want_codes)
    assert len(dataset.group_index(groups[:0])[0]) == 0
