"""Search spaces as data: a model's declared space and the training settings a network can
vary, a user's overrides (``--space``) parsed, and the whole space checked before any trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .._config import TrainConfig
from .._spaces import CategoricalDist, Dist, FloatDist, IntDist
from .._utils import did_you_mean
from ..exceptions import InvalidParameterError
from ..models import MODELS, TRAIN_SETTINGS, ModelChoice, model_arguments, route

__all__ = ["TRAINING_SPACE", "check_space", "search_space", "split_params"]

#: what a network's training can vary, beside the model's own arguments
TRAINING_SPACE: dict[str, Dist] = {
    "lr": FloatDist(1e-4, 3e-2, log=True),
    "batch_size": CategoricalDist((64, 128, 256, 512)),
    "optimizer": CategoricalDist(("adam", "adamw", "sgd", "rmsprop")),
    "weight_decay": FloatDist(1e-7, 1e-2, log=True),
    "scheduler": CategoricalDist((None, "cosine", "onecycle")),
    "class_weight": CategoricalDist((None, "balanced")),
}


def search_space(model: str, overrides: Mapping[str, Any] | None = None,
                 where: str = "search space override") -> dict[str, Dist]:
    """The model's declared space plus, for networks, the training space; then overrides.

    An override maps a name to a distribution (``{"type": "float", ...}`` or a list of
    choices) or to a plain value, which fixes it; ``null`` removes it from the search.
    ``where`` names the overrides in messages (``--space 'space.yaml'``). The overrides'
    form and names are checked here; their values by :func:`check_space`, which needs the
    data (a model is built with each end of a range).
    """
    spec = MODELS.get(model)
    space: dict[str, Dist] = dict(spec.search_space)
    if spec.family == "nn":
        space = {**TRAINING_SPACE, **space}
    elif spec.family == "gbdt" or model == "logreg":
        space["class_weight"] = TRAINING_SPACE["class_weight"]
    if overrides is None:
        return space
    if not isinstance(overrides, Mapping):
        kind = "a list" if isinstance(overrides, (list, tuple)) else repr(overrides)
        raise InvalidParameterError(
            f"{where} must be a mapping of parameter names to a range, a list of choices, a "
            f"fixed value or null; got {kind}. Write one entry per line, e.g. "
            "'lr: {type: float, low: 0.0001, high: 0.01, log: true}' or 'depth: [1, 2, 3]'."
        )
    valid = [*model_arguments(model), *_settings_for(model)]
    for name, value in overrides.items():
        if name not in valid:
            guess = did_you_mean(str(name), valid)
            raise InvalidParameterError(
                f"{where} entry {name!r} must be an argument of {model!r} or a training "
                f"setting; got {name!r}." + (f" Did you mean {guess!r}?" if guess else "")
                + f" Valid: {', '.join(valid)}."
            )
        if value is None:
            space.pop(name, None)
        else:
            space[name] = _override(name, value, where, space.get(name))
    return space


def _settings_for(model: str) -> tuple[str, ...]:
    return TRAIN_SETTINGS if MODELS.get(model).family == "nn" else ("class_weight",)


_RANGE_KEYS = {"float": {"type", "low", "high", "log"},
               "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}


def _range_example(name: str, declared: Dist | None) -> str:
    if isinstance(declared, IntDist):
        return f"'{name}: {{type: int, low: {declared.low}, high: {declared.high}}}'"
    if isinstance(declared, FloatDist):
        log = ", log: true" if declared.log else ""
        return (f"'{name}: {{type: float, low: {declared.low:g}, high: {declared.high:g}"
                f"{log}}}'")
    return f"'{name}: {{type: float, low: ..., high: ...}}'"


def _override(name: str, value: Any, where: str, declared: Dist | None) -> Dist:
    """One override entry as a distribution; a malformed entry raises naming it."""
    entry = f"{where} entry {name!r}"
    if isinstance(value, (list, tuple)):
        return CategoricalDist(_choices(value, entry))
    if not isinstance(value, Mapping):
        return CategoricalDist(_choices([value], entry))
    kind = value.get("type")
    if kind not in _RANGE_KEYS:
        shape = ("a list of choices, a fixed value, or a range "
                 + _range_example(name, declared))
        if "type" not in value:
            raise InvalidParameterError(f"{entry} must be {shape}; got {dict(value)!r}, a "
                                        "mapping without 'type'.")
        raise InvalidParameterError(f"{entry} type must be 'float', 'int' or 'categorical'; "
                                    f"got {kind!r}. Write {shape}.")
    extra = set(value) - _RANGE_KEYS[kind]
    if extra:
        raise InvalidParameterError(
            f"{entry} of type {kind!r} must have only the keys "
            f"{', '.join(sorted(_RANGE_KEYS[kind]))}; got also "
            f"{', '.join(map(repr, sorted(extra, key=str)))}. Remove them.")
    if kind == "categorical":
        if "choices" not in value:
            raise InvalidParameterError(f"{entry} of type 'categorical' must give 'choices'; "
                                        f"got {dict(value)!r}. Add choices: [a, b, ...].")
        choices = value["choices"]
        return CategoricalDist(_choices(choices if isinstance(choices, (list, tuple))
                                        else [choices], entry))
    missing = [k for k in ("low", "high") if k not in value]
    if missing:
        raise InvalidParameterError(
            f"{entry} of type {kind!r} must give low and high; got no "
            f"{' and no '.join(missing)}. Write {_range_example(name, declared)}.")
    low, high = (_number(value[k], kind, f"{entry} {k}") for k in ("low", "high"))
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise InvalidParameterError(f"{entry} log must be true or false; got {log!r}.")
    got = f"got [{value['low']!r}, {value['high']!r}]"
    if (kind == "float" and not low < high) or (kind == "int" and not low <= high):
        raise InvalidParameterError(
            f"{entry} must be a range with low {'below' if kind == 'float' else 'at most'} "
            f"high; {got}. Swap them, or give a fixed value ('{name}: {value['low']!r}').")
    if log and low <= 0:
        raise InvalidParameterError(f"{entry} must have low > 0 on a log scale; {got}. Raise "
                                    "low, or drop log: true.")
    if kind == "float":
        return FloatDist(float(low), float(high), log)
    step = value.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1 or (log and step != 1):
        raise InvalidParameterError(f"{entry} step must be an int >= 1 (1 on a log scale); "
                                    f"got {step!r}.")
    return IntDist(int(low), int(high), log, step)


def _number(value: Any, kind: str, what: str) -> float | int:
    """A range end: a number (YAML 1.1 reads 1e-3 as text, so numeric text too)."""
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(
            number):
        raise InvalidParameterError(f"{what} must be a finite number; got {value!r}.")
    if kind == "int":
        if number != int(number):
            raise InvalidParameterError(f"{what} must be a whole number for an int range; "
                                        f"got {value!r}. Use type: float for fractions.")
        return int(number)
    return float(number)


def _choices(values: Any, entry: str) -> tuple[Any, ...]:
    if len(values) == 0:
        raise InvalidParameterError(f"{entry} must list at least one choice; got []. Give "
                                    "choices, a fixed value, or null to leave it out.")
    bad = [v for v in values if not (v is None or isinstance(v, (bool, int, float, str)))]
    if bad:
        raise InvalidParameterError(
            f"{entry} choices must be numbers, text, true/false or null; got {bad[0]!r}. "
            "Write one value per choice ([a, b]); a value that is itself a list or mapping "
            "cannot be searched.")
    return tuple(values)


def check_space(ds: Any, train_cfg: TrainConfig, space: Mapping[str, Dist],
                overridden: Mapping[str, Any] | None = None,
                where: str = "search space override") -> None:
    """Every value the search can draw, checked before any trial: the model is built (on the
    meta device, for free) with each choice and with each end of each range, beside the fixed
    values of the space, and training settings are checked the same way; the smallest batch
    size is also tried with each choice of the model's arguments (batch norm needs two rows).
    ``overridden`` names the entries ``where`` set."""
    from ..train.trainer import check_model

    model = train_cfg.model
    declared = search_space(model)
    params = set(model_arguments(model))

    def values_of(dist: Dist) -> tuple[Any, ...]:
        return dist.choices if isinstance(dist, CategoricalDist) else (dist.low, dist.high)

    def fail(name: str, exc: Exception | None, values: Mapping[str, Any]) -> None:
        dist, probe = space[name], declared.get(name)
        entry = (f"{where} entry {name!r}" if name in (overridden or {})
                 else f"search space entry {name!r}")
        hint = _space_hint(name, probe, dist)
        if isinstance(dist, CategoricalDist):
            choices = dist.choices
            expect = f"choices {model!r} accepts"
            shown = f"choices {list(choices)!r}" if len(choices) > 1 else repr(choices[0])
        else:
            expect = f"a range [low, high] whose ends {model!r} accepts"
            shown = f"[{dist.low:g}, {dist.high:g}]"
        if exc is None:  # a value of the wrong kind
            what = "whole numbers" if isinstance(probe, IntDist) else "numbers"
            kind = " (a float range)" if isinstance(dist, FloatDist) else ""
            raise InvalidParameterError(f"{entry} must be {what}; got {shown}{kind}. {hint}")
        given = " and ".join(f"{k}={v!r}" for k, v in values.items())
        raise InvalidParameterError(f"{entry} must be {expect}; got {shown}: with {given}, "
                                    f"{_lower_first(str(exc))} {hint}") from None

    def check(values: Mapping[str, Any]) -> Exception | None:
        kwargs = {k: v for k, v in values.items() if k in params}
        train = {k: v for k, v in values.items() if k not in params}
        try:
            check_model(ds, ModelChoice(model, model, kwargs, train).configure(train_cfg))
        except InvalidParameterError as exc:
            return exc
        return None

    for name, dist in space.items():  # numbers where the model's space has a range
        probe = declared.get(name)
        if isinstance(probe, (FloatDist, IntDist)):
            numeric = (int,) if isinstance(probe, IntDist) else (int, float)
            if (any(isinstance(v, bool) or not isinstance(v, numeric) for v in values_of(dist))
                    or (isinstance(probe, IntDist) and isinstance(dist, FloatDist))):
                fail(name, None, {})
    fixed = {n: d.choices[0] for n, d in space.items()
             if isinstance(d, CategoricalDist) and len(d.choices) == 1}
    for name, dist in sorted(space.items(), key=lambda item: item[0] not in fixed):
        for value in values_of(dist):
            error = check({name: value})
            if error is not None:
                fail(name, error, {name: value})
            if name not in fixed and fixed:
                error = check({**fixed, name: value})
                if error is not None:
                    fail(name, error, {name: value, **fixed})
    if "batch_size" in space:
        smallest = min(values_of(space["batch_size"]))
        for name, dist in space.items():
            if name in params and isinstance(dist, CategoricalDist):
                for value in dist.choices:
                    combo = {**fixed, "batch_size": smallest, name: value}
                    error = check(combo)
                    if error is not None:
                        fail("batch_size", error, {"batch_size": smallest, name: value})


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text


def _space_hint(name: str, declared: Dist | None, dist: Dist) -> str:
    hint = "Change the entry"
    if declared is not None:
        hint += f" (by default {declared.describe()})"
    hint += "."
    if isinstance(dist, FloatDist) and isinstance(declared, IntDist):
        hint += (f" Write an int range: '{name}: {{type: int, low: {int(dist.low)}, "
                 f"high: {int(dist.high)}}}'.")
    if isinstance(dist, CategoricalDist) and isinstance(declared, (FloatDist, IntDist)):
        hint += (" A list is read as choices; write a range as "
                 f"{_range_example(name, declared)}.")
    return hint


def split_params(model: str, params: Mapping[str, Any]) -> tuple[dict, dict]:
    """Separate a trial's parameters into model arguments and training settings."""
    return route(model, params, "search space names")
