"""Model choices: the one parser of model specs and the one router of their arguments.

A model spec names a registered model, optionally with arguments and a label::

    lda
    mlp(width=256,depth=3)
    post=cnn1d-seed(dropout=0.5/0.9,optimizer=asgd,lr=0.01)

Every command reads specs here (``compare --models``, ``train/ablate/tune --model``, the
``models:`` list of a config), ablation factors and tuning parameters are routed here, and
values are read by one parser, so ``a/b``, ``on`` or ``1e-3`` mean the same thing everywhere.

>>> choice = parse_model("post=cnn1d-seed(dropout=0.5/0.9,optimizer=asgd)")
>>> choice.label, choice.name, choice.kwargs, choice.train
('post', 'cnn1d-seed', {'dropout': [0.5, 0.9]}, {'optimizer': 'asgd'})
>>> route("mlp", {"width": 64, "lr": 0.01}, "settings")
({'width': 64}, {'lr': 0.01})
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .._config import TrainConfig
from .._utils import did_you_mean, format_list, split_top_level, unknown_name_error
from ..exceptions import InvalidParameterError
from ._base import MODELS, check_argument_types, model_arguments

__all__ = ["TRAIN_SETTINGS", "ModelChoice", "matching_models", "parse_model", "parse_models",
           "parse_value", "route"]

#: training settings one model may set for itself (the rest of TrainConfig is the job's);
#: models that fit themselves (baselines, boosting) read only ``class_weight``
TRAIN_SETTINGS = ("optimizer", "lr", "weight_decay", "scheduler", "batch_size", "max_epochs",
                  "patience", "class_weight", "sampler", "grad_clip", "augment",
                  "optimizer_kwargs", "scheduler_kwargs", "label_smoothing", "ema", "tta",
                  "ensemble")
BOOLEANS = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}


def parse_value(text: str) -> Any:
    """A value as written on the command line: YAML, ``a/b`` a pair, ``on``/``off`` booleans.

    >>> parse_value("0.25/0.5"), parse_value("1e-3"), parse_value("off"), parse_value("asgd")
    ([0.25, 0.5], 0.001, False, 'asgd')
    """
    text = text.strip()
    if "/" in text:
        return [parse_value(part) for part in text.split("/")]
    if text.lower() in BOOLEANS:
        return BOOLEANS[text.lower()]
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _settings_for(model: str) -> tuple[str, ...]:
    return TRAIN_SETTINGS if MODELS.get(model).family == "nn" else ("class_weight",)


def route(model: str, values: Mapping[str, Any], what: str) -> tuple[dict, dict]:
    """Split ``values`` into arguments of ``model`` and training settings.

    An argument of the model's factory goes to the model; a training setting the model
    uses (:data:`TRAIN_SETTINGS`; only ``class_weight`` for models that fit themselves) to
    its training configuration, whose validation it must pass. ``what`` names the values in
    messages ("factor names", "search space names", "settings in 'mlp(...)'").
    """
    params = model_arguments(model)  # an unknown model raises with a suggestion
    settings = _settings_for(model)
    model_kwargs = {k: v for k, v in values.items() if k in params}
    train = {k: v for k, v in values.items() if k not in params and k in settings}
    unknown = [k for k in values if k not in model_kwargs and k not in train]
    if unknown:
        valid = [*params, *settings]
        guess = did_you_mean(unknown[0], valid)
        raise InvalidParameterError(
            f"{what} must be arguments of {model!r} or training settings; got "
            f"{', '.join(map(repr, unknown))}." + (f" Did you mean {guess!r}?" if guess else "")
            + f" Valid: {', '.join(valid)}."
        )
    if train:
        try:
            TrainConfig().replace(**train)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{what}: {exc}") from exc
    return model_kwargs, train


@dataclass(frozen=True)
class ModelChoice:
    """A model to run: registry name plus its own arguments, e.g. ``mlp(width=256)``.

    ``train`` holds training settings for this model only (an ablation level, a tuned
    configuration, ``cnn1d-seed(optimizer=asgd)``); ``spec`` is ``name(args)`` without a label
    ("" when the label is the spec).
    """

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    spec: str = ""

    @property
    def slug(self) -> str:
        """Folder of the model's units: from the spec, so renaming a model reuses its runs."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.spec or self.label).strip("_")

    def configure(self, base: TrainConfig, random_state: int | None = None) -> TrainConfig:
        """The training configuration of this model: ``base`` with its model, arguments and
        settings; ``base.model_kwargs`` apply only when ``base`` is this model's config."""
        kwargs = base.model_kwargs if base.model == self.name else {}
        seed = {} if random_state is None else {"random_state": random_state}
        return base.replace(model=self.name, model_kwargs={**kwargs, **self.kwargs},
                            **seed, **self.train)


