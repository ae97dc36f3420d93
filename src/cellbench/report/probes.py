"""The doctor's probes in the report: loss at initialisation, overfitting one batch, the LR
range test and gradient flow, each described and redrawn as SVG from its result in
``doctor.json`` (the ``to_dict`` of :mod:`cellbench.diagnose.probes`' result types: plain
numbers and lists, read here without importing them).

:func:`probes_context` gives the section's ``probes`` part, with the figures by the path of
the PNG the doctor drew for them (``doctor/lr_range.png``, ``doctor/gradient_flow.png``), so a
finding that names that file shows the same figure, drawn once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from ..evaluate.results import Estimate
from .sections import fmt_value
from .svg import Interval, Series, Style, bar_figure, curves_figure, interval_figure

__all__ = ["finite", "gradient_flow_figures", "lr_range_figure", "number", "positive",
           "probes_context"]

#: marks and reference lines: black, grey and light grey (the models keep their colours)
INK, GREY, LIGHT, RUNNING = "#222222", "#8C8C8C", "#BDBDBD", "#9a9a9a"
TOP = 2.0  # the LR range test's axis ends at this many times the highest starting loss
LR_CAPTION = ("LR range test: the training loss (smoothed) as the learning rate grows each "
              "step, one line per sweep (seed), cut where it leaves the chart (twice its "
              "start: diverged). The suggestion is the geometric mean of the sweeps' steepest "
              "descents; fastai's valley reads the first sweep only.")


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite number (not a bool, None or NaN)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def positive(x: Any) -> bool:
    """Whether ``x`` is a finite number above 0."""
    return finite(x) and x > 0


def number(x: Any, digits: int = 3) -> str:
    """A number to ``digits`` significant figures; '–' when unknown.

    >>> number(0.00159917), number(float("nan")), number(None), number(400)
    ('0.0016', '–', '–', '400')
    """
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else "–"
    return "–" if x is None else str(x)


def _decade(v: float) -> str:
    """An axis value of log10 numbers, written as the number: -3 -> 0.001."""
    return f"{10 ** v:.2g}"


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, Sequence) and i < len(values) else None


# ------------------------------------------------------------------------------ figures --


def lr_range_figure(p: Mapping[str, Any], lr: Any, colour: str) -> Markup | None:
    """Smoothed loss per learning rate of every sweep (log x), with the suggestion, fastai's
    valley and the learning rate in use (``lr``) as vertical lines; None without a sweep."""
    lrs, seeds = p.get("lr") or [], p.get("seeds") or []
    sweeps = [[(math.log10(x), y) for x, y in zip(lrs, loss, strict=False)
               if positive(x) and finite(y)]
              for loss in p.get("centred_loss") or p.get("smooth_loss") or []]
    if not any(sweeps):
        return None
    top = TOP * max(pts[0][1] for pts in sweeps if pts)  # past it, a sweep has diverged
    series, ys = [], []
    for i, pts in enumerate(sweeps):
        pts = list(itertools.takewhile(lambda pt: pt[1] <= top, pts))
        if not pts:
            continue
        ys += [y for _, y in pts]
        seed = f" (seed {seeds[i]})" if i < len(seeds) else ""
        series.append(Series([x for x, _ in pts], [y for _, y in pts], colour, "",
                             0.95 if i == 0 else 0.45, f"sweep {i + 1}{seed}: smoothed loss",
                             1.8 if i == 0 else 1.2))
    legend = [("smoothed loss of each sweep", colour, "")]
    for name, value, mark, dash in (("suggestion", p.get("suggestion"), INK, ""),
                                    ("fastai valley", p.get("valley"), GREY, "6 3"),
                                    ("your learning rate", lr, colour, "2 3")):
        if positive(value):
            x = math.log10(value)
            series.append(Series([x, x], [min(ys), max(ys)], mark, dash, 1.0,
                                 f"{name} {value:.2g}", 1.6))
            legend.append((f"{name} {value:.2g}", mark, dash))
    return curves_figure([("training loss (cross-entropy)", series)], legend,
                         label="LR range test", xlabel="learning rate (log scale)",
                         xfmt=_decade)


def gradient_flow_figures(p: Mapping[str, Any], colour: str) -> list[dict[str, Any]]:
    """The median gradient norm per layer with its range over the steps (log scale), and
    the share of dead units per activation: ``{"svg", "caption"}`` each."""
    rows, silent = [], []
    for i, name in enumerate(p.get("layers") or []):
        kind = _at(p.get("layer_types"), i)
        label = f"{name} · {kind}" if kind else str(name)
        median = _at(p.get("median_grad_norm"), i)
        trace = [v for v in _at(p.get("grad_norm"), i) or [] if positive(v)]
        if not positive(median):
            silent.append(label)
            continue
        rows.append(Interval(label, math.log10(median),
                             math.log10(min(trace)) if trace else None,
                             math.log10(max(trace)) if trace else None, Style(colour),
                             f"{median:.2g}"))
    out = []
    if rows:
        out.append({"svg": interval_figure(rows, "gradient norm per step: median and range "
                                           "(log scale)", scale=1.0, xfmt=_decade),
                    "caption": f"Gradient norm of each layer over the first "
                               f"{len(p.get('steps') or [])} steps, input (top) to output "
                               "(bottom). First / last weight layer: "
                               f"{number(p.get('first_last_grad_ratio'))} (far below 1: "
                               "gradients vanish towards the input)." + (
                                   f" No gradient at all: {', '.join(silent)}."
                                   if silent else "")})
    dead = [(f"{a} · {t}" if (t := _at(p.get("activation_types"), i)) else str(a),
             _at(p.get("median_dead_fraction"), i))
            for i, a in enumerate(p.get("activations") or [])]
    if dead:
        out.append({"svg": bar_figure([(a, d * 100 if finite(d) else 0.0, colour)
                                       for a, d in dead],
                                      "units passing no signal (%), median over the steps",
                                      fmt="{:.0f}", hi=100.0),
                    "caption": "Dead units per activation, input (top) to output (bottom): "
                               "units that pass no signal for any row of a batch."})
    return out


# -------------------------------------------------------------------------- each probe --


def _init(p: Mapping[str, Any], classes: Sequence[Any], colour: str) -> dict[str, Any] | None:
    if not p:
        return None
    loss, log_k = p.get("loss"), p.get("log_k")
    bars = [(name, float(v), c) for name, v, c in (
        ("loss at initialisation", loss, colour),
        (f"ln K (K = {p.get('n_classes')})", log_k, GREY),
        ("prior entropy", p.get("prior_entropy"), LIGHT)) if finite(v)]
    per_class = [{"name": str(_at(classes, i) if _at(classes, i) is not None else i),
                  "prior": f"{prior * 100:.1f}" if finite(prior) else "–",
                  "proba": f"{q * 100:.1f}" if finite(q := _at(p.get("mean_proba"), i))
                  else "–"} for i, prior in enumerate(p.get("prior") or [])]
    return {"loss": number(loss, 4), "log_k": number(log_k, 4),
            "prior_entropy": number(p.get("prior_entropy"), 4),
            "excess": f"{(loss / log_k - 1) * 100:+.1f} %" if finite(loss) and
            positive(log_k) else "–", "logit_std": number(p.get("logit_std")),
            "n_rows": p.get("n_rows"), "per_class": per_class,
            "figure": bar_figure(bars, "cross-entropy (nats)", fmt="{:.3f}") if bars else None}


def _overfit(p: Mapping[str, Any], log_k: Any, colour: str) -> dict[str, Any] | None:
    if not p:
        return None
    loss, eval_loss = p.get("loss") or [], p.get("eval_loss") or []
    acc = [a * 100 if finite(a) else math.nan for a in p.get("eval_accuracy") or []]
    lines = [Series(range(1, len(loss) + 1), loss, RUNNING, "2 3", 1.0,
                    "train mode (dropout on), before the step", 1.2),
             Series(range(1, len(eval_loss) + 1), eval_loss, colour, "", 1.0,
                    "eval mode, after the step", 1.8)]
    legend = [("eval mode, after each step", colour, ""),
              ("train mode (dropout on), before it", RUNNING, "2 3")]
    if positive(log_k):
        lines.append(Series([1, max(len(loss), len(eval_loss), 1)], [log_k, log_k], GREY,
                            "6 3", 1.0, f"ln K = {log_k:.3f}"))
        legend.append(("ln K: a uniform guess", GREY, "6 3"))
    memorised = p.get("memorised_step")
    figure = curves_figure(
        [("loss on the batch", lines), ("accuracy on the batch (%)", [
            Series(range(1, len(acc) + 1), acc, colour, "", 1.0, "eval mode", 1.8)])],
        legend, [memorised] if memorised else [], label="overfitting one batch",
        xlabel="step") if loss or eval_loss else None
    return {"n_rows": p.get("n_rows"), "n_steps": p.get("n_steps"), "steps": len(eval_loss),
            "optimizer": p.get("optimizer"), "lr": number(p.get("lr")),
            "final_accuracy": fmt_value(Estimate(p.get("final_accuracy"))),
            "best_accuracy": fmt_value(Estimate(p.get("best_accuracy"))),
            "final_loss": number(p.get("final_loss")), "memorised": memorised,
            "diverged": bool(p.get("diverged")), "stop": p.get("stop_reason"),
            "figure": figure}


def _cell(x: Any) -> str:
    return ("yes" if x else "no") if isinstance(x, bool) else number(x)


def _lr_range(p: Mapping[str, Any], lr: Any, figure: Markup | None) -> dict[str, Any] | None:
    if not p:
        return None
    keys = ("seeds", "depth", "informative", "suggestions", "valleys", "lr_at_min",
            "stop_reasons")
    sweeps = [{k: _cell(_at(p.get(k), i)) for k in keys}
              for i in range(len(p.get("centred_loss") or p.get("suggestions") or []))]
    return {"suggestion": number(p.get("suggestion")), "valley": number(p.get("valley")),
            "lr": number(lr), "optimizer": p.get("optimizer"), "sweeps": sweeps,
            "informative": sum(bool(i) for i in p.get("informative") or []),
            "range": f"{number(p.get('lr_min'))} to {number(p.get('lr_max'))}",
            "n_steps": p.get("n_steps"),
            "figures": [{"svg": figure, "caption": LR_CAPTION}] if figure is not None else []}


def probes_context(probes: Mapping[str, Any], classes: Sequence[Any], lr: Any,
                   colour: str) -> dict[str, Any]:
    """What the section shows of each probe (None where it did not run), and ``plots``:
    the figures by the path of the doctor's PNG of them.

    ``probes`` is ``doctor.json``'s ``probes``; ``classes`` the class names by code; ``lr``
    the learning rate of your setting; ``colour`` its colour in every figure.
    """
    init = probes.get("loss_at_init") or {}
    log_k = init.get("log_k") or (math.log(len(classes)) if len(classes) > 1 else None)
    flow = probes.get("gradient_flow") or {}
    lr_range = probes.get("lr_range_test") or {}
    lr_figure = lr_range_figure(lr_range, lr, colour) if lr_range else None
    flow_figures = gradient_flow_figures(flow, colour) if flow else []
    plots = {}
    if lr_figure is not None:
        plots["doctor/lr_range.png"] = [{"svg": lr_figure, "caption": LR_CAPTION}]
    if flow_figures:
        plots["doctor/gradient_flow.png"] = flow_figures
    order = probes.get("column_order") or {}
    return {
        "any": bool(probes), "plots": plots,
        "order": {k: [f"{a * 100:.1f}" for a in order.get(k) or [] if finite(a)]
                  for k in ("permuted", "seeds")}
        if order else None,
        "init": _init(init, classes, colour),
        "overfit": _overfit(probes.get("overfit_batch") or {}, log_k, colour),
        "lr": _lr_range(lr_range, lr, lr_figure),
        "flow": {"figures": flow_figures, "ratio": number(flow.get("first_last_grad_ratio")),
                 "nonfinite": bool(flow.get("nonfinite")),
                 "first_nonfinite": flow.get("first_nonfinite_step"),
                 "steps": len(flow.get("steps") or [])} if flow else None}
