"""``cellbench doctor`` end to end on tiny tables: a planted fault is named first and its fix
accepted by a paired test, a healthy setup gets no warning, a finished run is diagnosed
from what it saved, and a rerun reuses everything."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench.cli import app
from cellbench.experiment.doctor import doctor, run_doctor
from cellbench.experiment.doctor_steps import Measured, paired_against
from cellbench.models import parse_model

pytestmark = pytest.mark.slow  # each doctor run trains ~30 small units


def _cfg(path, model="mlp(width=32)", **train):
    choice = parse_model(model)
    base = TrainConfig(**{"max_epochs": 25, "patience": 5, "device": "cpu", **train})
    return RunConfig(data=DataConfig(path=str(path), target="label", groups="donor"),
                     split=SplitConfig(cv=4),
                     train=choice.configure(base.replace(model=choice.name)))


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from synthetic import make_table

    path = tmp_path_factory.mktemp("doctor") / "cells.csv"
    make_table(n=640, n_features=8, n_classes=3, n_donors=8, seed=3,
               separation=2.0).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def healthy(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("healthy") / "run"
    return run_doctor(_cfg(cells, "mlp", max_epochs=40), out, budget=None)


def test_a_healthy_setup_gets_no_warning(healthy):
    assert [f for f in healthy.findings if f["severity"] != "info"] == []
    assert healthy.fixes == [] and healthy.final["label"] == "yours"
    saved = json.loads((healthy.run_dir / "doctor.json").read_text())
    assert saved["job"] == "doctor" and {"loss_at_init", "lr_range_test"} <= set(
        saved["probes"])
    assert (healthy.run_dir / "final" / "model.pt").is_file()


def test_heavy_dropout_is_named_first_and_its_fix_recovers(cells, healthy, tmp_path):
    result = run_doctor(_cfg(cells, "mlp(width=32,depth=2,dropout=0.9)"), tmp_path / "d",
                        budget=None)
    first = result.findings[0]
    assert first["id"] == "dropout_gap", [f["id"] for f in result.findings]
    fix = next(x for x in result.fixes if x["fix"] == "lighter_dropout")
    assert fix["accepted"] and fix["p_adjusted"] < 0.05 and fix["difference"] > 0
    yours = next(m for m in result.models if m.label == "yours").test.accuracy.value
    good = next(m for m in healthy.models if m.label == "yours").test.accuracy.value
    final = result.final["test"]["accuracy"]["value"]
    assert final - yours >= 0.9 * (good - yours)  # recovers 90 % of what the fault cost


def test_a_fix_that_changes_nothing_is_rejected(healthy, cells):
    """The paired test of a 'fix' identical to the user's setting is not significant."""
    from cellbench.experiment.inputs import load_dataset

    units = healthy.run_dir
    measured = Measured()
    from cellbench.evaluate.results import UnitResult
    from cellbench.experiment.grid import runs_of

    mine = [UnitResult.read(p.parent) for p in
            sorted((units / "units").glob("mlp/*/*/result.json"))]
    measured.runs = {"yours": runs_of(mine), "noop": runs_of(mine)}
    ds = load_dataset(_cfg(cells).data)
    row = paired_against("yours", measured, ["noop"], ds, _cfg(cells)).row("noop")
    assert row.difference == 0 and row.p_adjusted >= 0.05


def test_a_rerun_reuses_every_unit_and_gives_the_same_findings(cells, healthy):
    again = run_doctor(_cfg(cells, "mlp", max_epochs=40), healthy.run_dir, budget=None)
    assert all(m.reused_units == m.units for m in again.models)
    assert [f["id"] for f in again.findings] == [f["id"] for f in healthy.findings]


def test_a_tiny_budget_lists_the_fixes_it_could_not_run(cells, tmp_path):
    result = run_doctor(_cfg(cells, "mlp(width=32,dropout=0.9)"), tmp_path / "b", budget=1)
    assert result.fixes == [] and result.not_run
    assert "budget" in result.not_run[0]["why"]


