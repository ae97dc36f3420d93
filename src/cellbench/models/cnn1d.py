"""The seed-000 network: a 1D-CNN over the marker axis of a cytometry table.

From the user's post ("CytometryCNN"): 3 x [Conv1d k=3 pad=1 with n_features channels →
LeakyReLU → BatchNorm1d], AvgPool1d(2), then FC to in/3 → dropout → LeakyReLU → FC to /2 →
dropout → LeakyReLU → FC to classes. The post's text uses dropout 0.25/0.5 (``cnn1d-seed``);
its code uses 0.5/0.9 (``cnn1d-seed-0509``).

For ``n_features >= 4`` the layer sizes equal the post's exactly (its ``int(...)`` arithmetic);
for fewer features the widths are floored at 1 so every feature count works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._spaces import CategoricalDist, FloatDist
from ..exceptions import InvalidParameterError
from ._base import register_model

__all__ = ["CytometryCNN"]

_SPACE = {"dropout": FloatDist(0.0, 0.9), "batchnorm": CategoricalDist((True, False))}


def _pair(dropout: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(dropout, (int, float)):
        pair = (float(dropout), float(dropout))
    else:
        pair = tuple(float(d) for d in dropout)
    if len(pair) != 2 or not all(0 <= d < 1 for d in pair):
        raise InvalidParameterError(
            f"dropout must be a float or a pair of floats in [0, 1), e.g. (0.25, 0.5); got "
            f"{dropout!r}."
        )
    return pair  # type: ignore[return-value]


class CytometryCNN(nn.Module):
    """The seed-000 CytometryCNN, layer for layer.

    Parameters
    ----------
    n_features, n_classes : int
    dropout : float or (float, float)
        Dropout after the first and second fully connected layers.
    batchnorm : bool
        Keep the BatchNorm1d after each conv activation (the post compares with and without).
    """

    def __init__(self, n_features: int, n_classes: int,
                 dropout: float | Sequence[float] = (0.25, 0.5), batchnorm: bool = True):
        super().__init__()
        d1, d2 = _pair(dropout)
        channels = int(n_features)
        self.conv1 = nn.Conv1d(1, channels, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, kernel_size=3, stride=1, padding=1)
        norm = (lambda: nn.BatchNorm1d(channels)) if batchnorm else nn.Identity
        self.bn1, self.bn2, self.bn3 = norm(), norm(), norm()
        self.relu = nn.LeakyReLU()
        # length n_features // 2 after pooling (the post's int(n_features / 2)); one feature
        # would pool to nothing, so it keeps its single position
        self.pool = nn.AvgPool1d(kernel_size=2, stride=2, ceil_mode=n_features == 1)
        fc1_in = channels * max(1, n_features // 2)
        fc1_out = max(1, fc1_in // 3)
        fc2_out = max(1, fc1_out // 2)
        self.fc1 = nn.Linear(fc1_in, fc1_out)
        self.fc2 = nn.Linear(fc1_out, fc2_out)
        self.fc3 = nn.Linear(fc2_out, n_classes)
        self.dropout1 = nn.Dropout(d1)
        self.dropout2 = nn.Dropout(d2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (batch, n_features) -> (batch, 1, n_features)
        x = self.bn1(self.relu(self.conv1(x)))
        x = self.bn2(self.relu(self.conv2(x)))
        x = self.bn3(self.relu(self.conv3(x)))
        x = self.pool(x).flatten(1)
        x = self.relu(self.dropout1(self.fc1(x)))
        return self.relu(self.dropout2(self.fc2(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


register_model("cnn1d-seed", input_kind="tabular", family="nn", search_space=_SPACE,
               defaults={"dropout": (0.25, 0.5)},
               summary="Seed-000 1D-CNN, dropout 0.25/0.5 as in the post's text.")(CytometryCNN)
register_model("cnn1d-seed-0509", input_kind="tabular", family="nn", search_space=_SPACE,
               defaults={"dropout": (0.5, 0.9)},
               summary="Seed-000 1D-CNN, dropout 0.5/0.9 as in the post's code.")(CytometryCNN)
