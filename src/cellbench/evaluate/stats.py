"""Confidence intervals for the metrics cellbench reports.

Written here rather than borrowed because they sit in hot paths (bootstrap over hundreds of
thousands of cells) and must be exact and vectorised:

* :func:`wilson_ci` for a proportion (accuracy);
* :func:`confusion_bootstrap` for any metric of the confusion matrix (balanced accuracy,
  macro-F1): resampling rows with replacement is the same as drawing the matrix's cell
  counts from a multinomial, so the bootstrap costs ``B x K^2``, not ``B x n``;
* :func:`delong_ci` for AUROC (binary, or macro one-vs-rest): DeLong's variance from each
  row's influence on the estimate, O(n log n).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import norm

__all__ = ["confusion_bootstrap", "delong_ci", "percentile_ci", "wilson_ci"]


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n``."""
    if n == 0:
        return (float("nan"), float("nan"))
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaNs ignored)."""
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def confusion_bootstrap(cm: np.ndarray, metric: Callable[[np.ndarray], np.ndarray],
                        n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap CI of ``metric`` over resampled confusion matrices.

    ``metric`` takes a stack of matrices ``(B, K, K)`` and returns ``(B,)`` values.
    """
    cm = np.asarray(cm, np.int64)
    n = int(cm.sum())
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cm.ravel() / n, size=n_boot).reshape(n_boot, *cm.shape)
    return percentile_ci(metric(draws), level)


def _auc_influence(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC (ties count half) and each row's DeLong structural component, centred.

    Positives get ``V10 - auc`` scaled by ``n / n_pos``, negatives ``V01 - auc`` scaled by
    ``n / n_neg``: the influence of each row on the AUROC estimate.
    """
    pos_scores = np.sort(scores[positive])
    neg_scores = np.sort(scores[~positive])
    m, k = len(pos_scores), len(neg_scores)
    lo = np.searchsorted(neg_scores, scores[positive], "left")
    hi = np.searchsorted(neg_scores, scores[positive], "right")
    v10 = (lo + 0.5 * (hi - lo)) / k
    lo = np.searchsorted(pos_scores, scores[~positive], "left")
    hi = np.searchsorted(pos_scores, scores[~positive], "right")
    v01 = ((m - hi) + 0.5 * (hi - lo)) / m
    auc = float(v10.mean())
    n = m + k
    influence = np.empty(n)
    influence[positive] = (v10 - auc) * n / m
    influence[~positive] = (v01 - auc) * n / k
    return auc, influence


def delong_ci(y: np.ndarray, proba: np.ndarray, level: float = 0.95) -> tuple[float, float,
                                                                              float]:
    """AUROC and its DeLong confidence interval.

    Binary: DeLong et al. (1988). More classes: the macro one-vs-rest average, whose variance
    is that of the mean of the classes' DeLong influence values (the same estimator, applied
    to the average). Returns ``(auroc, low, high)``, the interval clipped to [0, 1].
    """
    y = np.asarray(y)
    proba = np.asarray(proba, np.float64)
    n = len(y)
    if proba.shape[1] == 2:
        positive = y == 1
        auc, infl = _auc_influence(proba[:, 1], positive)
        m, k = int(positive.sum()), int((~positive).sum())
        # DeLong: S10 / m + S01 / k with unbiased variances of the structural components
        s10 = np.sum((infl[positive] * m / n) ** 2) / max(m - 1, 1)
        s01 = np.sum((infl[~positive] * k / n) ** 2) / max(k - 1, 1)
        var = s10 / m + s01 / k
    else:
        parts = [_auc_influence(proba[:, c], y == c) for c in range(proba.shape[1])
                 if 0 < (y == c).sum() < n]
        auc = float(np.mean([a for a, _ in parts]))
        infl = np.mean([i for _, i in parts], axis=0)
        var = float(np.sum(infl ** 2)) / (n * (n - 1))
    half = norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))
