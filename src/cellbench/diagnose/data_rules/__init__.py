"""Data rules: problems in the data that no training fixes, found before any model runs.

Each rule is one function ``rule(ds, splits, data_cfg) -> list[Finding]`` (empty when the data
are fine) with its one-sentence rule and threshold in its docstring. Every threshold is relative
to the data: chance 1/K, class counts, the number of groups, the width of a 95% Wilson interval
for the number of rows that would measure it, or the duplicates that chance collisions of the
columns' values would give. A healthy setup gets nothing above ``info``.

Rules that need a table (one column per feature) skip images; every rule tolerates one class in
a part, no groups, an empty validation or test part, and no splits at all. Large tables are
subsampled deterministically, so each rule takes well under a second on 10^5 x 40.

>>> import numpy as np
>>> from cellbench.data import from_arrays, holdout_split
>>> rng = np.random.default_rng(0)
>>> y = np.repeat([0, 1], 1000); X = rng.normal(size=(2000, 5)) + y[:, None]
>>> ds = from_arrays(X, y)
>>> check_data(ds, [holdout_split(ds.y, random_state=0)])
[]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..._config import DataConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ..findings import Finding
from ._common import (
    COLLISION_MARGIN,
    GROUP_REGEX,
    IMBALANCE_INFO,
    LEAK_ROOM,
    MAX_ROWS,
    MIN_ROWS,
    RMS_LIMIT,
    SCALE_SPAN,
    row_hashes,
    wilson_halfwidth,
)
from .copies import check_duplicate_rows, check_label_conflict
from .groups import (
    check_group_class_confound,
    check_missing_groups,
    group_candidates,
    group_regex_candidate,
)
from .labels import check_unlabelled_class
from .leak import check_leaking_feature
from .scale import check_unscaled_input
from .shift import check_sample_shift
from .sizes import check_class_imbalance, check_tiny_class, check_too_few_samples

__all__ = [
    "COLLISION_MARGIN",
    "DATA_RULES",
    "GROUP_REGEX",
    "IMBALANCE_INFO",
    "LEAK_ROOM",
    "MAX_ROWS",
    "MIN_ROWS",
    "RMS_LIMIT",
    "SCALE_SPAN",
    "check_class_imbalance",
    "check_data",
    "check_duplicate_rows",
    "check_group_class_confound",
    "check_label_conflict",
    "check_leaking_feature",
    "check_missing_groups",
    "check_sample_shift",
    "check_tiny_class",
    "check_too_few_samples",
    "check_unlabelled_class",
    "check_unscaled_input",
    "group_candidates",
    "group_regex_candidate",
    "row_hashes",
    "wilson_halfwidth",
]

Rule = Callable[..., list[Finding]]

DATA_RULES: dict[str, Rule] = {
    "unscaled_input": check_unscaled_input,
    "sample_shift": check_sample_shift,
    "class_imbalance": check_class_imbalance,
    "tiny_class": check_tiny_class,
    "too_few_samples": check_too_few_samples,
    "group_class_confound": check_group_class_confound,
    "missing_groups": check_missing_groups,
    "duplicate_rows_across_splits": check_duplicate_rows,
    "label_conflict": check_label_conflict,
    "unlabelled_class": check_unlabelled_class,
    "leaking_feature": check_leaking_feature,
}

def check_data(ds: Dataset, splits: Sequence[Split],
               data_cfg: DataConfig | None = None) -> list[Finding]:
    """Run every data rule; findings in rule order (rank them with :func:`findings.rank`).

    Parameters
    ----------
    ds : Dataset
        Table or images, as loaded.
    splits : sequence of Split
        The splits the job runs on (one holdout or k folds); may be empty.
    data_cfg : DataConfig, optional
        How the data are fed (transform, image_norm); defaults to ``DataConfig()``.

    Returns
    -------
    list of Finding
    """
    cfg = data_cfg or DataConfig()
    splits = list(splits)
    hashes = row_hashes(ds.X) if ds.n_samples else None
    out: list[Finding] = []
    for rule in DATA_RULES.values():
        if rule in (check_duplicate_rows, check_label_conflict):
            out += rule(ds, splits, cfg, hashes=hashes)
        else:
            out += rule(ds, splits, cfg)
    return out
