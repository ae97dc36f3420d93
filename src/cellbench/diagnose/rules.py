"""Rules over experiments: training, model and evaluation findings from runs and probes.

Every rule reads an :class:`Evidence` (the user's model trained on the same splits and seeds
as the baselines, its learning curves, the paired tests against the baselines, the probes)
and returns a :class:`~cellbench.diagnose.findings.Finding` or None. Each states its rule in
one sentence; every threshold is relative to the data: chance 1/K, the majority share, a
confidence interval's half-width, the epoch-to-epoch noise of a curve.

A setting is *hurt* when it failed, or some baseline or the reference network beats it by a
paired test by more than the smallest difference worth detecting (``min_effect``, 0.5 points
by default). Training findings of a setting that is not hurt are only ``info``: a healthy
setup gets no warning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .evidence import Evidence, Z, dropout_rates
from .findings import Finding

__all__ = ["RULES", "Evidence", "apply_rules", "dropout_rates"]


def _severity(ev: Evidence, strong: bool = True) -> str:
    return "warning" if ev.hurt and strong else "info"


def _gap_text(ev: Evidence) -> str:
    better = ev.better_than_user()
    if not better:
        return ""
    model, diff, p = max(better, key=lambda b: b[1])
    return f"; {model.label} is {diff * 100:.1f} points better (p = {p:.2g})"


def _slope(values: np.ndarray) -> tuple[float, float]:
    """Least-squares slope per epoch and its standard error."""
    n = len(values)
    if n < 3:
        return 0.0, math.inf
    x = np.arange(n, dtype=float)
    slope, intercept = np.polyfit(x, values, 1)
    resid = values - (slope * x + intercept)
    se = math.sqrt(max(float(resid @ resid) / (n - 2), 0.0) / float(((x - x.mean()) ** 2).sum()))
    return float(slope), se


# ---------------------------------------------------------------------------------------------
# training


#: a loss past the square root of float32's largest number: the next step's squared
#: gradients (Adam's second moment, a gradient norm) are infinite, and the loss NaN
OVERFLOW = math.sqrt(float(np.finfo(np.float32).max))


def _broke(reason: str | None, history: list[dict[str, float]]) -> bool:
    """A run stopped as diverged with a non-finite loss, or one at the overflow bound."""
    if not reason or not reason.startswith("diverged"):
        return False
    loss = history[-1].get("running_loss", math.nan) if history else math.nan
    return "became" in reason or not math.isfinite(loss) or loss > OVERFLOW


def rule_nan_loss(ev: Evidence) -> Finding | None:
    """Any unit's training loss or the gradient-flow probe's loss became non-finite, or grew
    past the overflow bound (a loss that exploded below it is the learning rate's finding)."""
    histories = ev.histories if len(ev.histories) == len(ev.stop_reasons) else \
        [[] for _ in ev.stop_reasons]
    diverged = [r for r, h in zip(ev.stop_reasons, histories, strict=True) if _broke(r, h)]
    flow = ev.probes.get("gradient_flow")
    probe = bool(flow is not None and flow.nonfinite)
    if not diverged and not probe:
        return None
    lr_range = ev.probes.get("lr_range_test")
    fix = "lr_from_range_test" if lr_range is not None and _finite(lr_range.suggestion) \
        else "grad_clip"
    what = diverged[0].split(";")[0] if diverged else "the gradient probe's loss became " \
        "non-finite"
    return Finding("nan_loss", "error",
                   f"training broke in {len(diverged)} of {len(ev.stop_reasons)} runs ({what})"
                   + (" and in the gradient probe" if probe and diverged else ""),
                   {"diverged_units": len(diverged), "units": len(ev.stop_reasons),
                    "probe_nonfinite": probe, "lr": ev.lr}, fix=fix, strength=10.0)


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def _range(ev: Evidence) -> tuple[float, float] | None:
    """(suggested LR, LR at which the sweep's loss blew up or the sweep's top)."""
    r = ev.probes.get("lr_range_test")
    if r is None or not _finite(r.suggestion):
        return None
    reached = min(len(loss) for loss in r.loss) if r.loss else len(r.lr)
    return float(r.suggestion), float(r.lr[max(reached - 1, 0)])


def rule_lr_too_high(ev: Evidence) -> Finding | None:
    """The LR is at or past where the range test's loss blew up; or more than 10x its
    suggestion while the training loss rises over epochs (slope > 2 standard errors), or
    while the network is stuck at chance with the LR nearer (in decades) to the blow-up than
    to the suggestion."""
    rng = _range(ev)
    if rng is None:
        return None
    suggestion, blowup = rng
    rising = [s > 2 * se for s, se in (_slope(c) for c in ev.curve("running_loss") if len(c))]
    past = ev.lr >= blowup or (ev.lr > 10 * suggestion and (any(rising) or (
        ev.stuck and ev.lr > math.sqrt(suggestion * blowup))))
    if not past:
        return None
    ratio = ev.lr / suggestion
    return Finding("lr_too_high", _severity(ev),
                   f"learning rate {ev.lr:g} is {ratio:.0f}x the range test's {suggestion:.2g} "
                   f"(the loss blows up from {blowup:.2g})",
                   {"lr": ev.lr, "suggested_lr": suggestion, "blowup_lr": blowup,
                    "ratio": ratio, "rising_units": int(sum(rising))},
                   fix="lr_from_range_test", strength=math.log10(max(ratio, 1.0)))


def rule_lr_too_low(ev: Evidence) -> Finding | None:
    """The LR is more than 10x below the range test's suggestion and the validation loss is
    still falling at the last epochs in most runs (slope below -2 standard errors)."""
    rng = _range(ev)
    if rng is None or ev.lr * 10 > rng[0]:
        return None
    suggestion = rng[0]
    tails = [c[-max(3, len(c) // 3):] for c in ev.curve("valid_loss") if len(c) >= 3]
    falling = sum(s < -2 * se for s, se in (_slope(t) for t in tails))
    if tails and falling * 2 < len(tails) and not ev.stuck:
        return None
    ratio = suggestion / ev.lr
    return Finding("lr_too_low", _severity(ev),
                   f"learning rate {ev.lr:g} is {ratio:.0f}x below the range test's "
                   f"{suggestion:.2g}; validation loss still falling at the end in {falling} "
                   f"of {len(tails)} runs",
                   {"lr": ev.lr, "suggested_lr": suggestion, "ratio": ratio,
                    "still_falling_units": falling}, fix="lr_from_range_test",
                   strength=math.log10(ratio))


def _still_improving(curve: np.ndarray, loss: np.ndarray) -> bool:
    """The kept epoch is in the last 10 % and the curve still rose over the last third
    (slope > 2 standard errors); with under 3 epochs: the last is best and loss fell."""
    if len(curve) < 3:
        return len(loss) >= 1 and int(np.argmin(loss)) == len(loss) - 1 and (
            len(loss) == 1 or loss[-1] < loss[0])
    if int(np.argmax(curve)) + 1 < len(curve) - max(1, len(curve) // 10):
        return False
    s, se = _slope(curve[-max(3, len(curve) // 3):])
    return s > 2 * se


def rule_too_few_epochs(ev: Evidence) -> Finding | None:
    """Most runs used every epoch (no early stop) and were still improving at the end: the
    kept epoch in the last 10 % and validation accuracy rising over the last third (slope
    above 2 standard errors; with under 3 epochs, the last epoch best and the loss falling)."""
    curves, losses = ev.curve("valid_accuracy"), ev.curve("valid_loss")
    rising = sum(reason is None and len(h) >= ev.max_epochs and _still_improving(c, loss)
                 for c, loss, h, reason in zip(curves, losses, ev.histories, ev.stop_reasons,
                                               strict=False))
    if not curves or rising * 2 <= len(curves):
        return None
    return Finding("too_few_epochs", _severity(ev),
                   f"validation accuracy was still rising when training stopped at "
                   f"{ev.max_epochs} epochs in {rising} of {len(curves)} runs",
                   {"max_epochs": ev.max_epochs, "rising_units": rising},
                   fix="more_epochs", strength=rising / len(curves))


def _last(values: np.ndarray, default: float = math.nan) -> float:
    return float(values[-1]) if len(values) else default


def rule_overfitting(ev: Evidence) -> Finding | None:
    """Eval-mode train accuracy exceeds validation accuracy by more than the difference's
    95 % half-width, and validation loss rose after its best epoch by more than its noise."""
    gaps, rose = [], 0
    for train, valid, vloss in zip(ev.curve("train_accuracy"), ev.curve("valid_accuracy"),
                                   ev.curve("valid_loss"), strict=False):
        if not len(valid) or not len(train):
            continue
        best = int(np.argmin(vloss)) if len(vloss) else len(valid) - 1
        gaps.append(float(train[best] - valid[best]))
        after = vloss[best:]
        noise = float(np.std(np.diff(vloss))) if len(vloss) > 2 else math.inf
        rose += len(after) > 1 and float(after.max() - vloss[best]) > 2 * noise
    test = ev.user.test
    if not gaps or test is None:
        return None
    n = max(test.n, 1)
    half = Z * math.sqrt(2 * 0.25 / n)  # of a difference of two accuracies, worst case
    gap = float(np.median(gaps))
    if gap <= half or rose * 2 <= len(gaps):
        return None
    return Finding("overfitting", _severity(ev, gap > 4 * half),
                   f"train accuracy (eval mode) is {gap * 100:.1f} points above validation at "
                   f"the best epoch, and validation loss rose afterwards in {rose} of "
                   f"{len(gaps)} runs",
                   {"median_gap": gap, "gap_halfwidth": half, "units_rising": rose},
                   fix="regularize", strength=gap / half)


def rule_underfitting(ev: Evidence) -> Finding | None:
    """A better model exists (paired test) and the user's eval-mode train accuracy is below
    the lower 95 % bound of that model's held-out accuracy."""
    better = ev.better_than_user()
    if not better:
        return None
    model, diff, _ = max(better, key=lambda b: b[1])
    train = [float(h[-1].get("train_accuracy", math.nan)) for h in ev.histories if h]
    if not train or model.test is None:
        return None
    fit = float(np.nanmedian(train))
    ref = model.test.accuracy
    if fit >= ref.ci[0]:
        return None
    return Finding("underfitting", "warning",
                   f"the model fits its own training cells only to {fit * 100:.1f}% (eval "
                   f"mode), no better than {model.label} does on held-out cells "
                   f"({ref.value * 100:.1f}%)",
                   {"train_accuracy": fit, "reference": model.label,
                    "reference_accuracy": ref.value}, fix="bigger_model",
                   strength=diff / max(ref.ci[1] - ref.ci[0], 1e-3))


DEEP = 6  # weight layers from which a stack without normalisation counts as deep


def _stuck_causes(ev: Evidence) -> list[tuple[str, str]]:
    """(fix id, words) for every visible cause of a network stuck at chance, most likely
    first; the default recipe when none is visible."""
    rates = dropout_rates(ev.model_kwargs)
    flow = ev.probes.get("gradient_flow")
    rng = _range(ev)
    causes = []
    if ev.unscaled:
        causes.append(("normalize_input", "the inputs are far from unit scale"))
    if rates and max(rates) >= 0.5:
        causes.append(("lighter_dropout", f"dropout {max(rates):g} drops most of the signal"))
    if rule_too_few_epochs(ev) is not None:
        causes.append(("more_epochs", f"training stopped after {ev.max_epochs} epochs, still "
                                      "improving"))
    if rng is not None and (ev.lr * 10 < rng[0] or ev.lr > math.sqrt(rng[0] * rng[1])):
        side = "below" if ev.lr < rng[0] else "above"
        causes.append(("lr_from_range_test", f"learning rate {ev.lr:g} is far {side} the "
                                             f"range test's {rng[0]:.2g}"))
    if flow is not None:
        weights = [t for t in flow.layer_types if "Conv" in t or "Linear" in t]
        norm = any("Norm" in t for t in flow.layer_types)
        dead = max(flow.median_dead_fraction, default=0.0)
        if dead > 0.5:
            causes.append(("add_batchnorm", f"{dead * 100:.0f}% of the units of one layer are "
                                            "dead"))
        elif _finite(flow.first_last_grad_ratio) and flow.first_last_grad_ratio < 1e-3:
            causes.append(("shallower_model" if norm else "add_batchnorm",
                           f"gradients vanish towards the input (first/last layer "
                           f"{flow.first_last_grad_ratio:.1e})"))
        elif len(weights) >= DEEP and not norm:
            causes.append(("add_batchnorm", f"a deep stack ({len(weights)} weight layers) "
                                            "without normalisation"))
    return causes or [("default_recipe", "no single cause is visible in the probes")]


def rule_stuck_at_chance(ev: Evidence) -> Finding | None:
    """Training failed, or balanced accuracy's 95 % CI reaches chance 1/K while another model
    is significantly better: the network predicts (almost) one class. Every visible cause is
    named; its fixes are all tested."""
    if not ev.stuck or not (ev.better_than_user() or getattr(ev.user, "failed", None)):
        return None
    causes = _stuck_causes(ev)
    words = "; ".join(c for _, c in causes)
    evidence = {"cause": words, "fixes": [f for f, _ in causes[1:]]}
    if ev.user.test is None or not ev.user.test.balanced_accuracy.known:
        return Finding("stuck_at_chance", "error",
                       f"the network never trained ({ev.user.failed}); likely causes: {words}",
                       {**evidence, "failed": ev.user.failed}, fix=causes[0][0], strength=5.0)
    bal = ev.user.test.balanced_accuracy
    return Finding("stuck_at_chance", "error",
                   f"the network is stuck at chance: balanced accuracy "
                   f"{bal.value * 100:.1f}% (chance {ev.chance * 100:.1f}%){_gap_text(ev)}; "
                   f"likely causes: {words}",
                   {**evidence, "balanced_accuracy": bal.value, "ci": list(bal.ci),
                    "chance": ev.chance}, fix=causes[0][0], strength=5.0)


def rule_dropout_gap(ev: Evidence) -> Finding | None:
    """Validation accuracy exceeds the running (dropout-on) train accuracy by more than the
    difference's half-width while eval-mode train accuracy does not (the gap is dropout's);
    or the setting is hurt and some dropout rate is 0.5 or more (a candidate cause)."""
    rates = dropout_rates(ev.model_kwargs)
    if not rates or max(rates) <= 0:
        return None
    gaps = []
    for run, train, valid in zip(ev.curve("running_accuracy"), ev.curve("train_accuracy"),
                                 ev.curve("valid_accuracy"), strict=False):
        if len(run) and len(valid) and len(train):
            gaps.append((float(valid[-1] - run[-1]), float(valid[-1] - train[-1])))
    test = ev.user.test
    if not gaps or test is None:
        return None
    half = Z * math.sqrt(2 * 0.25 / max(test.n, 1))
    running_gap = float(np.median([g[0] for g in gaps]))
    eval_gap = float(np.median([g[1] for g in gaps]))
    rate_text = ", ".join(f"{r:g}" for r in rates)
    evidence = {"running_gap": running_gap, "eval_gap": eval_gap, "dropout": rates}
    if running_gap > half and eval_gap <= half:
        return Finding("dropout_gap", _severity(ev, max(rates) >= 0.5),
                       f"validation accuracy is {running_gap * 100:.1f} points above training "
                       f"accuracy measured with dropout on (rates {rate_text}), but not above "
                       f"it in eval mode ({eval_gap * 100:+.1f}): dropout, not "
                       f"generalisation, makes the gap",
                       evidence, fix="lighter_dropout", strength=running_gap / half)
    if ev.hurt and max(rates) >= 0.5:
        return Finding("dropout_gap", "warning",
                       f"dropout {max(rates):g} (rates {rate_text}) drops most activations "
                       f"while training, and the network trails another model", evidence,
                       fix="lighter_dropout", strength=max(rates))
    return None


# ---------------------------------------------------------------------------------------------
# model and evaluation


def rule_below_baseline(ev: Evidence) -> Finding | None:
    """A baseline or the reference network beats the user's network by a paired test; or
    the user's runs failed while another model learned (above the majority floor)."""
    better = ev.better_than_user()
    fix = "mlp_instead_of_conv" if ev.conv_on_table else "default_recipe"
    if not better and getattr(ev.user, "failed", None):
        learned = [m for m in ev.others if m.test is not None and m.test.accuracy.known
                   and m.test.accuracy.ci[0] > ev.majority_share]
        if not learned:
            return None
        best = max(learned, key=lambda m: m.test.accuracy.value)
        return Finding("below_baseline", "warning",
                       f"your runs failed while {best.label} reaches "
                       f"{best.test.accuracy.value * 100:.1f}% on the same splits",
                       {"better": [{"model": best.label,
                                    "accuracy": best.test.accuracy.value}]},
                       fix=fix, strength=1.0)
    if not better:
        return None
    model, diff, p = max(better, key=lambda b: b[1])
    return Finding("below_baseline", "warning",
                   f"the network is {diff * 100:.1f} points below {model.label} on the same "
                   f"splits (p = {p:.2g}, Holm-adjusted)",
                   {"better": [{"model": m.label, "difference": d, "p_adjusted": pp}
                               for m, d, pp in better]}, fix=fix, strength=1.0)


def rule_feature_order_arbitrary(ev: Evidence) -> Finding | None:
    """A convolution over table columns that trails another model (the column-order probe
    ran): a warning when its accuracy spread over random column orders exceeds its spread
    over seeds (variance ratio above the F test's 95 % point), else information that the
    order's effect was not measurable, proposing the order-free MLP either way."""
    if not ev.conv_on_table or not ev.column_order:
        return None
    perm = np.asarray(ev.column_order.get("permuted", []), float)
    seeds = np.asarray(ev.column_order.get("seeds", []), float)
    if len(perm) < 3 or len(seeds) < 2:
        return None
    from scipy.stats import f as f_dist

    v_perm, v_seed = perm.var(ddof=1), max(seeds.var(ddof=1), 1e-12)
    limit = float(f_dist.ppf(0.95, len(perm) - 1, len(seeds) - 1))
    ratio = float(v_perm / v_seed)
    spans = (f"over {len(perm)} random column orders accuracy spans "
             f"{perm.min() * 100:.1f}-{perm.max() * 100:.1f}%, over {len(seeds)} seeds "
             f"{seeds.min() * 100:.1f}-{seeds.max() * 100:.1f}%")
    evidence = {"permuted": perm.tolist(), "seeds": seeds.tolist(), "variance_ratio": ratio,
                "f_95": limit, "significant": ratio > limit}
    if ratio > limit:
        return Finding("feature_order_arbitrary", _severity(ev, True),
                       f"the convolution depends on an arbitrary column order: {spans} "
                       f"(variance ratio {ratio:.1f} > {limit:.1f}, F test)", evidence,
                       fix="mlp_instead_of_conv", strength=math.log(ratio))
    return Finding("feature_order_arbitrary", "info",
                   f"a convolution runs over table columns whose order means nothing; {spans}"
                   f" (variance ratio {ratio:.1f}, under the F test's {limit:.1f}: the order's "
                   "own effect is not measurable here)", {**evidence, "test_fix": True},
                   fix="mlp_instead_of_conv", strength=0.0)


def rule_metric_misleading(ev: Evidence) -> Finding | None:
    """Accuracy's CI lies above the balanced accuracy's by more than both half-widths and
    some class's recall is below chance 1/K, while accuracy is above the majority floor."""
    test = ev.user.test
    if test is None or not test.balanced_accuracy.known or not test.per_class:
        return None
    acc, bal = test.accuracy, test.balanced_accuracy
    low = [c["label"] for c in test.per_class
           if c.get("recall") is not None and c["recall"] < ev.chance and c["support"] > 0]
    if not low or acc.ci[0] <= bal.ci[1] or ev.stuck:
        return None
    return Finding("metric_misleading", "warning",
                   f"accuracy {acc.value * 100:.1f}% hides classes the model misses: balanced "
                   f"accuracy is {bal.value * 100:.1f}% and {len(low)} class(es) are recalled "
                   f"below chance ({', '.join(map(str, low[:4]))})",
                   {"accuracy": acc.value, "balanced_accuracy": bal.value,
                    "low_recall_classes": low, "majority_share": ev.majority_share},
                   fix="class_weights", strength=(acc.value - bal.value) * 10)


def rule_difference_not_significant(ev: Evidence) -> Finding | None:
    """Every other network's paired test against the user's is above alpha (Holm) although
    their pooled accuracies differ: the observed differences are inside the noise."""
    rows = ev.vs_user.rows if ev.vs_user else []
    nets = [r for r in rows if r.p_adjusted >= ev.alpha and abs(r.difference) > 0]
    if not nets or len(nets) < len(rows):
        return None
    widest = max(nets, key=lambda r: abs(r.difference))
    return Finding("difference_not_significant", "info",
                   f"no model differs significantly from yours: the largest difference, "
                   f"{widest.model} {widest.difference * 100:+.2f} points "
                   f"[{widest.ci[0] * 100:+.2f}, {widest.ci[1] * 100:+.2f}], has p = "
                   f"{widest.p_adjusted:.2g}",
                   {"rows": [{"model": r.model, "difference": r.difference,
                              "p_adjusted": r.p_adjusted} for r in nets]})


RULES: dict[str, Callable[[Evidence], Finding | None]] = {
    "nan_loss": rule_nan_loss,
    "stuck_at_chance": rule_stuck_at_chance,
    "lr_too_high": rule_lr_too_high,
    "lr_too_low": rule_lr_too_low,
    "too_few_epochs": rule_too_few_epochs,
    "dropout_gap": rule_dropout_gap,
    "overfitting": rule_overfitting,
    "underfitting": rule_underfitting,
    "below_baseline": rule_below_baseline,
    "feature_order_arbitrary": rule_feature_order_arbitrary,
    "metric_misleading": rule_metric_misleading,
    "difference_not_significant": rule_difference_not_significant,
}


def apply_rules(ev: Evidence, rules: Sequence[str] | None = None) -> list[Finding]:
    """Every rule's finding (None dropped), in the order of :data:`RULES`."""
    names = list(RULES) if rules is None else list(rules)
    return [f for name in names if (f := RULES[name](ev)) is not None]
