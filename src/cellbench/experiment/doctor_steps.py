"""The doctor's steps, each small: the user's setting, the budget, the models it is measured
against, the probes (stored and reused), the evidence the rules read, and a fix experiment.

:mod:`cellbench.experiment.doctor` runs them in order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._config import DataConfig, RunConfig, TrainConfig
from .._utils import atomic_write_json, to_builtin
from ..data.dataset import Dataset
from ..data.splits import Split
from ..diagnose.fixes import Change, propose
from ..diagnose.rules import Evidence
from ..evaluate.compare import Run, compare_to_reference
from ..evaluate.results import Comparisons, ModelResult, UnitResult
from ..models import MODELS, TRAIN_SETTINGS, ModelChoice
from .grid import Display, plan_units, pool, run_grid, runs_of

__all__ = [
    "BASELINES",
    "Budget",
    "Measured",
    "Setting",
    "canonical",
    "confirm_groups",
    "evidence_for",
    "histories_of",
    "measure",
    "paired_against",
    "probes_for",
    "reference_choices",
    "split_setting",
    "variant",
]

#: what every network is measured against, per data kind (the reference network is added)
BASELINES = {"table": ("majority", "logreg", "lda", "lightgbm"),
             "image": ("majority", "logreg", "image-lgbm")}
_JOB_SETTINGS = ("max_epochs", "patience")  # stay with the job, not the model choice
MIN_GROUPS = 8  # test groups from which the doctor's paired tests use them as the unit


@dataclass(frozen=True)
class Setting:
    """The user's setting split into the job's base training config and a model choice."""

    base: TrainConfig
    user: ModelChoice


def canonical(choice: ModelChoice, label: str | None = None) -> ModelChoice:
    """``choice`` with a spec written from its settings, so equal settings share units."""
    args = {**choice.kwargs, **choice.train}
    spec = choice.name + (f"({','.join(f'{k}={_spec_value(v)}' for k, v in sorted(args.items()))})"
                          if args else "")
    return ModelChoice(label or choice.label, choice.name, dict(choice.kwargs),
                       dict(choice.train), spec)


def _spec_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "/".join(_spec_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def split_setting(train: TrainConfig) -> Setting:
    """The base (job-level settings, training settings at their defaults) and the user's
    choice carrying every training setting that differs from the default."""
    defaults = TrainConfig()
    own = [k for k in TRAIN_SETTINGS if k not in _JOB_SETTINGS]
    changed = {k: getattr(train, k) for k in own if getattr(train, k) != getattr(defaults, k)}
    base = train.replace(model_kwargs={}, **{k: getattr(defaults, k) for k in own})
    user = ModelChoice("yours", train.model, dict(train.model_kwargs), to_builtin(changed))
    return Setting(base, canonical(user))


class Budget:
    """Wall-clock budget of the whole job; estimates whether more work fits."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    @property
    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.perf_counter() - self.start)

    def fits(self, estimate: float) -> bool:
        return estimate <= self.left


@dataclass
class Measured:
    """Models trained on the same units, pooled, with their runs for paired tests."""

    models: list[ModelResult] = field(default_factory=list)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    units: dict[str, list[UnitResult]] = field(default_factory=dict)

    def add(self, other: Measured) -> None:
        self.models += other.models
        self.runs.update(other.runs)
        self.units.update(other.units)

    def seconds_per_unit(self, label: str) -> float:
        units = self.units.get(label) or []
        return float(np.mean([u.fit_seconds + u.predict_seconds for u in units])) \
            if units else 1.0


def measure(cfg: RunConfig, choices: Sequence[ModelChoice], ds: Dataset,
            splits: Sequence[Split], root: Path, data_cfg: DataConfig,
            display: Display | None) -> Measured:
    """Train ``choices`` on every seed x split (finished units reused) and pool each."""
    units = plan_units(cfg, choices, splits, root)
    results = run_grid(ds, units, data_cfg, display=display, jobs=cfg.jobs, ray=cfg.ray)
    out = Measured()
    for choice in choices:
        mine = [r for u, r in zip(units, results, strict=True) if u.choice is choice]
        out.models.append(pool(ds, choice, mine))
        out.runs[choice.label] = runs_of(mine)
        out.units[choice.label] = mine
    return out


