"""Tables read in row chunks, so a job's memory is bounded by the chunk, not by the file.

Parquet by record batches, CSV/TSV with ``pandas.read_csv(chunksize=...)``, ``.h5ad`` by row
ranges of ``X``; one FCS file is read whole (FCS has no partial reads) and a folder of FCS files
one file at a time. The column names (and FCS marker aliases) are known before any row is read,
so a job can check them first.

>>> import pandas as pd, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "cells.csv"
>>> pd.DataFrame({"CD3": range(5), "label": list("aabba")}).to_csv(path, index=False)
>>> with open_table(path) as table:
...     [len(c) for c in table.chunks(["CD3"], chunk_rows=2)]
[2, 2, 1]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from .._utils import format_list
from ..exceptions import DataError, InvalidParameterError
from . import checks
from .anndata_io import H5adFile
from .fcs import read_fcs
from .io import iter_fcs_folder
from .study import is_parquet_folder, open_study
from .tables import TABLE_SUFFIXES, table_read_errors, table_suffix

__all__ = ["TableStream", "open_table"]

Chunks = Callable[[list[str], int], Iterator[pd.DataFrame]]


class TableStream:
    """A table opened for reading in chunks. Use as a context manager.

    Attributes
    ----------
    source : str
    columns : list of str
        Every column name, known before any row is read.
    aliases : dict
        FCS marker names (``$PnS``) -> channel names.
    """

    def __init__(self, source: str, columns: list[str], chunks: Chunks,
                 aliases: dict[str, str] | None = None,
                 close: Callable[[], None] | None = None) -> None:
        self.source, self.columns, self.aliases = source, columns, aliases or {}
        self._chunks, self._close = chunks, close

    def chunks(self, columns: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The rows in order, ``columns`` only, at most ``chunk_rows`` at a time."""
        if int(chunk_rows) < 1:
            raise InvalidParameterError(f"chunk_rows must be a positive number of rows; got "
                                        f"{chunk_rows!r}.")
        columns = list(columns)
        rows = 0
        try:
            for chunk in self._chunks(columns, int(chunk_rows)):
                if len(chunk):
                    rows += len(chunk)
                    yield chunk[columns].reset_index(drop=True)
        except OSError as exc:  # a file that fails part way (HDF5, a disk)
            raise DataError(f"data {self.source!r} must be readable to its end; reading failed "
                            f"after {rows:,} rows ({type(exc).__name__}: {exc}).") from exc
        if rows == 0:
            raise DataError(f"data file {self.source!r} must hold at least one row; it has a "
                            f"header ({format_list(self.columns)}) but no rows.")

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> TableStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_table(source: str | Path, sample_sheet: str | Path | None = None,
               require_labels: bool = False, layer: str | None = None) -> TableStream:
    """Open a table file, an FCS file or folder, or an ``.h5ad`` for reading in chunks.

    A folder of FCS files is read as :func:`~cellbench.data.load_table` reads it (sample sheet,
    class subfolders, or, unless ``require_labels``, loose files); ``layer`` picks an
    ``.h5ad`` layer instead of ``X``.
    """
    path = Path(source)
    if is_parquet_folder(path):
        return _parquet_folder(path)
    if path.is_dir():
        return _fcs_folder(path, sample_sheet, require_labels)
    suffix = table_suffix(path)
    if layer is not None and suffix != ".h5ad":
        raise InvalidParameterError(f"layer must be None for {str(path)!r}, which is no "
                                    f"AnnData; got {layer!r}.")
    if suffix == ".h5ad":
        return _h5ad(path, layer)
    if suffix == ".fcs":
        fcs = read_fcs(path)
        return TableStream(str(path), [str(c) for c in fcs.frame.columns],
                           lambda cols, n: _slices(fcs.frame, cols, n), fcs.aliases)
    if path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} must not be empty; got 0 bytes.")
    if suffix in (".parquet", ".pq"):
        return _parquet(path, suffix)
    return _csv(path, suffix)


def _slices(frame: pd.DataFrame, columns: list[str], n: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), n):
        yield frame.iloc[start:start + n][columns]


def _parquet(path: Path, suffix: str) -> TableStream:
    import pyarrow.parquet as pq

    with table_read_errors(path, suffix):
        # read a page at a time: pre-buffering (pyarrow's default) holds whole row groups
        parquet = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    names = [n for n in parquet.schema_arrow.names if not n.startswith("__index_level_")]

    def chunks(columns: list[str], n: int) -> Iterator[pd.DataFrame]:
        with table_read_errors(path, suffix):
            for batch in parquet.iter_batches(batch_size=n, columns=columns):
                yield batch.to_pandas()

    return TableStream(str(path), names, chunks, close=parquet.close)


def _parquet_folder(root: Path) -> TableStream:
    """A study: its files in order, each a sample (named in a ``sample`` column)."""
    study = open_study(root)
    named = "sample" in study.columns

    def chunks(columns: list[str], n: int) -> Iterator[pd.DataFrame]:
        own = [c for c in columns if named or c != "sample"]
        for path in study.files:
            with _parquet(path, path.suffix.lower()) as part:
                for chunk in part.chunks(own, n):
                    if not named and "sample" in columns:
                        chunk["sample"] = path.stem
                    yield chunk

    return TableStream(str(root), [*study.columns, *([] if named else ["sample"])], chunks)


def _csv(path: Path, suffix: str) -> TableStream:
    sep = TABLE_SUFFIXES[suffix]
    with table_read_errors(path, suffix):
        checks.check_header(path, sep)
        header = pd.read_csv(path, sep=sep, encoding="utf-8-sig", nrows=0)
        checks.check_delimiter(header, path, sep)

    def chunks(columns: list[str], n: int) -> Iterator[pd.DataFrame]:
        with table_read_errors(path, suffix), pd.read_csv(
                path, sep=sep, encoding="utf-8-sig", usecols=columns, chunksize=n) as reader:
            yield from reader

    return TableStream(str(path), [str(c) for c in header.columns], chunks)


def _fcs_folder(root: Path, sample_sheet: str | Path | None,
                require_labels: bool) -> TableStream:
    files = iter_fcs_folder(root, sample_sheet, require_labels)
    first = next(files)  # the folder's columns; the file is kept for the first pass
    aliases = dict(first[1].aliases)

    def chunks(columns: list[str], n: int) -> Iterator[pd.DataFrame]:
        nonlocal first
        todo = itertools.chain([first], files) if first is not None else iter_fcs_folder(
            root, sample_sheet, require_labels)
        first = None
        for frame, _, _ in todo:
            yield from _slices(frame, columns, n)

    return TableStream(str(root), [str(c) for c in first[0].columns], chunks, aliases)


def _h5ad(path: Path, layer: str | None) -> TableStream:
    h5 = H5adFile(path, layer)
    position = {name: i for i, name in enumerate(h5.var_names)}

    def chunks(columns: list[str], n: int) -> Iterator[pd.DataFrame]:
        features = [c for c in columns if c in position]
        obs = [c for c in columns if c not in position]
        for start in range(0, h5.n_obs, n):
            rows = slice(start, min(start + n, h5.n_obs))
            X = h5.features(rows)[:, [position[c] for c in features]]
            yield pd.concat([pd.DataFrame(X, columns=features), h5.obs(obs, rows)], axis=1)

    return TableStream(str(path), [*h5.var_names, *h5.obs_columns], chunks, close=h5.close)
