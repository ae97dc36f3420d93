"""Labels against groups, features and splits: confounding, label conflicts, per-group mixes,
and training parts that cannot teach a class."""

from __future__ import annotations

import shlex
import warnings

import numpy as np
import pandas as pd
import pytest

from cellbench import SplitConfig
from cellbench.data import from_arrays, load_table, make_splits
from cellbench.data.labels import check_training_parts
from cellbench.data.splits import Split
from cellbench.exceptions import CellbenchWarning, DataError


def _issues(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CellbenchWarning)
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def test_class_equal_to_group_says_it_in_plain_words(tiny_table):
    """With a split by group; inside each group (--within-groups) no group can be split."""
    frame = tiny_table.drop(columns="donor").assign(patient=tiny_table["label"].map(
        {"type0": "P1", "type1": "P2", "type2": "P3"}))
    ds = load_table(frame, target="label", groups="patient")
    with pytest.raises(DataError) as info:
        check_training_parts(ds, make_splits(ds, SplitConfig(cv=3)))
    text = str(info.value)
    assert "every class comes from a single one ('type0' only in 'P1'" in text
    assert "cannot be separated from the group 'patient'" in text
    assert "every accuracy would measure group identity" in text
    assert "drop --groups" not in text and "pass --groups" not in text.lower()
    with pytest.raises(DataError, match="every patient must hold at least 2 classes to be "
                                         "split on its own"):  # one class a group
        make_splits(ds, SplitConfig(within_groups=True, val_size=0.2, test_size=0.2))


def test_class_equal_to_an_id_column_without_groups_is_not_the_pass_groups_loop(tiny_table):
    frame = tiny_table.drop(columns="donor").assign(patient=tiny_table["label"].map(
        {"type0": "P1", "type1": "P2", "type2": "P3"}))
    _, messages = _issues(load_table, frame, target="label", drop=["patient"])
    confounded = [m for m in messages if "every class comes from a single 'patient'" in m]
    assert confounded and "measure sample identity" in confounded[0]
    assert not any("Pass --groups patient" in m for m in messages)


def test_a_class_from_one_group_only_cannot_be_learned(tiny_table):
    frame = tiny_table.copy()
    frame.loc[frame["label"] == "type2", "donor"] = "D99"
    _, messages = _issues(load_table, frame, target="label", groups="donor")
    assert any("'type2' (only in 'D99')" in m and "cannot be learned" in m for m in messages)


def test_a_class_from_two_groups_holding_nothing_else_is_confounded_with_them():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(6)], 50)
    frame = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd")).assign(
        patient=patients, label=pd.Series(patients).map(
            {"p0": "A", "p1": "A", "p2": "B", "p3": "B", "p4": "C", "p5": "C"}))
    _, messages = _issues(load_table, frame, target="label", groups="patient")
    assert any("'A' (only in 'p0', 'p1')" in m and "come from 2 patient groups each" in m
               for m in messages)
    frame["patient"] = np.repeat([f"p{i}" for i in range(10)], 30)  # 3-4 patients per class
    frame["label"] = pd.Series(frame["patient"]).map(lambda p: "ABC"[int(p[1]) % 3])
    _, messages = _issues(load_table, frame, target="label", groups="patient")
    assert not [m for m in messages if "come from 2" in m]


def test_labels_that_differ_wildly_between_groups_suggest_within_groups():
    rng = np.random.default_rng(0)
    rows = []
    for sample in range(8):  # per-sample gates with permuted ids
        k = rng.integers(3, 7)
        sizes = rng.dirichlet(np.ones(k)) * 300
        for gate, label in enumerate(rng.permutation(7)[:k]):
            n = int(sizes[gate]) + 1
            rows += [(f"S{sample}", label, *(rng.normal(size=3) + gate)) for _ in range(n)]
    frame = pd.DataFrame(rows, columns=["sample", "label", "a", "b", "c"])
    _, messages = _issues(load_table, frame, target="label", groups="sample")
    assert any("label mix differs wildly" in m and "--within-groups" in m for m in messages)


def test_the_same_donors_with_similar_mixes_do_not_warn(tiny_table):
    _, messages = _issues(load_table, tiny_table, target="label", groups="donor")
    assert not any("label mix" in m for m in messages)


def test_identical_rows_with_different_labels_are_a_label_conflict_with_a_ceiling():
    X = np.repeat(np.arange(20, dtype=float)[:, None], 2, axis=1)
    X = np.concatenate([X, X[:5]])  # rows 21-25 repeat rows 1-5 ...
    y = np.array([0, 1] * 10 + [1, 0, 1, 0, 1])  # ... with the other label
    ds, messages = _issues(from_arrays, X, y)
    conflict = [m for m in messages if "share their exact feature values" in m]
    assert conflict, messages
    assert "10 rows" in conflict[0] and "5 sets" in conflict[0]
    assert "accuracy ceiling of 80.00%" in conflict[0]
    assert any(i.code == "label_conflict" for i in ds.issues)


def test_label_conflicts_are_not_counted_as_copies_that_inflate_scores():
    from cellbench.data.checks import check_split_duplicates

    X = np.arange(40, dtype=float).reshape(20, 2)
    X[10:] = X[:10]
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    train, test = np.arange(10), np.arange(10, 20)
    assert check_split_duplicates(X, train, test) != []
    assert check_split_duplicates(X, train, test, y=y) == []


def test_a_training_part_with_one_class_is_refused_before_training(tiny_table):
    ds = load_table(tiny_table, target="label", groups="donor")
    one = np.flatnonzero(ds.y == 0)
    split = Split(one, one[:0], np.flatnonzero(ds.y != 0), "fold1")
    with pytest.raises(DataError, match=r"training part of split 'fold1' must hold at least "
                                        r"2 classes to learn a classifier; it holds only "
                                        r"'type0'"):
        check_training_parts(ds, [split])