def paired_against(reference: str, measured: Measured, labels: Sequence[str], ds: Dataset,
                 cfg: RunConfig, metric: str = "accuracy") -> Comparisons | None:
    """Every model in ``labels`` tested against ``reference`` (Holm over them).

    Balanced accuracy is tested over runs (seed x split), since a per-group balanced
    accuracy is not defined for groups holding one class."""
    runs = {k: measured.runs[k] for k in [reference, *labels] if measured.runs.get(k)}
    if len(runs) < 2 or reference not in runs:
        return None
    group_name = "groups" if not ds.group_name else f"{ds.group_name} groups"
    unit = cfg.test_unit if metric == "accuracy" else "runs"
    if unit == "auto" and ds.groups is not None:
        tested = {g for r in runs[reference] for g in np.unique(ds.groups[r.index])}
        # An exact Wilcoxon test over n groups cannot go below 2 / 2^n, and needs every group
        # to move the same way near that bound: with fewer than MIN_GROUPS test groups (or
        # too few for Holm over these tests) the units are runs, or cells of one run, and
        # the verdicts say that cells of one patient were treated as independent.
        if len(tested) < MIN_GROUPS or 2 / 2 ** len(tested) * (len(runs) - 1) >= cfg.alpha:
            unit = "runs" if len(runs[reference]) > 1 else "cells"
    return Comparisons.from_dict(compare_to_reference(
        runs, ds.y, ds.groups, reference=reference, unit=unit, alpha=cfg.alpha,
        min_effect=cfg.min_effect, group_name=group_name, metric=metric))


def reference_choices(ds: Dataset, setting: Setting) -> list[ModelChoice]:
    """The baselines and the reference network for the data kind, as canonical choices."""
    baselines = [canonical(ModelChoice(n, n)) for n in BASELINES[ds.kind]]
    # the reference network is the default recipe itself, so that fix reuses its units
    net = propose("default_recipe", setting.user, {"kind": ds.kind}).apply(setting.user)[0]
    reference = canonical(ModelChoice(net.name, net.name, net.kwargs, net.train))
    return [*baselines, *([reference] if reference.spec != setting.user.spec else [])]


def probes_for(ds: Dataset, split: Split, train: TrainConfig, data_cfg: DataConfig,
               folder: Path, seconds: float | None = None) -> dict[str, Any]:
    """The probes of the user's network, stored in ``folder`` and reused when the setting
    is unchanged. ``seconds`` bounds the LR range test: its steps are sized from the time a
    step took in the gradient-flow probe (at least 120 per sweep, two sweeps when tight)."""
    from ..diagnose.probes import PROBES, prepare_probe, probe_result_from_dict

    ident = {"train": to_builtin(train.ident()), "split": split.name}
    path = folder / "probes.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("ident") == ident:
            return {k: probe_result_from_dict(v) for k, v in saved["results"].items()}
    base = prepare_probe(ds, split, train, data_cfg)
    results, step = {}, 0.0
    for name in ("loss_at_init", "overfit_batch", "gradient_flow"):
        start = time.perf_counter()
        results[name] = PROBES[name](ds, split, train, data_cfg, prepared=base)
        step = (time.perf_counter() - start) / max(len(getattr(results[name], "steps", ())), 1)
    options: dict[str, Any] = {}
    if seconds is not None and step > 0:
        steps = seconds / step  # what the LR range test may spend, in optimizer steps
        options = {"n_steps": int(min(400, max(120, steps / 2))),
                   "max_sweeps": 4 if steps >= 1600 else 2}
    results["lr_range_test"] = PROBES["lr_range_test"](ds, split, train, data_cfg,
                                                       prepared=base, **options)
    atomic_write_json(path, {"ident": ident,
                             "results": {k: v.to_dict() for k, v in results.items()}})
    return results


