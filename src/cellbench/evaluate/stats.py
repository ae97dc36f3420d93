"""Confidence intervals for the metrics cellbench reports.

Written here rather than borrowed because they sit in hot paths (bootstrap over hundreds of
thousands of cells) and must be exact and vectorised:

* :func:`wilson_ci` for a proportion (accuracy);
* :func:`confusion_bootstrap` for any metric of the confusion matrix (balanced accuracy,
  macro-F1): resampling rows with replacement is the same as drawing the matrix's cell
  counts from a multinomial, so the bootstrap costs ``B x K^2``, not ``B x n``;
* :func:`delong_ci` for AUROC (binary, or macro one-vs-rest): DeLong's variance from each
  row's influence on the estimate, O(n log n).

and the paired tests that decide whether one model beats another: :func:`mcnemar_exact`
(one test set), :func:`corrected_resampled_ttest` (repeated CV; Nadeau & Bengio),
:func:`wilcoxon_signed_rank` (per patient), :func:`holm` (several models vs one reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, norm
from scipy.stats import t as student_t

__all__ = ["PairedResult", "cohens_dz", "confusion_bootstrap", "corrected_resampled_ttest",
           "delong_ci", "holm", "mcnemar_exact", "percentile_ci", "seed_cell_ttest",
           "wilcoxon_signed_rank", "wilson_ci"]


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n``."""
    if n == 0:
        return (float("nan"), float("nan"))
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1 (algebraically centre -/+ half); rounding
    # gives 0.9999999999999998, and an interval that excludes its own estimate (a negative
    # error bar). Clamp to [0, p] and [p, 1] as well.
    lo = 0.0 if k <= 0 else min(max(0.0, centre - half), p)
    hi = 1.0 if k >= n else max(min(1.0, centre + half), p)
    return (float(lo), float(hi))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaNs ignored)."""
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def confusion_bootstrap(cm: np.ndarray, metric: Callable[[np.ndarray], np.ndarray],
                        n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                        stratified: bool = False) -> tuple[float, float]:
    """Bootstrap CI of ``metric`` over resampled confusion matrices.

    ``metric`` takes a stack of matrices ``(B, K, K)`` and returns ``(B,)`` values.
    ``stratified`` resamples within each true class (each row of ``cm`` keeps its size), as
    a per-class metric such as balanced accuracy needs: otherwise a tiny class drops out of
    some resamples and the mean recall over the classes left inflates the upper bound.
    """
    cm = np.asarray(cm, np.int64)
    n = int(cm.sum())
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if not stratified:
        draws = rng.multinomial(n, cm.ravel() / n, size=n_boot).reshape(n_boot, *cm.shape)
        return percentile_ci(metric(draws), level)
    draws = np.zeros((n_boot, *cm.shape), np.int64)
    for k, row in enumerate(cm):
        size = int(row.sum())
        if size:
            draws[:, k] = rng.multinomial(size, row / size, size=n_boot)
    return percentile_ci(metric(draws), level)


def _auc_influence(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC (ties count half) and each row's DeLong structural component, centred.

    Positives get ``V10 - auc`` scaled by ``n / n_pos``, negatives ``V01 - auc`` scaled by
    ``n / n_neg``: the influence of each row on the AUROC estimate.
    """
    # the arithmetic below runs in place where it can, in the order of the formulas in the
    # comments (equal to the bit): a large pooled test part makes this a compare's peak
    pos, neg = scores[positive], scores[~positive]
    m, k = len(pos), len(neg)
    neg_sorted = np.sort(neg)
    lo = np.searchsorted(neg_sorted, pos, "left")
    hi = np.searchsorted(neg_sorted, pos, "right")
    del neg_sorted
    np.subtract(hi, lo, out=hi)
    v10 = 0.5 * hi  # v10 = (lo + 0.5 * (hi - lo)) / k
    del hi
    v10 += lo
    v10 /= k
    pos_sorted = np.sort(pos)
    del pos, lo
    lo = np.searchsorted(pos_sorted, neg, "left")
    hi = np.searchsorted(pos_sorted, neg, "right")
    del pos_sorted, neg
    np.subtract(hi, lo, out=lo)
    v01 = 0.5 * lo  # v01 = ((m - hi) + 0.5 * (hi - lo)) / m
    del lo
    np.subtract(m, hi, out=hi)
    v01 += hi
    del hi
    v01 /= m
    auc = float(v10.mean())
    n = m + k
    influence = np.empty(n)
    v10 -= auc  # (v10 - auc) * n / m
    v10 *= n
    v10 /= m
    influence[positive] = v10
    del v10
    v01 -= auc  # (v01 - auc) * n / k
    v01 *= n
    v01 /= k
    influence[~positive] = v01
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
        aucs, infl = [], np.zeros(n)  # the classes' influences summed one at a time
        for c in range(proba.shape[1]):
            positive = y == c
            if 0 < positive.sum() < n:
                a, i = _auc_influence(proba[:, c], positive)
                aucs.append(a)
                infl += i
        auc = float(np.mean(aucs))
        infl /= len(aucs)
        var = float(np.sum(infl ** 2)) / (n * (n - 1))
    half = norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))


# ---------------------------------------------------------------------------------------------
# Paired tests: is model A better than model B on the same data?


