"""The report's sections that every run has: summary, data, results, groups, confusion
matrices and how to reproduce the run.

Each builder takes a :class:`~cellbench.report.reader.RunView` and returns a
:class:`Section` (or None when the run has nothing to show there). A section's ``context``
holds plain values and figures; its template (``templates/<name>.html.j2``) lays them out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..evaluate.metrics import METRICS
from ..evaluate.results import Comparisons, Estimate, Metrics, ModelResult
from .reader import RunView
from .svg import Interval, bar_figure, groups_figure, heatmap_figure, interval_figure
from .terminal import describe_test_unit

__all__ = ["Section", "confusion", "data", "fmt_ci", "fmt_value", "groups", "headline",
           "off_scale", "ranked", "reproduce", "results", "verdicts"]

NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
         "macro_f1": "macro-F1", "auroc": "AUROC"}
MAX_GROUP_ROWS = 80


@dataclass
class Section:
    """One part of the page: its anchor, heading, template and what the template shows."""

    id: str
    title: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)


def fmt_value(e: Estimate | None, percent: bool = True) -> str:
    """A metric's value: 99.38 (percent) or 0.999."""
    if e is None or e.value is None or not math.isfinite(e.value):
        return "–"
    return f"{e.value * 100:.2f}" if percent else f"{e.value:.3f}"


def fmt_ci(e: Estimate | None, percent: bool = True) -> str:
    """A metric's 95 % CI: 99.23–99.51."""
    if e is None or e.value is None or None in e.ci:
        return ""
    s, d = (100, 2) if percent else (1, 3)
    return f"{e.ci[0] * s:.{d}f}–{e.ci[1] * s:.{d}f}"


def _sort(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.10g}"


def off_scale(values: dict[str, list[float]], baselines: Sequence[str] = ("majority",)
              ) -> set[str]:
    """Baselines so far below the other models that drawing them would squash the scale."""
    others = [v for m, vs in values.items() if m not in baselines for v in vs]
    if not others:
        return set()
    floor = min(others) - max(2 * (max(others) - min(others)), 0.05)
    return {m for m, vs in values.items() if m in baselines and vs and max(vs) < floor}


def ranked(models: Sequence[ModelResult]) -> list[ModelResult]:
    """Models with a test accuracy, best first (a failed run, e.g. diverged, has none)."""
    known = [m for m in models if m.test is not None and m.test.accuracy.known
             and not m.failed]
    return sorted(known, key=lambda m: -m.test.accuracy.value)


def verdicts(comparisons: Comparisons | None) -> list[dict[str, Any]]:
    """Each paired test's verdict, split into its numbers and its conclusion."""
    out = []
    for row in comparisons.rows if comparisons else []:
        head, _, conclusion = row.verdict.partition(" -> ")
        conclusion, bracket, detail = conclusion.partition(" (")
        significant = math.isfinite(row.p_adjusted) and row.p_adjusted < comparisons.alpha
        out.append({"model": row.model, "head": head, "conclusion": conclusion,
                    "detail": bracket.strip() + detail, "significant": significant})
    return out


# ------------------------------------------------------------------------------ summary --


def _pooled(m: ModelResult) -> str:
    return f", pooled over {m.test.pooled_over}" if m.test and m.test.pooled_over else ""


def _compare_lead(run: RunView) -> list[list[tuple[str, bool]]]:
    order = ranked(run.models)
    if not order:
        return [[("No model has a test result in this run.", False)]]
    best, n = order[0], order[0].test.n
    acc = best.test.accuracy
    lead = [[(best.label, True), (f" has the highest test accuracy of the {len(run.models)} "
                                  "models: ", False), (f"{fmt_value(acc)} %", True),
             (f" (95 % CI {fmt_ci(acc)}) on {n:,} test {run.unit}{_pooled(best)}.", False)]]
    if len(order) > 1:
        second = order[1]
        gap = (acc.value - second.test.accuracy.value) * 100
        lead.append([("The runner-up, ", False), (second.label, True),
                     (f", reaches {fmt_value(second.test.accuracy)} %: {gap:.2f} points "
                      "lower.", False)])
    comp = run.comparisons
    if comp and comp.rows:
        second = order[1].label if len(order) > 1 and comp.reference == best.label else None
        lead.append([(_tests_sentence(comp, second), False)])
    return lead


