"""Figures for run directories: learning curves, confusion matrices, model comparisons.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state, no backend
switch) and saved atomically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .._utils import atomic_path

__all__ = ["plot_comparison", "plot_confusion", "plot_curves", "plot_effects",
           "plot_gradient_flow", "plot_lr_range"]

COLORS = {"running": "#9aa5b1", "train": "#1f77b4", "valid": "#d62728"}
LABELS = {"running": "train, running (dropout/augmentation on)",
          "train": "train, eval mode", "valid": "validation"}


def _literal(fn: Callable[..., Path]) -> Callable[..., Path]:
    """Draw with every text literal: class names, model labels and paths come from the user,
    and a ``$`` in them must not start mathtext (``$\\foo{x}$ cells`` would not parse)."""

    @functools.wraps(fn)
    def draw(*args: Any, **kwargs: Any) -> Path:
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)

    return draw


def _save(fig: Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return Path(path)


@_literal
def plot_curves(histories: Sequence[Sequence[Mapping[str, float]]] | Sequence[Mapping[str, Any]],
                path: str | Path, title: str = "", best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch: running train, eval-mode train and validation.

    ``histories`` is one history (a list of epoch records) or several (repeated seeds), in
    which case the mean is drawn with a band from the lowest to the highest run.
    """
    if histories and isinstance(histories[0], Mapping):
        histories = [histories]  # type: ignore[list-item]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split in ("running", "train", "valid"):
            key = f"{split}_{metric}"
            runs = [[r[key] for r in h if key in r] for h in histories]
            runs = [r for r in runs if r]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            values = np.array([r[:length] for r in runs], dtype=np.float64)
            epochs = np.arange(1, length + 1)
            style = "--" if split == "running" else "-"
            label = LABELS[split] + (f" (mean of {len(runs)})" if len(runs) > 1 else "")
            ax.plot(epochs, values.mean(0), style, color=COLORS[split], label=label, lw=1.6)
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=COLORS[split],
                                alpha=0.15, lw=0)
        if best_epoch:
            ax.axvline(best_epoch, color="#555", lw=0.8, ls=":")
            ax.text(best_epoch, ax.get_ylim()[1], " kept", va="top", fontsize=8, color="#555")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "learning curves", fontsize=11)
    fig.text(0.5, -0.04, "A validation curve above the running train curve is expected with "
             "dropout: compare it with the eval-mode train curve.", ha="center", fontsize=8,
             color="#555")
    return _save(fig, path)


