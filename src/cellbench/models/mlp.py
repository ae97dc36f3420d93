"""Fully connected networks for tables: a plain MLP and a residual MLP."""

from __future__ import annotations

import torch
from torch import nn

from .._spaces import CategoricalDist, FloatDist, IntDist
from ..exceptions import InvalidParameterError
from ._base import register_model

__all__ = ["MLP", "ResMLP", "make_activation"]

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU,
               "elu": nn.ELU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """``relu``, ``leaky_relu``, ``gelu``, ``silu``, ``elu`` or ``tanh``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise InvalidParameterError(
            f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}."
        ) from None


def _check(name: str, value: object, ok: bool, expectation: str) -> None:
    if not ok:
        raise InvalidParameterError(f"{name} must be {expectation}; got {value!r}.")


def _check_shape(depth: int, width: int, dropout: float, min_depth: int) -> None:
    _check("depth", depth, isinstance(depth, int) and depth >= min_depth,
           f"an int >= {min_depth}")
    _check("width", width, isinstance(width, int) and width >= 1, "an int >= 1")
    _check("dropout", dropout, 0 <= dropout < 1, "in [0, 1)")


_MLP_SPACE = {
    "depth": IntDist(1, 4),
    "width": IntDist(32, 512, log=True),
    "dropout": FloatDist(0.0, 0.5),
    "batchnorm": CategoricalDist((True, False)),
}


@register_model("mlp", input_kind="tabular", family="nn", search_space=_MLP_SPACE)
class MLP(nn.Module):
    """Multilayer perceptron: ``depth`` x [Linear → BatchNorm? → activation → Dropout].

    Parameters
    ----------
    n_features, n_classes : int
    depth : int
        Hidden layers (0 gives multinomial logistic regression).
    width : int
        Units per hidden layer.
    dropout : float
        Dropout after each hidden layer.
    batchnorm : bool
        BatchNorm1d after each hidden linear layer.
    activation : str
    """

    def __init__(self, n_features: int, n_classes: int, depth: int = 2, width: int = 128,
                 dropout: float = 0.0, batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        _check_shape(depth, width, dropout, min_depth=0)
        layers: list[nn.Module] = []
        d_in = n_features
        for _ in range(depth):
            layers.append(nn.Linear(d_in, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(d_in, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _ResBlock(nn.Module):
    """Pre-activation residual block: x + Dropout(Linear(act(BN(Linear(act(BN(x)))))))."""

    def __init__(self, width: int, dropout: float, batchnorm: bool, activation: str):
        super().__init__()
        norm = (lambda: nn.BatchNorm1d(width)) if batchnorm else nn.Identity
        self.body = nn.Sequential(
            norm(), make_activation(activation), nn.Linear(width, width),
            norm(), make_activation(activation), nn.Dropout(dropout), nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_model("resmlp", input_kind="tabular", family="nn", search_space={
    **_MLP_SPACE, "depth": IntDist(1, 6)})
class ResMLP(nn.Module):
    """Residual MLP: a linear stem, ``depth`` pre-activation residual blocks, a linear head.

    Parameters
    ----------
    n_features, n_classes : int
    depth : int
        Residual blocks (two linear layers each).
    width, dropout, batchnorm, activation
        As in :class:`MLP`.
    """

    def __init__(self, n_features: int, n_classes: int, depth: int = 2, width: int = 128,
                 dropout: float = 0.1, batchnorm: bool = True, activation: str = "relu"):
        super().__init__()
        _check_shape(depth, width, dropout, min_depth=1)
        self.stem = nn.Linear(n_features, width)
        self.blocks = nn.Sequential(*[_ResBlock(width, dropout, batchnorm, activation)
                                      for _ in range(depth)])
        self.norm = nn.BatchNorm1d(width) if batchnorm else nn.Identity()
        self.act = make_activation(activation)
        self.head = nn.Linear(width, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.blocks(self.stem(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
