"""Which column plays which role in a table, and the checks on its rows.

Shared by every table loader (:mod:`cellbench.data.io` for files and frames,
:mod:`cellbench.data.study` for a folder of Parquet files): the target, group and split
columns as given (checked, with suggestions) or guessed, the feature columns (names or
globs), the label codes, and the rows with missing values.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._utils import did_you_mean, format_list
from ..exceptions import CellbenchWarning, DataError
from . import checks
from .dataset import Dataset
from .labels import check_labels

__all__ = ["TARGET_GUESSES", "build_dataset", "check_numeric", "check_same_columns",
           "complete_rows", "decide_roles", "feature_columns", "guess_target", "kept_rows",
           "label_values", "match_labels", "resolve_columns", "role_column", "warn_unmatched"]

TARGET_GUESSES = ("label", "labels", "target", "class", "y", "cell_type", "celltype", "population")


def resolve_columns(patterns: Sequence[str], columns: Sequence[str], aliases: dict[str, str],
             what: str) -> list[str]:
    """Names or globs (matching column names or aliases) → column names, in table order."""
    chosen: list[str] = []
    for pattern in patterns:
        hits = [c for c in columns if fnmatch.fnmatchcase(c, pattern)]
        hits += [aliases[a] for a in aliases if fnmatch.fnmatchcase(a, pattern)]
        if not hits:
            guess = did_you_mean(pattern, [*columns, *aliases])
            raise DataError(
                f"{what} {pattern!r} must name a column; no column matches it."
                + (f" Did you mean {guess!r}?" if guess else "")
                + f" Columns: {format_list(columns, 12)}."
            )
        chosen.extend(h for h in hits if h not in chosen)
    order = {c: i for i, c in enumerate(columns)}
    return sorted(chosen, key=order.__getitem__)


def role_column(name: str, columns: Sequence[str], aliases: dict[str, str], what: str,
            flag: str) -> str:
    if name in columns:
        return name
    if name in aliases:
        return aliases[name]
    guess = did_you_mean(name, [*columns, *aliases])
    raise DataError(
        f"{what} column must be one of the table's columns; got {name!r}."
        + (f" Did you mean {guess!r}?" if guess else "")
        + f" Columns: {format_list(columns, 12)}. Pass it with {flag}."
    )


def guess_target(columns: Sequence[str]) -> str:
    lowered = {c.lower(): c for c in columns}
    hits = [lowered[g] for g in TARGET_GUESSES if g in lowered]
    if len(hits) == 1:
        return hits[0]
    raise DataError(
        "target column must be given; "
        + (f"several columns could be it ({format_list(hits)})" if hits
           else "none is named like a label (label, class, target, cell_type, ...)")
        + f". Pass --target COLUMN; columns are {format_list(columns, 12)}."
    )


def match_labels(values: pd.Series, wanted: Sequence[str]) -> np.ndarray:
    """Rows whose label equals one of ``wanted`` (strings from the CLI, numbers compared too)."""
    mask = values.astype(str).isin(set(wanted)).to_numpy()
    numeric = pd.to_numeric(pd.Series(list(wanted)), errors="coerce").dropna()
    if len(numeric) and pd.api.types.is_numeric_dtype(values):
        mask = mask | values.isin(numeric.tolist()).to_numpy()
    return mask


def warn_unmatched(wanted: Sequence[Any], labels: pd.Series, stacklevel: int = 4) -> None:
    """An --exclude-labels value that matches no row is a typo until shown otherwise."""
    unmatched = [str(v) for v in wanted if not match_labels(labels, [str(v)]).any()]
    if unmatched:
        warnings.warn(f"exclude_labels {format_list(unmatched)} match no row, so nothing was "
                      f"removed for them; the labels are {format_list(labels.unique(), 8)}.",
                      CellbenchWarning, stacklevel=stacklevel)


def check_same_columns(names: Sequence[str], expected: Sequence[str], file: Any, first: Any,
                       what: str, fix: str) -> None:
    """Every file of a folder has the first file's columns (in any order), or raise naming
    the odd file and what it lacks or adds."""
    if set(names) != set(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise DataError(f"{what}; {file.name!r} differs from {first.name!r}: missing "
                        f"{missing}, extra {extra}. {fix}")


def kept_rows(labels: pd.Series, exclude_labels: Sequence[Any]) -> np.ndarray | None:
    """Rows whose label is not in ``exclude_labels`` (None: nothing to exclude); every row
    removed raises, and a value that matches no row warns (a typo until shown otherwise)."""
    if not len(exclude_labels):
        return None
    keep = ~match_labels(labels, [str(v) for v in exclude_labels])
    if not keep.any():
        raise DataError(f"exclude_labels {list(exclude_labels)} must leave some rows; it "
                        f"removes all {len(labels)}.")
    warn_unmatched(exclude_labels, labels, stacklevel=5)
    return keep


def label_values(col: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Class codes ``0 .. K-1`` and the sorted class labels of a label column."""
    if isinstance(col.dtype, pd.CategoricalDtype) and not pd.api.types.is_numeric_dtype(
            col.cat.categories):  # a study's labels: no string per cell is made
        names = np.asarray(col.cat.categories.astype(str), dtype=object)
        codes = col.cat.codes.to_numpy()
        present = np.unique(codes)
        order = np.argsort(names[present].astype(str), kind="stable")
        remap = np.full(len(names), -1, np.int64)
        remap[present[order]] = np.arange(len(present))
        return remap[codes], names[present[order]].tolist()
    if pd.api.types.is_float_dtype(col) and np.all(np.mod(col.to_numpy(), 1) == 0):
        col = col.astype(np.int64)
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        values = col.to_numpy()
    else:
        values = col.astype(str).to_numpy()
    classes, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), classes.tolist()


