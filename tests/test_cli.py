"""The command line, end to end on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cellbench.cli import app

runner = CliRunner()


class Result:
    """CLI result with the output's line wrapping undone (rich wraps long messages)."""

    def __init__(self, raw):
        self.exit_code = raw.exit_code
        self.output = " ".join(raw.output.split())


def invoke(*args):
    return Result(runner.invoke(app, [str(a) for a in args], catch_exceptions=False))


def test_models_lists_the_registry():
    result = invoke("models")
    assert result.exit_code == 0
    for name in ("cnn1d-seed", "cnn1d-seed-0509", "lightgbm", "lda", "mlp"):
        assert name in result.output


def test_compare_writes_results_and_reuses_finished_units(tmp_path, tiny_csv):
    out = tmp_path / "run"
    args = ["compare", tiny_csv, "--target", "label", "--groups", "donor", "--cv", "3",
            "--models", "majority,lda,mlp(width=16,depth=1)", "--max-epochs", "3",
            "--out", out, "--quiet"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "test results" in result.output and "mlp(width=16,depth=1)" in result.output
    summary = json.loads((out / "results.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["majority", "lda",
                                                       "mlp(width=16,depth=1)"]
    lda = summary["models"][1]
    assert lda["test"]["n"] == 300 and len(lda["per_unit"]) == 3
    assert 0 <= lda["test"]["accuracy"]["ci"][0] <= lda["test"]["accuracy"]["value"]
    assert summary["data"]["groups"] == {"column": "donor", "n": 12}
    for name in ("config.yaml", "data.json", "comparison.png"):
        assert (out / name).is_file()
    unit = out / "units" / "mlp_width_16_depth_1" / "seed0" / "fold1"
    for name in ("result.json", "model.pt", "predictions.npz", "history.csv", "curves.png",
                 "confusion.png"):
        assert (unit / name).is_file(), name
    # a rerun reuses every finished unit instead of training again
    again = invoke(*args)
    assert again.exit_code == 0
    summary = json.loads((out / "results.json").read_text())
    assert all(m["reused_units"] == m["units"] for m in summary["models"])


def test_labelled_models_and_a_chosen_reference(tmp_path, tiny_csv):
    out = tmp_path / "run"
    base = ["compare", tiny_csv, "--target", "label", "--groups", "donor", "--cv", "3",
            "--max-epochs", "2", "--out", out, "--quiet"]
    result = invoke(*base, "--models", "majority,small=mlp(width=16,depth=1)",
                    "--reference", "small")
    assert result.exit_code == 0, result.output
    assert "paired tests against small" in result.output and "majority vs small:" in \
        result.output
    summary = json.loads((out / "results.json").read_text())
    small = summary["models"][1]
    assert (small["model"], small["spec"]) == ("small", "mlp(width=16,depth=1)")
    assert (out / "units" / "mlp_width_16_depth_1" / "seed0" / "fold1" / "result.json").is_file()
    # renaming a model is not a new model: its finished runs are reused
    again = invoke(*base, "--models", "majority,tiny=mlp(width=16,depth=1)")
    assert again.exit_code == 0, again.output
    tiny = json.loads((out / "results.json").read_text())["models"][1]
    assert tiny["model"] == "tiny" and tiny["reused_units"] == tiny["units"] == 3
    typo = invoke(*base, "--models", "majority,tiny=mlp(width=16,depth=1)", "--reference", "tiyn")
    assert typo.exit_code == 2 and "Did you mean 'tiny'?" in typo.output
    clash = invoke(*base, "--models", "a=lda,a=mlp")
    assert clash.exit_code == 2 and "'a' repeats" in clash.output


def test_compare_refuses_a_run_directory_on_other_data(tmp_path, tiny_csv):
    out = tmp_path / "run"
    base = ["compare", tiny_csv, "--target", "label", "--groups", "donor", "--models", "lda",
            "--out", out, "--quiet"]
    assert invoke(*base).exit_code == 0
    result = invoke(*base, "--cv", "3")
    assert result.exit_code == 2
    assert "holds a run on different data or splits" in result.output


def test_bad_input_exits_with_a_message_not_a_traceback(tmp_path, tiny_csv):
    result = invoke("compare", tiny_csv, "--target", "lable", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "error:" in result.output and "Did you mean 'label'?" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()  # nothing half-made


def test_train_writes_the_run_directory_and_predict_uses_the_model(tmp_path, tiny_csv):
    out = tmp_path / "t"
    result = invoke("train", tiny_csv, "-t", "label", "-g", "donor", "--model",
                    "cnn1d-seed-0509", "--max-epochs", "4", "--optimizer", "asgd", "--lr",
                    "0.05", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "data.json", "history.csv", "metrics.json", "model.pt",
                 "checkpoints/last.pt", "curves.png", "confusion.png"):
        assert (out / name).is_file(), name
    history = pd.read_csv(out / "history.csv")
    assert {"running_accuracy", "train_accuracy", "valid_accuracy"} <= set(history.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "cnn1d-seed-0509" and "test" in metrics
    assert torch.load(out / "model.pt", weights_only=True)["config"]["optimizer"] == "asgd"
    again = invoke("train", "--resume", out)
    assert again.exit_code == 0 and "already finished" in again.output
    refused = invoke("train", tiny_csv, "-t", "label", "--out", out)
    assert refused.exit_code == 2 and "must be new" in refused.output

    preds = tmp_path / "p.csv"
    result = invoke("predict", out / "model.pt", tiny_csv, "--out", preds)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(preds)
    assert list(frame.columns) == ["row", "predicted", "proba_type0", "proba_type1",
                                   "proba_type2"]
    assert len(frame) == 300 and "accuracy" in result.output


def test_predict_names_missing_feature_columns(tmp_path, tiny_csv, tiny_table):
    out = tmp_path / "t"
    assert invoke("train", tiny_csv, "-t", "label", "-g", "donor", "-m", "lda", "--out", out,
                  "--quiet").exit_code == 0
    tiny_table.drop(columns=["CD3", "CD7"]).to_csv(tmp_path / "new.csv", index=False)
    result = invoke("predict", out / "model.pt", tmp_path / "new.csv")
    assert result.exit_code == 2 and "lacks 'CD3', 'CD7'" in result.output


def test_config_file_flags_and_set_overrides(tmp_path, tiny_csv):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data:\n  path: {tiny_csv}\n  target: label\n  groups: donor\n"
                   "train:\n  model: mlp\n  max_epochs: 50\n  lr: 1e-2\n")
    out = tmp_path / "c"
    result = invoke("train", "--config", cfg, "--max-epochs", "2", "--set", "train.lr=3e-3",
                    "--set", "train.model_kwargs.width=8", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    saved = (out / "config.yaml").read_text()
    assert "max_epochs: 2" in saved and "lr: 0.003" in saved and "width: 8" in saved
    bad = invoke("train", "--config", cfg, "--set", "train.lrr=1", "--out", tmp_path / "d")
    assert bad.exit_code == 2 and "did you mean 'lr'?" in bad.output


def test_train_with_cv_and_seeds_reports_repeats(tiny_csv, tmp_path):
    out = tmp_path / "z"
    result = invoke("train", tiny_csv, "-t", "label", "-g", "donor", "--cv", "3", "--seeds",
                    "2", "-m", "mlp(width=8)", "--max-epochs", "2", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    (model,) = summary["models"]
    assert model["units"] == 6 and len(model["per_unit"]) == 6
    assert (out / "units" / "mlp" / "curves.png").is_file()  # mean and band over 6 runs
    saved = torch.load(out / "units" / "mlp" / "seed1" / "fold2" / "model.pt",
                       weights_only=True)
    assert saved["model_kwargs"] == {"width": 8} and saved["config"]["random_state"] == 1


def test_compare_prints_paired_verdicts_with_the_unit(tiny_csv, tmp_path):
    result = invoke("compare", tiny_csv, "-t", "label", "-g", "donor", "--cv", "3",
                    "--models", "majority,lda", "--out", tmp_path / "c", "--quiet")
    assert result.exit_code == 0, result.output
    assert "paired tests against lda" in result.output
    assert "unit: patients/samples" in result.output
    assert "majority vs lda:" in result.output and "Wilcoxon signed-rank over 12 donor" \
        in result.output
    summary = json.loads((tmp_path / "c" / "results.json").read_text())
    row = summary["comparisons"]["rows"][0]
    assert row["unit"] == "groups" and row["n"] == 12 and row["difference"] < 0


def test_ablate_runs_factors_against_the_base(tiny_csv, tmp_path):
    out = tmp_path / "a"
    result = invoke("ablate", tiny_csv, "-t", "label", "-g", "donor", "--cv", "3", "--model",
                    "cnn1d-seed", "--factor", "dropout=0.25/0.5,0", "--factor",
                    "optimizer=adam,asgd", "--seeds", "2", "--max-epochs", "2", "--out", out,
                    "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    rows = summary["ablation"]["rows"]
    assert [r["config"] for r in rows] == ["base", "dropout=0", "optimizer=asgd"]
    assert "difference" not in rows[0] and "p_adjusted" in rows[1]
    assert summary["comparisons"]["reference"] == "base"
    assert (out / "ablation.png").is_file()
    assert rows[1]["runs"] == 6  # 3 folds x 2 seeds: the mean the difference is built from
    assert "mean ± sd over 6 runs" in " ".join(result.output.split())
    assert "ablation of cnn1d-seed" in result.output and "optimizer=asgd vs base" in \
        result.output
    asgd = torch.load(out / "units" / "optimizer_asgd" / "seed0" / "fold1" / "model.pt",
                      weights_only=True)
    assert asgd["config"]["optimizer"] == "asgd"
    bad = invoke("ablate", tiny_csv, "-t", "label", "--model", "mlp", "--factor",
                 "dropuot=0,0.5", "--out", tmp_path / "b")
    assert bad.exit_code == 2 and "Did you mean 'dropout'?" in bad.output


def test_train_on_an_fcs_folder_and_predict_an_fcs_file(tmp_path, fcs_writer):
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        label = "sick" if i % 2 else "healthy"
        data = rng.gamma(2, 50, size=(60, 3)) + np.array([80.0 if label == "sick" else 0, 0, 0])
        fcs_writer(tmp_path / f"s{i}.fcs", data, ["FL1-A", "FL2-A", "FL3-A"],
                   ["CD3", "CD4", "CD8"])
        rows.append({"file": f"s{i}.fcs", "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "sample_sheet.csv", index=False)
    out = tmp_path / "run"
    result = invoke("train", tmp_path, "--model", "logreg", "--transform",
                    "arcsinh,standardize", "--cytometry", "flow", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["groups"]["applicable"]  # one label per sample: sample-level result
    new = tmp_path / "new"
    new.mkdir()
    fcs_writer(new / "unknown.fcs", rng.gamma(2, 50, size=(25, 3)), ["FL1-A", "FL2-A", "FL3-A"],
               ["CD3", "CD4", "CD8"])
    result = invoke("predict", out / "model.pt", new / "unknown.fcs", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 25
    result = invoke("predict", out / "model.pt", new, "--out", tmp_path / "q.csv")
    frame = pd.read_csv(tmp_path / "q.csv")
    assert result.exit_code == 0 and set(frame["sample"]) == {"unknown"}


def _image_folder(root, n=40, size=20):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, bright in (("bright", 170), ("dark", 70)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(bright, 40, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / label / f"S{i % 8}_{i}.png")
    return root


def test_images_compare_train_summary_and_predict(tmp_path):
    data = _image_folder(tmp_path / "imgs")
    out = tmp_path / "cmp"
    result = invoke("compare", data, "--group-regex", r"^(S\d+)_", "--models",
                    "majority,logreg,shallow-seed004", "--max-epochs", "3", "--batch-size",
                    "16", "--augment", "flip,rot90", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["unit"] == "images" and summary["data"]["shape"] == [1, 20, 20]
    assert "n = " in result.output and "images" in result.output
    assert {m["model"] for m in summary["models"]} == {"majority", "logreg",
                                                       "shallow-seed004"}
    model = out / "units" / "shallow-seed004" / "seed0" / "holdout" / "model.pt"
    saved = torch.load(model, weights_only=True)
    assert saved["input_shape"] == [1, 20, 20] and saved["config"]["augment"] == "flip,rot90"

    result = invoke("predict", model, data, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.csv")
    assert len(frame) == 80 and "accuracy" in result.output
    # a folder is decoded and predicted in pieces: the same rows, names, labels and numbers
    import cellbench.data.images as images_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images_module.iter_images_for_prediction, "__defaults__", (None, 7))
        pieces = invoke("predict", model, data, "--out", tmp_path / "pieces.csv")
    assert pieces.exit_code == 0, pieces.output
    chunked = pd.read_csv(tmp_path / "pieces.csv")
    assert chunked["file"].tolist() == frame["file"].tolist()
    numbers = [c for c in frame.columns if c.startswith("proba_")]
    np.testing.assert_allclose(chunked[numbers], frame[numbers], atol=1e-6)
    assert (chunked.drop(columns=numbers) == frame.drop(columns=numbers)).all().all()
    result = invoke("predict", model, data / "dark" / "S0_0.png", "--out", tmp_path / "q.csv")
    assert result.exit_code == 0 and len(pd.read_csv(tmp_path / "q.csv")) == 1
    big = _image_folder(tmp_path / "big", n=2, size=24)
    refused = invoke("predict", model, big)
    assert refused.exit_code == 2 and "--resize 20" in refused.output
    assert invoke("predict", model, big, "--resize", "20", "--out",
                  tmp_path / "r.csv").exit_code == 0

    result = invoke("summary", "shallow-seed004", "--input", "1x20x20")
    assert result.exit_code == 0 and "Total params" in result.output


def test_table_model_on_images_is_refused(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=12)
    result = invoke("train", data, "--model", "mlp", "--out", tmp_path / "t")
    assert result.exit_code == 2
    assert "takes tabular input and cannot train on images" in result.output


def test_raw_pixels_are_reported(tmp_path):
    data = _image_folder(tmp_path / "imgs", n=12)
    result = invoke("train", data, "--model", "vgg11", "--image-norm", "none",
                    "--max-epochs", "1", "--optimizer", "rmsprop", "--out", tmp_path / "t",
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert "go into the network unscaled" in result.output


@pytest.mark.slow
def test_compare_example_images_runs_the_bundled_data(tmp_path):
    result = invoke("compare", "--example", "images", "--out", tmp_path / "ex", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ex" / "results.json").read_text())
    accs = {m["model"]: m["test"]["accuracy"]["value"] for m in summary["models"]}
    assert max(accs.values()) > 0.85 and accs["majority"] < 0.6


def test_user_strings_are_shown_literally(tmp_path, tiny_table):
    """Class names, paths and columns with brackets are text, never rich markup; a class
    named like mathtext does not break the figures."""
    folder = tmp_path / "[run 2]"
    folder.mkdir()
    frame = tiny_table.rename(columns={"CD1": "CD45 [a.u.]"})
    frame["label"] = frame["label"].map({"type0": "T cells [/CD4]", "type1": "[bold]B",
                                         "type2": r"$\foo{x}$ cells"})
    path = folder / "cells.csv"
    frame.to_csv(path, index=False)
    result = invoke("compare", path, "-t", "label", "-g", "donor", "--models", "lda,majority",
                    "--out", folder / "out", "--quiet")
    assert result.exit_code == 0, result.output
    for text in ("T cells [/CD4]", "[bold]B", r"$\foo{x}$ cells", "[run 2]"):
        assert text in result.output, text
    assert (folder / "out" / "units" / "lda" / "seed0" / "holdout" / "confusion.png").is_file()
    missing = invoke("compare", path, "-t", "label", "-g", "donor", "--features", "CD45*,CD99",
                     "--out", tmp_path / "x")
    assert missing.exit_code == 2 and "CD45 [a.u.]" in missing.output
    listed = invoke("models", "xgb*")
    assert "'cellbench[xgboost]'" in listed.output


def test_train_says_from_which_epoch_it_resumes(tmp_path, tiny_csv, monkeypatch):
    from cellbench.train.callbacks import Checkpoint

    save = Checkpoint.on_epoch_end

    def interrupt_after_epoch_2(self, state):
        save(self, state)
        if state.epoch == 2:
            raise KeyboardInterrupt

    out = tmp_path / "t"
    args = ("train", tiny_csv, "-t", "label", "-g", "donor", "-m", "mlp(width=8)",
            "--max-epochs", "4", "--out", out, "--quiet")
    monkeypatch.setattr(Checkpoint, "on_epoch_end", interrupt_after_epoch_2)
    assert invoke(*args).exit_code == 130
    monkeypatch.undo()
    result = invoke("train", "--resume", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "epochs 1-2 of 4 are done; training continues with epoch 3" in result.output
    nothing = invoke("train", "--resume", tmp_path / "nowhere")
    assert nothing.exit_code == 2 and "holds no config.yaml" in nothing.output


def test_a_diverged_train_fails_and_says_why(tmp_path, tiny_csv):
    result = invoke("train", tiny_csv, "-t", "label", "-g", "donor", "-m", "mlp(width=8)",
                    "--optimizer", "sgd", "--lr", "1e6", "--max-epochs", "3", "--out",
                    tmp_path / "t", "--quiet")
    assert result.exit_code == 1
    assert "mlp failed: diverged" in result.output
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["failed"].startswith("diverged")


def test_one_class_for_everything_is_said_in_tables_and_predict(tmp_path, tiny_table):
    # regularised to nothing and weighted to one class, logistic regression predicts it only
    path = tmp_path / "cells.csv"
    tiny_table.to_csv(path, index=False)
    out = tmp_path / "t"
    result = invoke("train", path, "-t", "label", "-g", "donor", "-m", "logreg(C=1e-9)",
                    "--set", "train.class_weight={type0: 1000}", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "logreg predicts one class" in result.output and "for every test cell" in \
        result.output
    predicted = invoke("predict", out / "model.pt", path, "--out", tmp_path / "p.csv")
    assert predicted.exit_code == 0, predicted.output
    assert "predicts one class for everything" in predicted.output
    assert "accuracy" in predicted.output and "%" in predicted.output


def test_a_compare_where_a_class_is_one_patient_says_it_in_plain_words(tmp_path, tiny_table):
    frame = tiny_table.drop(columns="donor")
    frame["patient"] = frame["label"].map({"type0": "P1", "type1": "P2", "type2": "P3"})
    frame.to_csv(tmp_path / "c.csv", index=False)
    result = invoke("compare", tmp_path / "c.csv", "-t", "label", "-g", "patient",
                    "--models", "lda,logreg", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "cannot be separated from the group 'patient'" in result.output
    assert not (tmp_path / "run").exists()


def test_a_warning_every_unit_raises_again_is_printed_once(capsys):
    import warnings

    from cellbench.cli import _run
    from cellbench.exceptions import CellbenchWarning

    def job():
        for text in ("pixels unscaled", "pixels unscaled", "another"):
            with warnings.catch_warnings():  # as training does: the registry is reset
                warnings.simplefilter("always")
                warnings.warn(text, CellbenchWarning, stacklevel=1)
        return 7

    assert _run(job) == 7
    err = capsys.readouterr().err
    assert err.count("pixels unscaled") == 1 and err.count("another") == 1


def test_only_a_large_input_maps_its_large_buffers(tmp_path, tiny_csv, monkeypatch):
    """Mapping every buffer of 256 KB or more costs a training loop page faults (1.5x on
    the image example), so only inputs of LARGE_INPUT_BYTES or more do it."""
    import cellbench._utils as utils
    from cellbench._utils import input_bytes

    calls = []
    monkeypatch.setattr(utils, "map_large_buffers", lambda: calls.append(1))
    args = ("train", tiny_csv, "-t", "label", "-g", "donor", "--model", "lda", "--quiet")
    assert invoke(*args, "--out", tmp_path / "small").exit_code == 0 and calls == []
    monkeypatch.setattr(utils, "LARGE_INPUT_BYTES", input_bytes(tiny_csv))
    assert invoke(*args, "--out", tmp_path / "large").exit_code == 0 and calls == [1]
    assert input_bytes(tiny_csv.parent) >= input_bytes(tiny_csv) > 0
    assert input_bytes(tmp_path / "nowhere") == input_bytes(None) == 0
