"""Leak-free splits: stratified, grouped by patient/sample when groups exist.

Every split is checked after it is made: a group in two parts raises
:class:`~cellbench.exceptions.DataLeakageError`, whatever produced the split.

>>> import numpy as np
>>> y = np.array([0, 1] * 50); groups = np.repeat(np.arange(10), 10)
>>> s = holdout_split(y, groups, val_size=0.2, test_size=0.2, random_state=0)
>>> set(groups[s.test]).isdisjoint(groups[s.train])
True
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, replace

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold, train_test_split

from .._config import SplitConfig
from .._utils import format_list, release_free_memory
from ..exceptions import DataError, InvalidParameterError
from .checks import check_no_group_overlap
from .dataset import Dataset, group_index

__all__ = ["Split", "holdout_split", "kfold_splits", "make_splits", "repeat_of"]

_REPEAT = re.compile(r"^r(\d+)-")


def repeat_of(name: str) -> int:
    """The repeat a split belongs to (``r2-fold1`` -> 2; plain ``fold1`` -> 1)."""
    match = _REPEAT.match(name)
    return int(match.group(1)) if match else 1


@dataclass(frozen=True)
class Split:
    """Row indices of one train / validation / test partition.

    ``val`` may be empty (no early stopping); ``test`` may be empty (``test_size=0``).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    name: str = "holdout"
    grouped: bool = False

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.parts().items()}


def make_splits(ds: Dataset, cfg: SplitConfig) -> list[Split]:
    """The splits a job runs on: the given split, k folds (``cfg.repeats`` times, named
    ``r<i>-fold<k>`` when repeated), or one holdout; with ``cfg.within_groups`` these are
    made inside each group (named ``<group>-fold<k>``)."""
    if ds.split is not None:
        if cfg.within_groups or cfg.repeats > 1 or cfg.cv:
            raise InvalidParameterError(
                "--cv, --within-groups and --repeats must not be combined with a given split "
                "(--split-column, or the train/val/test parts of an .npz); the given split "
                f"already fixes every part (got {_given_conflict(cfg)}). Drop one.")
        return [given_split(ds, cfg)]
    if cfg.within_groups:
        return _within_groups(ds, cfg)
    splits = _splits(ds.y, ds.groups, cfg, ds.classes)
    release_free_memory()  # the grouping's transients
    return splits


def _given_conflict(cfg: SplitConfig) -> str:
    return ", ".join(text for on, text in ((cfg.cv, f"--cv {cfg.cv}"),
                                          (cfg.within_groups, "--within-groups"),
                                          (cfg.repeats > 1, f"--repeats {cfg.repeats}")) if on)


def _splits(y: np.ndarray, groups: np.ndarray | None, cfg: SplitConfig, classes: list | None,
            check_sizes: bool = True) -> list[Split]:
    if not cfg.cv:
        return [holdout_split(y, groups, val_size=cfg.val_size, test_size=cfg.test_size,
                              random_state=cfg.random_state, classes=classes,
                              check_sizes=check_sizes)]
    splits = []
    for r in range(cfg.repeats):
        folds = kfold_splits(y, groups, n_splits=cfg.cv, val_size=cfg.val_size,
                             random_state=cfg.random_state + 1000 * r, classes=classes,
                             check_sizes=check_sizes)
        splits += [replace(f, name=f"r{r + 1}-{f.name}") if cfg.repeats > 1 else f
                   for f in folds]
    return splits


def _slugs(ids: np.ndarray) -> list[str]:
    """Folder-safe, unique names for group ids."""
    out: list[str] = []
    for gid in ids:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(gid)).strip("._")[:40] or "group"
        slug = f"g_{slug}" if _REPEAT.match(slug) else slug
        out.append(slug if slug not in out else f"{slug}_{len(out) + 1}")
    return out


def _within_groups(ds: Dataset, cfg: SplitConfig) -> list[Split]:
    """Every group split on its own (stratified by class): the per-sample protocol."""
    if ds.groups is None:
        raise InvalidParameterError(
            "--within-groups must come with groups; got none. Pass --groups COLUMN (the "
            "sample each cell comes from).")
    ids, codes = ds.group_index
    name = ds.group_name or "group"
    splits = []
    for i, (gid, slug) in enumerate(zip(ids, _slugs(ids), strict=True)):
        rows = np.flatnonzero(codes == i)
        y = ds.y[rows]
        if (y == y[0]).all():
            shown, label = (v.item() if isinstance(v, np.generic) else v
                            for v in (gid, ds.classes[y[0]]))
            raise DataError(
                f"every {name} must hold at least 2 classes to be split on its own "
                f"(--within-groups); {shown!r} holds only {label!r} ({len(rows)} rows). "
                f"Remove that {name}'s rows from the data, or drop --within-groups to split "
                "across groups.")
        try:
            parts = _splits(y, None, cfg, ds.classes, check_sizes=False)
        except (DataError, ValueError) as exc:
            raise DataError(f"{name} {gid.item() if isinstance(gid, np.generic) else gid!r} "
                            f"({len(rows)} rows) must be large enough to split on its own "
                            f"(--within-groups); {exc}") from None
        for p in parts:  # r<i>- first: repeat_of reads it
            repeat, fold = (p.name.split("-", 1) if _REPEAT.match(p.name) else ("", p.name))
            label = f"{repeat}-{slug}-{fold}" if repeat else f"{slug}-{fold}"
            splits.append(Split(rows[p.train], rows[p.val], rows[p.test], label, False))
    return splits


