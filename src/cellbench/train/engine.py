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
``lr``, ``time``, ``epoch``
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._config import TrainConfig
from .._utils import resolve_device
from ..exceptions import StopTraining
from ..models._base import class_weight_vector
from .callbacks import Callback, monitor_mode
from .optim import Schedule, build_optimizer, build_schedule

__all__ = ["History", "TrainState", "channels_last_fn", "effective_monitor", "fit",
           "predict_logits"]

InputFn = Callable[[torch.Tensor], torch.Tensor]
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
    best_epoch: int = 0
    stop_reason: str | None = None

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
    out = []
    for i in range(0, len(X), batch_size):
        xb = X[i:i + batch_size].to(device, non_blocking=True)
        if input_fn is not None:
            xb = input_fn(xb)
        with autocast():
            out.append(model(xb).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)


def _measure(model: nn.Module, X: torch.Tensor, y: torch.Tensor, prefix: str, n_classes: int,
             input_fn: InputFn | None, amp: bool, batch_size: int) -> dict[str, float]:
    logits = predict_logits(model, X, batch_size=batch_size, input_fn=input_fn, amp=amp)
    cm = torch.bincount(y * n_classes + logits.argmax(1), minlength=n_classes ** 2)
    cm = cm.view(n_classes, n_classes)
    per_class = cm.sum(1)
    recall = cm.diag()[per_class > 0] / per_class[per_class > 0]
    loss, acc, bal = torch.stack([F.cross_entropy(logits, y), cm.diag().sum() / len(y),
                                  recall.mean()]).tolist()
    return {f"{prefix}_loss": loss, f"{prefix}_accuracy": acc,
            f"{prefix}_balanced_accuracy": bal}


