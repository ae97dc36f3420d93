"""Rows of a large table preprocessed batch by batch, never as a whole.

A training part of millions of cells would otherwise be copied once more, transformed, beside
the loaded table (0.7x of it for a 70 % split). :class:`LazyRows` keeps the raw table, the
part's row numbers and the fitted row-wise transform, and gives the engine what it asks of a
tensor: its length, and the transformed rows of an index (a batch, the evaluation subset, a
slice of the validation part). Every value equals the materialised part's, so training is the
same bit for bit; ``np.asarray`` still materialises it for code that needs an array.

>>> import numpy as np
>>> X = np.arange(12, dtype=np.float32).reshape(6, 2)
>>> part = LazyRows(X, np.array([4, 1, 3]), lambda Z: Z * 10)
>>> len(part), part[torch.tensor([0, 2])].tolist(), part[1:2].tolist()
(3, [[80.0, 90.0], [60.0, 70.0]], [[20.0, 30.0]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["LazyRows"]

CHUNK_ROWS = 1 << 16


class LazyRows:
    """``transform(X[rows])``, computed for the rows asked for.

    Parameters
    ----------
    X : ndarray (n, d)
        The raw table (not copied).
    rows : ndarray of int
        The part's rows of ``X``, in the part's order.
    transform : callable
        A row-wise map of a raw block to float32 (the fitted preprocessing).
    """

    ndim = 2

    def __init__(self, X: np.ndarray, rows: np.ndarray,
                 transform: Callable[[np.ndarray], np.ndarray]) -> None:
        self.X, self.rows, self.transform = X, np.asarray(rows), transform

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.X.shape[1]))

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return torch.from_numpy(self.transform(self.X[self.rows[index]]))

    def to(self, device: Any) -> LazyRows:
        """Rows stay in host memory; the engine moves each batch."""
        return self

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        for start in range(0, len(self), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = self.transform(
                self.X[self.rows[start:start + CHUNK_ROWS]])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyRows({len(self)} of {len(self.X)} rows)"
