"""Load cytometry tables into a :class:`~cellbench.data.Dataset`.

Sources: CSV/TSV/Parquet files, one FCS file, a folder of FCS files (labels from a sample sheet
or from one subfolder per class), an AnnData (``.h5ad`` file or object; see ``anndata_io``), a
pandas DataFrame, or numpy arrays.

>>> import pandas as pd
>>> from cellbench.data import load_table
>>> df = pd.DataFrame({"CD3": [i % 7 * 1.5 for i in range(40)], "CD4": [i % 5 for i in
...                    range(40)], "label": list("ab") * 20})
>>> ds = load_table(df, target="label")
>>> ds.feature_names, ds.classes
(['CD3', 'CD4'], ['a', 'b'])
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import did_you_mean, format_list
from ..exceptions import CellbenchWarning, DataError, InvalidParameterError
from . import checks
from .anndata_io import anndata_frame, is_anndata
from .dataset import Dataset
from .fcs import FcsFile, read_fcs
from .labels import check_labels, check_target_values
from .sheets import SAMPLE_SHEET_NAMES, read_sample_sheet, sheet_entries
from .tables import TABLE_SUFFIXES, table_read_errors, table_suffix

__all__ = ["from_arrays", "iter_fcs_folder", "load_table", "read_frame", "read_sample_sheet"]

TARGET_GUESSES = ("label", "labels", "target", "class", "y", "cell_type", "celltype", "population")


class _Frame:
    """A raw table plus what its reader knows (aliases, instrument kind, default roles).

    ``meta`` are columns the reader added (an FCS folder's ``label``, ``sample``, ``patient``
    and other sample-sheet columns): they describe the file a cell came from and are never
    features.
    """

    def __init__(self, frame: pd.DataFrame, source: str, aliases: dict[str, str] | None = None,
                 cytometry: str | None = None, target: str | None = None,
                 groups: str | None = None, meta: Sequence[str] = ()) -> None:
        self.frame = frame
        self.source = source
        self.aliases = aliases or {}
        self.cytometry = cytometry
        self.target = target
        self.groups = groups
        self.meta = tuple(meta)


def read_frame(source: Any, sample_sheet: str | Path | None = None,
               require_labels: bool = True, layer: str | None = None) -> _Frame:
    """Read ``source`` into a raw table; no column roles are decided here.

    A folder of FCS files needs labels (a sample sheet or class subfolders) unless
    ``require_labels`` is False (prediction), when loose files are read as they are.
    ``layer`` picks the features of an AnnData (default: ``X``).
    """
    if is_anndata(source):
        frame, obs_columns = anndata_frame(source, layer)
        return _Frame(frame, "AnnData", meta=obs_columns)
    where = "a DataFrame" if isinstance(source, pd.DataFrame) else repr(str(source))
    if layer is not None and not where.lower().endswith(".h5ad'"):
        raise InvalidParameterError(f"layer must be None for {where}, which is no AnnData; "
                                    f"got {layer!r}. Drop it: it picks a layer of an .h5ad.")
    if isinstance(source, pd.DataFrame):
        return _Frame(source, "DataFrame")
    path = Path(source)
    if path.is_dir():
        return _read_fcs_folder(path, sample_sheet, require_labels)
    suffix = table_suffix(path)
    if suffix == ".h5ad":
        frame, obs_columns = anndata_frame(path, layer)
        return _Frame(frame, str(path), meta=obs_columns)
    if suffix == ".fcs":
        fcs = read_fcs(path)
        return _Frame(fcs.frame, str(path), fcs.aliases, fcs.cytometry)
    if path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} must not be empty; got 0 bytes.")
    with table_read_errors(path, suffix):
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            checks.check_header(path, TABLE_SUFFIXES[suffix])
            frame = pd.read_csv(path, sep=TABLE_SUFFIXES[suffix], encoding="utf-8-sig")
            checks.check_delimiter(frame, path, TABLE_SUFFIXES[suffix])
    if frame.shape[0] == 0:
        raise DataError(f"data file {str(path)!r} must hold at least one row; it has a header "
                        f"({format_list(frame.columns)}) but no rows.")
    return _Frame(frame, str(path))


def _read_fcs_folder(root: Path, sample_sheet: str | Path | None,
                     require_labels: bool = True) -> _Frame:
    frames, aliases, kinds, meta = [], {}, set(), []
    for frame, fcs, file_meta in iter_fcs_folder(root, sample_sheet, require_labels):
        frames.append(frame)
        meta = file_meta
        aliases.update(fcs.aliases)
        kinds.add(fcs.cytometry)
    frame = pd.concat(frames, ignore_index=True)
    groups = "patient" if "patient" in frame.columns else "sample"
    return _Frame(frame, str(root), aliases, kinds.pop() if len(kinds) == 1 else None,
                  target="label" if "label" in frame.columns else None, groups=groups,
                  meta=meta)


def _fcs_entries(root: Path, sample_sheet: str | Path | None,
                 require_labels: bool) -> tuple[list[tuple[Path, str, str | None]], dict]:
    if sample_sheet is None:
        found = [root / n for n in SAMPLE_SHEET_NAMES if (root / n).is_file()]
        sample_sheet = found[0] if found else None
    entries: list[tuple[Path, str, str | None]] = []  # (file, label, patient)
    extras: dict[str, list[str]] = {}  # other sample-sheet columns, one value per entry
    if sample_sheet is not None:
        sheet = read_sample_sheet(sample_sheet)
        entries += sheet_entries(sheet, sample_sheet, root,
                                 "patient" if "patient" in sheet.columns else None)
        extras = {c: sheet[c].tolist() for c in sheet.columns
                  if c not in ("file", "label", "patient")}
        listed = {e[0].resolve() for e in entries}
        unlisted = [p.name for p in _fcs_files(root) if p.resolve() not in listed]
        if unlisted:
            warnings.warn(f"{len(unlisted)} FCS files in {str(root)!r} are not in the sample "
                          f"sheet and are ignored: {format_list(unlisted)}.", CellbenchWarning,
                          stacklevel=3)
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            entries.extend((f, sub.name, None) for f in _fcs_files(sub))
        loose = _fcs_files(root)
        if not entries and not require_labels:
            entries = [(f, "", None) for f in loose]
        if not entries:
            raise DataError(
                f"a folder of FCS files must come with labels; {str(root)!r} has "
                f"{len(loose)} FCS files but no sample sheet and no class subfolders. Put the "
                "files in one subfolder per class (root/<label>/*.fcs) or add a CSV sample "
                "sheet with columns file,label[,patient] (--sample-sheet)."
            )
    return entries, extras


def iter_fcs_folder(root: Path, sample_sheet: str | Path | None = None,
                    require_labels: bool = True
                    ) -> Iterator[tuple[pd.DataFrame, FcsFile, list[str]]]:
    """A folder's FCS files one at a time, in the order they are loaded: (the file's table,
    the file, the ``meta`` columns added from the folder: label, sample, patient, sheet
    columns). Every table has the first file's channels, in its order."""
    entries, extras = _fcs_entries(root, sample_sheet, require_labels)
    channels, first = None, None
    for i, (file, label, patient) in enumerate(entries):
        fcs = read_fcs(file)
        cols = list(fcs.frame.columns)
        if channels is None:
            channels, first = cols, file
        elif set(cols) != set(channels):
            missing = sorted(set(channels) - set(cols))
            extra = sorted(set(cols) - set(channels))
            raise DataError(
                f"FCS files must share their channels; {file.name!r} differs from "
                f"{first.name!r}: missing {missing}, extra {extra}. Re-export with the same "
                "panel, or drop the odd file from the sample sheet."
            )
        frame = fcs.frame[channels].copy()
        if label:
            frame["label"] = label
        frame["sample"] = file.stem
        if patient is not None:
            frame["patient"] = patient
        for col, values in extras.items():
            if col not in frame.columns:
                frame[col] = values[i]
        yield frame, fcs, [c for c in ("label", "sample", "patient", *extras)
                           if c not in channels]
    if channels is None:
        raise DataError(f"a folder of FCS files must contain .fcs files; {str(root)!r} has none.")


