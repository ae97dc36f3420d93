"""Run reports: plots now; the HTML report builds on them."""

from .plots import plot_comparison, plot_confusion, plot_curves

__all__ = ["plot_comparison", "plot_confusion", "plot_curves"]
