"""Every data check raises or warns with a message that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellbench.data import check_scale, check_split_duplicates, kfold_splits, load_table
from cellbench.data.io import read_sample_sheet
from cellbench.exceptions import CellbenchWarning, DataError

# -- columns -------------------------------------------------------------------------------


def test_unknown_target_suggests_the_closest_column(tiny_table):
    with pytest.raises(DataError, match=r"target column .*got 'lable'\. Did you mean 'label'\?"):
        load_table(tiny_table, target="lable", groups="donor")


def test_missing_target_lists_the_columns(tiny_table):
    frame = tiny_table.rename(columns={"label": "status"})
    with pytest.raises(DataError, match=r"target column must be given.*--target.*'CD1'"):
        load_table(frame, groups="donor")


def test_unknown_group_column_suggests_the_closest(tiny_table):
    with pytest.raises(DataError, match=r"groups column .*got 'donr'\. Did you mean 'donor'\?"):
        load_table(tiny_table, target="label", groups="donr")


def test_unknown_feature_pattern(tiny_table):
    with pytest.raises(DataError, match=r"feature 'CD99' must name a column"):
        load_table(tiny_table, target="label", groups="donor", features=["CD99"])


def test_non_numeric_feature_names_column_value_and_row(tiny_table):
    tiny_table["CD5"] = tiny_table["CD5"].astype(object)
    tiny_table.loc[6, "CD5"] = "n/a"
    with pytest.raises(DataError, match=r"Feature column 'CD5' must be numeric; got text such as "
                                        r"'n/a' \(row 7\)\. Drop it with --drop 'CD5'"):
        load_table(tiny_table, target="label", groups="donor")


def test_text_id_column_among_features_suggests_groups(tiny_table):
    with pytest.raises(DataError, match=r"'donor' must be numeric.*looks like a sample/patient "
                                        r"id: pass --groups donor"):
        load_table(tiny_table, target="label")


def test_numbers_stored_as_text_are_accepted(tiny_table):
    tiny_table["CD5"] = tiny_table["CD5"].astype(str)
    ds = load_table(tiny_table, target="label", groups="donor")
    assert ds.X.dtype == np.float32


# -- values --------------------------------------------------------------------------------


def test_nan_and_inf_are_counted_and_located(tiny_table):
    tiny_table.loc[[3, 8], "CD2"] = np.nan
    tiny_table.loc[10, "CD7"] = np.inf
    with pytest.raises(DataError) as err:
        load_table(tiny_table, target="label", groups="donor")
    msg = str(err.value)
    assert "got 3 NaN/inf values in 2 columns" in msg
    assert "'CD2' (2 NaN, first at row 4)" in msg
    assert "'CD7' (1 inf, first at row 11)" in msg
    assert "Pass --dropna (dropna=True) to drop the 3 affected rows" in msg


def test_dropna_drops_rows_and_says_so(tiny_table):
    tiny_table.loc[[3, 8], "CD2"] = np.nan
    with pytest.warns(CellbenchWarning, match=r"Dropped 2 of 300 rows"):
        ds = load_table(tiny_table, target="label", groups="donor", dropna=True)
    assert ds.n_samples == 298


def test_missing_labels(tiny_table):
    tiny_table.loc[5, "label"] = None
    with pytest.raises(DataError, match=r"Target column 'label' must have a label on every row; "
                                        r"1 rows have none \(first at row 6\)"):
        load_table(tiny_table, target="label", groups="donor")


def test_constant_column_warns(tiny_table):
    tiny_table["CD4"] = 1.0
    with pytest.warns(CellbenchWarning, match=r"Columns 'CD4' are constant.*--drop CD4"):
        load_table(tiny_table, target="label", groups="donor")


def test_duplicate_column_warns(tiny_table):
    tiny_table["copy"] = tiny_table["CD1"]
    with pytest.warns(CellbenchWarning, match=r"Columns duplicate others: 'copy' = 'CD1'"):
        load_table(tiny_table, target="label", groups="donor")


def test_single_class_is_an_error(tiny_table):
    with pytest.raises(DataError, match=r"target 'label' must have at least 2 classes; got 1 "
                                        r"\('type1', \d+ rows\)"):
        load_table(tiny_table, target="label", groups="donor",
                   exclude_labels=["type0", "type2"])


def test_class_with_fewer_cells_than_folds():
    y = np.array([0] * 50 + [1] * 50 + [2] * 3)
    with pytest.raises(DataError, match=r"each class must have at least 5 rows for stratified "
                                        r"5-fold CV; 'c' has 3\. Use fewer folds \(--cv 3\)"):
        kfold_splits(y, n_splits=5, classes=["a", "b", "c"])


def test_tiny_class_and_imbalance_warn(tiny_table):
    frame = tiny_table[(tiny_table["label"] != "type2") | (np.arange(300) < 20)]
    frame = frame[(frame["label"] != "type2") | (frame.index < 20)].copy()
    frame.loc[frame.index[frame["label"] == "type2"][5:], "label"] = "type1"
    with pytest.warns(CellbenchWarning) as record:
        load_table(frame, target="label", groups="donor")
    messages = " ".join(str(w.message) for w in record)
    assert "fewer than 10 rows" in messages and "'type2'" in messages
    assert "imbalanced" in messages and "--class-weight balanced" in messages


def test_id_like_numeric_feature_warns(tiny_table):
    tiny_table["sample"] = tiny_table["donor"].str[1:].astype(int)
    with pytest.warns(CellbenchWarning, match=r"Column 'sample' looks like a sample/patient id "
                                              r"\(12 distinct values.*used as a feature.*"
                                              r"--groups sample"):
        load_table(tiny_table.drop(columns="donor"), target="label")


def test_time_column_warns(tiny_table):
    tiny_table["Time"] = np.arange(300, dtype=float)
    with pytest.warns(CellbenchWarning, match=r"'Time'.*acquisition time.*--drop Time"):
        load_table(tiny_table, target="label", groups="donor")


def test_raw_intensities_warn_without_arcsinh(tiny_table):
    rng = np.random.default_rng(0)
    for c in tiny_table.columns[:12]:
        tiny_table[c] = rng.lognormal(4, 1.5, 300)
    ds = load_table(tiny_table, target="label", groups="donor")
    with pytest.warns(CellbenchWarning, match=r"un-transformed cytometry intensities.*"
                                              r"--transform arcsinh,standardize"):
        check_scale(ds, ("standardize",))
    assert check_scale(ds, ("arcsinh", "standardize")) == []


def test_duplicate_rows_across_train_and_test_warn():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    X[15] = X[2]
    with pytest.warns(CellbenchWarning, match=r"1 test rows \(20.00%\) are exact copies.*"
                                              r"split by sample \(--groups\)"):
        check_split_duplicates(X, np.arange(10), np.arange(15, 20))
    big = np.arange(40000, dtype=np.float32).reshape(20000, 2)
    big[15000] = big[2]  # 1 of 10,000 test rows: recorded, not warned
    (issue,) = check_split_duplicates(big, np.arange(10000), np.arange(10000, 20000),
                                      grouped=True)
    assert issue.severity == "info" and "already kept apart" in issue.message


# -- files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data path must exist; got '.*nope\.csv'"):
        load_table(tmp_path / "nope.csv")


def test_empty_csv(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match=r"must not be empty; got 0 bytes"):
        load_table(tmp_path / "e.csv")


def test_header_only_csv(tmp_path):
    (tmp_path / "h.csv").write_text("CD3,CD4,label\n")
    with pytest.raises(DataError, match=r"must hold at least one row; it has a header"):
        load_table(tmp_path / "h.csv")


def test_unknown_suffix(tmp_path):
    (tmp_path / "x.ods").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"must be CSV, TSV, Parquet or FCS.*got 'x\.ods'"):
        load_table(tmp_path / "x.ods")


def test_empty_fcs_file(tmp_path):
    (tmp_path / "e.fcs").write_bytes(b"")
    with pytest.raises(DataError, match=r"FCS file '.*e\.fcs' must not be empty; got 0 bytes"):
        load_table(tmp_path / "e.fcs")


def test_truncated_fcs_file(tmp_path, fcs_writer):
    path = fcs_writer(tmp_path / "t.fcs", np.ones((50, 3)), ["A", "B", "C"])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"FCS file '.*t\.fcs' must be a readable FCS.*"
                                        r"truncated"):
        load_table(path)


def test_corrupt_fcs_file(tmp_path):
    (tmp_path / "c.fcs").write_bytes(b"this is not an FCS file" * 20)
    with pytest.raises(DataError, match=r"FCS file '.*c\.fcs' must be a readable FCS 2.0/3.0/"
                                        r"3.1 file; reading failed"):
        load_table(tmp_path / "c.fcs")


def test_fcs_without_events(tmp_path, fcs_writer):
    path = fcs_writer(tmp_path / "z.fcs", np.zeros((0, 2)), ["A", "B"])
    with pytest.raises(DataError, match=r"must contain events; got 0 events"):
        load_table(path)


def test_sample_sheet_naming_a_missing_file(tmp_path, fcs_writer):
    fcs_writer(tmp_path / "a.fcs", np.ones((5, 2)), ["A", "B"])
    pd.DataFrame({"file": ["a.fcs", "b.fcs"], "label": ["x", "y"]}).to_csv(
        tmp_path / "sheet.csv", index=False)
    with pytest.raises(DataError, match=r"sample sheet '.*sheet\.csv' row 2 names file 'b\.fcs', "
                                        r"which must exist"):
        load_table(tmp_path, sample_sheet=tmp_path / "sheet.csv")


def test_sample_sheet_without_label_column(tmp_path):
    (tmp_path / "s.csv").write_text("file,condition\na.fcs,x\n")
    with pytest.raises(DataError, match=r"must have columns file,label\[,patient\]"):
        read_sample_sheet(tmp_path / "s.csv")


def test_fcs_folder_without_labels(tmp_path, fcs_writer):
    fcs_writer(tmp_path / "a.fcs", np.ones((5, 2)), ["A", "B"])
    with pytest.raises(DataError, match=r"must come with labels.*one subfolder per class"):
        load_table(tmp_path)


def test_fcs_files_with_different_channels(tmp_path, fcs_writer):
    fcs_writer(tmp_path / "a.fcs", np.ones((5, 2)), ["A", "B"])
    fcs_writer(tmp_path / "b.fcs", np.ones((5, 2)), ["A", "C"])
    pd.DataFrame({"file": ["a.fcs", "b.fcs"], "label": ["x", "y"]}).to_csv(
        tmp_path / "sample_sheet.csv", index=False)
    with pytest.raises(DataError, match=r"must share their channels; 'b\.fcs' differs from "
                                        r"'a\.fcs': missing \['B'\], extra \['C'\]"):
        load_table(tmp_path)
