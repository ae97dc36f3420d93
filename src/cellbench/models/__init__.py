"""The model registry. Importing this package registers every built-in model.

>>> from cellbench.models import MODELS, create_model
>>> "cnn1d-seed" in MODELS
True
>>> net = create_model("mlp", n_features=8, n_classes=3, width=16)
"""

from . import cnn1d, gbdt, image, linear, mlp  # noqa: F401  (registration happens at import)
from ._base import (
    MODELS,
    BaseModel,
    apply_init,
    class_weight_vector,
    count_parameters,
    create_model,
    model_arguments,
    register_model,
    uses_validation,
)
from .choice import TRAIN_SETTINGS, ModelChoice, parse_model, parse_models, parse_value, route
from .cnn1d import CytometryCNN
from .gbdt import LightGBMModel, XGBoostModel
from .linear import LDAModel, LogisticRegressionModel, MajorityClassifier
from .mlp import MLP, ResMLP

__all__ = [
    "MLP",
    "MODELS",
    "TRAIN_SETTINGS",
    "BaseModel",
    "CytometryCNN",
    "LDAModel",
    "LightGBMModel",
    "LogisticRegressionModel",
    "MajorityClassifier",
    "ModelChoice",
    "ResMLP",
    "XGBoostModel",
    "apply_init",
    "class_weight_vector",
    "count_parameters",
    "create_model",
    "model_arguments",
    "parse_model",
    "parse_models",
    "parse_value",
    "register_model",
    "route",
    "uses_validation",
]
