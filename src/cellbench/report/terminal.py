"""What the command line prints after a job: tables and verdicts, from typed results.

Jobs return :class:`~cellbench.evaluate.results.RunResults` (and the train, tune and predict
results); the functions here render them on a rich console, so any job can also run quietly
from Python and be rendered later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..evaluate.results import Comparisons, Estimate, Metrics, ModelResult, RunResults

__all__ = ["describe_test_unit", "print_ablation", "print_comparison", "print_verdicts",
           "show_ablate", "show_compare", "show_predict", "show_train", "show_tune",
           "space_table"]


def _fmt(metric: Estimate | None, percent: bool = True) -> str:
    if metric is None or metric.value is None:
        return "-"
    scale, digits = (100, 2) if percent else (1, 3)
    lo, hi = metric.ci
    return (f"{metric.value * scale:.{digits}f} ({lo * scale:.{digits}f}-"
            f"{hi * scale:.{digits}f})")


def _point(metric: Estimate | None, percent: bool = True) -> str:
    if metric is None or metric.value is None:
        return "-"
    return f"{metric.value * 100:.2f}" if percent else f"{metric.value:.3f}"


def _accuracy(model: ModelResult) -> float:
    return model.test.accuracy.value if model.test and model.test.accuracy.known else -1


def print_comparison(models: Sequence[ModelResult], console: Any, unit: str = "cells",
                     group_name: str | None = None) -> None:
    """The terminal table: metrics with 95 % CIs, fit time and parameter count.

    Accuracy and balanced accuracy show their CI; every CI is in results.json.
    """
    from rich.table import Table

    cv = any(m.across_units for m in models)
    table = Table(title="test results, % (95% CI)", title_justify="left")
    table.add_column("model", no_wrap=True)
    for col in ("params", "fit s", "accuracy", "balanced acc.", "macro-F1", "AUROC"):
        table.add_column(col, justify="right", no_wrap=col in ("accuracy", "balanced acc."))
    if cv:
        table.add_column("acc. per fold", justify="right")
    ranked = sorted(models, key=lambda m: -_accuracy(m))
    for m in ranked:
        test = m.test or Metrics(0)
        cells = [escape(m.label), f"{m.n_params:,}", f"{m.fit_seconds:.1f}",
                 _fmt(test.accuracy), _fmt(test.balanced_accuracy), _point(test.macro_f1),
                 _point(test.auroc, percent=False)]
        if cv:
            acc = (m.across_units or {}).get("accuracy")
            cells.append(f"{acc.mean * 100:.2f} ± {acc.sd * 100:.2f}" if acc else "-")
        table.add_row(*cells)
    console.print(table)
    first = next((m.test for m in ranked if m.test), None)
    if first:
        _print_pooling_and_groups(ranked, first, console, unit, group_name)


def _print_pooling_and_groups(ranked: Sequence[ModelResult], first: Metrics, console: Any,
                              unit: str, group_name: str | None) -> None:
    pooled = f", pooled over {first.pooled_over}" if first.pooled_over else ""
    console.print(f"n = {first.n} {unit}{pooled}. CIs: Wilson "
                  "(accuracy), bootstrap (balanced accuracy, macro-F1), DeLong (AUROC).")
    groups = first.groups
    if groups and groups.get("applicable"):
        for m in ranked:
            g = (m.test.groups if m.test else None) or {}
            if g.get("applicable"):
                console.print(f"  patient level, {escape(m.label)}: "
                              f"{_fmt(Estimate.from_dict(g['accuracy']))} over "
                              f"{g['n_groups']} groups")
        if "caution" in groups:
            console.print(f"[yellow]{escape(groups['caution'])}[/]")
    elif groups:
        across = groups["cell_accuracy_across_groups"]
        name = escape(group_name or "group")
        console.print(f"  {escape(ranked[0].label)}: accuracy per {name} ranges "
                      f"{across['min']:.4f}-{across['max']:.4f} over {groups['n_groups']} "
                      "groups in the test part(s)")


def describe_test_unit(comparisons: Comparisons) -> str:
    """What the paired tests count as independent observations, in words."""
    return {"groups": "patients/samples (each group's accuracy)",
            "runs": ("seeds on one split, seed and test-cell variation"
                     if any(r.test == "seed_cell_t" for r in comparisons.rows)
                     else "runs (seed x fold), corrected resampled t"),
            "cells": "test cells (one run)"}.get(comparisons.unit, comparisons.unit)


def print_verdicts(comparisons: Comparisons | None, console: Any) -> None:
    """The paired tests, one verdict per line."""
    if not comparisons or not comparisons.rows:
        return
    unit = describe_test_unit(comparisons)
    adj = ", Holm-adjusted" if comparisons.correction == "holm" else ""
    console.print(f"\n[bold]paired tests against {escape(str(comparisons.reference))}[/] on "
                  f"{comparisons.metric} (unit: {unit}; alpha {comparisons.alpha}{adj}):")
    for row in comparisons.rows:
        console.print("  " + escape(row.verdict), highlight=False)


def print_ablation(results: RunResults, console: Any) -> None:
    """Each configuration's accuracy and its paired difference from the base."""
    from rich.table import Table

    ablation = results.extra["ablation"]
    rows = ablation["rows"]
    unit = results.comparisons.unit if results.comparisons else "-"
    table = Table(title=f"ablation of {escape(ablation['model'])} ({unit} as the test unit)",
                  title_justify="left")
    # The mean over every run (folds x seeds) is what the paired difference is built from, so
    # it comes first; the pooled CI is the first seed's alone and can rank differently.
    runs = max((row.get("runs") or 1 for row in rows), default=1)
    for col in (("configuration", f"accuracy %, mean ± sd over {runs} runs",
                 "difference vs base, points [95% CI]", "p (Holm)",
                 "first seed, pooled (95% CI)")):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for row in rows:
        diff = (f"{row['difference'] * 100:+.2f} [{row['ci'][0] * 100:+.2f}, "
                f"{row['ci'][1] * 100:+.2f}]" if "difference" in row else "(reference)")
        p = f"{row['p_adjusted']:.3g}" if "p_adjusted" in row else ""
        spread = (f"{row['mean'] * 100:.2f} ± {row['sd'] * 100:.2f}" if row["sd"] is not None
                  else f"{row['mean'] * 100:.2f}")
        table.add_row(escape(row["config"]), spread, diff, p,
                      _fmt(Estimate.from_dict(row["accuracy"])))
    console.print(table)
    print_verdicts(results.comparisons, console)


