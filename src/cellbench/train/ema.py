"""An exponential moving average of a network's weights (``train.ema``).

After every optimizer step the average moves towards the current weights,
``avg <- d * avg + (1 - d) * w``, with the warm-up ``d = min(decay, (1 + t) / (10 + t))`` at
step ``t`` so that the first epochs are not dominated by the random initialisation. Float
buffers (BatchNorm's running statistics) are averaged the same way and integer ones copied.
The engine evaluates the average every epoch, early stopping keeps the best average, and
training returns the average: a smoother model than the last step's, usually better on new
data once the learning rate stays high (Polyak averaging; used by timm and the EfficientNet
recipes).

>>> import torch
>>> net = torch.nn.Linear(2, 1)
>>> ema = WeightAverage(net, decay=0.5)
>>> _ = torch.nn.init.zeros_(net.weight)
>>> ema.update(net)  # step 1: d = min(0.5, 2 / 11)
>>> ema.updates
1
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """Holds ``module``, a copy of the network whose weights are the running average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def _tensors(self, model: nn.Module) -> tuple[list, list, list, list]:
        src = list(model.state_dict().values())
        dst = list(self.module.state_dict().values())
        floats = [i for i, t in enumerate(dst) if t.is_floating_point()]
        others = [i for i, t in enumerate(dst) if not t.is_floating_point()]
        return ([dst[i] for i in floats], [src[i] for i in floats],
                [dst[i] for i in others], [src[i] for i in others])

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if not hasattr(self, "_pairs"):  # the same tensors every step: look them up once
            self._pairs = self._tensors(model)
        avg, cur, avg_int, cur_int = self._pairs
        if avg:
            torch._foreach_lerp_(avg, [c.detach() for c in cur], 1.0 - decay)
        for a, c in zip(avg_int, cur_int, strict=True):
            a.copy_(c)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