@dataclass(frozen=True)
class PairedResult:
    """Outcome of one paired test, in the metric's units (fractions, not points)."""

    test: str  # "mcnemar", "corrected_t", "wilcoxon", ...
    difference: float  # mean (or overall) difference A - B
    ci: tuple[float, float]  # confidence interval of the difference
    p_value: float
    n: int  # number of paired units (cells, folds x seeds, patients)
    unit: str  # what was paired
    detectable: float | None = None  # smallest |difference| with 80 % power at this n
    note: str = ""

    def to_dict(self) -> dict:
        return {"test": self.test, "difference": self.difference, "ci": list(self.ci),
                "p_value": self.p_value, "n": self.n, "unit": self.unit,
                "detectable": self.detectable, "note": self.note}


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray,
                  level: float = 0.95) -> PairedResult:
    """McNemar's exact test for two models on one test set (same rows).

    p is the two-sided exact binomial test on the discordant pairs; the CI of the accuracy
    difference is the Wald interval for paired proportions.
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    n = len(a)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(min(1.0, 2 * binom.cdf(min(only_a, only_b),
                                                                 discordant, 0.5)))
    diff = (only_a - only_b) / n
    se = np.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    z = norm.ppf(0.5 + level / 2)
    # detectable difference: discordant rate held fixed, 80 % power, two-sided 5 %
    rate = discordant / n
    detectable = float((z + norm.ppf(0.8)) * np.sqrt(rate / n)) if n else None
    return PairedResult("mcnemar", float(diff), (float(diff - z * se), float(diff + z * se)),
                        p, n, "cells", detectable)


def corrected_resampled_ttest(differences: np.ndarray, n_train: float, n_test: float,
                              level: float = 0.95) -> PairedResult:
    """Nadeau & Bengio's corrected resampled t-test over repeated train/test splits.

    The variance of the mean difference is inflated by ``1/J + n_test/n_train`` instead of
    ``1/J``, because the J training sets overlap; the plain paired t-test ignores that and
    finds differences that are not there.
    """
    d = np.asarray(differences, np.float64)
    j = len(d)
    mean = float(d.mean())
    if j < 2:
        return PairedResult("corrected_t", mean, (float("nan"), float("nan")), float("nan"), j,
                            "runs", None, "needs at least 2 paired runs")
    var = float(d.var(ddof=1))
    factor = 1 / j + n_test / n_train
    se = np.sqrt(factor * var)
    df = j - 1
    crit = student_t.ppf(0.5 + level / 2, df)
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * student_t.sf(abs(mean) / se, df))
    detectable = float((crit + student_t.ppf(0.8, df)) * se) if se > 0 else None
    return PairedResult("corrected_t", mean, (mean - crit * se, mean + crit * se), p, j, "runs",
                        detectable)


def seed_cell_ttest(correct_a: np.ndarray, correct_b: np.ndarray,
                    level: float = 0.95) -> PairedResult:
    """Two models trained with J seeds each, all tested on the same n cells.

    ``correct_a`` and ``correct_b`` are (J, n) arrays of 0/1 (seed j's prediction of cell i
    is right). Two things vary: which networks training happened to produce (the spread of
    the J per-seed differences) and which cells happened to be in the test set (the spread of
    the per-cell differences, averaged over seeds). A t-test over seeds alone ignores the
    second (every seed saw the same cells); McNemar on one seed ignores the first. Here

        se^2 = var_j(D_j) / J + var_i(d_i) / n,

    with Welch-Satterthwaite degrees of freedom. With one seed it is the paired t-test over
    cells; with identical seeds too.
    """
    a = np.asarray(correct_a, np.float64)
    b = np.asarray(correct_b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"correct_a and correct_b must be (seeds, cells) arrays of one shape; "
                         f"got {a.shape} and {b.shape}.")
    j, n = a.shape
    per_seed = a.mean(axis=1) - b.mean(axis=1)
    per_cell = a.mean(axis=0) - b.mean(axis=0)
    mean = float(per_cell.mean())
    v_seed = float(per_seed.var(ddof=1)) / j if j > 1 else 0.0
    v_cell = float(per_cell.var(ddof=1)) / n if n > 1 else 0.0
    se = float(np.sqrt(v_seed + v_cell))
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
        return PairedResult("seed_cell_t", mean, (mean, mean), p, j, "runs", None,
                            f"{j} seed{'s' if j != 1 else ''} on one test set of {n} cells")
    parts = (v_seed ** 2 / (j - 1) if j > 1 else 0.0) + (v_cell ** 2 / (n - 1) if n > 1 else 0.0)
    df = max(1.0, (v_seed + v_cell) ** 2 / parts)
    crit = student_t.ppf(0.5 + level / 2, df)
    p = float(2 * student_t.sf(abs(mean) / se, df))
    detectable = float((crit + student_t.ppf(0.8, df)) * se)
    return PairedResult("seed_cell_t", mean, (mean - crit * se, mean + crit * se), p, j, "runs",
                        detectable, f"{j} seed{'s' if j != 1 else ''} on one test set of {n} "
                                    f"cells; df {df:.1f}")


def wilcoxon_signed_rank(differences: np.ndarray, unit: str = "groups",
                         level: float = 0.95, n_boot: int = 2000,
                         seed: int = 0) -> PairedResult:
    """Wilcoxon signed-rank test (scipy) with a bootstrap CI of the mean difference."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, np.float64)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n == 0 or np.all(d == 0):
        return PairedResult("wilcoxon", mean, (mean, mean), 1.0, n, unit, None,
                            "no differences")
    p = float(wilcoxon(d).pvalue)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    sd = d.std(ddof=1) if n > 1 else 0.0
    detectable = float((norm.ppf(0.975) + norm.ppf(0.8)) * sd / np.sqrt(n)) if n > 1 else None
    return PairedResult("wilcoxon", mean, percentile_ci(boots, level), p, n, unit, detectable)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control)."""
    p = np.asarray(p_values, np.float64)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def cohens_dz(differences: np.ndarray) -> float:
    """Standardized mean of paired differences (mean / sd)."""
    d = np.asarray(differences, np.float64)
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return float(d.mean() / sd) if sd > 0 else float("inf") if d.mean() else 0.0
