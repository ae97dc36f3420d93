"""Metrics with their n and a 95 % confidence interval, at cell and patient level.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); proba = np.array([[.9, .1], [.4, .6], [.2, .8], [.3, .7]])
>>> m = evaluate_predictions(y, proba, ["a", "b"])
>>> m["n"], m["accuracy"]["value"]
(4, 0.75)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._utils import to_builtin
from .stats import confusion_bootstrap, delong_ci, wilson_ci

__all__ = ["METRICS", "confusion_matrix", "evaluate_predictions", "group_level"]

#: reported metrics (higher is better for all of them)
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
FEW_GROUPS = 10


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]``."""
    return np.bincount(np.asarray(y) * n_classes + np.asarray(pred),
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _balanced_accuracy(cms: np.ndarray) -> np.ndarray:
    """Mean recall over classes present; works on ``(K, K)`` or ``(B, K, K)``."""
    cms = np.asarray(cms, np.float64)
    support = cms.sum(axis=-1)
    diag = np.diagonal(cms, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, diag / support, np.nan)
    return np.nanmean(recall, axis=-1)


def _macro_f1(cms: np.ndarray) -> np.ndarray:
    """Mean F1 over classes present in truth or prediction (scikit-learn's macro average)."""
    cms = np.asarray(cms, np.float64)
    diag = np.diagonal(cms, axis1=-2, axis2=-1)
    support = cms.sum(axis=-1)
    predicted = cms.sum(axis=-2)
    denom = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * diag / denom, np.nan)
    return np.nanmean(f1, axis=-1)


def _value(value: float, ci: tuple[float, float], method: str) -> dict[str, Any]:
    return {"value": float(value), "ci": [float(ci[0]), float(ci[1])], "method": method}


def evaluate_predictions(y: np.ndarray, proba: np.ndarray, classes: Sequence[Any], *,
                         groups: np.ndarray | None = None, level: float = 0.95,
                         n_boot: int = 2000,
                         seed: int = 0) -> dict[str, Any]:
    """All reported metrics for one set of predictions.

    Parameters
    ----------
    y : array of int
        True class codes.
    proba : array, shape (n, n_classes)
        Predicted probabilities.
    classes : sequence
        Label of each code.
    groups : array, optional
        Patient/sample of each row: adds patient-level results (see :func:`group_level`).

    Returns
    -------
    dict
        ``n``; ``accuracy`` (Wilson CI), ``balanced_accuracy`` and ``macro_f1`` (bootstrap
        over the confusion matrix), ``auroc`` (DeLong; binary or macro one-vs-rest);
        ``confusion_matrix``; ``per_class``; and ``groups`` when given.
    """
    y = np.asarray(y, np.int64)
    proba = np.asarray(proba, np.float64)
    n_classes = len(classes)
    pred = proba.argmax(axis=1)
    cm = confusion_matrix(y, pred, n_classes)
    n = len(y)
    correct = int(np.trace(cm))
    out: dict[str, Any] = {"n": n}
    out["accuracy"] = _value(correct / n if n else np.nan, wilson_ci(correct, n, level),
                             "wilson")
    out["balanced_accuracy"] = _value(
        _balanced_accuracy(cm), confusion_bootstrap(cm, _balanced_accuracy, n_boot, level, seed,
                                                    stratified=True),
        f"bootstrap within classes ({n_boot} resamples)")
    out["macro_f1"] = _value(
        _macro_f1(cm), confusion_bootstrap(cm, _macro_f1, n_boot, level, seed),
        f"bootstrap ({n_boot} resamples)")
    present = np.unique(y)
    if len(present) >= 2:
        auc, lo, hi = delong_ci(y, proba, level)
        out["auroc"] = _value(auc, (lo, hi), "DeLong" if n_classes == 2
                              else "DeLong, macro one-vs-rest")
    else:
        out["auroc"] = {"value": None, "ci": [None, None],
                        "method": "undefined: only one class in these rows"}
    out["confusion_matrix"] = {"labels": to_builtin(list(classes)), "counts": cm.tolist()}
    support = cm.sum(1)
    predicted = cm.sum(0)
    diag = np.diag(cm)
    out["per_class"] = [
        {"label": to_builtin(c), "support": int(support[k]),
         "precision": float(diag[k] / predicted[k]) if predicted[k] else None,
         "recall": float(diag[k] / support[k]) if support[k] else None,
         "f1": float(2 * diag[k] / (support[k] + predicted[k]))
         if support[k] + predicted[k] else None}
        for k, c in enumerate(classes)
    ]
    if groups is not None:
        out["groups"] = group_level(y, proba, groups, classes, level)
    return out


def group_level(y: np.ndarray, proba: np.ndarray, groups: np.ndarray,
                classes: Sequence[Any], level: float = 0.95) -> dict[str, Any]:
    """Patient/sample-level results: mean cell probabilities per group decide its class.

    Applies when every group carries one label (e.g. healthy vs diseased donors). When labels
    vary within groups (cell types), only the per-group cell accuracy is reported.
    """
    ids, inv = np.unique(groups, return_inverse=True)
    n_groups = len(ids)
    correct = np.bincount(inv, weights=(proba.argmax(1) == y), minlength=n_groups)
    sizes = np.bincount(inv, minlength=n_groups)
    per_group = {str(g): {"n_cells": int(s), "cell_accuracy": float(c / s)}
                 for g, s, c in zip(ids, sizes, correct, strict=True)}
    labels_per_group = np.bincount(inv * len(classes) + y,
                                   minlength=n_groups * len(classes)).reshape(n_groups, -1)
    single = (labels_per_group > 0).sum(1) == 1
    out: dict[str, Any] = {"n_groups": int(n_groups), "per_group": per_group}
    accs = correct / np.maximum(sizes, 1)
    out["cell_accuracy_across_groups"] = {"mean": float(accs.mean()),
                                          "sd": float(accs.std(ddof=1)) if n_groups > 1 else None,
                                          "min": float(accs.min()), "max": float(accs.max())}
    if not single.all():
        out["applicable"] = False
        out["note"] = ("Labels vary within groups (cell-level labels such as cell types), so "
                       "groups are not classified as a whole; cell accuracy per group is shown.")
        return out
    mean_proba = np.stack([np.bincount(inv, weights=proba[:, k], minlength=n_groups)
                           for k in range(proba.shape[1])], axis=1) / sizes[:, None]
    truth = labels_per_group.argmax(1)
    pred = mean_proba.argmax(1)
    cm = confusion_matrix(truth, pred, len(classes))
    k = int(np.trace(cm))
    lo, hi = wilson_ci(k, n_groups, level)
    out.update({
        "applicable": True,
        "aggregation": "mean of cell probabilities per group",
        "accuracy": _value(k / n_groups, (lo, hi), "wilson"),
        "balanced_accuracy": float(_balanced_accuracy(cm)),
        "confusion_matrix": {"labels": to_builtin(list(classes)), "counts": cm.tolist()},
        "predictions": {str(g): {"true": to_builtin(classes[t]), "predicted":
                                 to_builtin(classes[p])}
                        for g, t, p in zip(ids, truth, pred, strict=True)},
    })
    if n_groups < FEW_GROUPS:
        out["caution"] = (
            f"Only {n_groups} patients/samples in these rows: group-level accuracy "
            f"{k}/{n_groups} has a 95% CI of [{lo:.0%}, {hi:.0%}]. That is too few to "
            "conclude anything about new patients; the cell-level numbers do not fix this, "
            "because cells of one patient are not independent."
        )
    return out