def _fcs_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".fcs")


def _resolve(patterns: Sequence[str], columns: Sequence[str], aliases: dict[str, str],
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


def _column(name: str, columns: Sequence[str], aliases: dict[str, str], what: str,
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


def _guess_target(columns: Sequence[str]) -> str:
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


def _match_labels(values: pd.Series, wanted: Sequence[str]) -> np.ndarray:
    """Rows whose label equals one of ``wanted`` (strings from the CLI, numbers compared too)."""
    mask = values.astype(str).isin(set(wanted)).to_numpy()
    numeric = pd.to_numeric(pd.Series(list(wanted)), errors="coerce").dropna()
    if len(numeric) and pd.api.types.is_numeric_dtype(values):
        mask = mask | values.isin(numeric.tolist()).to_numpy()
    return mask


def _warn_unmatched(wanted: Sequence[Any], labels: pd.Series) -> None:
    """An --exclude-labels value that matches no row is a typo until shown otherwise."""
    unmatched = [str(v) for v in wanted if not _match_labels(labels, [str(v)]).any()]
    if unmatched:
        warnings.warn(f"exclude_labels {format_list(unmatched)} match no row, so nothing was "
                      f"removed for them; the labels are {format_list(labels.unique(), 8)}.",
                      CellbenchWarning, stacklevel=4)


def _label_values(col: pd.Series) -> tuple[np.ndarray, list[Any]]:
    if pd.api.types.is_float_dtype(col) and np.all(np.mod(col.to_numpy(), 1) == 0):
        col = col.astype(np.int64)
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        values = col.to_numpy()
    else:
        values = col.astype(str).to_numpy()
    classes, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), classes.tolist()


def _roles(raw: _Frame, columns: list[str], target: str | None, groups: str | None,
           split_column: str | None) -> tuple[str, str | None, str | None]:
    """The target, group and split columns: as given (checked, with suggestions), else
    what the source says (FCS sample sheets), else a guessed label column."""
    aliases = raw.aliases
    target = _column(target, columns, aliases, "target", "--target") if target else None
    target = target or raw.target or _guess_target(columns)
    group_col = _column(groups, columns, aliases, "groups", "--groups") if groups else None
    split_col = (_column(split_column, columns, aliases, "split", "--split-column")
                 if split_column else None)
    return target, group_col or raw.groups, split_col


def _feature_columns(columns: list[str], aliases: dict[str, str], roles: set[str],
                     features: Sequence[str], drop: Sequence[str]) -> list[str]:
    """The feature columns: ``features`` (names or globs) or every column without a role."""
    dropped = set(_resolve(drop, columns, aliases, "drop pattern")) if drop else set()
    if features:
        feature_cols = _resolve(features, columns, aliases, "feature")
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


def _check_numeric(frame: pd.DataFrame, feature_cols: list[str], rows: np.ndarray,
                   id_like: Sequence[tuple[str, str]]) -> None:
    problems = checks.non_numeric_features(frame, feature_cols, rows, id_like)
    if problems:
        raise DataError("\n".join(problems) if len(problems) == 1 else
                        f"{len(problems)} feature columns must be numeric:\n  - "
                        + "\n  - ".join(problems))


def _complete_rows(frame: pd.DataFrame, X: np.ndarray, feature_cols: list[str], target: str,
                   group_col: str | None, rows: np.ndarray, dropna: bool) -> np.ndarray | None:
    """Rows to keep when some have NaN/inf features or no label or group (``dropna``); None
    when all are complete. Without ``dropna`` such rows raise, naming where they are."""
    bad_label = frame[target].isna().to_numpy()
    bad_x = ~np.isfinite(X)
    bad_rows = bad_x.any(axis=1) | bad_label
    bad_group = frame[group_col].isna().to_numpy() if group_col else np.zeros_like(bad_label)
    bad_rows |= bad_group
    if not bad_rows.any():
        return None
    message = checks.describe_missing(X, bad_x, bad_label, feature_cols, target, rows)
    if bad_group.any():
        message += (f" Group column {group_col!r} is empty in {int(bad_group.sum())} rows "
                    f"(first at row {rows[np.argmax(bad_group)] + 1}).")
    if not dropna:
        raise DataError(message + f" Pass --dropna (dropna=True) to drop the "
                        f"{int(bad_rows.sum())} affected rows, or fill them first.")
    warnings.warn(f"Dropped {int(bad_rows.sum())} of {len(frame)} rows: {message}",
                  CellbenchWarning, stacklevel=3)
    return ~bad_rows


def load_table(
    source: Any,
    *,
    target: str | None = None,
    groups: str | None = None,
    features: Sequence[str] = (),
    drop: Sequence[str] = (),
    exclude_labels: Sequence[Any] = (),
    dropna: bool = False,
    split_column: str | None = None,
    sample_sheet: str | Path | None = None,
    cytometry: str | None = None,
    layer: str | None = None,
) -> Dataset:
    """Load a table (or FCS file/folder) into a :class:`Dataset`, checking it on the way.

    Parameters
    ----------
    source : path, DataFrame, AnnData
        CSV/TSV/Parquet/FCS/.h5ad file, a folder of FCS files, a DataFrame or an AnnData
        (features from ``X``, named by ``var_names``; ``obs`` columns are never features).
    target : str, optional
        Label column. Guessed when exactly one column is named like a label; FCS folders
        take labels from the sample sheet or class subfolders.
    groups : str, optional
        Patient/sample column. FCS folders default to the sheet's ``patient`` or the file.
    features : sequence of str
        Names or globs; FCS channels match by ``$PnN`` or ``$PnS``. Default: every column
        except target, groups, split column and ``drop``.
    drop : sequence of str
        Names or globs never used as features (e.g. ``Time``, ``Event*``).
    exclude_labels : sequence
        Rows with these labels are removed before anything else (e.g. ``0`` = ungated).
    dropna : bool
        Drop rows with NaN/inf features or a missing label instead of raising.
    split_column : str, optional
        Column holding ``train``/``val``/``test`` per row; that split is then used as given.
    sample_sheet : path, optional
        For FCS folders: CSV with ``file,label[,patient]``.
    cytometry : {"mass", "flow"}, optional
        Instrument kind when known; FCS files are guessed from ``$CYT``.
    layer : str, optional
        For an AnnData: features from ``layers[layer]`` instead of ``X``.

    Raises
    ------
    DataError
        Missing columns, non-numeric features, NaN/inf without ``dropna``, a single class, ...
    """
    raw = read_frame(source, sample_sheet, layer=layer)
    frame, aliases = raw.frame, raw.aliases
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"column names must be unique; got duplicates {dup} in {raw.source}.")

    target, group_col, split_col = _roles(raw, columns, target, groups, split_column)
    rows = np.arange(len(frame))  # original positions, for messages after filtering
    if len(exclude_labels):
        frame_before = frame[target]
        keep = ~_match_labels(frame[target], [str(v) for v in exclude_labels])
        if not keep.any():
            raise DataError(f"exclude_labels {list(exclude_labels)} must leave some rows; it "
                            f"removes all {len(frame)}.")
        frame, rows = frame.loc[keep].reset_index(drop=True), rows[keep]
        _warn_unmatched(exclude_labels, frame_before)

    check_target_values(frame[target], target)
    roles = {c for c in (target, group_col, split_col, *raw.meta) if c}
    feature_cols = _feature_columns(columns, aliases, roles, features, drop)

    id_like = [] if group_col else checks.id_like_columns(
        frame, [c for c in columns if c not in (target, split_col)])
    _check_numeric(frame, feature_cols, rows, id_like)
    checks.check_float32_range(frame, feature_cols, rows)

    X = frame[feature_cols].to_numpy(dtype=np.float32)
    keep = _complete_rows(frame, X, feature_cols, target, group_col, rows, dropna)
    if keep is not None:
        frame, rows, X = frame.loc[keep].reset_index(drop=True), rows[keep], X[keep]

    y, classes = _label_values(frame[target])
    group_values = frame[group_col].to_numpy() if group_col else None
    split_values = None
    if split_col:
        split_values = checks.normalize_split_column(frame[split_col], split_col, rows)

    ds = Dataset(X=np.ascontiguousarray(X), y=y, classes=classes, feature_names=feature_cols,
                 groups=group_values, split=split_values, target=target, group_name=group_col,
                 source=raw.source, cytometry=cytometry or raw.cytometry,
                 aliases={a: n for a, n in aliases.items() if n in feature_cols})
    confounded = [c for c, _ in id_like if c in frame.columns
                  and (frame.groupby(frame[target].astype(str))[c].nunique() == 1).all()]
    ds.issues = checks.check_dataset(ds, id_like=id_like, confounded=confounded)
    ds.issues += check_labels(ds, confounded)
    return ds


