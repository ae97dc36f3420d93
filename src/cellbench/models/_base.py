"""Model registry, the factory, and the contract of non-network models."""

from __future__ import annotations

import abc
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._registry import ModelSpec, Registry
from .._spaces import Dist
from .._value_checks import kind_of
from ..exceptions import InvalidParameterError

__all__ = ["CONTEXT_ARGS", "MODELS", "BaseModel", "apply_init", "check_argument_types",
           "class_weight_vector", "count_parameters", "create_model", "image_input",
           "model_arguments", "register_model", "uses_validation"]

MODELS: Registry[ModelSpec] = Registry(
    "model", hint="Run `cellbench models` to list all {n}."
)


def register_model(name: str, *, input_kind: str, family: str,
                   search_space: Mapping[str, Dist] | None = None,
                   defaults: Mapping[str, Any] | None = None, summary: str | None = None,
                   override: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register a model factory under ``name`` (timm's ``@register_model``)."""

    def deco(factory: Callable) -> Callable:
        doc = summary or (inspect.getdoc(factory) or "").split("\n")[0]
        MODELS.register(name, ModelSpec(name, factory, input_kind, family,  # type: ignore[arg-type]
                                        dict(defaults or {}), dict(search_space or {}), doc),
                        override=override)
        return factory

    return deco


class BaseModel(abc.ABC):
    """Contract of the models that fit themselves (baselines, gradient boosting).

    They see preprocessed numpy arrays and integer codes ``0 .. n_classes - 1``; their whole
    fitted state is plain data (:meth:`get_state`), so it lives in a ``weights_only`` checkpoint.
    """

    n_classes: int
    #: called as ``on_iteration(value, iteration)`` during boosting (tuning uses it to prune)
    on_iteration: Callable[[float, int], None] | None = None
    #: False for models that ignore ``X_val`` (no early stopping): jobs then fit them on the
    #: training and validation rows together instead of throwing the validation rows away
    uses_validation: bool = True
    #: True for models whose ``fit`` reads a large ``X`` (above ``LARGE_ROWS`` rows) a slice
    #: of rows at a time: jobs then hand them rows preprocessed on the fly
    #: (:class:`~cellbench.train.rows.LazyRows`) instead of a preprocessed copy
    streams_rows: bool = False
    #: what the model is given when it trains on images: ``"pixels"``, a table of downsampled,
    #: standardized pixels (:class:`~cellbench.data.transforms.PixelFeatures`), or ``"raw"``,
    #: the images ``(n, C, H, W)`` as stored, for a model that computes its own features
    image_input: str = "pixels"

    @abc.abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> BaseModel:
        """Fit on training rows; may use the validation rows for early stopping."""

    @abc.abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)``."""

    @abc.abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Fitted state as str/bytes/number/list/tensor values only."""

    @abc.abstractmethod
    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""

    @property
    @abc.abstractmethod
    def n_params(self) -> int:
        """Number of fitted parameters (tree models: number of tree nodes)."""

    def fit_info(self) -> dict[str, Any]:
        """Facts about the fit for the run record (e.g. trees used)."""
        return {}


#: arguments the task supplies to every model (not the user's to set per model)
CONTEXT_ARGS = frozenset({"n_classes", "n_features", "in_chans", "img_size", "random_state",
                          "class_weight", "cfg"})


def uses_validation(name: str) -> bool:
    """Whether model ``name`` uses a validation part (networks and boosting early-stop on it;
    the linear and majority baselines do not)."""
    return bool(getattr(MODELS.get(name).factory, "uses_validation", True))


def image_input(name: str) -> str:
    """What non-network model ``name`` is given on images (:attr:`BaseModel.image_input`)."""
    return str(getattr(MODELS.get(name).factory, "image_input", "pixels"))


def model_arguments(name: str) -> list[str]:
    """The arguments a user may set for model ``name`` (networks also take ``init``)."""
    spec = MODELS.get(name)
    args = [p for p in inspect.signature(spec.factory).parameters if p not in CONTEXT_ARGS]
    return [*args, "init"] if spec.family == "nn" else args


#: plain annotations of model arguments whose values are type-checked before the model is built
#: (annotations such as ``float | Sequence[float]`` are left to the model's own checks)
_ARGUMENT_KINDS = {"float": "a number", "float | None": "a number or None", "int": "an int",
                   "int | None": "an int or None", "bool": "true or false (on/off)"}


def _fits(value: Any, annotation: str) -> bool:
    if value is None:
        return annotation.endswith("| None")
    if isinstance(value, (bool, np.bool_)):
        return annotation == "bool"
    if annotation.startswith("int"):
        return isinstance(value, numbers.Integral)
    if annotation.startswith("float"):
        return isinstance(value, numbers.Real)
    return False


def check_argument_types(name: str, kwargs: Mapping[str, Any]) -> None:
    """Raise when an argument of model ``name`` has the wrong kind of value (``dropout=abc``),
    before the model's own code meets it as an internal ``TypeError``; unknown arguments and
    values in range are left to :func:`create_model` and the model."""
    spec = MODELS.get(name)
    params = inspect.signature(spec.factory).parameters
    problems = []
    for key, value in kwargs.items():
        param = params.get(key)
        annotation = param.annotation if param is not None else None
        if not isinstance(annotation, str) or annotation not in _ARGUMENT_KINDS:
            continue
        if not _fits(value, annotation):
            example = spec.defaults.get(key, param.default)
            problems.append(
                f"{key} must be {_ARGUMENT_KINDS[annotation]}; got {value!r} ({kind_of(value)})."
                + (f" E.g. {name}({key}={example})." if example is not inspect.Parameter.empty
                   and example is not None else "")
            )
    if problems:
        raise InvalidParameterError(
            (f"arguments of model {name!r}: " if len(problems) > 1 else "")
            + " ".join(problems))


def _accepts(factory: Callable, name: str) -> bool:
    params = inspect.signature(factory).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def create_model(name: str, *, n_classes: int, n_features: int | None = None,
                 in_chans: int | None = None, img_size: int | None = None,
                 random_state: int = 0,
                 class_weight: str | Mapping[Any, float] | None = None,
                 **kwargs: Any) -> nn.Module | BaseModel:
    """Build the registered model ``name`` for a task (timm's ``create_model``).

    ``kwargs`` are the model's own arguments (``width``, ``dropout``, ...), applied over the
    preset's defaults; ``None`` values are dropped. Networks also take ``init`` ("default",
    "kaiming", "xavier"). ``class_weight`` (non-network models; networks take it from the
    training config) is ``"balanced"``, a mapping class code -> weight, or None.
    """
    spec = MODELS.get(name)
    given = {k: v for k, v in kwargs.items() if v is not None}
    check_argument_types(name, given)
    kwargs = {**spec.defaults, **given}
    init = kwargs.pop("init", "default")
    context: dict[str, Any] = {"n_classes": n_classes}
    if spec.family == "nn":
        if spec.input_kind == "image":
            context.update(in_chans=in_chans, img_size=img_size)
        else:
            context["n_features"] = n_features
    else:
        context.update(random_state=random_state, class_weight=class_weight)
        if n_features is not None and _accepts(spec.factory, "n_features"):
            context["n_features"] = n_features
    unknown = [k for k in kwargs if not _accepts(spec.factory, k) or k in context]
    if unknown:
        valid = [p for p in model_arguments(name) if p != "init"]
        raise InvalidParameterError(
            f"model_kwargs for {name!r} must be among {', '.join(valid) or '(none)'}; got "
            f"{', '.join(repr(k) for k in unknown)}."
        )
    model = spec.factory(**context, **kwargs)
    if isinstance(model, nn.Module):
        apply_init(model, init)
    return model


def apply_init(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise conv and linear weights: ``default`` (PyTorch's), ``kaiming``, ``xavier``."""
    if scheme == "default":
        return model
    if scheme not in ("kaiming", "xavier"):
        raise InvalidParameterError(
            f"init must be 'default', 'kaiming' or 'xavier'; got {scheme!r}."
        )
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def count_parameters(model: nn.Module | BaseModel) -> int:
    """Trainable parameters of a network, or :attr:`BaseModel.n_params`."""
    if isinstance(model, nn.Module):
        return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    return int(model.n_params)


def expand_proba(proba: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """Place columns of classes seen in training into the full ``n_classes`` columns."""
    if proba.shape[1] == n_classes:
        return proba
    out = np.zeros((proba.shape[0], n_classes), dtype=proba.dtype)
    out[:, present] = proba
    return out


def class_weight_vector(class_weight: str | Mapping[Any, float] | None, y: np.ndarray,
                        n_classes: int, classes: Sequence[Any] | None = None) -> np.ndarray | None:
    """Per-class weights: None, ``"balanced"`` (``n / (n_present * count)``, scikit-learn's
    rule), or a mapping from class label (or code, when ``classes`` is None) to weight."""
    if class_weight is None:
        return None
    y = np.asarray(y)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InvalidParameterError(
                f"class_weight must be 'balanced', a mapping label -> weight, or None; got "
                f"{class_weight!r}."
            )
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        present = max(np.count_nonzero(counts), 1)
        return np.where(counts > 0, len(y) / (present * np.maximum(counts, 1)), 1.0)
    names = list(classes) if classes is not None else list(range(n_classes))
    lookup = {str(c): i for i, c in enumerate(names)}
    weights = np.ones(n_classes)
    for key, value in class_weight.items():
        if str(key) not in lookup:
            raise InvalidParameterError(
                f"class_weight keys must be class labels ({', '.join(map(repr, names[:10]))}); "
                f"got {key!r}."
            )
        weights[lookup[str(key)]] = float(value)
    return weights


def torch_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis of a numpy array."""
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1).numpy()