@_literal
def plot_confusion(counts: Sequence[Sequence[int]], labels: Sequence[Any], path: str | Path,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix with the counts written in each cell."""
    cm = np.asarray(counts, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(labels)
    size = max(3.5, 0.6 * k + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    names = [str(lab) for lab in labels]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center",
                        fontsize=7, color="white" if norm[i, j] > 0.6 else "black")
    ax.set_title(title or "confusion matrix", fontsize=10)
    return _save(fig, path)


@_literal
def plot_comparison(rows: Sequence[Mapping[str, Any]], path: str | Path,
                    metric: str = "accuracy", title: str = "",
                    references: Sequence[str] = ("majority",)) -> Path:
    """One point per model with its confidence interval, best at the top.

    Each row needs ``model`` and ``metric`` -> ``{"value", "ci"}``. Models named in
    ``references`` (baselines such as the majority class) are drawn as a dashed line when
    they sit far below the rest, so they do not squash the scale of the models that matter.
    """
    rows = sorted((r for r in rows if r.get(metric) and r[metric].get("value") is not None),
                  key=lambda r: r[metric]["value"])
    points = [r for r in rows if r["model"] not in references] or rows
    lines = [r for r in rows if r not in points]
    lows = [r[metric]["ci"][0] for r in points]
    highs = [r[metric]["ci"][1] for r in points]
    span = max(max(highs) - min(lows), 1e-3)
    left, right = min(lows) - 0.25 * span, max(highs) + 0.35 * span
    fig = Figure(figsize=(7, 0.45 * len(points) + 1.6))
    ax = fig.subplots()
    for i, row in enumerate(points):
        value = row[metric]["value"]
        lo, hi = row[metric]["ci"]
        # max(..., 0): a Wilson bound of 0.9999999999999999 under an accuracy of 1.0
        ax.errorbar(value, i, xerr=[[max(value - lo, 0)], [max(hi - value, 0)]], fmt="o",
                    color="#1f77b4", capsize=3)
        ax.text(hi, i, f"  {value:.4f}", va="center", fontsize=8)
    notes = []
    for row in lines:
        value = row[metric]["value"]
        if left <= value <= right:
            ax.axvline(value, color="#888", ls="--", lw=1)
            ax.text(value, len(points) - 0.5, f" {row['model']}", fontsize=8, color="#555")
        else:
            notes.append(f"{row['model']}: {value:.4f}")
    ax.set_xlim(left, right)
    ax.set_yticks(range(len(points)), [r["model"] for r in points])
    label = f"{metric.replace('_', ' ')} (95% CI)"
    ax.set_xlabel(label + (f"; off scale: {', '.join(notes)}" if notes else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"models compared on {metric.replace('_', ' ')}", fontsize=10)
    return _save(fig, path)


@_literal
def plot_effects(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Paired differences from the base configuration with their CIs (points of accuracy)."""
    rows = [r for r in rows if "difference" in r]
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1.6))
    ax = fig.subplots()
    for i, row in enumerate(rows):
        d = row["difference"] * 100
        lo, hi = row["ci"][0] * 100, row["ci"][1] * 100
        significant = row.get("p_adjusted", 1) < 0.05
        ax.errorbar(d, i, xerr=[[max(d - lo, 0)], [max(hi - d, 0)]], fmt="o", capsize=3,
                    color="#d62728" if significant else "#1f77b4")
        ax.text(hi, i, f"  p={row.get('p_adjusted', float('nan')):.2g}", va="center", fontsize=8)
    ax.axvline(0, color="#555", lw=1)
    ax.set_yticks(range(len(rows)), [r["config"] for r in rows])
    ax.set_xlabel("difference from base, accuracy points (95% CI); red: p < 0.05 after Holm")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "ablation", fontsize=10)
    return _save(fig, path)


def plot_lr_range(sweep: Mapping[str, Any], path: str | Path, lr: float | None = None) -> Path:
    """The LR range test: smoothed loss per learning rate of every sweep, the suggestion,
    fastai's valley and the learning rate in use (``sweep`` is the probe's ``to_dict``)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    lrs = np.asarray(sweep["lr"], dtype=float)
    for i, loss in enumerate(sweep["centred_loss"]):
        ax.plot(lrs[:len(loss)], loss, color="#1f77b4", alpha=0.9 if i == 0 else 0.35, lw=1.2,
                label="loss, smoothed" if i == 0 else None)
    marks = [("suggestion", sweep.get("suggestion"), "#009e73", "-"),
             ("fastai valley", sweep.get("valley"), "#e69f00", "--"),
             ("your learning rate", lr, "#d62728", ":")]
    for label, value, color, style in marks:
        if value is not None and np.isfinite(value):
            ax.axvline(value, color=color, ls=style, lw=1.2, label=f"{label} {value:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"LR range test, {sweep.get('optimizer', '')}, "
                 f"{len(sweep['centred_loss'])} sweeps", fontsize=10)
    return _save(fig, path)


def plot_gradient_flow(flow: Mapping[str, Any], path: str | Path) -> Path:
    """Median gradient norm per layer (log scale) and the dead-unit fraction per activation,
    over the first steps of training (``flow`` is the probe's ``to_dict``)."""
    fig = Figure(figsize=(11, 4))
    ax, bx = fig.subplots(1, 2)
    names = list(flow["layers"])
    grads = np.asarray(flow["median_grad_norm"], dtype=float)
    ax.bar(range(len(names)), np.where(grads > 0, grads, np.nan), color="#0072b2")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("gradient norm, median over steps (log)")
    ax.set_title("gradient flow, input (left) to output (right)", fontsize=10)
    acts = list(flow["activations"])
    dead = np.asarray(flow["median_dead_fraction"], dtype=float)
    bx.bar(range(len(acts)), dead * 100, color="#d55e00")
    bx.set_ylim(0, 100)
    bx.set_xticks(range(len(acts)), acts, rotation=60, ha="right", fontsize=7)
    bx.set_ylabel("units passing no signal (%)")
    bx.set_title("dead units per activation", fontsize=10)
    for a in (ax, bx):
        a.grid(axis="y", alpha=0.3)
    return _save(fig, path)
