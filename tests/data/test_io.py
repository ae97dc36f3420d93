"""Loading tables, FCS files and FCS folders into a Dataset."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from cellbench.data import from_arrays, load_table
from cellbench.exceptions import CellbenchWarning, DataError


def test_csv_tsv_parquet_and_frame_give_the_same_dataset(tmp_path, tiny_table):
    tiny_table.to_csv(tmp_path / "a.csv", index=False)
    tiny_table.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    tiny_table.to_parquet(tmp_path / "a.parquet")
    sets = [load_table(src, target="label", groups="donor") for src in
            (tmp_path / "a.csv", tmp_path / "a.tsv", tmp_path / "a.parquet", tiny_table)]
    for ds in sets:
        assert ds.X.shape == (300, 12)
        assert ds.X.dtype == np.float32
        assert ds.classes == ["type0", "type1", "type2"]
        assert ds.group_name == "donor" and len(np.unique(ds.groups)) == 12
        np.testing.assert_allclose(ds.X, sets[0].X, rtol=1e-6)
        np.testing.assert_array_equal(ds.y, sets[0].y)


def test_target_is_guessed_when_one_column_is_named_like_a_label(tiny_table):
    ds = load_table(tiny_table, groups="donor")
    assert ds.target == "label"


def test_features_by_glob_and_drop(tiny_table):
    ds = load_table(tiny_table, target="label", groups="donor", features=["CD1*"])
    assert ds.feature_names == ["CD1", "CD10", "CD11", "CD12"]
    ds = load_table(tiny_table, target="label", groups="donor", drop=["CD1?", "CD2"])
    assert ds.feature_names == ["CD1", "CD3", "CD4", "CD5", "CD6", "CD7", "CD8", "CD9"]


def test_exclude_labels_removes_rows_by_text_or_number(tiny_table):
    ds = load_table(tiny_table, target="label", groups="donor", exclude_labels=["type0"])
    assert ds.classes == ["type1", "type2"]
    numeric = tiny_table.assign(label=tiny_table["label"].str[-1].astype(int))
    ds = load_table(numeric, target="label", groups="donor", exclude_labels=["0"])
    assert ds.classes == [1, 2]


def test_split_column_is_normalised(tiny_table):
    tiny_table["part"] = np.where(np.arange(300) < 200, "Train", "TEST")
    ds = load_table(tiny_table, target="label", split_column="part", drop=["donor"])
    assert set(ds.split) == {"train", "test"}


def test_from_arrays(tiny_table):
    ds = from_arrays(tiny_table.iloc[:, :12].to_numpy(), tiny_table["label"].to_numpy(),
                     groups=tiny_table["donor"].to_numpy())
    assert ds.feature_names[0] == "x0" and ds.n_classes == 3 and ds.groups is not None


@pytest.mark.parametrize("version", ["2.0", "3.0", "3.1"])
def test_fcs_versions_load_with_pnn_names_and_pns_aliases(tmp_path, fcs_writer, version):
    from cellbench.data.io import read_frame

    data = np.random.default_rng(0).gamma(2, 50, size=(40, 3))
    path = fcs_writer(tmp_path / "s.fcs", data, ["FL1-A", "FL2-A", "Time"],
                      markers=["CD3", "CD4", ""], version=version)
    raw = read_frame(path)
    assert list(raw.frame.columns) == ["FL1-A", "FL2-A", "Time"]
    assert raw.aliases == {"CD3": "FL1-A", "CD4": "FL2-A"}
    np.testing.assert_allclose(raw.frame.to_numpy(), data, rtol=1e-5)


def _fcs_folder(tmp_path, fcs_writer, n_files=6, cytometer=None):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_files):
        label = "healthy" if i % 2 else "sick"
        shift = 0 if label == "healthy" else 40
        data = rng.gamma(2, 50, size=(30, 3)) + np.array([shift, 0, 0])
        name = f"s{i}.fcs"
        fcs_writer(tmp_path / name, data, ["FL1-A", "FL2-A", "Time"], ["CD3", "CD4", ""],
                   cytometer=cytometer)
        rows.append({"file": name, "label": label, "patient": f"P{i // 2}"})
    pd.DataFrame(rows).to_csv(tmp_path / "sheet.csv", index=False)
    return tmp_path


def test_fcs_folder_with_sample_sheet(tmp_path, fcs_writer):
    root = _fcs_folder(tmp_path, fcs_writer, cytometer="Helios")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)  # Time column warning
        ds = load_table(root, sample_sheet=root / "sheet.csv", features=["CD*"])
    assert ds.n_samples == 180 and ds.feature_names == ["FL1-A", "FL2-A"]
    assert ds.classes == ["healthy", "sick"]
    assert ds.group_name == "patient" and len(np.unique(ds.groups)) == 3
    assert ds.cytometry == "mass"
    # every cell inherits its file's label
    assert (ds.y[:30] == ds.classes.index("sick")).all()


def test_fcs_folder_with_class_subfolders(tmp_path, fcs_writer):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(2):
            fcs_writer(tmp_path / label / f"{label}{i}.fcs", np.ones((5, 2)) * i, ["X", "Y"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        ds = load_table(tmp_path)
    assert ds.classes == ["a", "b"] and ds.group_name == "sample"
    assert sorted(np.unique(ds.groups)) == ["a0", "a1", "b0", "b1"]
    assert ds.cytometry == "flow"


def test_fcs_sample_sheet_file_label_patient_loads_without_choosing_features(
        tmp_path, fcs_writer):
    """The documented sheet: the added ``sample`` column (the file) is never a feature."""
    root = _fcs_folder(tmp_path, fcs_writer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        ds = load_table(root, sample_sheet=root / "sheet.csv", drop=["Time"])
    assert ds.feature_names == ["FL1-A", "FL2-A"] and ds.group_name == "patient"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        by_file = load_table(root, sample_sheet=root / "sheet.csv", groups="sample",
                             drop=["Time"])
    assert by_file.feature_names == ["FL1-A", "FL2-A"] and len(np.unique(by_file.groups)) == 6


def test_a_misspelled_sample_sheet_column_is_an_error_with_the_right_name(tmp_path,
                                                                          fcs_writer):
    root = _fcs_folder(tmp_path, fcs_writer)
    sheet = pd.read_csv(root / "sheet.csv").rename(columns={"patient": "pateint"})
    sheet.to_csv(root / "sheet.csv", index=False)
    with pytest.raises(DataError, match=r"column 'pateint' must be one of file, label, "
                                         r"patient; did you mean 'patient'\?"):
        load_table(root, sample_sheet=root / "sheet.csv")


def test_other_sample_sheet_columns_can_be_the_groups_and_are_never_features(tmp_path,
                                                                             fcs_writer):
    root = _fcs_folder(tmp_path, fcs_writer)
    sheet = pd.read_csv(root / "sheet.csv").rename(columns={"patient": "donor"})
    sheet["batch"] = ["b1", "b2"] * 3
    sheet.to_csv(root / "sheet.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        ds = load_table(root, sample_sheet=root / "sheet.csv", groups="donor", drop=["Time"])
    assert ds.feature_names == ["FL1-A", "FL2-A"] and len(np.unique(ds.groups)) == 3


def test_repeated_column_names_are_refused_not_renamed(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("f1,f2,f2,label\n1,2,3,a\n4,5,6,b\n")
    with pytest.raises(DataError, match=r"column names of .* must be unique; got 'f2' "
                                         r"\(columns 2, 3\)"):
        load_table(path, target="label")


def test_a_semicolon_file_gets_a_delimiter_hint(tmp_path, tiny_table):
    path = tmp_path / "cells.csv"
    tiny_table.to_csv(path, sep=";", index=False)
    with pytest.raises(DataError, match=r"looks semicolon-separated.*sep=';'"):
        load_table(path, target="label")


def test_a_continuous_target_is_not_a_set_of_classes(tiny_table):
    frame = tiny_table.assign(level=np.random.default_rng(0).normal(size=len(tiny_table)))
    with pytest.raises(DataError, match=r"target 'level' must hold class labels; got 300 "
                                        r"distinct decimal values"):
        load_table(frame.drop(columns="label"), target="level", groups="donor")


def test_a_target_with_one_value_per_row_is_an_id(tiny_table):
    frame = tiny_table.assign(cell=[f"c{i}" for i in range(len(tiny_table))])
    with pytest.raises(DataError, match=r"got 300 distinct values in 300 rows \(e\.g\. 'c0', "
                                        r"'c1', 'c2'\)"):
        load_table(frame, target="cell", groups="donor")


def test_a_value_beyond_float32_says_it_overflows(tiny_table):
    frame = tiny_table.copy()
    frame["CD3"] = frame["CD3"].astype(np.float64)
    frame.loc[7, "CD3"] = 1e39
    with pytest.raises(DataError, match=r"overflow float32 in 'CD3' \(1 values, first 1e\+39 "
                                        r"at row 8\)"):
        load_table(frame, target="label", groups="donor")
