"""Stronger networks for tables: periodic numeric embeddings (``mlp-plr``) and TabM (``tabm``).

``mlp-plr``: Gorishniy, Rubachev, Babenko (2022), "On Embeddings for Numerical Features in
Tabular Deep Learning". Each feature ``x_j`` becomes ``ReLU(Linear_j([cos(2π c_j x_j),
sin(2π c_j x_j)]))``, with ``n_frequencies`` trainable frequencies ``c_j ~ N(0, σ²)``
(``frequency_scale`` = σ); ``lite`` shares the linear layer between features. An MLP reads
the flattened embeddings.

``tabm``: Gorishniy, Kotelnikov, Babenko (2024), "TabM: Advancing Tabular Deep Learning with
Parameter-Efficient Ensembling". ``k`` MLPs trained at once that share their weights; member
``i`` has its own rank-1 adapters (BatchEnsemble: ``s_i ⊙ (W (r_i ⊙ x)) + b_i`` in every
layer; ``arch="tabm-mini"``: one ``r_i`` on the input only) and its own output head. Each
batch is seen by every member, ``(B, d) -> (B, k, d)``.

How an ensemble trains (the engine's contract, see :mod:`cellbench.train.engine`):
``forward_members(x)`` gives every member's logits ``(B, k, n_classes)``; the training loss is
the mean over members of each member's cross-entropy, so each member learns as an
independent model on the same batches. ``forward(x)`` gives ``log(mean_i softmax(z_i))``:
logits whose softmax is the mean of the members' probabilities (not of their logits), so
evaluation, ``predict_proba`` and the probes need nothing special.

>>> from cellbench.models import create_model
>>> net = create_model("tabm", n_features=8, n_classes=3, k=4, width=32)
>>> net.forward_members(torch.zeros(5, 8)).shape, net(torch.zeros(5, 8)).shape
(torch.Size([5, 4, 3]), torch.Size([5, 3]))
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._spaces import CategoricalDist, FloatDist, IntDist
from ..exceptions import InvalidParameterError
from ._base import register_model
from .ensemble import ensemble_log_proba
from .mlp import MLP, make_activation

__all__ = ["MLPPLR", "EnsembleLinear", "MemberHeads", "PeriodicEmbedding", "TabM"]


def _check(name: str, value: object, ok: bool, expectation: str) -> None:
    if not ok:
        raise InvalidParameterError(f"{name} must be {expectation}; got {value!r}.")


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _rsqrt_uniform(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """PyTorch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class PeriodicEmbedding(nn.Module):
    """PLR embeddings: ``(B, n_features) -> (B, n_features * d_embedding)``.

    Parameters
    ----------
    n_features : int
    n_frequencies : int
        Trainable frequencies per feature (k in the paper).
    frequency_scale : float
        σ of their initialisation N(0, σ²), truncated at 3σ; the most important setting
        (small: smooth functions of the marker; large: wiggly ones).
    d_embedding : int
        Size of each feature's embedding.
    lite : bool
        One linear layer shared by all features ("PLR(lite)") instead of one per feature.
    """

    def __init__(self, n_features: int, n_frequencies: int = 16, frequency_scale: float = 0.1,
                 d_embedding: int = 16, lite: bool = False):
        super().__init__()
        _check("n_frequencies", n_frequencies, _is_int(n_frequencies, 1), "an int >= 1")
        _check("d_embedding", d_embedding, _is_int(d_embedding, 1), "an int >= 1")
        _check("frequency_scale", frequency_scale,
               isinstance(frequency_scale, (int, float)) and frequency_scale > 0, "a float > 0")
        sigma = float(frequency_scale)
        self.frequencies = nn.Parameter(nn.init.trunc_normal_(
            torch.empty(n_features, n_frequencies), 0.0, sigma, -3 * sigma, 3 * sigma))
        d_in = 2 * n_frequencies
        self.lite = lite
        if lite:
            self.linear = nn.Linear(d_in, d_embedding)
        else:
            self.weight = nn.Parameter(_rsqrt_uniform(torch.empty(n_features, d_in, d_embedding),
                                                      d_in))
            self.bias = nn.Parameter(_rsqrt_uniform(torch.empty(n_features, d_embedding), d_in))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * self.frequencies * x.unsqueeze(-1)  # (B, F, k)
        z = torch.cat([torch.cos(z), torch.sin(z)], dim=-1)  # (B, F, 2k)
        if self.lite:
            z = self.linear(z)
        else:
            z = torch.einsum("bfi,fid->bfd", z, self.weight) + self.bias
        # flattened before the ReLU, so each embedding unit counts as a unit (dead-unit probes)
        return self.act(z.flatten(1))


