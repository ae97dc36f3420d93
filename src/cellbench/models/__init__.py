"""The model registry. Importing this package registers every built-in model.

>>> from cellbench.models import MODELS, create_model
>>> "cnn1d-seed" in MODELS
True
>>> net = create_model("mlp", n_features=8, n_classes=3, width=16)
"""

# registration happens at import
from . import cnn1d, gbdt, image, linear, mlp, tabular_nets  # noqa: F401
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
from .ensemble import SeedEnsemble, ensemble_log_proba, member_seed
from .gbdt import LightGBMModel, XGBoostModel
from .linear import LDAModel, LogisticRegressionModel, MajorityClassifier
from .mlp import MLP, ResMLP
from .tabular_nets import MLPPLR, TabM

__all__ = [
    "MLP",
    "MLPPLR",
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
    "SeedEnsemble",
    "TabM",
    "XGBoostModel",
    "apply_init",
    "class_weight_vector",
    "count_parameters",
    "create_model",
    "ensemble_log_proba",
    "member_seed",
    "model_arguments",
    "parse_model",
    "parse_models",
    "parse_value",
    "register_model",
    "route",
    "uses_validation",
]
