"""Figures for the HTML report, drawn as inline SVG from the numbers (no files, no fonts).

Every element is built with :meth:`markupsafe.Markup.format`, which escapes its arguments,
so a class, group or model name is always text inside a figure, never markup. Figures scale
with the page (``viewBox``); text inherits the page's font. Hovering a point shows its
exact value (SVG ``<title>``, no script needed).

>>> fig = interval_figure([Interval("a<b>", 0.8, 0.7, 0.9, Style("#0072B2"))], "accuracy (%)")
>>> "a&lt;b&gt;" in fig and "<script" not in fig
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup

__all__ = ["PALETTE", "Interval", "Series", "Style", "bar_figure", "curves_figure",
           "groups_figure", "heatmap_figure", "interval_figure", "model_styles", "nice_ticks",
           "trials_figure"]

#: Okabe & Ito's colour-blind-safe palette (yellow left out: too pale on white)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
BASELINE = "#8C8C8C"  # the majority-class baseline, in every figure
MARKERS = ("circle", "square", "triangle", "diamond")  # a 2nd cycle of colours gets squares
FONT = 12
INK, GRID, MUTED = "#222", "#e3e3e3", "#666"


@dataclass(frozen=True)
class Style:
    """How one model is drawn in every figure: its colour and marker."""

    colour: str
    marker: str = "circle"


def model_styles(labels: Sequence[str], baselines: Sequence[str] = ("majority",)
                 ) -> dict[str, Style]:
    """A fixed style per model, in the run's order; baselines are grey."""
    styles, k = {}, 0
    for label in labels:
        if label in baselines:
            styles[label] = Style(BASELINE, "circle")
            continue
        styles[label] = Style(PALETTE[k % len(PALETTE)],
                              MARKERS[(k // len(PALETTE)) % len(MARKERS)])
        k += 1
    return styles


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (whole numbers when ``integer``).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(1, 4, integer=True)
    [1, 2, 3, 4]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    if integer:
        step = max(1, round(step))
        return list(range(math.ceil(lo), math.floor(hi) + 1, step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _dark(colour: str, alpha: float) -> bool:
    """Whether ``colour`` at ``alpha`` over white is dark enough for white text."""
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [((alpha * c + 1 - alpha + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] < 0.3


def _short(text: object, limit: int = 26) -> str:
    s = str(text)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _svg(width: float, height: float, label: str, body: Sequence[Markup]) -> Markup:
    return Markup(
        '<svg class="fig" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="{label}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title>'
        '{body}</svg>').format(w=_num(width), h=_num(height), label=label,
                               body=Markup("").join(body))


def _text(x: float, y: float, text: object, anchor: str = "start", size: int = FONT,
          fill: str = INK, extra: str = "") -> Markup:
    return Markup('<text x="{}" y="{}" text-anchor="{}" font-size="{}" fill="{}"{}>{}</text>'
                  ).format(_num(x), _num(y), anchor, size, fill, Markup(extra), text)


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = GRID, width: float = 1,
          dash: str = "") -> Markup:
    return Markup('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}"{}/>'
                  ).format(_num(x1), _num(y1), _num(x2), _num(y2), stroke, width,
                           Markup(' stroke-dasharray="{}"').format(dash) if dash else "")


def _marker(x: float, y: float, style: Style, tip: str, r: float = 4.5) -> Markup:
    if style.marker == "square":
        tag, attrs = "rect", Markup('x="{}" y="{}" width="{s}" height="{s}"').format(
            _num(x - r), _num(y - r), s=_num(2 * r))
    elif style.marker in ("triangle", "diamond"):
        pts = ([(x, y - r * 1.2), (x + r * 1.1, y + r * 0.8), (x - r * 1.1, y + r * 0.8)]
               if style.marker == "triangle" else
               [(x, y - r * 1.3), (x + r, y), (x, y + r * 1.3), (x - r, y)])
        tag, attrs = "polygon", Markup('points="{}"').format(
            " ".join(f"{_num(a)},{_num(b)}" for a, b in pts))
    else:
        tag, attrs = "circle", Markup('cx="{}" cy="{}" r="{}"').format(_num(x), _num(y), _num(r))
    return Markup('<{t} {} fill="{}"><title>{}</title></{t}>').format(
        attrs, style.colour, tip, t=Markup(tag))


@dataclass
class _Frame:
    """A plotting area: data limits mapped onto pixels."""

    left: float
    top: float
    width: float
    height: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return self.left + (v - lo) / ((hi - lo) or 1) * self.width

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return self.top + self.height - (v - lo) / ((hi - lo) or 1) * self.height

    def xaxis(self, ticks: Sequence[float], label: str, fmt: Callable[[float], str]
              ) -> list[Markup]:
        bottom = self.top + self.height
        out = [_line(self.x(t), self.top, self.x(t), bottom) for t in ticks]
        out += [_text(self.x(t), bottom + 15, fmt(t), "middle", 11, MUTED) for t in ticks]
        out.append(_line(self.left, bottom, self.left + self.width, bottom, "#999"))
        out.append(_text(self.left + self.width / 2, bottom + 33, label, "middle"))
        return out

    def yaxis(self, ticks: Sequence[float], label: str, fmt: Callable[[float], str]
              ) -> list[Markup]:
        out = [_line(self.left, self.y(t), self.left + self.width, self.y(t)) for t in ticks]
        out += [_text(self.left - 6, self.y(t) + 4, fmt(t), "end", 11, MUTED) for t in ticks]
        out.append(_line(self.left, self.top, self.left, self.top + self.height, "#999"))
        cx, cy = self.left - 44, self.top + self.height / 2
        out.append(_text(cx, cy, label, "middle",
                         extra=f' transform="rotate(-90 {_num(cx)} {_num(cy)})"'))
        return out


def _limits(values: Sequence[float], pad: float = 0.05, lo: float | None = None,
            hi: float | None = None) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)] or [0.0, 1.0]
    a, b = min(finite), max(finite)
    span = (b - a) or max(abs(b), 1.0) * 0.1
    a, b = a - pad * span, b + pad * span
    return (a if lo is None else max(a, lo), b if hi is None else min(b, hi))


def _fmt(ticks: Sequence[float]) -> Callable[[float], str]:
    """Tick labels with as many decimals as the step needs (2.5 -> one)."""
    step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0)
    digits = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-9 * max(step, 1)),
                  6) if step > 0 else 0
    return lambda v: f"{v:.{digits}f}"


# ------------------------------------------------------------------------------ figures --


@dataclass(frozen=True)
class Interval:
    """One row of an interval figure: a point with its confidence interval."""

    label: str
    value: float
    lo: float | None
    hi: float | None
    style: Style
    note: str = ""  # shown right of the interval


def interval_figure(rows: Sequence[Interval], xlabel: str, zero: float | None = None,
                    scale: float = 100.0, width: int = 680,
                    xfmt: Callable[[float], str] | None = None) -> Markup:
    """Points with their CIs, one row each (model comparisons, ablation effects); ``xfmt``
    writes the axis and hover values (``lambda v: f"{10 ** v:.2g}"`` for log10 values)."""
    rows = [r for r in rows if r.value is not None and math.isfinite(r.value)]
    ends = [v * scale for r in rows for v in (r.value, r.lo, r.hi) if v is not None]
    xlim = _limits([*ends, *([zero * scale] if zero is not None else [])], 0.08)
    row_h, top = 26, 12
    left = 20 + 7 * min(26, max((len(_short(r.label)) for r in rows), default=4))
    frame = _Frame(left, top, width - left - 90, row_h * max(len(rows), 1), xlim, (0, 1))
    ticks = nice_ticks(*xlim)
    body = frame.xaxis(ticks, xlabel, xfmt or _fmt(ticks))
    show = xfmt or (lambda v: f"{v:.2f}")
    if zero is not None:
        body.append(_line(frame.x(zero * scale), top, frame.x(zero * scale),
                          top + frame.height, MUTED, 1.2))
    for i, r in enumerate(rows):
        y = top + row_h * (i + 0.5)
        v = r.value * scale
        tip = f"{r.label}: {show(v)}" + (f" [{show(r.lo * scale)}, {show(r.hi * scale)}]"
                                         if r.lo is not None and r.hi is not None else "")
        body.append(_text(left - 8, y + 4, _short(r.label), "end"))
        if r.lo is not None and r.hi is not None:
            x1, x2 = frame.x(r.lo * scale), frame.x(r.hi * scale)
            body += [_line(x1, y, x2, y, r.style.colour, 2), _line(x1, y - 5, x1, y + 5,
                                                                   r.style.colour, 1.5),
                     _line(x2, y - 5, x2, y + 5, r.style.colour, 1.5)]
        body.append(_marker(frame.x(v), y, r.style, tip))
        body.append(_text(frame.left + frame.width + 6, y + 4, r.note or show(v),
                          size=11, fill=MUTED))
    return _svg(width, top + frame.height + 42, xlabel, body)


@dataclass(frozen=True)
class Series:
    """One line of a line figure."""

    xs: Sequence[float]
    ys: Sequence[float]
    colour: str
    dash: str = ""
    opacity: float = 1.0
    tip: str = ""
    width: float = 1.6


def _downsample(xs: Sequence[float], ys: Sequence[float], limit: int = 120
                ) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False)
             if y is not None and math.isfinite(y)]
    if len(pairs) <= limit:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    keep = sorted({round(i * (len(pairs) - 1) / (limit - 1)) for i in range(limit)})
    return [pairs[i][0] for i in keep], [pairs[i][1] for i in keep]


