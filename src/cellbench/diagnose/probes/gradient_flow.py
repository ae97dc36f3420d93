"""Probe 3: gradient flow and dead units over the first steps of real training."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..._config import DataConfig, TrainConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ...exceptions import StopTraining
from ...train.callbacks import Callback
from ...train.engine import TrainState
from ...train.trainer import Prepared
from ._common import (
    EVAL_ROWS,
    ModelFn,
    ProbeResult,
    int_at_least,
    nanmedian,
    probe_copy,
    raise_problems,
    resolve_prepared,
    stratified_rows,
)

__all__ = ["GradientFlow", "GradientFlowResult", "gradient_flow"]


@dataclass(frozen=True)
class GradientFlowResult(ProbeResult):
    """Per-layer and per-activation traces over the recorded steps, with summaries.

    Attributes
    ----------
    layers : tuple of str
        Parametrised modules (conv, linear, norm, ...) in forward order (module names).
    layer_types : tuple of str
        Their class names (``Linear``, ``Conv2d``, ``BatchNorm1d``).
    n_params : tuple of int
        Trainable parameters of each layer (its own, not its children's).
    activations : tuple of str
        Activation call sites in forward order: the module name, with ``#k`` when one module
        is applied k times in a forward pass (the seed-000 CNN re-uses one LeakyReLU).
    activation_types : tuple of str
    steps : tuple of int
        Optimizer steps recorded (1-based).
    loss, lr : tuple of float
        Batch loss (before the step) and learning rate, per recorded step.
    grad_norm, weight_norm : tuple of tuple of float
        ``layers x steps``: L2 norms of the raw gradient (before clipping) and of the weights
        before the step.
    update_ratio : tuple of tuple of float
        ``layers x steps``: ``||w_after - w_before|| / ||w_before||`` of the step (``inf``
        for a zero layer that moved, ``nan`` for a zero layer that did not).
    dead_fraction : tuple of tuple of float
        ``activations x steps``: fraction of units (features; channels of conv maps) that
        pass no signal for any row of the step's batch: output <= 0 everywhere for ReLU-like
        activations (ReLU, ReLU6, ELU, CELU, SELU, GELU, SiLU, Mish, Hardswish), output < 0
        (pre-activation < 0) everywhere for LeakyReLU/PReLU/RReLU; for Tanh/Sigmoid, the
        fraction saturated everywhere (|tanh| >= 0.99, sigmoid outside [0.01, 0.99]).
    median_grad_norm, median_update_ratio : tuple of float
        Per layer, median over the recorded steps (non-finite values ignored).
    median_dead_fraction : tuple of float
        Per activation, median over the recorded steps.
    first_last_grad_ratio : float
        Median gradient norm of the first weight layer (conv/linear) over that of the last;
        far below 1: vanishing gradients towards the input; ``nan`` with fewer than two.
    nonfinite : bool
        The loss became non-finite.
    first_nonfinite_step : int or None
    stop_reason : str or None
    """

    probe: ClassVar[str] = "gradient_flow"

    layers: tuple[str, ...]
    layer_types: tuple[str, ...]
    n_params: tuple[int, ...]
    activations: tuple[str, ...]
    activation_types: tuple[str, ...]
    steps: tuple[int, ...]
    loss: tuple[float, ...]
    lr: tuple[float, ...]
    grad_norm: tuple[tuple[float, ...], ...]
    weight_norm: tuple[tuple[float, ...], ...]
    update_ratio: tuple[tuple[float, ...], ...]
    dead_fraction: tuple[tuple[float, ...], ...]
    median_grad_norm: tuple[float, ...]
    median_update_ratio: tuple[float, ...]
    median_dead_fraction: tuple[float, ...]
    first_last_grad_ratio: float
    nonfinite: bool
    first_nonfinite_step: int | None
    stop_reason: str | None


#: activation modules whose units count as dead when their output is <= 0 for every row
_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
              nn.Hardswish)
#: ... when their output (the sign of their input) is < 0 for every row
_LEAKY = (nn.LeakyReLU, nn.PReLU, nn.RReLU)
#: ... when saturated for every row
_SATURATING = (nn.Tanh, nn.Sigmoid)
_ACTIVATIONS = _RELU_LIKE + _LEAKY + _SATURATING
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                  nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear, nn.Embedding)


def _norm(tensors: Sequence[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    """The L2 norm of several tensors taken together (``empty`` when there are none)."""
    if not tensors:
        return empty
    return torch.stack([t.detach().float().norm() for t in tensors]).norm()


def _passing(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """Where the activation passes signal (boolean, the shape of ``out``)."""
    if isinstance(module, _LEAKY):
        return out >= 0
    if isinstance(module, nn.Tanh):
        return out.abs() < 0.99
    if isinstance(module, nn.Sigmoid):
        return (out > 0.01) & (out < 0.99)
    return out > 0


class GradientFlow(Callback):
    """Record per-layer gradient/weight/update norms and dead units every ``every`` steps.

    Forward hooks are registered on the network in ``on_train_begin`` and removed in
    ``on_train_end``; they compute only on recorded steps (a recorded step costs about one
    extra copy of the weights and one comparison per activation value), and never during
    eval-mode measurement. Layers and activation call sites are ordered as the first
    recorded forward pass calls them. :meth:`result` returns a :class:`GradientFlowResult`.

    Parameters
    ----------
    every : int
        Record steps 1, 1 + every, 1 + 2 * every, ...
    max_steps : int, optional
        Stop training after this many optimizer steps (a probe); None: never.
    stop_on_nonfinite : bool
        Stop training at the first non-finite batch loss (after recording it).

    Examples
    --------
    >>> from cellbench.train.trainer import train_model
    >>> flow = GradientFlow(every=50)
    >>> fitted = train_model(ds, split, cfg, callbacks=(flow,))  # doctest: +SKIP
    >>> flow.result().median_dead_fraction  # doctest: +SKIP
    """

    order = 40

    def __init__(self, every: int = 1, max_steps: int | None = None,
                 stop_on_nonfinite: bool = False) -> None:
        problems: list[str] = []
        int_at_least(problems, "every", every, 1)
        if max_steps is not None:
            int_at_least(problems, "max_steps", max_steps, 1)
        raise_problems(problems, "GradientFlow")
        self.every = int(every)
        self.max_steps = max_steps
        self.stop_on_nonfinite = stop_on_nonfinite
        self._reset()
        self._reset_hooks()

    def _reset(self) -> None:
        """Empty traces (kept across ``on_train_begin``, so a resumed run continues them)."""
        self.layers: list[str] = []
        self.layer_types: list[str] = []
        self.n_params: list[int] = []
        self.activations: list[str] = []
        self.activation_types: list[str] = []
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.lr: list[float] = []
        self.grad_norm: list[list[float]] = []  # steps x layers while recording
        self.weight_norm: list[list[float]] = []
        self.update_ratio: list[list[float]] = []
        self.dead_fraction: list[list[float]] = []
        self.first_nonfinite_step: int | None = None
        self.stop_reason: str | None = None
        self._handles: list[Any] = []
        self._modules: dict[str, nn.Module] = {}
        self._params: dict[str, list[nn.Parameter]] = {}

    def _reset_hooks(self) -> None:
        self._active = False
        self._ordered = False
        self._calls: dict[str, int] = {}
        self._layer_order: list[str] = []
        self._site_order: list[tuple[str, int]] = []
        self._sites: list[tuple[str, int]] = []
        self._dead_now: dict[tuple[str, int], torch.Tensor] = {}
        self._pending: list[torch.Tensor] | None = None
        self._before: list[list[torch.Tensor]] = []
        self._lr = math.nan

    # -- hooks --------------------------------------------------------------------------------
    def on_train_begin(self, state: TrainState) -> None:
        self._reset_hooks()
        model = state.model
        self._modules = dict(model.named_modules())
        self._params = {}
        for name, module in self._modules.items():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                self._params[name] = own
                self._handles.append(module.register_forward_pre_hook(self._layer_hook(name)))
            if isinstance(module, _ACTIVATIONS):
                self._handles.append(module.register_forward_hook(self._act_hook(name)))

    def _layer_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if self._active and not self._ordered and name not in self._layer_order:
                self._layer_order.append(name)
        return hook

    def _act_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if not self._active or not isinstance(out, torch.Tensor):
                return
            k = self._calls.get(name, 0)
            self._calls[name] = k + 1
            if not self._ordered:
                self._site_order.append((name, k))
            alive = _passing(module, out.detach())
            if alive.ndim >= 2:
                alive = alive.any(0)
                if alive.ndim >= 2:  # conv maps: a unit is a channel, at any position
                    alive = alive.flatten(1).any(1)
            else:
                alive = alive.any().reshape(1)
            self._dead_now[(name, k)] = 1.0 - alive.float().mean()  # a 0-d tensor, no sync
        return hook

    def on_batch_begin(self, state: TrainState) -> None:
        self._active = state.step % self.every == 0
        self._calls = {}
        self._dead_now = {}

    def _finish_order(self) -> None:
        self._ordered = True
        self.layers = list(self._layer_order)
        self.layer_types = [type(self._modules[n]).__name__ for n in self.layers]
        self.n_params = [sum(p.numel() for p in self._params[n]) for n in self.layers]
        counts: dict[str, int] = {}
        for name, _ in self._site_order:
            counts[name] = counts.get(name, 0) + 1
        self._sites = list(self._site_order)
        self.activations = [name if counts[name] == 1 else f"{name}#{k + 1}"
                             for name, k in self._sites]
        self.activation_types = [type(self._modules[n]).__name__ for n, _ in self._sites]

    def on_after_backward(self, state: TrainState) -> None:
        if not self._active:
            return
        if not self._ordered:
            self._finish_order()
        nan = torch.full((), math.nan, device=state.device)
        grads = [_norm([p.grad for p in self._params[name] if p.grad is not None], nan)
                 for name in self.layers]
        dead = [self._dead_now.get(site, nan) for site in self._sites]
        loss = nan if state.loss is None else state.loss.detach().float()
        self._pending = torch.stack([loss, *grads, *dead])
        self._before = [[p.detach().clone() for p in self._params[n]] for n in self.layers]
        self._lr = float(state.optimizer.param_groups[0]["lr"])
        self._active = False  # no statistics from other forward passes until the next step

    def on_batch_end(self, state: TrainState) -> None:
        if self._pending is not None:
            nan = self._pending[0]
            weights = [_norm(before, nan) for before in self._before]
            moves = [_norm([p.detach() - b for p, b in zip(self._params[name], before,
                                                            strict=True)], nan)
                     for name, before in zip(self.layers, self._before, strict=True)]
            w = torch.stack(weights) if weights else self._pending[:0]
            d = torch.stack(moves) if moves else self._pending[:0]
            values = torch.cat([self._pending, w, d / w]).tolist()  # one device sync
            n_layers, n_sites = len(self.layers), len(self._sites)
            loss = values[0]
            self.steps.append(state.step)
            self.loss.append(loss)
            self.lr.append(self._lr)
            self.grad_norm.append(values[1:1 + n_layers])
            self.dead_fraction.append(values[1 + n_layers:1 + n_layers + n_sites])
            self.weight_norm.append(values[1 + n_layers + n_sites:1 + 2 * n_layers + n_sites])
            self.update_ratio.append(values[1 + 2 * n_layers + n_sites:])
            self._pending = None
            self._before = []
            if not math.isfinite(loss) and self.first_nonfinite_step is None:
                self.first_nonfinite_step = state.step
                if self.stop_on_nonfinite:
                    raise StopTraining(f"probe: the loss became {loss} at step {state.step}")
        if self.max_steps is not None and state.step >= self.max_steps:
            raise StopTraining(f"probe: {self.max_steps} steps done")

    def on_train_end(self, state: TrainState) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._active = False
        self.stop_reason = state.stop_reason

    # -- results --------------------------------------------------------------------------------
    def result(self) -> GradientFlowResult:
        """The traces recorded so far, transposed to layers x steps, with summaries."""
        def by_row(trace: list[list[float]], n: int) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(float(step[i]) for step in trace) for i in range(n))

        grad = by_row(self.grad_norm, len(self.layers))
        ratio = by_row(self.update_ratio, len(self.layers))
        dead = by_row(self.dead_fraction, len(self.activations))
        weight_idx = [i for i, n in enumerate(self.layers)
                      if isinstance(self._modules.get(n), _WEIGHT_LAYERS)]
        first_last = math.nan
        if len(weight_idx) >= 2:
            top, bottom = nanmedian(grad[weight_idx[0]]), nanmedian(grad[weight_idx[-1]])
            with np.errstate(divide="ignore", invalid="ignore"):
                first_last = float(np.float64(top) / np.float64(bottom))
        return GradientFlowResult(
            layers=tuple(self.layers), layer_types=tuple(self.layer_types),
            n_params=tuple(int(v) for v in self.n_params),
            activations=tuple(self.activations), activation_types=tuple(self.activation_types),
            steps=tuple(int(s) for s in self.steps), loss=tuple(self.loss), lr=tuple(self.lr),
            grad_norm=grad, weight_norm=by_row(self.weight_norm, len(self.layers)),
            update_ratio=ratio, dead_fraction=dead,
            median_grad_norm=tuple(nanmedian(r) for r in grad),
            median_update_ratio=tuple(nanmedian(r) for r in ratio),
            median_dead_fraction=tuple(nanmedian(r) for r in dead),
            first_last_grad_ratio=first_last,
            nonfinite=self.first_nonfinite_step is not None,
            first_nonfinite_step=self.first_nonfinite_step, stop_reason=self.stop_reason,
        )

    _TRACES = ("steps", "loss", "lr", "grad_norm", "weight_norm", "update_ratio",
               "dead_fraction", "first_nonfinite_step")

    def state_dict(self) -> dict[str, Any]:
        """The traces so far (plain lists), saved in checkpoints for ``--resume``."""
        return {key: getattr(self, key) for key in self._TRACES}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self._TRACES:
            if key in state:
                setattr(self, key, copy.deepcopy(state[key]))


def gradient_flow(ds: Dataset, split: Split, train_cfg: TrainConfig,
                  data_cfg: DataConfig | None = None, *, n_steps: int = 40, every: int = 1,
                  max_rows: int = 16_384, model_fn: ModelFn | None = None,
                  prepared: Prepared | None = None) -> GradientFlowResult:
    """Gradient, weight and update norms per layer, and dead units, over the first steps.

    Real training, as ``train_model`` would start it (optimizer, learning rate and schedule,
    batch size, sampler, augmentation, class weights, clipping), stopped after ``n_steps``
    optimizer steps or at the first non-finite loss. See :class:`GradientFlowResult` for what
    is recorded and how dead units are counted.

    Parameters
    ----------
    ds, split, train_cfg, data_cfg
        As for :func:`loss_at_init`.
    n_steps : int
        Optimizer steps to run.
    every : int
        Record every ``every``-th step.
    max_rows : int
        Training rows the batches are drawn from (a stratified, seeded subset when there are
        more).
    model_fn, prepared : optional
        As for every probe: see :mod:`cellbench.diagnose.probes`.

    Returns
    -------
    GradientFlowResult
    """
    problems: list[str] = []
    int_at_least(problems, "n_steps", n_steps, 1)
    int_at_least(problems, "every", every, 1)
    int_at_least(problems, "max_rows", max_rows, 2)
    raise_problems(problems, "gradient_flow")
    base = resolve_prepared(ds, split, train_cfg, data_cfg, prepared)
    return _gradient_flow(base, train_cfg, n_steps, every, max_rows, model_fn)


def _gradient_flow(base: Prepared, train_cfg: TrainConfig, n_steps: int, every: int,
                   max_rows: int, model_fn: ModelFn | None) -> GradientFlowResult:
    p = probe_copy(base, stratified_rows(base.y_train, max_rows, train_cfg.random_state),
                   model_fn)
    cfg = train_cfg.replace(eval_train_size=min(train_cfg.eval_train_size, EVAL_ROWS))
    flow = GradientFlow(every=every, max_steps=n_steps, stop_on_nonfinite=True)
    p.fit_network(cfg, callbacks=[flow])
    return flow.result()
