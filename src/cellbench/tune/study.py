"""Hyperparameter tuning on Optuna: search spaces as data, pruning, resumable shared studies.

Storage:

* default: an Optuna journal file in the run directory, safe for several processes on one
  machine; an interrupted ``cellbench tune`` continues when rerun;
* ``postgresql://...``: Optuna's RDB storage for workers on many machines
  (``cellbench tune-worker``), with heartbeats, so a killed worker's trial is failed and
  retried by the others.

Optuna's journal storage has no heartbeats, so cellbench records each trial's host, process
id and a heartbeat in the trial's attributes; a trial whose process is gone (same host) or
whose heartbeat is older than the grace period is failed and its parameters queued again.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._config import RunConfig
from .._spaces import Dist, space_to_dict
from .._utils import try_import
from ..exceptions import InvalidParameterError
from ..models import MODELS, ModelChoice
from .space import TRAINING_SPACE, check_space, search_space, split_params
from .storage import postgres_driver_url

__all__ = ["TRAINING_SPACE", "TuneSettings", "best_config", "check_space", "describe_space",
           "importances",
           "make_objective", "make_storage", "mark_owner", "open_study", "parse_duration",
           "recover_stale_trials", "search_space", "split_params", "study_counts",
           "taken_over_trial", "trial_seed"]

METRIC_KEYS = {"accuracy": "valid_accuracy", "balanced_accuracy": "valid_balanced_accuracy"}
HEARTBEAT_ATTR = "cellbench_heartbeat"
HOST_ATTR, PID_ATTR = "cellbench_host", "cellbench_pid"  # who runs a trial
MAX_RETRIES = 3


@dataclass(frozen=True)
class TuneSettings:
    """How a study runs (the model, data and split come from the RunConfig)."""

    trials: int = 20  # finished trials (complete or pruned) the study should reach
    timeout: float | None = None  # seconds for this process; None = until trials are done
    pruner: str = "hyperband"  # hyperband, median or none
    sampler: str = "tpe"  # tpe or random
    metric: str = "accuracy"  # validation metric to maximise: accuracy or balanced_accuracy
    storage: str | None = None  # None: journal file in the run directory; or postgresql://...
    study_name: str | None = None
    final_seeds: int = 3  # the best configuration is retrained with this many seeds
    heartbeat: int = 30  # seconds between heartbeats of a running trial
    grace: int = 300  # a trial without a heartbeat for this long is failed and retried
    seed: int = 0  # sampler seed

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.trials, int) and self.trials >= 1):
            problems.append(f"trials must be an int >= 1; got {self.trials!r}.")
        if self.pruner not in ("hyperband", "median", "none"):
            problems.append(f"pruner must be hyperband, median or none; got {self.pruner!r}.")
        if self.sampler not in ("tpe", "random"):
            problems.append(f"sampler must be tpe or random; got {self.sampler!r}.")
        if self.metric not in METRIC_KEYS:
            problems.append(f"metric must be accuracy or balanced_accuracy; got "
                            f"{self.metric!r}.")
        if self.timeout is not None and not self.timeout > 0:
            problems.append(f"timeout must be > 0 seconds; got {self.timeout!r}.")
        if not (isinstance(self.final_seeds, int) and self.final_seeds >= 1):
            problems.append(f"final_seeds must be an int >= 1; got {self.final_seeds!r}.")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            problems.append(f"seed (--sampler-seed) must be an int >= 0; got {self.seed!r}.")
        if not 0 < self.heartbeat < self.grace:
            problems.append(f"heartbeat must be > 0 and below the grace period ({self.grace}); "
                            f"got {self.heartbeat!r}.")
        if problems:
            raise InvalidParameterError(" ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def parse_duration(text: str | float | None, what: str = "--timeout") -> float | None:
    """``"30m"``, ``"2h"``, ``"90s"`` or seconds -> seconds (``what`` names the option in
    the error).

    >>> parse_duration("10m"), parse_duration("90s"), parse_duration(None)
    (600.0, 90.0, None)
    """
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if isinstance(text, (int, float)):
            seconds = float(text)
        else:
            text = text.strip().lower()
            seconds = (float(text[:-1]) * units[text[-1]] if text and text[-1] in units
                       else float(text))
    except (ValueError, IndexError):
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise InvalidParameterError(
            f"{what} must be a positive duration like 90s, 30m or 2h; got {text!r}."
        )
    return seconds


# ---------------------------------------------------------------------------------------------
# Studies


def _sampler(settings: TuneSettings) -> Any:
    optuna = try_import("optuna", purpose="tuning")

    def make(seed: int) -> Any:
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar: trials still running in other workers count as bad, so workers
        # started together do not all explore the same region
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)

    return _trial_seeded(make, settings.seed)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a study seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _trial_seeded(make: Callable[[int], Any], seed: int) -> Any:
    """A sampler whose random draws for trial n are seeded with (seed, n).

    One seeded sampler per process would make every worker (and every resumed run) draw the
    same sequence: three workers would run each start-up configuration three times, and a
    rerun would repeat the trials it already has. Seeding by trial number keeps a study
    reproducible and gives every trial its own draws, whichever process runs it. The samplers
    keep no state beyond their random generator (the history is read from the storage), so
    a fresh one per trial loses nothing.
    """
    optuna = try_import("optuna", purpose="tuning")

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = make(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.inner = make(trial_seed(seed, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str,
                               param_distribution: Any) -> Any:
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return TrialSeededSampler()


def _pruner(settings: TuneSettings) -> Any:
    optuna = try_import("optuna", purpose="tuning")
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def make_storage(url: str | None, run_dir: Path | None, settings: TuneSettings) -> Any:
    """Journal file in ``run_dir`` (default) or an RDB storage with heartbeats."""
    optuna = try_import("optuna", purpose="tuning")
    if url is None:
        if run_dir is None:
            raise InvalidParameterError("a study needs a storage URL or a run directory.")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = run_dir / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(
            JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if not url.startswith(("postgresql", "postgres:", "mysql", "sqlite")):
        raise InvalidParameterError(
            f"storage must be a database URL (postgresql://user@host:port/db); got {url!r}."
        )
    url = postgres_driver_url(url)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" to Optuna, for years
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
                retry = {"heartbeat_stale_trial_callback":
                         optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)}
            else:
                retry = {"failed_trial_callback":
                         optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)}
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=settings.heartbeat, grace_period=settings.grace,
                engine_kwargs={"pool_pre_ping": True}, **retry)
    except Exception as exc:  # sqlalchemy/driver errors: no server, wrong password, ...
        raise InvalidParameterError(
            f"storage {url!r} must be reachable; connecting failed ({type(exc).__name__}: "
            f"{exc}). Check the server, the URL and that psycopg2 is installed "
            "(pip install 'cellbench[postgres]')."
        ) from exc


def open_study(storage: Any, name: str, settings: TuneSettings, config_yaml: str | None = None,
               create: bool = True) -> Any:
    """Create or join study ``name``; a new study records the job's configuration."""
    optuna = try_import("optuna", purpose="tuning")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage,
                                     sampler=_sampler(settings), pruner=_pruner(settings))
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise InvalidParameterError(
                f"study {name!r} must exist in the storage to join it; it has "
                f"{', '.join(map(repr, names)) or 'no studies'}. Start it with `cellbench "
                "tune` first."
            ) from None
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=_sampler(settings), pruner=_pruner(settings),
                                load_if_exists=True)
    if config_yaml is not None:
        saved = study.user_attrs.get("cellbench_config")
        if saved is None:
            study.set_user_attr("cellbench_config", config_yaml)
            study.set_user_attr("cellbench_tune", settings.to_dict())
        elif saved != config_yaml:
            raise InvalidParameterError(
                f"study {name!r} was started with a different configuration; resume it with "
                "the same settings or pass a new --study name / --out."
            )
    return study


