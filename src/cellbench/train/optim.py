"""Optimizers and learning-rate schedules, by name.

A schedule says when it steps: after every batch (``"step"``), after every epoch
(``"epoch"``), or after every epoch with the monitored metric (``"plateau"``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .._registry import Registry
from ..exceptions import InvalidParameterError

__all__ = ["OPTIMIZERS", "SCHEDULERS", "Schedule", "build_optimizer", "build_schedule"]

#: name -> (optimizer class, defaults applied before the user's optimizer_kwargs)
OPTIMIZERS: Registry[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = Registry("optimizer")
OPTIMIZERS.register("sgd", (torch.optim.SGD, {"momentum": 0.9}))
OPTIMIZERS.register("asgd", (torch.optim.ASGD, {}))
OPTIMIZERS.register("adam", (torch.optim.Adam, {}))
OPTIMIZERS.register("adamw", (torch.optim.AdamW, {}))
OPTIMIZERS.register("rmsprop", (torch.optim.RMSprop, {}))


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                    weight_decay: float, kwargs: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Create optimizer ``name``; bad keyword arguments raise with the valid ones listed."""
    cls, defaults = OPTIMIZERS.get(name)
    valid = [p for p in inspect.signature(cls).parameters
             if p not in ("self", "params", "lr", "weight_decay")]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise InvalidParameterError(
            f"optimizer_kwargs for {name!r} must be among {', '.join(valid)}; got "
            f"{', '.join(repr(k) for k in unknown)}."
        )
    return cls(params, lr=lr, weight_decay=weight_decay, **{**defaults, **kwargs})


@dataclass
class Schedule:
    """A scheduler and when to step it."""

    scheduler: Any
    interval: Literal["step", "epoch", "plateau"]


SCHEDULERS: Registry[Callable[..., Schedule]] = Registry("scheduler")


def _step(opt, epochs, steps, mode, step_size=None, gamma=0.1):
    return Schedule(torch.optim.lr_scheduler.StepLR(
        opt, step_size=step_size or max(1, epochs // 3), gamma=gamma), "epoch")


def _exponential(opt, epochs, steps, mode, gamma=0.95):
    return Schedule(torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma), "epoch")


def _cosine(opt, epochs, steps, mode, eta_min=0.0):
    return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(1, epochs * steps), eta_min=eta_min), "step")


def _onecycle(opt, epochs, steps, mode, pct_start=0.3, div_factor=25.0,
              final_div_factor=1e4):
    max_lr = [g["lr"] for g in opt.param_groups]
    # momentum is cycled against the LR only where the optimizer has one (not ASGD, plain SGD)
    has_momentum = "betas" in opt.defaults or opt.defaults.get("momentum", 0) > 0
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, total_steps=max(2, epochs * steps), pct_start=pct_start,
        div_factor=div_factor, final_div_factor=final_div_factor,
        cycle_momentum=has_momentum), "step")


def _plateau(opt, epochs, steps, mode, factor=0.1, patience=5, min_lr=0.0):
    return Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=factor, patience=patience, min_lr=min_lr), "plateau")


for _name, _fn in [("step", _step), ("exponential", _exponential), ("cosine", _cosine),
                   ("onecycle", _onecycle), ("plateau", _plateau)]:
    SCHEDULERS.register(_name, _fn)


def build_schedule(name: str | None, optimizer: torch.optim.Optimizer, max_epochs: int,
                   steps_per_epoch: int, mode: str, kwargs: Mapping[str, Any]) -> Schedule | None:
    """Create schedule ``name`` (None: constant learning rate)."""
    if name is None:
        return None
    factory = SCHEDULERS.get(name)
    try:
        return factory(optimizer, max_epochs, steps_per_epoch, mode, **kwargs)
    except TypeError as exc:
        valid = [p for p in inspect.signature(factory).parameters
                 if p not in ("opt", "epochs", "steps", "mode")]
        raise InvalidParameterError(
            f"scheduler_kwargs for {name!r} must be among {', '.join(valid)}; got "
            f"{dict(kwargs)!r}."
        ) from exc
