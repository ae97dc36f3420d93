"""The report's sections on how the models trained and were chosen: learning curves, the
ablation's factor effects and the tuning study (optimisation history, importances)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .._spaces import space_from_dict
from ..evaluate.results import ModelResult
from ..exceptions import CellbenchError
from .reader import RunView, UnitHistory
from .sections import Section, verdicts
from .svg import (
    Interval,
    Series,
    Style,
    bar_figure,
    curves_figure,
    interval_figure,
    trials_figure,
)

__all__ = ["ablation", "curves", "load_study", "model_curves", "tune"]

#: how each curve of a unit is drawn: validation in the model's colour, train curves grey
CURVES = (("valid", "validation", "", 1.8), ("train", "train, eval mode", "6 3", 1.4),
          ("running", "train, running (dropout / augmentation on)", "2 3", 1.2))
GREYS = {"train": "#3d3d3d", "running": "#9a9a9a"}


def _series(histories: list[UnitHistory], metric: str, colour: str) -> list[Series]:
    out = []
    opacity = 0.95 if len(histories) == 1 else 0.6
    scale = 100.0 if metric == "accuracy" else 1.0
    for h in histories:
        xs = [r.get("epoch", i + 1) for i, r in enumerate(h.records)]
        for split, name, dash, width in reversed(CURVES):  # validation drawn last, on top
            key = f"{split}_{metric}"
            ys = [r.get(key, math.nan) * scale for r in h.records]
            if all(math.isnan(y) for y in ys):
                continue
            out.append(Series(xs, ys, GREYS.get(split, colour), dash, opacity,
                              f"{h.label}: {name}", width))
    return out


def model_curves(run: RunView, m: ModelResult) -> dict[str, Any] | None:
    """One model's loss and accuracy per epoch, every seed and fold in one figure (with its
    label, colour, number of runs and kept epochs); None when no unit kept a history."""
    histories = run.histories(m)
    if not histories:
        return None
    colour = run.styles[m.label].colour
    legend = [(name, GREYS.get(split, colour), dash) for split, name, dash, _ in CURVES]
    marks = sorted({h.best_epoch for h in histories if h.best_epoch})
    figure = curves_figure(
        [("loss (cross-entropy)", _series(histories, "loss", colour)),
         ("accuracy (%)", _series(histories, "accuracy", colour))], legend, marks,
        label=f"learning curves of {m.label}")
    return {"label": m.label, "colour": colour, "figure": figure, "n": len(histories),
            "marks": marks}


def curves(run: RunView) -> Section | None:
    """Per model: loss and accuracy per epoch of every seed and fold, the eval-mode train
    curve beside the running one."""
    items, without = [], []
    for m in run.models:
        item = model_curves(run, m)
        if item is None:
            without.append(m.label)
        else:
            items.append(item)
    if not items:
        return None
    return Section("curves", "Learning curves", "curves.html.j2",
                   {"items": items, "without": without})


# ------------------------------------------------------------------------------ ablation --


def ablation(run: RunView) -> Section | None:
    """Each configuration against the base: paired differences with their CIs."""
    ab = (run.results.extra.get("ablation") if run.results else None) or {}
    if not ab:
        return None
    rows = ab.get("rows") or []
    table, effects = [], []
    for r in rows:
        style = run.styles.get(r["config"], Style("#0072B2"))
        diff = r.get("difference")
        table.append({
            "config": r["config"], "colour": style.colour,
            "levels": ", ".join(f"{k}={v}" for k, v in (r.get("levels") or {}).items()),
            "mean": f"{r['mean'] * 100:.2f}" + (f" ± {r['sd'] * 100:.2f}"
                                                if r.get("sd") is not None else ""),
            "mean_sort": r["mean"], "runs": r.get("runs"),
            "diff": "reference" if diff is None else
            f"{diff * 100:+.2f} [{r['ci'][0] * 100:+.2f}, {r['ci'][1] * 100:+.2f}]",
            "diff_sort": "" if diff is None else diff,
            "p": f"{r['p_adjusted']:.3g}" if "p_adjusted" in r else "",
            "verdict": (r.get("verdict") or "").partition(" -> ")[2]})
        if diff is not None:
            effects.append(Interval(r["config"], diff, r["ci"][0], r["ci"][1], style,
                                    f"p = {r.get('p_adjusted', math.nan):.2g}"))
    figure = interval_figure(effects, "difference from the base (accuracy points), 95 % CI",
                             zero=0.0) if effects else None
    return Section("ablation", "Factor effects", "ablation.html.j2", {
        "model": ab.get("model"), "design": ab.get("design"),
        "factors": ab.get("factors") or [], "rows": table, "figure": figure,
        "verdicts": verdicts(run.comparisons)})


# ---------------------------------------------------------------------------------- tune --


def load_study(path: Path, name: str | None) -> Any:
    """The Optuna study in a run's journal file, read only; None when it cannot be read."""
    if not path.is_file() or not name:
        return None
    try:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        return optuna.load_study(study_name=name, storage=storage)
    except Exception:  # a damaged or foreign journal: report without it
        return None


def _history(study: Any, metric: str) -> Any:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [(t.number, t.value) for t in trials
                if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values]
    if not complete and not pruned:
        return None
    return trials_figure(complete, pruned, f"validation {metric}")


def _importances(run: RunView, study: Any) -> dict[str, float]:
    saved = run.tune.importances
    if saved or study is None or "importances" in run.tune.to_dict():
        return saved or {}
    try:  # an older tune_results.json without them: Optuna's own evaluator, on the study
        import optuna

        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _space(space: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        return [(k, d.describe()) for k, d in space_from_dict(space).items()]
    except CellbenchError:
        return [(k, str(v)) for k, v in space.items()]


def tune(run: RunView) -> Section | None:
    """The study: trials, optimisation history, parameter importances, best settings."""
    t = run.tune
    if t is None:
        return None
    study = load_study(run.path / "study.journal", t.study)
    metric = ((study.user_attrs.get("cellbench_tune") or {}).get("metric", "objective")
              if study is not None else "objective")
    importances = _importances(run, study)
    figure = bar_figure([(k, v, "#0072B2") for k, v in importances.items()],
                        "importance (fANOVA, share of the objective's variance)"
                        ) if importances else None
    best = t.best or {}
    return Section("tune", "Tuning study", "tune.html.j2", {
        "study": t.study, "trials": t.trials or {}, "metric": metric,
        "seconds": t.tuning_seconds_this_process,
        "history": _history(study, metric) if study is not None else None,
        "journal": study is not None, "importances": figure,
        "best": {"number": best.get("number"), "value": best.get("value"),
                 "params": [(k, f"{v:.4g}" if isinstance(v, float) else str(v))
                            for k, v in (best.get("params") or {}).items()]},
        "space": _space(t.space or {}), "verdicts": verdicts(run.comparisons)})
