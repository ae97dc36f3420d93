"""The grid runner: units of work (model choice x seed x split), run once each.

Every job that trains goes through here: ``train`` (one unit), ``compare`` and ``ablate``
(every model x seed x split), ``tune``'s final test (tuned and default x seeds) and the
doctor's experiments. A unit's folder holds its model, predictions, history and plots, and
``result.json``, written last: a unit whose ``result.json`` matches its configuration is
reused, never trained again, so an interrupted grid continues where it stopped.

Unit folder (``units/<model>/seed<k>/<split>/`` of a run directory)::

    result.json  model.pt  predictions.npz  history.csv  curves.png  confusion.png
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._config import DataConfig, RunConfig, TrainConfig
from .._utils import (
    NpzWriter,
    atomic_path,
    atomic_write_text,
    release_free_memory,
    to_builtin,
)
from ..data.dataset import Dataset
from ..data.splits import Split, repeat_of
from ..evaluate.compare import Run
from ..evaluate.metrics import METRICS, evaluate_predictions
from ..evaluate.results import Metrics, ModelResult, Spread, UnitResult, UnitSummary
from ..exceptions import CellbenchError, RunDirectoryError
from ..models import MODELS, ModelChoice, uses_validation
from ..report.observer import SILENT, Observer
from ..report.plots import plot_confusion, plot_curves
from ..train.trainer import FittedModel, train_model
from .parallel import run_parallel

PREDICT_ROWS = 1 << 14  # test and validation rows predicted at a time: few MB of temporaries

__all__ = ["Display", "Unit", "check_no_stale_units", "plan_units", "pool", "run_grid",
           "run_unit", "runs_of"]


@dataclass(frozen=True)
class Unit:
    """One model choice, trained with one seed on one split, in its own folder."""

    choice: ModelChoice
    train: TrainConfig  # resolved: the choice's model, arguments, settings and seed
    split: Split
    path: Path
    title: str = ""  # plot titles; default "<label> [<split>]"
    keep_checkpoint: bool = False  # keep checkpoints/last.pt (train --resume)

    @property
    def seed(self) -> int:
        return self.train.random_state

    @property
    def merges_validation(self) -> bool:
        """The model ignores a validation part, so it is fitted on train + validation."""
        return not uses_validation(self.train.model) and len(self.split.val) > 0

    @property
    def fit_split(self) -> Split:
        """The split the model is fitted on (validation rows joined to training rows when
        the model does not use them: throwing them away costs accuracy for nothing)."""
        s = self.split
        if not self.merges_validation:
            return s
        return Split(np.sort(np.concatenate([s.train, s.val])), s.val[:0], s.test, s.name,
                     s.grouped)

    @property
    def ident(self) -> dict[str, Any]:
        """What must match for a finished unit to be reused."""
        ident = {"train": to_builtin(self.train.ident()), "split": self.split.name,
                 "test_rows": len(self.split.test)}
        if self.merges_validation:
            ident["fit_on"] = "train+validation"
        return ident


def plan_units(cfg: RunConfig, choices: Sequence[ModelChoice], splits: Sequence[Split],
               root: Path) -> list[Unit]:
    """Every choice x seed x split: networks get ``cfg.seeds`` seeds, deterministic models
    one; folders ``root/units/<choice slug>/seed<k>/<split>``."""
    seeds = [cfg.train.random_state + s for s in range(cfg.seeds)]
    units = []
    for choice in choices:
        model_seeds = seeds if MODELS.get(choice.name).family == "nn" else seeds[:1]
        for seed in model_seeds:
            train = choice.configure(cfg.train, seed)
            for split in splits:
                units.append(Unit(choice, train, split,
                                  root / "units" / choice.slug / f"seed{seed}" / split.name))
    return units


def _predict(fm: FittedModel, ds: Dataset, index: np.ndarray) -> np.ndarray:
    if not len(index):
        return np.zeros((0, ds.n_classes))
    if getattr(fm.preprocessor, "per_sample", False):  # each sample's statistics: whole
        return fm.predict_proba(ds.X[index], groups=None if ds.groups is None
                                else ds.groups[index])
    # rows are predicted independently: in chunks, no copy of the part's rows
    out = np.empty((len(index), ds.n_classes))
    for i in range(0, len(index), PREDICT_ROWS):
        out[i:i + PREDICT_ROWS] = fm.predict_proba(ds.X[index[i:i + PREDICT_ROWS]])
    return out


def _evaluate(ds: Dataset, index: np.ndarray, proba: np.ndarray) -> Metrics | None:
    if not len(index):
        return None
    groups = None if ds.groups is None else ds.groups[index]
    return Metrics.from_dict(evaluate_predictions(ds.y[index], proba, ds.classes,
                                                  groups=groups))


def check_no_stale_units(units: Sequence[Unit], run_dir: Path) -> None:
    """Refuse a rerun whose settings differ from those of finished units it would overwrite
    (a changed ``--max-epochs``, say); a new model or split is no conflict.

    Raises
    ------
    RunDirectoryError
        Naming the first such unit and the settings that differ.
    """
    for unit in units:
        if not (unit.path / UnitResult.FILE).is_file():
            continue
        try:
            saved = UnitResult.read(unit.path)
        except CellbenchError:  # unreadable: it is rerun, nothing of value is lost
            continue
        if saved.failed is None and saved.ident != unit.ident:
            where = unit.path.relative_to(run_dir).as_posix()
            raise RunDirectoryError(
                f"run directory {str(run_dir)!r} must hold units trained with this run's "
                f"settings to continue it; {where} was trained with "
                f"{_ident_changes(saved.ident, unit.ident)}, and would be overwritten. Pass a "
                "new --out, or rerun with the saved settings (config.yaml there).")


def _ident_changes(saved: dict[str, Any], now: dict[str, Any]) -> str:
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    old, new = flat(saved), flat(now)
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k.removeprefix('train.')} {old.get(k)!r} (now {new.get(k)!r})"
                     for k in keys[:3]) + (" ..." if len(keys) > 3 else "")


def _reusable(unit: Unit) -> UnitResult | None:
    if not (unit.path / UnitResult.FILE).is_file():
        return None
    saved = UnitResult.read(unit.path)
    if saved.ident == unit.ident and (unit.path / "predictions.npz").is_file():
        saved.reused = True
        return saved
    return None


def _save_outputs(fm: FittedModel, unit: Unit, ds: Dataset, test: Metrics | None,
                  title: str) -> None:
    fm.save(unit.path / "model.pt")
    if test is not None:
        plot_confusion(test.confusion_matrix["counts"], ds.classes,
                       unit.path / "confusion.png", f"{title}, test")
    if fm.history:
        atomic_write_text(unit.path / "history.csv",
                          pd.DataFrame(list(fm.history)).to_csv(index=False))
        plot_curves(list(fm.history), unit.path / "curves.png", title,
                    best_epoch=fm.best_epoch)


def run_unit(ds: Dataset, unit: Unit, data_cfg: DataConfig, progress: Any = None,
             verbose: bool = False) -> UnitResult:
    """Train and evaluate one unit, or reuse it when it already finished."""
    saved = _reusable(unit)
    if saved is not None:
        return saved
    split = unit.fit_split
    unit.path.mkdir(parents=True, exist_ok=True)
    resume = (unit.path / "checkpoints" / "last.pt").is_file()
    fm = train_model(ds, split, unit.train, data_cfg, run_dir=unit.path, resume=resume,
                     progress=progress, verbose=verbose)
    release_free_memory()  # the training part's copies, before the next unit's
    # each part predicted, saved and scored before the next: one part's probabilities held
    with atomic_path(unit.path / "predictions.npz") as tmp, open(tmp, "wb") as fh, \
            NpzWriter(fh) as npz:
        start = time.perf_counter()
        proba = _predict(fm, ds, split.test)
        predict_seconds = time.perf_counter() - start
        npz.add(test_index=split.test, test_proba=proba)
        test, failed = _evaluate(ds, split.test, proba), _failure(fm, proba)
        del proba
        proba = _predict(fm, ds, split.val)
        npz.add(val_index=split.val, val_proba=proba)
        validation = _evaluate(ds, split.val, proba)
        del proba
    release_free_memory()
    result = UnitResult(
        ident=unit.ident, label=unit.choice.label, model=fm.name,
        model_kwargs=fm.model_kwargs, seed=unit.seed, split=split.name, sizes=split.sizes(),
        n_params=fm.n_params, fit_seconds=fm.fit_seconds, predict_seconds=predict_seconds,
        epochs=len(fm.history), best_epoch=fm.best_epoch, stop_reason=fm.stop_reason,
        info=fm.info, validation=validation, test=test, failed=failed, run_dir=unit.path)
    _save_outputs(fm, unit, ds, result.test, unit.title or f"{unit.choice.label} "
                                                           f"[{split.name}]")
    result.write(unit.path)  # last: marks the unit finished
    if not unit.keep_checkpoint:
        shutil.rmtree(unit.path / "checkpoints", ignore_errors=True)
    release_free_memory()  # the predictions' and plots' buffers
    return result


def _failure(fm: FittedModel, proba: np.ndarray) -> str | None:
    """Why a trained model's numbers mean nothing (divergence, non-finite predictions)."""
    if fm.stop_reason and fm.stop_reason.startswith("diverged"):
        return fm.stop_reason
    if not np.isfinite(proba).all():
        return ("its predictions are not finite numbers (NaN or inf): the model diverged; "
                "lower the learning rate (--lr) or clip gradients (--grad-clip 1.0)")
    return None


