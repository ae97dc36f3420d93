"""Probe 1: the loss of the freshly built network, beside ln(K) and the class prior."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..._config import DataConfig, TrainConfig
from ..._utils import resolve_device
from ...data.dataset import Dataset
from ...data.splits import Split
from ...train.engine import predict_logits
from ...train.trainer import Prepared
from ._common import (
    ModelFn,
    ProbeResult,
    int_at_least,
    probe_copy,
    raise_problems,
    resolve_prepared,
    stratified_rows,
)

__all__ = ["InitLossResult", "loss_at_init"]


@dataclass(frozen=True)
class InitLossResult(ProbeResult):
    """What :func:`loss_at_init` measured.

    Attributes
    ----------
    loss : float
        Mean eval-mode cross-entropy of the freshly built network on ``n_rows`` training rows.
    log_k : float
        ``ln(n_classes)``: the loss of uniform predictions.
    prior_entropy : float
        Entropy (nats) of the training class frequencies: the loss of predicting the prior.
    prior : tuple of float
        Training class frequencies, one per class code.
    mean_proba : tuple of float
        The network's mean softmax output per class on those rows.
    logit_std : float
        Standard deviation of the logits over rows and classes (large: over-confident start).
    n_rows, n_classes : int
    """

    probe: ClassVar[str] = "loss_at_init"

    loss: float
    log_k: float
    prior_entropy: float
    prior: tuple[float, ...]
    mean_proba: tuple[float, ...]
    logit_std: float
    n_rows: int
    n_classes: int


def loss_at_init(ds: Dataset, split: Split, train_cfg: TrainConfig,
                 data_cfg: DataConfig | None = None, *, max_rows: int = 4096,
                 model_fn: ModelFn | None = None,
                 prepared: Prepared | None = None) -> InitLossResult:
    """Eval-mode cross-entropy of the freshly built network, beside ln(K) and the prior.

    A fresh classifier should predict about uniformly: a loss near ``ln(K)`` (or, at most,
    near the entropy of the class prior). Far above it, the initial logits are large and
    confidently wrong (a bad initialisation, unscaled inputs, a huge output bias), and the
    first steps are spent undoing that.

    Parameters
    ----------
    ds : Dataset
    split : Split
        Only ``split.train`` is read.
    train_cfg : TrainConfig
        The network (``model``, ``model_kwargs``) and ``random_state`` as for training.
    data_cfg : DataConfig, optional
        Preprocessing, fitted on the training rows (default: standardize).
    max_rows : int
        Training rows measured (a stratified, seeded subset when there are more).
    model_fn, prepared : optional
        As for every probe: see :mod:`cellbench.diagnose.probes`.

    Returns
    -------
    InitLossResult
    """
    problems: list[str] = []
    int_at_least(problems, "max_rows", max_rows, 1)
    raise_problems(problems, "loss_at_init")
    base = resolve_prepared(ds, split, train_cfg, data_cfg, prepared)
    return _loss_at_init(base, train_cfg, max_rows, model_fn)


def _loss_at_init(base: Prepared, cfg: TrainConfig, max_rows: int,
                  model_fn: ModelFn | None) -> InitLossResult:
    rows = stratified_rows(base.y_train, max_rows, cfg.random_state)
    p = probe_copy(base, rows, model_fn)
    device = resolve_device(cfg.device)
    p.model.to(device)
    logits = predict_logits(p.model, torch.from_numpy(np.asarray(p.X_train)), device=device,
                            input_fn=p.input_fn, amp=False).double()
    y = torch.from_numpy(p.y_train).to(device)
    k = p.n_classes
    prior = np.bincount(base.y_train, minlength=k) / len(base.y_train)
    nonzero = prior[prior > 0]
    loss, logit_std = torch.stack([F.cross_entropy(logits, y), logits.std()]).tolist()
    mean_proba = torch.softmax(logits, dim=1).mean(0).tolist()
    return InitLossResult(
        loss=float(loss), log_k=math.log(k),
        prior_entropy=float(-(nonzero * np.log(nonzero)).sum()),
        prior=tuple(float(v) for v in prior), mean_proba=tuple(float(v) for v in mean_proba),
        logit_std=float(logit_std), n_rows=len(rows), n_classes=k,
    )
