"""cellbench: train, compare, diagnose and improve classifiers for cell data.

>>> import cellbench
>>> "cnn1d-seed" in cellbench.list_models()
True
"""

from ._config import DataConfig, RunConfig, SplitConfig, TrainConfig, load_config
from ._version import __version__
from .data import Dataset, from_arrays, load_table, make_splits
from .estimator import CellbenchClassifier
from .evaluate import evaluate_predictions
from .exceptions import (
    CellbenchError,
    CellbenchWarning,
    DataError,
    DataLeakageError,
    InvalidParameterError,
    NotFittedError,
)
from .experiment.doctor import doctor
from .models import MODELS, create_model
from .train import FittedModel, load_model, train_model


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``."""
    return MODELS.list(pattern)


__all__ = [
    "MODELS",
    "CellbenchClassifier",
    "CellbenchError",
    "CellbenchWarning",
    "DataConfig",
    "DataError",
    "DataLeakageError",
    "Dataset",
    "FittedModel",
    "InvalidParameterError",
    "NotFittedError",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
    "__version__",
    "create_model",
    "doctor",
    "evaluate_predictions",
    "from_arrays",
    "list_models",
    "load_config",
    "load_model",
    "load_table",
    "make_splits",
    "train_model",
]