@dataclass
class Display:
    """A progress display shared by several grids (the doctor's whole plan)."""

    progress: Any
    task: Any

    def advance(self, steps: float = 1) -> None:
        self.progress.advance(self.task, steps)

    def show(self, info: str) -> None:
        self.progress.update(self.task, info=info)


def run_grid(ds: Dataset, units: Sequence[Unit], data_cfg: DataConfig,
             observer: Observer = SILENT, display: Display | None = None, *, jobs: int = 1,
             ray: str | None = None) -> list[UnitResult]:
    """Run ``units`` (finished ones reused) with one progress display over all
    (``display``: a display that outlives this grid, advanced once per unit).

    ``jobs > 1`` runs the units in that many local processes and ``ray`` on a Ray cluster
    (:mod:`cellbench.experiment.parallel`); the results come back in ``units``' order.
    """
    progress = display.progress if display is not None else observer.progress()
    own = display is None and progress is not None
    results: list[UnitResult | None] = [None] * len(units)
    try:
        if own:
            progress.start()
            display = Display(progress, progress.add_task("models x splits", total=len(units),
                                                          info=""))
        if jobs > 1 or ray is not None:
            _run_parallel(ds, units, data_cfg, results, display, jobs, ray)
        else:
            for i, unit in enumerate(units):
                if display is not None:
                    display.show(f"{unit.choice.label} seed {unit.seed} {unit.split.name}")
                results[i] = run_unit(ds, unit, data_cfg, progress)
                if display is not None:
                    display.advance()
    finally:
        if own:
            progress.stop()
    return results  # type: ignore[return-value]


