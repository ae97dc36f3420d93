"""Ranking findings once their fixes were tested: the cause a fix proved first.

Data errors (numbers that cannot be trusted) come first; then findings whose specific fix (one
setting changed, not a whole other model) recovers at least half of the best gain any fix
gave; then the other findings whose fix helped; within both, by gain, and a cause before a
symptom sharing its fix; then untested errors, warnings, info. A warning whose fix was
tested and did not help becomes ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .findings import Finding

__all__ = ["EXPLAINS", "SYMPTOMS", "WHOLESALE", "rerank"]

#: findings that say *what* is wrong, not *why*: a cause found beside them ranks first.
#: ``nan_loss`` is not one: a loss that became NaN is the fault the user sees, named first
#: before the learning rate that caused it (its message and fix name that cause).
SYMPTOMS = ("stuck_at_chance", "below_baseline", "underfitting")
#: fixes that replace the whole model: they can hide which change mattered
WHOLESALE = ("default_recipe", "mlp_instead_of_conv", "bigger_model", "shallower_model")
EXPLAINS = 0.5  # a specific fix recovering this share of the best gain explains the fault


def _with_outcome(f: Finding, o: Mapping[str, Any]) -> Finding:
    diff, p = o.get("difference"), o.get("p_adjusted")
    of = " of balanced accuracy" if o.get("metric") == "balanced_accuracy" else ""
    text = "n/a" if diff is None else f"{diff * 100:+.1f} points{of}, p = {p:.2g}"
    tested = {k: o.get(k) for k in ("label", "metric", "difference", "ci", "p_adjusted",
                                     "accepted")}
    if o.get("accepted"):
        return replace(f, message=f"{f.message}; tested: {o['label']} helped ({text})",
                       evidence={**f.evidence, "fix_tested": tested},
                       severity="warning" if f.severity == "info" else f.severity)
    if o.get("fix") == "drop_column":
        return replace(f, message=f"{f.message}; without it the model scores {text} "
                                  "(that much of the score came from it)",
                       evidence={**f.evidence, "fix_tested": tested})
    demoted = "info" if f.severity == "warning" and f.entry.category != "data" else f.severity
    return replace(f, message=f"{f.message}; tested: {o['label']} did not help ({text})",
                   evidence={**f.evidence, "fix_tested": tested}, severity=demoted)


def rerank(findings: Sequence[Finding], outcomes: Mapping[str, Mapping[str, Any]]
           ) -> list[Finding]:
    """Findings with their fix's outcome, ranked: data errors (the numbers cannot be
    trusted), then causes whose fix helped (a specific fix that recovers half of the best
    gain first, then by gain), symptoms whose fix helped, then errors, warnings, info."""
    tested = [_with_outcome(f, outcomes[f.id]) if f.id in outcomes else f for f in findings]
    gains = [outcomes[f.id]["difference"] for f in tested if f.id in outcomes
             and outcomes[f.id].get("accepted")]
    best = max(gains, default=0.0)

    def key(f: Finding) -> tuple[int, float]:
        o = outcomes.get(f.id) or {}
        if f.severity == "error" and f.entry.category == "data":
            return 0, -f.strength
        if o.get("accepted"):
            gain = float(o["difference"])
            # at equal gain: a broken (NaN) loss, then a cause, then a symptom
            symptom = 1e-6 if f.id in SYMPTOMS else -1e-6 if f.id == "nan_loss" else 0.0
            # a model-changing fix is specific only to the finding it was written for
            # (an MLP for a convolution over columns, a bigger model for underfitting)
            specific = o.get("fix") not in WHOLESALE or (
                f.id not in SYMPTOMS and o.get("fix") == f.fix)
            if specific and gain >= EXPLAINS * best:
                return 1, -gain + symptom
            return 2, -gain + symptom
        order = {"error": 4, "warning": 5, "info": 6}[f.severity]
        return order, (1 if f.id in SYMPTOMS else 0) - f.strength

    return sorted(tested, key=key)
