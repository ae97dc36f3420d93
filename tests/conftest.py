"""Shared fixtures: tiny synthetic tables and FCS files, fixed seeds, quiet matplotlib."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthetic import make_table  # tests/ is on sys.path (pytest rootdir)


@pytest.fixture(autouse=True)
def _seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def table_factory():
    """``make_table`` for tests that need other sizes."""
    return make_table


@pytest.fixture
def tiny_table() -> pd.DataFrame:
    """300 cells x 12 markers, 3 classes, 12 donors."""
    return make_table()


@pytest.fixture
def tiny_csv(tmp_path: Path, tiny_table: pd.DataFrame) -> Path:
    path = tmp_path / "cells.csv"
    tiny_table.to_csv(path, index=False)
    return path


def write_fcs(path: Path, data: np.ndarray, names: list[str], markers: list[str] | None = None,
              version: str = "3.1", cytometer: str | None = None) -> Path:
    """Write an FCS file with flowio; ``version`` 2.0/3.0 rewrites the header's version."""
    import flowio

    metadata = {"cyt": cytometer} if cytometer else None
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, np.asarray(data, dtype=np.float64).ravel().tolist(), names,
                          opt_channel_names=markers, metadata_dict=metadata)
    if version != "3.1":
        raw = bytearray(path.read_bytes())
        raw[:6] = f"FCS{version}".encode()
        path.write_bytes(bytes(raw))
    return path


@pytest.fixture
def fcs_writer():
    return write_fcs
