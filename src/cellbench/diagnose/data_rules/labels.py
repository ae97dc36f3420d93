"""Rules about what the labels name: ``unlabelled_class``."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import numpy as np

from ..._config import DataConfig
from ..._utils import to_builtin
from ...data.dataset import Dataset
from ...data.labels import unlabelled_classes
from ...data.splits import Split
from ..findings import Finding
from ._common import class_counts, heldout_parts, make_finding, wilson_halfwidth

__all__ = ["check_unlabelled_class"]


def check_unlabelled_class(ds: Dataset, splits: Sequence[Split] = (),
                           data_cfg: DataConfig | None = None) -> list[Finding]:
    """A class named like cells without a label ('Unlabeled', 'ungated', 'unknown', -1, '?').

    Rule: such a class is learned and scored as a population of its own, though gating left
    cells of every population in it. Warning when its share of the held-out rows (all rows
    without splits) exceeds the 95 % Wilson half-width of the held-out accuracy, so the class
    alone moves the reported accuracy by more than its noise; info otherwise. No fix is
    tried: removing the class changes the test rows, so no paired test could prove it
    helped; the advice gives the ``--exclude-labels`` that removes it.
    """
    counts = class_counts(ds)
    named = unlabelled_classes(ds)
    if not named or (counts > 0).sum() < 2:
        return []
    _, parts = heldout_parts(splits)
    rows = np.concatenate(parts) if parts else np.arange(ds.n_samples)
    held = class_counts(ds, rows)
    n = max(int(held.sum()), 1)
    share = float(held[named].sum() / n)
    half = float(wilson_halfwidth(n))
    labels = [to_builtin(ds.classes[k]) for k in named]
    listed = ", ".join(f"{label!r} ({counts[k]:,} rows, {counts[k] / counts.sum():.0%})"
                       for label, k in zip(labels, named, strict=True))
    flag = shlex.quote(",".join(str(label) for label in labels))
    return [make_finding(
        "unlabelled_class", "warning" if share > half else "info",
        f"class {listed} is named like cells without a label: it is learned and scored as a "
        "population of its own, though it may hold cells of any population",
        {"classes": labels, "rows": [int(counts[k]) for k in named],
         "heldout_share": share, "heldout_ci_halfwidth": half},
        strength=share / max(half, 1e-9),
        advice=f"If these cells have no label, remove them: --exclude-labels {flag}.")]