def _panel(frame: _Frame, series: Sequence[Series], xlabel: str, ylabel: str,
           marks: Sequence[float], xfmt: Callable[[float], str] | None = None
           ) -> list[Markup]:
    xt, yt = nice_ticks(*frame.xlim, 6, integer=True), nice_ticks(*frame.ylim, 5)
    body = frame.xaxis([t for t in xt if frame.xlim[0] <= t <= frame.xlim[1]], xlabel,
                       xfmt or (lambda v: f"{v:.0f}")) + frame.yaxis(
        [t for t in yt if frame.ylim[0] <= t <= frame.ylim[1]], ylabel, _fmt(yt))
    for m in marks:
        body.append(_line(frame.x(m), frame.top, frame.x(m), frame.top + frame.height,
                          MUTED, 0.8, "2 3"))
    for s in series:
        xs, ys = _downsample(s.xs, s.ys)
        if not xs:
            continue
        points = " ".join(f"{_num(frame.x(x))},{_num(frame.y(y))}" for x, y in
                          zip(xs, ys, strict=True))
        body.append(Markup('<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" '
                           'stroke-opacity="{}"{}><title>{}</title></polyline>').format(
            points, s.colour, s.width, s.opacity,
            Markup(' stroke-dasharray="{}"').format(s.dash) if s.dash else "", s.tip))
    return body