def test_a_test_class_missing_from_training_is_named():
    X = np.random.default_rng(0).normal(size=(30, 2))
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    ds = from_arrays(X, y)
    split = Split(np.arange(20), np.arange(0), np.arange(20, 30), "holdout")
    _, messages = _issues(check_training_parts, ds, [split])
    assert any("2 in 'holdout'" in m and "cannot be learned from that split" in m
               for m in messages)


def test_within_groups_splits_inside_each_group(tiny_table):
    ds = load_table(tiny_table, target="label", groups="donor")
    splits = make_splits(ds, SplitConfig(cv=3, within_groups=True))
    assert len(splits) == 12 * 3
    assert splits[0].name == "D00-fold1" and not splits[0].grouped
    for s in splits:
        assert len(np.unique(ds.groups[np.r_[s.train, s.val, s.test]])) == 1
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested) == list(range(ds.n_samples))  # every row tested once
    with pytest.raises(Exception, match="--within-groups must come with groups"):
        make_splits(load_table(tiny_table.drop(columns="donor"), target="label"),
                    SplitConfig(within_groups=True))


def test_repeated_kfold_draws_new_folds_each_repeat(tiny_table):
    from cellbench.data.splits import repeat_of

    ds = load_table(tiny_table, target="label", groups="donor")
    splits = make_splits(ds, SplitConfig(cv=3, repeats=2))
    assert [s.name for s in splits] == ["r1-fold1", "r1-fold2", "r1-fold3", "r2-fold1",
                                        "r2-fold2", "r2-fold3"]
    assert [repeat_of(s.name) for s in splits] == [1, 1, 1, 2, 2, 2]
    first = [set(ds.groups[s.test]) for s in splits[:3]]
    second = [set(ds.groups[s.test]) for s in splits[3:]]
    assert first != second
    with pytest.raises(Exception, match=r"split\.repeats needs k-fold CV"):
        SplitConfig(repeats=3)


def test_a_warning_about_many_tiny_classes_lists_a_few():
    X = np.random.default_rng(0).normal(size=(150, 2))
    y = np.repeat([f"c{i}" for i in range(30)], 5)
    _, messages = _issues(from_arrays, X, y)
    tiny = next(m for m in messages if "Classes with fewer than 10" in m)
    assert "and 22 more" in tiny and "'c29'" not in tiny


def test_labels_unique_to_each_sample_can_be_evaluated_within_samples():
    rng = np.random.default_rng(0)
    rows = [(f"S{s}", f"S{s}_pop{k}", *(rng.normal(size=2) + 3 * k))
            for s in range(4) for k in range(2) for _ in range(30)]
    frame = pd.DataFrame(rows, columns=["sample", "label", "a", "b"])
    ds = load_table(frame, target="label", groups="sample")  # no error at load
    within = make_splits(ds, SplitConfig(cv=3, within_groups=True))
    check_training_parts(ds, within)  # every group's training part holds both its classes
    with pytest.raises(DataError, match="cannot be separated from the group 'sample'"):
        check_training_parts(ds, make_splits(ds, SplitConfig(cv=2)))


def test_numeric_labels_of_a_csv_are_read_as_pandas_reads_them(tmp_path):
    path = tmp_path / "cells.csv"
    pd.DataFrame({"a": np.arange(9.0), "label": [1, 2, 3] * 3}).to_csv(path, index=False)
    ds, messages = _issues(load_table, path)
    assert ds.classes == [1, 2, 3] and not [m for m in messages if "several ways" in m]
    pd.DataFrame({"a": np.arange(9.0), "label": ["x", "2", "3"] * 3}).to_csv(path, index=False)
    assert load_table(path).classes == ["2", "3", "x"]


def test_one_number_written_several_ways_is_one_class_and_said(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("a,kind\n" + "".join(f"{i},{lab}\n" for i, lab in
                                         enumerate(["1", "01", "1.0", "2", "2.0", "3"] * 4)))
    ds, messages = _issues(load_table, path, target="kind")
    assert ds.classes == [1, 2, 3]
    assert any("'01', '1', '1.0' are all 1; '2', '2.0' are all 2" in m for m in messages)


def test_a_feature_named_like_a_label_is_read_as_a_number_when_the_target_is_given(tmp_path):
    path = tmp_path / "cells.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"y": rng.normal(size=30), "label": ["a", "b", "c"] * 10}).to_csv(path,
                                                                                 index=False)
    ds, messages = _issues(load_table, path, target="label")
    assert ds.feature_names == ["y"] and not [m for m in messages if "several ways" in m]
    np.testing.assert_array_equal(ds.X[:, 0], pd.read_csv(path)["y"].to_numpy(np.float32))


@pytest.mark.parametrize("name", ["Unlabeled", "unlabelled", "ungated", "Not gated", "unknown",
                                  "-1", "?"])
def test_a_class_named_like_unlabelled_cells_is_warned_about(name):
    rng = np.random.default_rng(0)
    y = np.array(["T", "B", name] * 20, dtype=object)
    _, messages = _issues(from_arrays, rng.normal(size=(60, 3)), y)
    hits = [m for m in messages if "named like cells without a label" in m]
    assert len(hits) == 1 and f"--exclude-labels {shlex.quote(name)}." in hits[0]


def test_ordinary_class_names_are_not_taken_for_unlabelled_cells():
    rng = np.random.default_rng(0)
    for names in (["T", "B", "NK"], [0, 1, 2], ["known", "labelled", "gated"]):
        y = np.array(names * 20, dtype=object)
        _, messages = _issues(from_arrays, rng.normal(size=(60, 3)), y)
        assert not [m for m in messages if "without a label" in m], names