def _run_parallel(ds: Dataset, units: Sequence[Unit], data_cfg: DataConfig,
                  results: list[UnitResult | None], display: Display | None, jobs: int,
                  ray: str | None) -> None:
    """Finished units are taken from the run directory here; the others go out at once."""
    todo = []
    for i, unit in enumerate(units):
        results[i] = _reusable(unit)
        if results[i] is None:
            todo.append(i)
        elif display is not None:
            display.advance()
    where = f"ray {ray}" if ray is not None else f"{jobs} processes"

    def status(text: str) -> None:
        if display is not None:
            display.show(text)

    def done(k: int, result: UnitResult) -> None:
        results[todo[k]] = result
        if display is not None:
            display.show(f"{where}: {units[todo[k]].choice.label} seed {result.seed} "
                         f"{result.split} done")
            display.advance()

    status(f"{len(todo)} units on {where}")
    run_parallel(run_unit, ds, [units[i] for i in todo], data_cfg, jobs=jobs, ray=ray,
                 done=done, status=status)


def runs_of(results: Sequence[UnitResult]) -> list[Run]:
    """The units' test predictions, for paired tests."""
    runs = []
    for u in results:
        if u.test is None:
            continue
        p = u.predictions(validation=False)
        runs.append(Run(u.seed, u.split, p.test_index, p.test_proba, int(u.sizes["train"])))
    return runs


def _pooled(ds: Dataset, results: Sequence[UnitResult]) -> Metrics | None:
    """The first seed's test predictions pooled over the splits of its first repeat."""
    seed = min((u.seed for u in results), default=None)
    first = [u for u in results if u.seed == seed and repeat_of(u.split) == 1]
    parts = [u.predictions(validation=False) for u in first]
    if not sum(len(p.test_index) for p in parts):
        return None
    # one part (a holdout) is used as read: no concatenated copy
    index, proba = ((parts[0].test_index, parts[0].test_proba) if len(parts) == 1 else
                    (np.concatenate([p.test_index for p in parts]),
                     np.concatenate([p.test_proba for p in parts])))
    del parts
    pooled = _evaluate(ds, index, proba)
    release_free_memory()
    pooled.pooled_over = (f"{len(first)} test part{'' if len(first) == 1 else 's'} "
                          f"(seed {seed})")
    return pooled


def pool(ds: Dataset, choice: ModelChoice, results: Sequence[UnitResult]) -> ModelResult:
    """A model's result: test predictions pooled over splits, and per-unit values; plots
    the learning curves of all its units together (``units/<slug>/curves.png``)."""
    histories = [pd.read_csv(u.run_dir / "history.csv").to_dict("records")
                 for u in results if (u.run_dir / "history.csv").is_file()]
    if len(histories) > 1:
        plot_curves(histories, results[0].run_dir.parent.parent / "curves.png",
                    f"{choice.label}: mean and range over {len(histories)} runs")
    tested = [u for u in results if u.test is not None]
    failed = [u for u in results if u.failed]
    across = None
    if len(tested) > 1:
        across = {m: Spread(float(np.mean(v)), float(np.std(v, ddof=1))) for m in METRICS
                  if (v := [u.test.get(m).value for u in tested
                            if u.test.get(m).value is not None])}
    return ModelResult(
        label=choice.label, name=choice.name, spec=choice.spec or choice.label,
        slug=choice.slug, n_params=int(results[0].n_params),
        fit_seconds=float(np.mean([u.fit_seconds for u in results])), units=len(results),
        reused_units=sum(u.reused for u in results), test=_pooled(ds, results),
        per_unit=[UnitSummary.of(u) for u in tested], across_units=across,
        failed=(f"{len(failed)} of {len(results)} runs failed ({failed[0].split}, seed "
                f"{failed[0].seed}: {failed[0].failed})" if len(results) > 1 else
                failed[0].failed) if failed else None)
