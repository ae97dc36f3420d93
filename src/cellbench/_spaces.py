"""Search spaces declared as data, so a report can print them before any trial runs.

Each distribution knows how to ask an Optuna trial for a value (``suggest``) and how to describe
itself (``describe``). Nothing here imports Optuna.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import InvalidParameterError

__all__ = ["CategoricalDist", "Dist", "FloatDist", "IntDist", "space_from_dict", "space_to_dict"]


@dataclass(frozen=True)
class FloatDist:
    """A float in ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise InvalidParameterError(
                f"FloatDist low must be below high; got low={self.low!r}, high={self.high!r}."
            )
        if self.log and self.low <= 0:
            raise InvalidParameterError(
                f"FloatDist low must be > 0 when log=True; got low={self.low!r}."
            )

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        return f"float [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class IntDist:
    """An integer in ``[low, high]`` (inclusive), on a log scale when ``log``."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise InvalidParameterError(
                f"IntDist low must be <= high; got low={self.low!r}, high={self.high!r}."
            )
        if self.log and self.low < 1:
            raise InvalidParameterError(
                f"IntDist low must be >= 1 when log=True; got low={self.low!r}."
            )

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]" + (" log" if self.log else "")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class CategoricalDist:
    """One of a fixed list of choices (str, int, float, bool or None)."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) == 0:
            raise InvalidParameterError("CategoricalDist choices must not be empty; got ().")

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def contains(self, value: Any) -> bool:
        return value in self.choices


Dist = FloatDist | IntDist | CategoricalDist


def space_to_dict(space: Mapping[str, Dist]) -> dict[str, dict[str, Any]]:
    """Describe a space as plain data (for YAML and reports)."""
    out: dict[str, dict[str, Any]] = {}
    for name, dist in space.items():
        if isinstance(dist, FloatDist):
            out[name] = {"type": "float", "low": dist.low, "high": dist.high, "log": dist.log}
        elif isinstance(dist, IntDist):
            out[name] = {"type": "int", "low": dist.low, "high": dist.high, "log": dist.log}
        else:
            out[name] = {"type": "categorical", "choices": list(dist.choices)}
    return out


def space_from_dict(data: Mapping[str, Any], where: str = "search space") -> dict[str, Dist]:
    """Parse ``{"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}, ...}``.

    A bare list is read as categorical choices, so ``{"optimizer": ["adam", "sgd"]}`` works.
    """
    space: dict[str, Dist] = {}
    for name, spec in data.items():
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            space[name] = CategoricalDist(tuple(spec))
            continue
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise InvalidParameterError(
                f"{where} entry {name!r} must be a list of choices or a mapping with 'type' "
                f"(float, int or categorical); got {spec!r}."
            )
        kind = spec["type"]
        extra = set(spec) - {"type", "low", "high", "log", "choices", "step"}
        if extra:
            raise InvalidParameterError(
                f"{where} entry {name!r} has unknown keys {sorted(extra)}; valid keys are "
                "type, low, high, log, step, choices."
            )
        try:
            if kind == "float":
                space[name] = FloatDist(float(spec["low"]), float(spec["high"]),
                                        bool(spec.get("log", False)))
            elif kind == "int":
                space[name] = IntDist(int(spec["low"]), int(spec["high"]),
                                      bool(spec.get("log", False)), int(spec.get("step", 1)))
            elif kind == "categorical":
                space[name] = CategoricalDist(tuple(spec["choices"]))
            else:
                raise InvalidParameterError(
                    f"{where} entry {name!r} type must be 'float', 'int' or 'categorical'; "
                    f"got {kind!r}."
                )
        except KeyError as exc:
            raise InvalidParameterError(
                f"{where} entry {name!r} of type {kind!r} must give {exc.args[0]!r}."
            ) from exc
    return space

