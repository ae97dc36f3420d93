"""Feature preprocessing fitted on the training part only, saved with the model.

Steps run in the given order:

``arcsinh``
    ``asinh(x / cofactor)`` per channel: the field's variance-stabilising transform
    (cofactor 5 for mass cytometry, 150 for flow cytometry; per-channel overrides).
``standardize``
    Subtract the training mean, divide by the training standard deviation.
``quantile``
    Map each feature through its training quantiles onto a standard normal.

>>> import numpy as np
>>> X = np.array([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]], dtype=np.float32)
>>> pre = Preprocessor(("standardize",)).fit(X, ["a", "b"])
>>> [round(float(v), 3) for v in pre.transform(X)[:, 0]]
[-1.225, 0.0, 1.225]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri

from .._config import TRANSFORMS
from ..exceptions import InvalidParameterError, NotFittedError

__all__ = ["Preprocessor"]

N_QUANTILES = 1000


class Preprocessor:
    """Fit-on-train feature transform for tables.

    Parameters
    ----------
    steps : sequence of {"arcsinh", "standardize", "quantile"}
        Applied in order. An empty sequence leaves values unchanged.
    cofactor : float
        arcsinh cofactor for channels without their own.
    cofactors : mapping of str to float
        Per-channel arcsinh cofactors by feature name (or alias).
    aliases : mapping of str to str
        Other names of features (FCS ``$PnS`` → ``$PnN``), so cofactors can name markers.

    Attributes
    ----------
    feature_names_ : list of str
    cofactors_ : ndarray
    mean_, scale_ : ndarray
    quantiles_ : ndarray of shape (N_QUANTILES, n_features)
    """

    def __init__(self, steps: Sequence[str] = ("standardize",), cofactor: float = 5.0,
                 cofactors: Mapping[str, float] | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
        unknown = [s for s in steps if s not in TRANSFORMS]
        if unknown:
            raise InvalidParameterError(
                f"transform steps must be among {', '.join(TRANSFORMS)}; got {unknown}."
            )
        if not cofactor > 0:
            raise InvalidParameterError(f"cofactor must be > 0; got {cofactor!r}.")
        self.steps = tuple(steps)
        self.cofactor = float(cofactor)
        self.cofactors = dict(cofactors or {})
        self.aliases = dict(aliases or {})
        self.fitted_ = False

    def fit(self, X: np.ndarray, feature_names: Sequence[str]) -> Preprocessor:
        """Learn the statistics of each step from training rows ``X``."""
        X = np.asarray(X, dtype=np.float32)
        names = list(feature_names)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise InvalidParameterError(
                f"X must be 2-D with {len(names)} columns (one per feature name); got shape "
                f"{X.shape}."
            )
        self.feature_names_ = names
        cof = np.full(len(names), self.cofactor, dtype=np.float32)
        for key, value in self.cofactors.items():
            name = self.aliases.get(key, key)
            if name not in names:
                raise InvalidParameterError(
                    f"cofactor channel must be a feature; got {key!r}. Features: "
                    f"{', '.join(names[:12])}."
                )
            if not value > 0:
                raise InvalidParameterError(f"cofactor for {key!r} must be > 0; got {value!r}.")
            cof[names.index(name)] = value
        self.cofactors_ = cof
        self.mean_ = np.zeros(len(names), np.float32)
        self.scale_ = np.ones(len(names), np.float32)
        self.quantiles_ = np.zeros((0, len(names)), np.float32)
        Z = X
        for step in self.steps:
            if step == "standardize":
                self.mean_ = Z.mean(axis=0, dtype=np.float64).astype(np.float32)
                std = Z.std(axis=0, dtype=np.float64).astype(np.float32)
                self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
            elif step == "quantile":
                levels = np.linspace(0, 1, min(N_QUANTILES, max(len(Z), 2)))
                self.quantiles_ = np.quantile(Z, levels, axis=0).astype(np.float32)
            Z = self._apply(step, Z)
        self.fitted_ = True
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted steps; returns float32."""
        if not self.fitted_:
            raise NotFittedError("Preprocessor must be fitted before transform; call fit(X) "
                                 "on the training rows first.")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names_):
            names = ", ".join(self.feature_names_[:8])
            more = ", ..." if len(self.feature_names_) > 8 else ""
            raise InvalidParameterError(
                f"X must have {len(self.feature_names_)} columns ({names}{more}); got shape "
                f"{X.shape}."
            )
        for step in self.steps:
            X = self._apply(step, X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def fit_transform(self, X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        return self.fit(X, feature_names).transform(X)

    def _apply(self, step: str, X: np.ndarray) -> np.ndarray:
        if step == "arcsinh":
            return np.arcsinh(X / self.cofactors_)
        if step == "standardize":
            return (X - self.mean_) / self.scale_
        # quantile: training CDF, then the normal quantile function; kept off the infinite ends
        n_levels = self.quantiles_.shape[0]
        levels = np.linspace(0, 1, n_levels)
        out = np.empty_like(X, dtype=np.float32)
        for j in range(X.shape[1]):
            q = self.quantiles_[:, j]
            # average of left/right interpolation handles repeated quantiles (ties)
            up = np.interp(X[:, j], q, levels)
            down = -np.interp(-X[:, j], -q[::-1], -levels[::-1])
            out[:, j] = 0.5 * (up + down)
        eps = 1e-7
        return ndtri(np.clip(out, eps, 1 - eps)).astype(np.float32)

    # -- persistence: plain lists, so checkpoints load with torch.load(weights_only=True) ----
    def state_dict(self) -> dict[str, Any]:
        if not self.fitted_:
            raise NotFittedError("Preprocessor must be fitted before it can be saved.")
        return {
            "steps": list(self.steps),
            "cofactor": self.cofactor,
            "cofactors": dict(self.cofactors),
            "feature_names": list(self.feature_names_),
            "cofactors_": self.cofactors_.tolist(),
            "mean_": self.mean_.tolist(),
            "scale_": self.scale_.tolist(),
            "quantiles_": self.quantiles_.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Preprocessor:
        pre = cls(state["steps"], state["cofactor"], state["cofactors"])
        pre.feature_names_ = list(state["feature_names"])
        d = len(pre.feature_names_)
        pre.cofactors_ = np.asarray(state["cofactors_"], np.float32)
        pre.mean_ = np.asarray(state["mean_"], np.float32)
        pre.scale_ = np.asarray(state["scale_"], np.float32)
        pre.quantiles_ = np.asarray(state["quantiles_"], np.float32).reshape(-1, d)
        pre.fitted_ = True
        return pre

    def __repr__(self) -> str:
        return f"Preprocessor(steps={self.steps!r}, cofactor={self.cofactor:g})"
