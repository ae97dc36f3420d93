"""The ``doctor`` section: what the doctor found, most likely cause first, with each
finding's numbers and plots; the fixes it tested; the final model against the baselines; and
the probes (loss at initialisation, one batch, LR range test, gradient flow).

Everything comes from ``doctor.json`` (:class:`~cellbench.evaluate.results.DoctorResults`,
found as ``run.record``) and the files it names. A finding's plots are redrawn as SVG from
the numbers where the run directory holds them (the LR range test and gradient flow from
``probes``, the models compared, a unit's learning curves); any other PNG it names is
embedded as a ``data:`` URI, and only from inside the run directory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..evaluate.metrics import METRICS
from ..evaluate.results import DoctorResults, Estimate, Metrics
from ..exceptions import CellbenchError
from ..models import MODELS
from .probes import finite, number, probes_context
from .reader import RunView
from .sections import NAMES, Section, fmt_ci, fmt_value, ranked
from .svg import Interval, Style, interval_figure
from .training import model_curves

__all__ = ["doctor"]

SEVERITIES = ("error", "warning", "info")
MAX_PNG = 4_000_000  # bytes: a larger file named by doctor.json is not embedded
MAX_ITEMS = 8  # list entries shown in a finding's evidence
MAX_TEXT = 320  # characters of one evidence value


# ------------------------------------------------------------------------------ numbers --


def _points(x: Any) -> str:
    return f"{x * 100:+.2f}" if finite(x) else "–"


def _points_ci(ci: Any) -> str:
    if not isinstance(ci, Sequence) or len(ci) != 2 or not all(map(finite, ci)):
        return ""
    return f"[{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"


def _p(p: Any) -> str:
    return f"{p:.3g}" if finite(p) else "–"


def _compact(value: Any, depth: int = 0) -> str:
    """A finding's evidence value in one short line: 3 significant figures, lists cut."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{str(k).replace('_', ' ')} {_compact(v, depth + 1)}"
                         for k, v in value.items())
    if isinstance(value, list | tuple):
        shown = [_compact(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            shown.append(f"… ({len(value)} in all)")
        if any(isinstance(v, Mapping) for v in value):
            return "; ".join(shown)
        return "[" + ", ".join(shown) + "]" if len(value) != 1 or depth else shown[0]
    text = number(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


# ------------------------------------------------------------------------------ figures --


def _png(root: Path, rel: str) -> str | None:
    """``root/rel`` as a ``data:`` URI when it is a PNG file inside ``root``, else None."""
    try:
        path = (root / rel).resolve()
        if (not path.is_relative_to(root.resolve()) or not path.is_file()
                or path.stat().st_size > MAX_PNG):
            return None
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _models_figure(run: RunView) -> Markup | None:
    order = ranked(run.models)
    if len(order) < 2:
        return None
    return interval_figure([Interval(m.label, m.test.accuracy.value, *m.test.accuracy.ci,
                                     run.styles[m.label]) for m in order],
                           "test accuracy (%), 95 % CI")


def _known_plots(run: RunView, probes: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The plots the doctor writes, redrawn from ``doctor.json`` (by their path)."""
    out = dict(probes["plots"])
    models = _models_figure(run)
    if models is not None:
        out["doctor/models.png"] = [{"svg": models, "caption": "Test accuracy of your setting,"
                                     " the baselines and the fixes, with 95 % CIs."}]
    return out


def _plots(run: RunView, known: Mapping[str, list[dict[str, Any]]], paths: Sequence[str]
           ) -> list[dict[str, Any]]:
    """A finding's plots: redrawn where known, a unit's curves from its history, else the
    PNG itself."""
    out = []
    for path in paths:
        path = str(path)
        if path in known:
            out += [{**fig, "path": path} for fig in known[path]]
            continue
        parts = Path(path).parts
        if len(parts) == 3 and parts[0] == "units" and parts[2] == "curves.png":
            models = sorted((m for m in run.models if m.slug == parts[1]),
                            key=lambda m: m.label != "yours")
            item = model_curves(run, models[0]) if models else None
            if item is not None:
                out.append({"svg": item["figure"], "path": path, "caption": (
                    f"Learning curves of {item['label']} ({item['n']} runs): validation in "
                    "its colour, the eval-mode train curve dashed, the running train curve "
                    "(dropout on) dotted.")})
                continue
        out.append({"svg": None, "png": _png(run.path, path), "path": path,
                    "caption": f"{Path(path).name} from the run directory"})
    return out


# ----------------------------------------------------------------------------- findings --


def _colour(run: RunView, label: str) -> str:
    return run.styles[label].colour if label in run.styles else "#0072B2"


def _lr(rec: DoctorResults) -> Any:
    return ((rec.setting or {}).get("train") or {}).get("lr")


def _tested(t: Any) -> dict[str, Any] | None:
    if not isinstance(t, Mapping) or not t:
        return None
    metric = t.get("metric") or "accuracy"
    return {"label": t.get("label"), "metric": NAMES.get(metric, metric),
            "diff": _points(t.get("difference")), "ci": _points_ci(t.get("ci")),
            "p": _p(t.get("p_adjusted")), "accepted": bool(t.get("accepted"))}


def _finding(run: RunView, known: Mapping[str, Any], f: Mapping[str, Any]) -> dict[str, Any]:
    evidence = f.get("evidence") or {}
    return {"id": str(f.get("id")), "severity": f.get("severity") or "info",
            "category": f.get("category") or "", "message": str(f.get("message") or ""),
            "advice": f.get("advice") or "", "fix": f.get("fix"),
            "evidence": [(str(k).replace("_", " "), _compact(v)) for k, v in evidence.items()
                         if k not in ("fix_tested", "test_fix")],  # shown below / internal
            "tested": _tested(evidence.get("fix_tested")),
            "plots": _plots(run, known, f.get("plots") or [])}


def _counts(findings: Sequence[Mapping[str, Any]]) -> str:
    n = {s: sum(f.get("severity") == s for f in findings) for s in SEVERITIES}
    parts = [f"{n['error']} error{'s' if n['error'] != 1 else ''}",
             f"{n['warning']} warning{'s' if n['warning'] != 1 else ''}",
             f"{n['info']} for information"]
    return f"{parts[0]}, {parts[1]} and {parts[2]}"


def _lead(run: RunView, rec: DoctorResults) -> list[list[tuple[str, bool]]]:
    """The answer in words: the most likely cause, what the fixes did, the final model."""
    findings = rec.findings
    top = findings[0] if findings else None
    if top is not None and top.get("severity") in ("error", "warning"):
        lead = [[("The most likely cause, ", False), (str(top.get("id")), True),
                 (f" ({top.get('severity')}): {str(top.get('message')).rstrip('.')}.", False)]]
        if len(findings) > 1:
            lead.append([(f"{len(findings)} findings in all ({_counts(findings)}), most "
                          "likely cause first.", False)])
    else:
        lead = [[("No problem found", True), (
            ": the data rules, probes and training rules raised no finding." if not findings
            else f": the {len(findings)} finding{'s are' if len(findings) > 1 else ' is'} "
                 "information only.", False)]]
    helped = [f for f in rec.fixes if f.get("accepted")]
    if rec.fixes:
        tested = f"{len(rec.fixes)} fix{'es' if len(rec.fixes) > 1 else ''} tested against " \
                 "your setting (paired tests, Holm-adjusted): "
        lead.append([(tested + ("; ".join(
            f"{f.get('label')} helped ({_points(f.get('difference'))} points, p = "
            f"{_p(f.get('p_adjusted'))})" for f in helped) or "none helped measurably") + ".",
                      False)])
    if rec.not_run:
        lead.append([(f"{len(rec.not_run)} planned step{'s' if len(rec.not_run) > 1 else ''} "
                      "did not run (listed below).", False)])
    final = _final_sentence(run, rec)
    return lead + ([final] if final else [])


def _final_sentence(run: RunView, rec: DoctorResults) -> list[tuple[str, bool]] | None:
    final = rec.final or {}
    if not final:
        return None
    acc = Estimate.from_dict(((final.get("test") or {}).get("accuracy")) or {"value": None})
    yours = next((m for m in run.models if m.label == "yours" and m.test), None)
    path = final.get("model_path") or "final/model.pt"
    if final.get("label") == "yours":
        return [("No fix helped, so the final model is your setting (", False),
                (f"{fmt_value(acc)} %", True), (f" test accuracy), saved as {path}.", False)]
    versus = f" against {fmt_value(yours.test.accuracy)} % for your setting" if yours else ""
    return [("The final model, ", False), (str(final.get("label")), True),
            (f" ({final.get('spec')}), reaches ", False), (f"{fmt_value(acc)} %", True),
            (f" test accuracy (95 % CI {fmt_ci(acc)}){versus}; it is saved as {path} "
             "(cellbench predict uses it).", False)]


# ------------------------------------------------------------------------ fixes, final --


def _fixes(run: RunView, rec: DoctorResults) -> dict[str, Any]:
    rows, effects = [], []
    for f in rec.fixes:
        label = str(f.get("label"))
        acc = Estimate.from_dict(f["accuracy"]) if f.get("accuracy") else None
        metric = f.get("metric") or "accuracy"
        style = run.styles.get(label, Style("#0072B2"))
        rows.append({"label": label, "colour": style.colour, "fix": f.get("fix"),
                     "spec": f.get("spec") or "", "findings": f.get("findings") or [],
                     "metric": NAMES.get(metric, metric), "accuracy": fmt_value(acc),
                     "accuracy_ci": fmt_ci(acc), "diff": _points(f.get("difference")),
                     "diff_ci": _points_ci(f.get("ci")), "p": _p(f.get("p_adjusted")),
                     "accepted": bool(f.get("accepted")), "verdict": f.get("verdict") or ""})
        ci = f.get("ci") if _points_ci(f.get("ci")) else (None, None)
        if finite(f.get("difference")):
            effects.append(Interval(label, f["difference"], ci[0], ci[1], style,
                                    f"p = {_p(f.get('p_adjusted'))}"))
    figure = interval_figure(effects, "difference from your setting (points), 95 % CI",
                             zero=0.0) if effects else None
    return {"rows": rows, "figure": figure,
            "not_run": [{"what": str(n.get("what")), "why": str(n.get("why"))}
                        for n in rec.not_run]}


def _role(label: str, name: str) -> str:
    if label == "yours":
        return "your setting"
    try:
        return "reference network" if MODELS.get(name).family == "nn" else "baseline"
    except CellbenchError:  # a model of another version: still a comparison
        return "baseline"


def _metric_cells(test: Metrics | None) -> list[dict[str, str]]:
    test = test or Metrics(0)
    return [{"value": fmt_value(test.get(k), k != "auroc"),
             "ci": fmt_ci(test.get(k), k != "auroc")} for k in METRICS]


def _final(run: RunView, rec: DoctorResults) -> dict[str, Any] | None:
    """The final model's test metrics beside your setting's and the baselines'."""
    final = rec.final or {}
    if not final:
        return None
    label = str(final.get("label"))
    try:
        test = Metrics.from_dict(final["test"]) if final.get("test") else None
    except (TypeError, ValueError, KeyError):
        test = None
    rows = [{"label": label, "colour": _colour(run, label), "spec": final.get("spec") or "",
             "role": "final model" + (" (your setting)" if label == "yours" else ""),
             "metrics": _metric_cells(test), "final": True}]
    fixes = {str(f.get("label")) for f in rec.fixes}
    for m in ranked(run.models):
        if m.label != label and m.label not in fixes:
            rows.append({"label": m.label, "colour": _colour(run, m.label),
                         "spec": m.spec if m.spec != m.label else "",
                         "role": _role(m.label, m.name), "metrics": _metric_cells(m.test),
                         "final": False})
    path = final.get("model_path") or "final/model.pt"
    return {"label": label, "spec": final.get("spec"), "path": path,
            "exists": (run.path / path).is_file(), "unit": final.get("unit"), "rows": rows,
            "metric_names": [NAMES[k] for k in METRICS], "n": test.n if test else None}


# ------------------------------------------------------------------------------ section --


def doctor(run: RunView) -> Section | None:
    """The doctor's findings, most likely cause first, the fixes it tested, the final model
    and the probes; None for any other run."""
    rec = run.record
    if not isinstance(rec, DoctorResults):
        return None
    probes = probes_context(rec.probes or {}, rec.data.classes if rec.data else [], _lr(rec),
                            _colour(run, "yours"))
    known = _known_plots(run, probes)
    return Section("doctor", "Diagnosis", "doctor.html.j2", {
        "lead": _lead(run, rec), "spec": (rec.setting or {}).get("spec"),
        "findings": [_finding(run, known, f) for f in rec.findings],
        "fixes": _fixes(run, rec), "final": _final(run, rec), "probes": probes,
        "unit": run.unit})
