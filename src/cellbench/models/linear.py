"""Baselines every network must clear: majority class, logistic regression, LDA.

The fitted linear models are stored as their weight matrix and bias (exact for both:
``predict_proba = softmax(X W^T + b)``, or a sigmoid with one logit for two classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from .._spaces import CategoricalDist, FloatDist
from ..data.transforms import CHUNK_ROWS, LARGE_ROWS
from ._base import BaseModel, class_weight_vector, expand_proba, register_model, torch_softmax_rows

__all__ = ["LDAModel", "LogisticRegressionModel", "MajorityClassifier"]


@register_model("majority", input_kind="any", family="baseline")
class MajorityClassifier(BaseModel):
    """Majority class: predicts the training class frequencies for every row."""

    uses_validation = False

    def __init__(self, n_classes: int, random_state: int = 0, class_weight: Any = None):
        self.n_classes = n_classes
        self.class_weight = class_weight
        self.prior_ = np.full(n_classes, 1.0 / n_classes)

    def fit(self, X, y, X_val=None, y_val=None):
        counts = np.bincount(y, minlength=self.n_classes).astype(np.float64)
        weights = class_weight_vector(self.class_weight, y, self.n_classes)
        if weights is not None:
            counts = counts * weights
        self.prior_ = counts / counts.sum()
        return self

    def predict_proba(self, X):
        return np.tile(self.prior_, (len(X), 1))

    def get_state(self):
        return {"prior": self.prior_.tolist()}

    def set_state(self, state):
        self.prior_ = np.asarray(state["prior"], np.float64)

    @property
    def n_params(self):
        return 0


class _LinearSoftmax(BaseModel):
    """Shared fitted form of logistic regression and LDA."""

    def _store(self, coef: np.ndarray, intercept: np.ndarray, present: np.ndarray) -> None:
        self.coef_ = np.asarray(coef, np.float64)
        self.intercept_ = np.asarray(intercept, np.float64)
        self.present_ = np.asarray(present, np.int64)

    def predict_proba(self, X):
        z = np.asarray(X, np.float64) @ self.coef_.T + self.intercept_
        if self.coef_.shape[0] == 1:  # binary: one logit for the second class
            p = expit(z[:, 0])
            proba = np.stack([1 - p, p], axis=1)
        else:
            proba = torch_softmax_rows(z)
        return expand_proba(proba, self.present_, self.n_classes)

    def get_state(self):
        return {"coef": self.coef_.tolist(), "intercept": self.intercept_.tolist(),
                "present": self.present_.tolist()}

    def set_state(self, state: Mapping[str, Any]):
        self._store(np.asarray(state["coef"]), np.asarray(state["intercept"]),
                    np.asarray(state["present"]))

    @property
    def n_params(self):
        return int(self.coef_.size + self.intercept_.size)


@register_model("logreg", input_kind="any", family="baseline",
                search_space={"C": FloatDist(1e-4, 1e2, log=True)})
class LogisticRegressionModel(_LinearSoftmax):
    """Multinomial logistic regression (scikit-learn, L-BFGS)."""

    uses_validation = False

    def __init__(self, n_classes: int, random_state: int = 0, class_weight: Any = None,
                 C: float = 1.0, max_iter: int = 1000):
        self.n_classes = n_classes
        self.class_weight = class_weight
        self.model = LogisticRegression(C=C, max_iter=max_iter, random_state=random_state)

    def fit(self, X, y, X_val=None, y_val=None):
        weights = class_weight_vector(self.class_weight, y, self.n_classes)
        self.model.fit(X, y, sample_weight=None if weights is None else weights[y])
        self._store(self.model.coef_, self.model.intercept_, self.model.classes_)
        return self


@register_model("lda", input_kind="tabular", family="baseline",
                search_space={"shrinkage": CategoricalDist((None, 0.01, 0.1, 0.5))})
class LDAModel(_LinearSoftmax):
    """Linear discriminant analysis (the published CyTOF baseline).

    Class weights scale the class priors (``'balanced'``: equal priors).
    """

    uses_validation = False
    streams_rows = True  # by moments, without shrinkage; with it sklearn gets an array

    def __init__(self, n_classes: int, random_state: int = 0, class_weight: Any = None,
                 solver: str = "svd", shrinkage: float | None = None):
        self.n_classes = n_classes
        self.class_weight = class_weight
        self.solver = solver if shrinkage is None else "lsqr"
        self.shrinkage = shrinkage

    def fit(self, X, y, X_val=None, y_val=None):
        present = np.unique(y)
        weights = class_weight_vector(self.class_weight, y, self.n_classes)
        priors = None
        if weights is not None:
            mass = np.bincount(y, minlength=self.n_classes)[present] * weights[present]
            priors = mass / mass.sum()
        if len(X) > LARGE_ROWS and self.solver == "svd":
            self._fit_by_moments(X, y, present, priors)
            return self
        model = LinearDiscriminantAnalysis(solver=self.solver, shrinkage=self.shrinkage,
                                           priors=priors)
        model.fit(X, y)
        self._store(model.coef_, model.intercept_, model.classes_)
        return self

    def _fit_by_moments(self, X: np.ndarray, y: np.ndarray, present: np.ndarray,
                        priors: np.ndarray | None) -> None:
        """LDA of a large table from its class means and within-class scatter, summed in
        float64 a chunk of rows at a time: memory stays a chunk, where the SVD solver copies
        the rows several times. The discriminant is the least-squares solver's (pooled
        covariance ``sum_k prior_k cov_k``), equal to the SVD solver's for a full-rank
        covariance up to rounding."""
        code = np.full(self.n_classes, -1)
        code[present] = np.arange(len(present))
        counts = np.bincount(y, minlength=self.n_classes)[present].astype(np.float64)
        d = X.shape[1]

        def chunks():
            for start in range(0, len(X), CHUNK_ROWS):
                yield (np.asarray(X[start:start + CHUNK_ROWS], np.float64),
                       code[y[start:start + CHUNK_ROWS]])

        sums = np.zeros((len(present), d))
        for Z, k in chunks():
            for j in range(len(present)):
                sums[j] += Z[k == j].sum(axis=0)
        means = sums / counts[:, None]
        scatter = np.zeros((len(present), d, d))
        for Z, k in chunks():
            for j in range(len(present)):
                D = Z[k == j] - means[j]
                scatter[j] += D.T @ D
        prior = counts / counts.sum() if priors is None else np.asarray(priors, np.float64)
        cov = np.einsum("k,kij->ij", prior, scatter / counts[:, None, None])
        coef = np.linalg.lstsq(cov, means.T, rcond=None)[0].T
        intercept = -0.5 * np.einsum("kd,kd->k", means, coef) + np.log(prior)
        self._store(coef, intercept, present)
