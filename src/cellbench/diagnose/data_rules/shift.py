"""Rule ``sample_shift``: the same cell type sits at other intensities in other samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..._config import DataConfig
from ...data.dataset import Dataset, group_index
from ...data.sample_norm import SAMPLE_STEPS
from ...data.splits import Split
from ...data.table_transforms import Preprocessor
from ..findings import Finding
from ._common import MAX_ROWS, MIN_ROWS, fit_and_heldout, make_finding, subsample

__all__ = ["SHIFT_INFO", "SHIFT_WARN", "check_sample_shift", "shift_ratios"]

#: spread across samples of a cell type's mean, in within-sample standard deviations of the
#: type: at 1 the samples differ as much as the cells of one sample do (warning); at 0.5 by
#: half that (info)
SHIFT_WARN = 1.0
SHIFT_INFO = 0.5
MIN_SAMPLES = 3  # samples holding a class before its spread across samples is measured


def shift_ratios(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per class and marker, the spread across samples of the class's mean (its noise, the
    within-sample variance over the cell count, taken off) over the pooled within-sample
    standard deviation: ``(n_classes measured, n_features)``; classes in fewer than
    :data:`MIN_SAMPLES` samples of :data:`MIN_ROWS` cells are left out."""
    g = group_index(groups)[1]
    out = []
    for c in np.unique(y):
        rows = y == c
        counts = np.bincount(g[rows])
        kept = np.flatnonzero(counts >= MIN_ROWS)
        if len(kept) < MIN_SAMPLES:
            continue
        means, within, n = [], [], []
        for s in kept:
            Z = X[rows & (g == s)].astype(np.float64)
            means.append(Z.mean(axis=0))
            within.append(Z.var(axis=0, ddof=1))
            n.append(len(Z))
        means, within, n = np.array(means), np.array(within), np.array(n, np.float64)
        pooled = (within * (n[:, None] - 1)).sum(0) / (n - 1).sum()
        between = means.var(axis=0, ddof=1) - (within / n[:, None]).mean(0)
        sd = np.sqrt(np.maximum(pooled, 1e-12))
        out.append(np.sqrt(np.maximum(between, 0)) / sd)
    return np.array(out).reshape(-1, X.shape[1])


def check_sample_shift(ds: Dataset, splits: Sequence[Split] = (),
                       data_cfg: DataConfig | None = None) -> list[Finding]:
    """Batch or instrument shifts between samples.

    Rule (tables with groups, no ``sample-*`` step in the transform): on the training rows as
    preprocessed, per class present in at least 3 groups with at least 10 cells each, the
    spread across groups of the class's per-marker mean, net of its sampling noise, in units
    of the pooled within-group standard deviation; the median over classes and markers.
    Warning when it is at least 1 (samples differ as much as the cells of one sample do),
    info from 0.5. Fix
    ``normalize_samples``, judged by a paired test: part of the spread can be biology.
    """
    cfg = data_cfg or DataConfig()
    if (ds.kind != "table" or ds.groups is None or ds.n_samples == 0
            or any(step in SAMPLE_STEPS for step in cfg.transform)):
        return []
    fit_rows = fit_and_heldout(ds, splits)[0] if splits else np.arange(ds.n_samples)
    rows = subsample(fit_rows, 2 * MAX_ROWS)
    if len(rows) < MIN_SAMPLES * MIN_ROWS:
        return []
    pre = Preprocessor(cfg.transform, cfg.arcsinh_cofactor(), cfg.cofactors, ds.aliases)
    X = pre.fit(ds.X, ds.feature_names, rows=rows).transform(ds.X[rows])
    ratios = shift_ratios(X, ds.y[rows], ds.groups[rows])
    if not ratios.size:
        return []
    score = float(np.median(ratios))
    if score < SHIFT_INFO:
        return []
    per_marker = np.median(ratios, axis=0)
    top = np.argsort(-per_marker)[:3]
    what = ds.group_name or "group"
    evidence = {"median_shift_sd": score, "warn_at": SHIFT_WARN, "info_at": SHIFT_INFO,
                "classes_measured": int(ratios.shape[0]),
                "most_shifted": {ds.feature_names[j]: float(per_marker[j]) for j in top}}
    severity = "warning" if score >= SHIFT_WARN else "info"
    return [make_finding(
        "sample_shift", severity,
        f"cells of the same class sit at other intensities in other {what}s: the class "
        f"means spread across {what}s by {score:.2f} within-{what} standard deviations "
        f"(median over {ratios.shape[0]} classes and {ratios.shape[1]} markers; most in "
        f"{', '.join(ds.feature_names[j] for j in top)}), a batch or instrument shift a "
        f"new {what} will carry too", evidence,
        fix="normalize_samples" if severity == "warning" else None,
        strength=float(np.log2(score / SHIFT_WARN)),
        advice="Align each sample to the training samples: --transform "
               "arcsinh,sample-standardize,standardize (or sample-quantile), and keep it "
               "only if a paired test over samples says it helps.")]