def study_counts(study: Any) -> dict[str, Any]:
    """Trials by state and the best value so far, read from the storage (all workers)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in ("complete", "pruned", "running", "failed", "waiting")}
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.RUNNING: "running", TrialState.FAIL: "failed",
             TrialState.WAITING: "waiting"}
    best = None
    for t in trials:
        counts[names.get(t.state, "failed")] += 1
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = t.value if best is None else max(best, t.value)
    counts["finished"] = counts["complete"] + counts["pruned"]
    counts["best"] = best
    return counts


def recover_stale_trials(study: Any, grace: float) -> list[int]:
    """Fail RUNNING trials whose process is gone (or silent past ``grace``) and queue their
    parameters again (at most MAX_RETRIES times). Journal storage only; RDB storage does this
    itself through Optuna's heartbeat."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    now = time.time()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        beat = attrs.get(HEARTBEAT_ATTR)
        dead = attrs.get(HOST_ATTR) == host and not _alive(attrs.get(PID_ATTR))
        silent = beat is not None and now - float(beat) > grace
        if not (dead or silent):
            continue
        # Optuna has no public call to fail another process's trial; fail_stale_trials does
        # the same through the storage with the trial id.
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        retries = int(attrs.get("cellbench_retries", 0))
        if retries < MAX_RETRIES:
            study.enqueue_trial(trial.params, user_attrs={"cellbench_retries": retries + 1,
                                                          "cellbench_retry_of": trial.number},
                                skip_if_exists=False)
        recovered.append(trial.number)
    return recovered


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# The objective


