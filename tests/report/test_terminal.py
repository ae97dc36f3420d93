"""What the terminal says beside the numbers: failed models, one-class models, classes never
predicted, classes with few test items, recall per class, and percentages."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from cellbench.evaluate import evaluate_predictions
from cellbench.evaluate.results import Comparisons, Metrics, ModelResult
from cellbench.report.terminal import print_comparison, print_verdicts

CLASSES = ["a", "b", "c"]


def _model(label: str, pred: np.ndarray, y: np.ndarray, failed: str | None = None,
           groups: np.ndarray | None = None) -> ModelResult:
    test = Metrics.from_dict(evaluate_predictions(y, np.eye(3)[pred], CLASSES, groups=groups))
    return ModelResult(label, label.split("(")[0], label, label, 10, 0.1, 1, test=test,
                       failed=failed)


def _render(fn, *args) -> str:
    out = io.StringIO()
    fn(*args, Console(file=out, width=200))
    return " ".join(out.getvalue().split())


Y = np.array([0] * 40 + [1] * 40 + [2] * 6)


def test_failed_models_show_no_numbers_and_say_why():
    good = _model("lda", Y.copy(), Y)
    boom = _model("mlp", np.zeros_like(Y), Y, failed="diverged: the training loss became nan")
    text = _render(print_comparison, [boom, good])
    assert text.index("lda") < text.index("mlp")  # failed models go last
    row = text[text.index("│ mlp"):]
    assert row.split("│")[4].strip() == "failed"
    assert "mlp failed: diverged: the training loss became nan" in text
    out = io.StringIO()
    print_verdicts(Comparisons("lda"), Console(file=out, width=200), [good, boom])
    verdicts = " ".join(out.getvalue().split())
    assert "mlp: not tested, its training failed (diverged" in verdicts


def test_one_class_for_everything_and_classes_never_predicted_are_said():
    flat = _model("mlp", np.zeros_like(Y), Y)
    partial = _model("cnn", np.where(Y == 2, 1, Y), Y)
    text = _render(print_comparison, [flat, partial])
    assert "mlp predicts one class, 'a', for every test cell" in text
    assert "balanced accuracy 33.33 % = chance" in text
    assert "cnn never predicts 'c' (recall 0 for it)" in text


def test_few_test_items_and_recall_per_class_for_multiclass_runs():
    text = _render(print_comparison, [_model("lda", Y.copy(), Y)])
    assert "few test cells for 'c' (6)" in text
    assert "recall per class, %" in text and "│ c │ 6 │ 100.0 │" in text


def test_group_ranges_are_percentages():
    groups = np.repeat(["p1", "p2"], 43)
    pred = Y.copy()
    pred[:4] = 1
    text = _render(print_comparison, [_model("lda", pred, Y, groups=groups)])
    assert "accuracy per group ranges 90.70-100.00 % over 2 groups" in text
