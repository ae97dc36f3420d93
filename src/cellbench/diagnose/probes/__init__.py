"""Probes: cheap experiments run before any long training, to say why a network is stuck.

Each probe builds the user's network exactly as training does
(:func:`cellbench.train.trainer.prepare`: same registry model, model arguments, seed,
preprocessing fitted on training rows only, optimizer, learning rate, dropout), runs a bounded
number of steps through :func:`cellbench.train.engine.fit` with callbacks, and returns a small
frozen result whose ``to_dict`` is JSON-able (plain ints, floats, strings and lists; non-finite
losses stay ``nan``/``inf``, as in the training history) and whose ``from_dict`` reloads it.
Results keep their raw per-step traces, so any rule set can re-use them; they draw no
conclusions themselves (that is the doctor's rules' job).

=====================  ======================================================================
:func:`loss_at_init`   eval-mode cross-entropy of the fresh network vs ln(K) and the entropy
                       of the class prior
:func:`overfit_batch`  train on one fixed batch (Karpathy): a healthy setting memorises it
:func:`gradient_flow`  per-layer gradient norm, weight norm and update/weight ratio, and dead
                       units per activation, over the first steps of real training
:func:`lr_range_test`  exponential learning-rate sweeps (Smith; fastai ``lr_find``) with a
                       seed-stable suggestion beside fastai's ``valley``
=====================  ======================================================================

Every probe also takes ``model_fn``, called with each freshly built network before the probe
(to load weights or try another initialisation), and ``prepared``, from
:func:`prepare_probe`, to share one preparation between probes.
:func:`run_probes` runs all four on one preparation. The callbacks
:class:`GradientFlow` and :class:`LRSweep` also work in normal training
(``train_model(..., callbacks=...)``).

Every probe is deterministic on CPU for a given ``train_cfg.random_state`` and bounded in
rows and steps. On two CPU cores the first three take seconds on the 12,000 x 8 example
table or the 1,600 images of 50 x 50; the LR range test takes ~2 s on the table but 1-1.5
minutes on the images (about 700 steps of a convolutional network; its docstring says why it
needs them), several times that on a machine other jobs keep busy. Training sets larger
than :data:`FIT_ROWS` rows are subsampled (stratified, seeded) before the preprocessing is
fitted; below that the preprocessing is fitted on all training rows, as in training.
Activations applied as functions (``F.relu(x)`` in ``forward``) are invisible to the
dead-unit statistics; every registry model uses activation modules.

Examples
--------
>>> import numpy as np
>>> from cellbench._config import TrainConfig
>>> from cellbench.data import from_arrays, holdout_split
>>> rng = np.random.default_rng(0)
>>> y = np.arange(300) % 3
>>> X = rng.normal(size=(300, 6)) + 2.0 * np.eye(3, 6)[y]
>>> ds = from_arrays(X, y)
>>> split = holdout_split(ds.y, test_size=0.2, val_size=0.1)
>>> cfg = TrainConfig(model="mlp", model_kwargs={"width": 16}, device="cpu")
>>> init = loss_at_init(ds, split, cfg)
>>> abs(init.loss - init.log_k) < 0.2
True
>>> InitLossResult.from_dict(init.to_dict()) == init
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..._config import DataConfig, TrainConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ...exceptions import InvalidParameterError
from ._common import FIT_ROWS, ModelFn, ProbeResult, prepare_probe
from .gradient_flow import GradientFlow, GradientFlowResult, gradient_flow
from .init_loss import InitLossResult, loss_at_init
from .lr_range import LRRangeResult, LRSweep, lr_range_test, suggest_lr, sweep_result, valley_lr
from .overfit import OverfitResult, overfit_batch

__all__ = [
    "FIT_ROWS",
    "PROBES",
    "PROBE_RESULTS",
    "GradientFlow",
    "GradientFlowResult",
    "InitLossResult",
    "LRRangeResult",
    "LRSweep",
    "OverfitResult",
    "ProbeResult",
    "gradient_flow",
    "loss_at_init",
    "lr_range_test",
    "overfit_batch",
    "prepare_probe",
    "probe_result_from_dict",
    "run_probes",
    "suggest_lr",
    "sweep_result",
    "valley_lr",
]

PROBE_RESULTS: dict[str, type[ProbeResult]] = {
    cls.probe: cls for cls in (InitLossResult, OverfitResult, GradientFlowResult, LRRangeResult)
}


def probe_result_from_dict(data: Mapping[str, Any]) -> ProbeResult:
    """Load any probe result written by ``to_dict``, by its ``"probe"`` key."""
    kind = data.get("probe") if isinstance(data, Mapping) else None
    if kind not in PROBE_RESULTS:
        raise InvalidParameterError(
            f"probe result must have a 'probe' key among {', '.join(PROBE_RESULTS)}; got "
            f"{kind!r}. Pass a dict written by a probe result's to_dict()."
        )
    return PROBE_RESULTS[kind].from_dict(data)


def run_probes(ds: Dataset, split: Split, train_cfg: TrainConfig,
               data_cfg: DataConfig | None = None, *, model_fn: ModelFn | None = None,
               options: Mapping[str, Mapping[str, Any]] | None = None,
               ) -> dict[str, ProbeResult]:
    """All four probes on one preparation of the data (:func:`prepare_probe`).

    Parameters
    ----------
    ds, split, train_cfg, data_cfg, model_fn
        As for :func:`loss_at_init`.
    options : mapping, optional
        Probe name -> keyword arguments for that probe, e.g.
        ``{"lr_range_test": {"n_steps": 100}}``.

    Returns
    -------
    dict
        Probe name (``loss_at_init``, ``overfit_batch``, ``gradient_flow``,
        ``lr_range_test``) -> result. ``{k: v.to_dict() for k, v in ...items()}`` is JSON-able;
        :func:`probe_result_from_dict` reloads each.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(PROBES))
    if unknown:
        raise InvalidParameterError(
            f"options keys must be probe names ({', '.join(PROBES)}); got "
            f"{', '.join(map(repr, unknown))}."
        )
    base = prepare_probe(ds, split, train_cfg, data_cfg)
    return {name: probe(ds, split, train_cfg, data_cfg, model_fn=model_fn, prepared=base,
                        **options.get(name, {}))
            for name, probe in PROBES.items()}


#: the probes by name, in the order :func:`run_probes` runs them
PROBES: dict[str, Callable[..., ProbeResult]] = {
    "loss_at_init": loss_at_init,
    "overfit_batch": overfit_batch,
    "gradient_flow": gradient_flow,
    "lr_range_test": lr_range_test,
}
