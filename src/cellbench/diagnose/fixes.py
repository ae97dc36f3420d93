"""Fix experiments: what the doctor changes in the user's setting to test a finding.

A fix is a :class:`Change` of the user's model choice (another model, model arguments,
training settings), of the data configuration (the transform, image normalisation) or of
the columns (one dropped). The doctor trains every fix on the same splits and seeds as the
user's setting and keeps those a paired test says helped; :func:`combine` merges them into
the final model.

>>> from cellbench.models import ModelChoice
>>> user = ModelChoice("yours", "cnn1d-seed", {"dropout": [0.5, 0.9]}, {"optimizer": "asgd"})
>>> change = propose("lighter_dropout", user, {})
>>> change.apply(user)[0].kwargs
{'dropout': [0.2, 0.2]}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._config import DataConfig
from ..models import MODELS, ModelChoice, model_arguments
from .rules import dropout_rates

__all__ = ["DEFAULT_NETWORKS", "Change", "combine", "propose", "user_choice"]

#: the network tried by ``default_recipe`` and used as the reference network
DEFAULT_NETWORKS = {"table": "mlp", "image": "resnet8"}
LIGHT_DROPOUT = 0.2  # heavy dropout is cut to at most this (and halved below it)
MIN_EPOCHS = 60  # "more epochs" is at least this many, with early stopping


@dataclass(frozen=True)
class Change:
    """One fix as a change of the user's setting."""

    fix: str  # a key of FIXES
    model: str | None = None  # replace the model (its training settings are kept)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)  # DataConfig fields
    drop: tuple[str, ...] = ()  # columns removed from the features
    reset_train: bool = False  # default training settings, the job's epochs (default_recipe)
    for_model: str | None = None  # the model ``kwargs`` were written for

    @property
    def label(self) -> str:
        parts = [f"model={self.model}"] if self.model else []
        parts += [f"{k}={_text(v)}" for k, v in {**self.kwargs, **self.train}.items()]
        parts += [f"{k}={_text(v)}" for k, v in self.data.items()]
        parts += [f"drop={','.join(self.drop)}"] if self.drop else []
        return f"{self.fix}({'; '.join(parts)})" if parts else self.fix

    def apply(self, choice: ModelChoice, data: DataConfig | None = None
              ) -> tuple[ModelChoice, DataConfig | None]:
        """``choice`` (and ``data``) with this change; arguments the new model does not take
        are dropped, so changes can be stacked."""
        name = self.model or choice.name
        args = set(model_arguments(name))
        kwargs = {} if self.model else dict(choice.kwargs)
        if self.for_model in (None, name):  # arguments of another model do not carry over
            kwargs.update({k: v for k, v in self.kwargs.items() if k in args})
        train = {} if self.reset_train else dict(choice.train)
        train.update(self.train)
        if MODELS.get(name).family != "nn":
            train = {k: v for k, v in train.items() if k == "class_weight"}
        new = ModelChoice(self.fix, name, kwargs, train)
        if data is not None and self.data:
            data = data.replace(**self.data)
        return new, data


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "/".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def user_choice(name: str, kwargs: Mapping[str, Any], train: Mapping[str, Any],
                label: str = "yours") -> ModelChoice:
    """The user's setting as a labelled model choice (training settings carried with it)."""
    return ModelChoice(label, name, dict(kwargs), dict(train))


