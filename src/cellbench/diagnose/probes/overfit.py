"""Probe 2: overfit one small batch (Karpathy's recipe)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..._config import DataConfig, TrainConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ...exceptions import StopTraining
from ...train.callbacks import Callback
from ...train.engine import TrainState
from ...train.trainer import Prepared
from ._common import (
    ModelFn,
    ProbeResult,
    check,
    int_at_least,
    probe_copy,
    raise_problems,
    resolve_prepared,
    stratified_rows,
)

__all__ = ["OverfitResult", "overfit_batch"]


@dataclass(frozen=True)
class OverfitResult(ProbeResult):
    """What :func:`overfit_batch` measured, one entry per optimizer step.

    Attributes
    ----------
    loss : tuple of float
        Training-mode loss of the batch at each step, before that step's update (dropout on).
    eval_loss, eval_accuracy : tuple of float
        Eval-mode loss and accuracy on the same batch after each step's update.
    final_loss, final_accuracy : float
        The last ``eval_loss`` and ``eval_accuracy``.
    best_accuracy : float
    memorised_step : int or None
        First step after which every row of the batch is classified correctly (eval mode).
    diverged : bool
        The loss became non-finite, or training stopped as diverged (the engine stops a
        running loss far above that of guessing).
    n_rows, n_steps : int
        Batch size, and the step budget (fewer steps run when the batch is memorised with an
        eval loss below ``stop_loss``, or on divergence).
    optimizer : str
    lr : float
    stop_reason : str or None
    """

    probe: ClassVar[str] = "overfit_batch"

    loss: tuple[float, ...]
    eval_loss: tuple[float, ...]
    eval_accuracy: tuple[float, ...]
    final_loss: float
    final_accuracy: float
    best_accuracy: float
    memorised_step: int | None
    diverged: bool
    n_rows: int
    n_steps: int
    optimizer: str
    lr: float
    stop_reason: str | None


class _Memorised(Callback):
    """Stop once the batch is classified perfectly in eval mode with a low eval loss."""

    def __init__(self, stop_loss: float) -> None:
        self.stop_loss = stop_loss

    def on_epoch_end(self, state: TrainState) -> None:
        rec = state.history[-1]
        if rec["train_accuracy"] >= 1.0 and rec["train_loss"] < self.stop_loss:
            raise StopTraining(f"memorised: accuracy 1.0 and eval loss "
                               f"{rec['train_loss']:.3g} < {self.stop_loss:g}")


def overfit_batch(ds: Dataset, split: Split, train_cfg: TrainConfig,
                  data_cfg: DataConfig | None = None, *, batch_size: int = 64,
                  n_steps: int = 150, stop_loss: float = 0.01,
                  model_fn: ModelFn | None = None,
                  prepared: Prepared | None = None) -> OverfitResult:
    """Train on one fixed batch of training rows; a healthy setting memorises it quickly.

    Karpathy's recipe: a network that cannot drive the loss on a few dozen rows towards zero
    has a bug or a broken setting (learning rate far too low or too high, dead units,
    vanishing or exploding gradients), and more data or epochs will not help. The batch is a
    stratified, seeded subset of the training rows, fed whole at every step with the user's
    optimizer, learning rate, weight decay, gradient clipping and class weights; no
    learning-rate schedule, no sampler, no augmentation; dropout stays as the model has it.
    Accuracy and loss are measured in eval mode after every step, so dropout cannot hide a
    memorised batch.

    Parameters
    ----------
    ds, split, train_cfg, data_cfg
        As for :func:`loss_at_init`.
    batch_size : int
        Rows in the batch (fewer when the training part is smaller).
    n_steps : int
        Step budget.
    stop_loss : float
        Stop early once every row is right and the eval loss is below this.
    model_fn, prepared : optional
        As for every probe: see :mod:`cellbench.diagnose.probes`.

    Returns
    -------
    OverfitResult
    """
    problems: list[str] = []
    int_at_least(problems, "batch_size", batch_size, 2)
    int_at_least(problems, "n_steps", n_steps, 1)
    check(problems, isinstance(stop_loss, (int, float)) and stop_loss >= 0,
          f"stop_loss must be a number >= 0; got {stop_loss!r}.")
    raise_problems(problems, "overfit_batch")
    base = resolve_prepared(ds, split, train_cfg, data_cfg, prepared)
    return _overfit_batch(base, train_cfg, batch_size, n_steps, stop_loss, model_fn)


def _overfit_batch(base: Prepared, train_cfg: TrainConfig, batch_size: int, n_steps: int,
                   stop_loss: float, model_fn: ModelFn | None) -> OverfitResult:
    rows = stratified_rows(base.y_train, batch_size, train_cfg.random_state)
    p = probe_copy(base, rows, model_fn)
    n = len(rows)
    cfg = train_cfg.replace(batch_size=n, max_epochs=n_steps, scheduler=None,
                            scheduler_kwargs={}, sampler=None, augment=None,
                            eval_train_size=n)
    state = p.fit_network(cfg, callbacks=[_Memorised(stop_loss)])
    hist = state.history
    loss = [float(v) for v in hist.column("running_loss")]
    eval_loss = [float(v) for v in hist.column("train_loss")]
    eval_acc = [float(v) for v in hist.column("train_accuracy")]
    memorised = next((i + 1 for i, a in enumerate(eval_acc) if a >= 1.0), None)
    return OverfitResult(
        loss=tuple(loss), eval_loss=tuple(eval_loss), eval_accuracy=tuple(eval_acc),
        final_loss=eval_loss[-1] if eval_loss else math.nan,
        final_accuracy=eval_acc[-1] if eval_acc else math.nan,
        best_accuracy=max(eval_acc) if eval_acc else math.nan, memorised_step=memorised,
        diverged=(not all(math.isfinite(v) for v in loss + eval_loss)
                  or (state.stop_reason or "").startswith("diverged")), n_rows=n,
        n_steps=n_steps, optimizer=train_cfg.optimizer, lr=float(train_cfg.lr),
        stop_reason=state.stop_reason,
    )
