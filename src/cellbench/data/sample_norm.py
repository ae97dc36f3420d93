"""Per-sample normalisation: each sample's markers aligned to a reference of the training samples.

Cells of a new patient are shifted by batch and instrument effects: the same cell type sits at
another intensity. These steps of :class:`~cellbench.data.transforms.Preprocessor` move every
sample (the ``--groups`` column: patient, sample, FCS file) onto a reference learned from the
training samples, without labels:

``sample-standardize``
    Per marker, ``(x - m_s) / s_s * s_ref + m_ref``: ``m_s``, ``s_s`` the sample's mean and
    standard deviation, ``m_ref``, ``s_ref`` their means over the training samples.
``sample-quantile``
    Per marker, the sample's quantile function (levels 1 % .. 99 %) is mapped piecewise
    linearly onto the reference quantile function, the mean of the training samples' quantile
    functions (the "goal distribution" of CytoNorm, Van Gassen et al. 2020, here without its
    per-cluster splines and control samples). Beyond the 1 % and 99 % quantiles values are
    shifted, not squeezed.

A sample's statistics come from its own cells only, never from labels: from at most
:data:`STAT_CELLS` of them, every k-th in row order, so that the grid (a sample's rows in a
fold) and ``cellbench predict`` (a sample's rows streamed from a file) compute the same
statistics from the same rows. A sample of fewer than :data:`MIN_CELLS` cells is left as it is.

Both steps also remove biology: a sample whose mix of cell types differs (more B cells, a
blast population) is pulled towards the reference mix. Measure before adopting them
(``cellbench compare --transform arcsinh,sample-quantile,standardize``).

>>> import numpy as np
>>> X = np.array([[1.0], [2.0], [3.0], [11.0], [12.0], [13.0]], dtype=np.float32)
>>> stats = [sample_stats("sample-standardize", X[:3]), sample_stats("sample-standardize", X[3:])]
>>> ref = reference(stats)
>>> align("sample-standardize", X[3:], stats[1], ref).ravel().tolist()
[6.0, 7.0, 8.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from .._config import TRANSFORMS

__all__ = ["LEVELS", "MIN_CELLS", "SAMPLE_STEPS", "STAT_CELLS", "align", "reference",
           "sample_blocks", "sample_stats", "stat_rows"]

SAMPLE_STEPS = tuple(step for step in TRANSFORMS if step.startswith("sample-"))
#: a sample's statistics come from at most this many of its cells (every k-th)
STAT_CELLS = 10_000
#: samples with fewer cells are not normalised (their statistics would be noise)
MIN_CELLS = 10
LEVELS = np.linspace(0.01, 0.99, 99)


def stat_rows(n: int) -> slice:
    """The rows of an ``n``-cell sample its statistics come from: every k-th, at most
    :data:`STAT_CELLS`."""
    return slice(0, n, max(1, math.ceil(n / STAT_CELLS)))


def sample_stats(step: str, Z: np.ndarray) -> np.ndarray:
    """One sample's statistics for ``step`` from its cells ``Z`` (n, d): mean and standard
    deviation ``(2, d)`` or quantiles ``(len(LEVELS), d)``."""
    Z = np.asarray(Z, dtype=np.float32)
    if step == "sample-standardize":
        return np.stack([Z.mean(axis=0, dtype=np.float64),
                         Z.std(axis=0, dtype=np.float64)]).astype(np.float32)
    return np.quantile(Z, LEVELS, axis=0).astype(np.float32)


def reference(stats: Sequence[np.ndarray]) -> np.ndarray:
    """The reference: the mean over samples of their statistics."""
    return np.mean(np.stack(stats), axis=0, dtype=np.float64).astype(np.float32)


def align(step: str, X: np.ndarray, stats: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Move one sample's cells ``X`` from its statistics ``stats`` onto ``ref``."""
    X = np.asarray(X, dtype=np.float32)
    if step == "sample-standardize":
        mean, std = stats[0], stats[1]
        scale = np.where(std > 0, ref[1] / np.where(std > 0, std, 1), 1).astype(np.float32)
        return ((X - mean) * scale + ref[0]).astype(np.float32)
    out = np.empty_like(X)
    for j in range(X.shape[1]):
        q, r, x = stats[:, j], ref[:, j], X[:, j]
        # the mean of the left and right interpolation: a value repeated in the sample
        # (zeros of a dim marker) goes to the middle of the reference over those levels
        up = np.interp(x, q, r)
        down = -np.interp(-x, -q[::-1], -r[::-1])
        y = 0.5 * (up + down)
        y += np.where(x < q[0], x - q[0], 0) + np.where(x > q[-1], x - q[-1], 0)
        out[:, j] = y
    return out


def sample_blocks(groups: np.ndarray | None, n: int) -> Iterator[np.ndarray]:
    """The row positions of each sample, ascending (all ``n`` rows when ``groups`` is None);
    a missing group id is a sample of its own."""
    if n == 0:
        return
    if groups is None:
        yield np.arange(n)
        return
    codes, _ = pd.factorize(np.asarray(groups), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes))[:-1]
    yield from np.split(order, bounds)
