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

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import format_list
from ..exceptions import CellbenchWarning, DataError, InvalidParameterError
from . import checks
from .anndata_io import H5adFile, anndata_frame, is_anndata
from .columns import (
    TARGET_GUESSES,
    build_dataset,
    check_numeric,
    check_same_columns,
    complete_rows,
    decide_roles,
    feature_columns,
    kept_rows,
)
from .dataset import Dataset
from .fcs import FcsFile, read_fcs
from .images import is_image_source
from .labels import check_target_values, labels_from_text
from .sheets import SAMPLE_SHEET_NAMES, read_sample_sheet, sheet_entries
from .study import is_parquet_folder, load_study
from .subsample import check_cells_per_sample, draw_cells, subsample_rows
from .tables import TABLE_SUFFIXES, table_read_errors, table_suffix

__all__ = ["check_data_folder", "from_arrays", "iter_fcs_folder", "load_table", "read_frame",
           "read_sample_sheet"]

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
               require_labels: bool = True, layer: str | None = None,
               draw: tuple[int, int] | None = None, target: str | None = None) -> _Frame:
    """Read ``source`` into a raw table; no column roles are decided here.

    A folder of FCS files needs labels (a sample sheet or class subfolders) unless
    ``require_labels`` is False (prediction), when loose files are read as they are; with
    ``draw`` = (cells per sample, seed) only the cells drawn from each file are kept.
    ``layer`` picks the features of an AnnData (default: ``X``). A CSV's ``target`` (or,
    without one, its only column named like a label) is read as text first, so that labels
    written as one number several ways are seen (:func:`labels.labels_from_text`).
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
        return _read_fcs_folder(path, sample_sheet, require_labels, draw)
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
            names = checks.check_header(path, TABLE_SUFFIXES[suffix])
            guessed = [n for n in names if n.lower() in TARGET_GUESSES]
            text = [n for n in names if n == target] if target else \
                (guessed if len(guessed) == 1 else [])  # several: --target must say which
            frame = pd.read_csv(path, sep=TABLE_SUFFIXES[suffix], encoding="utf-8-sig",
                                dtype=dict.fromkeys(text, str))
            for name in text:
                if name in frame.columns:
                    frame[name] = labels_from_text(frame[name], name, repr(str(path)))
            checks.check_delimiter(frame, path, TABLE_SUFFIXES[suffix])
            frame = checks.drop_trailing_empty_columns(frame, path)
    if frame.shape[0] == 0:
        raise DataError(f"data file {str(path)!r} must hold at least one row; it has a header "
                        f"({format_list(frame.columns)}) but no rows.")
    return _Frame(frame, str(path))


def _read_fcs_folder(root: Path, sample_sheet: str | Path | None,
                     require_labels: bool = True,
                     draw: tuple[int, int] | None = None) -> _Frame:
    frames, aliases, kinds, meta = [], {}, set(), []
    for frame, fcs, file_meta in iter_fcs_folder(root, sample_sheet, require_labels):
        if draw is not None:  # one sample per file, one label per file: a plain draw
            frame = frame.iloc[draw_cells(len(frame), draw[0], seed=draw[1],
                                          sample=frame["sample"].iloc[0])]
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
        else:
            check_same_columns(cols, channels, file, first, "FCS files must share their "
                               "channels", "Re-export with the same panel, or drop the odd "
                               "file from the sample sheet.")
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


def check_data_folder(path: str | Path) -> None:
    """Raise when a folder holds nothing cellbench reads: no images (in it, in class
    subfolders or one level below those), no FCS files (in it or in class subfolders), no
    Parquet files and no sample sheet."""
    root = Path(path)
    if not root.is_dir() or is_image_source(root) or is_parquet_folder(root) \
            or _fcs_files(root) or any((root / n).is_file() for n in SAMPLE_SHEET_NAMES):
        return
    subs = [p for p in root.iterdir() if p.is_dir()]
    if any(_fcs_files(sub) for sub in subs):
        return
    kinds = sorted({p.suffix.lower() or p.name for p in root.rglob("*") if p.is_file()})
    raise DataError(
        f"data folder {str(root)!r} must hold images (root/<class>/*.png), FCS files or "
        f"Parquet files; it holds none"
        + (f" (it holds {format_list(kinds, 6)} files)" if kinds else " (it is empty)")
        + ". Point at the folder with the data, or at one CSV/Parquet/FCS file.")


def _fcs_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".fcs")


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
    cells_per_sample: int | None = None,
    subsample_seed: int = 0,
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
    cells_per_sample : int, optional
        Keep ``n`` cells of each sample (the ``groups`` column, an FCS or Parquet file of a
        folder), stratified by label and seeded (:mod:`cellbench.data.subsample`).
    subsample_seed : int
        Seed of that draw.

    Raises
    ------
    DataError
        Missing columns, non-numeric features, NaN/inf without ``dropna``, a single class, ...
    """
    check_cells_per_sample(cells_per_sample)
    if is_parquet_folder(source):
        return load_study(source, target=target, groups=groups, features=features, drop=drop,
                          exclude_labels=exclude_labels, dropna=dropna,
                          split_column=split_column, cytometry=cytometry,
                          cells_per_sample=cells_per_sample, subsample_seed=subsample_seed)
    if isinstance(source, (str, Path)) and str(source).lower().endswith(".h5ad") \
            and Path(source).is_file():
        ds = _load_h5ad(Path(source), layer, target=target, groups=groups, features=features,
                        drop=drop, exclude_labels=exclude_labels, dropna=dropna,
                        split_column=split_column, cytometry=cytometry,
                        cells_per_sample=cells_per_sample, subsample_seed=subsample_seed)
        if ds is not None:
            return ds
    fcs_folder = isinstance(source, (str, Path)) and Path(source).is_dir()
    draw = (cells_per_sample, subsample_seed) if cells_per_sample else None
    raw = read_frame(source, sample_sheet, layer=layer, draw=draw if fcs_folder else None,
                     target=target)
    frame, aliases = raw.frame, raw.aliases
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"column names must be unique; got duplicates {dup} in {raw.source}.")

    target, group_col, split_col = decide_roles(columns, aliases, target, groups, split_column,
                                                  raw.target, raw.groups)
    frame, rows, drawn = _kept_rows(frame, target, group_col, exclude_labels,
                                    cells_per_sample, subsample_seed, fcs_folder)
    roles = {c for c in (target, group_col, split_col, *raw.meta) if c}
    feature_cols = feature_columns(columns, aliases, roles, features, drop)

    id_like = [] if group_col else checks.id_like_columns(
        frame, [c for c in columns if c not in (target, split_col)])
    check_numeric(frame, feature_cols, rows, id_like)
    checks.check_float32_range(frame, feature_cols, rows)

    X = frame[feature_cols].to_numpy(dtype=np.float32)
    keep = complete_rows(frame, X, feature_cols, target, group_col, rows, dropna)
    if keep is not None:
        frame, rows, X = frame.loc[keep].reset_index(drop=True), rows[keep], X[keep]

    ds = build_dataset(frame, X, feature_cols, target, group_col, split_col, rows,
                       source=raw.source, cytometry=cytometry or raw.cytometry,
                       aliases=aliases, id_like=id_like)
    ds.drawn = drawn
    return ds


