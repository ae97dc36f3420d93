"""Splits are leak-free: no group in two parts, each row tested once, classes stratified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellbench._config import SplitConfig
from cellbench.data import Dataset, holdout_split, kfold_splits, load_table, make_splits
from cellbench.data.splits import given_split
from cellbench.exceptions import DataError, DataLeakageError


@st.composite
def group_layouts(draw):
    """Random numbers of groups and cells per group; labels per group or per cell."""
    n_groups = draw(st.integers(3, 25))
    sizes = draw(st.lists(st.integers(1, 40), min_size=n_groups, max_size=n_groups))
    n_classes = draw(st.integers(2, 4))
    per_group_label = draw(st.booleans())
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), sizes)
    if per_group_label:
        y = rng.integers(0, n_classes, n_groups)[groups]
    else:
        y = rng.integers(0, n_classes, len(groups))
    ids = np.array([f"P{g}" for g in rng.permutation(n_groups)])[groups]
    return y, ids, seed


def _assert_disjoint_groups(parts, groups):
    seen = {}
    for name, index in parts.items():
        for g in set(groups[index]):
            assert seen.setdefault(g, name) == name, f"group {g} in {seen[g]} and {name}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group_layouts(), st.sampled_from([0.1, 0.2, 0.3]), st.sampled_from([0.0, 0.15, 0.25]))
def test_grouped_holdout_never_splits_a_group(layout, test_size, val_size):
    y, groups, seed = layout
    split = holdout_split(y, groups, val_size=val_size, test_size=test_size, random_state=seed)
    _assert_disjoint_groups(split.parts(), groups)
    everything = np.concatenate([split.train, split.val, split.test])
    assert sorted(everything) == list(range(len(y)))  # each row in exactly one part
    assert len(split.train) > 0 and len(split.test) > 0
    assert (len(split.val) > 0) == (val_size > 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group_layouts(), st.integers(2, 5))
def test_grouped_kfold_tests_each_row_once_and_never_splits_a_group(layout, k):
    y, groups, seed = layout
    n_groups = len(np.unique(groups))
    if n_groups < k:
        with pytest.raises(DataError, match=f"at least {k} distinct values"):
            kfold_splits(y, groups, n_splits=k, random_state=seed)
        return
    if n_groups < 2 * k:  # a training part may keep one group: no grouped validation possible
        try:
            kfold_splits(y, groups, n_splits=k, val_size=0.2, random_state=seed)
        except DataError as err:
            assert "to hold out a validation part" in str(err)
        return
    folds = kfold_splits(y, groups, n_splits=k, val_size=0.2, random_state=seed)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(y)))
    for fold in folds:
        _assert_disjoint_groups(fold.parts(), groups)
        assert len(np.intersect1d(fold.train, fold.test)) == 0


def test_stratified_holdout_keeps_class_proportions():
    y = np.array([0] * 800 + [1] * 200)
    split = holdout_split(y, val_size=0.15, test_size=0.15, random_state=0)
    for part in (split.train, split.val, split.test):
        assert abs(np.mean(y[part] == 1) - 0.2) < 0.01


def test_stratified_group_kfold_balances_patient_labels():
    groups = np.repeat(np.arange(20), 30)
    y = (np.arange(20) < 10).astype(int)[groups]
    folds = kfold_splits(y, groups, n_splits=5, random_state=0)
    for fold in folds:  # 4 patients per test fold: 2 of each class
        labels = [y[groups == g][0] for g in np.unique(groups[fold.test])]
        assert sorted(labels) == [0, 0, 1, 1]


def test_kfold_over_sample_ids_matches_the_published_protocol():
    """Cell-type labels vary within samples: folds are KFold(shuffle) over sorted sample ids."""
    from sklearn.model_selection import KFold

    groups = np.repeat(np.arange(1, 17), 10)
    y = np.tile(np.arange(5), 32)
    folds = kfold_splits(y, groups, n_splits=4, random_state=0)
    ids = np.unique(groups)
    expected = [set(ids[test]) for _, test in KFold(4, shuffle=True, random_state=0).split(ids)]
    assert [set(groups[f.test]) for f in folds] == expected


def test_too_few_groups_for_a_holdout():
    with pytest.raises(DataError, match=r"at least 3 distinct values.*got 2 \('a', 'b'\)"):
        holdout_split(np.array([0, 1] * 5), np.array(["a", "b"] * 5))


def test_given_split_that_leaks_a_group_is_refused(tiny_table):
    tiny_table["part"] = np.where(np.arange(300) < 150, "train", "test")
    ds = load_table(tiny_table, target="label", groups="donor", split_column="part")
    with pytest.raises(DataLeakageError, match=r"Group 'D00' must be in one part only; it has "
                                               r"rows in both train \(\d+\) and test \(\d+\)"):
        given_split(ds, SplitConfig())


def test_messages_name_numeric_groups_without_numpy_reprs(tiny_table):
    tiny_table["part"] = np.where(np.arange(300) < 150, "train", "test")
    tiny_table["donor"] = np.arange(300) % 12
    ds = load_table(tiny_table, target="label", groups="donor", split_column="part")
    with pytest.raises(DataLeakageError, match=r"Group 0 must be in one part") as info:
        given_split(ds, SplitConfig())
    assert "np." not in str(info.value)


def test_make_splits_uses_cv_holdout_or_given(tiny_table):
    ds = load_table(tiny_table, target="label", groups="donor")
    assert len(make_splits(ds, SplitConfig(cv=3))) == 3
    (split,) = make_splits(ds, SplitConfig())
    assert split.name == "holdout" and split.grouped
    frame = tiny_table.assign(part=np.where(tiny_table["donor"] < "D08", "train", "test"))
    ds = load_table(frame, target="label", groups="donor", split_column="part")
    (split,) = make_splits(ds, SplitConfig(val_size=0.2))
    assert split.name == "given" and len(split.val) > 0
    assert set(ds.split[split.test]) == {"test"}


def test_dataset_subset_keeps_classes():
    ds = Dataset(X=np.zeros((4, 1), np.float32), y=np.array([0, 1, 2, 1]),
                 classes=["a", "b", "c"])
    sub = ds.subset(np.array([1, 3]))
    assert sub.classes == ["a", "b", "c"] and sub.n_samples == 2


def test_stratified_group_folds_that_leave_one_training_group_are_dealt_evenly():
    # hypothesis found it: stratifying by label put 3 of 4 groups in one test fold, leaving
    # one group to train on and none to hold out for validation
    y = np.array([0, 1, 1, 1, 1])
    groups = np.array(["P3", "P0", "P2", "P1", "P1"])
    folds = kfold_splits(y, groups, n_splits=2, val_size=0.2, random_state=1)
    for fold in folds:
        assert len(np.unique(groups[fold.train])) >= 1 and len(fold.val) > 0
        _assert_disjoint_groups(fold.parts(), groups)


def test_too_small_a_class_for_k_folds_suggests_what_can_work():
    with pytest.raises(DataError, match=r"'c' has 3\. Use fewer folds \(--cv 3\)"):
        kfold_splits(np.array([0] * 10 + [1] * 10 + [2] * 3), n_splits=5,
                     classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"'c' has 1\. Remove the class") as err:
        kfold_splits(np.array([0] * 10 + [1] * 10 + [2]), n_splits=2, classes=["a", "b", "c"])
    assert "--cv" not in str(err.value)  # never the number of folds already given