_PLR_SPACE = {
    "n_frequencies": IntDist(8, 64, log=True),
    "frequency_scale": FloatDist(0.01, 10.0, log=True),
    "d_embedding": IntDist(8, 32, log=True),
    "lite": CategoricalDist((False, True)),
}


@register_model("mlp-plr", input_kind="tabular", family="nn", search_space={
    "depth": IntDist(1, 4), "width": IntDist(32, 512, log=True),
    "dropout": FloatDist(0.0, 0.5), **_PLR_SPACE})
class MLPPLR(nn.Module):
    """MLP on periodic numeric embeddings (PLR; Gorishniy et al. 2022).

    Parameters
    ----------
    n_features, n_classes : int
    depth, width, dropout, batchnorm, activation
        The MLP on the flattened embeddings, as in :class:`~cellbench.models.mlp.MLP` (same
        defaults, so ``mlp`` vs ``mlp-plr`` measures the embeddings alone).
    n_frequencies, frequency_scale, d_embedding, lite
        As in :class:`PeriodicEmbedding`.
    """

    def __init__(self, n_features: int, n_classes: int, depth: int = 2, width: int = 128,
                 dropout: float = 0.0, batchnorm: bool = False, activation: str = "relu",
                 n_frequencies: int = 16, frequency_scale: float = 0.1, d_embedding: int = 16,
                 lite: bool = False):
        super().__init__()
        self.embedding = PeriodicEmbedding(n_features, n_frequencies, frequency_scale,
                                           d_embedding, lite)
        self.mlp = MLP(n_features * d_embedding, n_classes, depth, width, dropout, batchnorm,
                       activation)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.forward_features(self.embedding(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class EnsembleLinear(nn.Module):
    """A linear layer shared by ``k`` members, with BatchEnsemble adapters.

    ``(B, k, d_in) -> (B, k, d_out)``: member ``i`` computes ``s_i ⊙ (W (r_i ⊙ x)) + b_i``.
    ``r`` starts as random signs (``scale_in="random-signs"``, what makes the members differ
    from the first step) or ones; ``s`` as ones; the biases as one PyTorch-initialised vector
    copied to every member. ``W`` is an ``nn.Linear`` (shared), so ``init`` schemes reach it.
    """

    def __init__(self, d_in: int, d_out: int, k: int, scale_in: str | None = "ones",
                 scale_out: bool = True):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.r = None if scale_in is None else nn.Parameter(_scaling(k, d_in, scale_in))
        self.s = nn.Parameter(torch.ones(k, d_out)) if scale_out else None
        self.bias = nn.Parameter(_rsqrt_uniform(torch.empty(d_out), d_in).repeat(k, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.r is not None:
            x = x * self.r
        x = self.linear(x)
        return x + self.bias if self.s is None else torch.addcmul(self.bias, x, self.s)


def _scaling(k: int, d: int, init: str) -> torch.Tensor:
    if init == "random-signs":
        return torch.empty(k, d).bernoulli_(0.5) * 2 - 1
    return torch.ones(k, d)


class MemberHeads(nn.Module):
    """One linear head per member: ``(B, k, d) -> (B, k, n_classes)``, each initialised
    independently like an ``nn.Linear``."""

    def __init__(self, d_in: int, n_classes: int, k: int):
        super().__init__()
        self.weight = nn.Parameter(_rsqrt_uniform(torch.empty(k, d_in, n_classes), d_in))
        self.bias = nn.Parameter(_rsqrt_uniform(torch.empty(k, n_classes), d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkd,kdc->bkc", x, self.weight) + self.bias


class _Block(nn.Module):
    """EnsembleLinear (or a shared Linear, tabm-mini) -> activation -> dropout."""

    def __init__(self, layer: nn.Module, activation: str, dropout: float):
        super().__init__()
        self.layer = layer
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer(x)
        # the activation sees (B, k * width): each member's unit is a unit (dead-unit probes)
        return self.dropout(self.act(x.flatten(1))).view_as(x)


class _InputScale(nn.Module):
    """tabm-mini's only adapter: ``x_i = r_i ⊙ x`` (random signs at the start)."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.r = nn.Parameter(_scaling(k, d, "random-signs"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.r


def _check_tabm(k: int, depth: int, width: int, dropout: float, arch: str,
                embedding: str | None) -> None:
    _check("k", k, _is_int(k, 1), "an int >= 1")
    _check("depth", depth, _is_int(depth, 1), "an int >= 1")
    _check("width", width, _is_int(width, 1), "an int >= 1")
    _check("dropout", dropout, isinstance(dropout, (int, float)) and 0 <= dropout < 1,
           "in [0, 1)")
    _check("arch", arch, arch in ("tabm", "tabm-mini"), "'tabm' or 'tabm-mini'")
    _check("embedding", embedding, embedding in (None, "none", "plr"), "None or 'plr'")


_TABM_SPACE = {
    "k": CategoricalDist((4, 8, 16, 32)),
    "depth": IntDist(1, 4),
    "width": IntDist(32, 512, log=True),
    "dropout": FloatDist(0.0, 0.5),
    "arch": CategoricalDist(("tabm", "tabm-mini")),
    # the paper's training space (it trains with AdamW)
    "lr": FloatDist(1e-4, 5e-3, log=True),
    "weight_decay": FloatDist(1e-5, 1e-1, log=True),
}


@register_model("tabm", input_kind="tabular", family="nn", search_space=_TABM_SPACE)
class TabM(nn.Module):
    """TabM: k weight-sharing MLPs with rank-1 adapters, trained at once (Gorishniy et al. 2024).

    A step costs about ``k`` times a step of an MLP of the same width (every member sees
    every row) and dropout is expensive on the CPU, so the defaults (k=8, width 64, no
    dropout) keep an epoch within about 4x an ``mlp`` epoch on the CPU. The paper's setting:
    ``tabm(k=32,depth=3,width=512,dropout=0.1,optimizer=adamw,lr=2e-3,weight_decay=3e-4)``.

    Parameters
    ----------
    n_features, n_classes : int
    k : int
        Ensemble members (paper: 32).
    depth, width : int
        Shared hidden layers and their units (paper: 2-3 x 256-512).
    dropout : float
        After each hidden layer (paper: about 0.1).
    activation : str
    arch : {"tabm", "tabm-mini"}
        Adapters on every layer (``r``, ``s`` and per-member biases), or only a scaling of
        the input (TabM-mini, the paper's choice with embeddings).
    embedding : {None, "plr"}
        Periodic embeddings (shared by the members) before the backbone, as in ``mlp-plr``.
    n_frequencies, frequency_scale, d_embedding, lite
        The embeddings' settings when ``embedding="plr"``.
    """

    def __init__(self, n_features: int, n_classes: int, k: int = 8, depth: int = 2,
                 width: int = 64, dropout: float = 0.0, activation: str = "relu",
                 arch: str = "tabm", embedding: str | None = None, n_frequencies: int = 16,
                 frequency_scale: float = 0.1, d_embedding: int = 16, lite: bool = False):
        super().__init__()
        _check_tabm(k, depth, width, dropout, arch, embedding)
        self.k = k
        self.embedding = (PeriodicEmbedding(n_features, n_frequencies, frequency_scale,
                                            d_embedding, lite)
                          if embedding == "plr" else nn.Identity())
        d_in = n_features * d_embedding if embedding == "plr" else n_features
        blocks: list[nn.Module] = []
        if arch == "tabm-mini":
            blocks.append(_InputScale(d_in, k))
        for i in range(depth):
            layer = (EnsembleLinear(d_in, width, k, "random-signs" if i == 0 else "ones")
                     if arch == "tabm" else nn.Linear(d_in, width))
            blocks.append(_Block(layer, activation, dropout))
            d_in = width
        self.backbone = nn.Sequential(*blocks)
        self.head = MemberHeads(width, n_classes, k)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's last hidden layer, ``(B, k, width)``."""
        x = self.embedding(x)
        return self.backbone(x.unsqueeze(1).expand(-1, self.k, -1))

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits, ``(B, k, n_classes)``: what the engine trains on."""
        return self.head(self.forward_features(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Member features -> log of the mean member probability, ``(B, n_classes)``."""
        return ensemble_log_proba(self.head(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