def _tests_sentence(comp: Comparisons, second: str | None) -> str:
    sig = [r for r in comp.rows if math.isfinite(r.p_adjusted) and r.p_adjusted < comp.alpha]
    holm = ", Holm-adjusted" if comp.correction == "holm" else ""
    text = (f"Paired tests against {comp.reference} on {comp.metric.replace('_', ' ')} "
            f"(unit: {describe_test_unit(comp)}; alpha {comp.alpha}{holm}): {len(sig)} of the "
            f"{len(comp.rows)} other models {'differs' if len(sig) == 1 else 'differ'} "
            "significantly.")
    row = comp.row(second) if second else None
    if row is not None:
        p = f"p = {row.p_adjusted:.3g}" if math.isfinite(row.p_adjusted) else "p undefined"
        verdict = "is" if any(r is row for r in sig) else "is not"
        text += (f" The difference between {comp.reference} and {second} {verdict} "
                 f"significant ({p}).")
    return text


def _train_lead(run: RunView) -> list[list[tuple[str, bool]]]:
    t = run.train
    assert t is not None
    test = t.test or Metrics(0)
    lead = [[(t.model, True), (" reached ", False), (f"{fmt_value(test.accuracy)} %", True),
             (f" test accuracy (95 % CI {fmt_ci(test.accuracy)}) on {test.n:,} held-out "
              f"{run.unit}", False)]]
    if t.validation is not None:
        lead[0].append((f"; validation accuracy {fmt_value(t.validation.accuracy)} %.", False))
    else:
        lead[0].append((".", False))
    stop = f"; it stopped because {t.stop_reason}." if t.stop_reason else "."
    if t.epochs:
        lead.append([(f"It trained {t.epochs} epochs and kept the weights of epoch "
                      f"{t.best_epoch}{stop}", False)])
    return lead


def _ablate_lead(run: RunView) -> list[list[tuple[str, bool]]] | None:
    ab = (run.results.extra.get("ablation") if run.results else None) or {}
    rows = ab.get("rows")
    if not rows:
        return None
    alpha = run.comparisons.alpha if run.comparisons else 0.05
    changed = [r for r in rows if "difference" in r]
    sig = [r for r in changed if r.get("p_adjusted", 1) < alpha]
    top = max(rows, key=lambda r: r["mean"])
    lead = [[(f"Ablation of {ab.get('model')} ({len(rows)} configurations, "
              f"{max(r.get('runs') or 1 for r in rows)} runs each): the highest mean "
              "accuracy is ", False), (str(top["config"]), True),
             (f" with {top['mean'] * 100:.2f} %.", False)]]
    if sig:
        parts = "; ".join(f"{r['config']} {r['difference'] * 100:+.2f} points "
                          f"(p = {r['p_adjusted']:.3g})" for r in sig)
        lead.append([(f"{len(sig)} of {len(changed)} changes from the base differ "
                      f"significantly: {parts}.", False)])
    else:
        lead.append([(f"None of the {len(changed)} changes from the base makes a detectable "
                      f"difference (alpha {alpha}, Holm-adjusted).", False)])
    return lead


def _tune_lead(run: RunView) -> list[list[tuple[str, bool]]]:
    t = run.tune
    assert t is not None
    c = t.trials or {}
    best = t.best or {}
    value = best.get("value")
    model = f"Tuning {run.config.train.model}" if run.config else "Tuning"
    lead = [[(f"{model} ran {c.get('complete', 0)} complete trials ({c.get('pruned', 0)} "
              f"pruned, {c.get('failed', 0)} failed); the best reached a validation objective "
              f"of {value:.4f} (trial {best.get('number')})." if value is not None else
              "Tuning completed no trial.", False)]]
    final = {m.label: m for m in run.models}
    if "tuned" in final and "default" in final:
        lead.append([("On the test part, the ", False), ("tuned", True),
                     (f" settings score {fmt_value(final['tuned'].test.accuracy)} % and the ",
                      False), ("default", True),
                     (f" settings {fmt_value(final['default'].test.accuracy)} %.", False)])
    return lead


def headline(run: RunView) -> Section:
    """What is best, by how much, whether that is significant, on which unit."""
    if run.tune is not None:
        lead = _tune_lead(run)
    elif run.train is not None:
        lead = _train_lead(run)
    else:
        lead = (_ablate_lead(run) if run.job == "ablate" else None) or _compare_lead(run)
    order = ranked(run.models)
    groups = (order[0].test.groups or {}) if order else {}
    return Section("summary", "Summary", "headline.html.j2",
                   {"lead": lead, "verdicts": verdicts(run.comparisons),
                    "caution": groups.get("caution")})


# --------------------------------------------------------------------------------- data --


