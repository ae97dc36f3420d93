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

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._utils import split_top_level
from ..evaluate.results import RunResults
from ..exceptions import InvalidParameterError
from ..models import parse_value, route

__all__ = ["Config", "Factor", "ablation_rows", "design", "parse_factors"]


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
        labels = tuple(split_top_level(raw))
        if len(labels) < 2:
            raise InvalidParameterError(
                f"factor {name!r} must have at least two levels (the first is the base); got "
                f"{raw!r}."
            )
        if len(set(labels)) != len(labels):
            raise InvalidParameterError(f"factor {name!r} must not repeat a level; got {raw!r}.")
        levels = tuple(parse_value(lab) for lab in labels)
        for level in levels:  # validate now, not after an hour of training
            kwargs, _ = route(model, {name: level}, f"factor {name!r} level {level!r}")
        target = "model" if kwargs else "train"
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


def ablation_rows(results: RunResults, configs: Sequence[Config]) -> list[dict[str, Any]]:
    """One row per configuration: accuracy, the mean over all runs, and the paired test
    against the base."""
    by_model = {m.label: m for m in results.models}
    tests = {r.model: r for r in (results.comparisons.rows if results.comparisons else [])}
    rows = []
    for c in configs:
        m = by_model[c.label]
        across = (m.across_units or {}).get("accuracy")
        row = {"config": c.label, "levels": c.levels, "accuracy": m.test.accuracy.to_dict(),
               "mean": across.mean if across else m.test.accuracy.value,
               "sd": across.sd if across else None, "runs": m.units}
        t = tests.get(c.label)
        if t is not None:
            row.update({"difference": t.difference, "ci": t.ci, "p": t.p_value,
                        "p_adjusted": t.p_adjusted, "test": t.test, "verdict": t.verdict})
        rows.append(row)
    return rows
