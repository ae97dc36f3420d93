"""The one object every loader produces and every later step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

__all__ = ["Dataset"]


@dataclass
class Dataset:
    """Features (or images), integer labels, and optional groups and given split.

    Attributes
    ----------
    X : ndarray
        ``(n, d)`` float32 for tables; ``(n, C, H, W)`` uint8/uint16/float32 for images.
    y : ndarray of int64, shape (n,)
        Class codes ``0 .. n_classes - 1``; ``classes[y]`` gives the original labels.
    classes : list
        Original label values, sorted, one per code.
    feature_names : list of str
        Table column names (FCS: ``$PnN``); empty for images.
    groups : ndarray or None
        Patient/sample id per row. Splits never put one group in two parts.
    split : ndarray of str or None
        A given split per row (``"train"``, ``"val"``, ``"test"``), used as is.
    aliases : dict
        Other names of features (FCS ``$PnS`` marker names → ``$PnN``).
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[Any]
    feature_names: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    split: np.ndarray | None = None
    target: str = "label"
    group_name: str | None = None
    kind: Literal["table", "image"] = "table"
    source: str = ""
    aliases: dict[str, str] = field(default_factory=dict)
    cytometry: str | None = None  # 'mass' / 'flow' when known (FCS $CYT), else None
    issues: list[Any] = field(default_factory=list)  # DataIssue records found while loading
    drawn: dict[str, Any] | None = None  # what --cells-per-sample kept (cells before/after)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.X.shape[1:]))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def class_counts(self) -> dict[Any, int]:
        counts = np.bincount(self.y, minlength=self.n_classes)
        return {c: int(k) for c, k in zip(self.classes, counts, strict=True)}

    def subset(self, index: np.ndarray) -> Dataset:
        """Rows ``index`` (class list kept, so codes stay comparable)."""
        return replace(
            self,
            X=self.X[index],
            y=self.y[index],
            groups=None if self.groups is None else self.groups[index],
            split=None if self.split is None else self.split[index],
        )

    def describe(self) -> str:
        """One line: size, classes, groups."""
        items = list(self.class_counts.items())
        counts = ", ".join(f"{c}: {n}" for c, n in items[:12])
        counts += f" and {len(items) - 12} more" if len(items) > 12 else ""
        what = "images" if self.kind == "image" else "cells"
        text = f"{self.n_samples} {what}"
        if self.kind == "table":
            text += f" x {self.n_features} features"
        else:
            text += " of " + "x".join(str(s) for s in self.X.shape[1:])
        text += f"; {self.n_classes} classes ({counts})"
        if self.groups is not None:
            text += f"; {len(np.unique(self.groups))} groups ({self.group_name})"
        return text