def data(run: RunView) -> Section:
    """Rows or images, features or channels, classes with counts, groups, splits, issues."""
    d = run.data
    if d is None:
        return Section("data", "Data", "data.html.j2", {"missing": True})
    image = d.kind == "image"
    shape = " × ".join(map(str, d.shape)) if d.shape else "–"
    counts = [(str(c), int(d.class_counts.get(str(c), 0))) for c in d.classes]
    total = sum(n for _, n in counts) or 1
    figure = bar_figure([(c, n, "#5B7083") for c, n in counts], f"{run.unit} per class",
                        fmt="{:,.0f}") if counts else None
    splits = [{"name": s.get("name"), "grouped": s.get("grouped"), "train": s.get("train"),
               "val": s.get("val"), "test": s.get("test")} for s in d.splits or []]
    grouped = any(s["grouped"] for s in splits)
    protocol = (f"{len(splits)}-fold cross-validation" if len(splits) > 1 else
                "one train / validation / test split") + (
        f", grouped by {run.group_name} (no group in two parts)" if grouped
        else ", stratified by class, rows at random")
    return Section("data", "Data", "data.html.j2", {
        "missing": False, "d": d, "image": image, "shape": shape, "protocol": protocol,
        "classes": [{"name": c, "n": n, "share": f"{n / total:.1%}"} for c, n in counts],
        "figure": figure, "splits": splits, "n_features": len(d.features or []),
        "issues": d.issues or []})


# ------------------------------------------------------------------------------ results --


def _cells(test: Metrics) -> list[dict[str, str]]:
    out = []
    for name in METRICS:
        e = test.get(name)
        pct = name != "auroc"
        out.append({"value": fmt_value(e, pct), "ci": fmt_ci(e, pct),
                    "sort": _sort(e.value)})
    return out