_ROLE_MEANING = {"target": "the class to predict",
                 "groups": "the patient/sample each cell comes from",
                 "split": "the train/val/test part of each row"}


def decide_roles(columns: list[str], aliases: dict[str, str], target: str | None,
                 groups: str | None, split_column: str | None, default_target: str | None = None,
                 default_groups: str | None = None) -> tuple[str, str | None, str | None]:
    """The target, group and split columns: as given (checked, with suggestions), else
    what the source says (FCS sample sheets), else a guessed label column."""
    target = role_column(target, columns, aliases, "target", "--target") if target else None
    target = target or default_target or guess_target(columns)
    group_col = role_column(groups, columns, aliases, "groups", "--groups") if groups else None
    split_col = (role_column(split_column, columns, aliases, "split", "--split-column")
                 if split_column else None)
    roles = [("target", "--target", target), ("groups", "--groups", group_col),
             ("split", "--split-column", split_col)]
    for i, (what, flag, name) in enumerate(roles):
        for other, other_flag, other_name in roles[i + 1:]:
            if name and name == other_name:
                raise DataError(
                    f"{other} column must differ from the {what} column; got {name!r} for "
                    f"both. {other_flag} names {_ROLE_MEANING[other]}, {flag} "
                    f"{_ROLE_MEANING[what]}.")
    return target, group_col or default_groups, split_col


def feature_columns(columns: list[str], aliases: dict[str, str], roles: set[str],
                     features: Sequence[str], drop: Sequence[str]) -> list[str]:
    """The feature columns: ``features`` (names or globs) or every column without a role."""
    dropped = set(resolve_columns(drop, columns, aliases, "drop pattern")) if drop else set()
    if features:
        feature_cols = resolve_columns(features, columns, aliases, "feature")
        clash = [c for c in feature_cols if c in roles]
        if clash:
            raise DataError(f"features must not include the target, group or split column; got "
                            f"{clash}. Remove them from --features.")
        feature_cols = [c for c in feature_cols if c not in dropped]
    else:
        feature_cols = [c for c in columns if c not in roles and c not in dropped]
    if not feature_cols:
        raise DataError(f"at least one feature column must remain; got none after removing "
                        f"target/groups/drop from {format_list(columns, 12)}.")
    return feature_cols


