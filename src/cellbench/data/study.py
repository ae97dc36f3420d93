"""A study as a folder of Parquet files, one per sample, read into one float32 array.

Real studies hold hundreds of files of 10^5-10^6 cells each. The folder is read file by
file through pyarrow: only the columns the job needs (features, label, sample columns), and
with ``cells_per_sample`` only the drawn cells of each file are kept
(:mod:`cellbench.data.subsample`), so memory holds one file's columns plus the result. The
features go straight into one preallocated float32 array, never through a pandas copy of
the whole table.

Each file is a sample: its cells get the file's name (without suffix) in a ``sample``
column unless the files carry a column of that name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import format_list, release_free_memory
from ..exceptions import DataError
from .columns import (
    build_dataset,
    check_same_columns,
    complete_rows,
    decide_roles,
    feature_columns,
    kept_rows,
)
from .dataset import Dataset
from .labels import check_target_values
from .subsample import check_cells_per_sample, draw_cells

__all__ = ["PARQUET_SUFFIXES", "StudyFiles", "is_parquet_folder", "load_study", "open_study"]

PARQUET_SUFFIXES = (".parquet", ".pq")


def _parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()
                  if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)


def is_parquet_folder(path: object) -> bool:
    """A folder that holds Parquet files (and no FCS files)."""
    if not isinstance(path, (str, Path)):
        return False
    root = Path(path)
    return root.is_dir() and bool(_parquet_files(root)) and not any(
        p.suffix.lower() == ".fcs" for p in root.iterdir())


@dataclass
class StudyFiles:
    """The Parquet files of a study, their shared columns and their sizes (from metadata)."""

    root: Path
    files: list[Path]
    columns: list[str]
    rows: list[int]  # rows per file
    not_numeric: dict[str, Path]  # column -> a file where its type is not numeric

    def read(self, features: list[str], meta: list[str], cells_per_sample: int | None,
             seed: int, strata: str | None) -> tuple[np.ndarray, pd.DataFrame]:
        """Features as one float32 array and the ``meta`` columns (plus ``sample``) as a
        frame, with ``cells_per_sample`` cells drawn from each file (stratified by the
        ``strata`` column when given)."""
        import pyarrow as pa

        bad = [c for c in features if c in self.not_numeric]
        if bad:
            raise DataError(f"feature columns must be numeric; {format_list(bad)} of "
                            f"{str(self.not_numeric[bad[0]])!r} "
                            f"{'is' if len(bad) == 1 else 'are'} not. Drop "
                            f"{'it' if len(bad) == 1 else 'them'} (--drop) or pick the "
                            "features (--features).")
        keep = [min(n, cells_per_sample) if cells_per_sample else n for n in self.rows]
        X = np.empty((sum(keep), len(features)), dtype=np.float32)
        own_meta = [c for c in meta if c in self.columns]
        # the files' buffers come from the C heap, handed back once read (Arrow's default
        # pool keeps about a third of the drawn array's size resident after the read)
        default_pool = pa.default_memory_pool()
        pa.set_memory_pool(pa.system_memory_pool())
        try:
            parts = self._read_files(X, features, own_meta, keep, seed, strata)
        finally:
            pa.set_memory_pool(default_pool)
            release_free_memory()
        frame = pd.concat(parts, ignore_index=True)
        frame["sample"] = frame["sample"].astype("category")
        return X, frame

    def _read_files(self, X: np.ndarray, features: list[str], own_meta: list[str],
                    keep: list[int], seed: int, strata: str | None) -> list[pd.DataFrame]:
        import pyarrow.parquet as pq

        parts, start = [], 0
        for path, n, k in zip(self.files, self.rows, keep, strict=True):
            pf = pq.ParquetFile(path, pre_buffer=False)
            rows = None
            if k < n:
                labels = None if not strata else _label_codes(
                    pf.read(columns=[strata], use_threads=False).column(0))
                rows = draw_cells(n, k, labels=labels, seed=seed, sample=path.stem)
            table = pf.read(columns=[*features, *own_meta], use_threads=False)
            if rows is not None:
                table = table.take(rows)
            for j, name in enumerate(features):
                X[start:start + k, j] = table.column(name).to_numpy(zero_copy_only=False)
            part = _meta_frame(table, own_meta, k)
            if "sample" not in part.columns:
                part["sample"] = path.stem
            parts.append(part)
            start += k
        return parts


def _label_codes(column: Any) -> np.ndarray:
    """A label column as integer codes in the order of the sorted labels (what
    :func:`~cellbench.data.subsample.draw_cells` stratifies by, so the draw is the labels'),
    without a Python string per cell."""
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column.to_numpy(zero_copy_only=False)
    encoded = column.combine_chunks().dictionary_encode()
    values = encoded.dictionary.to_numpy(zero_copy_only=False)
    rank = np.empty(len(values), np.int64)
    rank[np.argsort(values, kind="stable")] = np.arange(len(values))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)]


def _meta_frame(table: Any, columns: list[str], n: int) -> pd.DataFrame:
    """The label/group columns of a file; text as categories (one string per value, not
    one per cell)."""
    import pyarrow as pa

    if not columns:
        return pd.DataFrame(index=range(n))
    out = {}
    for name in columns:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = col.dictionary_encode()
        out[name] = col.to_pandas()
    return pd.DataFrame(out)


def open_study(root: str | Path) -> StudyFiles:
    """The study's files and columns, from their Parquet footers only (no rows read).

    Raises
    ------
    DataError
        A file is unreadable or empty, or the files do not share their columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    files = _parquet_files(root)
    if not files:
        raise DataError(f"a study folder must hold .parquet files; {str(root)!r} has none.")
    columns: list[str] | None = None
    rows: list[int] = []
    not_numeric: dict[str, Path] = {}
    for path in files:
        try:
            schema = pq.read_schema(path)
            n = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises several kinds on damaged files
            raise DataError(f"Parquet file {str(path)!r} must be readable; reading its footer "
                            f"failed ({type(exc).__name__}: {exc}). Re-export it, or move it "
                            "out of the folder.") from exc
        if n == 0:
            raise DataError(f"Parquet file {str(path)!r} must hold cells; it has 0 rows. "
                            "Remove it from the folder.")
        names = [str(c) for c in schema.names if not str(c).startswith("__index_level_")]
        for f in schema:
            if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                    or pa.types.is_boolean(f.type)):
                not_numeric.setdefault(str(f.name), path)
        if columns is None:
            columns = names
        else:
            check_same_columns(names, columns, path, files[0],
                               "Parquet files of a study must share their columns",
                               "Re-export them with the same panel, or move the odd file out "
                               "of the folder.")
        rows.append(int(n))
    return StudyFiles(root, files, columns or [], rows, not_numeric)