def parse_model(text: str) -> ModelChoice:
    """One spec: ``name``, ``name(key=value,...)`` or ``label=name(...)``."""
    labelled = re.fullmatch(r"\s*([\w.+/-]+)\s*=\s*([\w.-]+(?:\(.*\))?)\s*", text)
    label, raw = (labelled.group(1), labelled.group(2)) if labelled else (None, text.strip())
    match = re.fullmatch(r"([\w.-]+)(?:\((.*)\))?", raw)
    if not match:
        raise InvalidParameterError(
            f"model must look like name, name(key=value,...) or label=name(...); got {text!r}."
        )
    name, args = match.group(1), match.group(2)
    values: dict[str, Any] = {}
    for arg in split_top_level(args or ""):
        key, sep, value = arg.partition("=")
        if not sep or not key.strip() or not value.strip():  # "width=" would drop silently
            raise InvalidParameterError(
                f"model argument must look like key=value; got {arg!r} in {raw!r}."
            )
        key = key.strip()
        if key in values:  # the last one would win silently
            raise InvalidParameterError(
                f"model argument {key!r} must be given once in {raw!r}; got it twice "
                f"({key}={values[key]!r} and {arg}). Keep the one you mean."
            )
        values[key] = parse_value(value)
    kwargs, train = route(name, values, f"settings in {raw!r}")
    try:
        check_argument_types(name, {k: v for k, v in kwargs.items() if v is not None})
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"settings in {raw!r}: {exc}") from exc
    return ModelChoice(label or raw, name, kwargs, train, raw if label else "")


def parse_models(items: Sequence[str]) -> list[ModelChoice]:
    """Parse ``["lda", "mlp(width=256,depth=3)", "post=cnn1d-seed(optimizer=asgd)"]``.

    Commas separate models except inside parentheses; each model (and label) once.
    """
    if isinstance(items, str):
        items = [items]
    choices, seen = [], set()
    for entry in (part for item in items for part in split_top_level(item)):
        choice = parse_model(entry)
        for key in dict.fromkeys((choice.spec or choice.label, choice.label)):
            if key in seen:
                raise InvalidParameterError(f"models must be listed once each; {key!r} "
                                            "repeats. Give each a different label or spec.")
            seen.add(key)
        choices.append(choice)
    if not choices:
        raise InvalidParameterError(
            f"models must name at least one model; got {','.join(items)!r}. Name them, e.g. "
            "lda,mlp (or leave the models out for the default line-up).")
    return choices


def matching_models(pattern: str, kind: str | None) -> list[str]:
    """The models ``cellbench models PATTERN --kind KIND`` lists; none is an error."""
    kinds = ("tabular", "image")
    if kind is not None and kind not in kinds:
        raise unknown_name_error("--kind", kind, kinds, "Pass --kind tabular or --kind image.")
    names = [n for n in MODELS.list(pattern)
             if kind is None or MODELS.get(n).input_kind in (kind, "any")]
    if names:
        return names
    if not any(ch in pattern for ch in "*?["):  # a name, not a filter
        if pattern in MODELS:  # a model of the other kind
            raise InvalidParameterError(
                f"model {pattern!r} must take {kind} input to be listed with --kind {kind}; "
                f"it takes {MODELS.get(pattern).input_kind} input. Drop --kind.")
        starting = MODELS.list(pattern + "*")
        hint = (f"For the models whose name starts with it ({format_list(starting, 3)}), "
                f"pass the filter '{pattern}*'." if starting else
                f"Run `cellbench models` to list all {len(MODELS)}, or filter with a shell "
                "pattern such as 'cnn*'.")
        raise unknown_name_error("model", pattern, list(MODELS), hint)
    matched = MODELS.list(pattern)
    raise InvalidParameterError(
        f"the filter {pattern!r} must match at least one model"
        + (f" taking {kind} input" if kind else "") + "; it matches "
        + (f"only {format_list(matched)} (not {kind})" if matched else "none")
        + ". Run `cellbench models` to list all " + f"{len(MODELS)}"
        + (", or drop --kind." if matched else ", or use a pattern such as 'cnn*'.")
    )
