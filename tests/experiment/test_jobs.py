"""Jobs and run directories: checks before anything is made, one job per directory, failed
runs marked, baselines fitted on train + validation, files that follow the umask."""

from __future__ import annotations

import io
import json
import os

import pytest
from rich.console import Console

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench.exceptions import InvalidParameterError, RunDirectoryError
from cellbench.experiment import open_run_dir, run_compare, run_train
from cellbench.report.terminal import show_compare


@pytest.fixture
def cfg(tiny_csv):
    return RunConfig(data=DataConfig(path=str(tiny_csv), target="label", groups="donor"),
                     split=SplitConfig(), train=TrainConfig(max_epochs=2, device="cpu"),
                     models=("lda",))


def test_a_run_directory_in_use_is_refused_and_left_alone(tmp_path, cfg):
    out = tmp_path / "run"
    with open_run_dir(out, cfg):
        with pytest.raises(RunDirectoryError, match=r"must not be in use by another job; "
                                                    r"cellbench pid \d+ on .* is running in "
                                                    r"it now"):
            run_compare(cfg, out)
        assert not (out / "units").exists()  # nothing trained twice
    assert run_compare(cfg, out).model("lda").test is not None  # free again


def test_a_model_argument_typo_fails_before_the_run_directory_exists(tmp_path, cfg):
    out = tmp_path / "run"
    with pytest.raises(InvalidParameterError, match=r"width must be an int >= 1; got -1"):
        run_compare(cfg.replace(models=("lda", "mlp(width=-1)")), out)
    with pytest.raises(InvalidParameterError, match=r"model 'cnn1d-seed' must be buildable "
                                                    r"with the given arguments \{'dropout': "
                                                    r"'x'\}; building it failed \(ValueError"):
        run_compare(cfg.replace(models=("lda", "cnn1d-seed(dropout=x)")), out)
    with pytest.raises(InvalidParameterError, match=r"model_kwargs for 'mlp' must be among"):
        run_train(cfg.replace(train=cfg.train.replace(model="mlp",
                                                      model_kwargs={"widht": 8})), out)
    with pytest.raises(InvalidParameterError, match="optimizer_kwargs for 'adam'"):
        run_train(cfg.replace(train=cfg.train.replace(model="mlp",
                                                      optimizer_kwargs={"momentum": 0.9})),
                  out)
    assert not out.exists()


def test_an_unwritable_out_is_a_clear_error_with_nothing_half_written(tmp_path, cfg,
                                                                      monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k:
                        False if str(p) == str(tmp_path) else real(p, mode, *a, **k))
    with pytest.raises(RunDirectoryError, match=r"must be writable; .* does not let this user "
                                                r"create files \(permission denied\)"):
        run_compare(cfg, tmp_path / "run")
    monkeypatch.undo()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", refuse)
    with pytest.raises(RunDirectoryError, match=r"must be writable; creating it failed "
                                                r"\(PermissionError: Permission denied\)"):
        run_compare(cfg, tmp_path / "deep" / "run")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv"]


def test_a_file_in_the_way_of_out_is_named(tmp_path, cfg):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(RunDirectoryError, match=r"'.*taken' is a file, not a folder"):
        run_compare(cfg, tmp_path / "taken" / "run")


def test_run_files_follow_the_umask(tmp_path, cfg):
    old = os.umask(0o022)
    try:
        run_compare(cfg, tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("config.yaml", "results.json", "units/lda/seed0/holdout/model.pt"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_baselines_are_fitted_on_train_and_validation(tmp_path, cfg):
    results = run_compare(cfg.replace(models=("lda", "mlp(width=8,depth=1)")), tmp_path / "r")
    units = {m.label: json.loads((tmp_path / "r" / "units" / m.slug / "seed0" / "holdout" /
                                  "result.json").read_text()) for m in results}
    lda, mlp = units["lda"], units["mlp(width=8,depth=1)"]
    assert lda["sizes"]["val"] == 0 and mlp["sizes"]["val"] > 0
    assert lda["sizes"]["train"] == mlp["sizes"]["train"] + mlp["sizes"]["val"]
    assert lda["ident"]["fit_on"] == "train+validation" and "validation" not in lda
    assert lda["sizes"]["test"] == mlp["sizes"]["test"]


def test_a_diverged_model_is_failed_in_results_and_left_out_of_the_tests(tmp_path, cfg):
    results = run_compare(cfg.replace(models=("lda", "logreg", "boom=mlp(lr=1e6)")),
                          tmp_path / "r")
    boom = results.model("boom")
    assert boom.failed and boom.failed.startswith("diverged")
    assert results.comparisons.reference != "boom"
    assert [r.model for r in results.comparisons.rows] == ["logreg"] or \
        [r.model for r in results.comparisons.rows] == ["lda"]
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert next(m for m in saved["models"] if m["model"] == "boom")["failed"].startswith(
        "diverged")
    assert "failed: diverged" in (tmp_path / "r" / "report.html").read_text()


def test_repeated_cv_feeds_every_run_to_the_corrected_t_test(tmp_path, cfg):
    no_groups = cfg.replace(data=cfg.data.replace(groups=None, drop=("donor",)),
                            split=SplitConfig(cv=3, repeats=2), models=("lda", "logreg"))
    results = run_compare(no_groups, tmp_path / "r")
    (row,) = results.comparisons.rows
    assert row.test == "corrected_t" and row.n == 6
    assert "corrected t, 1 seed x 2 repeats x 3 folds" in row.verdict
    lda = results.model("lda")
    assert len(lda.per_unit) == 6 and lda.test.n == 300  # pooled over the first repeat
    assert lda.test.pooled_over == "3 test parts (seed 0)"


def test_within_groups_trains_one_model_per_group_and_reports_each(tmp_path, cfg):
    results = run_compare(cfg.replace(split=SplitConfig(cv=2, within_groups=True),
                                      models=("lda", "majority")), tmp_path / "w")
    lda = results.model("lda")
    assert len(lda.per_unit) == 24 and lda.test.n == 300
    assert len(lda.test.groups["per_group"]) == 12
    assert results.extra["protocol"] == "within donor: one model per group"
    assert results.comparisons.unit == "groups"
    out = io.StringIO()
    show_compare(results, Console(file=out, width=160))
    text = " ".join(out.getvalue().split())
    assert "accuracy per donor, %" in text and "within donor: one model per group" in text
    assert "│ D11 │" in text  # every group has its row


def test_doctor_on_a_tune_run_says_how_to_diagnose_the_tuned_settings(tmp_path):
    from cellbench.experiment.doctor_rundir import diagnose_run

    run = tmp_path / "tune-run"
    run.mkdir()
    (run / "config.yaml").write_text(RunConfig(data=DataConfig(path="cells.csv")).to_yaml())
    (run / "run.json").write_text(json.dumps({"job": "tune"}))
    with pytest.raises(RunDirectoryError, match=r"it is a tune run, whose trials doctor does not "
                                                r"read.*cellbench doctor --config .*best\.yaml"):
        diagnose_run(run)