def _single_label_groups(y: np.ndarray, groups: np.ndarray) -> bool:
    """True when every group holds one class (a patient-level label); ``groups`` are codes
    (:func:`~cellbench.data.dataset.group_index`)."""
    if groups.dtype.kind not in "iu":
        groups = group_index(groups)[1]
    pairs = groups.astype(np.int64) * (int(y.max()) + 1)
    pairs += y  # (group, class) as one code: counted, not sorted
    return np.count_nonzero(np.bincount(pairs)) == np.count_nonzero(np.bincount(groups))


def _group_folds(y: np.ndarray, groups: np.ndarray, n_splits: int,
                 random_state: int) -> list[np.ndarray]:
    """Row indices of ``n_splits`` disjoint test folds, each made of whole groups (``groups``
    as integer codes in the order of the sorted ids, so folds equal those of the ids).

    Patient-level labels: folds are stratified by label (StratifiedGroupKFold). Labels that
    vary within groups (cell types in every sample): groups are shuffled and dealt into folds
    (KFold over the sorted group ids), the published protocol for sample-wise CV.
    """
    folds: list[np.ndarray] = []
    if _single_label_groups(y, groups):
        rows = np.arange(len(y))
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # every class with fewer rows than folds raises: groups are dealt unstratified
            with contextlib.suppress(ValueError):
                folds = [test for _, test in splitter.split(rows, y, groups)]
        # stratifying can pile groups into one fold; a training part left with one group
        # could not hold out a grouped validation part, so such folds are dealt evenly
        if folds and all(len(np.unique(np.delete(groups, test))) >= 2 for test in folds):
            return folds
    ids = np.flatnonzero(np.bincount(groups))  # the codes present, sorted
    folds = KFold(n_splits, shuffle=True, random_state=random_state).split(ids)
    tests = []
    for _, test in folds:  # a lookup table over the codes, not np.isin's sort
        chosen = np.zeros(ids[-1] + 1, bool)
        chosen[ids[test]] = True
        tests.append(np.flatnonzero(chosen[groups]))
    return tests


