"""Tiny synthetic data (and a simulated Ctrl-C) for tests and benchmarks (a module of its
own, so any test file can import it: ``conftest`` modules share one name across folders)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellbench.train import Callback

__all__ = ["Interrupt", "make_table"]


def make_table(n: int = 300, n_features: int = 12, n_classes: int = 3, n_donors: int = 12,
               seed: int = 0, separation: float = 2.0) -> pd.DataFrame:
    """Cells whose class shifts a few markers; donors add a per-donor offset."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    donors = np.arange(n) % n_donors
    X = rng.normal(size=(n, n_features))
    X[:, :n_classes] += separation * np.eye(n_classes)[y]
    X += rng.normal(scale=0.2, size=(n_donors, n_features))[donors]
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"CD{i + 1}" for i in range(n_features)])
    frame["label"] = np.array([f"type{k}" for k in range(n_classes)])[y]
    frame["donor"] = [f"D{d:02d}" for d in donors]
    return frame



class Interrupt(Callback):
    """A training callback that simulates Ctrl-C after the checkpoint of epoch ``at``."""

    order = 100

    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt
