"""Per-sample normalisation (``sample-standardize``, ``sample-quantile``): each sample moved onto
a reference of the training samples from its own cells, identically in the grid, in the Python
API and in ``predict`` streaming a file in chunks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellbench import CellbenchClassifier
from cellbench._config import DataConfig
from cellbench.cli import app
from cellbench.data import sample_norm as sn
from cellbench.data.table_transforms import Preprocessor
from cellbench.exceptions import DataError, InvalidParameterError
from cellbench.experiment import run_predict
from cellbench.train.trainer import load_model

STEPS = ("sample-standardize", "sample-quantile")


def _shifted(n_samples=4, n=400, d=3, seed=0):
    """One base distribution, each sample shifted and scaled per marker (a batch effect)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, size=(n, d)).astype(np.float32)
    X = np.concatenate([base * (1 + 0.5 * s) + 3 * s for s in range(n_samples)])
    groups = np.repeat([f"s{s}" for s in range(n_samples)], n).astype(object)
    return X.astype(np.float32), groups


@pytest.mark.parametrize("step", STEPS)
def test_a_batch_effect_is_removed(step):
    """Samples that differ only by an affine batch effect become the same sample (but for
    the quantile step's tails beyond 1 % and 99 %, which are shifted, not scaled)."""
    X, groups = _shifted()
    pre = Preprocessor((step,)).fit(X, ["a", "b", "c"], groups=groups)
    Z = pre.transform(X, groups)
    blocks = Z.reshape(4, 400, 3)
    for s in range(1, 4):
        close = np.isclose(blocks[s], blocks[0], atol=1e-3)
        assert close.mean() >= (1.0 if step == "sample-standardize" else 0.975)
    # ... onto the reference: the mean of the samples' statistics
    stats = [sn.sample_stats(step, X[groups == f"s{s}"]) for s in range(4)]
    np.testing.assert_allclose(sn.sample_stats(step, blocks[0]), np.mean(stats, axis=0),
                               rtol=1e-4, atol=1e-3)


def test_without_the_step_the_shift_stays():
    X, _ = _shifted()
    Z = Preprocessor(("standardize",)).fit(X, ["a", "b", "c"]).transform(X).reshape(4, 400, 3)
    assert np.abs(Z[3] - Z[0]).mean() > 1


def test_quantile_alignment_maps_quantiles_and_shifts_beyond_them():
    q = np.linspace(0, 98, 99, dtype=np.float32)[:, None]  # sample quantiles 0..98
    r = (2 * q + 10).astype(np.float32)  # reference
    x = np.array([[-5.0], [0.0], [49.0], [98.0], [100.0]], np.float32)
    out = sn.align("sample-quantile", x, q, r).ravel()
    np.testing.assert_allclose(out, [5.0, 10.0, 108.0, 206.0, 208.0])


def test_a_repeated_value_goes_to_the_middle_of_its_reference_levels():
    """Zeros of a dim marker (40 % of a sample) do not all go to one end of the reference."""
    q = np.concatenate([np.zeros(40), np.linspace(0.1, 5, 59)]).astype(np.float32)[:, None]
    r = np.linspace(-1, 1, 99).astype(np.float32)[:, None]
    out = sn.align("sample-quantile", np.zeros((1, 1), np.float32), q, r)
    np.testing.assert_allclose(out.ravel(), 0.5 * (r[0] + r[39]), atol=1e-6)


def test_statistics_come_from_every_kth_cell_and_stay_bounded():
    assert sn.stat_rows(50) == slice(0, 50, 1)
    rows = sn.stat_rows(3 * sn.STAT_CELLS + 1)
    assert rows.step == 4 and len(range(*rows.indices(3 * sn.STAT_CELLS + 1))) <= sn.STAT_CELLS
    X = np.random.default_rng(0).normal(size=(sn.STAT_CELLS + 5, 2)).astype(np.float32)
    pre = Preprocessor(("sample-quantile",)).fit(X, ["a", "b"])
    np.testing.assert_array_equal(pre.sample_statistics(X[::2])[0],
                                  sn.sample_stats("sample-quantile", X[::2]))
    # the statistics a streamed file supplies give the rows' own transform
    np.testing.assert_array_equal(pre.transform(X, stats_by_sample={None:
                                                pre.sample_statistics(X[::2])}),
                                  pre.transform(X))


@pytest.mark.parametrize("step", STEPS)
def test_reference_comes_from_training_rows_only(step):
    X, groups = _shifted()
    train = np.flatnonzero(groups != "s3")
    pre = Preprocessor((step, "standardize")).fit(X, ["a", "b", "c"], rows=train, groups=groups)
    X2 = X.copy()
    X2[groups == "s3"] *= 100  # the test sample's values do not reach the reference
    pre2 = Preprocessor((step, "standardize")).fit(X2, ["a", "b", "c"], rows=train,
                                                    groups=groups)
    np.testing.assert_array_equal(pre.sample_refs_[0], pre2.sample_refs_[0])
    np.testing.assert_array_equal(pre.mean_, pre2.mean_)
    # transform_rows is transform of those rows, sample by sample
    rows = np.random.default_rng(1).permutation(len(X))[:700]
    np.testing.assert_allclose(pre.transform_rows(X, rows, groups),
                               pre.transform(X[rows], groups[rows]), atol=1e-6)


def test_a_tiny_sample_is_left_as_it_is():
    X, groups = _shifted()
    pre = Preprocessor(("sample-standardize",)).fit(X, ["a", "b", "c"], groups=groups)
    few = X[:sn.MIN_CELLS - 1] + 50
    np.testing.assert_allclose(pre.transform(few), few, atol=1e-5)


@pytest.mark.parametrize("step", STEPS)
def test_state_round_trips_through_json(step):
    X, groups = _shifted()
    pre = Preprocessor(("arcsinh", step, "standardize"), group_name="sample").fit(
        X, ["a", "b", "c"], groups=groups)
    state = json.loads(json.dumps(pre.state_dict()))
    back = Preprocessor.from_state(state)
    assert back.group_name == "sample" and back.per_sample
    np.testing.assert_array_equal(back.transform(X, groups), pre.transform(X, groups))


def test_steps_are_checked_by_name():
    with pytest.raises(InvalidParameterError, match="sample-quantile"):
        DataConfig(transform=("sample-quantil",))


def _table(tmp_path):
    X, groups = _shifted(n_samples=6, n=200, d=4, seed=3)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, len(X))
    X[:, 0] += 2.0 * y
    frame = pd.DataFrame(X, columns=["CD1", "CD2", "CD3", "CD4"])
    frame["label"] = np.where(y == 1, "pos", "neg")
    frame["patient"] = groups
    frame.to_parquet(tmp_path / "cells.parquet", row_group_size=128)
    return frame


@pytest.mark.parametrize("model", ["lda", "mlp"])
def test_predict_streams_the_same_statistics_as_the_grid(tmp_path, model):
    """A file predicted 97 rows at a time gets exactly the probabilities of the training
    run's test and validation rows, each sample normalised from its own rows."""
    _table(tmp_path)
    result = CliRunner().invoke(app, [
        "train", str(tmp_path / "cells.parquet"), "-t", "label", "-g", "patient", "-m", model,
        "--transform", "arcsinh,sample-quantile,standardize", "--max-epochs", "2",
        "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "run" / "predictions.npz")
    done = run_predict(tmp_path / "run" / "model.pt", tmp_path / "cells.parquet",
                       chunk_rows=97, keep_frame=True)
    proba = done.frame[[c for c in done.frame.columns if c.startswith("proba_")]].to_numpy()
    for part in ("test", "val"):
        np.testing.assert_allclose(proba[saved[f"{part}_index"]], saved[f"{part}_proba"],
                                   rtol=1e-6, atol=1e-7)


def test_predict_without_a_sample_column_treats_the_file_as_one_sample(tmp_path):
    frame = _table(tmp_path)
    clf = CellbenchClassifier(model="lda", preprocessing=("sample-standardize",))
    markers = ["CD1", "CD2", "CD3", "CD4"]
    clf.fit(frame[markers], frame["label"].to_numpy(), groups=frame["patient"])
    fm = clf.model_
    fm.save(tmp_path / "model.pt")
    one = frame[frame["patient"] == "s4"][markers]
    one.to_csv(tmp_path / "s4.csv", index=False)
    done = run_predict(tmp_path / "model.pt", tmp_path / "s4.csv", chunk_rows=50,
                       keep_frame=True)
    proba = done.frame[[c for c in done.frame.columns if c.startswith("proba_")]].to_numpy()
    np.testing.assert_allclose(proba, clf.predict_proba(one), rtol=1e-6)
    np.testing.assert_allclose(
        clf.predict_proba(one),
        load_model(tmp_path / "model.pt").predict_proba(one.to_numpy(), groups=None),
        rtol=1e-6)
    with pytest.raises(InvalidParameterError, match="groups must hold one sample id"):
        clf.predict_proba(one, groups=["s4"])


def test_a_sample_step_without_groups_is_a_clear_error(tmp_path):
    frame = _table(tmp_path)
    with pytest.raises(DataError, match="--groups COLUMN"):
        CellbenchClassifier(model="lda", preprocessing=("sample-quantile",)).fit(
            frame[["CD1", "CD2"]].to_numpy(), frame["label"].to_numpy())