def check_numeric(frame: pd.DataFrame, feature_cols: list[str], rows: np.ndarray,
                   id_like: Sequence[tuple[str, str]]) -> None:
    problems = checks.non_numeric_features(frame, feature_cols, rows, id_like)
    if problems:
        raise DataError("\n".join(problems) if len(problems) == 1 else
                        f"{len(problems)} feature columns must be numeric:\n  - "
                        + "\n  - ".join(problems))


def complete_rows(frame: pd.DataFrame, X: np.ndarray, feature_cols: list[str], target: str,
                   group_col: str | None, rows: np.ndarray, dropna: bool) -> np.ndarray | None:
    """Rows to keep when some have NaN/inf features or no label or group (``dropna``); None
    when all are complete. Without ``dropna`` such rows raise, naming where they are."""
    bad_label = frame[target].isna().to_numpy()
    bad_rows = np.zeros(len(X), bool)
    for start in range(0, len(X), 1 << 16):  # no full-size boolean copy of X
        bad_rows[start:start + (1 << 16)] = ~np.isfinite(X[start:start + (1 << 16)]).all(axis=1)
    bad_rows |= bad_label
    bad_group = frame[group_col].isna().to_numpy() if group_col else np.zeros_like(bad_label)
    bad_rows |= bad_group
    if not bad_rows.any():
        return None
    message = checks.describe_missing(X, ~np.isfinite(X), bad_label, feature_cols, target,
                                      rows)
    if bad_group.any():
        message += (f" Group column {group_col!r} is empty in {int(bad_group.sum())} rows "
                    f"(first at row {rows[np.argmax(bad_group)] + 1}).")
    texts = [c for c, bad in ((target, bad_label), (group_col, bad_group))
             if c and bad.any() and not pd.api.types.is_numeric_dtype(frame[c])]
    if texts:  # a class called "None" or "NA" is read as missing by the CSV reader
        message += (f" A value written NA, N/A, None, null or NaN in {format_list(texts)} is "
                    "read as missing: if one of those names a class or group, rename it "
                    "(e.g. to 'none').")
    message = message.strip()
    if not dropna:
        raise DataError(message + f" Pass --dropna (dropna=True) to drop the "
                        f"{int(bad_rows.sum())} affected rows, or fill them first.")
    warnings.warn(f"Dropped {int(bad_rows.sum())} of {len(frame)} rows: {message}",
                  CellbenchWarning, stacklevel=3)
    return ~bad_rows


def build_dataset(frame: pd.DataFrame, X: np.ndarray, feature_cols: list[str], target: str,
                  group_col: str | None, split_col: str | None, rows: np.ndarray, *,
                  source: str, cytometry: str | None, aliases: dict[str, str],
                  id_like: Sequence[tuple[str, str]] = ()) -> Dataset:
    """The checked :class:`Dataset` of complete rows: ``X`` (float32 features) and
    ``frame`` (the target, group and split columns; row ``i`` of both is the table's row
    ``rows[i]``), with the data checks' issues attached."""
    y, classes = label_values(frame[target])
    group_values = None
    if group_col and isinstance(frame[group_col].dtype, pd.CategoricalDtype):
        # the category names as strings, each shared by its rows (8 bytes a row, where
        # fixed-width strings take 4 a character)
        cat = frame[group_col].cat
        names = np.array([str(c) for c in cat.categories], dtype=object)
        group_values = names[cat.codes.to_numpy()]
    elif group_col:
        group_values = frame[group_col].to_numpy()
    split_values = None
    if split_col:
        split_values = checks.normalize_split_column(frame[split_col], split_col, rows)

    ds = Dataset(X=np.ascontiguousarray(X), y=y, classes=classes, feature_names=feature_cols,
                 groups=group_values, split=split_values, target=target, group_name=group_col,
                 source=source, cytometry=cytometry,
                 aliases={a: n for a, n in aliases.items() if n in feature_cols})
    confounded = [c for c, _ in id_like if c in frame.columns
                  and (frame.groupby(frame[target].astype(str))[c].nunique() == 1).all()]
    ds.issues = checks.check_dataset(ds, id_like=id_like, confounded=confounded)
    ds.issues += check_labels(ds, confounded)
    return ds
