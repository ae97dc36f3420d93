"""Metrics with confidence intervals, and the statistics behind them."""

from .metrics import METRICS, confusion_matrix, evaluate_predictions, group_level
from .stats import confusion_bootstrap, delong_ci, percentile_ci, wilson_ci

__all__ = [
    "METRICS",
    "confusion_bootstrap",
    "confusion_matrix",
    "delong_ci",
    "evaluate_predictions",
    "group_level",
    "percentile_ci",
    "wilson_ci",
]
