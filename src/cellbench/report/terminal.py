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

__all__ = ["describe_test_unit", "print_ablation", "print_comparison", "print_model_notes",
           "print_per_group", "print_recall", "print_verdicts", "show_ablate", "show_compare",
           "show_predict", "show_train", "show_tune", "space_table"]


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
    ranked = sorted(models, key=lambda m: (bool(m.failed), -_accuracy(m)))
    for m in ranked:
        test = m.test or Metrics(0)
        cells = [escape(m.label), f"{m.n_params:,}", f"{m.fit_seconds:.1f}",
                 _fmt(test.accuracy), _fmt(test.balanced_accuracy), _point(test.macro_f1),
                 _point(test.auroc, percent=False)]
        if m.failed:  # numbers of a diverged model mean nothing: not shown as results
            cells[3:] = ["[red]failed[/]", *["-"] * (len(cells) - 4)]
        if cv:
            acc = (m.across_units or {}).get("accuracy")
            cells.append("-" if m.failed or not acc else
                         f"{acc.mean * 100:.2f} ± {acc.sd * 100:.2f}")
        table.add_row(*cells)
    console.print(table)
    first = next((m.test for m in ranked if m.test and not m.failed), None)
    if first:
        _print_pooling_and_groups(ranked, first, console, unit, group_name)
    print_model_notes(ranked, console, unit)
    print_recall(ranked, console)


def _print_pooling_and_groups(ranked: Sequence[ModelResult], first: Metrics, console: Any,
                              unit: str, group_name: str | None) -> None:
    pooled = f", pooled over {first.pooled_over}" if first.pooled_over else ""
    console.print(f"n = {first.n} {unit}{pooled}. CIs: Wilson (accuracy), bootstrap within "
                  "classes (balanced accuracy), bootstrap (macro-F1), DeLong (AUROC).")
    groups = first.groups
    ranked = [m for m in ranked if not m.failed]
    if groups and groups.get("applicable"):
        for m in ranked:
            g = (m.test.groups if m.test else None) or {}
            if g.get("applicable"):
                console.print(f"  patient level, {escape(m.label)}: "
                              f"{_fmt(Estimate.from_dict(g['accuracy']))} over "
                              f"{_count(g['n_groups'], 'group')}")
        if "caution" in groups:
            console.print(f"[yellow]{escape(groups['caution'])}[/]")
    elif groups:
        across = groups["cell_accuracy_across_groups"]
        name = escape(group_name or "group")
        console.print(f"  {escape(ranked[0].label)}: accuracy per {name} ranges "
                      f"{across['min'] * 100:.2f}-{across['max'] * 100:.2f} % over "
                      f"{_count(groups['n_groups'], 'group')} in the test part(s)")


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _quote(label: Any) -> str:
    """A class label for a sentence: quoted text as written (no repr escapes), or a number."""
    return f"'{label}'" if isinstance(label, str) else str(label)


