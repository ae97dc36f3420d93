"""What the probes share: the result base class, parameter checks, row subsets, and the
preparation of the user's network (a private module: import from :mod:`..probes`)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ..._config import DataConfig, TrainConfig
from ..._utils import seed_everything
from ...data.dataset import Dataset
from ...data.splits import Split
from ...exceptions import InvalidParameterError
from ...models import MODELS, create_model
from ...train.trainer import Prepared, prepare

__all__ = ["EVAL_ROWS", "FIT_ROWS", "ModelFn", "ProbeResult", "check", "int_at_least",
           "nanmedian", "network_for", "prepare_probe", "probe_copy", "raise_problems",
           "resolve_prepared", "stratified_rows"]

#: training rows above which the probes subsample before fitting the preprocessing
FIT_ROWS = 100_000
#: rows re-measured in eval mode at each epoch end during gradient flow and the LR sweep
EVAL_ROWS = 256

ModelFn = Callable[[nn.Module], Any]


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers (recursively)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _frozen(value: Any) -> Any:
    """Lists -> tuples (recursively), so results loaded from JSON compare equal."""
    if isinstance(value, (tuple, list)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class ProbeResult:
    """Base class of probe results: frozen, with a JSON-able ``to_dict`` and ``from_dict``.

    Sequences are tuples (nested tuples for per-layer traces); ``to_dict`` writes lists and
    adds ``"probe"``, the probe's name, which :func:`probe_result_from_dict` dispatches on.
    """

    probe: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain ints, floats, strings, lists and None (``json.dumps`` writes it as is)."""
        out: dict[str, Any] = {"probe": self.probe}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. read back from JSON)."""
        data = dict(data)
        kind = data.pop("probe", cls.probe)
        if kind != cls.probe:
            raise InvalidParameterError(
                f"probe result must come from the {cls.probe!r} probe to load as "
                f"{cls.__name__}; got {kind!r}. Use probe_result_from_dict to dispatch."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise InvalidParameterError(
                f"{cls.__name__} data must have exactly the keys {', '.join(sorted(names))}; "
                f"got missing {missing or 'none'}, unknown {unknown or 'none'}. Was it written "
                "by another cellbench version? Rerun the probe."
            )
        return cls(**{k: _frozen(v) for k, v in data.items()})


def check(problems: list[str], ok: bool, message: str) -> None:
    """Collect ``message`` when not ``ok`` (every problem is reported at once)."""
    if not ok:
        problems.append(message)


def raise_problems(problems: list[str], where: str) -> None:
    """Raise one InvalidParameterError naming every collected problem, if any."""
    if len(problems) == 1:
        raise InvalidParameterError(problems[0])
    if problems:
        raise InvalidParameterError(f"{where} has {len(problems)} invalid settings:\n  - "
                                    + "\n  - ".join(problems))


def int_at_least(problems: list[str], name: str, value: Any, low: int) -> None:
    """Collect a problem unless ``value`` is an int >= ``low``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
    check(problems, ok, f"{name} must be an int >= {low}; got {value!r}.")


def stratified_rows(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``n`` rows, class proportions kept (every class at least once
    when ``n`` allows), drawn with a seeded generator; all rows when ``n >= len(y)``."""
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / len(y)
    take = np.floor(quota).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    # largest remainders fill the rest (never more than a class holds)
    for k in np.argsort(-(quota - np.floor(quota)), kind="stable"):
        if take.sum() >= n:
            break
        if take[k] < counts[k]:
            take[k] += 1
    while take.sum() > n:  # the at-least-one rule overshot: trim the largest classes
        take[np.argmax(take)] -= 1
    rows = [rng.choice(np.flatnonzero(y == c), size=t, replace=False)
            for c, t in zip(classes, take, strict=True) if t > 0]
    return np.sort(np.concatenate(rows))


def prepare_probe(ds: Dataset, split: Split, train_cfg: TrainConfig,
                  data_cfg: DataConfig | None = None) -> Prepared:
    """Build the network and fit the preprocessing once, for several probes.

    :func:`~cellbench.train.trainer.prepare` on ``split.train`` (a stratified, seeded subset
    of :data:`FIT_ROWS` rows when larger) without a validation part. Pass the result to the
    probes as ``prepared=``: each probe works on a copy of the fresh network.
    """
    spec = MODELS.get(train_cfg.model)
    if spec.family != "nn":
        raise InvalidParameterError(
            f"train.model must be a network for the probes; got {train_cfg.model!r}, a "
            f"{spec.family} model, which trains without gradient steps. Probe a network "
            "(e.g. mlp, cnn1d-seed, resnet8)."
        )
    train = np.asarray(split.train)
    if len(train) < 2:
        raise InvalidParameterError(
            f"split.train must hold at least 2 rows to probe a network; got {len(train)}. "
            "Use a split with a training part."
        )
    if len(train) > FIT_ROWS:
        train = train[stratified_rows(ds.y[train], FIT_ROWS, train_cfg.random_state)]
    probe_split = Split(train, train[:0], train[:0], split.name, split.grouped)
    return prepare(ds, probe_split, train_cfg, data_cfg)


def resolve_prepared(ds: Dataset, split: Split, train_cfg: TrainConfig,
                     data_cfg: DataConfig | None, prepared: Prepared | None) -> Prepared:
    """``prepared`` after checking it holds ``train_cfg.model``, or a new preparation."""
    if prepared is None:
        return prepare_probe(ds, split, train_cfg, data_cfg)
    if prepared.spec.name != train_cfg.model:
        raise InvalidParameterError(
            f"prepared must hold the network of train_cfg.model ({train_cfg.model!r}); got "
            f"{prepared.spec.name!r}. Call prepare_probe with the same train_cfg."
        )
    return prepared


def network_for(base: Prepared, cfg: TrainConfig) -> nn.Module:
    """The network :func:`prepare` builds, for ``cfg.random_state`` (seeded the same way)."""
    shape = base.input_shape
    dims: dict[str, Any] = ({"in_chans": shape[0], "img_size": (shape[1], shape[2])}
                            if len(shape) == 3 else {"n_features": shape[0]})
    seed_everything(cfg.random_state)
    return create_model(base.spec.name, n_classes=base.n_classes, **dims,
                        random_state=cfg.random_state, **cfg.model_kwargs)


def probe_copy(base: Prepared, rows: np.ndarray, model_fn: ModelFn | None,
               network: nn.Module | None = None) -> Prepared:
    """A copy of the freshly built network (or ``network``), ``model_fn`` applied, on
    training ``rows``."""
    model = copy.deepcopy(base.model) if network is None else network
    if model_fn is not None:
        model_fn(model)
    return dataclasses.replace(base, model=model,
                               X_train=np.ascontiguousarray(np.asarray(base.X_train[rows])),
                               y_train=np.ascontiguousarray(base.y_train[rows]))


def nanmedian(values: Sequence[float]) -> float:
    """Median of the non-NaN values; NaN when there are none (without numpy's warning)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(np.median(arr)) if len(arr) else math.nan