def curves_figure(panels: Sequence[tuple[str, Sequence[Series]]], legend: Sequence[
        tuple[str, str, str]], marks: Sequence[float] = (), label: str = "learning curves",
        xlabel: str = "epoch", xfmt: Callable[[float], str] | None = None) -> Markup:
    """Side-by-side line panels sharing the x axis (whole-number ticks, written by
    ``xfmt``: log10 values as ``10 ** v``); ``legend`` is (text, colour, dash), wrapped."""
    pw, ph, gap = 320, 190, 78
    width = 62 + len(panels) * (pw + gap)
    xs = [x for _, ss in panels for s in ss for x in s.xs]
    xlim = (min(xs, default=1), max(xs, default=2))
    if xlim[1] <= xlim[0]:
        xlim = (xlim[0] - 1, xlim[0] + 1)
    body: list[Markup] = []
    for i, (ylabel, series) in enumerate(panels):
        ys = [y for s in series for y in s.ys]
        frame = _Frame(62 + i * (pw + gap), 10, pw, ph, xlim, _limits(ys))
        body += _panel(frame, series, xlabel, ylabel, marks, xfmt)
    y = ph + 64
    x = 62
    for text, colour, dash in legend:
        if x + 44 + 6.2 * len(text) > width and x > 62:
            x, y = 62, y + 18
        body.append(_line(x, y - 4, x + 26, y - 4, colour, 2, dash))
        body.append(_text(x + 32, y, text, size=11))
        x += 44 + 6.2 * len(text)
    return _svg(width, y + 10, label, body)


