"""Sample sheets: which file holds which sample, its label and its patient.

A sample sheet is a CSV with columns ``file``, ``label`` and optionally ``patient`` (images
also take ``group``, ``slide`` or ``sample``); files are named relative to the data folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import did_you_mean, format_list
from ..exceptions import DataError

__all__ = ["SAMPLE_SHEET_NAMES", "read_sample_sheet", "sheet_entries"]

SAMPLE_SHEET_NAMES = ("sample_sheet.csv", "samples.csv")  # found in a folder without --sample-sheet


def read_sample_sheet(path: str | Path, known: Sequence[str] = ("patient",)) -> pd.DataFrame:
    """Read a sample sheet: CSV with columns ``file``, ``label`` and optionally ``patient``.

    A column close to a ``known`` one (``pateint``) is an error naming the right spelling:
    ignoring it would silently give every file its own group.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sample sheet must exist; got {str(path)!r}, which does not.")
    try:
        sheet = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError,
            ValueError) as exc:
        raise DataError(f"sample sheet {str(path)!r} must be a CSV with columns file,label"
                        f"[,patient]; reading failed ({exc}).") from exc
    sheet.columns = [str(c).strip().lower() for c in sheet.columns]
    expected = ("file", "label", *(k.lower() for k in known))
    for col in sheet.columns:
        guess = did_you_mean(col, expected) if col not in expected else None
        if guess is not None and guess not in sheet.columns:
            raise DataError(
                f"sample sheet {str(path)!r} column {col!r} must be one of "
                f"{', '.join(expected)}; did you mean {guess!r}? Rename the column (unknown "
                "columns are not used, so patients would silently become one group per file)."
            )
    missing = [c for c in ("file", "label") if c not in sheet.columns]
    if missing:
        raise DataError(f"sample sheet {str(path)!r} must have columns file,label[,patient]; "
                        f"got {list(sheet.columns)} (missing {missing}).")
    for col in ("file", "label"):
        empty = np.flatnonzero(sheet[col].str.strip() == "")
        if len(empty):
            raise DataError(f"sample sheet {str(path)!r} must give a {col} on every row; row "
                            f"{empty[0] + 1} has none.")
    dup = sheet["file"][sheet["file"].duplicated()].tolist()
    if dup:
        raise DataError(f"sample sheet {str(path)!r} must list each file once; got duplicates "
                        f"{format_list(dup)}.")
    return sheet


def sheet_entries(sheet: pd.DataFrame, sheet_path: str | Path, root: Path,
                  group_column: str | None) -> list[tuple[Path, Any, Any]]:
    """``(file, label, group)`` per sample-sheet row; a file that is missing is an error."""
    entries = []
    for i, row in enumerate(sheet.itertuples(index=False), start=1):
        path = root / row.file
        if not path.is_file():
            raise DataError(
                f"sample sheet {str(sheet_path)!r} row {i} names file {row.file!r}, which "
                f"must exist in {str(root)!r} but does not. Fix the name or remove the row."
            )
        entries.append((path, row.label, getattr(row, group_column) if group_column else None))
    return entries
