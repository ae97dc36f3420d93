"""A large table's training part preprocessed batch by batch (LazyRows) trains exactly as the
materialised part does, and is not copied."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench._config import DataConfig, TrainConfig
from cellbench.data.io import from_arrays
from cellbench.data.splits import holdout_split
from cellbench.train.rows import LazyRows
from cellbench.train.trainer import prepare, train_model


def _data(n=1200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.lognormal(size=(n, d)) * 30).astype(np.float32)
    X[:, :3] += 40 * np.eye(3, dtype=np.float32)[y]
    ds = from_arrays(X, y, groups=np.arange(n) % 12, feature_names=[f"m{i}" for i in range(d)])
    return ds, holdout_split(ds.y, val_size=0.2, test_size=0.2, random_state=0)


def _large_from(monkeypatch, rows):
    import cellbench.models.linear as linear
    import cellbench.train.trainer as trainer

    monkeypatch.setattr(trainer, "LARGE_ROWS", rows)
    monkeypatch.setattr(linear, "LARGE_ROWS", rows)


@pytest.mark.parametrize("model", ["mlp", "lda"])
def test_a_large_part_trains_as_the_materialised_part(monkeypatch, model):
    ds, split = _data()
    data = DataConfig(transform=("arcsinh", "standardize"))
    cfg = TrainConfig(model=model, max_epochs=3, batch_size=64, random_state=3)
    _large_from(monkeypatch, 10**9)
    eager = train_model(ds, split, cfg, data)
    _large_from(monkeypatch, 100)
    p = prepare(ds, split, cfg, data)
    assert isinstance(p.X_train, LazyRows)
    assert isinstance(p.X_val, LazyRows) or model == "lda"
    np.testing.assert_array_equal(np.asarray(p.X_train), eager.preprocessor.transform_rows(
        ds.X, split.train))
    lazy = train_model(ds, split, cfg, data)
    X_test = ds.X[split.test]
    if model == "mlp":  # the same batches, bit for bit
        np.testing.assert_array_equal(lazy.predict_proba(X_test), eager.predict_proba(X_test))
        assert [r["valid_loss"] for r in lazy.history] == [r["valid_loss"]
                                                           for r in eager.history]
    else:  # by moments instead of sklearn's SVD: equal up to rounding
        np.testing.assert_allclose(lazy.predict_proba(X_test), eager.predict_proba(X_test),
                                   atol=1e-5)


def test_sample_steps_and_gradient_boosting_keep_the_materialised_part(monkeypatch):
    ds, split = _data()
    _large_from(monkeypatch, 100)
    boosted = prepare(ds, split, TrainConfig(model="lightgbm"), DataConfig())
    assert isinstance(boosted.X_train, np.ndarray)
    aligned = prepare(ds, split, TrainConfig(model="mlp"),
                      DataConfig(transform=("sample-standardize", "standardize")))
    assert isinstance(aligned.X_train, np.ndarray)  # each sample's rows together


def test_lazy_rows_copy_only_what_is_asked():
    import tracemalloc

    X = np.random.default_rng(0).normal(size=(200_000, 10)).astype(np.float32)  # 8 MB
    part = LazyRows(X, np.arange(0, len(X), 2), lambda Z: Z * 2)
    tracemalloc.start()
    batch = part[np.arange(256)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 256 * 10 * 4 * 4 and batch.shape == (256, 10)
    np.testing.assert_array_equal(np.asarray(part), X[::2] * 2)
    assert part.to("cpu") is part and len(part) == 100_000