def _load_h5ad(path: Path, layer: str | None, *, target: str | None, groups: str | None,
               features: Sequence[str], drop: Sequence[str], exclude_labels: Sequence[Any],
               dropna: bool, split_column: str | None, cytometry: str | None,
               cells_per_sample: int | None, subsample_seed: int) -> Dataset | None:
    """An ``.h5ad`` file as :func:`load_table` loads a table, reading only what it keeps:
    the ``obs`` columns with a role first, then the features of the rows left after
    ``exclude_labels`` and the ``cells_per_sample`` draw, a block of rows at a time. Memory
    holds the kept rows, not the file (which may be larger than memory, as backed mode
    allows). None when the target, groups or split column is a feature (``var_names``):
    the whole-table path reads those."""
    with H5adFile(path, layer) as h5:
        obs_cols = list(h5.obs_columns)
        columns = [*h5.var_names, *obs_cols]
        if len(set(columns)) != len(columns):
            return None  # duplicate var_names: the table path names them
        if not obs_cols and not any(c in h5.var_names for c in (target, groups) if c):
            raise DataError(
                f"an .h5ad's target and groups come from its obs columns; {str(path)!r} has no "
                f"obs columns (only the features {format_list(h5.var_names, 6)}). Add the "
                "labels and the sample of each cell to obs, e.g. adata.obs['label'] = labels; "
                "adata.write_h5ad(path).")
        target, group_col, split_col = decide_roles(columns, {}, target, groups, split_column)
        if any(c and c not in obs_cols for c in (target, group_col, split_col)):
            return None
        roles = {c for c in (target, group_col, split_col, *obs_cols) if c}
        feature_cols = feature_columns(columns, {}, roles, features, drop)
        meta = [c for c in dict.fromkeys((target, group_col, split_col)) if c]
        if group_col is None:  # other obs columns may be sample ids (checked below)
            meta += [c for c in obs_cols if c not in meta]
        frame = h5.obs(meta, slice(None))
        frame, rows, drawn = _kept_rows(frame, target, group_col, exclude_labels,
                                        cells_per_sample, subsample_seed, False)
        position = {name: j for j, name in enumerate(h5.var_names)}
        X = h5.feature_rows(rows, [position[c] for c in feature_cols])
    id_like = [] if group_col else checks.id_like_columns(
        frame, [c for c in frame.columns if c not in (target, split_col)])
    keep = complete_rows(frame, X, feature_cols, target, group_col, rows, dropna)
    if keep is not None:
        frame, rows, X = frame.loc[keep].reset_index(drop=True), rows[keep], X[keep]
    ds = build_dataset(frame, X, feature_cols, target, group_col, split_col, rows,
                       source=str(path), cytometry=cytometry, aliases={}, id_like=id_like)
    ds.drawn = drawn
    return ds