def from_arrays(X: Any, y: Any, groups: Any = None, feature_names: Sequence[str] | None = None,
                *, target: str = "label", group_name: str = "group") -> Dataset:
    """Wrap numpy arrays (or array-likes) as a table :class:`Dataset`, checking them."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"X must be a 2-D array (cells x features); got shape {X.shape}. "
                        "Reshape it, or use load_images for image arrays.")
    try:
        Xf = X.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X must be numeric; got dtype {X.dtype} ({exc}).") from exc
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"y must be 1-D with one label per row of X ({len(X)}); got shape "
                        f"{y.shape}.")
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(X.shape[1])]
    if len(feature_names) != X.shape[1]:
        raise InvalidParameterError(f"feature_names must have {X.shape[1]} names (one per "
                                    f"column of X); got {len(feature_names)}.")
    frame = pd.DataFrame(Xf, columns=[str(f) for f in feature_names])
    if target in frame.columns:
        target = "__label__"
    frame[target] = y
    kwargs: dict[str, Any] = {}
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (len(X),):
            raise DataError(f"groups must be 1-D with one id per row of X ({len(X)}); got shape "
                            f"{groups.shape}.")
        frame[group_name] = groups
        kwargs["groups"] = group_name
    return load_table(frame, target=target, **kwargs)