def _unit_cell(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if metric == "auroc" else f"{value * 100:.2f}"


def _row(run: RunView, m: ModelResult) -> dict[str, Any]:
    test = m.test or Metrics(0)
    acc = (m.across_units or {}).get("accuracy")
    comp = run.comparisons.row(m.label) if run.comparisons else None
    cells = _cells(test)
    if m.failed:  # its numbers mean nothing: shown as failed, the cause under the name
        cells = [{"value": "failed", "ci": "", "sort": ""} for _ in cells]
    return {
        "label": m.label, "colour": run.styles[m.label].colour,
        "spec": (f"failed: {m.failed}" if m.failed else
                 m.spec if m.spec and m.spec != m.label else ""),
        "n_params": m.n_params, "fit": m.fit_seconds, "metrics": cells,
        "spread": f"{acc.mean * 100:.2f} ± {acc.sd * 100:.2f}" if acc else "–",
        "spread_sort": _sort(acc.mean if acc else None), "units": m.units,
        "reference": bool(run.comparisons and run.comparisons.reference == m.label),
        "diff": f"{comp.difference * 100:+.2f}" if comp else "",
        "diff_ci": f"[{comp.ci[0] * 100:+.2f}, {comp.ci[1] * 100:+.2f}]" if comp else "",
        "diff_sort": _sort(comp.difference if comp else None),
        "p": f"{comp.p_adjusted:.3g}" if comp and math.isfinite(comp.p_adjusted) else "",
        "p_sort": _sort(comp.p_adjusted if comp else None),
        "per_unit": [{"seed": u.seed, "split": u.split, "n": u.n,
                      "metrics": [_unit_cell(getattr(u, k), k) for k in METRICS],
                      "fit": u.fit_seconds, "epochs": u.epochs, "best_epoch": u.best_epoch,
                      "stop": u.stop_reason or ""} for u in m.per_unit]}


def results(run: RunView) -> Section:
    """The results table (sortable) and every model's accuracy with its CI."""
    order = ranked(run.models)
    rest = [m for m in run.models if m not in order]
    rows = [_row(run, m) for m in [*order, *rest]]
    figure, off = None, off_scale({m.label: [m.test.accuracy.value] for m in order})
    if len(order) > 1:
        figure = interval_figure(
            [Interval(m.label, m.test.accuracy.value, *m.test.accuracy.ci,
                      run.styles[m.label]) for m in order if m.label not in off],
            "test accuracy (%), 95 % CI")
    first = order[0].test if order else None
    return Section("results", "Results", "results.html.j2", {
        "rows": rows, "figure": figure, "metric_names": [NAMES[k] for k in METRICS],
        "n": first.n if first else None, "pooled": _pooled(order[0]) if order else "",
        "unit": run.unit, "cv": any(r["spread"] != "–" for r in rows),
        "off": [(m.label, fmt_value(m.test.accuracy)) for m in order if m.label in off],
        "reference": run.comparisons.reference if run.comparisons else None})


# ------------------------------------------------------------------------------- groups --


def _group_rows(run: RunView, models: Sequence[ModelResult]) -> list[dict[str, Any]]:
    rows = []
    for m in models:
        g = m.test.groups
        across = g.get("cell_accuracy_across_groups") or {}
        row = {"label": m.label, "colour": run.styles[m.label].colour,
               "n_groups": g.get("n_groups"), "applicable": bool(g.get("applicable"))}
        for k in ("mean", "sd", "min", "max"):
            v = across.get(k)
            row[k] = f"{v * 100:.2f}" if v is not None else "–"
        if row["applicable"]:
            e = Estimate.from_dict(g["accuracy"])
            row.update(accuracy=fmt_value(e), ci=fmt_ci(e),
                       balanced=f"{g.get('balanced_accuracy', math.nan) * 100:.2f}")
        rows.append(row)
    return rows


def groups(run: RunView) -> Section | None:
    """Accuracy within each patient/slide, and the group-level results."""
    models = [m for m in ranked(run.models) if (m.test.groups or {}).get("per_group")]
    if not models:
        return None
    name = run.group_name or "group"
    per_model = {m.label: {g: v["cell_accuracy"] for g, v in m.test.groups["per_group"].items()}
                 for m in models}
    off = off_scale({m: list(acc.values()) for m, acc in per_model.items()})
    per_model = {m: acc for m, acc in per_model.items() if m not in off}
    all_groups = {g for acc in per_model.values() for g in acc}
    shown = all_groups
    if len(all_groups) > MAX_GROUP_ROWS:  # the hardest groups: where a reader looks first
        mean = {g: sum(acc.get(g, 1.0) for acc in per_model.values()) for g in all_groups}
        shown = set(sorted(all_groups, key=lambda g: mean[g])[:MAX_GROUP_ROWS])
    figure = groups_figure({m: {g: v for g, v in acc.items() if g in shown}
                            for m, acc in per_model.items()}, run.styles, name)
    best = models[0].test.groups
    predictions = [{"group": g, **p} for g, p in (best.get("predictions") or {}).items()]
    return Section("groups", f"Accuracy per {name}", "groups.html.j2", {
        "figure": figure, "name": name, "rows": _group_rows(run, models),
        "n_groups": len(all_groups), "n_shown": len(shown), "note": best.get("note"),
        "caution": best.get("caution"), "aggregation": best.get("aggregation"),
        "predictions": predictions, "best": models[0].label, "off": sorted(off)})


# ---------------------------------------------------------------------------- confusion --


def confusion(run: RunView) -> Section | None:
    """Each model's pooled test confusion matrix, with per-class precision and recall."""
    items = []
    for m in [*ranked(run.models)]:
        cm = m.test.confusion_matrix or {}
        if not cm.get("counts"):
            continue
        per_class = [{"label": c.get("label"), "support": c.get("support"),
                      **{k: "–" if c.get(k) is None else f"{c[k] * 100:.1f}"
                         for k in ("precision", "recall", "f1")}}
                     for c in m.test.per_class or []]
        items.append({"label": m.label, "colour": run.styles[m.label].colour,
                      "figure": heatmap_figure(cm["counts"], cm["labels"],
                                               f"confusion matrix of {m.label}",
                                               run.styles[m.label].colour),
                      "per_class": per_class, "pooled": m.test.pooled_over})
    if not items:
        return None
    return Section("confusion", "Confusion matrices", "confusion.html.j2", {"items": items})


# ---------------------------------------------------------------------------- reproduce --


def reproduce(run: RunView) -> Section:
    """The command, configuration, versions, seed, machine and times."""
    inv = run.invocation
    cfg = run.config
    seed = None if cfg is None else {"random_state": cfg.train.random_state,
                                     "seeds": cfg.seeds,
                                     "split_random_state": cfg.split.random_state}
    machine = run.machine or {}
    versions = [(k, machine.get(k)) for k in ("cellbench", "torch", "python")
                if machine.get(k)]
    hardware = [(k, machine.get(k)) for k in ("platform", "threads", "cuda")
                if machine.get(k) not in (None, "")]
    return Section("reproduce", "Reproduce this run", "reproduce.html.j2", {
        "command": inv.get("command_line"), "cwd": inv.get("cwd"), "job": run.job,
        "config_text": run.config_text, "seed": seed, "versions": versions,
        "hardware": hardware, "started": run.started, "finished": run.finished,
        "wall": f"{run.wall_seconds:.1f} s" if run.wall_seconds else None,
        "path": str(run.path)})