def histories_of(units: Sequence[UnitResult]) -> list[list[dict[str, float]]]:
    out = []
    for u in units:
        path = u.run_dir / "history.csv" if u.run_dir else None
        out.append(pd.read_csv(path).to_dict("records") if path and path.is_file() else [])
    return out


def evidence_for(ds: Dataset, setting: Setting, measured: Measured,
                 vs_user: Comparisons | None, probes: dict[str, Any], cfg: RunConfig,
                 column_order: dict[str, Any] | None) -> Evidence:
    """What the rules read about the user's setting."""
    user = measured.units["yours"]
    train = setting.user.configure(setting.base)
    spec = MODELS.get(train.model)
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    return Evidence(
        n_classes=ds.n_classes, majority_share=float(counts.max() / counts.sum()),
        user=next(m for m in measured.models if m.label == "yours"),
        histories=histories_of(user), stop_reasons=[u.stop_reason for u in user],
        max_epochs=train.max_epochs, patience=train.patience, lr=train.lr,
        optimizer=train.optimizer, model_kwargs={**spec.defaults, **train.model_kwargs},
        others=[m for m in measured.models if m.label != "yours"], vs_user=vs_user,
        probes=probes, conv_on_table=ds.kind == "table" and train.model.startswith("cnn1d"),
        column_order=column_order, alpha=cfg.alpha, min_effect=cfg.min_effect)


def variant(ds: Dataset, data_cfg: DataConfig, change: Change) -> tuple[Dataset, DataConfig]:
    """The data a fix trains on: columns dropped and the data configuration changed."""
    if change.drop:
        keep = [i for i, name in enumerate(ds.feature_names) if name not in change.drop]
        ds = Dataset(**{**ds.__dict__, "X": np.ascontiguousarray(ds.X[:, keep]),
                        "feature_names": [ds.feature_names[i] for i in keep]})
    if change.data:
        data_cfg = data_cfg.replace(**change.data)
    return ds, data_cfg


def confirm_groups(cfg: RunConfig, finding: Any, root: Path,
                   display: Display | None) -> dict[str, Any] | None:
    """Measure a candidate group column: a fast model on a random split and on a split
    grouped by it; the evidence of how much the random split inflates accuracy."""
    from ..data.splits import make_splits as splits_of
    from ..exceptions import CellbenchError
    from .inputs import load_dataset

    column, regex = finding.evidence.get("column"), finding.evidence.get("regex")
    data_cfg = cfg.data.replace(groups=column) if column else cfg.data.replace(
        group_regex=regex)
    try:
        grouped = load_dataset(data_cfg)
        plain = Dataset(**{**grouped.__dict__, "groups": None, "group_name": None})
        parts = {"random": (plain, splits_of(plain, cfg.split)),
                 "grouped": (grouped, splits_of(grouped, cfg.split))}
    except CellbenchError as exc:
        return {"confirmed": None, "why": str(exc)}
    model = canonical(ModelChoice("lightgbm" if grouped.kind == "table" else "logreg",
                                  "lightgbm" if grouped.kind == "table" else "logreg"))
    accuracy = {}
    for name, (ds, splits) in parts.items():
        m = measure(cfg.replace(seeds=1), [model], ds, splits, root / name, data_cfg,
                    display).models[0]
        accuracy[name] = m.test.accuracy if m.test else None
    r, g = accuracy["random"], accuracy["grouped"]
    if r is None or g is None:
        return None
    noise = math.hypot((r.ci[1] - r.ci[0]) / 2, (g.ci[1] - g.ci[0]) / 2)
    inflation = r.value - g.value
    return {"confirmed": bool(inflation > noise), "inflation": inflation, "noise": noise,
            "random_accuracy": r.value, "grouped_accuracy": g.value, "model": model.name,
            "column": column, "regex": regex}
