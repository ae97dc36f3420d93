"""AnnData (``.h5ad``, the scverse format of scanpy and pytometry) as a table of cells.

``X`` (or one of ``layers``) gives the features, named by ``var_names``; ``obs`` columns give the
target, the groups and anything else, and are never features. anndata is optional
(``pip install "cellbench[anndata]"``) and imported only when an ``.h5ad`` is read.

A file is read element by element, as ``anndata.read_h5ad(path, backed="r")`` reads ``X``: the
matrix in row chunks (dense, CSR or CSC) and only the ``obs`` columns asked for. Backed mode
itself would load every layer and all of ``obs`` into memory, so it is not used for the reading.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .._utils import did_you_mean, format_list, try_import
from ..exceptions import DataError, InvalidParameterError

__all__ = ["PREDICTED_KEY", "PROBA_KEY", "AnnDataRows", "H5adFile", "PredictionsCopy",
           "anndata_frame", "is_anndata", "read_anndata"]

CHUNK_ROWS = 2**16  # rows of X read at once when a whole file is loaded
PREDICTED_KEY = "cellbench_predicted"  # obs column of a predictions copy
PROBA_KEY = "cellbench_proba"  # obsm array of a predictions copy
CLASSES_KEY = "cellbench_classes"  # uns entry: the class of each PROBA_KEY column


class AnnDataRows(NamedTuple):
    """Rows of an AnnData: features (float32, rows x ``feature_names``) and ``obs`` columns."""

    X: np.ndarray
    feature_names: list[str]
    obs: pd.DataFrame


def _modules() -> tuple[Any, Any]:
    """(anndata's element API, h5py), or a MissingDependencyError saying how to install them."""
    anndata = try_import("anndata", "anndata", "reading .h5ad files")
    api = getattr(anndata, "io", None)
    if not hasattr(api, "sparse_dataset"):  # anndata 0.10
        api = anndata.experimental
    return api, try_import("h5py", "anndata", "reading .h5ad files")


def is_anndata(obj: Any) -> bool:
    """True for an ``anndata.AnnData`` object (anndata itself is not imported to say so)."""
    return any(c.__name__ == "AnnData" and c.__module__.startswith("anndata")
               for c in type(obj).__mro__)


class H5adFile:
    """An open ``.h5ad`` file read one element, and one range of rows, at a time.

    ``rows`` arguments are a slice or increasing row indices. Use as a context manager.
    """

    def __init__(self, path: str | Path, layer: str | None = None) -> None:
        self.path, self.layer = Path(path), layer
        self._api, h5py = _modules()
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            cut = "truncated" in str(exc)
            raise DataError(f"data file {str(self.path)!r} must be a readable .h5ad (HDF5) "
                            f"file; opening it failed ({exc})."
                            + (" The file is cut short: a write that stopped midway, or a copy "
                               "or download that did not finish. Write or copy it again."
                               if cut else "")) from exc
        self._cache: dict[str, Any] = {}
        try:
            self._open(h5py)
        except BaseException:
            self._file.close()
            raise

    def _open(self, h5py: Any) -> None:
        f, name = self._file, repr(str(self.path))
        obs = f.get("obs")
        missing = [k for k in ("X", "obs", "var") if k not in f]
        if f.attrs.get("encoding-type") == "anndata" and (
                missing or obs.attrs.get("encoding-type") != "dataframe"):
            lacks = (f"it lacks {format_list(missing)}" if missing
                     else "its obs lacks the attributes that say how it is stored")
            raise DataError(f"data file {name} must be a complete .h5ad; {lacks}: the write "
                            "that made it stopped midway. Write it again (an error while "
                            "writing, e.g. anndata's allow_write_nullable_strings, leaves such "
                            "a file).")
        if not isinstance(obs, h5py.Group) or obs.attrs.get("encoding-type") != "dataframe":
            raise DataError(f"obs of {name} must be stored as anndata >= 0.8 writes it; this "
                            "file is older. Re-save it with a recent anndata: "
                            "anndata.read_h5ad(path).write_h5ad(path).")
        self.obs_columns = [str(c) for c in obs.attrs.get("column-order", [])]
        var = f["var"]
        self.var_names = [str(v) for v in self._api.read_elem(var[var.attrs["_index"]])]
        self._matrix, self.n_obs = self._features_element(h5py)
        clash = [c for c in self.obs_columns if c in set(self.var_names)]
        if clash:
            raise DataError(f"obs columns of {name} must differ from its var_names (one table "
                            f"holds both); got {format_list(clash)} in both. Rename those obs "
                            "columns, e.g. adata.obs.rename(columns={...}).")

    def _features_element(self, h5py: Any) -> tuple[Any, int]:
        f, name = self._file, repr(str(self.path))
        layers = list(f["layers"]) if "layers" in f else []
        if self.layer is not None and self.layer not in layers:
            guess = did_you_mean(self.layer, layers)
            raise DataError(f"layer must be one of the layers of {name}; got {self.layer!r}."
                            + (f" Did you mean {guess!r}?" if guess else "")
                            + f" Its layers: {format_list(layers) if layers else 'none'}. "
                            "Pass one of them, or no layer for X.")
        what = "X" if self.layer is None else f"layer {self.layer!r}"
        elem = f.get("X" if self.layer is None else f"layers/{self.layer}")
        if elem is None:
            raise DataError(f"X of {name} must hold the features; the file has no X. Pass one "
                            f"of its layers ({format_list(layers) if layers else 'none'}).")
        kind = elem.attrs.get("encoding-type", "array")
        if isinstance(elem, h5py.Dataset):
            matrix, dtype, shape = elem, elem.dtype, elem.shape
        elif kind in ("csr_matrix", "csc_matrix"):
            matrix = self._api.sparse_dataset(elem)
            dtype, shape = elem["data"].dtype, tuple(int(s) for s in elem.attrs["shape"])
        else:
            raise DataError(f"{what} of {name} must be a dense or sparse (CSR/CSC) matrix; "
                            f"got an element of encoding {kind!r}.")
        if dtype.kind not in "biuf":
            raise DataError(f"{what} of {name} must be numeric; got dtype {dtype}. Store "
                            "numbers there, e.g. adata.X = adata.X.astype('float32').")
        if len(shape) != 2 or shape[1] != len(self.var_names):
            raise DataError(f"{what} of {name} must have one column per var_name "
                            f"({len(self.var_names)}); got shape {shape}.")
        return matrix, int(shape[0])

    def features(self, rows: slice | np.ndarray) -> np.ndarray:
        """The feature matrix's ``rows`` as float32."""
        block = self._matrix[rows]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        out = block.astype(np.float32)
        over = np.isinf(out) & np.isfinite(block)  # float64 values past float32's range
        if over.any():
            i, j = (int(k[0]) for k in np.nonzero(over))
            row = np.arange(self.n_obs)[rows][i] + 1
            raise DataError(f"feature values must fit in float32 (|x| <= 3.4e38); "
                            f"{self.var_names[j]!r} of {str(self.path)!r} holds "
                            f"{block[i, j]:.3g} in row {row}. Rescale that feature.")
        return out

    def feature_rows(self, rows: np.ndarray, columns: Sequence[int] | None = None
                     ) -> np.ndarray:
        """Features of increasing rows ``rows`` (only the ``columns``, positions in
        ``var_names``, when given) as one float32 array, read :data:`CHUNK_ROWS` at a time:
        memory holds the rows asked for, never the whole matrix."""
        cols = None if columns is None else np.asarray(columns, np.intp)
        X = np.empty((len(rows), len(self.var_names) if cols is None else len(cols)),
                     np.float32)
        # about 16 MB of float32 a block (a wide matrix, e.g. genes, is read fewer rows a time)
        step = max(1, min(CHUNK_ROWS, (1 << 22) // max(1, len(self.var_names))))
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            # contiguous rows read as a slice: much faster than a list of indices in HDF5
            contiguous = len(part) and part[-1] - part[0] + 1 == len(part)
            block = self.features(slice(int(part[0]), int(part[-1]) + 1) if contiguous
                                  else part)
            X[start:start + len(part)] = block if cols is None else block[:, cols]
        return X

    def obs(self, columns: Sequence[str], rows: slice | np.ndarray) -> pd.DataFrame:
        """The ``obs`` columns ``columns`` at ``rows``."""
        for col in columns:
            if col not in self.obs_columns:
                guess = did_you_mean(col, self.obs_columns)
                raise DataError(f"obs column must be one of the obs columns of "
                                f"{str(self.path)!r}; got {col!r}."
                                + (f" Did you mean {guess!r}?" if guess else "")
                                + f" obs columns: {format_list(self.obs_columns, 12)}.")
        return pd.DataFrame({c: self._obs_column(c, rows) for c in columns})

    def _obs_column(self, col: str, rows: slice | np.ndarray) -> Any:
        elem = self._file["obs"][col]
        kind = elem.attrs.get("encoding-type")
        if kind == "categorical":
            if col not in self._cache:
                self._cache[col] = self._api.read_elem(elem["categories"])
            return pd.Categorical.from_codes(elem["codes"][rows], self._cache[col],
                                             ordered=bool(elem.attrs.get("ordered", False)))
        if kind == "string-array":
            return elem.asstr()[rows]
        if kind == "array" and elem.dtype.kind in "biuf":
            return elem[rows]
        if kind in ("nullable-integer", "nullable-boolean", "nullable-string-array"):
            values, mask = elem["values"], elem["mask"][rows]
            if kind == "nullable-string-array":
                return np.where(mask, None, values.asstr()[rows]).astype(object)
            array = pd.arrays.IntegerArray if kind == "nullable-integer" else \
                pd.arrays.BooleanArray
            return array(values[rows], mask)
        # anything else (older encodings): the whole column once, then its rows
        if col not in self._cache:
            self._cache[col] = np.asarray(self._api.read_elem(elem))
        return self._cache[col][rows]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5adFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _selection(rows: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(increasing unique rows to read, the order that gives ``rows`` back, or None)."""
    if rows is None:
        return np.arange(n), None
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise InvalidParameterError(f"rows must be a mask with one entry per cell ({n}) or "
                                        f"row indices; got a mask of shape {rows.shape}.")
        return np.flatnonzero(rows), None
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or (
            len(rows) and (rows.min() < 0 or rows.max() >= n)):
        raise InvalidParameterError(f"rows must be 1-D row indices in 0..{n - 1}; got "
                                    f"{rows.dtype} of shape {rows.shape}.")
    unique, inverse = np.unique(rows, return_inverse=True)
    same = len(unique) == len(rows) and bool((unique == rows).all())
    return unique, None if same else inverse


def read_anndata(path: str | Path, layer: str | None = None,
                 columns: Sequence[str] | None = None,
                 rows: np.ndarray | None = None) -> AnnDataRows:
    """Read an ``.h5ad`` file's features and ``obs`` columns, in row chunks.

    Parameters
    ----------
    path : path
        The ``.h5ad`` file.
    layer : str, optional
        Use ``layers[layer]`` as the features instead of ``X``.
    columns : sequence of str, optional
        ``obs`` columns to read (default: all).
    rows : array of int or bool, optional
        Only these rows (indices, any order, or a mask); default: all.
    """
    with H5adFile(path, layer) as h5:
        wanted, order = _selection(rows, h5.n_obs)
        X = h5.feature_rows(wanted)
        whole = len(wanted) == h5.n_obs
        obs = h5.obs(h5.obs_columns if columns is None else list(columns),
                     slice(None) if whole else wanted)
        names = h5.var_names
    if order is not None:
        X, obs = X[order], obs.iloc[order].reset_index(drop=True)
    return AnnDataRows(X, names, obs)


def _table(rows: AnnDataRows, source: str) -> tuple[pd.DataFrame, list[str]]:
    clash = [c for c in rows.obs.columns if c in set(rows.feature_names)]
    if clash:
        raise DataError(f"obs columns of {source} must differ from its var_names (one table "
                        f"holds both); got {format_list(clash)} in both. Rename those obs "
                        "columns, e.g. adata.obs.rename(columns={...}).")
    frame = pd.DataFrame(rows.X, columns=rows.feature_names)
    obs = rows.obs.reset_index(drop=True)
    frame = pd.concat([frame, obs], axis=1) if len(obs.columns) else frame
    return frame, [str(c) for c in obs.columns]


def anndata_frame(source: Any, layer: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """An ``.h5ad`` path or an AnnData as one table: features then ``obs`` columns; also the
    ``obs`` column names (they describe cells and are never features)."""
    if not is_anndata(source):
        return _table(read_anndata(source, layer), repr(str(source)))
    matrix = source.X if layer is None else source.layers.get(layer)
    if layer is not None and matrix is None:
        raise DataError(f"layer must be one of the AnnData's layers; got {layer!r}. Its "
                        f"layers: {format_list(list(source.layers)) or 'none'}.")
    if matrix is None:
        raise DataError("X of the AnnData must hold the features; it is None. Pass a layer.")
    matrix = matrix.to_memory() if hasattr(matrix, "to_memory") else matrix
    matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    if matrix.dtype.kind not in "biuf":
        raise DataError(f"X of the AnnData must be numeric; got dtype {matrix.dtype}. Store "
                        "numbers there, e.g. adata.X = adata.X.astype('float32').")
    rows = AnnDataRows(matrix.astype(np.float32), [str(v) for v in source.var_names],
                       source.obs)
    return _table(rows, "the AnnData")


class PredictionsCopy:
    """A copy of an ``.h5ad`` file that gains predictions, written chunk by chunk in row order:
    ``obs["cellbench_predicted"]`` (categorical; missing where a row got none),
    ``obsm["cellbench_proba"]`` (rows x classes, float32) and ``uns["cellbench_classes"]`` (the
    class of each probability column). The source file is only read.
    """

    def __init__(self, source: str | Path, dest: str | Path, classes: Sequence[Any]) -> None:
        _, self._h5py = _modules()
        shutil.copyfile(source, dest)
        self._file = self._h5py.File(dest, "r+")
        try:
            self.n_obs = self._prepare([str(c) for c in classes], repr(str(source)))
        except BaseException:
            self._file.close()
            raise
        self._done = 0

    def _strings(self, group: Any, key: str, values: list[str]) -> None:
        ds = group.create_dataset(key, data=np.array(values, dtype=object),
                                  dtype=self._h5py.string_dtype("utf-8"))
        ds.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})

    def _prepare(self, classes: list[str], name: str) -> int:
        f = self._file
        obs = f["obs"]
        if obs.attrs.get("encoding-version") != "0.2.0":
            raise DataError(f"obs of {name} must be stored as anndata >= 0.8 writes it to be "
                            "copied with predictions. Re-save it with a recent anndata.")
        n = int(obs[obs.attrs["_index"]].shape[0])
        order = [str(c) for c in obs.attrs.get("column-order", []) if str(c) != PREDICTED_KEY]
        for group, key in ((obs, PREDICTED_KEY), (f.get("obsm"), PROBA_KEY),
                           (f.get("uns"), CLASSES_KEY)):
            if group is not None and key in group:
                del group[key]  # predicted before: replaced
        column = obs.create_group(PREDICTED_KEY)
        column.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0",
                             "ordered": False})
        self._codes = column.create_dataset("codes", shape=(n,), dtype=np.int8 if len(
            classes) < 127 else np.int32)
        self._codes.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        self._strings(column, "categories", classes)
        obs.attrs.create("column-order", np.array([*order, PREDICTED_KEY], dtype=object),
                         dtype=self._h5py.string_dtype("utf-8"))
        for key in ("obsm", "uns"):
            if key not in f:
                f.create_group(key).attrs.update({"encoding-type": "dict",
                                                  "encoding-version": "0.1.0"})
        self._proba = f["obsm"].create_dataset(PROBA_KEY, shape=(n, len(classes)),
                                               dtype=np.float32)
        self._proba.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        self._strings(f["uns"], CLASSES_KEY, classes)
        return n

    def write(self, codes: np.ndarray, proba: np.ndarray) -> None:
        """The next rows: class codes (-1 where none) and their probabilities."""
        stop = self._done + len(codes)
        self._codes[self._done:stop] = codes
        self._proba[self._done:stop] = proba.astype(np.float32)
        self._done = stop

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionsCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
