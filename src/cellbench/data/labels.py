"""Checks of the labels: against the target's values, the groups, the features and the splits.

A target must hold class labels; a class must not be one group (then no split can separate
the class from the sample it came from); labels should mean the same in every group; rows
with identical features should not carry different labels; every training part must hold
more than one class, and a class absent from a training part cannot be learned from it.
"""

from __future__ import annotations

import re
import shlex
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._utils import format_list
from ..exceptions import CellbenchWarning, DataError
from .checks import DataIssue, row_hashes
from .dataset import Dataset

__all__ = ["check_class_is_not_group", "check_labels", "check_target_values",
           "check_training_parts", "labels_from_text", "unlabelled_classes"]


def _show(value: Any) -> Any:
    """A value for a message: numpy scalars as plain Python (``1``, not ``np.int64(1)``)."""
    return value.item() if isinstance(value, np.generic) else value


def labels_from_text(text: pd.Series, column: str, where: str) -> pd.Series:
    """A label column read as text, typed as pandas would have read it: numbers when every
    label is one, text otherwise. Labels written as one number several ways (``1``, ``01``,
    ``1.0``) become one class, as pandas makes them; they are warned about, because a reader
    of the file sees different classes."""
    codes, spelled = pd.factorize(text)  # parse each distinct text once; missing: -1
    values = pd.to_numeric(pd.Series(spelled, dtype=object), errors="coerce")
    if values.isna().any():
        return text  # some label is no number: the classes are the texts as written
    spellings = pd.Series(spelled, dtype=object).groupby(values.to_numpy()).agg(list)
    merged = spellings[spellings.map(len) > 1]
    if len(merged):
        shown = "; ".join(f"{format_list(sorted(texts), 4)} are all {_show(number):g}"
                          for number, texts in merged.head(3).items())
        warnings.warn(f"labels in column {column!r} of {where} write one number several ways "
                      f"({shown}); each number is read as one class. If they are different "
                      "classes, name them with text (e.g. 'c01' and 'c1').", CellbenchWarning,
                      stacklevel=4)
    numbers = values.to_numpy()[codes]
    if (codes < 0).any():
        numbers = np.where(codes < 0, np.nan, numbers.astype(np.float64))
    return pd.Series(numbers, index=text.index, name=text.name)


def _warn(issues: list[DataIssue], code: str, message: str) -> None:
    issues.append(DataIssue("warning", code, message))
    warnings.warn(message, CellbenchWarning, stacklevel=4)


def check_target_values(values: pd.Series, name: str) -> None:
    """Raise when the target is no class label: a measurement or an id (one value a row)."""
    values = values.dropna()
    n, n_unique = len(values), values.nunique()
    examples = format_list(values.drop_duplicates().head(3).tolist(), 3)
    if (pd.api.types.is_float_dtype(values) and n_unique > 20
            and not np.all(np.mod(values.to_numpy(), 1) == 0)):
        raise DataError(
            f"target {name!r} must hold class labels; got {n_unique:,} distinct decimal values "
            f"(e.g. {examples}), a continuous measurement. cellbench trains classifiers: bin "
            "the values into classes first (e.g. pandas.cut), or name the label column with "
            "--target."
        )
    if n_unique > 50 and n_unique > n / 2:
        raise DataError(
            f"target {name!r} must hold class labels shared by many rows; got {n_unique:,} "
            f"distinct values in {n:,} rows (e.g. {examples}), so most classes have one row: "
            "it looks like an id or a measurement. Name the label column with --target."
        )


