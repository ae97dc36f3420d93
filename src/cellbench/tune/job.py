"""The ``tune`` and ``tune-worker`` jobs.

Run directory::

    config.yaml          the job's configuration          study.journal   the Optuna study
    space.yaml           the search space, as searched    best.yaml       best configuration
    tune_results.json    trials, best trial, importances, final test results and the test of
                         tuned vs default settings
    tune_history.png     objective per trial and best so far
    final/units/...      the best and the default configuration retrained with several seeds
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from .._config import RunConfig
from .._utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    progress_bar,
    to_builtin,
    try_import,
)
from ..data.dataset import Dataset
from ..data.splits import Split, given_split, holdout_split, kfold_splits
from ..evaluate.compare import compare_to_reference
from ..exceptions import InvalidParameterError
from ..jobs import (
    ModelChoice,
    _run_models,
    check_run_dir,
    load_dataset,
    open_run_dir,
    print_comparison,
    print_verdicts,
)
from ..models import MODELS
from .spaces import space_from_dict, space_to_dict
from .study import (
    TuneSettings,
    best_config,
    importances,
    make_objective,
    make_storage,
    open_study,
    recover_stale_trials,
    search_space,
    split_params,
    study_counts,
    taken_over_trial,
)

__all__ = ["run_tune", "run_tune_worker"]


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


class _ProgressPoller:
    """A progress bar fed by polling the storage: every worker's trials, not only ours."""

    def __init__(self, study: Any, total: int, console: Any, enabled: bool) -> None:
        self.study, self.total, self.console, self.enabled = study, total, console, enabled
        self._stop = threading.Event()

    def __enter__(self) -> _ProgressPoller:
        if not self.enabled:
            return self
        self.progress = progress_bar(self.console, label="trials", transient=False)
        self.task = self.progress.add_task("trials", total=self.total, info="")
        self.progress.start()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _update(self) -> None:
        c = study_counts(self.study)
        best = "-" if c["best"] is None else f"{c['best']:.4f}"
        self.progress.update(self.task, completed=min(c["finished"], self.total),
                             info=f"running {c['running']} pruned {c['pruned']} failed "
                                  f"{c['failed']} best {best}")

    def _poll(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self._update()
            except Exception:  # a transient storage hiccup must not kill the display
                continue

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._stop.set()
            self.thread.join(timeout=5)
            self._update()
            self.progress.stop()


def _optimize(study: Any, objective: Any, settings: TuneSettings, journal: bool,
              console: Any, show_progress: bool) -> None:
    try_import("optuna", purpose="tuning")
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    failures = {"n": 0}

    def stop_on_failures(st: Any, trial: Any) -> None:
        # without this, trials that keep failing would never reach the target: run forever
        if trial.state == TrialState.FAIL:
            failures["n"] += 1
            if failures["n"] >= max(5, settings.trials // 2):
                console.print(f"[red]stopping: {failures['n']} trials failed in this "
                              "process[/]; see the trials' errors above and fix the cause")
                st.stop()

    callbacks = [MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE,
                                                             TrialState.PRUNED)),
                 stop_on_failures]
    if journal:
        recovered = recover_stale_trials(study, settings.grace)
        if recovered:
            console.print(f"recovered {len(recovered)} interrupted trials "
                          f"({', '.join(map(str, recovered))}); their settings run again")
        callbacks.append(lambda st, _t: recover_stale_trials(st, settings.grace))
    if study_counts(study)["finished"] >= settings.trials:
        console.print(f"the study already has {settings.trials} finished trials")
        return
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    with _ProgressPoller(study, settings.trials, console, show_progress):
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                # torch errors (e.g. out of memory) fail one trial; configuration errors
                # stop all
                study.optimize(objective, n_trials=None, timeout=remaining,
                               callbacks=callbacks, catch=(RuntimeError, FloatingPointError),
                               gc_after_trial=False)
                break
            except (ValueError, AssertionError, UpdateFinishedTrialError) as exc:
                lost = _lost_to_another_process(study, exc)
                if lost is None:
                    raise
                failures["n"] += 1
                console.print(f"[yellow]trial {lost} was failed by another process[/] (no "
                              f"heartbeat from this one within {settings.grace} s); its "
                              "settings are queued again and this process carries on")
                if failures["n"] >= max(5, settings.trials // 2):
                    console.print(f"[red]stopping: {failures['n']} trials of this process "
                                  "failed[/]; if other workers keep failing its trials, its "
                                  "heartbeats do not reach the storage in time: raise "
                                  "--grace-period")
                    break
                if study_counts(study)["finished"] >= settings.trials:
                    break


def _lost_to_another_process(study: Any, exc: Exception) -> int | None:
    """The trial ``exc`` came from if another process had already failed it, else None.

    Optuna cannot tell a trial that another process has failed as stale: it raises
    ValueError, or AssertionError when the objective had returned. That is no reason for
    this worker to stop; any other error still stops it.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    if not (isinstance(exc, UpdateFinishedTrialError)
            or str(exc).startswith(("Cannot tell a", "Should not reach"))):
        return None
    return taken_over_trial(study)


def _history_plot(study: Any, path: Path) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if done:
        x, y = zip(*sorted(done), strict=True)
        ax.plot(x, y, "o", color="#1f77b4", ms=4, label="complete")
        ax.plot(x, np.maximum.accumulate(y), "-", color="#d62728", label="best so far")
    if pruned:
        x, y = zip(*pruned, strict=True)
        ax.plot(x, y, "x", color="#999", ms=4, label="pruned (last reported)")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("optimization history (all workers)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _print_space(space: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="search space (before the first trial)", title_justify="left")
    table.add_column("name")
    table.add_column("distribution")
    for name, dist in space.items():
        table.add_row(name, dist.describe())
    console.print(table)


def run_tune(cfg: RunConfig, settings: TuneSettings, out: str | Path | None = None, *,
             space_overrides: dict[str, Any] | None = None, console: Any = None,
             show_progress: bool = True) -> dict[str, Any]:
    """Tune ``cfg.train.model``, then retrain the best configuration with several seeds and
    test it once, beside the default configuration."""
    from rich.console import Console

    console = console or Console()
    spec = MODELS.get(cfg.train.model)
    space = search_space(spec.name, space_overrides)
    run_dir = check_run_dir(out or default_out(cfg), "tune", cfg, reuse=True)
    ds = load_dataset(cfg.data)
    outer, inner = _splits(ds, cfg)
    open_run_dir(run_dir, cfg)
    atomic_write_text(run_dir / "space.yaml", yaml.safe_dump(space_to_dict(space),
                                                             sort_keys=False))
    console.print(f"[bold]data[/] {ds.describe()}")
    console.print(f"[bold]objective[/] validation {settings.metric} of {spec.name}, "
                  + (f"mean over {len(inner)} inner folds" if len(inner) > 1 else
                     f"{len(outer.val)} validation rows")
                  + f"; {len(outer.test)} test rows kept for the end")
    console.print(f"[bold]run directory[/] {run_dir}")
    _print_space(space, console)
    storage = make_storage(settings.storage, run_dir, settings)
    name = _study_name(cfg, settings)
    study = open_study(storage, name, settings, _identity(cfg, space))
    study.set_user_attr("cellbench_tune", settings.to_dict())
    objective = make_objective(cfg, ds, inner, space, settings)
    started = time.perf_counter()
    _optimize(study, objective, settings, settings.storage is None, console, show_progress)
    tuning_seconds = time.perf_counter() - started
    return _finish(study, cfg, settings, space, ds, outer, run_dir, tuning_seconds, console,
                   show_progress)


def _finish(study: Any, cfg: RunConfig, settings: TuneSettings, space: dict[str, Any],
            ds: Dataset, outer: Split, run_dir: Path, tuning_seconds: float, console: Any,
            show_progress: bool) -> dict[str, Any]:
    """Best configuration, importances, history plot; then the test part, once."""
    counts = study_counts(study)
    if counts["complete"] == 0:
        raise InvalidParameterError(
            "tuning must complete at least one trial to pick a configuration; none did "
            f"({counts['pruned']} pruned, {counts['failed']} failed). Raise --trials or the "
            "timeout, or use --pruner none."
        )
    best = study.best_trial
    best_cfg = best_config(study, cfg)
    atomic_write_text(run_dir / "best.yaml", best_cfg.to_yaml())
    _history_plot(study, run_dir / "tune_history.png")
    imp = importances(study)
    # the test part, once: the best and the default configuration, several seeds each
    model_kwargs, train = split_params(cfg.train.model, best.params)
    choices = [ModelChoice("tuned", cfg.train.model, model_kwargs, train),
               ModelChoice("default", cfg.train.model, {}, {})]
    final_cfg = cfg.replace(seeds=settings.final_seeds, reference="default")
    results, runs = _run_models(final_cfg, choices, ds, [outer], run_dir / "final", console,
                                show_progress)
    pooled = {r["model"]: r["test"]["accuracy"]["value"] for r in results}
    comparison = compare_to_reference({m: r for m, r in runs.items() if r}, ds.y, ds.groups,
                         reference="default", unit=cfg.test_unit, alpha=cfg.alpha,
                         min_effect=cfg.min_effect, pooled=pooled)
    summary = {
        "job": "tune", "study": study.study_name, "trials": counts,
        "tuning_seconds_this_process": tuning_seconds,
        "space": space_to_dict(space),
        "best": {"number": best.number, "value": best.value, "params": best.params},
        "importances": imp, "final": results, "tuned_vs_default": comparison,
    }
    atomic_write_json(run_dir / "tune_results.json", to_builtin(summary))
    console.print(f"\n[bold]trials[/] {counts['complete']} complete, {counts['pruned']} pruned, "
                  f"{counts['failed']} failed; best validation {settings.metric} "
                  f"{best.value:.4f} (trial {best.number})")
    console.print("[bold]best settings[/] " + ", ".join(f"{k}={v!r}"
                                                        for k, v in best.params.items()))
    if imp:
        console.print("[bold]importances[/] " + ", ".join(f"{k} {v:.2f}"
                                                          for k, v in list(imp.items())[:6]))
    print_comparison({"models": results, "unit": "images" if ds.kind == "image" else "cells"},
                     console)
    print_verdicts(comparison, console)
    console.print(f"\nbest configuration: {run_dir / 'best.yaml'}  history: "
                  f"{run_dir / 'tune_history.png'}")
    return summary


def run_tune_worker(study_name: str, storage_url: str, *, trials: int | None = None,
                    timeout: float | None = None, console: Any = None,
                    show_progress: bool = True) -> dict[str, Any]:
    """Join a study stored in a database and run trials until it has enough."""
    from rich.console import Console

    console = console or Console()
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
    console.print(f"joined study {study_name!r}: {cfg.train.model} on {ds.describe()}")
    _optimize(study, make_objective(cfg, ds, inner, space, settings), settings, False,
              console, show_progress)
    return study_counts(study)
