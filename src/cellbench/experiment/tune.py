"""The ``tune`` and ``tune-worker`` jobs.

Run directory::

    config.yaml          the job's configuration          study.journal   the Optuna study
    space.yaml           the search space, as searched    best.yaml       best configuration
    tune_results.json    trials, best trial, importances, final test results and the test of
                         tuned vs default settings
    tune_history.png     objective per trial and best so far
    data.json, run.json  the data summary and the command      report.html   the report
    final/units/...      the best and the default configuration retrained with several seeds
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .._config import RunConfig
from .._spaces import space_from_dict, space_to_dict
from .._utils import atomic_write_text
from ..data.dataset import Dataset
from ..data.splits import Split, given_split, holdout_split, kfold_splits
from ..evaluate.results import TuneResults
from ..exceptions import InvalidParameterError
from ..models import MODELS, ModelChoice
from ..report.html import write_report
from ..report.observer import SILENT, Observer
from ..report.terminal import space_table
from ..train.trainer import check_model
from ..tune.optimize import history_plot, optimize
from ..tune.study import (
    TuneSettings,
    best_config,
    check_space,
    importances,
    make_objective,
    make_storage,
    open_study,
    search_space,
    split_params,
    study_counts,
)
from .inputs import data_summary, load_dataset, split_issues
from .jobs import run_models
from .rundir import check_run_dir, open_run_dir

__all__ = ["default_out", "run_tune", "run_tune_worker"]


def _splits(ds: Dataset, cfg: RunConfig) -> tuple[Split, list[Split]]:
    """The outer split (its test part is kept for the end) and the splits the objective uses:
    the outer train/validation, or inner k folds over train + validation (grouped)."""
    if ds.split is not None:  # e.g. MedMNIST's official split
        outer = given_split(ds, cfg.split)
    else:
        outer = holdout_split(ds.y, ds.groups, val_size=cfg.split.val_size,
                              test_size=cfg.split.test_size,
                              random_state=cfg.split.random_state, classes=ds.classes)
    if not cfg.split.cv:
        return outer, [outer]
    pool = np.sort(np.concatenate([outer.train, outer.val]))
    folds = kfold_splits(ds.y[pool], None if ds.groups is None else ds.groups[pool],
                         n_splits=cfg.split.cv, val_size=0.0,
                         random_state=cfg.split.random_state, classes=ds.classes)
    inner = [Split(pool[f.train], pool[f.test], pool[:0], f"inner{k + 1}", f.grouped)
             for k, f in enumerate(folds)]
    return outer, inner


def _study_name(cfg: RunConfig, settings: TuneSettings) -> str:
    return settings.study_name or f"cellbench-{cfg.train.model}"


def _identity(cfg: RunConfig, space: dict[str, Any]) -> str:
    return yaml.safe_dump({"config": cfg.to_dict(), "space": space_to_dict(space)},
                          sort_keys=True)


def default_out(cfg: RunConfig) -> Path:
    """``runs/tune-<model>-<data>``: rerunning the same command resumes the same study."""
    stem = Path(str(cfg.data.path)).name.split(".")[0] if cfg.data.path else "data"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "_", f"tune-{cfg.train.model}-{stem}")


def run_tune(cfg: RunConfig, settings: TuneSettings, out: str | Path | None = None, *,
             space_overrides: dict[str, Any] | None = None,
             space_source: str = "search space override",
             observer: Observer = SILENT) -> TuneResults:
    """Tune ``cfg.train.model``, then retrain the best configuration with several seeds and
    test it once, beside the default configuration. ``space_source`` names the overrides in
    messages (the command line passes ``--space 'space.yaml'``)."""
    spec = MODELS.get(cfg.train.model)
    space = search_space(spec.name, space_overrides, where=space_source)
    run_dir = check_run_dir(out or default_out(cfg), "tune", cfg, reuse=True)
    ds = load_dataset(cfg.data)
    outer, inner = _splits(ds, cfg)
    check_model(ds, cfg.train)  # arguments and device, before the run directory exists
    # every value a trial can draw, before the first trial (and the run directory)
    check_space(ds, cfg.train, space, space_overrides, where=space_source)
    # a database is reached before the run directory is made (a journal lives inside it)
    storage = make_storage(settings.storage, None, settings) if settings.storage else None
    open_run_dir(run_dir, cfg, data_summary(ds, [outer], split_issues(ds, [outer],
                                                                  name_parts=False)),
                 lock=False, job="tune")  # workers share the directory (and the study in it)
    atomic_write_text(run_dir / "space.yaml", yaml.safe_dump(space_to_dict(space),
                                                             sort_keys=False))
    objective_text = (f"validation {settings.metric} of {spec.name}, "
                      + (f"mean over {len(inner)} inner folds" if len(inner) > 1 else
                         f"{len(outer.val)} validation rows")
                      + f"; {len(outer.test)} test rows kept for the end")
    observer.started([("data", ds.describe()), ("objective", objective_text),
                      ("run directory", str(run_dir))])
    observer.table(space_table(space))
    if storage is None:
        storage = make_storage(None, run_dir, settings)
    name = _study_name(cfg, settings)
    study = open_study(storage, name, settings, _identity(cfg, space))
    study.set_user_attr("cellbench_tune", settings.to_dict())
    objective = make_objective(cfg, ds, inner, space, settings)
    started = time.perf_counter()
    optimize(study, objective, settings, settings.storage is None, observer)
    tuning_seconds = time.perf_counter() - started
    return _finish(study, cfg, settings, space, ds, outer, run_dir, tuning_seconds, observer)


def _finish(study: Any, cfg: RunConfig, settings: TuneSettings, space: dict[str, Any],
            ds: Dataset, outer: Split, run_dir: Path, tuning_seconds: float,
            observer: Observer) -> TuneResults:
    """Best configuration, importances, history plot; then the test part, once."""
    counts = study_counts(study)
    if counts["complete"] == 0:
        raise InvalidParameterError(
            "tuning must complete at least one trial to pick a configuration; none did "
            f"({counts['pruned']} pruned, {counts['failed']} failed). Raise --trials or the "
            "timeout, or use --pruner none."
        )
    best = study.best_trial
    model_kwargs, train = split_params(cfg.train.model, best.params)
    tuned = ModelChoice("tuned", cfg.train.model, model_kwargs, train)
    atomic_write_text(run_dir / "best.yaml", best_config(study, cfg).to_yaml())
    history_plot(study, run_dir / "tune_history.png")
    # the test part, once: the best and the default configuration, several seeds each
    choices = [tuned, ModelChoice("default", cfg.train.model, {}, {})]
    final_cfg = cfg.replace(seeds=settings.final_seeds, reference="default")
    models, comparison = run_models(final_cfg, choices, ds, [outer], run_dir / "final",
                                    observer)
    results = TuneResults(
        job="tune", study=study.study_name, trials=counts,
        tuning_seconds_this_process=tuning_seconds, space=space_to_dict(space),
        best={"number": best.number, "value": best.value, "params": best.params},
        importances=importances(study), final=models, tuned_vs_default=comparison,
        metric=settings.metric, unit="images" if ds.kind == "image" else "cells",
        run_dir=run_dir)
    results.write(run_dir)
    write_report(run_dir)  # after the results: a failing report only warns
    return results


def run_tune_worker(study_name: str, storage_url: str, *, trials: int | None = None,
                    timeout: float | None = None,
                    observer: Observer = SILENT) -> dict[str, Any]:
    """Join a study stored in a database and run trials until it has enough."""
    probe = TuneSettings(storage=storage_url)
    storage = make_storage(storage_url, None, probe)
    study = open_study(storage, study_name, probe, create=False)
    saved = study.user_attrs.get("cellbench_config")
    stored = dict(study.user_attrs.get("cellbench_tune") or {})
    if saved is None:
        raise InvalidParameterError(
            f"study {study_name!r} must have been started by `cellbench tune` (it records the "
            "data and model there); it has no cellbench configuration."
        )
    identity = yaml.safe_load(saved)
    cfg = RunConfig.from_dict(identity["config"], where=f"study {study_name!r}")
    space = space_from_dict(identity["space"], where=f"study {study_name!r}")
    settings = TuneSettings(**{**stored, "storage": storage_url,
                               **({"trials": trials} if trials else {}),
                               **({"timeout": timeout} if timeout else {})})
    # the study's heartbeat interval and grace period, not the defaults: a worker beating
    # every 30 s in a study whose grace period is 10 s would have its trials failed as stale
    storage = make_storage(storage_url, None, settings)
    study = open_study(storage, study_name, settings, create=False)
    ds = load_dataset(cfg.data)
    _, inner = _splits(ds, cfg)
    observer.note(f"joined study {study_name!r}: {cfg.train.model} on {ds.describe()}")
    optimize(study, make_objective(cfg, ds, inner, space, settings), settings, False,
             observer)
    return study_counts(study)
