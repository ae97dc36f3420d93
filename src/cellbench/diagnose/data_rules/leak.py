"""Rule ``leaking_feature``, and the one-feature classifier it (and ``class_imbalance``) uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._config import DataConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ..findings import Finding
from ._common import LEAK_ROOM, fit_and_heldout, make_finding, subsample, wilson_lower

__all__ = ["SingleFeature", "check_leaking_feature", "one_feature_scores", "single_feature"]


def _integer_valued(x: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(x)) and np.all(np.mod(x, 1) == 0))

def _is_identifier(column: np.ndarray, sample: np.ndarray) -> bool:
    """Integer-valued, one distinct value per row, filling a contiguous range: a row id."""
    if not _integer_valued(sample) or len(np.unique(sample)) < 0.9 * len(sample):
        return False
    values = np.unique(column)
    span = float(values[-1] - values[0] + 1)
    return len(values) >= 0.9 * len(column) and span <= 1.1 * len(values)

def one_feature_scores(Xf: np.ndarray, yf: np.ndarray, Xh: np.ndarray, yh: np.ndarray,
                        K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out scores of each feature used alone.

    Per feature: quantile bins of the fitted rows (at most 64, at least 10 rows per class and
    bin on average), each bin predicting the class with the most rows relative to that class's
    size (so balanced accuracy is what it maximises). Returns the balanced accuracy ``(d,)``;
    its 95% Wilson lower bound, taken as a proportion of the held-out rows ``(d,)``; and each
    class's one-vs-rest balanced accuracy ``(d, K)`` (NaN for classes not in both parts).
    """
    m, d = Xf.shape
    fit_counts = np.bincount(yf, minlength=K).astype(np.float64)
    held_counts = np.bincount(yh, minlength=K).astype(np.float64)
    present = (held_counts > 0) & (fit_counts > 0)
    n_bins = int(np.clip(m // (10 * K), 4, 64))
    levels = np.linspace(0, 1, n_bins + 1)[1:-1]
    Xs = np.sort(Xf, axis=0)
    idx = np.minimum((levels * (m - 1)).round().astype(int), m - 1)
    acc = np.zeros(d)
    ovr = np.full((d, K), np.nan)
    weight = 1 / np.maximum(fit_counts, 1)
    rest_weight = 1 / np.maximum(fit_counts.sum() - fit_counts, 1)
    held_rest = held_counts.sum() - held_counts
    for j in range(d):
        edges = np.unique(Xs[idx, j])
        n_b = len(edges) + 1
        bf = np.searchsorted(edges, Xf[:, j], side="right")
        bh = np.searchsorted(edges, Xh[:, j], side="right")
        table = np.bincount(bf * K + yf, minlength=n_b * K).reshape(n_b, K)
        held = np.bincount(bh * K + yh, minlength=n_b * K).reshape(n_b, K)
        pred = np.argmax(table * weight, axis=1)
        hits = np.bincount(pred, weights=held[np.arange(n_b), pred], minlength=K)
        acc[j] = (hits[present] / held_counts[present]).mean()
        # class c against the rest: a bin says c when c's share beats the rest's share
        says = table * weight > (table.sum(axis=1, keepdims=True) - table) * rest_weight
        recall = (says * held).sum(axis=0) / np.maximum(held_counts, 1)
        spec = (~says * (held.sum(axis=1, keepdims=True) - held)).sum(axis=0) / np.maximum(
            held_rest, 1)
        ovr[j] = np.where(present, (recall + spec) / 2, np.nan)
    n_held = held_counts[present].sum()
    low = wilson_lower(acc * n_held, np.full(d, n_held))
    return acc, low, ovr


@dataclass(frozen=True)
class SingleFeature:
    """Held-out scores of each feature used alone (see :func:`one_feature_scores`)."""

    acc: np.ndarray  # balanced accuracy per feature
    low: np.ndarray  # Wilson lower bound of that balanced accuracy (n = held-out rows)
    ovr: np.ndarray  # (d, K) one-vs-rest balanced accuracy of each class per feature
    n_classes: int  # classes present in both the fitted and the held-out rows
    target: float  # lower bound that counts as near-perfect
    fit_rows: np.ndarray
    heldout_rows: int

    @property
    def chance(self) -> float:
        return 1 / self.n_classes

def single_feature(ds: Dataset, splits: Sequence[Split]) -> SingleFeature | None:
    """Score every feature alone: fitted on (a subsample of) the first split's training rows,
    scored on its held-out rows. None for images or when fewer than 2 classes are in both."""
    if ds.kind != "table" or ds.n_samples < 4 or ds.n_features == 0:
        return None
    fit_rows, held_rows = fit_and_heldout(ds, splits)
    fit_rows, held_rows = subsample(fit_rows), subsample(held_rows, seed=2)
    yf, yh = ds.y[fit_rows], ds.y[held_rows]
    K = ds.n_classes
    both = (np.bincount(yf, minlength=K) > 0) & (np.bincount(yh, minlength=K) > 0)
    Kp = int(both.sum())
    if Kp < 2:
        return None
    acc, low, ovr = one_feature_scores(ds.X[fit_rows].astype(np.float64), yf,
                                        ds.X[held_rows].astype(np.float64), yh, K)
    target = 1 - (1 - LEAK_ROOM) * (1 - 1 / Kp)
    return SingleFeature(acc, low, ovr, Kp, target, fit_rows, len(held_rows))

def check_leaking_feature(ds: Dataset, splits: Sequence[Split] = (),
                          data_cfg: DataConfig | None = None) -> list[Finding]:
    """One feature alone gives the label away (tables only).

    Rule: a one-feature classifier (quantile bins of the training rows, each bin predicting its
    class) is fitted on the first split's training rows and scored on its validation and test
    rows; a feature is near-perfect when the 95% Wilson lower bound of its balanced accuracy
    (n = held-out rows) recovers at least 95% of the range from chance 1/K to perfect.
    With 3 or more classes that is an error (one measured marker does not separate every
    class). With 2 classes one marker can (CD19 for B cells; a gating marker separates the two
    gates it defines with a clean gap), so it is an error only when the feature is also
    discrete (integer values, at most sqrt(n) of them: a code of the label) or a row identifier
    (integers, one per row, filling a contiguous range), and info otherwise. A row identifier
    that does not predict is info.
    """
    sf = single_feature(ds, splits)
    if sf is None:
        return []
    findings: list[Finding] = []
    for j in np.argsort(-sf.low, kind="stable"):
        name = ds.feature_names[j]
        xf = ds.X[sf.fit_rows, j].astype(np.float64)
        evidence: dict[str, Any] = {"column": name, "balanced_accuracy": float(sf.acc[j]),
                                    "lower_bound": float(sf.low[j]), "threshold": sf.target,
                                    "chance": sf.chance, "heldout_rows": sf.heldout_rows}
        ident = _is_identifier(ds.X[:, j], xf)
        if sf.low[j] < sf.target:
            if ident:
                findings.append(make_finding(
                    "leaking_feature", "info",
                    f"feature {name!r} looks like a row identifier (integers, one per row): it "
                    "carries no biology", dict(evidence, kind="identifier"),
                    fix="drop_column", advice=f"Drop it with --drop {name!r}."))
            continue
        strength = (sf.low[j] - sf.target) / max(1 - sf.target, 1e-12)
        n_values = len(np.unique(xf))
        discrete = _integer_valued(xf) and n_values <= np.sqrt(len(xf))
        if sf.n_classes >= 3 or discrete or ident:
            kind = "identifier" if ident else "code" if discrete else "separates_all"
            why = {"identifier": "a row identifier ordered with the label",
                   "code": f"a discrete code ({n_values} values) of the label",
                   "separates_all": f"it alone separates all {sf.n_classes} classes"}[kind]
            findings.append(make_finding(
                "leaking_feature", "error",
                f"feature {name!r} alone predicts the label with {sf.acc[j]:.1%} balanced "
                f"accuracy (chance {sf.chance:.0%}): {why}; scores using it cannot be trusted",
                dict(evidence, kind=kind, distinct_values=n_values), fix="drop_column",
                strength=strength,
                advice=f"Check how {name!r} was made; if it is derived from the label or the "
                       f"row order, drop it (--drop {name!r})."))
        else:
            findings.append(make_finding(
                "leaking_feature", "info",
                f"feature {name!r} alone separates the two classes ({sf.acc[j]:.1%} balanced "
                "accuracy), as a gating marker does; if it is not a measured marker, it leaks "
                "the label", dict(evidence, kind="marker", distinct_values=n_values),
                fix="drop_column", strength=strength))
    return findings
