"""Metrics and their confidence intervals against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from cellbench.evaluate import confusion_bootstrap, delong_ci, evaluate_predictions, wilson_ci
from cellbench.evaluate.metrics import _balanced_accuracy


def _predictions(n, k, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (7, 10), (10, 10), (480, 500), (3, 1000)])
def test_wilson_matches_statsmodels(k, n):
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    np.testing.assert_allclose(wilson_ci(k, n), (lo, hi), atol=1e-12)


def test_wilson_bounds_are_exactly_0_and_1_at_the_extremes():
    """At k = n the upper bound is 1.0, at k = 0 the lower bound 0.0, for every n (rounding
    gave 0.9999999999999998 for ~600 sizes, and a negative error bar); every interval holds
    its estimate."""
    for n in range(1, 2001):
        lo, hi = wilson_ci(n, n)
        assert hi == 1.0 and lo < 1.0, n
        lo, hi = wilson_ci(0, n)
        assert lo == 0.0 and hi > 0.0, n
        for k in (1, n // 2, n - 1):
            lo, hi = wilson_ci(k, n)
            assert lo <= k / n <= hi, (k, n)


def test_balanced_accuracy_bootstrap_resamples_within_each_class():
    """A class of 3 items must stay in every resample: unstratified, it drops out of ~5 % of
    them and the mean recall over the classes left inflates the upper bound."""
    cm = np.array([[60, 40], [0, 3]])  # recalls 0.6 and 1.0: balanced accuracy 0.8
    lo, hi = confusion_bootstrap(cm, _balanced_accuracy, 4000, stratified=True)
    # the tiny class's recall is always 1 when it is in the resample: the CI is that of
    # (recall_0 + 1) / 2, with recall_0 a proportion of 100
    r_lo, r_hi = wilson_ci(60, 100)
    assert lo == pytest.approx((r_lo + 1) / 2, abs=0.02)
    assert hi == pytest.approx((r_hi + 1) / 2, abs=0.02)
    m = evaluate_predictions(np.array([0] * 100 + [1] * 3),
                             np.eye(2)[[0] * 60 + [1] * 40 + [1] * 3], ["a", "b"])
    assert m["balanced_accuracy"]["ci"] == pytest.approx([lo, hi], abs=0.02)
    assert "within classes" in m["balanced_accuracy"]["method"]


@pytest.mark.parametrize("k", [2, 4])
def test_point_metrics_match_scikit_learn(k):
    y, p = _predictions(2000, k)
    m = evaluate_predictions(y, p, list(range(k)))
    pred = p.argmax(1)
    assert m["n"] == 2000
    assert m["accuracy"]["value"] == pytest.approx((pred == y).mean(), abs=1e-12)
    assert m["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, pred),
                                                            abs=1e-12)
    assert m["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"),
                                                   abs=1e-12)
    ref = roc_auc_score(y, p[:, 1]) if k == 2 else roc_auc_score(y, p, multi_class="ovr")
    assert m["auroc"]["value"] == pytest.approx(ref, abs=1e-12)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        lo, hi = m[name]["ci"]
        assert lo <= m[name]["value"] <= hi
    assert np.sum(m["confusion_matrix"]["counts"]) == 2000


def _delong_reference(scores, positive):
    """DeLong et al. (1988), written out directly with O(n^2) comparisons."""
    x, y = scores[positive], scores[~positive]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(1), psi.mean(0)
    var = v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(y)
    return auc, var


def test_delong_matches_the_direct_formula_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # rounding makes ties
    auc, var = _delong_reference(s, y == 1)
    value, lo, hi = delong_ci(y, np.stack([1 - s, s], 1))
    assert value == pytest.approx(auc, abs=1e-12)
    half = 1.959963984540054 * np.sqrt(var)
    assert (lo, hi) == pytest.approx((auc - half, auc + half), abs=1e-10)


def test_delong_macro_interval_agrees_with_a_bootstrap():
    y, p = _predictions(1500, 3, seed=4)
    _, lo, hi = delong_ci(y, p)
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        boots.append(roc_auc_score(y[i], p[i], multi_class="ovr"))
    b_lo, b_hi = np.quantile(boots, [0.025, 0.975])
    assert abs((hi - lo) - (b_hi - b_lo)) < 0.25 * (b_hi - b_lo)


def test_confusion_bootstrap_equals_row_bootstrap_in_distribution():
    y, p = _predictions(400, 3, seed=5, signal=0.8)
    pred = p.argmax(1)
    cm = np.zeros((3, 3), int)
    np.add.at(cm, (y, pred), 1)
    lo, hi = confusion_bootstrap(cm, lambda c: np.trace(c, axis1=-2, axis2=-1) / 400, 4000)
    rng = np.random.default_rng(1)
    rows = [(pred[i] == y[i]).mean() for i in (rng.integers(0, 400, 400) for _ in range(4000))]
    r_lo, r_hi = np.quantile(rows, [0.025, 0.975])
    assert lo == pytest.approx(r_lo, abs=0.012) and hi == pytest.approx(r_hi, abs=0.012)


def test_single_class_rows_have_no_auroc():
    m = evaluate_predictions(np.zeros(5, int), np.tile([0.9, 0.1], (5, 1)), ["a", "b"])
    assert m["auroc"]["value"] is None and "undefined" in m["auroc"]["method"]


def test_patient_level_results_aggregate_cells_per_group():
    groups = np.repeat(["P1", "P2", "P3", "P4"], 10)
    y = np.repeat([0, 0, 1, 1], 10)
    p1 = np.full(40, 0.3)
    p1[20:] = 0.8
    p1[30:] = 0.45  # P4: cells lean to class 0 on average -> patient wrong
    m = evaluate_predictions(y, np.stack([1 - p1, p1], 1), ["healthy", "sick"], groups=groups)
    g = m["groups"]
    assert g["applicable"] and g["n_groups"] == 4
    assert g["accuracy"]["value"] == 0.75
    assert g["predictions"]["P4"] == {"true": "sick", "predicted": "healthy"}
    assert "too few to conclude anything" in g["caution"]
    assert g["per_group"]["P3"]["cell_accuracy"] == 1.0


def test_patient_level_is_not_applicable_when_labels_vary_within_groups():
    y, p = _predictions(200, 3)
    m = evaluate_predictions(y, p, ["a", "b", "c"], groups=np.arange(200) % 5)
    assert m["groups"]["applicable"] is False
    assert "cell accuracy per group" in m["groups"]["note"]
    assert len(m["groups"]["per_group"]) == 5


@pytest.mark.slow
def test_wilson_and_delong_intervals_cover_at_the_nominal_rate():
    """Test sets of 300 drawn from a large population: 95% intervals cover its value 93-97.5%
    of the time."""
    rng = np.random.default_rng(11)
    big_y, big_p = _predictions(400_000, 2, seed=99, signal=1.0)
    true_auc = roc_auc_score(big_y, big_p[:, 1])
    true_acc = (big_p.argmax(1) == big_y).mean()
    cover_acc = cover_auc = 0
    for _ in range(400):
        i = rng.integers(0, len(big_y), 300)
        y, p = big_y[i], big_p[i]
        lo, hi = wilson_ci(int((p.argmax(1) == y).sum()), 300)
        cover_acc += lo <= true_acc <= hi
        _, lo, hi = delong_ci(y, p)
        cover_auc += lo <= true_auc <= hi
    assert 0.93 <= cover_acc / 400 <= 0.975
    assert 0.93 <= cover_auc / 400 <= 0.975