def _check_label_spellings(ds: Dataset, issues: list[DataIssue]) -> None:
    """Classes whose names differ only in case or surrounding spaces ('B', 'b', 'B ') are
    kept apart, as written; say so, since it is usually one class typed two ways."""
    by_key: dict[str, list[Any]] = {}
    for c in ds.classes:
        if isinstance(c, str):
            by_key.setdefault(" ".join(c.split()).casefold(), []).append(c)
    clashes = [names for names in by_key.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(format_list(names) for names in clashes[:3])
        _warn(issues, "label_spelling",
              f"Classes of {ds.target!r} differ only in case or spaces ({listed}) and are "
              "kept as separate classes. If each set is one class, fix the labels (e.g. "
              "strip spaces and use one case) and rerun.")


#: class names that say "no label": ungated, unassigned or unknown cells, -1
UNLABELLED = re.compile(r"(un[\s_-]?(label+ed|gated|assigned|classified|known|annotated|defined)"
                        r"|not[\s_-]?(gated|label+ed|assigned|classified)|no[\s_-]?label|"
                        r"-1|\?+)", re.IGNORECASE)


def unlabelled_classes(ds: Dataset) -> list[int]:
    """Codes of the classes with rows whose name says "no label" (:data:`UNLABELLED`): the
    loader's warning and the doctor's ``unlabelled_class`` finding both use it."""
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    return [k for k, c in enumerate(ds.classes)
            if counts[k] and UNLABELLED.fullmatch(str(c).strip())]


def _check_unlabelled_class(ds: Dataset, issues: list[DataIssue]) -> None:
    """A class named like cells without a label ('Unlabeled', 'ungated', -1) is learned as a
    population of its own, though it holds a mix of every population."""
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    named = unlabelled_classes(ds)
    if named:
        listed = ", ".join(f"{_show(ds.classes[k])!r} ({counts[k]:,} rows, "
                           f"{counts[k] / counts.sum():.0%})" for k in named)
        flag = shlex.quote(",".join(str(_show(ds.classes[k])) for k in named))
        one = len(named) == 1
        _warn(issues, "unlabelled_class",
              f"{'Class' if one else 'Classes'} {listed} {'is' if one else 'are'} named like "
              "cells without a label (ungated, unassigned or unknown): such a class is "
              "learned and scored as a population of its own, though it may hold cells of "
              "any population, which blurs the real classes and the scores. If these cells "
              f"have no label, remove them with --exclude-labels {flag}.")


def check_labels(ds: Dataset, confounded: Sequence[str] = ()) -> list[DataIssue]:
    """Warn about (and return) label problems; raise when class and group are one.

    ``confounded``: id-like columns (not used as groups) in which every class comes from a
    single value (found by the loader, which still has those columns).
    """
    issues: list[DataIssue] = []
    for col in confounded:
        _warn(issues, "class_is_group",
              f"Column {col!r} looks like a sample/patient id, and every class comes from a "
              f"single {col!r} value: " + _confounding_text("sample", col))
    _check_label_spellings(ds, issues)
    _check_unlabelled_class(ds, issues)
    if ds.groups is not None:
        _check_class_group_confounding(ds, issues)
    if ds.kind == "table":
        check_label_conflicts(ds, issues)
    return issues


def _confounding_text(what: str, column: str) -> str:
    return (f"with these data the class cannot be separated from the {what} {column!r} "
            f"(patient, sample or batch): a split by {column!r} leaves every test class "
            "without training cells, and a split that ignores it scores how well cells are "
            f"matched to their {what}, so every accuracy would measure {what} identity, not "
            f"the class. Collect several {what}s per class; no setting can fix this.")


def _group_counts(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Group ids and the rows of each class in each group, ``(n_groups, n_classes)``."""
    ids, g = ds.group_index
    counts = np.bincount(g.astype(np.int64) * ds.n_classes + ds.y, minlength=len(ids) * ds.n_classes
                         ).reshape(len(ids), ds.n_classes).astype(np.int64)
    return ids, counts


def check_class_is_not_group(ds: Dataset) -> None:
    """Raise, in plain words, when every class comes from a single group: no split by group
    can then separate the class from the sample it came from."""
    if ds.groups is None:
        return
    ids, counts = _group_counts(ds)
    present = counts > 0
    groups_per_class = present.sum(0)
    if len(ids) >= 2 and (groups_per_class[groups_per_class > 0] == 1).all():
        name = ds.group_name or "group"
        pairs = ", ".join(f"{_show(ds.classes[k])!r} only in {_show(ids[present[:, k]][0])!r}"
                          for k in np.flatnonzero(groups_per_class)[:4])
        raise DataError(f"each class must come from several {name} groups; every class comes "
                        f"from a single one ({pairs}{', ...' if ds.n_classes > 4 else ''}): "
                        + _confounding_text("group", name))


def _check_class_group_confounding(ds: Dataset, issues: list[DataIssue]) -> None:
    """Classes from one group only cannot be learned by a grouped split; wildly different
    label mixes suggest labels that mean different things per group. (Every class from one
    group is an error when the split is by group: :func:`check_class_is_not_group`.)"""
    ids, counts = _group_counts(ds)
    present = counts > 0
    groups_per_class = present.sum(0)
    name = ds.group_name or "group"
    lonely = [k for k in np.flatnonzero(groups_per_class == 1)]
    if lonely and len(ids) >= 2 and len(lonely) < (groups_per_class > 0).sum():
        listed = ", ".join(f"{_show(ds.classes[k])!r} (only in "
                           f"{_show(ids[present[:, k]][0])!r})" for k in lonely[:5])
        _warn(issues, "class_in_one_group",
              f"Classes {listed}{' and more' if len(lonely) > 5 else ''} come from a single "
              f"{name} group: when that group is tested, no training cell has the class, so "
              f"it cannot be learned from a split by {name!r}, and its test cells count as "
              "errors. Collect more groups with it, or remove it with --exclude-labels.")
    # a class from 2 groups that hold nothing else: each split trains on one group of it and
    # tests on the other, so a score says whether one sample resembles another (doctor's
    # group_class_confound calls this an error)
    pure = ~(present & (present.sum(1) > 1)[:, None]).any(0)
    few = [k for k in np.flatnonzero(pure & (groups_per_class == 2))]
    if few and len(ids) >= 2:
        listed = ", ".join(f"{_show(ds.classes[k])!r} (only in "
                           f"{format_list([_show(i) for i in ids[present[:, k]]])})"
                           for k in few[:4])
        _warn(issues, "class_few_groups",
              f"Classes {listed}{' and more' if len(few) > 4 else ''} come from 2 {name} "
              f"groups each, and those groups hold no other class: a split by {name!r} "
              "trains on one of them and tests on the other, so the class cannot be told "
              f"apart from the {name}, and a score measures whether two {name}s look alike. "
              f"Collect at least 3 {name}s per class (more for a usable confidence interval).")
    # cell-level labels (most groups hold several classes, of three or more): per-sample
    # label ids show as wildly different mixes; patient-level labels vary by design
    if len(ids) >= 3 and ds.n_classes >= 3 and (present.sum(1) > 1).mean() >= 0.75:
        _check_label_mix(ds, counts, name, issues)


def _check_label_mix(ds: Dataset, counts: np.ndarray, name: str,
                     issues: list[DataIssue]) -> None:
    """Per-group labels (per-sample gates, cluster ids) give each group its own label mix."""
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    pooled = counts.sum(0) / counts.sum()
    distance = 0.5 * np.abs(share - pooled).sum(1)  # total variation per group
    common = pooled >= 0.05
    missing = ((counts == 0) & common).mean(0)[common]  # per common class: groups without it
    if np.median(distance) > 0.4 or (len(missing) and (missing > 0.5).mean() > 0.5):
        _warn(issues, "label_mix",
              f"The label mix differs wildly between {name} groups (median total-variation "
              f"distance from the pooled mix {np.median(distance):.0%}; common classes are "
              f"missing from {missing.mean():.0%} of the groups on average). If labels were "
              "assigned per sample (per-sample gates, cluster ids), the same label may mean "
              "different cells in different groups, and a model trained across groups "
              "learns nothing that transfers. Pass --within-groups to split and evaluate "
              "inside each group (reported per group and pooled).")


def _n_distinct(values: np.ndarray) -> int:
    """How many distinct values (sorts ``values`` in place)."""
    values.sort()
    return int(len(values) > 0) + int(np.count_nonzero(values[1:] != values[:-1]))


def check_label_conflicts(ds: Dataset, issues: list[DataIssue] | None = None
                          ) -> list[DataIssue]:
    """Rows with identical features and different labels: no model can tell them apart."""
    issues = [] if issues is None else issues
    if ds.X.ndim != 2 or ds.n_samples < 2:
        return issues
    # a row with two labels makes more distinct (row, label) hashes than row hashes; each
    # count sorts its hashes in place (no index arrays, no sorted copies)
    if _n_distinct(row_hashes(ds.X)) == _n_distinct(row_hashes(ds.X, labels=ds.y)):
        return issues  # no row shares its values with a row of another class
    h = row_hashes(ds.X)
    pairs = pd.DataFrame({"h": h, "y": ds.y}).value_counts()
    labels_per_row = pairs.groupby(level="h").size()
    clashing = labels_per_row.index[labels_per_row > 1]
    if not len(clashing):
        return issues
    sub = pairs[pairs.index.get_level_values("h").isin(clashing)]
    n_rows = int(sub.sum())
    lost = n_rows - int(sub.groupby(level="h").max().sum())
    first = np.flatnonzero(h == clashing[0])
    a = first[0]
    b = next(i for i in first if ds.y[i] != ds.y[a])
    _warn(issues, "label_conflict",
          f"{n_rows} rows share their exact feature values with rows of another class "
          f"({len(clashing)} set{'' if len(clashing) == 1 else 's'}; e.g. rows {a + 1} "
          f"({_show(ds.classes[ds.y[a]])!r}) and "
          f"{b + 1} ({_show(ds.classes[ds.y[b]])!r})): no model can tell them apart, so at "
          f"least {lost} of them are misclassified whatever the model, an accuracy ceiling of "
          f"{1 - lost / ds.n_samples:.2%}. Overlapping gates give a cell two labels: make the "
          "labels exclusive, or remove these rows.")
    return issues


def check_training_parts(ds: Dataset, splits: Sequence[Any]) -> list[DataIssue]:
    """Raise when a training part holds one class; warn about test classes it lacks."""
    issues: list[DataIssue] = []
    if any(s.grouped for s in splits):
        check_class_is_not_group(ds)
    missing: dict[int, list[str]] = {}

    def present(rows: np.ndarray) -> np.ndarray:  # the classes of these rows, no sort
        return np.bincount(ds.y[rows], minlength=ds.n_classes) > 0

    for split in splits:
        in_train = np.flatnonzero(present(split.train))
        if len(in_train) < 2:
            only = (f"only {_show(ds.classes[in_train[0]])!r}" if len(in_train) else
                    "no rows")
            raise DataError(
                f"the training part of split {split.name!r} must hold at least 2 classes to "
                f"learn a classifier; it holds {only} ({len(split.train)} rows). Use more "
                "groups or fewer folds, a larger --val-size/--test-size balance, or check "
                "--groups and --exclude-labels.")
        for k in np.flatnonzero(present(split.test) & ~present(split.train)
                                & ~present(split.val)):
            missing.setdefault(int(k), []).append(split.name)
    if missing:
        listed = "; ".join(f"{_show(ds.classes[k])!r} in {format_list(names, 3)}"
                           for k, names in list(missing.items())[:5])
        _warn(issues, "class_not_in_training",
              f"Some test parts hold classes their training part lacks ({listed}"
              f"{' and more' if len(missing) > 5 else ''}): such a class cannot be learned "
              "from that split, and its test cells all count as errors. Use fewer folds, "
              "more groups with the class, or remove it with --exclude-labels.")
    return issues
