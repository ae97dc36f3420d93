"""Probe 4: the learning-rate range test (Smith; fastai ``lr_find``), seed-stable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..._config import DataConfig, TrainConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ...exceptions import InvalidParameterError, StopTraining
from ...train.callbacks import Callback
from ...train.engine import TrainState
from ...train.trainer import Prepared
from ._common import (
    EVAL_ROWS,
    ModelFn,
    ProbeResult,
    check,
    int_at_least,
    network_for,
    probe_copy,
    raise_problems,
    resolve_prepared,
    stratified_rows,
)

__all__ = ["LRRangeResult", "LRSweep", "lr_range_test", "smooth_centred", "suggest_lr",
           "sweep_result", "valley_lr"]

#: sweep r runs with random_state + r * _SEED_STRIDE
_SEED_STRIDE = 10_007


@dataclass(frozen=True)
class LRRangeResult(ProbeResult):
    """Exponential learning-rate sweeps and the learning rate suggested from them.

    Per-sweep fields are tuples with one entry per sweep, in the order they ran (the first
    is the user's own network and seed).

    Attributes
    ----------
    lr : tuple of float
        The learning rate of each step, shared by every sweep (as far as the longest went).
    loss : tuple of tuple of float
        Per sweep: the batch loss just before each step (a sweep that diverged is shorter).
    smooth_loss : tuple of tuple of float
        Per sweep: bias-corrected exponential moving average (``beta``) of its loss, what the
        sweep stops on and what fastai's valley rule reads.
    centred_loss : tuple of tuple of float
        Per sweep: its loss smoothed without lag (Gaussian, ``smoothing`` decades of learning
        rate wide), what :func:`suggest_lr` reads.
    depth : tuple of float
        Per sweep: how far its smoothed loss fell below its start level, as a fraction of
        that level.
    informative : tuple of bool
        Per sweep: ``depth >= min_depth``, i.e. the network learned measurably in that sweep.
    suggestions : tuple of float
        Per sweep: :func:`suggest_lr` on its ``centred_loss``.
    lr_at_min : tuple of float
        Per sweep: the learning rate at the minimum of its ``centred_loss``.
    valleys : tuple of float or None
        Per sweep: fastai's ``valley`` (:func:`valley_lr`) on its ``smooth_loss``.
    suggestion : float
        The geometric mean of ``suggestions`` over the informative sweeps; ``nan`` when no
        sweep was informative (the loss never fell by ``min_depth`` at any learning rate in
        the sweep: a network that does not train, or a range that misses the useful rates).
    valley : float or None
        fastai's ``valley`` on the first sweep alone: what one ``lr_find`` would suggest.
    seeds : tuple of int
        ``random_state`` of each sweep (initial weights, batch order, dropout).
    stop_reasons : tuple of str or None
    lr_min, lr_max, n_steps, min_depth, smoothing, beta
        The settings.
    optimizer : str
    """

    probe: ClassVar[str] = "lr_range_test"

    lr: tuple[float, ...]
    loss: tuple[tuple[float, ...], ...]
    smooth_loss: tuple[tuple[float, ...], ...]
    centred_loss: tuple[tuple[float, ...], ...]
    depth: tuple[float, ...]
    informative: tuple[bool, ...]
    suggestions: tuple[float, ...]
    lr_at_min: tuple[float, ...]
    valleys: tuple[float | None, ...]
    suggestion: float
    valley: float | None
    seeds: tuple[int, ...]
    stop_reasons: tuple[str | None, ...]
    lr_min: float
    lr_max: float
    n_steps: int
    min_depth: float
    smoothing: float
    beta: float
    optimizer: str


def smooth_centred(values: Sequence[float], sigma: float) -> np.ndarray:
    """Gaussian smoothing over the step index (``sigma`` steps), without lag.

    Each point is a weighted mean of its neighbours on both sides; at the ends the window is
    cut and renormalised. Non-finite values are left out of every mean.
    """
    x = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or len(x) == 0:
        return x.copy()
    ok = np.isfinite(x)
    half = math.ceil(2.5 * sigma)
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    num = np.convolve(np.where(ok, x, 0.0), kernel)[half:half + len(x)]
    den = np.convolve(ok.astype(np.float64), kernel)[half:half + len(x)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / den, math.nan)


def valley_lr(lrs: Sequence[float], smooth_loss: Sequence[float],
              n_steps: int | None = None) -> float | None:
    """fastai's ``valley`` suggestion, recomputed on a sweep.

    As ``Learner.lr_find``: drop the first ``n_steps // 10`` and the last 5 points of the
    smoothed loss and everything from the first NaN on; find the longest decreasing
    subsequence of the rest (its start taken as its end minus its length); suggest the
    learning rate half-way along it. None when fewer than two points remain.
    """
    n_plan = len(lrs) if n_steps is None else n_steps
    lr = np.asarray(lrs, dtype=np.float64)[n_plan // 10:]
    loss = np.asarray(smooth_loss, dtype=np.float64)[n_plan // 10:]
    lr, loss = lr[:-5], loss[:-5]
    bad = np.flatnonzero(np.isnan(loss))
    if len(bad):
        lr, loss = lr[:bad[0]], loss[:bad[0]]
    n = len(loss)
    if n < 2:
        return None
    length = np.ones(n, dtype=int)
    for i in range(1, n):
        below = loss[:i] > loss[i]
        if below.any():
            length[i] = max(1, int(length[:i][below].max()) + 1)
    end = int(np.argmax(length))  # the first index of the longest run
    start = end - int(length[end])
    third = (end - start) / 3
    idx = start + int(third) + int(third / 2)
    return float(lr[idx])


def suggest_lr(lrs: Sequence[float], loss: Sequence[float], fraction: float = 0.5) -> float:
    """Where a sweep's smoothed loss has made half its descent (one sweep's suggestion).

    ``loss`` should be smoothed without lag (``LRRangeResult.centred_loss``). The start level
    is the median of the first tenth of the sweep and the bottom its minimum; the suggestion
    is the learning rate at which the loss first falls ``fraction`` of the way from the start
    level to the bottom, interpolated between steps on the log scale.

    Why this point: Smith's advice is the learning rate at which the loss falls fastest; for
    a loss that falls like a sigmoid in log(lr), that is the half-way point, and a level
    crossing finds it much more steadily than the argmax of a noisy derivative (fastai's
    ``steep``) or the flat, wandering bottom of the curve (fastai's ``minimum``: the lr at
    the minimum / 10). A loss that never falls gives a learning rate near the start of the
    sweep; :func:`lr_range_test` leaves such sweeps out.
    """
    lr = np.asarray(lrs, dtype=np.float64)
    c = np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(c)
    if len(c) == 0 or len(lr) < len(c) or not ok.any():
        return math.nan
    lr = lr[:len(c)]
    c = np.where(ok, c, np.inf)
    start, bottom = _start_level(c), int(np.argmin(c))
    level = start - fraction * (start - c[bottom])
    below = np.flatnonzero(c[:bottom + 1] <= level)
    j = int(below[0]) if len(below) else bottom
    if j == 0 or not np.isfinite(c[j - 1]) or c[j - 1] == c[j]:
        return float(lr[j])
    t = (c[j - 1] - level) / (c[j - 1] - c[j])  # linear in log(lr) between steps j-1 and j
    return float(np.exp(np.log(lr[j - 1]) + t * (np.log(lr[j]) - np.log(lr[j - 1]))))


def _start_level(c: np.ndarray) -> float:
    """Median of the first tenth of a smoothed sweep (its finite values)."""
    head = c[:max(1, len(c) // 10)]
    head = head[np.isfinite(head)]
    return float(np.median(head)) if len(head) else math.nan


class LRSweep(Callback):
    """Set an exponentially growing learning rate each step and record the batch loss.

    Step ``i`` of ``n_steps`` trains with ``lr_min * (lr_max / lr_min) ** (i / (n_steps - 1))``
    (every parameter group). Training stops after ``n_steps`` steps, or once the smoothed
    loss (bias-corrected EMA, ``beta``) exceeds ``stop_factor`` times its minimum or the
    loss is non-finite. Use it with a constant-rate optimizer (no scheduler).

    Parameters
    ----------
    lr_min, lr_max : float
        Sweep bounds, ``0 < lr_min < lr_max``.
    n_steps : int
    stop_factor : float or None
        None: never stop early.
    beta : float
        Smoothing of the stop criterion (and of :attr:`smooth_loss`), in [0, 1).
    """

    order = 40

    def __init__(self, lr_min: float = 1e-7, lr_max: float = 10.0, n_steps: int = 100,
                 stop_factor: float | None = 4.0, beta: float = 0.98) -> None:
        problems: list[str] = []
        lr_ok = all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                    for v in (lr_min, lr_max))
        check(problems, lr_ok and lr_min < lr_max,
              f"lr_min and lr_max must be numbers with 0 < lr_min < lr_max; got {lr_min!r} "
              f"and {lr_max!r}.")
        int_at_least(problems, "n_steps", n_steps, 2)
        check(problems, stop_factor is None or (isinstance(stop_factor, (int, float))
                                                and stop_factor > 1),
              f"stop_factor must be a number > 1 or None; got {stop_factor!r}.")
        check(problems, isinstance(beta, (int, float)) and 0 <= beta < 1,
              f"beta must be a number in [0, 1); got {beta!r}.")
        raise_problems(problems, "LRSweep")
        self.lr_min, self.lr_max = float(lr_min), float(lr_max)
        self.n_steps = int(n_steps)
        self.stop_factor = stop_factor
        self.beta = float(beta)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smooth_loss: list[float] = []
        self.stop_reason: str | None = None

    def lr_at(self, i: int) -> float:
        """The learning rate of step ``i`` (0-based)."""
        return self.lr_min * (self.lr_max / self.lr_min) ** (i / (self.n_steps - 1))

    def on_train_begin(self, state: TrainState) -> None:
        self.lrs, self.losses, self.smooth_loss = [], [], []
        self._avg, self._best = 0.0, math.inf
        self.stop_reason = None

    def on_batch_begin(self, state: TrainState) -> None:
        lr = self.lr_at(len(self.lrs))
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        self.lrs.append(lr)

    def on_batch_end(self, state: TrainState) -> None:
        loss = float(state.loss) if state.loss is not None else math.nan
        self.losses.append(loss)
        i = len(self.losses)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** i)
        self.smooth_loss.append(smooth)
        self._best = min(self._best, smooth)
        if not math.isfinite(smooth):
            raise StopTraining(f"lr sweep: the loss became {loss} at lr {self.lrs[-1]:.3g}")
        if self.stop_factor is not None and smooth > self.stop_factor * self._best:
            raise StopTraining(f"lr sweep: the smoothed loss exceeded {self.stop_factor:g} "
                               f"times its minimum at lr {self.lrs[-1]:.3g}")
        if i >= self.n_steps:
            raise StopTraining(f"lr sweep: {self.n_steps} steps done")

    def on_train_end(self, state: TrainState) -> None:
        self.stop_reason = state.stop_reason
        del self.lrs[len(self.losses):]  # a step begun but not finished has no loss


def lr_range_test(ds: Dataset, split: Split, train_cfg: TrainConfig,
                  data_cfg: DataConfig | None = None, *, lr_min: float = 1e-5,
                  lr_max: float = 10.0, n_steps: int = 400, min_informative: int = 2,
                  max_sweeps: int = 4, min_depth: float = 0.03, stop_factor: float = 4.0,
                  smoothing: float = 0.35, beta: float = 0.98, max_rows: int = 16_384,
                  model_fn: ModelFn | None = None,
                  prepared: Prepared | None = None) -> LRRangeResult:
    """Sweep the learning rate exponentially; suggest one that is stable across seeds.

    The user's optimizer (its settings, weight decay, batch size, sampler, augmentation)
    trains a fresh network while :class:`LRSweep` raises the learning rate each step from
    ``lr_min`` to ``lr_max``, until ``n_steps`` steps or divergence; the learning-rate
    schedule is off. The first sweep is the user's own network and seed; further sweeps
    build the same network with other seeds (other initial weights, batch order and
    dropout), until ``min_informative`` sweeps were *informative* (their smoothed loss fell
    by at least ``min_depth`` of its start level) or ``max_sweeps`` have run. Each sweep's
    suggestion is :func:`suggest_lr` (the half-descent point of its lag-free smoothed loss);
    the suggestion is their geometric mean over the informative sweeps. fastai's ``valley``
    is computed on the first sweep alone, as one ``lr_find`` would give it.

    Why this design (measured in ``bench/doctor/lr_range.md``): one sweep's curve depends on
    its seed, and any rule reading one curve inherits that. The half-descent point of a
    lag-free smoothing (:func:`suggest_lr`) is the steadiest single-sweep rule we measured
    on the table networks; fastai's ``minimum`` (lr at the EMA minimum / 10) wanders with the
    flat bottom of the curve (up to 12x over 5 seeds) and its ``valley`` with the EMA's lag.
    Slow learners need more: the seed-004 network on the malaria images needs some 50 steps
    near 2e-3 before its loss moves, so a sweep at fastai's speed (12-25 steps per decade)
    passes its useful rates before it learns; in 4-7 sweeps out of 10 it learns nothing and
    dies as the rate passes ~1e-2, and every rule then reads noise (4-45x over 5 seeds).
    Hence ~67 steps per decade from 1e-5 (lower rates help no network trained with Adam;
    pass a lower ``lr_min`` for SGD on unscaled inputs), two sweeps averaged, and sweeps
    without a descent skipped rather than averaged in. Over 5 seeds the suggestion then
    varied 1.03x (mlp), 1.46x (cnn1d-seed), 1.38x (shallow-seed004) and 1.69x
    (cnn1d-seed-0509, ASGD); fastai's valley on the same sweeps 1.46-2.14x. Slow sweeps
    suggest lower rates than fast ones (the rate where the loss falls fastest depends on how
    long each rate is held): 3.6e-4 for the mlp with Adam, 1.4e-3-1.9e-3 for seed 004's
    network. A test in which no sweep learned returns ``nan``: the network does not train at
    any rate in the range within the sweep's steps, which is itself a finding.

    Cost: two sweeps of at most ``n_steps`` steps when both are informative (sweeps stop at
    divergence), up to ``max_sweeps``.

    Parameters
    ----------
    ds, split, train_cfg, data_cfg
        As for :func:`loss_at_init`.
    lr_min, lr_max : float
        Sweep bounds.
    n_steps : int
        Steps per sweep from ``lr_min`` to ``lr_max``.
    min_informative, max_sweeps : int
        Stop sweeping once ``min_informative`` sweeps were informative, or after
        ``max_sweeps``.
    min_depth : float
        Fraction of the start loss a sweep's smoothed loss must fall to be informative.
    stop_factor : float
        A sweep stops once its smoothed loss (EMA) exceeds this multiple of its minimum.
    smoothing : float
        Standard deviation of the lag-free Gaussian smoothing, in decades of learning rate.
    beta : float
        EMA smoothing of the stop criterion and of the valley rule (fastai: 0.98).
    max_rows : int
        Training rows the batches are drawn from.
    model_fn, prepared : optional
        As for every probe: see :mod:`cellbench.diagnose.probes`.

    Returns
    -------
    LRRangeResult
    """
    problems: list[str] = []
    int_at_least(problems, "min_informative", min_informative, 1)
    int_at_least(problems, "max_sweeps", max_sweeps, 1)
    int_at_least(problems, "max_rows", max_rows, 2)
    for name, value in (("min_depth", min_depth), ("smoothing", smoothing)):
        check(problems, isinstance(value, (int, float)) and math.isfinite(value)
              and value >= 0, f"{name} must be a number >= 0; got {value!r}.")
    raise_problems(problems, "lr_range_test")
    LRSweep(lr_min, lr_max, n_steps, stop_factor, beta)  # validates the sweep settings
    base = resolve_prepared(ds, split, train_cfg, data_cfg, prepared)
    rows = stratified_rows(base.y_train, max_rows, train_cfg.random_state)
    sweeps, seeds = [], []
    for r in range(max_sweeps):
        seed = train_cfg.random_state + r * _SEED_STRIDE
        cfg = train_cfg.replace(random_state=seed, lr=lr_min, scheduler=None,
                                scheduler_kwargs={}, max_epochs=n_steps,
                                eval_train_size=min(train_cfg.eval_train_size, EVAL_ROWS))
        network = None if r == 0 else network_for(base, cfg)
        sweep = LRSweep(lr_min, lr_max, n_steps, stop_factor, beta)
        probe_copy(base, rows, model_fn, network).fit_network(cfg, callbacks=[sweep])
        sweeps.append(sweep)
        seeds.append(seed)
        result = sweep_result(sweeps, seeds, min_depth, smoothing, train_cfg.optimizer)
        if sum(result.informative) >= min_informative:
            break
    return result


def sweep_result(sweeps: Sequence[LRSweep], seeds: Sequence[int] = (),
                 min_depth: float = 0.03, smoothing: float = 0.35,
                 optimizer: str = "") -> LRRangeResult:
    """An :class:`LRRangeResult` from finished :class:`LRSweep` callbacks of one schedule."""
    if not sweeps:
        raise InvalidParameterError("sweeps must hold at least one finished LRSweep; got none.")
    first = sweeps[0]
    longest = max(len(sw.losses) for sw in sweeps)
    lrs = [first.lr_at(i) for i in range(longest)]
    per_decade = (first.n_steps - 1) / math.log10(first.lr_max / first.lr_min)
    centred, depth, suggestions, at_min = [], [], [], []
    for sw in sweeps:
        c = smooth_centred(sw.losses, smoothing * per_decade)
        finite = np.where(np.isfinite(c), c, np.inf)
        start = _start_level(finite)
        low = float(finite.min()) if len(finite) else math.nan
        centred.append(tuple(float(v) for v in c))
        depth.append(float((start - low) / abs(start)) if start and math.isfinite(low)
                     else math.nan)
        suggestions.append(suggest_lr(sw.lrs, c))
        at_min.append(float(sw.lrs[int(np.argmin(finite))]) if len(finite) else math.nan)
    informative = tuple(bool(d >= min_depth) for d in depth)
    chosen = [s for s, ok in zip(suggestions, informative, strict=True)
              if ok and math.isfinite(s)]
    valleys = tuple(valley_lr(sw.lrs, sw.smooth_loss, sw.n_steps) for sw in sweeps)
    return LRRangeResult(
        lr=tuple(lrs), loss=tuple(tuple(sw.losses) for sw in sweeps),
        smooth_loss=tuple(tuple(sw.smooth_loss) for sw in sweeps),
        centred_loss=tuple(centred), depth=tuple(depth), informative=informative,
        suggestions=tuple(suggestions), lr_at_min=tuple(at_min), valleys=valleys,
        suggestion=float(np.exp(np.mean(np.log(chosen)))) if chosen else math.nan,
        valley=valleys[0], seeds=tuple(int(v) for v in (seeds or range(len(sweeps)))),
        stop_reasons=tuple(sw.stop_reason for sw in sweeps), lr_min=first.lr_min,
        lr_max=first.lr_max, n_steps=first.n_steps, min_depth=float(min_depth),
        smoothing=float(smoothing), beta=first.beta, optimizer=optimizer,
    )