def _kept_rows(frame: pd.DataFrame, target: str, group_col: str | None,
               exclude_labels: Sequence[Any], cells_per_sample: int | None, seed: int,
               drawn_already: bool) -> tuple[pd.DataFrame, np.ndarray, dict | None]:
    """The rows left after ``exclude_labels`` and the ``cells_per_sample`` draw, their
    original positions (for messages after filtering) and the draw's record; the target
    values are checked on what is left."""
    rows = np.arange(len(frame))
    keep = kept_rows(frame[target], exclude_labels)
    if keep is not None:
        frame, rows = frame.loc[keep].reset_index(drop=True), rows[keep]
    drawn = None
    if cells_per_sample:
        frame, rows, drawn = _subsample(frame, rows, target, group_col, cells_per_sample,
                                        seed, drawn_already)
    check_target_values(frame[target], target)
    return frame, rows, drawn


def _subsample(frame: pd.DataFrame, rows: np.ndarray, target: str, group_col: str | None,
               n: int, seed: int, drawn_already: bool) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """``n`` cells of each sample (an FCS folder's files were drawn as they were read)."""
    if group_col is None:
        raise DataError(
            f"cells_per_sample needs to know each cell's sample; got {n} with no sample "
            "column. Pass --groups COLUMN (the sample or patient id), or load a folder of "
            "files (one per sample).")
    n_samples = int(frame[group_col].nunique(dropna=False))
    before = len(frame)
    if not drawn_already:
        keep = subsample_rows(frame[group_col], frame[target], n, seed)
        frame, rows = frame.iloc[keep].reset_index(drop=True), rows[keep]
    return frame, rows, {"cells_per_sample": n, "samples": n_samples,
                         "cells_in_study": None if drawn_already else before,
                         "cells_drawn": len(frame)}


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
