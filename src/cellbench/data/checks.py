"""Data checks: each finds one kind of problem and says what to do about it.

Errors stop a run (:class:`~cellbench.exceptions.DataError`); warnings are emitted as
:class:`~cellbench.exceptions.CellbenchWarning` and also returned as :class:`DataIssue` records
so the run directory and the report can list them.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._utils import format_list
from ..exceptions import CellbenchWarning, DataError, DataLeakageError
from .dataset import Dataset

__all__ = [
    "DataIssue",
    "check_dataset",
    "check_delimiter",
    "check_float32_range",
    "check_header",
    "check_no_group_overlap",
    "check_scale",
    "check_split_duplicates",
    "id_like_columns",
    "row_hashes",
]

ID_NAME = re.compile(
    r"(^|[^a-z])(sample|patient|donor|subject|individual|file|filename|fcs|case|mouse|animal|"
    r"specimen|batch|id)s?([^a-z]|$)",
    re.IGNORECASE,
)
TIME_NAME = re.compile(r"^(time|event|event[ _-]?(no|num|number|count|length|id)?)$",
                       re.IGNORECASE)
MIN_CELLS_PER_CLASS = 10


@dataclass(frozen=True)
class DataIssue:
    """One finding about the data: ``severity`` is ``"warning"`` or ``"info"``."""

    severity: Literal["warning", "info"]
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _arg(value: str) -> str:
    """A value as typed on a shell command line (``'Unnamed: 0'`` quoted, ``CD3`` bare)."""
    return shlex.quote(value)


def _warn(issues: list[DataIssue], code: str, message: str, severity: str = "warning") -> None:
    issues.append(DataIssue(severity, code, message))  # type: ignore[arg-type]
    if severity == "warning":
        warnings.warn(message, CellbenchWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------
# Column-level checks (run while loading)


def check_header(path: Path, sep: str) -> list[str]:
    """The header's names as written (none when unreadable: the full read says why). Pandas
    renames a repeated name (``f2`` -> ``f2.1``) silently, so repeats are refused."""
    try:
        head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str,
                           keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            ValueError):
        return []  # the full read below says what is wrong
    names = [str(v) for v in head.iloc[0]] if len(head) else []
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        where = ", ".join(
            f"{n!r} (columns {', '.join(str(i + 1) for i, m in enumerate(names) if m == n)})"
            for n in dup[:5])
        raise DataError(f"column names of {str(path)!r} must be unique; got {where}. Rename "
                        "the repeated columns: which one is meant cannot be guessed.")
    return names


def check_delimiter(frame: pd.DataFrame, path: Path, sep: str) -> None:
    """One column whose name holds another delimiter: the file is not ``sep``-separated."""
    if frame.shape[1] != 1:
        return
    header = str(frame.columns[0])
    for other, name in ((";", "semicolon"), ("\t", "tab"), (",", "comma"), ("|", "pipe")):
        if other != sep and header.count(other) >= 1:
            expected = {",": "comma", "\t": "tab"}.get(sep, repr(sep))
            raise DataError(
                f"data file {str(path)!r} must be {expected}-separated (by its suffix); it reads "
                f"as one column, and its header {header[:60]!r} looks {name}-separated. Save it "
                f"with commas as .csv or tabs as .tsv, e.g. pandas.read_csv(path, "
                f"sep={other!r}).to_csv('cells.csv', index=False)."
            )


def drop_trailing_empty_columns(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Without the empty, unnamed last columns a delimiter at the end of every line makes
    (``Unnamed: 7``); other columns are kept as they are."""
    n = 0
    for col in reversed(frame.columns):
        if not (str(col).startswith("Unnamed: ") and frame[col].isna().all()):
            break
        n += 1
    if not n or n == frame.shape[1]:
        return frame
    warnings.warn(f"Dropped {n} empty unnamed column{'s' if n > 1 else ''} at the end of "
                  f"{str(path)!r} (a delimiter at the end of every line).", CellbenchWarning,
                  stacklevel=4)
    return frame.iloc[:, :-n]


def _show(value: Any) -> Any:
    """A value for a message: numpy scalars as plain Python (``1``, not ``np.int64(1)``)."""
    return value.item() if isinstance(value, np.generic) else value


def check_float32_range(frame: pd.DataFrame, feature_cols: Sequence[str],
                        rows: np.ndarray) -> None:
    """Raise when a finite feature value does not fit in float32 (it would become inf)."""
    limit = float(np.finfo(np.float32).max)
    problems = []
    for col in feature_cols:
        if frame[col].dtype.kind != "f" or frame[col].dtype.itemsize <= 4:
            continue
        values = frame[col].to_numpy(np.float64)
        big = np.isfinite(values) & (np.abs(values) > limit)
        if big.any():
            first = int(np.argmax(big))
            problems.append(f"{col!r} ({int(big.sum())} values, first {values[first]:.3g} at "
                            f"row {rows[first] + 1})")
    if problems:
        raise DataError(
            f"feature values must fit in float32 (|x| <= {limit:.3g}); got values that "
            f"overflow float32 in {', '.join(problems[:5])}. Rescale those columns (e.g. "
            "divide by a power of ten) or drop them with --drop."
        )