def fit(model: nn.Module, X_train: torch.Tensor, y_train: torch.Tensor,
        X_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, *,
        n_classes: int, config: TrainConfig = TrainConfig(), classes: Sequence[Any] | None = None,
        callbacks: Sequence[Callback] = (), resume: dict[str, Any] | None = None,
        input_fn: InputFn | None = None, augment_fn: AugmentFn | None = None) -> TrainState:
    """Train ``model`` and return the final :class:`TrainState` (history, stop reason).

    Parameters
    ----------
    model : nn.Module
        Already built (and seeded) by the caller.
    X_train, y_train, X_val, y_val : Tensor
        Pre-materialised inputs and int64 class codes. Moved to the device once.
    n_classes : int
    config : TrainConfig
    classes : sequence, optional
        Class labels, for ``config.class_weight`` given as a mapping label -> weight.
        Optimizer, schedule, batch size, epochs, class weights, sampler, clipping, seed.
    callbacks : sequence of Callback
        E.g. ``EarlyStopping``, ``Checkpoint``, ``ProgressBar``.
    resume : dict, optional
        A checkpoint from :meth:`TrainState.checkpoint`; training continues after its epoch.
    input_fn : callable, optional
        Applied on the device to every batch (train and eval), e.g. uint8 → normalised float.
    augment_fn : callable, optional
        ``(x, y) -> (x, target)`` on training batches only; ``target`` may be soft (MixUp).
    """
    cfg = config
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
    n = len(X)
    bs = min(cfg.batch_size, n)
    # a trailing batch of one row is skipped: BatchNorm cannot train on a single row
    n_batches = n // bs + (1 if n % bs > 1 else 0)
    n_used = min(n, n_batches * bs)
    eval_batch = max(1024, 2 * bs)  # larger eval batches run slower on CPU (cache misses)
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.random_state + 1))
    subset = subset[: cfg.eval_train_size].to(device)
    X_eval, y_eval = X[subset], y[subset]
    y_cpu = y.cpu().numpy()
    weight = class_weight_vector(cfg.class_weight, y_cpu, n_classes, classes)
    criterion = nn.CrossEntropyLoss(
        weight=None if weight is None else torch.as_tensor(weight, dtype=torch.float32,
                                                           device=device))
    draw_weights = None
    if cfg.sampler == "balanced":
        per_class = class_weight_vector("balanced", y_cpu, n_classes)
        draw_weights = torch.as_tensor(per_class[y_cpu], dtype=torch.float64)
    monitor = effective_monitor(cfg, has_val)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay,
                                cfg.optimizer_kwargs)
    schedule = build_schedule(cfg.scheduler, optimizer, cfg.max_epochs, n_batches,
                              monitor_mode(monitor), cfg.scheduler_kwargs)
    autocast, scaler = _amp(device, cfg.amp)
    cbs = sorted(callbacks, key=lambda cb: cb.order)
    batch_cbs = [cb for cb in cbs if type(cb).on_batch_end is not Callback.on_batch_end]
    gen = torch.Generator().manual_seed(cfg.random_state)
    state = TrainState(model, optimizer, schedule, cfg, device, gen, n_batches, cbs)
    if resume is not None:
        state.load(resume)

    for cb in cbs:
        cb.on_train_begin(state)
    try:
        while state.epoch < cfg.max_epochs:
            start = time.perf_counter()
            model.train()
            lr = optimizer.param_groups[0]["lr"]
            for cb in cbs:
                cb.on_epoch_begin(state)
            if draw_weights is None:
                order = torch.randperm(n, generator=gen)
            else:
                order = torch.multinomial(draw_weights, n, replacement=True, generator=gen)
            order = order.to(device)
            # running metrics go into buffers (one op per batch each), reduced once per epoch
            batch_loss = torch.empty(n_batches, device=device)
            predicted = torch.empty(n_used, device=device, dtype=torch.long)
            for b in range(n_batches):
                idx = order[b * bs:(b + 1) * bs]
                xb, yb = X[idx], y[idx]
                if input_fn is not None:
                    xb = input_fn(xb)
                target = yb
                if augment_fn is not None:
                    xb, target = augment_fn(xb, yb)
                with autocast():
                    logits = model(xb)
                    loss = criterion(logits, target)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                else:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is None:
                    optimizer.step()
                else:
                    scaler.step(optimizer)
                    scaler.update()
                if schedule is not None and schedule.interval == "step":
                    schedule.scheduler.step()
                batch_loss[b] = loss.detach()
                torch.argmax(logits.detach(), 1, out=predicted[b * bs:b * bs + len(idx)])
                state.batch = b + 1
                for cb in batch_cbs:
                    cb.on_batch_end(state)

            sizes = torch.full((n_batches,), float(bs), device=device)
            sizes[-1] = n_used - bs * (n_batches - 1)
            running_loss, running_correct = torch.stack([
                (batch_loss * sizes).sum() / n_used,
                (predicted == y[order[:n_used]]).sum().float()]).tolist()
            record = {"epoch": state.epoch + 1, "lr": lr, "running_loss": running_loss,
                      "running_accuracy": running_correct / n_used}
            record.update(_measure(model, X_eval, y_eval, "train", n_classes, input_fn,
                                   cfg.amp, eval_batch))
            if has_val:
                record.update(_measure(model, X_val, y_val, "valid", n_classes, input_fn,
                                       cfg.amp, eval_batch))
            record["time"] = time.perf_counter() - start
            state.history.append(record)
            state.epoch += 1
            state.batch = 0
            if schedule is not None and schedule.interval == "epoch":
                schedule.scheduler.step()
            elif schedule is not None and schedule.interval == "plateau":
                schedule.scheduler.step(record[monitor])
            for cb in cbs:
                cb.on_epoch_end(state)
            if not math.isfinite(record["running_loss"]):
                raise StopTraining(
                    f"diverged: the training loss became {record['running_loss']} in epoch "
                    f"{record['epoch']}; lower the learning rate (--lr) or clip gradients "
                    "(--grad-clip 1.0)"
                )
    except StopTraining as stop:
        state.stop_reason = str(stop)
    for cb in cbs:
        cb.on_train_end(state)
    if not state.best_epoch:
        state.best_epoch = state.epoch
    return state
