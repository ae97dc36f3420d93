"""Ensembles of networks: the mean of their members' probabilities.

Two kinds share one prediction rule (the log of the mean member probability, so a softmax of
the output is the ensemble's probability and every evaluation path treats an ensemble like
one network):

- members trained at once inside one network (``tabm``), through
  :func:`ensemble_log_proba` on its ``(B, k, C)`` member logits;
- members trained one after another with different seeds (``train.ensemble=N`` for any
  network), held by :class:`SeedEnsemble`.

>>> import torch
>>> from cellbench.models import create_model
>>> members = [create_model("mlp", n_features=4, n_classes=3, width=8) for _ in range(2)]
>>> SeedEnsemble(members)(torch.zeros(5, 4)).exp().sum(1).allclose(torch.ones(5))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..exceptions import InvalidParameterError

__all__ = ["SeedEnsemble", "ensemble_log_proba", "member_seed"]

#: member ``i`` of a seed ensemble trains with seed ``random_state + MEMBER_SEED_STRIDE * i``,
#: far from the ``random_state + s`` of ``--seeds``, so no two members of a grid share a seed
MEMBER_SEED_STRIDE = 1000


def member_seed(random_state: int, member: int) -> int:
    """The training seed of member ``member`` (member 0 keeps ``random_state``)."""
    return random_state + MEMBER_SEED_STRIDE * member


def ensemble_log_proba(member_logits: torch.Tensor) -> torch.Tensor:
    """``(B, k, C)`` member logits -> ``(B, C)`` log of the mean member probability."""
    k = member_logits.shape[1]
    return torch.logsumexp(torch.log_softmax(member_logits, dim=-1), dim=1) - math.log(k)


class SeedEnsemble(nn.Module):
    """Networks of one architecture trained with different seeds.

    ``forward`` returns the log of the mean member probability ``(B, C)``; its softmax is the
    ensemble's prediction. Members are ``members.0``, ``members.1``, ... in the state dict.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise InvalidParameterError(f"a seed ensemble must have at least 2 members; got "
                                        f"{len(members)}. Use the network itself for one.")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_log_proba(torch.stack([m(x) for m in self.members], dim=1))