def id_like_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[str, str]]:
    """Columns that look like sample/patient ids: ``[(name, why), ...]``.

    A column qualifies when its name says so (sample, patient, donor, file, ...) and its values
    repeat (each value on many rows), or when it holds text whose values repeat.
    """
    found = []
    n = len(frame)
    for col in columns:
        values = frame[col]
        n_unique = values.nunique(dropna=True)
        if n_unique < 2 or n_unique > max(2, n // 5):
            continue
        numeric = pd.api.types.is_numeric_dtype(values)
        if ID_NAME.search(col) or not numeric:
            found.append((col, f"{n_unique} distinct values, about {n // n_unique} rows each"))
    return found


def non_numeric_features(frame: pd.DataFrame, feature_cols: Sequence[str], rows: np.ndarray,
                         id_like: Sequence[tuple[str, str]]) -> list[str]:
    """One message per feature column that is not numeric, with an example value and row."""
    ids = {c for c, _ in id_like}
    problems = []
    for col in feature_cols:
        values = frame[col]
        if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_timedelta64_dtype(
                values):  # to_numeric would make nanoseconds of them: acquisition order
            problems.append(
                f"Feature column {col!r} must be numeric; got date-times such as "
                f"{values.iloc[0]!s} (row {rows[0] + 1}), which give the acquisition order, "
                f"not a measurement. Drop it with --drop {col!r}, or choose features with "
                "--features.")
            continue
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        converted = pd.to_numeric(values, errors="coerce")
        bad = converted.isna().to_numpy() & values.notna().to_numpy()
        if not bad.any():  # numbers stored as text: fine, they convert
            frame[col] = converted
            continue
        first = int(np.argmax(bad))
        hint = (f"It looks like a sample/patient id: pass --groups {_arg(col)}" if col in ids
                else f"Drop it with --drop {col!r}")
        problems.append(
            f"Feature column {col!r} must be numeric; got text such as {values.iloc[first]!r} "
            f"(row {rows[first] + 1}). {hint}, or choose features with --features."
        )
    return problems


def describe_missing(X: np.ndarray, bad_x: np.ndarray, bad_label: np.ndarray,
                     feature_cols: Sequence[str], target: str, rows: np.ndarray) -> str:
    """Say how many NaN/inf values there are and where."""
    parts = []
    for j in np.flatnonzero(bad_x.any(axis=0)):
        col = X[:, j]
        n_nan = int(np.isnan(col).sum())
        n_inf = int(np.isinf(col).sum())
        first = rows[int(np.argmax(bad_x[:, j]))] + 1
        kinds = " and ".join(k for k in (f"{n_nan} NaN" if n_nan else "",
                                          f"{n_inf} inf" if n_inf else "") if k)
        parts.append(f"{feature_cols[j]!r} ({kinds}, first at row {first})")
    message = ""
    if parts:
        message = (f"Feature values must be finite; got {int(bad_x.sum())} NaN/inf values in "
                   f"{len(parts)} columns: " + ", ".join(parts[:8])
                   + (f" and {len(parts) - 8} more columns" if len(parts) > 8 else "") + ".")
    if bad_label.any():
        message += (f" Target column {target!r} must have a label on every row; "
                    f"{int(bad_label.sum())} rows have none (first at row "
                    f"{rows[int(np.argmax(bad_label))] + 1}).")
    return message.strip()


def normalize_split_column(values: pd.Series, name: str, rows: np.ndarray) -> np.ndarray:
    """Map train/val/valid/validation/test (any case) to ``train``/``val``/``test``."""
    mapping = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}
    text = values.astype(str).str.strip().str.lower()
    mapped = text.map(mapping)
    bad = mapped.isna().to_numpy()
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"split column {name!r} must hold train, val or test on every row; got "
            f"{values.iloc[first]!r} at row {rows[first] + 1}. Fix the value, or leave out "
            "--split-column to let cellbench split."
        )
    out = mapped.to_numpy().astype(str)
    if not (out == "train").any():
        raise DataError(f"split column {name!r} must mark some rows 'train'; none are.")
    return out


# ---------------------------------------------------------------------------------------------
# Dataset-level checks


