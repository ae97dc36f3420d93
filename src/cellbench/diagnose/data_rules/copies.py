"""Rules about identical rows: ``duplicate_rows_across_splits`` and ``label_conflict``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._config import DataConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ..findings import Finding
from ._common import (
    COLLISION_MARGIN,
    ceiling_text,
    chance_share,
    heldout_parts,
    log_collision,
    make_finding,
    n_present,
    pct,
    row_hashes,
    wilson_halfwidth,
)

__all__ = ["check_duplicate_rows", "check_label_conflict"]


def check_duplicate_rows(ds: Dataset, splits: Sequence[Split] = (),
                         data_cfg: DataConfig | None = None, *,
                         hashes: np.ndarray | None = None) -> list[Finding]:
    """Identical feature rows (or images) in training and a held-out part.

    Rule: for each split's test and validation part, the share s of its rows with an exact copy
    carrying the same label in train (hashing of :func:`checks.check_split_duplicates`; a copy
    with another label is a :func:`check_label_conflict`); copies count only beyond 10x
    what chance collisions of the columns' values would give. Error when s > 1/2; warning when s
    is above the 95% Wilson half-width of that part's accuracy (copies can move the score by
    more than its noise); info for fewer copies.
    """
    if ds.n_samples == 0 or not splits:
        return []
    h = row_hashes(ds.X) if hashes is None else hashes
    _, row_id = np.unique(h, return_inverse=True)
    # a copy inflates a score only if it carries the same label: key on (row, label)
    _, gid, size = np.unique(row_id.astype(np.int64) * ds.n_classes + ds.y,
                             return_inverse=True, return_counts=True)
    dup = size[gid] > 1  # only rows with a twin somewhere can be shared
    if not dup.any():
        return []
    log_c = None
    worst: dict[str, Any] | None = None
    for k, s in enumerate(splits):
        train = np.asarray(s.train)
        if len(train) == 0:
            continue
        in_train = np.zeros(len(size), bool)
        in_train[gid[train[dup[train]]]] = True
        for part in ("test", "val"):
            rows = np.asarray(getattr(s, part))
            if len(rows) == 0:
                continue
            shared = int(in_train[gid[rows[dup[rows]]]].sum())
            if shared == 0:
                continue
            if log_c is None:
                log_c = log_collision(ds.X)
            share = shared / len(rows)
            chance = chance_share(len(train), log_c)
            hw = float(wilson_halfwidth(len(rows)))
            beyond = share > COLLISION_MARGIN * chance
            sev = ("error" if beyond and share > 0.5 else
                   "warning" if beyond and share >= hw else "info")
            score = ({"error": 3, "warning": 2, "info": 1}[sev], share / hw)
            if worst is None or score > worst["score"]:
                worst = {"score": score, "severity": sev, "part": part, "split": s.name,
                         "fold": k, "shared": shared, "rows": len(rows), "share": share,
                         "ci_halfwidth": hw, "chance_share": chance, "grouped": s.grouped}
    if worst is None:
        return []
    sev = worst.pop("severity")
    score = worst.pop("score")
    unit = "images" if ds.kind == "image" else "rows"
    hint = ("patients/samples are already kept apart, so look for duplicated files or events"
            if worst["grouped"] else
            "remove duplicates before splitting, or split by sample (--groups)")
    return [make_finding(
        "duplicate_rows_across_splits", sev,
        f"{worst['shared']} of {worst['rows']} {worst['part']} {unit} ({pct(worst['share'])}) "
        f"in split {worst['split']!r} are exact copies of training {unit}"
        + (f", more than the ±{worst['ci_halfwidth']:.1%} noise of its accuracy"
           if sev != "info" else "")
        + ": copies inflate held-out scores", worst, strength=float(score[1]),
        advice=hint[0].upper() + hint[1:] + ".")]

def check_label_conflict(ds: Dataset, splits: Sequence[Split] = (),
                         data_cfg: DataConfig | None = None, *,
                         hashes: np.ndarray | None = None) -> list[Finding]:
    """Identical feature rows with different labels anywhere in the data.

    Rule: the ceiling is 1 minus the share of rows that must be wrong on conflicting
    duplicates (each set of identical rows can at best get its majority label right); warning
    when the lost share exceeds the 95% Wilson half-width of the held-out accuracy (n = pooled
    held-out rows, or all rows without splits) and duplicated rows are 10x more than chance
    collisions of the columns' values would give (not just discrete features); info otherwise.
    """
    n = ds.n_samples
    if n < 2 or n_present(ds) < 2:
        return []
    h = row_hashes(ds.X) if hashes is None else hashes
    _, gid, size = np.unique(h, return_inverse=True, return_counts=True)
    dup = size[gid] > 1
    if not dup.any():
        return []
    K = ds.n_classes
    pair, pair_count = np.unique(gid[dup].astype(np.int64) * K + ds.y[dup], return_counts=True)
    group_of_pair = pair // K
    labels_per_group = np.bincount(group_of_pair, minlength=len(size))
    best = np.zeros(len(size), np.int64)
    np.maximum.at(best, group_of_pair, pair_count)
    conflicting = labels_per_group > 1
    if not conflicting.any():
        return []
    lost_rows = int((size[conflicting] - best[conflicting]).sum())
    conflict_rows = int(size[conflicting].sum())
    lost = lost_rows / n
    _, held_parts = heldout_parts(splits)
    n_held = int(sum(len(p) for p in held_parts)) or n
    hw = float(wilson_halfwidth(n_held))
    dup_share = float(dup.mean())
    chance = chance_share(n - 1, log_collision(ds.X))
    beyond = dup_share > COLLISION_MARGIN * chance
    sev = "warning" if beyond and lost >= hw else "info"
    unit = "images" if ds.kind == "image" else "rows"
    evidence = {"conflicting_rows": conflict_rows, "conflicting_share": conflict_rows / n,
                "lost_share": lost, "ceiling": 1 - lost, "heldout_ci_halfwidth": hw,
                "duplicated_share": dup_share, "chance_share": chance,
                "conflict_sets": int(conflicting.sum())}
    return [make_finding(
        "label_conflict", sev,
        f"{conflict_rows} {unit} ({pct(conflict_rows / n)}) are identical to others with a "
        f"different label: no model can exceed {ceiling_text(lost)} accuracy", evidence,
        strength=lost / hw,
        advice="Check the labels of duplicated rows (gating, merged files) and deduplicate.")]
