"""Per-sample subsampling at load time: a bounded number of cells from every sample.

Cytometry studies hold 10^5-10^6 cells per FCS file and hundreds of files; the usual practice
is to train on a fixed number of cells per sample. The draw is

- **per sample**: ``n`` cells from each sample (all of them when it has fewer);
- **stratified by label** where labels are per cell: each label keeps its share of the
  sample (largest remainders), so a rare population is not lost by chance;
- **seeded per sample**: the cells drawn from a sample depend on the seed and the sample's
  name only, not on the order or number of the other files, so adding a file to a study
  does not change what was drawn from the others.

>>> import numpy as np
>>> labels = np.array(["a"] * 90 + ["b"] * 10)
>>> rows = draw_cells(100, 20, labels=labels, seed=0, sample="p1")
>>> len(rows), int((labels[rows] == "b").sum())
(20, 2)
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from ..exceptions import InvalidParameterError

__all__ = ["check_cells_per_sample", "draw_cells", "subsample_rows"]


def check_cells_per_sample(n: Any) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidParameterError(
            f"cells_per_sample must be an int >= 1 (cells drawn from each sample); got {n!r}. "
            "Pass e.g. --cells-per-sample 20000, or leave it out to use every cell.")


def _rng(seed: int, sample: Any) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(str(sample).encode("utf-8"))])


def draw_cells(size: int, n: int, *, labels: np.ndarray | None = None, seed: int,
               sample: Any) -> np.ndarray:
    """Sorted row positions of ``n`` of a sample's ``size`` cells (all when ``size <= n``),
    stratified by ``labels`` (one per cell) when given."""
    if size <= n:
        return np.arange(size)
    rng = _rng(seed, sample)
    if labels is None:
        return np.sort(rng.choice(size, n, replace=False))
    values, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes, minlength=len(values))
    share = counts * (n / size)
    take = np.floor(share).astype(int)
    left = n - int(take.sum())
    if left:  # largest remainders first; ties by label order
        order = np.argsort(-(share - take), kind="stable")
        take[order[:left]] += 1
    picked = [rng.choice(np.flatnonzero(codes == k), take[k], replace=False)
              for k in range(len(values)) if take[k]]
    return np.sort(np.concatenate(picked))


def subsample_rows(samples: Any, labels: Any, n: int, seed: int) -> np.ndarray:
    """Row positions of ``n`` cells per sample of a whole table (sorted).

    ``samples`` and ``labels`` are arrays or pandas Series; a categorical Series is used
    through its codes, so a table of millions of cells makes no Python object per cell.
    """
    check_cells_per_sample(n)
    names, codes = _sorted_codes(samples, as_text=True)
    label_codes = None if labels is None else _sorted_codes(labels)[1]
    order = np.argsort(codes, kind="stable")  # each sample's rows, in row order
    ends = np.cumsum(np.bincount(codes, minlength=len(names)))
    keep = []
    for k, name in enumerate(names):
        rows = order[(ends[k - 1] if k else 0):ends[k]]
        chosen = draw_cells(len(rows), n, labels=None if label_codes is None
                            else label_codes[rows], seed=seed, sample=name)
        keep.append(rows[chosen])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _sorted_codes(values: Any, as_text: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` (of the values as text with ``as_text``):
    the distinct values sorted, and each row's position among them. A categorical is coded
    from its categories; a missing value sorts last."""
    import pandas as pd

    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        cats = values.cat.categories.to_numpy()
        cats = cats.astype(str) if as_text else cats
        rank = np.empty(len(cats) + 1, np.int32 if len(cats) < 2**31 - 1 else np.int64)
        order = np.argsort(cats, kind="stable")
        rank[order] = np.arange(len(cats))
        raw = values.cat.codes.to_numpy()
        missing = raw < 0
        rank[-1] = len(cats)  # code -1: after every category
        names = cats[order]
        if missing.any():
            names = np.append(names.astype(object), None if not as_text else "nan")
        return names, rank[raw]
    values = np.asarray(values)
    return np.unique(values.astype(str) if as_text else values, return_inverse=True)