def check_dataset(ds: Dataset, id_like: Sequence[tuple[str, str]] = (),
                  confounded: Sequence[str] = ()) -> list[DataIssue]:
    """Check a loaded dataset: raise for fatal problems, warn (and return) the rest.

    ``confounded``: id-like columns (not the groups) in which every class comes from one
    value; :func:`cellbench.data.labels.check_labels` warns about them, not "pass --groups".
    """
    issues: list[DataIssue] = []
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    if ds.n_classes < 2:
        raise DataError(
            f"target {ds.target!r} must have at least 2 classes; got 1 ({ds.classes[0]!r}, "
            f"{ds.n_samples} rows). Check --target and --exclude-labels."
        )
    if ds.kind == "table":
        _check_columns(ds, issues, id_like, confounded)
    small = [(c, int(k)) for c, k in zip(ds.classes, counts, strict=True)
             if k < MIN_CELLS_PER_CLASS]
    if small:
        unit = "images" if ds.kind == "image" else "rows"
        _warn(issues, "tiny_class",
              f"Classes with fewer than {MIN_CELLS_PER_CLASS} {unit} cannot be learned or "
              f"measured reliably: {', '.join(f'{c!r} ({k})' for c, k in small[:8])}"
              + (f" and {len(small) - 8} more" if len(small) > 8 else "")
              + ". Collect more, merge them, or remove them with --exclude-labels.")
    ratio = counts.max() / max(counts.min(), 1)
    if ratio >= 10:
        _warn(issues, "imbalance",
              f"Classes are imbalanced ({ratio:.0f}:1 between the largest and the smallest). "
              "Accuracy will flatter the majority class: read balanced accuracy and macro-F1, "
              "and consider --class-weight balanced.")
    if ds.groups is not None:
        n_groups = ds.n_groups
        if n_groups < 3:
            _warn(issues, "few_groups",
                  f"Only {n_groups} distinct groups in {ds.group_name!r}: a grouped split "
                  "needs at least 3 (train, validation, test), and conclusions about new "
                  "patients need many more.")
    return issues


def _check_columns(ds: Dataset, issues: list[DataIssue],
                   id_like: Sequence[tuple[str, str]], confounded: Sequence[str] = ()) -> None:
    X = ds.X
    for col, why in id_like:
        if col in confounded:  # data.labels.check_labels says it in plain words
            continue
        if col in ds.feature_names:
            _warn(issues, "id_feature",
                  f"Column {col!r} looks like a sample/patient id ({why}) and is used as a "
                  f"feature. Cells of one sample are not independent: pass --groups {_arg(col)} "
                  f"to split by it (it is then not a feature), or --drop {_arg(col)}.")
        else:
            _warn(issues, "id_column",
                  f"Column {col!r} looks like a sample/patient id ({why}) but no groups were "
                  f"given, so cells of one sample may land in both train and test and inflate "
                  f"the scores. Pass --groups {_arg(col)} (groups={col!r}) to split by it.")
    timey = [c for c in ds.feature_names if TIME_NAME.match(c)]
    if timey:
        _warn(issues, "time_feature",
              f"Columns {format_list(timey)} look like acquisition time or event numbers and "
              "are used as features; they carry run order, not biology. Drop them with "
              f"--drop {_arg(','.join(timey))}.")
    if X.shape[0] > 1:
        low, high = X.min(axis=0), X.max(axis=0)
        span = high.astype(np.float64) - low  # float32's range would overflow near 3e38
        constant = [ds.feature_names[j] for j in np.flatnonzero(span == 0)]
        if len(constant) == X.shape[1]:
            raise DataError(
                f"feature columns must vary from row to row; all {len(constant)} are constant "
                f"({format_list(constant)}), so there is nothing to learn from. Check "
                "--features and --drop, or how the table was exported.")
        rank = np.arange(X.shape[0], dtype=np.float64)
        index = [ds.feature_names[j] for j in np.flatnonzero(
                 np.isin(low, (0, 1)) & (span == X.shape[0] - 1))
                 if np.array_equal(np.sort(X[:, j]) - low[j], rank)]
        if index:
            _warn(issues, "row_index",
                  f"Columns {format_list(index)} number the rows (0, 1, 2, ... in some order): "
                  "a saved row index, used as a feature. It carries how the table was built "
                  "and sorted (often by class or sample), not biology: drop it with --drop "
                  f"{_arg(','.join(index))}.")
        if constant:
            _warn(issues, "constant_column",
                  f"Columns {format_list(constant)} are constant and carry no information; "
                  f"drop them with --drop {_arg(','.join(constant))}.")
    if X.shape[1] > 1:
        first_of: dict[bytes, str] = {}
        dups = []
        for j, name in enumerate(ds.feature_names):
            digest = hashlib.blake2b(np.ascontiguousarray(X[:, j]).tobytes()).digest()
            if digest in first_of:
                dups.append((name, first_of[digest]))
            else:
                first_of[digest] = name
        if dups:
            _warn(issues, "duplicate_column",
                  "Columns duplicate others: "
                  + ", ".join(f"{a!r} = {b!r}" for a, b in dups[:5])
                  + ". Drop the copies with --drop.")


