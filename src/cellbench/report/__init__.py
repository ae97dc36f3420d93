"""Run reports: the terminal's tables, PNG plots, and one self-contained HTML page per run."""

from .html import build_report
from .plots import plot_comparison, plot_confusion, plot_curves

__all__ = ["build_report", "plot_comparison", "plot_confusion", "plot_curves"]