class _Reporter:
    """Reports the validation metric of each epoch to the trial, keeps a heartbeat, prunes."""

    def __init__(self, trial: Any, key: str, heartbeat: float, offset: int = 0) -> None:
        self.trial, self.key, self.heartbeat, self.offset = trial, key, heartbeat, offset
        self.last_beat = 0.0

    def beat(self) -> None:
        if time.time() - self.last_beat >= self.heartbeat:
            self.last_beat = _beat(self.trial)

    def report(self, value: float, step: int) -> None:
        optuna = try_import("optuna", purpose="tuning")
        self.beat()
        if math.isfinite(value):
            with _stop_if_taken_over(self.trial):
                self.trial.report(value, self.offset + step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {self.offset + step}")


def mark_owner(trial: Any) -> None:
    """Record this process (host, pid) as the trial's runner, with a first heartbeat."""
    trial.set_user_attr(HOST_ATTR, socket.gethostname())
    trial.set_user_attr(PID_ATTR, os.getpid())
    _beat(trial)


def _beat(trial: Any) -> float:
    now = time.time()
    with _stop_if_taken_over(trial):
        trial.set_user_attr(HEARTBEAT_ATTR, now)
    return now


@contextmanager
def _stop_if_taken_over(trial: Any) -> Iterator[None]:
    """Stop training at once when another process has finished this trial (failed it as
    stale and queued its settings again): the work could never be recorded. The trial is
    ended as pruned, which Optuna reports quietly; ``tune.optimize`` then carries on."""
    optuna = try_import("optuna", purpose="tuning")
    try:
        yield
    except optuna.exceptions.UpdateFinishedTrialError:
        raise optuna.TrialPruned(f"trial {trial.number} was finished by another process") from None


def taken_over_trial(study: Any) -> int | None:
    """The number of this process's latest trial if another process failed it, else None."""
    from optuna.trial import TrialState

    host, pid = socket.gethostname(), os.getpid()
    mine = [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(PID_ATTR) == pid and t.user_attrs.get(HOST_ATTR) == host]
    if mine and mine[-1].state == TrialState.FAIL:
        return mine[-1].number
    return None


def _epoch_callback(reporter: _Reporter) -> Any:
    from ..train.callbacks import Callback

    class PruneOnEpoch(Callback):
        order = 5

        def on_epoch_end(self, state: Any) -> None:
            rec = state.history[-1]
            reporter.report(float(rec.get(reporter.key, float("nan"))), rec["epoch"])

        def on_batch_end(self, state: Any) -> None:
            reporter.beat()

    return PruneOnEpoch()


def make_objective(cfg: RunConfig, ds: Any, splits: list[Any], space: Mapping[str, Dist],
                   settings: TuneSettings) -> Callable[[Any], float]:
    """Build the function Optuna optimises: train on each inner split, score validation."""
    from ..evaluate.metrics import evaluate_predictions
    from ..train.trainer import train_model

    model = cfg.train.model
    family = MODELS.get(model).family
    key = METRIC_KEYS[settings.metric]

    def objective(trial: Any) -> float:
        mark_owner(trial)
        params = {name: dist.suggest(trial, name) for name, dist in space.items()}
        model_kwargs, train = split_params(model, params)
        train_cfg = ModelChoice(model, model, model_kwargs, train).configure(cfg.train)
        scores = []
        for i, split in enumerate(splits):
            reporter = _Reporter(trial, key, settings.heartbeat,
                                 offset=i * (train_cfg.max_epochs + 1))
            callbacks = (_epoch_callback(reporter),) if family == "nn" else ()
            # gradient boosting reports the negative validation log-loss every 10 rounds
            on_iteration = reporter.report if family == "gbdt" and len(splits) == 1 else None
            fm = train_model(ds, split, train_cfg, cfg.data, callbacks=callbacks,
                             on_iteration=on_iteration)
            if fm.history:  # networks keep their best epoch's weights: score that epoch
                best = fm.history[fm.best_epoch - 1]
                score = float(best[key])
            else:
                proba = fm.predict_proba(ds.X[split.val], groups=None if ds.groups is None
                                         else ds.groups[split.val])
                score = evaluate_predictions(ds.y[split.val], proba, ds.classes,
                                             n_boot=1)[settings.metric]["value"]
            scores.append(score)
            if len(splits) > 1:
                reporter.report(float(np.mean(scores)), train_cfg.max_epochs + 1)
        _beat(trial)  # still ours? (Optuna cannot tell a trial another process failed)
        return float(np.mean(scores))

    return objective


def best_config(study: Any, cfg: RunConfig) -> RunConfig:
    """The study's best trial as a ready-to-use configuration."""
    model_kwargs, train = split_params(cfg.train.model, study.best_trial.params)
    tuned = ModelChoice("tuned", cfg.train.model, model_kwargs, train)
    return cfg.replace(train=tuned.configure(cfg.train))


def describe_space(space: Mapping[str, Dist]) -> dict[str, dict[str, Any]]:
    return space_to_dict(space)


def importances(study: Any) -> dict[str, float]:
    """fANOVA importances of the hyperparameters (needs a few complete trials)."""
    optuna = try_import("optuna", purpose="tuning")
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(complete) < 3 or not complete[0].params:
        return {}
    try:
        values = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: float(v) for k, v in values.items()}