def heatmap_figure(counts: Sequence[Sequence[int]], labels: Sequence[object], title: str,
                   colour: str = "#0072B2") -> Markup:
    """Confusion matrix: colour is the fraction of the true class, text the count."""
    k = len(labels)
    cell = max(14, min(54, 360 // max(k, 1)))
    names = [_short(lab, 18) for lab in labels]
    pad = 16 + 6.5 * max((len(n) for n in names), default=2)
    left, top = pad + 22, 26
    body = [_text(left + k * cell / 2, 14, "predicted", "middle", 11, MUTED),
            _text(12, top + k * cell / 2, "true", "middle", 11, MUTED,
                  f' transform="rotate(-90 12 {_num(top + k * cell / 2)})"')]
    for i, row in enumerate(counts):
        total = max(sum(row), 1)
        body.append(_text(left - 6, top + (i + 0.5) * cell + 4, names[i], "end", 11))
        for j, c in enumerate(row):
            frac = c / total
            tip = f"true {labels[i]}, predicted {labels[j]}: {c} ({frac:.1%} of the true class)"
            body.append(Markup('<rect x="{}" y="{}" width="{c}" height="{c}" fill="{}" '
                               'fill-opacity="{}" stroke="#fff"><title>{}</title></rect>'
                               ).format(_num(left + j * cell), _num(top + i * cell), colour,
                                        f"{0.04 + 0.96 * frac:.3f}", tip, c=cell))
            if cell >= 26:
                body.append(_text(left + (j + 0.5) * cell, top + (i + 0.5) * cell + 4,
                                  c, "middle", 10 if cell < 40 else 11,
                                  "#fff" if _dark(colour, 0.04 + 0.96 * frac) else INK))
    bottom = top + k * cell
    for j, name in enumerate(names):
        x = left + (j + 0.5) * cell
        body.append(_text(x, bottom + 10, name, "end", 11,
                          extra=f' transform="rotate(-45 {_num(x)} {_num(bottom + 10)})"'))
    return _svg(left + k * cell + 10, bottom + pad, title, body)


def bar_figure(items: Sequence[tuple[str, float, str]], xlabel: str, fmt: str = "{:.2f}",
               width: int = 560, hi: float | None = None) -> Markup:
    """Horizontal bars (class counts, parameter importances): (label, value, colour); the
    axis runs from 0 to ``hi`` (the largest value when None)."""
    left = 20 + 7 * min(26, max((len(_short(n)) for n, _, _ in items), default=4))
    row_h, top = 22, 6
    hi = hi or max((v for _, v, _ in items), default=1.0) or 1.0
    frame = _Frame(left, top, width - left - 70, row_h * max(len(items), 1), (0, hi), (0, 1))
    ticks = nice_ticks(0, hi, 4)
    body = frame.xaxis(ticks, xlabel, _fmt(ticks))
    for i, (name, value, colour) in enumerate(items):
        y = top + i * row_h
        body.append(_text(left - 8, y + row_h / 2 + 4, _short(name), "end"))
        body.append(Markup('<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                           '<title>{}: {}</title></rect>').format(
            _num(left), _num(y + 3), _num(max(frame.x(value) - left, 0.5)), row_h - 6,
            colour, name, fmt.format(value)))
        body.append(_text(frame.x(value) + 5, y + row_h / 2 + 4, fmt.format(value), size=11,
                          fill=MUTED))
    return _svg(width, top + frame.height + 42, xlabel, body)


def _legend(labels: Sequence[str], styles: Mapping[str, Style], width: float
            ) -> tuple[list[Markup], float]:
    """A marker and a name per model, wrapped into rows; returns the height it takes."""
    out, x, y = [], 12.0, 14.0
    for label in labels:
        step = 26 + 6.6 * len(_short(label))
        if x + step > width and x > 12:
            x, y = 12.0, y + 18
        out += [_marker(x + 4, y - 4, styles[label], label, 4), _text(x + 13, y, _short(label),
                                                                       size=11)]
        x += step
    return out, y + 14


def groups_figure(per_model: Mapping[str, Mapping[str, float]], styles: Mapping[str, Style],
                  group_name: str, width: int = 680) -> Markup:
    """Cell accuracy per group (patient/slide): one row per group, one marker per model."""
    groups = sorted({g for acc in per_model.values() for g in acc})
    values = [v * 100 for acc in per_model.values() for v in acc.values()]
    xlim = _limits(values, 0.06, hi=100.0 + 1e-9)
    legend, top = _legend(list(per_model), styles, width)
    row_h = 20
    left = 20 + 7 * min(26, max((len(_short(g)) for g in groups), default=4))
    frame = _Frame(left, top, width - left - 20, row_h * max(len(groups), 1), xlim, (0, 1))
    ticks = nice_ticks(*xlim)
    body = legend + frame.xaxis(ticks, f"cell accuracy within each {group_name} (%)",
                                _fmt(ticks))
    for i, g in enumerate(groups):
        y = top + row_h * (i + 0.5)
        body.append(_text(left - 8, y + 4, _short(g), "end", 11))
        for model, acc in per_model.items():
            if g in acc:
                body.append(_marker(frame.x(acc[g] * 100), y, styles[model],
                                    f"{model}, {group_name} {g}: {acc[g]:.2%}", 4))
    return _svg(width, top + frame.height + 42, f"accuracy per {group_name}", body)


def trials_figure(complete: Sequence[tuple[int, float]], pruned: Sequence[tuple[int, float]],
                  ylabel: str, colour: str = "#0072B2") -> Markup:
    """Optimisation history: each trial's objective, the best so far, pruned trials."""
    pts = [*complete, *pruned]
    frame = _Frame(62, 10, 560, 220, _limits([p[0] for p in pts], 0.03),
                   _limits([p[1] for p in pts]))
    xt, yt = nice_ticks(*frame.xlim, 6, integer=True), nice_ticks(*frame.ylim, 5)
    body = frame.xaxis([t for t in xt if frame.xlim[0] <= t <= frame.xlim[1]], "trial",
                       lambda v: f"{v:.0f}")
    body += frame.yaxis([t for t in yt if frame.ylim[0] <= t <= frame.ylim[1]], ylabel,
                        _fmt(yt))
    best, steps = -math.inf, []
    for n, v in sorted(complete):
        best = max(best, v)
        steps.append((n, best))
    if steps:
        points = " ".join(f"{_num(frame.x(n))},{_num(frame.y(v))}" for n, v in steps)
        body.append(Markup('<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6">'
                           '<title>best so far</title></polyline>').format(points, "#D55E00"))
    for n, v in complete:
        body.append(_marker(frame.x(n), frame.y(v), Style(colour), f"trial {n}: {v:.4f}", 3.5))
    for n, v in pruned:
        body.append(_text(frame.x(n), frame.y(v) + 4, "×", "middle", 12, MUTED))
    y = 10 + 220 + 58
    legend = [_marker(70, y - 4, Style(colour), "complete", 3.5),
              _text(80, y, "complete trial", size=11),
              _line(190, y - 4, 216, y - 4, "#D55E00", 2), _text(222, y, "best so far", size=11),
              _text(320, y, "×", "middle", 12, MUTED),
              _text(330, y, "pruned (last reported value)", size=11)]
    return _svg(680, y + 10, "optimisation history", body + legend)
