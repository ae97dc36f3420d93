"""Rule ``sample_shift`` (the same cell type at other intensities in other samples) and its fix
``normalize_samples``."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench._config import DataConfig, SplitConfig
from cellbench.data import from_arrays
from cellbench.data.splits import make_splits
from cellbench.diagnose.data_rules import check_data
from cellbench.diagnose.data_rules.shift import SHIFT_INFO, SHIFT_WARN, check_sample_shift
from cellbench.diagnose.fixes import propose
from cellbench.models import ModelChoice


def shifted(shift_sd: float, n_samples: int = 8, n: int = 300, d: int = 6, seed: int = 0):
    """3 cell types (unit spread) in every sample; each sample's markers offset by
    N(0, shift_sd^2): the spread of a type's mean across samples is ``shift_sd``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, d))
    X, y, groups = [], [], []
    for s in range(n_samples):
        labels = rng.integers(0, 3, n)
        X.append(centres[labels] + rng.normal(size=(n, d)) + rng.normal(0, shift_sd, d))
        y.append(labels)
        groups += [f"S{s}"] * n
    ds = from_arrays(np.concatenate(X).astype(np.float32), np.concatenate(y),
                     groups=np.array(groups))
    return ds, make_splits(ds, SplitConfig(cv=4))


@pytest.mark.parametrize("shift, severity", [(0.1, None), (0.7, "info"), (2.0, "warning")])
def test_severity_follows_the_spread_across_samples(shift, severity):
    assert SHIFT_INFO < 0.7 < SHIFT_WARN < 2.0
    ds, splits = shifted(shift)
    found = check_sample_shift(ds, splits, DataConfig())
    assert [f.severity for f in found] == ([] if severity is None else [severity])
    if found:
        score = found[0].evidence["median_shift_sd"]
        assert 0.5 * shift < score < 1.5 * shift  # the noise of the means is taken off
        assert (found[0].fix == "normalize_samples") == (severity == "warning")


def test_no_groups_images_or_samples_already_aligned_get_nothing():
    ds, splits = shifted(2.0)
    aligned = DataConfig(transform=("sample-standardize", "standardize"))
    assert check_sample_shift(ds, splits, aligned) == []
    no_groups = from_arrays(ds.X, ds.y)
    assert check_sample_shift(no_groups, [], DataConfig()) == []
    assert "sample_shift" in {f.id for f in check_data(ds, splits, DataConfig())}


def test_the_fix_inserts_sample_standardize_after_arcsinh():
    user = ModelChoice("yours", "mlp", {}, {})
    change = propose("normalize_samples", user,
                     {"data": DataConfig(transform=("arcsinh", "standardize"))})
    assert change.data == {"transform": ("arcsinh", "sample-standardize", "standardize")}
    first = propose("normalize_samples", user, {"data": DataConfig(transform=("quantile",))})
    assert first.data == {"transform": ("sample-standardize", "quantile")}
    done = DataConfig(transform=("arcsinh", "sample-quantile", "standardize"))
    assert propose("normalize_samples", user, {"data": done}) is None