def load_study(root: str | Path, *, target: str | None = None, groups: str | None = None,
               features: Sequence[str] = (), drop: Sequence[str] = (),
               exclude_labels: Sequence[Any] = (), dropna: bool = False,
               split_column: str | None = None, cytometry: str | None = None,
               cells_per_sample: int | None = None, subsample_seed: int = 0) -> Dataset:
    """Load a folder of Parquet files (one per sample) as :func:`~cellbench.data.load_table`
    loads one table; groups default to the ``sample`` of each cell (its file)."""
    check_cells_per_sample(cells_per_sample)
    study = open_study(root)
    columns = [*study.columns, *([] if "sample" in study.columns else ["sample"])]
    target, group_col, split_col = decide_roles(columns, {}, target, groups, split_column,
                                                default_groups="sample")
    roles = {c for c in (target, group_col, split_col, "sample") if c}
    feature_cols = feature_columns(columns, {}, roles, features, drop)
    meta = [c for c in dict.fromkeys((target, group_col, split_col)) if c]
    X, frame = study.read(feature_cols, meta, cells_per_sample, subsample_seed, strata=target)
    rows = np.arange(len(frame))
    keep = kept_rows(frame[target], exclude_labels)
    if keep is not None:
        frame, rows, X = frame.loc[keep].reset_index(drop=True), rows[keep], X[keep]
    check_target_values(frame[target], target)
    keep = complete_rows(frame, X, feature_cols, target, group_col, rows, dropna)
    if keep is not None:
        frame, rows, X = frame.loc[keep].reset_index(drop=True), rows[keep], X[keep]
    ds = build_dataset(frame, X, feature_cols, target, group_col, split_col, rows,
                       source=str(root), cytometry=cytometry, aliases={})
    ds.drawn = _drawn(study, cells_per_sample)
    return ds


def _drawn(study: StudyFiles, n: int | None) -> dict[str, Any] | None:
    """What the subsampling kept, for ``data.json``."""
    if n is None:
        return None
    return {"cells_per_sample": n, "samples": len(study.files),
            "cells_in_study": int(sum(study.rows)),
            "cells_drawn": int(sum(min(r, n) for r in study.rows))}
