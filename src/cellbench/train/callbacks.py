"""Callbacks: the engine's extension points (skorch/fastai style).

A callback overrides any of ``on_train_begin``, ``on_epoch_begin``, ``on_batch_begin``,
``on_after_backward``, ``on_batch_end``, ``on_epoch_end`` and ``on_train_end``; each receives
the :class:`~cellbench.train.engine.TrainState`. Within a batch the order is: ``on_batch_begin``
(e.g. set the learning rate), forward and backward, ``on_after_backward`` (gradients are in
``p.grad``, before clipping; ``state.loss`` holds the batch loss), the optimizer step,
``on_batch_end``. Per-batch hooks cost nothing unless a callback overrides them. To stop
training, raise :class:`~cellbench.exceptions.StopTraining` with a reason.
State that must survive ``--resume`` goes in ``state_dict``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._utils import atomic_torch_save, progress_bar
from ..exceptions import InvalidParameterError, StopTraining

if TYPE_CHECKING:
    from .engine import TrainState

__all__ = ["MONITOR_MODES", "Callback", "Checkpoint", "EarlyStopping", "ProgressBar",
           "monitor_mode"]

#: Direction of every metric the history records, so no direction is guessed from a name.
MONITOR_MODES = {"loss": "min", "accuracy": "max", "balanced_accuracy": "max", "auroc": "max"}
HISTORY_SPLITS = ("running", "train", "valid")


def monitor_mode(monitor: str) -> str:
    """``"min"`` or ``"max"`` for a history key such as ``valid_loss``."""
    split, _, metric = monitor.partition("_")
    if split not in HISTORY_SPLITS or metric not in MONITOR_MODES:
        keys = [f"{s}_{m}" for s in HISTORY_SPLITS for m in MONITOR_MODES]
        raise InvalidParameterError(
            f"monitor must be a history key ({', '.join(keys)}); got {monitor!r}."
        )
    return MONITOR_MODES[metric]


class Callback:
    """Base class; every hook does nothing."""

    #: callbacks run in ascending order (EarlyStopping before Checkpoint)
    order = 0

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_batch_begin(self, state: TrainState) -> None: ...

    def on_after_backward(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EarlyStopping(Callback):
    """Track the best epoch of ``monitor``; stop after ``patience`` epochs without improvement.

    The best weights are restored when training ends (also when ``patience`` is None, which
    keeps training to ``max_epochs`` but still returns the best epoch's model).

    Parameters
    ----------
    monitor : str
        History key, e.g. ``valid_loss`` or ``valid_balanced_accuracy``.
    patience : int or None
    min_delta : float
        Improvements smaller than this do not count.
    restore_best : bool
    """

    order = 10

    def __init__(self, monitor: str = "valid_loss", patience: int | None = 10,
                 min_delta: float = 0.0, restore_best: bool = True) -> None:
        self.mode = monitor_mode(monitor)
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise InvalidParameterError(f"patience must be an int >= 1 or None; got "
                                        f"{patience!r}.")
        if min_delta < 0:
            raise InvalidParameterError(f"min_delta must be >= 0; got {min_delta!r}.")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.best_score: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _improved(self, score: float) -> bool:
        if not math.isfinite(score):
            return False
        if self.best_score is None:
            return True
        if self.mode == "min":
            return score < self.best_score - self.min_delta
        return score > self.best_score + self.min_delta

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history[-1]
        if self.monitor not in record:
            raise InvalidParameterError(
                f"monitor must be a key of the training history; got {self.monitor!r}, but "
                f"this run records {', '.join(sorted(record))}. Without a validation part, "
                "monitor 'train_loss'."
            )
        score = float(record[self.monitor])
        if self._improved(score):
            self.best_score, self.best_epoch, self.wait = score, record["epoch"], 0
            self.best_weights = {k: v.detach().clone() for k, v in
                                 state.eval_model.state_dict().items()}
        else:
            self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            raise StopTraining(
                f"early stopping: {self.monitor} has not improved for {self.patience} epochs "
                f"(best {self.best_score:.4g} at epoch {self.best_epoch})"
            )

    def on_train_end(self, state: TrainState) -> None:
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)
        state.best_epoch = self.best_epoch or state.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "wait": self.wait, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = state["best_score"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.best_weights = state["best_weights"]


class Checkpoint(Callback):
    """Save the full training state (resumable) to ``path`` after every ``every`` epochs.

    Written atomically: an interrupted save leaves the previous checkpoint intact.
    """

    order = 20

    def __init__(self, path: str | Path, every: int = 1, extra: dict[str, Any] | None = None):
        if every < 1:
            raise InvalidParameterError(f"every must be an int >= 1; got {every!r}.")
        self.path = Path(path)
        self.every = every
        self.extra = extra or {}

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.every == 0:
            self.save(state)

    def on_train_end(self, state: TrainState) -> None:
        """The final save says training finished (with the kept epoch's weights, restored
        by early stopping before this runs): ``--resume`` loads it instead of training on."""
        self.save(state, finished=True, best_epoch=state.best_epoch,
                  stop_reason=state.stop_reason)

    def save(self, state: TrainState, **more: Any) -> None:
        atomic_torch_save({**state.checkpoint(), **self.extra, **more}, self.path)


class ProgressBar(Callback):
    """A rich progress bar: epochs with ETA, the batch within the epoch, and latest metrics.

    Pass a running ``rich.progress.Progress`` to share one display between many trainings.
    """

    order = 30

    def __init__(self, description: str = "training", progress: Any = None,
                 refresh_seconds: float = 0.2) -> None:
        self.description = description
        self.progress = progress
        self.refresh_seconds = refresh_seconds
        self._own = progress is None
        self._task = None
        self._last = 0.0

    def on_train_begin(self, state: TrainState) -> None:
        if self._own:
            self.progress = progress_bar(transient=False)
            self.progress.start()
        self._task = self.progress.add_task(self.description, total=state.config.max_epochs,
                                            completed=state.epoch, info="")
        self._batches = state.steps_per_epoch

    def on_batch_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        if now - self._last >= self.refresh_seconds:
            self._last = now
            frac = state.batch / max(1, self._batches)
            self.progress.update(self._task, completed=state.epoch + frac)

    def on_epoch_end(self, state: TrainState) -> None:
        rec = state.history[-1]
        info = " ".join(f"{short}={rec[k]:.4f}" for k, short in
                        (("valid_loss", "val loss"), ("valid_accuracy", "val acc")) if k in rec)
        self.progress.update(self._task, completed=state.epoch, info=info)

    def on_train_end(self, state: TrainState) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=state.config.max_epochs
                                 if state.stop_reason is None else state.epoch)
            if not self._own:
                self.progress.remove_task(self._task)
        if self._own and self.progress is not None:
            self.progress.stop()
