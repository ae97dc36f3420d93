"""Rules about class sizes: ``class_imbalance``, ``tiny_class``, ``too_few_samples``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._config import DataConfig
from ...data.dataset import Dataset
from ...data.splits import Split
from ..findings import Finding
from ._common import (
    IMBALANCE_INFO,
    LEAK_ROOM,
    MIN_ROWS,
    class_counts,
    class_sizes,
    make_finding,
    wilson_halfwidth,
)
from .leak import single_feature

__all__ = ["check_class_imbalance", "check_tiny_class", "check_too_few_samples"]


def check_class_imbalance(ds: Dataset, splits: Sequence[Split] = (),
                          data_cfg: DataConfig | None = None) -> list[Finding]:
    """Classes of very different sizes.

    Rule: warning when always predicting the majority class already removes two thirds of
    chance's error, i.e. majority share >= 1 - (1 - 1/K)/3 (5:1 for two classes, 75% for
    four), unless every smaller class is separated from the rest by some single feature
    (held-out one-vs-rest balanced accuracy >= 97.5%, 95% of the range from chance to perfect:
    then the minority is not sacrificed, and it is info); info when the largest class has at
    least 3x the rows of the smallest. Evidence includes the floor: the accuracy of always
    predicting the majority class. Fix ``class_weights`` (``balanced_sampler`` is the alternative).
    """
    counts = class_counts(ds)
    present = counts > 0
    K = int(present.sum())
    if K < 2:
        return []
    n = int(counts.sum())
    major, minor = int(np.argmax(counts)), int(np.argmin(np.where(present, counts, np.inf)))
    floor = counts[major] / n
    ratio = counts[major] / counts[minor]
    limit = 1 - (1 - 1 / K) / 3
    evidence: dict[str, Any] = {
        "counts": {str(ds.classes[i]): int(counts[i]) for i in np.flatnonzero(present)},
        "majority_class": str(ds.classes[major]), "floor": floor, "ratio": ratio,
        "warning_share": limit, "chance": 1 / K}
    advice = ("Read balanced accuracy and macro-F1, not accuracy; the floor is what always "
              "predicting the majority class scores.")
    if floor < limit and ratio < IMBALANCE_INFO:
        return []

    def finding(severity: str, message: str, strength: float) -> list[Finding]:
        return [make_finding("class_imbalance", severity, message, evidence,
                             fix="class_weights", advice=advice, strength=strength)]

    info_strength = float(np.log(ratio / IMBALANCE_INFO))
    if floor < limit:
        return finding("info", f"classes are {ratio:.0f}:1 (largest {ds.classes[major]!r} "
                               f"{counts[major]}, smallest {ds.classes[minor]!r} "
                               f"{counts[minor]}); always predicting {ds.classes[major]!r} "
                               f"scores {floor:.1%}", info_strength)
    sf = single_feature(ds, splits)
    separable = False
    if sf is not None:
        # each minority class against the rest, by its best single feature
        minority = [c for c in np.flatnonzero(present) if c != major
                    and not np.isnan(sf.ovr[:, c]).all()]
        best = {str(ds.classes[c]): float(np.nanmax(sf.ovr[:, c])) for c in minority}
        evidence["best_single_feature_one_vs_rest"] = best
        separable = bool(minority) and min(best.values()) >= 1 - (1 - LEAK_ROOM) / 2
    if separable:
        return finding("info", f"class {ds.classes[major]!r} holds {floor:.1%} of rows (the "
                               "accuracy floor), but every smaller class is separated from the "
                               "rest by a single feature, so it is not sacrificed",
                       info_strength)
    return finding("warning", f"class {ds.classes[major]!r} holds {floor:.1%} of rows: always "
                              f"predicting it scores {floor:.1%} accuracy (chance 1/{K} = "
                              f"{1 / K:.0%}); {ratio:.0f}:1 largest to smallest",
                   (floor - limit) / max(1 - limit, 1e-12))


def check_tiny_class(ds: Dataset, splits: Sequence[Split] = (),
                     data_cfg: DataConfig | None = None) -> list[Finding]:
    """A class too small to be measured or learned.

    Rule: a class is unmeasurable when its held-out rows (test parts pooled over the splits, or
    validation parts when there is no test part) give a 95% Wilson CI of its recall (at 50%)
    as wide as the whole range from chance 1/K to perfect, or number fewer than 10; it is
    unlearnable with fewer than 10 training rows in every split. Warning when it is
    and has at most half the median class's rows there (a small class; when every class is
    small, the whole data set is: :func:`check_too_few_samples`); info when it is either
    without being that much smaller, or when its recall CI is at least half as wide as the
    range. One finding at the worst severity lists every such class.
    """
    present = np.flatnonzero(class_counts(ds) > 0)
    K = len(present)
    if K < 2:
        return []
    room = 1 - 1 / K
    sizes = class_sizes(ds, splits)
    part, n_train, n_held = sizes["part"], sizes["n_train"], sizes["n_held"]
    typical = float(np.median(n_held[present])) if n_held is not None else 0.0

    def unmeasurable(n: float) -> bool:
        return bool(2 * wilson_halfwidth(n) >= room or n < MIN_ROWS)

    median_train = float(np.median(n_train[present]))
    flagged: dict[str, dict[str, Any]] = {}
    worst: tuple[tuple[int, float], str, list[str], str] | None = None
    for c in present:
        reasons, sev, hw = [], None, None
        if n_held is not None:
            hw = float(wilson_halfwidth(n_held[c]))
            if unmeasurable(n_held[c]) and n_held[c] <= typical / 2:
                sev = "warning"
            elif 2 * hw >= room / 2:
                sev = "info"
            if sev and n_held[c] == 0:
                reasons.append(f"no {part} rows: its recall cannot be measured at all")
            elif sev:
                reasons.append(f"{int(n_held[c])} {part} rows: its recall has a 95% CI "
                               f"±{hw * 100:.0f} points")
        if n_train[c] < MIN_ROWS:
            sev = "warning" if n_train[c] <= median_train / 2 else sev or "info"
            reasons.append(f"only {int(n_train[c])} training rows"
                           + (" in any split" if sizes["n_splits"] > 1 else ""))
        if sev is None:
            continue
        name = str(ds.classes[c])
        flagged[name] = {
            "heldout_rows": None if n_held is None else int(n_held[c]),
            "min_rows_per_part": None if n_held is None else int(sizes["min_part"][c]),
            "train_rows": int(n_train[c]), "min_train_rows": int(sizes["min_train"][c]),
            "recall_ci_halfwidth": hw}
        score = (2 if sev == "warning" else 1,
                 2 * (hw or 0) / room + float(n_train[c] < MIN_ROWS))
        if worst is None or score > worst[0]:
            worst = (score, name, reasons, sev)
    if worst is None:
        return []
    score, name, reasons, sev = worst
    more = len(flagged) - 1
    message = f"class {name!r} has " + " and ".join(reasons)
    if more:
        message += f" ({more} more small class{'es' if more > 1 else ''})"
    evidence = {"classes": flagged, "part": part, "n_parts": sizes["n_parts"],
                "median_heldout_rows": typical, "chance": 1 / K, "min_rows": MIN_ROWS}
    return [make_finding(
        "tiny_class", sev, message, evidence, strength=score[1],
        advice="Collect more rows of the class, merge it with a related one, or use k-fold CV "
               "(--cv) so every row is tested once; read its recall with its CI.")]

def check_too_few_samples(ds: Dataset, splits: Sequence[Split] = (),
                          data_cfg: DataConfig | None = None) -> list[Finding]:
    """Too few rows to learn from, or to measure anything on.

    Rule: error when a table's training part has at most 2(d+1) rows for d features: every
    labelling of so few points is linearly separable (Cover 1965), so fitting them proves
    nothing. Warning when the median class has fewer than 10 training rows, or so few held-out
    rows that the 95% Wilson CI of a recall (at 50%) is as wide as the range from chance 1/K to
    perfect (the held-out part is too small to measure any class). Info when a table has fewer
    than 10(d+1) training rows (ten per linear-model parameter). The worst applies; the doctor
    adds learning curves.
    """
    if ds.n_samples == 0:
        return []
    present = np.flatnonzero(class_counts(ds) > 0)
    sizes = class_sizes(ds, splits)
    n_train = int(min([len(s.train) for s in splits if len(s.train)] or [ds.n_samples]))
    d = ds.n_features
    evidence: dict[str, Any] = {"train_rows": n_train, "features": d, "kind": ds.kind}
    advice = "Collect more cells/images" + (", or use fewer features." if ds.kind == "table"
                                           else ".")
    found: list[tuple[str, str, float]] = []
    if ds.kind == "table":
        evidence.update(separable_limit=2 * (d + 1), rows_per_parameter=n_train / (d + 1))
        if n_train <= 2 * (d + 1):
            found.append(("error",
                          f"{n_train} training rows for {d} features: any labelling of at "
                          f"most {2 * (d + 1)} rows can be separated by a linear model, so the "
                          "fit means nothing", 2 * (d + 1) / max(n_train, 1)))
        elif n_train < 10 * (d + 1):
            found.append(("info",
                          f"{n_train} training rows for {d} features ({n_train / (d + 1):.1f} "
                          "per linear-model parameter, fewer than 10): expect accuracy to keep "
                          "rising with more data", 10 * (d + 1) / n_train))
    median_train = float(np.median(sizes["n_train"][present])) if len(present) else 0.0
    evidence["median_train_rows"] = median_train
    if len(present) >= 2 and median_train < MIN_ROWS:
        found.append(("warning",
                      f"the median class has {median_train:.0f} training rows (fewer than "
                      f"{MIN_ROWS}): too few to learn any class", MIN_ROWS / max(median_train, 1)))
    if sizes["n_held"] is not None and len(present) >= 2:
        room = 1 - 1 / len(present)
        typical = float(np.median(sizes["n_held"][present]))
        hw = float(wilson_halfwidth(typical))
        evidence.update(median_heldout_rows=typical, recall_ci_halfwidth=hw,
                        part=sizes["part"])
        if 2 * hw >= room:
            found.append(("warning",
                          f"the {sizes['part']} parts hold no rows of most classes: their "
                          "recall cannot be measured at all" if typical == 0 else
                          f"the {sizes['part']} parts hold about {typical:.0f} rows per class: "
                          f"every recall has a 95% CI ±{hw * 100:.0f} points, as wide as the "
                          f"range from chance ({1 / len(present):.0%}) to perfect",
                          2 * hw / room))
            advice += " Use k-fold CV (--cv 5) so every row is tested once."
    if not found:
        return []
    order = {s: i for i, s in enumerate(("error", "warning", "info"))}
    sev, message, strength = min(found, key=lambda f: order[f[0]])
    return [make_finding("too_few_samples", sev, message, evidence, advice=advice,
                     strength=strength)]
