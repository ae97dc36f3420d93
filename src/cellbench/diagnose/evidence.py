"""What the rules read about the user's setting: :class:`Evidence`, and the dropout rates of
a model's arguments. A setting is *hurt* when it failed, or some baseline or the reference
network beats it by a paired test by more than ``min_effect``; it is *stuck* when its
balanced accuracy's CI reaches chance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..evaluate.results import Comparisons, ModelResult

__all__ = ["Evidence", "Z", "dropout_rates"]

Z = 1.96  # two-sided 95 %


@dataclass
class Evidence:
    """What the rules read about the user's setting (the "patient")."""

    n_classes: int
    majority_share: float  # accuracy of always predicting the largest class
    user: ModelResult  # pooled test metrics and per-unit values of the user's setting
    histories: list[list[dict[str, float]]]  # per unit, the per-epoch records
    stop_reasons: list[str | None]
    max_epochs: int
    patience: int | None
    lr: float
    optimizer: str
    model_kwargs: Mapping[str, Any]  # resolved (preset defaults included)
    others: list[ModelResult] = field(default_factory=list)  # baselines and reference net
    vs_user: Comparisons | None = None  # every other model tested against the user's
    probes: Mapping[str, Any] = field(default_factory=dict)  # probe name -> result
    conv_on_table: bool = False
    column_order: Mapping[str, Any] | None = None  # {"permuted": [...], "seeds": [...]}
    alpha: float = 0.05
    min_effect: float = 0.005  # a smaller gap is not worth a warning, however significant
    unscaled: bool = False  # the data rules found inputs far from unit scale

    @property
    def chance(self) -> float:
        return 1.0 / self.n_classes

    def better_than_user(self) -> list[tuple[ModelResult, float, float]]:
        """Models significantly better than the user's: (model, difference, p adjusted)."""
        rows = self.vs_user.rows if self.vs_user else []
        by_label = {m.label: m for m in self.others}
        return [(by_label[r.model], r.difference, r.p_adjusted) for r in rows
                if r.model in by_label and r.difference > self.min_effect
                and r.p_adjusted < self.alpha]

    @property
    def hurt(self) -> bool:
        return bool(self.better_than_user()) or self.stuck

    @property
    def stuck(self) -> bool:
        """Training failed (diverged) or balanced accuracy's CI reaches chance (the setting
        predicts about one class)."""
        if getattr(self.user, "failed", None):
            return True
        test = self.user.test
        if test is None or not test.balanced_accuracy.known:
            return False
        lo, hi = test.balanced_accuracy.ci
        return lo is not None and lo <= self.chance + 0.5 * (hi - lo)

    def curve(self, key: str) -> list[np.ndarray]:
        return [np.array([r[key] for r in h if key in r], dtype=float) for h in self.histories]


def dropout_rates(model_kwargs: Mapping[str, Any]) -> list[float]:
    """Every dropout rate among a model's arguments (``dropout=0.5/0.9`` gives both)."""
    rates = []
    for key, value in model_kwargs.items():
        if "dropout" not in key:
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, int | float) and not isinstance(v, bool):
                rates.append(float(v))
    return rates
