"""Tuning: search spaces as data, resumable journal studies, pruning reports, stale trials,
and several workers on one PostgreSQL study with one of them killed mid-trial."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench._spaces import CategoricalDist, FloatDist
from cellbench.exceptions import InvalidParameterError
from cellbench.experiment import run_tune
from cellbench.report.observer import TerminalObserver
from cellbench.tune.optimize import optimize
from cellbench.tune.study import (
    HEARTBEAT_ATTR,
    TRAINING_SPACE,
    TuneSettings,
    _Reporter,
    make_storage,
    mark_owner,
    open_study,
    recover_stale_trials,
    search_space,
    split_params,
    study_counts,
)


def test_search_space_combines_model_and_training_and_takes_overrides():
    space = search_space("mlp")
    assert set(TRAINING_SPACE) <= set(space) and {"depth", "width", "dropout"} <= set(space)
    assert "lr" not in search_space("lightgbm") and "num_leaves" in search_space("lightgbm")
    custom = search_space("mlp", {"lr": {"type": "float", "low": 1e-3, "high": 1e-2,
                                         "log": True},
                                  "batch_size": 128, "scheduler": None, "depth": [1, 2]})
    assert custom["lr"] == FloatDist(1e-3, 1e-2, log=True)
    assert custom["batch_size"] == CategoricalDist((128,)) and "scheduler" not in custom
    assert custom["depth"] == CategoricalDist((1, 2))
    assert split_params("mlp", {"width": 64, "lr": 0.01}) == ({"width": 64}, {"lr": 0.01})
    with pytest.raises(InvalidParameterError, match=r"must be arguments of 'mlp' or training"):
        split_params("mlp", {"colour": 1})


def test_settings_are_validated():
    with pytest.raises(InvalidParameterError, match=r"pruner must be hyperband, median or none"):
        TuneSettings(pruner="asha")
    with pytest.raises(InvalidParameterError, match=r"--sampler-seed\) must be an int >= 0"):
        TuneSettings(seed=-1)
    with pytest.raises(InvalidParameterError, match=r"storage must be a database URL"):
        make_storage("redis://x", None, TuneSettings())


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_workers_sharing_a_study_draw_distinct_reproducible_settings(tmp_path, kind):
    # two processes with the same seeded sampler used to draw the same sequence: every
    # start-up configuration ran once per worker, and a resumed run repeated its first trials
    settings = TuneSettings(sampler=kind)

    def run(alternate: bool) -> list:
        (tmp_path / f"alt{alternate}").mkdir()
        storage = make_storage(None, tmp_path / f"alt{alternate}", settings)
        a = open_study(storage, "s", settings)
        b = open_study(storage, "s", settings, create=False)  # a second worker
        drawn = []
        for i in range(14):  # past TPE's 10 random start-up trials
            study = (a, b)[i % 2] if alternate else a
            trial = study.ask()
            x = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            drawn.append((round(x, 8), trial.suggest_categorical("opt", ["adam", "sgd"])))
            study.tell(trial, -abs(x - 0.01))
        return drawn

    two_workers, one_process = run(True), run(False)
    assert len(set(two_workers)) == len(two_workers)
    assert two_workers == one_process  # trial n's draws depend on (seed, n), not the process
    other = TuneSettings(sampler=kind, seed=1)
    storage = make_storage(None, tmp_path, other)
    trial = open_study(storage, "t", other).ask()
    assert round(trial.suggest_float("lr", 1e-4, 1e-1, log=True), 8) != one_process[0][0]


def _cfg(tiny_csv, model="mlp", **train):
    return RunConfig(data=DataConfig(path=str(tiny_csv), target="label", groups="donor"),
                     split=SplitConfig(val_size=0.2, test_size=0.2),
                     train=TrainConfig(model=model, max_epochs=4, patience=None, device="cpu",
                                       **train))


def test_journal_study_runs_resumes_and_tests_the_best_once(tmp_path, tiny_csv):
    out = tmp_path / "tune"
    settings = TuneSettings(trials=3, pruner="median", final_seeds=1)
    summary = run_tune(_cfg(tiny_csv), settings, out,
                       space_overrides={"optimizer": "adam", "scheduler": None})
    assert summary.trials["finished"] == 3
    assert (out / "study.journal").is_file() and (out / "best.yaml").is_file()
    assert (out / "tune_history.png").is_file() and (out / "space.yaml").is_file()
    best = RunConfig.from_yaml((out / "best.yaml").read_text())
    assert best.train.optimizer == "adam"  # fixed by the override
    saved = json.loads((out / "tune_results.json").read_text())
    assert [m["model"] for m in saved["final"]] == ["tuned", "default"]
    assert saved["tuned_vs_default"]["reference"] == "default"
    study = optuna.load_study(study_name="cellbench-mlp",
                              storage=make_storage(None, out, settings))
    assert all(t.intermediate_values for t in study.trials)  # one value per epoch
    # the same command with a larger target continues the same study
    again = run_tune(_cfg(tiny_csv), TuneSettings(trials=5, pruner="median", final_seeds=1),
                     out,
                     space_overrides={"optimizer": "adam", "scheduler": None})
    assert again.trials["finished"] == 5
    with pytest.raises(InvalidParameterError, match=r"started with a different configuration"):
        run_tune(_cfg(tiny_csv, lr=0.1), settings, out,
                 space_overrides={"optimizer": "adam", "scheduler": None})


def test_lightgbm_reports_validation_loss_for_pruning(tmp_path, tiny_csv):
    summary = run_tune(_cfg(tiny_csv, model="lightgbm"), TuneSettings(trials=2, final_seeds=1),
                       tmp_path / "lgb",
                       space_overrides={"learning_rate": 0.3})
    storage = make_storage(None, tmp_path / "lgb", TuneSettings())
    study = optuna.load_study(study_name="cellbench-lightgbm", storage=storage)
    values = [v for t in study.trials for v in t.intermediate_values.values()]
    assert values and all(v < 0 for v in values)  # negative log-loss
    assert summary.best["params"]["learning_rate"] == 0.3


@pytest.mark.parametrize("when", ["during training", "after the last report"])
def test_a_worker_whose_trial_another_process_failed_carries_on(tmp_path, when):
    # another worker's heartbeat check can fail a trial that is still running (its process
    # was silent past the grace period); Optuna then refuses to tell it and used to stop
    # the whole worker with "Cannot tell a FAIL trial"
    settings = TuneSettings(trials=3, pruner="none")
    study = open_study(make_storage(None, tmp_path, settings), "s", settings)
    trained, failed = [], []

    def objective(trial):
        mark_owner(trial)
        x = trial.suggest_float("x", 0, 1)
        reporter = _Reporter(trial, "val_accuracy", heartbeat=0.0)
        reporter.report(x, 1)
        if not failed:  # the other process fails it (what its stale-trial check does)
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            failed.append(trial.number)
        if when == "during training":
            reporter.report(x, 2)  # stops the taken-over trial at once
        trained.append(trial.number)
        return x

    console = Console(file=io.StringIO(), width=200)
    optimize(study, objective, settings, False, TerminalObserver(console, False))
    assert study_counts(study)["complete"] == 3 and study.trials[0].state == TrialState.FAIL
    assert "trial 0 was failed by another process" in console.file.getvalue()
    assert trained[0] == (0 if when == "after the last report" else 1)

    def broken(trial):  # a real error in this process still stops it
        mark_owner(trial)
        raise ValueError("bad setting")

    with pytest.raises(ValueError, match="bad setting"):
        optimize(study, broken, TuneSettings(trials=10, pruner="none"), False,
                 TerminalObserver(console, False))


def test_a_trial_of_a_dead_process_is_failed_and_queued_again(tmp_path):
    settings = TuneSettings()
    storage = make_storage(None, tmp_path, settings)
    study = open_study(storage, "s", settings)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("cellbench_host", os.uname().nodename)
    trial.set_user_attr("cellbench_pid", dead.pid)
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())
    assert recover_stale_trials(study, grace=300) == [trial.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    assert waiting.user_attrs["cellbench_retry_of"] == trial.number
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr("cellbench_host", os.uname().nodename)
    alive.set_user_attr("cellbench_pid", os.getpid())
    alive.set_user_attr(HEARTBEAT_ATTR, time.time())
    assert recover_stale_trials(study, grace=300) == []  # our own live trial stays


def _write_data(make_table, path, n=600):
    make_table(n=n, n_donors=12).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_killed_tune_resumes_with_the_same_command(tmp_path, table_factory):
    data = _write_data(table_factory, tmp_path / "cells.csv")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cellbench.cli", "tune", str(data), "-t", "label", "-g",
           "donor", "-m", "mlp", "--trials", "8", "--max-epochs", "15", "--pruner", "none",
           "--final-seeds", "1", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = None
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if (out / "study.journal").is_file():
            storage = storage or make_storage(None, out, TuneSettings())
            study = optuna.load_study(study_name="cellbench-mlp", storage=storage)
            if study_counts(study)["finished"] >= 3:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(before) >= 3
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="cellbench-mlp", storage=make_storage(None, out,
                                                                                TuneSettings()))
    counts = study_counts(study)
    assert counts["finished"] >= 8 and counts["running"] == 0
    after = {t.number: t.value for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert all(after[t.number] == t.value for t in before)  # finished trials intact


@pytest.mark.slow
def test_three_workers_on_postgres_survive_a_killed_worker(tmp_path, postgres_url,
                                                          table_factory):
    data = _write_data(table_factory, tmp_path / "cells.csv", n=900)
    target = 12
    base = [sys.executable, "-m", "cellbench.cli"]
    starter = subprocess.Popen(
        [*base, "tune", str(data), "-t", "label", "-g", "donor", "-m", "mlp", "--trials",
         str(target), "--max-epochs", "40", "--pruner", "none", "--final-seeds", "1",
         "--storage", postgres_url, "--study", "pg", "--heartbeat", "1", "--grace-period",
         "3", "--out", str(tmp_path / "run"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage = optuna.storages.RDBStorage(postgres_url)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            optuna.load_study(study_name="pg", storage=storage)
            break
        except KeyError:
            time.sleep(0.5)
    workers = [subprocess.Popen([*base, "tune-worker", "--study", "pg", "--storage",
                                 postgres_url, "--quiet"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(2)]
    victim = workers[0]
    killed_trial = None
    deadline = time.time() + 120
    while killed_trial is None and time.time() < deadline:
        study = optuna.load_study(study_name="pg", storage=storage)
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("cellbench_pid") == victim.pid:
                os.kill(victim.pid, signal.SIGKILL)
                killed_trial = t.number
                break
        time.sleep(0.05)
    assert killed_trial is not None, "the victim never ran a trial"
    output, _ = starter.communicate(timeout=600)
    assert starter.returncode == 0, output[-3000:]
    # the surviving worker ends cleanly (it used to crash when the others, beating every
    # second, failed its trial because it beat only every 30 s, the default)
    assert workers[1].wait(timeout=300) == 0
    study = optuna.load_study(study_name="pg", storage=storage)
    counts = study_counts(study)
    assert counts["finished"] >= target
    finished = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert all(t.value is not None and 0 <= t.value <= 1 and t.params for t in finished)
    # three workers drew their own settings: only retries repeat a configuration
    drawn = [tuple(sorted(t.params.items())) for t in study.trials
             if "failed_trial" not in t.system_attrs and t.state != TrialState.FAIL]
    assert len(set(drawn)) == len(drawn), "workers repeated each other's settings"
    killed = study.trials[killed_trial]
    assert killed.state in (TrialState.FAIL, TrialState.RUNNING)
    if killed.state == TrialState.FAIL:  # failed by a heartbeat check, then retried
        retried = [t for t in study.trials
                   if t.system_attrs.get("failed_trial") == killed_trial]
        # the retry keeps every setting the killed trial had sampled (a kill can land
        # before all were drawn; the rest are sampled afresh)
        assert retried and killed.params.items() <= retried[0].params.items()
