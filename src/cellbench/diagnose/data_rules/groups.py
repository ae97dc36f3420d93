"""Rules about patients/samples: ``group_class_confound`` and ``missing_groups``."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..._config import DataConfig
from ...data import checks
from ...data.dataset import Dataset
from ...data.images import IMAGE_SUFFIXES
from ...data.splits import Split
from ..findings import Finding
from ._common import (
    GROUP_REGEX,
    MAX_ROWS,
    class_counts,
    class_names,
    make_finding,
    wilson_halfwidth,
)

__all__ = ["check_group_class_confound", "check_missing_groups", "group_candidates",
           "group_regex_candidate"]


def check_group_class_confound(ds: Dataset, splits: Sequence[Split] = (),
                               data_cfg: DataConfig | None = None) -> list[Finding]:
    """Labels tied to patients/samples/batches (only when groups exist).

    Rule: error when a class occurs only in groups that hold nothing else and in fewer than 3
    of them (class and sample cannot be told apart). When every group holds one label
    (patient-level labels), the group is the unit: warning when the 95% Wilson CI of a
    group-level accuracy over that many groups (at 50%) is as wide as the range from chance
    1/K to perfect, info when half as wide. Warning when a class occurs in one group only (a
    grouped split cannot both train and test it).
    """
    if ds.groups is None or ds.n_samples == 0:
        return []
    present = np.flatnonzero(class_counts(ds) > 0)
    K = len(present)
    if K < 2:
        return []
    ids, g = np.unique(ds.groups, return_inverse=True)
    n_groups = len(ids)
    pairs = np.unique(g.astype(np.int64) * ds.n_classes + ds.y)
    pg, pc = pairs // ds.n_classes, pairs % ds.n_classes
    labels_per_group = np.bincount(pg, minlength=n_groups)
    groups_per_class = np.bincount(pc, minlength=ds.n_classes)
    pure_group = labels_per_group == 1
    # a class is "pure" when every group it occurs in holds that class only
    impure_hits = np.bincount(pc[~pure_group[pg]], minlength=ds.n_classes)
    pure_class = (impure_hits == 0) & (groups_per_class > 0)
    gpc = {str(ds.classes[c]): int(groups_per_class[c]) for c in present}
    evidence: dict[str, Any] = {"groups_per_class": gpc, "n_groups": n_groups,
                                "group_name": ds.group_name, "labels_constant_in_groups":
                                bool(pure_group.all())}
    what = ds.group_name or "group"
    confounded = [c for c in present if pure_class[c] and groups_per_class[c] < 3]
    if confounded:
        c = min(confounded, key=lambda k: groups_per_class[k])
        members = ids[np.unique(pg[pc == c])]
        evidence.update(classes=class_names(ds, confounded),
                        groups_of_class={str(ds.classes[k]): [str(v) for v in
                                         ids[np.unique(pg[pc == k])]] for k in confounded})
        return [make_finding(
            "group_class_confound", "error",
            f"class {ds.classes[c]!r} comes only from {len(members)} {what}"
            f"{'s' if len(members) > 1 else ''} "
            f"({', '.join(map(str, members[:3]))}) holding nothing else: the class cannot be "
            f"separated from {what} with these data, so every accuracy measures {what} "
            "identity", evidence, strength=3 - int(groups_per_class[c]),
            advice=f"Collect at least 3 {what}s per class (many more for a usable CI), or "
                   "balance batches across classes.")]
    findings = []
    if pure_group.all():
        hw = float(wilson_halfwidth(n_groups))
        room = 1 - 1 / K
        evidence.update(group_accuracy_ci_halfwidth=hw, chance=1 / K)
        sev = "warning" if 2 * hw >= room else "info" if 2 * hw >= room / 2 else None
        if sev:
            least = min(present, key=lambda k: groups_per_class[k])
            findings.append(make_finding(
                "group_class_confound", sev,
                f"labels are constant within each {what}: the {n_groups} {what}s (as few as "
                f"{groups_per_class[least]} for {ds.classes[least]!r}) are the real sample "
                f"size, and a per-{what} accuracy over them has a 95% CI ±{hw * 100:.0f} "
                "points however many cells there are", evidence, strength=2 * hw / room,
                advice=f"Report accuracy per {what} with its CI; collect more {what}s to "
                       "narrow it."))
    elif n_groups >= 2:
        lonely = [c for c in present if groups_per_class[c] == 1]
        if lonely:
            evidence.update(single_group_classes=class_names(ds, lonely))
            c = lonely[0]
            member = ids[np.unique(pg[pc == c])][0]
            findings.append(make_finding(
                "group_class_confound", "warning",
                f"class {ds.classes[c]!r} occurs in one {what} only ({member!r}): a grouped "
                "split puts it in training or in test, never both"
                + (f" ({len(lonely) - 1} more such classes)" if len(lonely) > 1 else ""),
                evidence, strength=float(len(lonely)),
                advice=f"Collect the class from more {what}s, or remove it with "
                       "--exclude-labels."))
    return findings

_ISSUE_COLUMN = re.compile(r"^Column (?P<name>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") ")

def _issue_column(issue: Any) -> str | None:
    """The column a load-time ``id_column``/``id_feature`` issue names."""
    column = getattr(issue, "column", None)  # if DataIssue ever records it
    if column:
        return str(column)
    match = _ISSUE_COLUMN.match(str(getattr(issue, "message", "")))
    if not match:
        return None
    try:
        return str(ast.literal_eval(match.group("name")))
    except (ValueError, SyntaxError):
        return None

def _npz_group_keys(ds: Dataset) -> list[str]:
    source = Path(ds.source) if ds.source else None
    if source is None or source.suffix.lower() != ".npz" or not source.is_file():
        return []
    try:
        with np.load(source, allow_pickle=False) as z:
            keys = []
            for key in z.files:
                if not (checks.ID_NAME.search(key) or re.search(r"slide|well|plate", key, re.I)):
                    continue
                values = z[key]
                if values.ndim == 1 and len(values) == ds.n_samples:
                    n_unique = len(np.unique(values))
                    if 2 <= n_unique <= max(2, ds.n_samples // 5):
                        keys.append(key)
            return keys
    except Exception:  # an unreadable archive is the loader's business, not this rule's
        return []

def group_regex_candidate(ds: Dataset, pattern: str = GROUP_REGEX) -> str | None:
    """A file-name regex that looks like a slide/sample id for an image folder, or None.

    The prefix before the first separator qualifies when it takes 2 .. n/5 values and is not
    just the class (a prefix that names the class is a label, not a group).
    """
    if ds.kind != "image" or ds.groups is not None or not ds.source:
        return None
    root = Path(ds.source)
    if not root.is_dir():
        return None
    regex = re.compile(pattern)
    prefixes, classes = [], []
    try:
        for sub in sorted(root.iterdir()):
            files = [sub] if sub.is_file() else sorted(sub.iterdir()) if sub.is_dir() else []
            for f in files[:MAX_ROWS]:
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    match = regex.search(f.name)
                    prefixes.append(match.group(1) if match else None)
                    classes.append(sub.name if sub.is_dir() else "")
    except OSError:
        return None
    if not prefixes or any(p is None for p in prefixes):
        return None
    n_unique = len(set(prefixes))
    if not 2 <= n_unique <= max(2, len(prefixes) // 5):
        return None
    per_prefix = pd.Series(classes).groupby(pd.Series(prefixes)).nunique()
    if len(set(classes)) > 1 and n_unique <= len(set(classes)) and (per_prefix == 1).all():
        return None  # the prefix is the class name
    return pattern

def group_candidates(ds: Dataset) -> list[str]:
    """Columns (or .npz keys) that look like patient/sample/slide ids, for a dataset loaded
    without groups.

    From the load-time issues (``id_column``/``id_feature``, found by
    :func:`checks.id_like_columns`), id-named features with repeated values, and id-like keys of
    an ``.npz`` source. Empty when groups are set. File-name patterns of image folders come from
    :func:`group_regex_candidate`.
    """
    if ds.groups is not None:
        return []
    found: list[str] = []
    for issue in ds.issues:
        if getattr(issue, "code", None) in ("id_column", "id_feature"):
            name = _issue_column(issue)
            if name and name not in found:
                found.append(name)
    if ds.kind == "table" and ds.n_samples:
        named = [j for j, c in enumerate(ds.feature_names)
                 if checks.ID_NAME.search(c) and c not in found]
        if named:
            frame = pd.DataFrame(ds.X[:, named], columns=[ds.feature_names[j] for j in named])
            found += [c for c, _ in checks.id_like_columns(frame, list(frame.columns))]
    found += [k for k in _npz_group_keys(ds) if k not in found]
    return found

def check_missing_groups(ds: Dataset, splits: Sequence[Split] = (),
                         data_cfg: DataConfig | None = None) -> list[Finding]:
    """No groups given, but something looks like a patient/sample/slide id.

    Rule: a candidate from :func:`group_candidates` (or :func:`group_regex_candidate` for an
    image folder) gives a warning with evidence ``{"column": ...}`` (or ``{"regex": ...}``);
    it is a candidate only: the doctor confirms it when a split grouped by it scores
    significantly lower than a random split, and drops it otherwise. Fix ``grouped_split``.
    """
    if ds.groups is not None:
        return []
    findings = []
    for i, column in enumerate(group_candidates(ds)):
        feature = column in ds.feature_names
        findings.append(make_finding(
            "missing_groups", "warning",
            f"no groups were given, but {column!r} looks like a patient/sample id"
            + (" (and is used as a feature)" if feature else "")
            + ": cells of one sample may be in both train and test, inflating the scores",
            {"column": column, "is_feature": feature, "candidates": i + 1},
            fix="grouped_split", strength=1.0 - 0.1 * i,
            advice=f"Pass --groups {column} so the split keeps each sample together."))
    regex = group_regex_candidate(ds)
    if regex is not None:
        findings.append(make_finding(
            "missing_groups", "warning",
            f"no groups were given, but image file names start with a repeated prefix "
            f"(regex {regex!r}) that looks like a slide/patient id",
            {"regex": regex}, fix="grouped_split", strength=0.5,
            advice=f"Pass --group-regex '{regex}' so the split keeps each slide together."))
    return findings