def check_scale(ds: Dataset, transform: Sequence[str]) -> list[DataIssue]:
    """Warn when a table looks like raw cytometry intensities but no arcsinh is applied."""
    issues: list[DataIssue] = []
    if ds.kind != "table" or "arcsinh" in transform or ds.n_samples < 20:
        return issues
    X = ds.X[:: max(1, ds.n_samples // 20000)]
    q50, q99 = np.percentile(X, [50, 99], axis=0)
    raw = [ds.feature_names[j] for j in range(X.shape[1])
           if q99[j] > 100 and q99[j] > 20 * max(abs(q50[j]), 1.0) and X[:, j].min() > -q99[j]]
    if len(raw) >= max(1, X.shape[1] // 3):
        _warn(issues, "raw_intensities",
              f"{len(raw)} of {X.shape[1]} columns look like un-transformed cytometry "
              f"intensities (long right tail, e.g. {format_list(raw, 3)}). Networks and linear "
              "models learn poorly on them: use --transform arcsinh,standardize (cofactor 5 "
              "for mass, 150 for flow cytometry: --cytometry mass|flow or --cofactor).")
    return issues


def check_no_group_overlap(parts: dict[str, np.ndarray], groups: np.ndarray | None,
                           names: np.ndarray | None = None) -> None:
    """Raise :class:`DataLeakageError` if any group has rows in two of the index arrays
    (``groups`` may be codes into ``names``)."""
    if groups is None:
        return
    seen: dict[Any, str] = {}
    for part, index in parts.items():
        # codes (with names) are counted; other ids sorted
        present = (np.flatnonzero(np.bincount(groups[index], minlength=len(names)))
                   if names is not None else np.unique(groups[index]))
        for g in present:
            if g in seen and seen[g] != part:
                n_a = int((groups[parts[seen[g]]] == g).sum())
                n_b = int((groups[index] == g).sum())
                shown = g if names is None else names[g]
                raise DataLeakageError(
                    f"Group {_show(shown)!r} must be in one part only; it has rows in both "
                    f"{seen[g]} ({n_a}) and {part} ({n_b}). Pass groups=... / --groups so the "
                    "split keeps each patient/sample together, or fix the given split column."
                )
            seen[g] = part


def row_hashes(X: np.ndarray, rows: np.ndarray | None = None,
               labels: np.ndarray | None = None, chunk: int = 1 << 15) -> np.ndarray:
    """A 64-bit hash of each row of ``X`` (of ``X[rows]``), with its label when given.

    Hashed in chunks of rows, so memory stays bounded however long the table; a row's hash
    does not depend on the chunking (pandas hashes each row from its own values).
    """
    n = len(X) if rows is None else len(rows)
    out = np.empty(n, np.uint64)
    for start in range(0, n, chunk):
        index = slice(start, start + chunk) if rows is None else rows[start:start + chunk]
        part = pd.DataFrame(X[index], copy=False)
        if labels is not None:
            part["__label__"] = labels[index]
        out[start:start + len(part)] = pd.util.hash_pandas_object(part, index=False).to_numpy()
    return out


def check_split_duplicates(X: np.ndarray, train: np.ndarray, test: np.ndarray,
                           name: str = "test", grouped: bool = False,
                           threshold: float = 0.001, y: np.ndarray | None = None
                           ) -> list[DataIssue]:
    """Report identical feature rows in both train and ``name``.

    A warning when at least ``threshold`` of the ``name`` rows are copies; fewer are recorded
    as information (identical saturated or all-zero events occur in real data). With ``y``,
    only copies with the same label count: identical rows of different classes are a label
    conflict (:func:`check_label_conflicts`), which lowers scores instead of inflating them.
    """
    issues: list[DataIssue] = []
    if X.ndim != 2 or len(train) == 0 or len(test) == 0:
        return issues

    h_train = row_hashes(X, train, y)
    h_train.sort()  # in place: a lookup by binary search, not np.isin's sorted copies
    h_test = row_hashes(X, test, y)
    at = np.searchsorted(h_train, h_test)
    shared = h_train[np.minimum(at, len(h_train) - 1)] == h_test
    del at
    if not shared.any():
        return issues
    hint = ("Patients/samples are already kept apart, so check for duplicated files or "
            "exported events" if grouped else
            "Remove duplicate cells, or split by sample (--groups) if they come from the same "
            "files")
    message = (f"{int(shared.sum())} {name} rows ({shared.mean():.2%}) are exact copies of "
               f"training rows. Copies inflate {name} scores. {hint}.")
    _warn(issues, "duplicate_rows", message,
          "warning" if shared.mean() >= threshold else "info")
    return issues
