"""Is model A better than model B on this data? Paired tests, the right unit, verdicts in words.

The unit of a test is chosen so its observations are independent enough to trust:

``groups``
    When the data have patients/samples: each group's accuracy under A and under B
    (averaged over seeds), Wilcoxon signed-rank over groups. Cells of one patient are not
    independent, so a cell-level test would overstate the evidence.
``runs``
    Several folds (and seeds), no groups: the metric of each (seed, fold) run, Nadeau and
    Bengio's corrected resampled t-test (training sets overlap across folds). Several seeds
    on one fixed split: a t-test whose variance adds the seed-to-seed spread and the
    test-cell sampling spread (:func:`~cellbench.evaluate.stats.seed_cell_ttest`).
``cells``
    One run on one test set, no groups: McNemar's exact test on the cells both models saw.

Several models against one reference: Holm's correction. A difference is called an
improvement only when the adjusted p-value is below alpha.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from ..exceptions import InvalidParameterError
from .stats import (
    PairedResult,
    corrected_resampled_ttest,
    holm,
    mcnemar_exact,
    seed_cell_ttest,
    wilcoxon_signed_rank,
)

__all__ = ["Run", "compare_to_reference", "verdict"]

UNITS = ("auto", "groups", "runs", "cells")
_UNIT_WORDS = {"groups": "patients/samples", "cells": "test cells"}


@dataclass
class Run:
    """One trained model's test predictions: which seed, which split, which rows."""

    seed: int
    split: str
    index: np.ndarray  # test rows
    proba: np.ndarray  # (n_test, n_classes)
    n_train: int


def _metric(y: np.ndarray, pred: np.ndarray, metric: str) -> float:
    if metric == "accuracy":
        return float(np.mean(pred == y))
    recalls = [np.mean(pred[y == k] == k) for k in np.unique(y)]
    return float(np.mean(recalls))


def _by_key(runs: Sequence[Run]) -> dict[tuple[int, str], Run]:
    return {(r.seed, r.split): r for r in runs}


def _paired_keys(a: Sequence[Run], b: Sequence[Run]) -> list[tuple[Run, Run]]:
    """Pair runs on (seed, split); a deterministic model (one seed) pairs with every seed."""
    ka, kb = _by_key(a), _by_key(b)
    seeds_a = {s for s, _ in ka}
    seeds_b = {s for s, _ in kb}
    pairs = []
    for seed in sorted(seeds_a | seeds_b):
        for split in sorted({sp for _, sp in ka} & {sp for _, sp in kb}):
            ra = ka.get((seed, split)) or (ka.get((min(seeds_a), split))
                                           if len(seeds_a) == 1 else None)
            rb = kb.get((seed, split)) or (kb.get((min(seeds_b), split))
                                           if len(seeds_b) == 1 else None)
            if ra is not None and rb is not None:
                pairs.append((ra, rb))
    return pairs


def _group_accuracy(runs: Sequence[Run], y: np.ndarray, groups: np.ndarray) -> dict[Any, float]:
    """Cell accuracy per group, averaged over the seeds that tested it."""
    totals: dict[Any, list[float]] = {}
    for run in runs:
        correct = run.proba.argmax(1) == y[run.index]
        g = groups[run.index]
        for gid in np.unique(g):
            totals.setdefault(gid, []).append(float(correct[g == gid].mean()))
    return {gid: float(np.mean(v)) for gid, v in totals.items()}


