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


def subsample_rows(samples: np.ndarray, labels: np.ndarray | None, n: int,
                   seed: int) -> np.ndarray:
    """Row positions of ``n`` cells per sample of a whole table (sorted)."""
    check_cells_per_sample(n)
    names, codes = np.unique(samples.astype(str), return_inverse=True)
    keep = []
    for k, name in enumerate(names):
        rows = np.flatnonzero(codes == k)
        chosen = draw_cells(len(rows), n, labels=None if labels is None else labels[rows],
                            seed=seed, sample=name)
        keep.append(rows[chosen])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
