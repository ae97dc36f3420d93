"""Preprocessing is fitted on training rows only and saved with the model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cellbench.data import Preprocessor
from cellbench.exceptions import InvalidParameterError, NotFittedError


def test_arcsinh_uses_per_channel_cofactors_by_name_or_alias():
    X = np.array([[5.0, 150.0], [10.0, 300.0]], np.float32)
    pre = Preprocessor(("arcsinh",), cofactor=5.0, cofactors={"CD4": 150.0},
                       aliases={"CD4": "FL2-A"}).fit(X, ["FL1-A", "FL2-A"])
    np.testing.assert_allclose(pre.transform(X), np.arcsinh([[1, 1], [2, 2]]), rtol=1e-6)


def test_standardize_uses_training_statistics_only():
    train = np.array([[0.0], [2.0], [4.0]], np.float32)
    test = np.array([[100.0]], np.float32)
    pre = Preprocessor(("standardize",)).fit(train, ["a"])
    expected = (100 - 2) / np.std([0, 2, 4])
    np.testing.assert_allclose(pre.transform(test), [[expected]], rtol=1e-5)


def test_constant_column_is_not_divided_by_zero():
    pre = Preprocessor(("standardize",)).fit(np.ones((5, 1), np.float32), ["a"])
    assert np.isfinite(pre.transform(np.ones((2, 1), np.float32))).all()


def test_quantile_maps_training_data_to_a_standard_normal():
    rng = np.random.default_rng(0)
    X = rng.lognormal(2, 1, size=(5000, 2)).astype(np.float32)
    Z = Preprocessor(("quantile",)).fit_transform(X, ["a", "b"])
    assert abs(Z.mean()) < 0.05 and abs(Z.std() - 1) < 0.05
    assert stats.kstest(Z[:, 0], "norm").statistic < 0.02
    # monotone, and finite far outside the training range
    order = np.argsort(X[:, 0])
    assert np.all(np.diff(Z[order, 0]) >= -1e-6)
    assert np.isfinite(Preprocessor(("quantile",)).fit(X, ["a", "b"]).transform(
        np.array([[1e9, -1e9]], np.float32))).all()


def test_steps_chain_in_order_and_round_trip_through_state():
    rng = np.random.default_rng(1)
    X = rng.gamma(2, 100, size=(200, 3)).astype(np.float32)
    pre = Preprocessor(("arcsinh", "standardize", "quantile"), cofactor=150).fit(
        X, ["a", "b", "c"])
    again = Preprocessor.from_state(pre.state_dict())
    np.testing.assert_array_equal(pre.transform(X), again.transform(X))
    Z = Preprocessor(("arcsinh", "standardize"), cofactor=150).fit_transform(X, ["a", "b", "c"])
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-5)


def test_bad_settings_and_use_before_fit():
    with pytest.raises(InvalidParameterError, match=r"transform steps must be among"):
        Preprocessor(("log",))
    with pytest.raises(NotFittedError, match="must be fitted before transform"):
        Preprocessor().transform(np.ones((2, 2)))
    with pytest.raises(InvalidParameterError, match=r"cofactor channel must be a feature; got "
                                                    r"'CD99'"):
        Preprocessor(("arcsinh",), cofactors={"CD99": 5}).fit(np.ones((2, 1)), ["CD3"])
    pre = Preprocessor().fit(np.ones((3, 2), np.float32), ["a", "b"])
    with pytest.raises(InvalidParameterError, match=r"X must have 2 columns \(a, b\); got shape"):
        pre.transform(np.ones((3, 3)))


@pytest.fixture
def small_chunks(monkeypatch):
    """The chunked path of a large table, taken on a small one."""
    from cellbench.data import table_transforms as transforms

    monkeypatch.setattr(transforms, "LARGE_ROWS", 500)
    monkeypatch.setattr(transforms, "CHUNK_ROWS", 1024)
    monkeypatch.setattr(transforms, "FIT_CHUNK_ROWS", 512)


@pytest.mark.parametrize("steps", [("standardize",), ("arcsinh", "standardize"), ("arcsinh",)])
def test_chunked_statistics_and_transform_equal_the_whole_table(small_chunks, steps):
    rng = np.random.default_rng(1)
    X = (rng.lognormal(size=(6000, 7)) * 40).astype(np.float32)
    rows = np.sort(rng.choice(len(X), 4500, replace=False))
    whole = Preprocessor(steps).fit(X[rows], list("abcdefg"))
    chunked = Preprocessor(steps).fit(X, list("abcdefg"), rows=rows)
    np.testing.assert_allclose(chunked.mean_, whole.mean_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked.scale_, whole.scale_, rtol=1e-6)
    np.testing.assert_array_equal(chunked.transform_rows(X, rows), chunked.transform(X[rows]))


def test_a_large_table_is_fitted_and_transformed_without_full_size_copies(small_chunks):
    import tracemalloc

    X = np.random.default_rng(2).normal(size=(100_000, 20)).astype(np.float32)  # 8 MB
    rows = np.arange(len(X))
    pre = Preprocessor(("arcsinh", "standardize"))
    tracemalloc.start()
    pre.fit(X, [f"m{i}" for i in range(20)], rows=rows)
    _, fit_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    out = pre.transform_rows(X, rows)
    _, transform_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fit_peak < X.nbytes / 8  # a few chunks, never the rows (let alone in float64)
    assert transform_peak < out.nbytes + X.nbytes / 8  # the output and a few chunks
