"""Table files by their suffix: which kind a path is, and what their readers raise, said."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ..exceptions import DataError

__all__ = ["TABLE_SUFFIXES", "table_read_errors", "table_suffix"]

#: file suffix -> CSV separator (None: not a text table)
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".parquet": None, ".pq": None,
                  ".fcs": None, ".h5ad": None}


#: suffixes that renaming would not fix: what the file is and what to do instead
_OTHER_KINDS = {
    ".npy": "a NumPy array without labels or column names. Save features and labels together: "
            "np.savez('cells.npz', X=X, y=y) for images, or a table with a label column "
            "(pandas.DataFrame(X).assign(label=y).to_csv('cells.csv', index=False)).",
    ".xlsx": "an Excel workbook. Export the sheet as CSV (File > Save As > CSV), or "
             "pandas.read_excel(path).to_csv('cells.csv', index=False).",
    ".xls": "an Excel workbook. Export the sheet as CSV (File > Save As > CSV), or "
            "pandas.read_excel(path).to_csv('cells.csv', index=False).",
    ".json": "JSON. Convert it to a table: pandas.read_json(path).to_csv('cells.csv', "
             "index=False).",
}


def table_suffix(path: Path) -> str:
    """The table kind of an existing file by its suffix (``.csv.gz`` is ``.csv``), else raise."""
    if not path.exists():
        raise DataError(f"data path must exist; got {str(path)!r}, which does not. Check the "
                        "path (relative paths start from the current directory).")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz") and len(suffixes) > 1:
        suffix = suffixes[-2]
    else:
        suffix = suffixes[-1] if suffixes else ""
    if suffix in _OTHER_KINDS:
        raise DataError(f"data file must be a table (CSV, TSV, Parquet, FCS, .h5ad) or images; "
                        f"got {path.name!r}, {_OTHER_KINDS[suffix]}")
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"data file must be CSV, TSV, Parquet or FCS (or AnnData .h5ad), by its suffix; got "
            f"{path.name!r}. Rename it with one of {', '.join(sorted(TABLE_SUFFIXES))}, or load "
            "it with pandas and pass the DataFrame."
        )
    return suffix


_MAGIC = ((b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook is one)"),
          (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook (an OLE file)"),
          (b"\x1f\x8b", "gzip-compressed"), (b"PAR1", "a Parquet file"),
          (b"\x89HDF", "an HDF5 file (an .h5ad?)"))


def _binary_kind(path: Path) -> str | None:
    """What a file that is not text is, from its first bytes; None when unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


@contextlib.contextmanager
def table_read_errors(path: Path, suffix: str) -> Iterator[None]:
    """What CSV and Parquet readers raise for ``path``, as a DataError that says what to do."""
    try:
        yield
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file {str(path)!r} must hold a header and rows; it holds no "
                        "columns.") from exc
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        kind = _binary_kind(path)
        if kind is not None:  # a workbook or archive renamed, not text in another encoding
            raise DataError(
                f"data file {str(path)!r} must be a {suffix[1:].upper()} text table; it is "
                f"{kind}. Export it as CSV (in Excel: Save As, CSV UTF-8), or name a "
                "gzip-compressed table .csv.gz."
            ) from exc
        raise DataError(
            f"data file {str(path)!r} must be UTF-8 text; byte {exc.object[exc.start]:#x} at "
            f"position {exc.start} is not ({exc.reason}). Save it as UTF-8, e.g. "
            "pandas.read_csv(path, encoding='latin-1').to_csv('cells.csv', index=False)."
        ) from exc
    except Exception as exc:  # parsers, decompressors and pyarrow raise many kinds
        raise DataError(f"data file {str(path)!r} must be a readable {suffix[1:].upper()} "
                        f"table; reading failed ({type(exc).__name__}: {exc}).") from exc