def _report(run_dir: Path) -> dict[str, Path]:
    path = run_dir / "report.html"
    return {"report": path} if path.is_file() else {}


def _paths(console: Any, **files: Path) -> None:
    console.print("\n" + "  ".join(f"{name}: {escape(str(path))}"
                                   for name, path in files.items()))


def show_compare(results: RunResults, console: Any) -> None:
    """After ``compare``: the table, the verdicts and where the files are."""
    print_comparison(results.models, console, results.unit, results.group_name)
    print_verdicts(results.comparisons, console)
    _paths(console, results=results.run_dir / "results.json",
           plots=results.run_dir / "comparison.png", **_report(results.run_dir))


def show_ablate(results: RunResults, console: Any) -> None:
    """After ``ablate``: each level against the base."""
    print_ablation(results, console)
    _paths(console, results=results.run_dir / "results.json",
           plot=results.run_dir / "ablation.png", **_report(results.run_dir))


def show_train(result: Any, console: Any) -> None:
    """After ``train``: the one model's row, why it stopped, and where it is saved."""
    if isinstance(result, RunResults):  # --cv / --seeds run through compare
        show_compare(result, console)
        return
    if result.reused:
        console.print("this run already finished; nothing to resume.")
        return
    print_comparison([result.as_model_result()], console, result.unit, result.group_name)
    if result.stop_reason:
        console.print(f"stopped: {escape(result.stop_reason)}")
    _paths(console, model=result.run_dir / "model.pt", metrics=result.run_dir / "metrics.json",
           **_report(result.run_dir))