def paired_test(a: Sequence[Run], b: Sequence[Run], y: np.ndarray,
                groups: np.ndarray | None, unit: str = "auto",
                metric: str = "accuracy") -> PairedResult:
    """Test model A against model B (difference = A - B) on the unit ``unit``."""
    if unit not in UNITS:
        raise InvalidParameterError(f"test unit must be one of {', '.join(UNITS)}; got "
                                    f"{unit!r}.")
    pairs = _paired_keys(a, b)
    if not pairs:
        raise InvalidParameterError("models must share at least one split to be compared; "
                                    "these have none in common.")
    if unit == "auto":
        unit = "groups" if groups is not None else ("runs" if len(pairs) > 1 else "cells")
    if unit == "groups":
        if groups is None:
            raise InvalidParameterError("test unit 'groups' needs groups (--groups); the data "
                                        "have none.")
        ga = _group_accuracy([p[0] for p in pairs], y, groups)
        gb = _group_accuracy([p[1] for p in pairs], y, groups)
        common = sorted(set(ga) & set(gb), key=str)
        diffs = np.array([ga[g] - gb[g] for g in common])
        result = wilcoxon_signed_rank(diffs, unit="groups")
        return PairedResult(result.test, result.difference, result.ci, result.p_value,
                            result.n, "groups", result.detectable,
                            "per-group cell accuracy" + (
                                "" if metric == "accuracy" else f" (not {metric})"))
    if unit == "runs" and len({r.split for pair in pairs for r in pair}) == 1:
        # Seeds on one fixed split: the training sets do not resample anything, so the
        # Nadeau-Bengio correction does not apply; the test cells are the other sample.
        index = pairs[0][0].index
        if any(not np.array_equal(r.index, index) for pair in pairs for r in pair):
            raise InvalidParameterError("paired runs must test the same rows; they do not.")
        yt = y[index]
        if metric != "accuracy":
            note = f"accuracy (not {metric}): the seed-and-cell test is per cell"
        else:
            note = ""
        result = seed_cell_ttest(np.array([ra.proba.argmax(1) == yt for ra, _ in pairs]),
                                 np.array([rb.proba.argmax(1) == yt for _, rb in pairs]))
        return PairedResult(result.test, result.difference, result.ci, result.p_value,
                            result.n, "runs", result.detectable,
                            "; ".join(x for x in (result.note, note) if x))
    if unit == "runs":
        diffs = []
        n_train, n_test = [], []
        for ra, rb in pairs:
            if not np.array_equal(ra.index, rb.index):
                raise InvalidParameterError("paired runs must test the same rows; they do not.")
            yt = y[ra.index]
            diffs.append(_metric(yt, ra.proba.argmax(1), metric)
                         - _metric(yt, rb.proba.argmax(1), metric))
            n_train.append(ra.n_train)
            n_test.append(len(ra.index))
        return corrected_resampled_ttest(np.array(diffs), float(np.mean(n_train)),
                                         float(np.mean(n_test)))
    # cells: one test set
    ra, rb = pairs[0]
    yt = y[ra.index]
    result = mcnemar_exact(ra.proba.argmax(1) == yt, rb.proba.argmax(1) == yt)
    note = "" if len(pairs) == 1 else f"first of {len(pairs)} runs only"
    if groups is not None:
        note = (note + "; " if note else "") + ("cells treated as independent although they "
                                                 "come from patients/samples")
    return PairedResult(result.test, result.difference, result.ci, result.p_value, result.n,
                        "cells", result.detectable, note)


def _wilcoxon_min_n(alpha: float) -> int:
    """Fewest pairs for which an exact two-sided Wilcoxon test can give p < alpha (2 / 2^n)."""
    return int(np.floor(np.log2(2 / alpha))) + 1


def _needed(result: PairedResult, min_effect: float, alpha: float = 0.05) -> str:
    """How much more data would detect ``min_effect`` (80 % power, two-sided 5 %)."""
    if result.test == "wilcoxon" and result.n < _wilcoxon_min_n(alpha):
        # The power formula below would happily promise a detection the test cannot deliver:
        # with n pairs the smallest possible exact two-sided p-value is 2 / 2^n.
        return (f"no test over {result.n} {_UNIT_WORDS['groups']} can reach p < {alpha:g}: "
                f"the smallest possible Wilcoxon p is {2 / 2 ** result.n:.3g}; at least "
                f"{_wilcoxon_min_n(alpha)} are needed")
    if result.detectable is None or result.n < 2 or not np.isfinite(result.detectable):
        return ""
    z = norm.ppf(0.975) + norm.ppf(0.8)
    scale = result.detectable / z  # standard error now
    if result.test == "corrected_t":
        # se^2 = var * (1/J + r): only the 1/J part shrinks with more runs
        return (f"about {result.detectable * 100:.2f} points is detectable with "
                f"{result.n} runs")
    if result.test == "seed_cell_t":
        return (f"about {result.detectable * 100:.2f} points is detectable with "
                f"{_count(result.n, 'seed')} on this test set")
    n_needed = int(np.ceil(result.n * (scale * z / min_effect) ** 2))
    if result.test == "wilcoxon":
        n_needed = max(n_needed, _wilcoxon_min_n(alpha))
    what = _UNIT_WORDS.get(result.unit, result.unit)
    return (f"would need about {n_needed:,} {what} to detect {min_effect * 100:.1f} points; "
            f"{result.detectable * 100:.2f} points is detectable with {result.n:,}")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe_test(result: PairedResult, n_seeds: int, splits: Sequence[str],
                   group_name: str) -> str:
    if result.test == "corrected_t":
        repeats = {m.group(1) for s in splits if (m := re.match(r"r(\d+)-", s))}
        if len(repeats) > 1:
            return (f"corrected t, {_count(n_seeds, 'seed')} x {len(repeats)} repeats x "
                    f"{len(splits) // len(repeats)} folds")
        return f"corrected t, {_count(n_seeds, 'seed')} x {_count(len(splits), 'fold')}"
    if result.test == "seed_cell_t":
        return f"t over {_count(result.n, 'seed')} and the test cells, one split"
    if result.test == "wilcoxon":
        name = group_name[:-1] if result.n == 1 and group_name.endswith("s") else group_name
        return f"Wilcoxon signed-rank over {result.n} {name}"
    return f"McNemar exact, {result.n:,} cells"