def _names(labels: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(_quote(lab) for lab in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def print_model_notes(models: Sequence[ModelResult], console: Any, unit: str = "cells") -> None:
    """Below a results table: failed models with the cause, models that predict one class
    for everything or never predict some classes, classes with too few test items."""
    for m in models:
        if m.failed:
            console.print(f"[red]{escape(m.label)} failed[/]: {escape(m.failed)}",
                          highlight=False)
            continue
        if m.test is None or not m.test.per_class:
            continue
        per_class = m.test.per_class
        truth = [c for c in per_class if c["support"]]
        predicted = [c["label"] for c in per_class if c["precision"] is not None]
        never = [c["label"] for c in truth if c["precision"] is None]
        if len(predicted) == 1 and len(truth) > 1 and m.name != "majority":
            console.print(f"[yellow]{escape(m.label)} predicts one class, "
                          f"{escape(_quote(predicted[0]))}, for every test {unit[:-1]}[/]: its "
                          "accuracy is that class's share, not learning (balanced accuracy "
                          f"{_point(m.test.balanced_accuracy)} % = chance).", highlight=False)
        elif never and m.name != "majority":
            console.print(f"[yellow]{escape(m.label)} never predicts "
                          f"{escape(_names(never))}[/] (recall 0 for "
                          f"{'it' if len(never) == 1 else 'them'}).", highlight=False)
    first = next((m.test for m in models if m.test and m.test.per_class and not m.failed),
                 None)
    if first is not None:
        few = [(c["label"], c["support"]) for c in first.per_class if 0 < c["support"] < 10]
        if few:
            listed = ", ".join(f"{_quote(lab)} ({n})" for lab, n in few[:5])
            console.print(f"[yellow]few test {unit}[/] for {escape(listed)}"
                          f"{' and more' if len(few) > 5 else ''}: fewer than 10 each, so "
                          "their recall (and balanced accuracy) rests on a handful.",
                          highlight=False)


def print_recall(models: Sequence[ModelResult], console: Any, limit: int = 20) -> None:
    """Recall per class and model, in %, for runs with more than two classes."""
    from rich.table import Table

    shown = [m for m in models if m.test and m.test.per_class and not m.failed]
    if not shown or len(shown[0].test.per_class) <= 2:
        return
    table = Table(title="recall per class, %", title_justify="left")
    table.add_column("class")
    table.add_column("test n", justify="right")
    for m in shown:
        table.add_column(escape(m.label), justify="right")
    rows = shown[0].test.per_class
    for k, row in enumerate(rows[:limit]):
        recalls = [m.test.per_class[k].get("recall") for m in shown]
        table.add_row(escape(str(row["label"])), f"{row['support']:,}",
                      *("-" if r is None else f"{r * 100:.1f}" for r in recalls))
    console.print(table)
    if len(rows) > limit:
        console.print(f"  and {len(rows) - limit} more classes: see results.json")


def describe_test_unit(comparisons: Comparisons) -> str:
    """What the paired tests count as independent observations, in words."""
    return {"groups": "patients/samples (each group's accuracy)",
            "runs": ("seeds on one split, seed and test-cell variation"
                     if any(r.test == "seed_cell_t" for r in comparisons.rows)
                     else "runs (seed x fold), corrected resampled t"),
            "cells": "test cells (one run)"}.get(comparisons.unit, comparisons.unit)


def print_verdicts(comparisons: Comparisons | None, console: Any,
                   models: Sequence[ModelResult] = ()) -> None:
    """The paired tests, one verdict per line; failed models are named as not tested."""
    failed = [m for m in models if m.failed]
    if failed and (comparisons is None or not comparisons.rows):
        console.print("")
    for m in failed:
        console.print(f"  [red]{escape(m.label)}: not tested[/], its training failed "
                      f"({escape(m.failed)})", highlight=False)
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
    for col in (("configuration", f"accuracy %, mean ± sd over {_count(runs, 'run')}",
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
    if "protocol" in results.extra:
        print_per_group(results, console)
    print_verdicts(results.comparisons, console, results.models)
    plot = results.run_dir / "comparison.png"
    _paths(console, results=results.run_dir / "results.json",
           **({"plots": plot} if plot.is_file() else {}), **_report(results.run_dir))


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
    if result.test is None:
        console.print("no test part (--test-size 0): the model is trained and saved, but "
                      "nothing measures how good it is.")
    if result.stop_reason and not result.failed:
        console.print(f"stopped: {escape(result.stop_reason)}")
    _paths(console, model=result.run_dir / "model.pt", metrics=result.run_dir / "metrics.json",
           **_report(result.run_dir))


def show_tune(result: Any, console: Any) -> None:
    """After ``tune``: trials, best settings, importances, tuned vs default on the test part."""
    trials = result.trials
    console.print(f"\n[bold]trials[/] {trials['complete']} complete, {trials['pruned']} pruned, "
                  f"{trials['failed']} failed; best validation {result.metric} "
                  f"{result.best['value'] * 100:.2f} % (trial {result.best['number']})")
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
    """After ``predict``: where the predictions went, accuracy when labels were there, and a
    warning when every row got the same class."""
    if result.out is not None:
        console.print(f"wrote {result.n_rows} predictions to {escape(str(result.out))}")
    if result.accuracy is not None:
        console.print(escape(result.accuracy_text))
    for note in getattr(result, "notes", ()):
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)


def print_per_group(results: RunResults, console: Any, limit: int = 30) -> None:
    """Within-group runs: each group's test accuracy per model (one model per group)."""
    from rich.table import Table

    shown = [m for m in results.models if m.test and m.test.groups and not m.failed]
    if not shown:
        return
    name = results.group_name or "group"
    table = Table(title=f"accuracy per {escape(name)}, %", title_justify="left",
                  caption=escape(results.extra["protocol"]), caption_justify="left")
    table.add_column(escape(name))
    table.add_column("n", justify="right")
    for m in shown:
        table.add_column(escape(m.label), justify="right")
    per_group = shown[0].test.groups["per_group"]
    for gid in list(per_group)[:limit]:
        table.add_row(escape(gid), f"{per_group[gid]['n_cells']:,}",
                      *(f"{m.test.groups['per_group'][gid]['cell_accuracy'] * 100:.2f}"
                        if gid in m.test.groups["per_group"] else "-" for m in shown))
    console.print(table)
    if len(per_group) > limit:
        console.print(f"  and {len(per_group) - limit} more: see results.json")


def space_table(space: dict[str, Any]) -> Any:
    """A tuning search space as a table (shown before the first trial)."""
    from rich.table import Table

    table = Table(title="search space (before the first trial)", title_justify="left")
    table.add_column("name")
    table.add_column("distribution")
    for name, dist in space.items():
        table.add_row(escape(name), escape(dist.describe()))
    return table


_MARK = {"error": "[red]error[/]", "warning": "[yellow]warning[/]", "info": "[dim]info[/]"}


def show_doctor(result: Any, console: Any) -> None:
    """After ``doctor``: findings ranked, the fixes tried, the final model vs the others."""
    from rich.table import Table

    untrustworthy = [f for f in result.findings
                     if f["severity"] == "error" and f.get("category") == "data"]
    if untrustworthy:
        console.print("\n[red bold]The numbers below cannot be trusted[/]: "
                      + escape("; ".join(f["id"] for f in untrustworthy))
                      + ". Change the data as the findings say; no training fixes this.")
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
    if models:
        print_comparison(models, console, result.unit)
    if final:
        path = escape(str(result.run_dir / final["model_path"]))
        console.print(f"\n[bold]final model[/] {escape(final['label'])} = "
                      f"{escape(final['spec'])}: {path} (cellbench predict uses it)")
    _paths(console, details=result.run_dir / "doctor.json",
           report=result.run_dir / "report.html")
