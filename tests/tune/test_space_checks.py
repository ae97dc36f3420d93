"""A --space file is checked as a whole before any trial (and before the run directory), and
a tuning stopped by Ctrl-C or a cellbench error says so in one line, without Optuna's traceback."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench._spaces import CategoricalDist, FloatDist, IntDist
from cellbench.cli import app
from cellbench.exceptions import InvalidParameterError
from cellbench.experiment import run_tune
from cellbench.report.observer import TerminalObserver
from cellbench.tune.optimize import optimize
from cellbench.tune.study import (
    TuneSettings,
    check_space,
    make_storage,
    mark_owner,
    open_study,
    search_space,
)

runner = CliRunner()
WHERE = "--space 'space.yaml'"


def _cfg(tiny_csv, model="mlp", **train):
    return RunConfig(data=DataConfig(path=str(tiny_csv), target="label", groups="donor"),
                     split=SplitConfig(val_size=0.2, test_size=0.2),
                     train=TrainConfig(model=model, max_epochs=2, patience=None, device="cpu",
                                       **train))


@pytest.mark.parametrize("overrides, fragment", [
    (["a", "b"], f"{WHERE} must be a mapping of parameter names to a range, a list of "
                 "choices, a fixed value or null; got a list."),
    ({"foo": [1, 2]}, f"{WHERE} entry 'foo' must be an argument of 'mlp' or a training "
                      "setting; got 'foo'."),
    ({"widht": [64]}, "Did you mean 'width'?"),
    ({"lr": {"type": "float", "low": 1, "high": 0}},
     f"{WHERE} entry 'lr' must be a range with low below high; got [1, 0]."),
    ({"lr": {"type": "float", "low": "a", "high": 1}},
     f"{WHERE} entry 'lr' low must be a finite number; got 'a'."),
    ({"lr": {"type": "float", "high": 1}}, f"{WHERE} entry 'lr' of type 'float' must give "
                                           "low and high; got no low."),
    ({"depth": {"type": "int", "low": 1.5, "high": 3}},
     f"{WHERE} entry 'depth' low must be a whole number for an int range; got 1.5."),
    ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}},
     f"{WHERE} entry 'lr' must have low > 0 on a log scale"),
    ({"lr": {"type": "uniform", "low": 0, "high": 1}},
     f"{WHERE} entry 'lr' type must be 'float', 'int' or 'categorical'; got 'uniform'."),
    ({"lr": {"low": 0, "high": 1}}, f"{WHERE} entry 'lr' must be a list of choices, a fixed "
                                    "value, or a range"),
    ({"dropout": [[0.1, 0.2]]}, f"{WHERE} entry 'dropout' choices must be numbers, text, "
                                "true/false or null; got [0.1, 0.2]."),
    ({"depth": []}, f"{WHERE} entry 'depth' must list at least one choice; got []."),
])
def test_a_malformed_space_is_refused_naming_the_file_and_entry(overrides, fragment):
    with pytest.raises(InvalidParameterError) as err:
        search_space("mlp", overrides, where=WHERE)
    assert fragment in str(err.value)
    assert "FloatDist" not in str(err.value) and "IntDist" not in str(err.value)


def test_well_formed_overrides_still_parse():
    space = search_space("mlp", {"lr": {"type": "float", "low": "1e-4", "high": 1e-2,
                                        "log": True},
                                 "depth": {"type": "int", "low": 1, "high": 3},
                                 "width": [32, 64], "batch_size": 128, "scheduler": None},
                         where=WHERE)
    assert space["lr"] == FloatDist(1e-4, 1e-2, log=True)
    assert space["depth"] == IntDist(1, 3)
    assert space["width"] == CategoricalDist((32, 64))
    assert space["batch_size"] == CategoricalDist((128,)) and "scheduler" not in space


def _dataset(tiny_csv):
    from cellbench.experiment.inputs import load_dataset

    return load_dataset(_cfg(tiny_csv).data)


@pytest.mark.parametrize("overrides, fragment", [
    ({"dropout": [0.5, 2.0]}, f"{WHERE} entry 'dropout' must be choices 'mlp' accepts; got "
                              "choices [0.5, 2.0]: with dropout=2.0, dropout must be in [0, 1)"),
    ({"dropout": {"type": "float", "low": 0.5, "high": 2.0}},
     f"{WHERE} entry 'dropout' must be a range [low, high] whose ends 'mlp' accepts; got "
     "[0.5, 2]"),
    ({"width": ["a", "b"]}, f"{WHERE} entry 'width' must be whole numbers; got choices "
                            "['a', 'b']."),
    ({"width": {"type": "float", "low": 16, "high": 64}},
     f"{WHERE} entry 'width' must be whole numbers; got [16, 64] (a float range)."),
    ({"lr": [0.01, -1.0]}, f"{WHERE} entry 'lr' must be choices 'mlp' accepts"),
    ({"activation": ["relu", "swish"]}, "with activation='swish', activation must be one of"),
    # a fixed value is in every trial: batch norm with a batch of one row cannot train
    ({"batch_size": [1, 64], "batchnorm": True},
     f"{WHERE} entry 'batch_size' must be choices 'mlp' accepts; got choices [1, 64]: with "
     "batch_size=1 and batchnorm=True, batch_size must be at least 2 for a model with batch "
     "norm"),
    ({"batch_size": [1, 64], "batchnorm": [True, False]}, "batch_size=1 and batchnorm=True"),
])
def test_every_value_of_the_space_is_checked_before_any_trial(tiny_csv, overrides, fragment):
    cfg = _cfg(tiny_csv)
    space = search_space("mlp", overrides, where=WHERE)
    with pytest.raises(InvalidParameterError) as err:
        check_space(_dataset(tiny_csv), cfg.train, space, overrides, where=WHERE)
    assert fragment in " ".join(str(err.value).split())


@pytest.mark.parametrize("model", ["mlp", "resmlp", "cnn1d-seed", "lda", "logreg", "lightgbm",
                                   "tabm", "mlp-plr"])
def test_the_default_spaces_pass_the_check(tiny_csv, model):
    cfg = _cfg(tiny_csv, model=model)
    check_space(_dataset(tiny_csv), cfg.train, search_space(model))


def test_a_bad_space_stops_tune_before_the_run_directory(tmp_path, tiny_csv):
    out = tmp_path / "tune"
    with pytest.raises(InvalidParameterError, match=r"entry 'dropout'"):
        run_tune(_cfg(tiny_csv), TuneSettings(trials=2), out,
                 space_overrides={"dropout": [0.5, 2.0]}, space_source=WHERE)
    assert not out.exists()


@pytest.mark.parametrize("text, fragment", [
    ("- a\n- b\n", "must be a mapping of parameter names"),
    ("width: [a, b]\n", "entry 'width' must be whole numbers"),
    ("dropout: [0.5, 2.0]\n", "entry 'dropout' must be choices 'mlp' accepts"),
    ("foo: [1, 2]\n", "entry 'foo' must be an argument of 'mlp'"),
    ("lr: [1\n", "must be a readable YAML file"),
])
def test_tune_space_errors_on_the_command_line(tmp_path, tiny_csv, monkeypatch, text,
                                               fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(text)
    result = runner.invoke(app, ["tune", str(tiny_csv), "-t", "label", "-g", "donor", "-m",
                                 "mlp", "--max-epochs", "2", "--trials", "2", "--space",
                                 "space.yaml", "--out", "run", "--quiet"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "Traceback" not in result.output and "Trial 0" not in result.output
    assert "error: --space 'space.yaml'" in output and fragment in output
    assert not (tmp_path / "run").exists()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() + (" Traceback" if r.exc_info else "")
                         for r in self.records)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, lambda: InvalidParameterError("bad")])
def test_a_stopped_trial_is_not_reported_with_a_traceback(tmp_path, stop):
    settings = TuneSettings(trials=3, pruner="none")
    study = open_study(make_storage(None, tmp_path, settings), "s", settings)
    seen = _Records()
    logging.getLogger("optuna").addHandler(seen)  # what Optuna would print

    def objective(trial):
        mark_owner(trial)
        trial.suggest_float("x", 0, 1)
        raise stop()

    def broken(trial):  # a trial's own error (caught, the study goes on) is still reported
        mark_owner(trial)
        trial.suggest_float("x", 0, 1)
        raise RuntimeError("out of memory")

    console = Console(file=io.StringIO(), width=200)
    try:
        with pytest.raises((KeyboardInterrupt, InvalidParameterError)):
            optimize(study, objective, settings, True, TerminalObserver(console, False))
        assert "Traceback" not in seen.text() and "Trial 0 failed" not in seen.text()
        optimize(study, broken, TuneSettings(trials=3, pruner="none"), True,
                 TerminalObserver(console, False))
        assert "out of memory" in seen.text() and "Traceback" in seen.text()
    finally:
        logging.getLogger("optuna").removeHandler(seen)


def test_ctrl_c_during_tune_prints_one_line(tmp_path, tiny_csv):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cellbench.cli", "tune", str(tiny_csv), "-t", "label", "-g",
           "donor", "-m", "mlp", "--trials", "50", "--max-epochs", "500", "--patience", "500",
           "--pruner", "none",
           "--out", str(out), "--quiet"]
    # a shell's background job inherits SIGINT ignored, and Python then keeps ignoring it:
    # the child gets the default back, as a terminal's foreground process has it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    journal = out / "study.journal"
    while time.time() < deadline and proc.poll() is None:  # until a trial runs
        if journal.is_file() and b"cellbench_heartbeat" in journal.read_bytes():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted." in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
