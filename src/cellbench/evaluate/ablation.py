"""Ablation designs: a base model plus factors, one at a time or full factorial.

A factor is ``name=level1,level2,...``; the first level of every factor is the base. A name
is a model argument (``dropout``, ``batchnorm``, ``width``) or a training setting
(``optimizer``, ``lr``, ``weight_decay``, ``scheduler``, ``augment``, ``class_weight``,
``sampler``, ``batch_size``, ...). Levels are read as YAML; ``a/b`` is a pair (the seed-000
network's two dropout rates) and ``on``/``off`` are booleans.

>>> factors = parse_factors(["dropout=0.25/0.5,0,0.5/0.9", "batchnorm=on,off"], "cnn1d-seed")
>>> [c.label for c in design(factors, "oat")]
['base', 'dropout=0', 'dropout=0.5/0.9', 'batchnorm=off']
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .._config import TrainConfig
from .._utils import did_you_mean, split_top_level
from ..exceptions import InvalidParameterError
from ..models import MODELS
from ..models._base import model_arguments

__all__ = ["Config", "Factor", "design", "parse_factors"]

BOOLEANS = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}
#: training settings a factor may vary (the rest of TrainConfig is fixed per job)
TRAIN_FACTORS = ("optimizer", "lr", "weight_decay", "scheduler", "batch_size", "max_epochs",
                 "patience", "class_weight", "sampler", "grad_clip", "augment",
                 "optimizer_kwargs", "scheduler_kwargs")


def _value(text: str) -> Any:
    text = text.strip()
    if "/" in text:
        return [_value(part) for part in text.split("/")]
    if text.lower() in BOOLEANS:
        return BOOLEANS[text.lower()]
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as text
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class Factor:
    """One varied setting: where it goes (model argument or training) and its levels."""

    name: str
    target: str  # "model" or "train"
    levels: tuple[Any, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    """One configuration of a design."""

    label: str
    model_kwargs: dict[str, Any]
    train: dict[str, Any]
    levels: dict[str, str]  # factor -> level label


def parse_factors(specs: Sequence[str], model: str) -> list[Factor]:
    """Parse ``--factor`` strings for ``model``; unknown names raise with the valid ones."""
    spec = MODELS.get(model)
    params = model_arguments(model)
    factors, seen = [], set()
    for item in specs:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not raw.strip():
            raise InvalidParameterError(
                f"--factor must look like name=level1,level2 (e.g. dropout=0,0.25/0.5); got "
                f"{item!r}."
            )
        if name in seen:
            raise InvalidParameterError(f"factor {name!r} must be given once; it repeats.")
        seen.add(name)
        if name in params:
            target = "model"
        elif (name in TRAIN_FACTORS and spec.family == "nn") or name == "class_weight":
            target = "train"
        else:
            valid = params + (list(TRAIN_FACTORS) if spec.family == "nn" else ["class_weight"])
            guess = did_you_mean(name, valid)
            raise InvalidParameterError(
                f"factor must be an argument of {model!r} or a training setting; got {name!r}."
                + (f" Did you mean {guess!r}?" if guess else "")
                + f" Valid: {', '.join(valid)}."
            )
        labels = tuple(split_top_level(raw))
        if len(labels) < 2:
            raise InvalidParameterError(
                f"factor {name!r} must have at least two levels (the first is the base); got "
                f"{raw!r}."
            )
        if len(set(labels)) != len(labels):
            raise InvalidParameterError(f"factor {name!r} must not repeat a level; got {raw!r}.")
        levels = tuple(_value(lab) for lab in labels)
        if target == "train":
            for level in levels:  # validate now, not after an hour of training
                try:
                    dataclasses.replace(TrainConfig(), **{name: level})
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"factor {name!r} level {level!r}: {exc}"
                                                ) from exc
        factors.append(Factor(name, target, levels, labels))
    if not factors:
        raise InvalidParameterError("ablate needs at least one --factor; got none.")
    return factors


def _config(factors: Sequence[Factor], choice: Sequence[int], label: str) -> Config:
    model_kwargs, train, levels = {}, {}, {}
    for factor, i in zip(factors, choice, strict=True):
        (model_kwargs if factor.target == "model" else train)[factor.name] = factor.levels[i]
        levels[factor.name] = factor.labels[i]
    return Config(label, model_kwargs, train, levels)


def design(factors: Sequence[Factor], kind: str = "oat") -> list[Config]:
    """The configurations to run: ``oat`` (base + each level alone) or ``full`` (all)."""
    if kind not in ("oat", "full"):
        raise InvalidParameterError(f"design must be 'oat' (one at a time) or 'full' "
                                    f"(factorial); got {kind!r}.")
    base = [0] * len(factors)
    configs = [_config(factors, base, "base")]
    if kind == "oat":
        for f, factor in enumerate(factors):
            for i in range(1, len(factor.levels)):
                choice = list(base)
                choice[f] = i
                configs.append(_config(factors, choice, f"{factor.name}={factor.labels[i]}"))
        return configs
    for choice in itertools.product(*(range(len(f.levels)) for f in factors)):
        if any(choice):
            label = ", ".join(f"{f.name}={f.labels[i]}" for f, i in zip(factors, choice,
                                                                         strict=True) if i)
            configs.append(_config(factors, choice, label))
    return configs
