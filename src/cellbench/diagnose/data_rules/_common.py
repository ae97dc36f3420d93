"""Shared pieces of the data rules: CI widths, deterministic subsamples, the parts of a split,
row hashes and chance collisions, and the thresholds every rule states relative to the data."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...data import checks
from ...data.dataset import Dataset
from ...data.splits import Split
from ..findings import Finding

__all__ = ["COLLISION_MARGIN", "GROUP_REGEX", "IMBALANCE_INFO", "LEAK_ROOM", "MAX_ROWS",
           "MIN_ROWS", "RMS_LIMIT", "SCALE_SPAN", "Z95", "as_table", "ceiling_text",
           "chance_share", "class_counts", "class_names", "class_sizes", "fit_and_heldout",
           "heldout_parts", "log_collision", "make_finding", "n_present", "pct", "row_hashes",
           "subsample", "wilson_halfwidth", "wilson_lower"]

Z95 = 1.959963984540054  # two-sided 95% normal quantile
MAX_ROWS = 20_000  # rows a rule looks at (deterministic subsample); enough for 1% resolution
MIN_ROWS = checks.MIN_CELLS_PER_CLASS  # fewer rows of a class cannot be learned or measured
RMS_LIMIT = 10.0  # image input RMS above 10x a standardized input's (1): unscaled pixels
SCALE_SPAN = 100.0  # per-feature scales spanning more than 100x (two orders of magnitude)
IMBALANCE_INFO = 3.0  # largest / smallest class at which the floor is worth stating
LEAK_ROOM = 0.95  # share of the chance-to-perfect range one feature must recover to be a leak
COLLISION_MARGIN = 10.0  # observed duplicates must exceed chance collisions by this factor
GROUP_REGEX = r"^([A-Za-z0-9]+?)[_\-. ]"  # file-name prefix before the first separator


def wilson_halfwidth(n: Any, p: Any = 0.5) -> np.ndarray:
    """Half-width of the 95% Wilson interval of a proportion ``p`` measured on ``n`` rows.

    Vectorised over ``n`` and ``p``; ``n == 0`` gives 0.5 (the interval is all of [0, 1]).

    >>> [round(float(h), 3) for h in wilson_halfwidth([12, 100, 0])]
    [0.246, 0.096, 0.5]
    """
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    safe = np.maximum(n, 1.0)
    z2 = Z95 * Z95
    half = Z95 * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe * safe)) / (1 + z2 / safe)
    return np.where(n > 0, half, 0.5)

def wilson_lower(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Lower end of the 95% Wilson interval of ``k`` out of ``n`` (0 where ``n == 0``)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 1.0)
    p = k / safe
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * safe)) / (1 + z2 / safe)
    return np.where(n > 0, centre - wilson_halfwidth(safe, p), 0.0)

def subsample(index: np.ndarray, limit: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """At most ``limit`` entries of ``index``, chosen by a fixed seed, in their original order."""
    index = np.asarray(index)
    if len(index) <= limit:
        return index
    pick = np.random.default_rng(seed).choice(len(index), limit, replace=False)
    return index[np.sort(pick)]

def class_names(ds: Dataset, codes: Sequence[int]) -> list[str]:
    return [str(ds.classes[int(c)]) for c in codes]

def class_counts(ds: Dataset, rows: np.ndarray | None = None) -> np.ndarray:
    y = ds.y if rows is None else ds.y[rows]
    return np.bincount(y, minlength=ds.n_classes).astype(np.int64)

def n_present(ds: Dataset) -> int:
    return int((class_counts(ds) > 0).sum())

def heldout_parts(splits: Sequence[Split]) -> tuple[str, list[np.ndarray]]:
    """The held-out parts that scores are reported on: test parts, else validation parts."""
    tests = [np.asarray(s.test) for s in splits if len(s.test)]
    if tests:
        return "test", tests
    return "val", [np.asarray(s.val) for s in splits if len(s.val)]

def fit_and_heldout(ds: Dataset, splits: Sequence[Split]) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on and rows to score on: the first split's train part and its validation
    and test parts together, or a seeded half/half of the rows (whole groups when there are
    groups) without splits."""
    for s in splits:
        held = np.concatenate([np.asarray(s.val), np.asarray(s.test)]).astype(np.int64)
        if len(s.train) and len(held):
            return np.asarray(s.train), np.sort(held)
    rng = np.random.default_rng(0)
    if ds.groups is not None and len(np.unique(ds.groups)) >= 2:
        ids, codes = np.unique(ds.groups, return_inverse=True)
        held_ids = rng.permutation(len(ids))[: len(ids) // 2]
        mask = np.isin(codes, held_ids)
    else:
        mask = rng.random(ds.n_samples) < 0.5
    rows = np.arange(ds.n_samples)
    return rows[~mask], rows[mask]

def class_sizes(ds: Dataset, splits: Sequence[Split]) -> dict[str, Any]:
    """Rows per class: in the training parts (largest and smallest over the splits), and held
    out (test parts pooled, or validation parts when no split has a test part; None without
    held-out rows). A class missing from some fold's training part because a grouped split put
    its only group elsewhere is :func:`check_group_class_confound`'s business, hence the
    largest.
    """
    part, held_parts = heldout_parts(splits)
    trains = [np.asarray(s.train) for s in splits if len(s.train)]
    per_train = (np.array([class_counts(ds, t) for t in trains]) if trains
                 else class_counts(ds)[None])
    sizes: dict[str, Any] = {"part": part, "n_parts": len(held_parts),
                             "n_train": per_train.max(axis=0),
                             "min_train": per_train.min(axis=0),
                             "n_splits": len(trains), "n_held": None, "min_part": None}
    if held_parts:
        per_part = np.array([class_counts(ds, h) for h in held_parts])
        sizes.update(n_held=per_part.sum(axis=0), min_part=per_part.min(axis=0))
    return sizes

def as_table(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)

def row_hashes(X: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row: the pandas row hashing of :func:`checks.check_split_duplicates`
    for tables, BLAKE2b of each image's bytes for images (thousands of pixel columns)."""
    flat = as_table(X)
    if flat.shape[1] == 0:
        return np.zeros(len(flat), np.uint64)
    if flat.shape[1] <= 256:
        return pd.util.hash_pandas_object(pd.DataFrame(flat), index=False).to_numpy()
    flat = np.ascontiguousarray(flat)
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in flat)
    return np.frombuffer(digests, dtype=np.uint64)

def log_collision(X: np.ndarray) -> float:
    """log of the chance that two random rows are identical if columns were independent.

    Per column, the chance two rows agree is sum_v p_v^2 over its values (measured on at most
    2,000 rows); the row chance is their product. Continuous columns give about 1/m each.
    """
    flat = as_table(X[subsample(np.arange(len(X)), 2000, seed=1)])
    m, d = flat.shape
    if m < 2 or d == 0:
        return 0.0
    cols = np.arange(d)
    if d > 256:  # images: a fixed sample of pixel positions, scaled up to all of them
        cols = np.linspace(0, d - 1, 256).round().astype(int)
    total = 0.0
    for j in cols:
        _, counts = np.unique(flat[:, j], return_counts=True)
        total += float(np.log(max(np.sum((counts / m) ** 2), 1e-300)))
    return total * d / len(cols)

def chance_share(n_other: int, log_collision: float) -> float:
    """Share of rows expected to have a chance twin among ``n_other`` rows."""
    return float(min(1.0, n_other * np.exp(log_collision)))

def pct(share: float) -> str:
    """A share as a percentage with enough digits to be non-zero: 0.0027%, 1.5%, 12%."""
    if share <= 0:
        return "0%"
    return f"{share * 100:.2g}%" if share < 0.1 else f"{share * 100:.3g}%"

def ceiling_text(lost: float) -> str:
    """1 - lost as a percentage with enough decimals to differ from 100%."""
    decimals = 2 if lost <= 0 else max(2, int(-np.floor(np.log10(lost * 100))) + 1)
    return f"{(1 - lost) * 100:.{decimals}f}%"

def make_finding(id_: str, severity: str, message: str, evidence: dict[str, Any], *,
             fix: str | None = None, advice: str = "", strength: float = 0.0) -> Finding:
    return Finding(id_, severity, message, evidence, fix=fix, advice=advice,
                   strength=float(np.clip(strength, -1e6, 1e6)))
