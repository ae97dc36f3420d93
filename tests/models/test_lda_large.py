"""LDA on a large table: class moments summed a chunk at a time, the same discriminant."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cellbench.models import linear


def _data(n: int, d: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5
         + rng.normal(size=(k, d))[y]).astype(np.float32)
    return X, y


@pytest.mark.parametrize(("k", "class_weight"), [(2, None), (4, None), (4, "balanced")])
def test_the_chunked_fit_gives_the_svd_solvers_probabilities(monkeypatch, k, class_weight):
    X, y = _data(20_000, 9, k)
    svd = linear.LDAModel(k, class_weight=class_weight).fit(X, y)
    monkeypatch.setattr(linear, "LARGE_ROWS", 1000)
    monkeypatch.setattr(linear, "CHUNK_ROWS", 3000)
    chunked = linear.LDAModel(k, class_weight=class_weight).fit(X, y)
    np.testing.assert_allclose(chunked.predict_proba(X), svd.predict_proba(X), atol=1e-4)


def test_the_chunked_fit_holds_a_chunk_not_the_rows(monkeypatch):
    X, y = _data(200_000, 20, 5)  # 16 MB of float32, 32 MB as float64
    monkeypatch.setattr(linear, "LARGE_ROWS", 1000)
    monkeypatch.setattr(linear, "CHUNK_ROWS", 8192)
    tracemalloc.start()
    linear.LDAModel(5).fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < X.nbytes / 4
