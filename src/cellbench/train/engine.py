"""The training loop: one function, read top to bottom; extended through callbacks.

Data are tensors materialised once (on the training device when it fits); each epoch draws a
permutation and slices batches from them, with no per-sample Python and no DataLoader.

Every epoch records (the :class:`History` keys):

``running_loss``, ``running_accuracy``
    Averaged over the epoch's batches as trained: dropout and augmentation active, weights
    changing. This is what most tutorials plot as "train".
``train_loss``, ``train_accuracy``, ``train_balanced_accuracy``
    A fixed subset of training rows re-measured in eval mode after the epoch, like
    validation. Dropout cannot make these look worse than validation.
``valid_loss``, ``valid_accuracy``, ``valid_balanced_accuracy``
    The validation part, eval mode. Eval losses are plain cross-entropy (no class weights).
``train_auroc``, ``valid_auroc``
    Only when ``config.monitor`` is one of them: the AUROC (binary, or macro one-vs-rest), the
    selection rule of MedMNIST's baselines. On a small validation part a network grows
    over-confident long before it stops improving; its validation loss then rises while its
    ranking of the images still improves, so the loss keeps an early, under-trained epoch.
``lr``, ``time``, ``epoch``

With ``config.ema`` the ``train_`` and ``valid_`` records measure the moving average of the
weights (:mod:`cellbench.train.ema`), which is also what early stopping keeps and what
training returns; ``running_`` records are always the weights being trained.

Ensembles trained at once (``tabm``): a network with a ``forward_members`` method is trained
on its members' logits ``(B, k, n_classes)``, the loss being the mean over members of each
member's loss (class weights and soft targets apply to each member as to a single network);
its ``forward`` must return ``(B, n_classes)`` logits whose softmax is the ensemble's
prediction (the log of the mean member probability), which is all evaluation uses.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from .._config import TrainConfig
from .._utils import resolve_device
from ..exceptions import StopTraining
from ..models._base import class_weight_vector
from .callbacks import Callback, monitor_mode
from .ema import WeightAverage
from .optim import Schedule, build_optimizer, build_schedule

__all__ = ["History", "TrainState", "channels_last_fn", "effective_monitor", "fit",
           "predict_logits"]

InputFn = Callable[[torch.Tensor], torch.Tensor]
#: a running loss above this many times ln(n_classes) (guessing) has exploded: training stops
DIVERGED = 100
AugmentFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class History(list):
    """Per-epoch records (dicts). ``history.column("valid_loss")`` gives one series."""

    def column(self, key: str) -> list[float]:
        return [rec[key] for rec in self if key in rec]

    def keys(self) -> list[str]:
        return list(self[0]) if self else []


@dataclass
class TrainState:
    """Everything a callback may read, and everything ``--resume`` restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule | None
    config: TrainConfig
    device: torch.device
    generator: torch.Generator
    steps_per_epoch: int
    callbacks: list[Callback] = field(default_factory=list)
    history: History = field(default_factory=History)
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    step: int = 0  # optimizer steps in this call of fit (not restored by --resume)
    loss: torch.Tensor | None = None  # the current batch's loss (detached), from backward on
    best_epoch: int = 0
    stop_reason: str | None = None
    ema: WeightAverage | None = None  # the moving average of the weights (config.ema)

    @property
    def eval_model(self) -> nn.Module:
        """The network that is measured, kept and returned: the weight average, if any."""
        return self.model if self.ema is None else self.ema.module

    def checkpoint(self) -> dict[str, Any]:
        """The resumable state; loads with ``torch.load(weights_only=True)``."""
        return {
            "format": "cellbench-train-state", "version": 1,
            "config": self.config.to_dict(), "epoch": self.epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict() if self.schedule else None,
            "history": [dict(r) for r in self.history],
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.schedule is not None and ckpt["scheduler"] is not None:
            self.schedule.scheduler.load_state_dict(ckpt["scheduler"])
        self.history = History(ckpt["history"])
        self.epoch = int(ckpt["epoch"])
        self.generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        for cb in self.callbacks:
            saved = ckpt["callbacks"].get(type(cb).__name__)
            if saved:
                cb.load_state_dict(saved)


def effective_monitor(config: TrainConfig, has_validation: bool) -> str:
    """``config.monitor``, or its ``train_`` twin when there is no validation part."""
    if not has_validation and config.monitor.startswith("valid_"):
        return "train_" + config.monitor.removeprefix("valid_")
    return config.monitor


def channels_last_fn(input_fn: InputFn | None) -> InputFn:
    """Wrap ``input_fn`` so image batches come out in channels-last layout."""
    def prepare(x: torch.Tensor) -> torch.Tensor:
        if input_fn is not None:
            x = input_fn(x)
        return x.contiguous(memory_format=torch.channels_last)

    return prepare


def _amp(device: torch.device, enabled: bool) -> tuple[Callable[[], Any], Any]:
    """An autocast context factory and a grad scaler (both inert off CUDA)."""
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


@torch.inference_mode()
def predict_logits(model: nn.Module, X: torch.Tensor, *, batch_size: int = 4096,
                   device: torch.device | None = None, input_fn: InputFn | None = None,
                   amp: bool = True) -> torch.Tensor:
    """Eval-mode logits for every row of ``X``, batched; returns float32 on ``device``."""
    device = device or next(model.parameters()).device
    autocast, _ = _amp(device, amp)
    was_training = model.training
    model.eval()
    out = None  # filled batch by batch: no list of pieces and a concatenated copy
    for i in range(0, len(X), batch_size):
        xb = X[i:i + batch_size].to(device, non_blocking=True)
        if input_fn is not None:
            xb = input_fn(xb)
        with autocast():
            logits = model(xb).float()
        if out is None:
            out = torch.empty((len(X), *logits.shape[1:]), device=logits.device)
        out[i:i + len(logits)] = logits
    model.train(was_training)
    return out if out is not None else torch.empty(0, device=device)


def _measure(model: nn.Module, X: torch.Tensor, y: torch.Tensor, prefix: str, n_classes: int,
             input_fn: InputFn | None, amp: bool, batch_size: int,
             auroc: bool = False) -> dict[str, float]:
    """Loss, accuracy and balanced accuracy of ``model`` on ``X``; with ``auroc``, also the
    AUROC (binary, or macro one-vs-rest; NaN with one class), as the reports compute it."""
    logits = predict_logits(model, X, batch_size=batch_size, input_fn=input_fn, amp=amp)
    cm = torch.bincount(y * n_classes + logits.argmax(1), minlength=n_classes ** 2)
    cm = cm.view(n_classes, n_classes)
    per_class = cm.sum(1)
    recall = cm.diag()[per_class > 0] / per_class[per_class > 0]
    loss, acc, bal = torch.stack([F.cross_entropy(logits, y), cm.diag().sum() / len(y),
                                  recall.mean()]).tolist()
    out = {f"{prefix}_loss": loss, f"{prefix}_accuracy": acc,
           f"{prefix}_balanced_accuracy": bal}
    if auroc:  # only when monitored: a sort per class, on the CPU
        out[f"{prefix}_auroc"] = (
            _auroc(y.cpu().numpy(), torch.softmax(logits, 1).cpu().numpy()))
    return out


def _auroc(y: np.ndarray, proba: np.ndarray) -> float:
    """AUROC with ties counted half (Mann-Whitney): binary, or the macro one-vs-rest mean over
    the classes with positives and negatives; NaN with one class. The value the reports give
    (``evaluate.stats.delong_ci``), which this floor does not import."""
    columns = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    aucs = []
    for c in columns:
        positive = y == c
        m, k = int(positive.sum()), int((~positive).sum())
        if m and k:
            ranks = rankdata(proba[:, c])
            aucs.append((ranks[positive].sum() - m * (m + 1) / 2) / (m * k))
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass
class _Loop:
    """What the epochs of one :func:`fit` share: data on the device, batching, criterion."""

    X: torch.Tensor
    y: torch.Tensor
    X_val: torch.Tensor | None
    y_val: torch.Tensor | None
    X_eval: torch.Tensor
    y_eval: torch.Tensor
    batch_size: int
    n_used: int
    eval_batch: int
    n_classes: int
    criterion: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its forward_members
    draw_weights: torch.Tensor | None
    monitor: str
    input_fn: InputFn | None
    augment_fn: AugmentFn | None
    autocast: Callable[[], Any]
    scaler: Any


def _prepare(model: nn.Module, X_train: torch.Tensor, y_train: torch.Tensor,
             X_val: torch.Tensor | None, y_val: torch.Tensor | None, n_classes: int,
             cfg: TrainConfig, classes: Sequence[Any] | None, input_fn: InputFn | None,
             augment_fn: AugmentFn | None) -> tuple[_Loop, int, torch.device]:
    """Move data and model to the device; batching, eval subset, loss, sampler weights."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.random_state)
    model.to(device)
    if cfg.channels_last and X_train.ndim == 4:
        model.to(memory_format=torch.channels_last)
        input_fn = channels_last_fn(input_fn)
    X, y = X_train.to(device), y_train.to(device)
    has_val = X_val is not None and len(X_val) > 0
    if has_val:
        X_val, y_val = X_val.to(device), y_val.to(device)
    else:
        X_val = y_val = None
    n = len(X)
    bs = min(cfg.batch_size, n)
    # a trailing batch of one row is skipped: BatchNorm cannot train on a single row
    n_batches = n // bs + (1 if n % bs > 1 else 0)
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.random_state + 1))
    subset = subset[: cfg.eval_train_size].to(device)
    y_cpu = y.cpu().numpy()
    weight = class_weight_vector(cfg.class_weight, y_cpu, n_classes, classes)
    criterion = nn.CrossEntropyLoss(
        weight=None if weight is None else torch.as_tensor(weight, dtype=torch.float32,
                                                           device=device),
        label_smoothing=float(cfg.label_smoothing))
    draw_weights = None
    if cfg.sampler == "balanced":
        per_class = class_weight_vector("balanced", y_cpu, n_classes)
        draw_weights = torch.as_tensor(per_class[y_cpu], dtype=torch.float64)
    autocast, scaler = _amp(device, cfg.amp)
    loop = _Loop(X, y, X_val, y_val, X[subset], y[subset], bs, min(n, n_batches * bs),
                 # larger eval batches run slower on CPU (cache misses)
                 max(1024, 2 * bs), n_classes, criterion,
                 getattr(model, "forward_members", model), draw_weights,
                 effective_monitor(cfg, has_val), input_fn, augment_fn, autocast, scaler)
    return loop, n_batches, device


def _loss(criterion: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``criterion``; for members' logits ``(B, k, C)``, the mean of the members' losses.

    Rows and members are flattened (row ``b``, member ``i`` -> ``b * k + i``) and the target
    repeated per member. Every member sees the same rows, so the (class-weighted) mean over
    the ``B * k`` terms is the mean over members of each member's own mean loss.
    """
    if logits.ndim == 2:
        return criterion(logits, target)
    k = logits.shape[1]
    return criterion(logits.flatten(0, 1), target.repeat_interleave(k, dim=0))


def _predicted(logits: torch.Tensor) -> torch.Tensor:
    """Scores whose argmax is the prediction: the logits, or the mean member probability."""
    return logits if logits.ndim == 2 else torch.softmax(logits, dim=-1).mean(1)


class _Hooks:
    """The callbacks that override each per-batch hook (the others cost nothing per batch)."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        def overriding(name: str) -> list[Callback]:
            return [cb for cb in callbacks
                    if getattr(type(cb), name) is not getattr(Callback, name)]

        self.batch_begin = overriding("on_batch_begin")
        self.after_backward = overriding("on_after_backward")
        self.batch_end = overriding("on_batch_end")


def _train_epoch(state: TrainState, loop: _Loop, hooks: _Hooks) -> dict[str, float]:
    """One pass over the training rows; returns the running loss and accuracy."""
    model, optimizer, schedule, cfg = state.model, state.optimizer, state.schedule, state.config
    n, bs, n_batches, device = len(loop.X), loop.batch_size, state.steps_per_epoch, state.device
    if loop.draw_weights is None:
        order = torch.randperm(n, generator=state.generator)
    else:
        order = torch.multinomial(loop.draw_weights, n, replacement=True,
                                  generator=state.generator)
    order = order.to(device)
    # running metrics go into buffers (one op per batch each), reduced once per epoch
    batch_loss = torch.empty(n_batches, device=device)
    batch_correct = torch.empty(n_batches, device=device, dtype=torch.long)
    for b in range(n_batches):
        for cb in hooks.batch_begin:
            cb.on_batch_begin(state)
        idx = order[b * bs:(b + 1) * bs]
        xb, yb = loop.X[idx].to(device, non_blocking=True), loop.y[idx]
        if loop.input_fn is not None:
            xb = loop.input_fn(xb)
        target = yb
        if loop.augment_fn is not None:
            xb, target = loop.augment_fn(xb, yb)
        with loop.autocast():
            logits = loop.forward(xb)
            loss = _loss(loop.criterion, logits, target)
        optimizer.zero_grad(set_to_none=True)
        if loop.scaler is None:
            loss.backward()
        else:
            loop.scaler.scale(loss).backward()
            loop.scaler.unscale_(optimizer)
        state.loss = loss.detach()
        for cb in hooks.after_backward:  # raw gradients, before clipping
            cb.on_after_backward(state)
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if loop.scaler is None:
            optimizer.step()
        else:
            loop.scaler.step(optimizer)
            loop.scaler.update()
        if schedule is not None and schedule.interval == "step":
            schedule.scheduler.step()
        if state.ema is not None:
            state.ema.update(model)
        batch_loss[b] = state.loss
        batch_correct[b] = (torch.argmax(_predicted(logits.detach()), 1) == yb).sum()
        state.batch = b + 1
        state.step += 1
        for cb in hooks.batch_end:
            cb.on_batch_end(state)
    sizes = torch.full((n_batches,), float(bs), device=device)
    sizes[-1] = loop.n_used - bs * (n_batches - 1)
    running_loss, running_correct = torch.stack([
        (batch_loss * sizes).sum() / loop.n_used, batch_correct.sum().float()]).tolist()
    return {"running_loss": running_loss, "running_accuracy": running_correct / loop.n_used}


def _end_epoch(state: TrainState, loop: _Loop, record: dict[str, Any]) -> None:
    """Record the epoch, step epoch-wise schedules, run callbacks, stop on divergence."""
    schedule = state.schedule
    state.history.append(record)
    state.epoch += 1
    state.batch = 0
    if schedule is not None and schedule.interval == "epoch":
        schedule.scheduler.step()
    elif schedule is not None and schedule.interval == "plateau":
        schedule.scheduler.step(record[loop.monitor])
    for cb in state.callbacks:
        cb.on_epoch_end(state)
    loss = record["running_loss"]
    chance = math.log(max(loop.n_classes, 2))  # the loss of a model that knows nothing
    if not math.isfinite(loss) or loss > DIVERGED * chance:
        why = ("became" if not math.isfinite(loss) else
               f"exploded to more than {DIVERGED} x the {chance:.2f} of guessing:")
        raise StopTraining(
            f"diverged: the training loss {why} {loss:.3g} in epoch {record['epoch']}; "
            "lower the learning rate (--lr) or clip gradients (--grad-clip 1.0)"
        )


def fit(model: nn.Module, X_train: torch.Tensor, y_train: torch.Tensor,
        X_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, *,
        n_classes: int, config: TrainConfig = TrainConfig(), classes: Sequence[Any] | None = None,
        callbacks: Sequence[Callback] = (), resume: dict[str, Any] | None = None,
        input_fn: InputFn | None = None, augment_fn: AugmentFn | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        schedule: Schedule | None = None) -> TrainState:
    """Train ``model`` and return the final :class:`TrainState` (history, stop reason).

    Parameters
    ----------
    model : nn.Module
        Already built (and seeded) by the caller. A ``forward_members`` method, if any, is
        what training calls (an ensemble's members' logits; see the module docstring).
    X_train, y_train, X_val, y_val : Tensor
        Pre-materialised inputs and int64 class codes. Moved to the device once. The inputs
        may instead be :class:`~cellbench.train.rows.LazyRows` (a large table preprocessed
        batch by batch in host memory; each batch is moved).
    n_classes : int
    config : TrainConfig
        Optimizer, schedule, batch size, epochs, class weights, sampler, clipping, seed.
    classes : sequence, optional
        Class labels, for ``config.class_weight`` given as a mapping label -> weight.
    callbacks : sequence of Callback
        E.g. ``EarlyStopping``, ``Checkpoint``, ``ProgressBar``; probes use the per-batch
        hooks ``on_batch_begin`` and ``on_after_backward``.
    resume : dict, optional
        A checkpoint from :meth:`TrainState.checkpoint`; training continues after its epoch.
    input_fn : callable, optional
        Applied on the device to every batch (train and eval), e.g. uint8 → normalised float.
    augment_fn : callable, optional
        ``(x, y) -> (x, target)`` on training batches only; ``target`` may be soft (MixUp).
    optimizer : torch.optim.Optimizer, optional
        Built on ``model.parameters()`` by the caller (moving the model to the device keeps
        its parameters); default: ``config.optimizer`` with ``config.lr``.
    schedule : Schedule, optional
        A learning-rate schedule on that optimizer (e.g. the LR range test's exponential
        sweep); default: ``config.scheduler`` (None: constant).
    """
    cfg = config
    loop, n_batches, device = _prepare(model, X_train, y_train, X_val, y_val, n_classes, cfg,
                                       classes, input_fn, augment_fn)
    if optimizer is None:
        optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr,
                                    cfg.weight_decay, cfg.optimizer_kwargs)
    if schedule is None:
        schedule = build_schedule(cfg.scheduler, optimizer, cfg.max_epochs, n_batches,
                                  monitor_mode(loop.monitor), cfg.scheduler_kwargs)
    cbs = sorted(callbacks, key=lambda cb: cb.order)
    gen = torch.Generator().manual_seed(cfg.random_state)
    state = TrainState(model, optimizer, schedule, cfg, device, gen, n_batches, cbs,
                       ema=None if cfg.ema is None else WeightAverage(model, cfg.ema))
    if resume is not None:
        state.load(resume)
    hooks = _Hooks(cbs)
    for cb in cbs:
        cb.on_train_begin(state)
    try:
        while state.epoch < cfg.max_epochs:
            start = time.perf_counter()
            model.train()
            lr = optimizer.param_groups[0]["lr"]
            for cb in cbs:
                cb.on_epoch_begin(state)
            record: dict[str, Any] = {"epoch": state.epoch + 1, "lr": lr,
                                      **_train_epoch(state, loop, hooks)}
            auroc = loop.monitor.endswith("_auroc")
            record.update(_measure(state.eval_model, loop.X_eval, loop.y_eval, "train",
                                   n_classes, loop.input_fn, cfg.amp, loop.eval_batch, auroc))
            if loop.X_val is not None:
                record.update(_measure(state.eval_model, loop.X_val, loop.y_val, "valid",
                                       n_classes, loop.input_fn, cfg.amp, loop.eval_batch,
                                       auroc))
            record["time"] = time.perf_counter() - start
            _end_epoch(state, loop, record)
    except StopTraining as stop:
        state.stop_reason = str(stop)
    if state.ema is not None:  # callbacks (early stopping's best average) may override it
        model.load_state_dict(state.ema.module.state_dict())
    for cb in cbs:
        cb.on_train_end(state)
    if not state.best_epoch:
        state.best_epoch = state.epoch
    return state
