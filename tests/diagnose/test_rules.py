"""The training, model and evaluation rules on synthetic evidence: each fires on its planted
fault and stays silent on the same evidence without it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellbench.diagnose.findings import Finding
from cellbench.diagnose.probes import GradientFlowResult, LRRangeResult
from cellbench.diagnose.ranking import rerank
from cellbench.diagnose.rules import RULES, Evidence, apply_rules
from cellbench.evaluate.results import Comparison, Comparisons, Estimate, Metrics, ModelResult


def _metrics(acc: float, bal: float | None = None, n: int = 2000, recalls=None) -> Metrics:
    bal = acc if bal is None else bal
    half = 1.96 * math.sqrt(max(acc * (1 - acc), 0.01) / n)
    per_class = [{"label": f"c{k}", "support": 100, "recall": r}
                 for k, r in enumerate(recalls or [bal] * 3)]
    return Metrics(n, Estimate(acc, [acc - half, acc + half], "wilson"),
                   Estimate(bal, [bal - half, bal + half], "bootstrap"),
                   per_class=per_class)


def _model(label: str, acc: float, bal: float | None = None, **kw) -> ModelResult:
    return ModelResult(label, label, label, label, 100, 1.0, 4, test=_metrics(acc, bal, **kw))


def _history(n: int, valid_acc, running_acc=None, train_acc=None, valid_loss=None,
             running_loss=None) -> list[dict]:
    def series(x, default):
        x = default if x is None else x
        return [x(i) if callable(x) else x for i in range(n)]

    va = series(valid_acc, 0.9)
    return [{"epoch": i + 1, "valid_accuracy": va[i],
             "running_accuracy": series(running_acc, va[i])[i],
             "train_accuracy": series(train_acc, va[i])[i],
             "valid_loss": series(valid_loss, lambda j: 1.0 / (j + 1))[i],
             "running_loss": series(running_loss, lambda j: 1.0 / (j + 1))[i]}
            for i in range(n)]


def _ev(user_acc=0.90, user_bal=None, better=None, histories=None, stop=None, lr=1e-3,
        kwargs=None, probes=None, max_epochs=30, conv=False, column_order=None,
        recalls=None) -> Evidence:
    user = _model("yours", user_acc, user_bal, recalls=recalls)
    others = [_model("lda", 0.95 if better else user_acc)]
    rows = []
    if better is not None:
        rows = [Comparison("lda", "wilcoxon", better[0], [better[0] - 0.01, better[0] + 0.01],
                           better[1], 8, "groups", p_adjusted=better[1])]
    histories = histories if histories is not None else [_history(12, 0.9)] * 4
    return Evidence(n_classes=3, majority_share=0.5, user=user, histories=histories,
                    stop_reasons=stop or ["early stopping"] * len(histories),
                    max_epochs=max_epochs, patience=5, lr=lr, optimizer="adam",
                    model_kwargs=kwargs or {}, others=others,
                    vs_user=Comparisons("yours", rows=rows), probes=probes or {},
                    conv_on_table=conv, column_order=column_order)


def _lr_range(suggestion: float, blowup_step: int = 90) -> LRRangeResult:
    lrs = tuple(float(x) for x in np.logspace(-6, 1, 100))
    loss = tuple(1.0 for _ in range(blowup_step))
    return LRRangeResult(lrs, (loss,), (loss,), (loss,), (0.5,), (True,), (suggestion,),
                         (suggestion * 3,), (suggestion,), suggestion, suggestion, (0,),
                         ("diverged",), 1e-6, 10.0, 100, 0.05, 0.5, 0.98, "adam")


def _ids(ev: Evidence) -> dict[str, Finding]:
    return {f.id: f for f in apply_rules(ev)}


def test_healthy_evidence_gives_no_warning():
    assert all(f.severity == "info" for f in apply_rules(_ev(probes={
        "lr_range_test": _lr_range(1e-3)})))


def test_nan_loss_from_a_diverged_run():
    ev = _ev(stop=["diverged: the training loss became nan in epoch 3"] * 2 + [None] * 2)
    assert _ids(ev)["nan_loss"].severity == "error"
    assert "nan_loss" not in _ids(_ev())
    exploded = ["diverged: the training loss exploded to more than 100 x the 1.10 of "
                "guessing: 512 in epoch 2"] * 2 + [None] * 2
    assert "nan_loss" not in _ids(_ev(stop=exploded))  # finite: the LR's finding, not this
    overflowed = [_history(2, 0.3, running_loss=lambda j: 1e24 if j else 1.0)] * 2 + \
        [_history(12, 0.9)] * 2  # past sqrt(float32 max): the next squared gradient is inf
    ids = _ids(_ev(stop=exploded, histories=overflowed))
    assert ids["nan_loss"].evidence["diverged_units"] == 2
    below = [_history(2, 0.3, running_loss=lambda j: 1e15 if j else 1.0)] * 2 + \
        [_history(12, 0.9)] * 2
    assert "nan_loss" not in _ids(_ev(stop=exploded, histories=below))


def test_a_nan_loss_is_named_before_the_learning_rate_that_caused_it():
    nan = Finding("nan_loss", "error", "loss became nan", fix="lr_from_range_test")
    high = Finding("lr_too_high", "warning", "lr 1e4", fix="lr_from_range_test", strength=6)
    stuck = Finding("stuck_at_chance", "error", "stuck", fix="lr_from_range_test", strength=5)
    same = {"fix": "lr_from_range_test", "label": "r", "difference": 0.4, "p_adjusted": 0.01,
            "accepted": True}
    outcomes = dict.fromkeys(["nan_loss", "lr_too_high", "stuck_at_chance"], same)
    for order in ([high, stuck, nan], [nan, high, stuck], [stuck, high, nan]):
        assert rerank(order, outcomes)[0].id == "nan_loss"


def test_stuck_at_chance_names_heavy_dropout_as_the_cause():
    ev = _ev(user_acc=0.5, user_bal=1 / 3, better=(0.45, 0.001), kwargs={"dropout": [0.5, 0.9]})
    stuck = _ids(ev)["stuck_at_chance"]
    assert stuck.severity == "error" and stuck.fix == "lighter_dropout"
    assert "dropout 0.9" in stuck.message
    assert "stuck_at_chance" not in _ids(_ev(better=(0.45, 0.001)))  # behind, not at chance


def test_lr_too_high_and_too_low_against_the_range_test():
    probes = {"lr_range_test": _lr_range(1e-3, blowup_step=80)}
    blowup = _lr_range(1e-3, 80).lr[79]
    high = _ev(lr=blowup * 2, better=(0.2, 0.001), probes=probes)
    assert _ids(high)["lr_too_high"].severity == "warning"
    falling = [_history(12, 0.5, valid_loss=lambda j: 2.0 - 0.1 * j)] * 4
    low = _ev(lr=1e-6, better=(0.2, 0.001), probes=probes, histories=falling)
    assert _ids(low)["lr_too_low"].fix == "lr_from_range_test"
    fine = _ev(lr=1e-3, better=(0.2, 0.001), probes=probes, histories=falling)
    assert not {"lr_too_high", "lr_too_low"} & set(_ids(fine))

    # below the blow-up but nearer to it than to the suggestion, and stuck at chance (Adam at
    # 0.3 where the sweep suggests 1.6e-4: ReLUs die, the loss sits flat at ln K)
    between = math.sqrt(1e-3 * blowup) * 1.5
    assert between < blowup
    stuck = _ev(lr=between, user_acc=0.5, user_bal=1 / 3, better=(0.45, 0.001), probes=probes)
    found = _ids(stuck)
    assert found["lr_too_high"].fix == "lr_from_range_test"
    assert "far above the range test's" in found["stuck_at_chance"].message
    learning = _ev(lr=between, better=(0.2, 0.001), probes=probes)  # not stuck, not rising
    assert "lr_too_high" not in _ids(learning)


def test_too_few_epochs_when_still_rising_at_the_last_epoch():
    rising = [_history(10, lambda j: 0.5 + 0.03 * j)] * 4
    ev = _ev(histories=rising, stop=[None] * 4, max_epochs=10, better=(0.1, 0.001))
    assert _ids(ev)["too_few_epochs"].severity == "warning"
    flat = [_history(10, lambda j: 0.8 if j < 3 else 0.9)] * 4
    assert "too_few_epochs" not in _ids(_ev(histories=flat, stop=[None] * 4, max_epochs=10))
    # not hurt: the same curves give only information
    assert _ids(_ev(histories=rising, stop=[None] * 4, max_epochs=10))[
        "too_few_epochs"].severity == "info"


def test_overfitting_needs_a_gap_and_a_rising_validation_loss():
    over = [_history(20, 0.8, train_acc=1.0, valid_loss=lambda j: abs(j - 5) * 0.1 + 0.3)] * 4
    assert "overfitting" in _ids(_ev(histories=over))
    no_rise = [_history(20, 0.8, train_acc=1.0)] * 4
    assert "overfitting" not in _ids(_ev(histories=no_rise))


def test_dropout_gap_when_validation_beats_running_but_not_eval_train_accuracy():
    gap = [_history(10, 0.9, running_acc=0.7, train_acc=0.92)] * 4
    assert "dropout_gap" in _ids(_ev(histories=gap, kwargs={"dropout": 0.5}))
    assert "dropout_gap" not in _ids(_ev(histories=gap, kwargs={"dropout": 0.0}))
    honest = [_history(10, 0.9, running_acc=0.9, train_acc=0.92)] * 4
    assert "dropout_gap" not in _ids(_ev(histories=honest, kwargs={"dropout": 0.5}))


def test_below_baseline_and_underfitting_need_a_significant_paired_test():
    low_fit = [_history(10, 0.8, train_acc=0.81)] * 4
    ev = _ev(user_acc=0.8, better=(0.15, 0.001), histories=low_fit)
    assert {"below_baseline", "underfitting"} <= set(_ids(ev))
    not_sig = _ev(user_acc=0.8, better=(0.15, 0.2), histories=low_fit)
    assert not {"below_baseline", "underfitting"} & set(_ids(not_sig))


def test_feature_order_needs_more_spread_over_orders_than_over_seeds():
    spread = {"permuted": [0.80, 0.90, 0.70], "seeds": [0.85, 0.851, 0.849]}
    assert "feature_order_arbitrary" in _ids(_ev(conv=True, column_order=spread))
    found = _ids(_ev(conv=True, column_order=spread, better=(0.05, 0.01)))
    assert found["feature_order_arbitrary"].severity == "warning"
    same = {"permuted": [0.85, 0.851, 0.849], "seeds": [0.80, 0.90, 0.70]}
    quiet = _ids(_ev(conv=True, column_order=same, better=(0.05, 0.01)))
    assert quiet["feature_order_arbitrary"].severity == "info"  # the MLP is still proposed
    assert "not measurable" in quiet["feature_order_arbitrary"].message
    assert quiet["feature_order_arbitrary"].fix == "mlp_instead_of_conv"
    assert quiet["feature_order_arbitrary"].evidence["test_fix"]  # the doctor still tests it
    assert "feature_order_arbitrary" not in _ids(_ev(conv=False, column_order=spread))
    assert "feature_order_arbitrary" not in _ids(_ev(conv=True))  # the probe did not run


def test_a_convolution_over_columns_that_an_mlp_fixes_is_named_before_below_baseline():
    order = Finding("feature_order_arbitrary", "info", "not measurable",
                    fix="mlp_instead_of_conv")
    below = Finding("below_baseline", "warning", "below lda", fix="mlp_instead_of_conv")
    mlp = {"fix": "mlp_instead_of_conv", "label": "m", "difference": 0.05, "p_adjusted": 0.02,
           "accepted": True}
    ranked = rerank([below, order], {"below_baseline": mlp, "feature_order_arbitrary": mlp})
    assert [f.id for f in ranked] == ["feature_order_arbitrary", "below_baseline"]
    assert ranked[0].severity == "warning"  # the order-free model was tested and helped


def test_metric_misleading_when_accuracy_hides_a_missed_class():
    ev = _ev(user_acc=0.9, user_bal=0.55, recalls=[0.99, 0.6, 0.05])
    assert _ids(ev)["metric_misleading"].fix == "class_weights"
    assert "metric_misleading" not in _ids(_ev(user_acc=0.9, user_bal=0.89))


def test_difference_not_significant_when_no_test_passes():
    ev = _ev(better=(0.003, 0.6))
    assert _ids(ev)["difference_not_significant"].severity == "info"
    assert "difference_not_significant" not in _ids(_ev(better=(0.2, 0.001)))


def test_every_rule_is_in_the_vocabulary():
    from cellbench.diagnose.findings import VOCABULARY

    assert set(RULES) <= set(VOCABULARY)


def test_rerank_puts_the_cause_a_fix_proved_first():
    symptom = Finding("stuck_at_chance", "error", "stuck", fix="lighter_dropout", strength=5)
    cause = Finding("dropout_gap", "warning", "heavy dropout", fix="lighter_dropout")
    other = Finding("lr_too_low", "warning", "low lr", fix="lr_from_range_test", strength=3)
    leak = Finding("leaking_feature", "error", "leak", fix="drop_column")
    outcomes = {"stuck_at_chance": {"fix": "lighter_dropout", "label": "l", "difference": 0.4,
                                    "p_adjusted": 0.01, "accepted": True},
                "dropout_gap": {"fix": "lighter_dropout", "label": "l", "difference": 0.4,
                                "p_adjusted": 0.01, "accepted": True},
                "lr_too_low": {"fix": "lr_from_range_test", "label": "r", "difference": 0.01,
                               "p_adjusted": 0.5, "accepted": False}}
    ranked = rerank([symptom, other, cause, leak], outcomes)
    assert [f.id for f in ranked] == ["leaking_feature", "dropout_gap", "stuck_at_chance",
                                      "lr_too_low"]
    assert ranked[-1].severity == "info" and "did not help" in ranked[-1].message
    assert ranked[1].evidence["fix_tested"]["accepted"] is True


@pytest.mark.parametrize("fix", ["mlp_instead_of_conv", "lighter_dropout"])
def test_a_specific_fix_that_recovers_most_of_the_gain_outranks_a_wholesale_one(fix):
    wholesale = Finding("below_baseline", "warning", "below", fix="mlp_instead_of_conv")
    specific = Finding("dropout_gap", "warning", "dropout", fix="lighter_dropout")
    gains = {"mlp_instead_of_conv": 0.30, "lighter_dropout": 0.29 if fix == "lighter_dropout"
             else 0.10}
    outcomes = {"below_baseline": {"fix": "mlp_instead_of_conv", "label": "m", "accepted": True,
                                   "difference": gains["mlp_instead_of_conv"], "p_adjusted": 0.01},
                "dropout_gap": {"fix": "lighter_dropout", "label": "d", "accepted": True,
                                "difference": gains["lighter_dropout"], "p_adjusted": 0.01}}
    first = rerank([wholesale, specific], outcomes)[0].id
    assert first == ("dropout_gap" if fix == "lighter_dropout" else "below_baseline")


def test_gradient_flow_cause_for_a_deep_stack_without_normalisation():
    flow = GradientFlowResult(("a", "b"), ("Linear", "Linear"), (10, 10), ("r",), ("ReLU",),
                              (1,), (1.0,), (1e-3,), ((1e-9,), (1.0,)), ((1.0,), (1.0,)),
                              ((0.0,), (0.1,)), ((0.1,),), (1e-9, 1.0), (0.0, 0.1), (0.1,),
                              1e-9, False, None, None)
    ev = _ev(user_acc=0.5, user_bal=1 / 3, better=(0.45, 0.001), probes={"gradient_flow": flow})
    stuck = _ids(ev)["stuck_at_chance"]
    assert stuck.fix == "add_batchnorm" and "vanish" in stuck.message
