"""Gradient-boosted trees: LightGBM (a dependency) and XGBoost (optional).

Both stop early on the validation part when one is given (50 rounds without improvement of
the validation log-loss), and store the fitted booster as text in the checkpoint.
``image-lgbm`` is LightGBM on intensity, shape and texture features computed from each image
(:class:`~cellbench.data.image_features.ImageFeatureExtractor`): the feature baseline for
images, as ``lightgbm`` is for tables.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .._spaces import FloatDist, IntDist
from .._utils import try_import
from ..data.image_features import ImageFeatureExtractor
from ._base import BaseModel, class_weight_vector, register_model

__all__ = ["ImageLightGBMModel", "LightGBMModel", "XGBoostModel"]

EARLY_STOPPING_ROUNDS = 50


def _sample_weights(class_weight: Any, y: np.ndarray, n_classes: int) -> np.ndarray | None:
    weights = class_weight_vector(class_weight, y, n_classes)
    return None if weights is None else weights[y]


#: below this many training rows LightGBM runs on one thread (n_jobs=0, the default)
SMALL_ROWS = 100_000


LIGHTGBM_SPACE = {
    "learning_rate": FloatDist(0.01, 0.3, log=True), "num_leaves": IntDist(8, 256, log=True),
    "min_child_samples": IntDist(5, 200, log=True), "feature_fraction": FloatDist(0.5, 1.0),
    "bagging_fraction": FloatDist(0.5, 1.0), "lambda_l2": FloatDist(1e-8, 10.0, log=True)}


@register_model("lightgbm", input_kind="tabular", family="gbdt", search_space=LIGHTGBM_SPACE)
class LightGBMModel(BaseModel):
    """LightGBM gradient boosting, early-stopped on the validation part."""

    def __init__(self, n_classes: int, random_state: int = 0, class_weight: Any = None,
                 n_estimators: int = 2000, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 20, feature_fraction: float = 1.0,
                 bagging_fraction: float = 1.0, lambda_l2: float = 0.0, n_jobs: int = 0):
        self.n_classes = n_classes
        self.random_state = random_state
        self.class_weight = class_weight
        self.n_estimators = n_estimators
        self.params = {
            "learning_rate": learning_rate, "num_leaves": num_leaves,
            "min_child_samples": min_child_samples, "feature_fraction": feature_fraction,
            "bagging_fraction": bagging_fraction, "bagging_freq": 1 if bagging_fraction < 1 else 0,
            "lambda_l2": lambda_l2, "num_threads": n_jobs,
        }
        self.best_iteration_ = 0

    def _objective(self) -> dict[str, Any]:
        if self.n_classes == 2:
            return {"objective": "binary", "metric": "binary_logloss"}
        return {"objective": "multiclass", "num_class": self.n_classes,
                "metric": "multi_logloss"}

    def fit(self, X, y, X_val=None, y_val=None):
        lgb = try_import("lightgbm", purpose="the 'lightgbm' model")
        params = {**self._objective(), **self.params, "seed": self.random_state,
                  "deterministic": True, "force_row_wise": True, "verbosity": -1}
        if not params["num_threads"] and len(X) < SMALL_ROWS:
            # LightGBM's OpenMP threads spin while they wait: on small tables one thread is as
            # fast alone and 20x faster beside other work on a 2-core machine (same trees)
            params["num_threads"] = 1
        weight = _sample_weights(self.class_weight, y, self.n_classes)
        train = lgb.Dataset(X, y, weight=weight, free_raw_data=True)
        callbacks, valid_sets = [], []
        if X_val is not None and len(X_val):
            valid_sets = [lgb.Dataset(X_val, y_val, reference=train)]
            callbacks.append(lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
            if self.on_iteration is not None:
                report = self.on_iteration

                def report_loss(env: Any) -> None:  # every 10 rounds: -(validation log-loss)
                    if (env.iteration + 1) % 10 == 0:
                        report(-float(env.evaluation_result_list[0][2]), env.iteration + 1)

                callbacks.append(report_loss)
        booster = lgb.train(params, train, num_boost_round=self.n_estimators,
                            valid_sets=valid_sets, callbacks=callbacks)
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self._set_booster(booster)
        return self

    def _set_booster(self, booster: Any) -> None:
        self.booster_ = booster
        self.model_str_ = booster.model_to_string(num_iteration=self.best_iteration_)

    def predict_proba(self, X):
        p = self.booster_.predict(np.asarray(X), num_iteration=self.best_iteration_)
        if self.n_classes == 2:
            p = np.stack([1 - p, p], axis=1)
        return np.asarray(p, np.float64)

    def get_state(self):
        return {"model": self.model_str_, "best_iteration": self.best_iteration_}

    def set_state(self, state):
        lgb = try_import("lightgbm", purpose="the 'lightgbm' model")
        self.best_iteration_ = int(state["best_iteration"])
        self.booster_ = lgb.Booster(model_str=state["model"])
        self.model_str_ = state["model"]

    @property
    def n_params(self):
        return sum(2 * int(k) - 1 for k in re.findall(r"^num_leaves=(\d+)$", self.model_str_,
                                                       flags=re.MULTILINE))

    def fit_info(self):
        return {"n_trees": self.best_iteration_ * (1 if self.n_classes == 2 else self.n_classes),
                "best_iteration": self.best_iteration_}


@register_model("image-lgbm", input_kind="image", family="gbdt", search_space=LIGHTGBM_SPACE)
class ImageLightGBMModel(LightGBMModel):
    """LightGBM on intensity, shape and texture features of each image (feature baseline).

    Takes the images as stored (``image_input = "raw"``) and computes the named features of
    :class:`~cellbench.data.image_features.ImageFeatureExtractor` (``levels`` grey levels
    for the texture, ``rings`` for the radial profile); the other arguments are
    :class:`LightGBMModel`'s. ``fit_info`` names the 10 features with the largest gain.
    """

    image_input = "raw"

    def __init__(self, n_classes: int, random_state: int = 0, class_weight: Any = None,
                 n_estimators: int = 2000, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 20, feature_fraction: float = 1.0,
                 bagging_fraction: float = 1.0, lambda_l2: float = 0.0, n_jobs: int = 0,
                 levels: int = 8, rings: int = 4):
        super().__init__(n_classes, random_state, class_weight, n_estimators, learning_rate,
                         num_leaves, min_child_samples, feature_fraction, bagging_fraction,
                         lambda_l2, n_jobs)
        self.extractor = ImageFeatureExtractor(levels=levels, rings=rings)
        self.feature_names_: list[str] = []

    def fit(self, X, y, X_val=None, y_val=None):
        self.feature_names_ = self.extractor.feature_names(np.asarray(X).shape[1])
        F_val = None if X_val is None or not len(X_val) else self.extractor.transform(X_val)
        return super().fit(self.extractor.transform(X), y, F_val, y_val)

    def predict_proba(self, X):
        return super().predict_proba(self.extractor.transform(X))

    def get_state(self):
        return {**super().get_state(), "feature_names": list(self.feature_names_)}

    def set_state(self, state):
        super().set_state(state)
        self.feature_names_ = [str(name) for name in state.get("feature_names", [])]

    def fit_info(self):
        gain = self.booster_.feature_importance("gain", iteration=self.best_iteration_)
        total = float(gain.sum()) or 1.0
        top = np.argsort(-gain, kind="stable")[:10]
        shares = {self.feature_names_[i]: round(float(gain[i]) / total, 4) for i in top}
        return {**super().fit_info(), "n_features": len(self.feature_names_),
                "top_features": {name: share for name, share in shares.items() if share > 0}}


@register_model("xgboost", input_kind="tabular", family="gbdt", search_space={
    "learning_rate": FloatDist(0.01, 0.3, log=True), "max_depth": IntDist(2, 10),
    "min_child_weight": FloatDist(0.5, 20, log=True), "subsample": FloatDist(0.5, 1.0),
    "colsample_bytree": FloatDist(0.5, 1.0), "reg_lambda": FloatDist(1e-3, 10, log=True)})
class XGBoostModel(BaseModel):
    """XGBoost gradient boosting (optional: ``pip install 'cellbench[xgboost]'``)."""

    def __init__(self, n_classes: int, random_state: int = 0, class_weight: Any = None,
                 n_estimators: int = 2000, learning_rate: float = 0.05, max_depth: int = 6,
                 min_child_weight: float = 1.0, subsample: float = 1.0,
                 colsample_bytree: float = 1.0, reg_lambda: float = 1.0, n_jobs: int = 0):
        self.n_classes = n_classes
        self.class_weight = class_weight
        self.n_estimators = n_estimators
        self.params = {"eta": learning_rate, "max_depth": max_depth,
                       "min_child_weight": min_child_weight, "subsample": subsample,
                       "colsample_bytree": colsample_bytree, "lambda": reg_lambda,
                       "seed": random_state, "tree_method": "hist"}
        if n_jobs:
            self.params["nthread"] = n_jobs
        self.best_iteration_ = 0

    def fit(self, X, y, X_val=None, y_val=None):
        xgb = try_import("xgboost", extra="xgboost", purpose="the 'xgboost' model")
        if self.n_classes == 2:
            obj = {"objective": "binary:logistic", "eval_metric": "logloss"}
        else:
            obj = {"objective": "multi:softprob", "num_class": self.n_classes,
                   "eval_metric": "mlogloss"}
        weight = _sample_weights(self.class_weight, y, self.n_classes)
        dtrain = xgb.DMatrix(X, label=y, weight=weight)
        evals, kwargs = [], {}
        if X_val is not None and len(X_val):
            evals = [(xgb.DMatrix(X_val, label=y_val), "valid")]
            kwargs["early_stopping_rounds"] = EARLY_STOPPING_ROUNDS
        booster = xgb.train({**self.params, **obj}, dtrain, self.n_estimators, evals=evals,
                            verbose_eval=False, **kwargs)
        best = getattr(booster, "best_iteration", None)
        self.best_iteration_ = int(best + 1 if best is not None else booster.num_boosted_rounds())
        self.booster_ = booster
        return self

    def predict_proba(self, X):
        xgb = try_import("xgboost", extra="xgboost", purpose="the 'xgboost' model")
        p = self.booster_.predict(xgb.DMatrix(np.asarray(X)),
                                  iteration_range=(0, self.best_iteration_))
        if self.n_classes == 2:
            p = np.stack([1 - p, p], axis=1)
        return np.asarray(p, np.float64)

    def get_state(self):
        return {"model": bytes(self.booster_.save_raw("json")),
                "best_iteration": self.best_iteration_}

    def set_state(self, state):
        xgb = try_import("xgboost", extra="xgboost", purpose="the 'xgboost' model")
        self.booster_ = xgb.Booster()
        self.booster_.load_model(bytearray(state["model"]))
        self.best_iteration_ = int(state["best_iteration"])

    @property
    def n_params(self):
        per_round = 1 if self.n_classes == 2 else self.n_classes
        dump = self.booster_.get_dump()[: self.best_iteration_ * per_round]
        return sum(len(tree.strip().splitlines()) for tree in dump)

    def fit_info(self):
        return {"best_iteration": self.best_iteration_}