def test_python_api_and_cli_on_a_finished_compare_run(cells, tmp_path):
    runner = CliRunner()
    out = tmp_path / "c"
    assert runner.invoke(app, ["compare", str(cells), "-t", "label", "-g", "donor", "--cv",
                               "4", "--models", "lda,a=mlp(width=8),b=mlp(width=9)",
                               "--reference", "a", "--max-epochs", "5", "--out", str(out),
                               "--quiet"]).exit_code == 0
    result = doctor(out)
    assert {"a", "b"} & {f["message"].split(":")[0] for f in result.findings}
    # the run's own question first: b, one unit wider than the reference a, is not better
    first = result.findings[0]
    assert first["id"] == "difference_not_significant" and first["severity"] == "warning"
    assert first["message"].startswith("1 network(s) cannot be told apart from a: b ")
    assert [f["id"] for f in result.findings].count("difference_not_significant") == 1
    cli = runner.invoke(app, ["doctor", str(out), "--quiet"])
    assert cli.exit_code == 0 and "findings" in cli.output


def test_a_healthy_image_setup_gets_no_warning(tmp_path):
    """Tiny two-class images a small CNN separates: nothing above information."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 320
    y = np.arange(n) % 2
    X = rng.normal(60, 20, size=(n, 1, 16, 16))
    X[y == 1, :, 4:12, 4:12] += 90  # a bright spot in every second image
    slides = np.array([f"S{i % 16:02d}" for i in range(n)])
    path = tmp_path / "cells.npz"
    np.savez(path, X=np.clip(X, 0, 255).astype(np.uint8), y=y, slide_id=slides)
    cfg = RunConfig(data=DataConfig(path=str(path), groups="slide_id"),
                    split=SplitConfig(cv=4),
                    train=TrainConfig(model="shallow-seed004", max_epochs=8, patience=3,
                                      batch_size=32, device="cpu"))
    result = run_doctor(cfg, tmp_path / "run", budget=None)
    assert [f for f in result.findings if f["severity"] != "info"] == []
    assert result.final["label"] == "yours"


def test_images_without_a_model_get_the_default_image_network(tmp_path):
    """No --model on images: ResNet-8 (the default network for images), not the tabular
    default MLP, which cannot train on images."""
    import numpy as np

    rng = np.random.default_rng(1)
    n = 160
    y = np.arange(n) % 2
    X = rng.normal(60, 20, size=(n, 1, 16, 16))
    X[y == 1, :, 4:12, 4:12] += 90
    path = tmp_path / "cells.npz"
    np.savez(path, X=np.clip(X, 0, 255).astype(np.uint8), y=y,
             slide_id=np.array([f"S{i % 8:02d}" for i in range(n)]))
    result = doctor(path, groups="slide_id", cv=4, max_epochs=3, device="cpu", budget=None,
                    out=tmp_path / "run")
    assert result.setting["spec"] == "resnet8"
    assert any(m.label == "yours" and m.test is not None for m in result.models)


def test_a_batch_shift_between_samples_is_named_and_aligning_them_accepted(tmp_path):
    """Each of 8 samples offset by N(0, 2^2) per marker: the doctor names sample_shift, tests
    sample-standardize (normalize_samples), accepts it over the samples, and the final model
    predicts a new file sample by sample."""
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parents[1] / "diagnose"))
    from test_sample_shift import shifted

    from cellbench.experiment import run_predict

    ds, _ = shifted(2.0, n_samples=8, n=200)
    frame = pd.DataFrame(ds.X, columns=ds.feature_names)
    frame["label"], frame["donor"] = ds.y, ds.groups
    frame.to_csv(tmp_path / "cells.csv", index=False)
    result = run_doctor(_cfg(tmp_path / "cells.csv"), tmp_path / "run", budget=None)
    first = result.findings[0]
    assert (first["id"], first["severity"]) == ("sample_shift", "warning")
    accepted = [f for f in result.fixes if f["accepted"]]
    assert [f["fix"] for f in accepted] == ["normalize_samples"]
    assert accepted[0]["difference"] > 0.05 and result.final["label"].startswith(
        "normalize_samples")
    done = run_predict(result.run_dir / result.final["model_path"], tmp_path / "cells.csv")
    assert done.accuracy > 0.95
