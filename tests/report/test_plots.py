"""Figures draw user strings literally: class names and model labels are never mathtext."""

from __future__ import annotations

import pytest

from cellbench.report.plots import plot_comparison, plot_confusion, plot_curves, plot_effects

ODD = r"$\foo{x}$ cells"


def test_class_names_and_labels_with_dollars_are_drawn_literally(tmp_path):
    plot_confusion([[3, 1], [0, 4]], [ODD, "T cells [/CD4]"], tmp_path / "cm.png", title=ODD)
    plot_comparison([{"model": ODD, "accuracy": {"value": 0.5, "ci": [0.4, 0.6]}},
                     {"model": "b", "accuracy": {"value": 1.0, "ci": [0.9, 1.0]}}],
                    tmp_path / "cmp.png", title=ODD)
    plot_curves([{"epoch": 1, "running_loss": 1.0, "train_loss": 0.9}], tmp_path / "c.png",
                title=ODD)
    plot_effects([{"config": ODD, "difference": 0.01, "ci": [-0.01, 0.03],
                   "p_adjusted": 0.5}], tmp_path / "e.png", title=ODD)
    for name in ("cm.png", "cmp.png", "c.png", "e.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("n", [1, 7, 49, 1999])
def test_a_perfect_model_gets_a_plot_whatever_its_test_size(tmp_path, n):
    from cellbench.evaluate import wilson_ci

    rows = [{"model": "perfect", "accuracy": {"value": 1.0, "ci": list(wilson_ci(n, n))}},
            {"model": "zero", "accuracy": {"value": 0.0, "ci": list(wilson_ci(0, n))}}]
    plot_comparison(rows, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").is_file()
