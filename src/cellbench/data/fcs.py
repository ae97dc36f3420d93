"""FCS 2.0/3.0/3.1 files through flowio, with errors that name the file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataError

__all__ = ["FcsFile", "read_fcs"]

_MASS_CYTOMETERS = re.compile(r"cytof|helios|hyperion|xt\b|mass", re.IGNORECASE)


@dataclass
class FcsFile:
    """Events of one FCS file as a table.

    Attributes
    ----------
    frame : DataFrame
        One column per channel, named by ``$PnN``; values after gain/log scaling.
    aliases : dict
        ``$PnS`` (marker name) → ``$PnN`` for channels that have a distinct, unique ``$PnS``.
    cytometry : {"mass", "flow"}
        Guessed from the ``$CYT`` keyword.
    """

    frame: pd.DataFrame
    aliases: dict[str, str]
    cytometry: str
    path: Path


def read_fcs(path: str | Path) -> FcsFile:
    """Read one FCS file.

    Raises
    ------
    DataError
        The file is missing, empty, truncated, not FCS, or holds no events.
    """
    import flowio

    path = Path(path)
    if not path.is_file():
        raise DataError(f"FCS file must exist; got {str(path)!r}, which does not. Check the path.")
    size = path.stat().st_size
    if size == 0:
        raise DataError(
            f"FCS file {str(path)!r} must not be empty; got 0 bytes. Re-export it from the "
            "acquisition software or remove it."
        )
    try:
        fd = flowio.FlowData(str(path))
        events = fd.as_array(preprocess=True)
    except flowio.exceptions.MultipleDataSetsError as exc:
        raise DataError(
            f"FCS file {str(path)!r} must hold one data set; it holds several ({exc}). Split it "
            "with flowio.read_multiple_data_sets or re-export one data set per file."
        ) from exc
    except Exception as exc:  # flowio raises many types on damaged files
        raise DataError(
            f"FCS file {str(path)!r} must be a readable FCS 2.0/3.0/3.1 file; reading failed "
            f"({type(exc).__name__}: {exc}). It may be truncated or not an FCS file: re-export "
            "it from the acquisition software."
        ) from exc
    if events.shape[0] == 0:
        raise DataError(
            f"FCS file {str(path)!r} must contain events; got 0 events. Remove it or re-export it."
        )
    pnn = [str(n) for n in fd.pnn_labels]
    if len(set(pnn)) != len(pnn):
        dup = sorted({n for n in pnn if pnn.count(n) > 1})
        raise DataError(
            f"FCS file {str(path)!r} must have unique channel names ($PnN); got duplicates "
            f"{dup}. Rename the channels in the acquisition software."
        )
    pns = [str(s) if s else "" for s in fd.pns_labels]
    aliases: dict[str, str] = {}
    for n, s in zip(pnn, pns, strict=True):
        if s and s != n and pns.count(s) == 1 and s not in pnn:
            aliases[s] = n
    frame = pd.DataFrame(events.astype(np.float32, copy=False), columns=pnn)
    cyt = str(fd.text.get("cyt", ""))
    cytometry = "mass" if _MASS_CYTOMETERS.search(cyt) else "flow"
    return FcsFile(frame=frame, aliases=aliases, cytometry=cytometry, path=path)
