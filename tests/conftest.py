"""Shared fixtures: tiny synthetic tables and FCS files, fixed seeds, quiet matplotlib."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def make_table(n: int = 300, n_features: int = 12, n_classes: int = 3, n_donors: int = 12,
               seed: int = 0, separation: float = 2.0) -> pd.DataFrame:
    """Cells whose class shifts a few markers; donors add a per-donor offset."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    donors = np.arange(n) % n_donors
    X = rng.normal(size=(n, n_features))
    X[:, :n_classes] += separation * np.eye(n_classes)[y]
    X += rng.normal(scale=0.2, size=(n_donors, n_features))[donors]
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"CD{i + 1}" for i in range(n_features)])
    frame["label"] = np.array([f"type{k}" for k in range(n_classes)])[y]
    frame["donor"] = [f"D{d:02d}" for d in donors]
    return frame


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