def _lighter(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_lighter(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(min(value / 2, LIGHT_DROPOUT), 4) if value > 0 else value
    return value


def _dropout_change(choice: ModelChoice) -> Change | None:
    current = {**MODELS.get(choice.name).defaults, **choice.kwargs}
    keys = {k: v for k, v in current.items() if "dropout" in k}
    if not keys or max(dropout_rates(keys), default=0) <= LIGHT_DROPOUT / 2:
        return None
    return Change("lighter_dropout", kwargs={k: _lighter(v) for k, v in keys.items()},
                  for_model=choice.name)


def _scaled_arg(choice: ModelChoice, factor: float, fix: str) -> Change | None:
    args = model_arguments(choice.name)
    spec = MODELS.get(choice.name)
    current = {**spec.defaults, **choice.kwargs}
    if "width" in args and isinstance(current.get("width", 1), int | float):
        width = current.get("width", 128)
        new = type(width)(width * factor) if isinstance(width, int) else width * factor
        if new > 0 and new != width:
            return Change(fix, kwargs={"width": new}, for_model=choice.name)
    if "depth" in args and isinstance(current.get("depth"), int):
        depth = current["depth"] + (1 if factor > 1 else -1)
        if depth >= 1:
            return Change(fix, kwargs={"depth": depth}, for_model=choice.name)
    return None


def _bigger(choice: ModelChoice) -> Change | None:
    """A model that can fit its training cells: an integer width x4 and at least the preset's
    (a width multiplier of an image network x2), and a second layer for a one-layer one."""
    args = model_arguments(choice.name)
    spec = MODELS.get(choice.name)
    factory = {k: p.default for k, p in inspect.signature(spec.factory).parameters.items()
               if p.default is not inspect.Parameter.empty}
    defaults = {**factory, **spec.defaults}
    current = {**defaults, **choice.kwargs}
    kwargs: dict[str, Any] = {}
    width, preset = current.get("width"), defaults.get("width")
    if "width" in args and isinstance(width, int) and not isinstance(width, bool):
        kwargs["width"] = max(4 * width, preset if isinstance(preset, int) else 0)
    elif "width" in args and isinstance(width, float):
        kwargs["width"] = 2 * width
    depth = current.get("depth")
    if "depth" in args and isinstance(depth, int) and depth <= 1:
        kwargs["depth"] = depth + 1
    return Change("bigger_model", kwargs=kwargs, for_model=choice.name) if kwargs else None


def _normalize(kind: str, data: DataConfig, raw_cytometry: bool) -> Change | None:
    if kind == "image":
        return None if data.image_norm == "standardize" else \
            Change("normalize_input", data={"image_norm": "standardize"})
    transform = tuple(data.transform)
    if raw_cytometry and "arcsinh" not in transform:
        transform = ("arcsinh", *[t for t in transform if t != "arcsinh"])
    if "standardize" not in transform and "quantile" not in transform:
        transform = (*transform, "standardize")
    return None if transform == tuple(data.transform) else \
        Change("normalize_input", data={"transform": transform})


def _normalize_samples(data: DataConfig) -> Change | None:
    """``sample-standardize`` after the value-wise arcsinh (first without it)."""
    transform = tuple(data.transform)
    if any(step.startswith("sample-") for step in transform):
        return None
    at = transform.index("arcsinh") + 1 if "arcsinh" in transform else 0
    return Change("normalize_samples", data={
        "transform": (*transform[:at], "sample-standardize", *transform[at:])})


def propose(fix: str, choice: ModelChoice, context: Mapping[str, Any]) -> Change | None:
    """The change that tests ``fix`` on the user's ``choice``, or None when it does not
    apply (no dropout to lighten, batch norm already on, no suggestion).

    ``context`` may hold ``kind`` (table/image), ``data`` (DataConfig), ``raw_cytometry``,
    ``suggested_lr``, ``lr``, ``max_epochs``, ``patience`` and ``columns`` (to drop).
    """
    args = set(model_arguments(choice.name))
    nn_model = MODELS.get(choice.name).family == "nn"
    train = choice.train
    if fix == "normalize_input" and "data" in context:
        return _normalize(context.get("kind", "table"), context["data"],
                          bool(context.get("raw_cytometry")))
    if fix == "normalize_samples" and "data" in context:
        return _normalize_samples(context["data"])
    if fix == "lighter_dropout":
        return _dropout_change(choice)
    if fix == "add_batchnorm":
        key = next((k for k in ("batchnorm", "bn") if k in args), None)
        return None if key is None or choice.kwargs.get(key) else \
            Change(fix, kwargs={key: True}, for_model=choice.name)
    if fix == "lr_from_range_test" and nn_model:
        lr, new = context.get("lr"), context.get("suggested_lr")
        if new is None or lr is None or not 0.5 < new / lr < 2:
            return None if new is None else Change(fix, train={"lr": float(f"{new:.2g}")})
        return None
    if fix == "more_epochs" and nn_model:
        epochs = int(context.get("max_epochs", 100))
        return Change(fix, train={"max_epochs": max(epochs * 3, MIN_EPOCHS),
                                  "patience": max(int(context.get("patience") or 10), 10)})
    if fix == "class_weights" and train.get("class_weight") != "balanced":
        return Change(fix, train={"class_weight": "balanced"})
    if fix == "balanced_sampler" and nn_model and train.get("sampler") != "balanced":
        return Change(fix, train={"sampler": "balanced"})
    if fix == "regularize" and nn_model:
        return Change(fix, train={"weight_decay": 1e-4}) if not train.get("weight_decay") \
            else None
    if fix == "grad_clip" and nn_model and not train.get("grad_clip"):
        return Change(fix, train={"grad_clip": 1.0})
    if fix == "bigger_model" and nn_model:
        return _bigger(choice)
    if fix == "shallower_model" and nn_model:
        return _scaled_arg(choice, 0.5, fix)
    if fix == "drop_column" and context.get("columns"):
        return Change(fix, drop=tuple(context["columns"]))
    if fix == "mlp_instead_of_conv" and choice.name != "mlp":
        return Change(fix, model="mlp")
    if fix == "default_recipe":
        net = DEFAULT_NETWORKS[context.get("kind", "table")]
        return Change(fix, model=net, reset_train=True)
    return None


def combine(changes: Sequence[Change], choice: ModelChoice, data: DataConfig
            ) -> tuple[ModelChoice, DataConfig, tuple[str, ...]]:
    """Stack ``changes`` (in order) on the user's setting: the final model's setting and the
    columns it drops."""
    drop: tuple[str, ...] = ()
    for change in changes:
        choice, data = change.apply(choice, data)
        drop += tuple(c for c in change.drop if c not in drop)
    label = "+".join(c.fix for c in changes) or choice.label
    return ModelChoice(label, choice.name, choice.kwargs, choice.train), data, drop