def show_tune(result: Any, console: Any) -> None:
    """After ``tune``: trials, best settings, importances, tuned vs default on the test part."""
    trials = result.trials
    console.print(f"\n[bold]trials[/] {trials['complete']} complete, {trials['pruned']} pruned, "
                  f"{trials['failed']} failed; best validation {result.metric} "
                  f"{result.best['value']:.4f} (trial {result.best['number']})")
    console.print("[bold]best settings[/] " + escape(", ".join(
        f"{k}={v!r}" for k, v in result.best["params"].items())))
    if result.importances:
        console.print("[bold]importances[/] " + ", ".join(
            f"{escape(k)} {v:.2f}" for k, v in list(result.importances.items())[:6]))
    print_comparison(result.final, console, result.unit)
    print_verdicts(result.tuned_vs_default, console)
    _paths(console, **{"best configuration": result.run_dir / "best.yaml",
                       "history": result.run_dir / "tune_history.png",
                       **_report(result.run_dir)})


def show_predict(result: Any, console: Any) -> None:
    """After ``predict``: where the predictions went, and accuracy when labels were there."""
    if result.out is not None:
        console.print(f"wrote {len(result.frame)} predictions to {escape(str(result.out))}")
    if result.accuracy is not None:
        console.print(escape(result.accuracy_text))


def space_table(space: dict[str, Any]) -> Any:
    """A tuning search space as a table (shown before the first trial)."""
    from rich.table import Table

    table = Table(title="search space (before the first trial)", title_justify="left")
    table.add_column("name")
    table.add_column("distribution")
    for name, dist in space.items():
        table.add_row(name, dist.describe())
    return table


_MARK = {"error": "[red]error[/]", "warning": "[yellow]warning[/]", "info": "[dim]info[/]"}


def show_doctor(result: Any, console: Any) -> None:
    """After ``doctor``: findings ranked, the fixes tried, the final model vs the others."""
    from rich.table import Table

    console.print("\n[bold]findings[/] (most likely cause first)")
    if not result.findings:
        console.print("  none: nothing above chance of being wrong was found")
    for i, f in enumerate(result.findings, 1):
        console.print(f"  {i}. {_MARK[f['severity']]} [bold]{f['id']}[/]: "
                      f"{escape(f['message'])}", highlight=False)
        if f.get("advice"):
            console.print(f"     what to do: {escape(f['advice'])}", highlight=False)
    if result.fixes:
        table = Table(title="fixes tried (paired tests against your setting, Holm-adjusted)",
                      title_justify="left")
        for col in ("fix", "accuracy % (95% CI)", "difference, points [95% CI]", "p",
                    "verdict"):
            table.add_column(col, justify="left" if col in ("fix", "verdict") else "right")
        for row in result.fixes:
            acc = Estimate.from_dict(row["accuracy"]) if row.get("accuracy") else None
            diff = ("-" if row.get("difference") is None else
                    f"{row['difference'] * 100:+.2f} [{row['ci'][0] * 100:+.2f}, "
                    f"{row['ci'][1] * 100:+.2f}]")
            p = "-" if row.get("p_adjusted") is None else f"{row['p_adjusted']:.3g}"
            table.add_row(escape(row["label"]), _fmt(acc), diff, p,
                          "[green]helped[/]" if row["accepted"] else "no detectable gain")
        console.print(table)
    for item in result.not_run:
        console.print(f"[yellow]not run[/] {escape(item['what'])}: {escape(item['why'])}")
    final = result.final or {}
    models = list(result.models)
    print_comparison(models, console, result.unit)
    if final:
        path = escape(str(result.run_dir / final["model_path"]))
        console.print(f"\n[bold]final model[/] {escape(final['label'])} = "
                      f"{escape(final['spec'])}: {path} (cellbench predict uses it)")
    console.print(f"details: {escape(str(result.run_dir / 'doctor.json'))}")