def _undecidable(result: PairedResult, p_adjusted: float, alpha: float,
                 n_tests: int = 1) -> str:
    """Why no outcome of the test could be significant here ("" when one could).

    With ``n_tests`` Holm-corrected tests, every adjusted p is at least ``n_tests`` times
    the smallest p the test can give.
    """
    if not np.isfinite(p_adjusted):
        return f"the test is undefined here ({result.note or 'too few paired runs'})"
    if result.test != "wilcoxon":
        return ""
    smallest = 2 / 2 ** result.n
    need = _wilcoxon_min_n(alpha / n_tests)
    if result.n < need:
        holm_text = f" after Holm's correction for {n_tests} tests" if n_tests > 1 else ""
        return (f"no test over {result.n} {_UNIT_WORDS['groups']} can reach p < {alpha:g}"
                f"{holm_text}: the smallest possible Wilcoxon p is {smallest:.3g}; at least "
                f"{need} are needed")
    return ""


def verdict(a: str, b: str, result: PairedResult, p_adjusted: float, alpha: float,
            test_text: str, min_effect: float, one_run: bool = False,
            n_tests: int = 1) -> str:
    """One line: difference, CI, p, test, and what it means.

    ``one_run``: one seed on one split of a model whose training is random; the test then
    counts only the test cells, and the line says so and suggests ``--seeds``.
    """
    diff, (lo, hi) = result.difference * 100, (result.ci[0] * 100, result.ci[1] * 100)
    p_text = f"p = {p_adjusted:.3g}" if np.isfinite(p_adjusted) else "p undefined"
    head = f"{a} vs {b}: {diff:+.2f} points [{lo:+.2f}, {hi:+.2f}], {p_text} ({test_text})"
    caveat = ("; seeds were not repeated (one seed, one split), so training randomness is "
              "not counted: rerun with --seeds 3" if one_run else "")
    if np.isfinite(p_adjusted) and p_adjusted < alpha:
        return f"{head} -> {a if diff > 0 else b} is better{caveat}"
    why = _undecidable(result, p_adjusted, alpha, n_tests)
    if why:  # "no detectable difference" would read as evidence of equality; it is not
        return f"{head} -> undecided: {why}{caveat}"
    need = _needed(result, min_effect, alpha)
    return (f"{head} -> no detectable difference at this sample size"
            + (f" ({need})" if need else "") + caveat)


def compare_to_reference(runs: Mapping[str, Sequence[Run]], y: np.ndarray,
                         groups: np.ndarray | None, *, reference: str | None = None,
                         unit: str = "auto", metric: str = "accuracy", alpha: float = 0.05,
                         min_effect: float = 0.005, group_name: str = "groups",
                         pooled: Mapping[str, float] | None = None,
                         stochastic: Collection[str] = ()) -> dict[str, Any]:
    """Test every model against ``reference`` (default: the best pooled metric).

    Returns a dict with the reference, unit, alpha and one row per other model: the paired
    result, the Holm-adjusted p-value and a verdict line. ``stochastic`` names the models
    whose training is random (networks): a test of one of them on one seed and one split
    says that seeds were not repeated.
    """
    models = list(runs)
    if len(models) < 2:
        return {"rows": [], "reference": models[0] if models else None}
    if reference is None:
        scores = pooled or {m: np.mean([_metric(y[r.index], r.proba.argmax(1), metric)
                                        for r in runs[m]]) for m in models}
        reference = max(models, key=lambda m: scores[m])
    if reference not in runs:
        raise InvalidParameterError(f"reference must be one of the compared models "
                                    f"({', '.join(models)}); got {reference!r}.")
    others = [m for m in models if m != reference]
    results = [paired_test(runs[m], runs[reference], y, groups, unit, metric) for m in others]
    raw = np.array([r.p_value for r in results])
    finite = np.isfinite(raw)
    adjusted = raw.copy()
    if finite.any():
        adjusted[finite] = holm(raw[finite])
    n_seeds = max(len({r.seed for r in runs[m]}) for m in models)
    splits = sorted({r.split for r in runs[reference]})
    rows = []
    for model, result, p_adj in zip(others, results, adjusted, strict=True):
        text = _describe_test(result, n_seeds, splits, group_name)
        one_run = (len(_paired_keys(runs[model], runs[reference])) == 1
                   and bool({model, reference} & set(stochastic)))
        rows.append({"model": model, **result.to_dict(), "p_adjusted": float(p_adj),
                     "verdict": verdict(model, reference, result, float(p_adj), alpha, text,
                                        min_effect, one_run, len(others))})
    used = results[0].unit if results else unit
    return {"reference": reference, "metric": metric, "unit": used, "alpha": alpha,
            "correction": "holm" if len(others) > 1 else "none", "rows": rows}
