"""Training: the engine loop, callbacks, optimizers, and fitting any registry model."""

from .callbacks import Callback, Checkpoint, EarlyStopping, ProgressBar
from .engine import History, TrainState, fit, predict_logits
from .optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_schedule
from .trainer import FittedModel, load_model, train_model

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FittedModel",
    "History",
    "ProgressBar",
    "TrainState",
    "build_optimizer",
    "build_schedule",
    "fit",
    "load_model",
    "predict_logits",
    "train_model",
]