def _carve(index: np.ndarray, y: np.ndarray, groups: np.ndarray | None, fraction: float,
           random_state: int, what: str, names: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (rest, held) with about ``fraction`` of rows held out
    (``groups``: codes into ``names``)."""
    if fraction <= 0 or len(index) == 0:
        return index, index[:0]
    if groups is not None:
        sub_groups = groups[index]
        present = np.flatnonzero(np.bincount(sub_groups))  # codes: counted, not sorted
        n_groups = len(present)
        if n_groups < 2:
            raise DataError(
                f"groups must leave at least 2 distinct values to hold out a {what} part; got "
                f"{n_groups} ({format_list(present if names is None else names[present])}). "
                "Use more patients/samples "
                f"or fewer folds, or set the {what} size to 0 (--val-size 0 / --test-size 0)."
            )
        n_splits = int(min(max(2, round(1 / fraction)), n_groups))
        held = _group_folds(y[index], sub_groups, n_splits, random_state)[0]
        mask = np.zeros(len(index), bool)
        mask[held] = True
        return index[~mask], index[mask]
    counts = np.bincount(y[index])
    stratify = y[index] if counts[counts > 0].min() >= 2 else None
    n_classes = int((counts > 0).sum())
    n_held = max(round(fraction * len(index)), n_classes if stratify is not None else 1)
    if n_held >= len(index):
        raise DataError(f"the {what} part must leave rows for training; {len(index)} rows are "
                        f"too few for a {fraction:.0%} {what} part.")
    rest, held = train_test_split(index, test_size=n_held, stratify=stratify,
                                  random_state=random_state)
    return np.sort(rest), np.sort(held)


def _check_class_sizes(y: np.ndarray, classes: list | None, need: int, what: str,
                       fix: str) -> None:
    counts = np.bincount(y)
    small = [(i, int(c)) for i, c in enumerate(counts) if 0 < c < need]
    if small:
        names = classes or list(range(len(counts)))
        listed = (", ".join(f"{names[i]!r} has {c}" for i, c in small[:5])
                  + (f" and {len(small) - 5} more classes are as small" if len(small) > 5
                     else ""))
        raise DataError(
            f"each class must have at least {need} rows for {what}; {listed}. {fix}"
        )


def holdout_split(y: np.ndarray, groups: np.ndarray | None = None, *, val_size: float = 0.15,
                  test_size: float = 0.15, random_state: int = 0,
                  classes: list | None = None, check_sizes: bool = True) -> Split:
    """One stratified train/val/test split; grouped (whole patients per part) with groups."""
    y = np.asarray(y)
    index = np.arange(len(y))
    names = None
    if groups is not None:
        names, groups = group_index(groups)  # integer codes from here on
        n_groups = len(names)
        need = 1 + (val_size > 0) + (test_size > 0)
        if n_groups < need:
            raise DataError(
                f"groups must have at least {need} distinct values for a grouped "
                f"train/val/test split; got {n_groups} ({format_list(names)}). "
                "Use more patients/samples, or drop --groups (cells are then split at random, "
                "which overstates accuracy on new patients)."
            )
    elif check_sizes:
        need = 1 + (val_size > 0) + (test_size > 0)
        _check_class_sizes(y, classes, need, "a stratified train/val/test split",
                           "Collect more cells or remove the class with --exclude-labels.")
    rest, test = _carve(index, y, groups, test_size, random_state, "test", names)
    val_fraction = val_size / (1 - test_size) if test_size < 1 else 0
    train, val = _carve(rest, y, groups, val_fraction, random_state + 1, "validation", names)
    split = Split(train, val, test, "holdout", groups is not None)
    check_no_group_overlap(split.parts(), groups, names)
    return split


def kfold_splits(y: np.ndarray, groups: np.ndarray | None = None, *, n_splits: int = 5,
                 val_size: float = 0.15, random_state: int = 0,
                 classes: list | None = None, check_sizes: bool = True) -> list[Split]:
    """k folds: each row is tested exactly once; a validation part is held out of each train.

    With groups, folds are made of whole groups (see :func:`_group_folds`).
    """
    y = np.asarray(y)
    index = np.arange(len(y))
    ids = None
    if groups is not None:
        ids, groups = group_index(groups)  # integer codes from here on
        if len(ids) < n_splits:
            raise DataError(
                f"groups must have at least {n_splits} distinct values for {n_splits}-fold "
                f"grouped CV; got {len(ids)} ({format_list(ids)}). Use --cv {max(2, len(ids))}"
                " or fewer folds."
            )
        tests = _group_folds(y, groups, n_splits, random_state)
    else:
        if check_sizes:
            present = np.bincount(y)[np.bincount(y) > 0]
            fewer = (f"Use fewer folds (--cv {int(present.min())}) or remove"
                     if present.min() >= 2 else "Remove")  # k-fold CV needs 2 rows a class
            _check_class_sizes(y, classes, n_splits, f"stratified {n_splits}-fold CV",
                               f"{fewer} the class with --exclude-labels.")
        if len(y) < n_splits:
            raise DataError(f"{n_splits}-fold CV needs at least {n_splits} rows; got "
                            f"{len(y)}. Use fewer folds.")
        skf = StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
        with warnings.catch_warnings():  # classes smaller than k: checked above, or allowed
            warnings.simplefilter("ignore", UserWarning)
            try:
                tests = [test for _, test in skf.split(index, y)]
            except ValueError:  # every class smaller than k
                tests = [test for _, test in KFold(n_splits, shuffle=True,
                                                   random_state=random_state).split(index)]
    splits = []
    for k, test in enumerate(tests):
        rest = np.setdiff1d(index, test, assume_unique=True)
        train, val = _carve(rest, y, groups, val_size, random_state + 1 + k, "validation",
                            ids)
        split = Split(train, val, np.sort(test), f"fold{k + 1}", groups is not None)
        check_no_group_overlap(split.parts(), groups, ids)
        splits.append(split)
    return splits


def given_split(ds: Dataset, cfg: SplitConfig) -> Split:
    """Use the dataset's split column; carve validation from train if it has none."""
    assert ds.split is not None
    index = np.arange(ds.n_samples)
    train = index[ds.split == "train"]
    val = index[ds.split == "val"]
    test = index[ds.split == "test"]
    names, codes = ds.group_index or (None, None)
    if len(val) == 0 and cfg.val_size > 0:
        train, val = _carve(train, ds.y, codes, cfg.val_size, cfg.random_state,
                            "validation", names)
    split = Split(train, val, test, "given", ds.groups is not None)
    check_no_group_overlap(split.parts(), codes, names)
    return split
