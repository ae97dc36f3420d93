"""``cellbench doctor RUN_DIR``: diagnose a finished ``train``/``compare``/``ablate`` run
from what it saved, without training anything.

The data rules run on the run's data; every network of the run is read with its units'
learning curves and tested against the run's other models (the same paired tests as
``compare``); the training, model and evaluation rules apply to what they find. Fixes are
not run here: the findings name them, and ``cellbench doctor DATA --model SPEC`` tests them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from .._config import RunConfig
from ..data.splits import make_splits
from ..diagnose.data_rules import check_data
from ..diagnose.findings import Finding, rank
from ..diagnose.rules import RULES, Evidence, apply_rules
from ..evaluate.results import (
    Comparisons,
    DoctorResults,
    RunResults,
    TrainResults,
    UnitResult,
)
from ..exceptions import RunDirectoryError
from ..models import MODELS
from .doctor_steps import Measured, histories_of, paired_against
from .grid import runs_of
from .inputs import data_summary, load_dataset, split_issues
from .rundir import machine_info, run_kind

__all__ = ["diagnose_run", "is_run_dir"]


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it holds ``config.yaml``) rather than data."""
    return Path(path).is_dir() and (Path(path) / "config.yaml").is_file()


def _units(run_dir: Path) -> dict[str, list[UnitResult]]:
    """Every finished unit of the run, by model label."""
    out: dict[str, list[UnitResult]] = {}
    top = run_dir / UnitResult.FILE
    paths = [top] if top.is_file() else sorted((run_dir / "units").glob("*/*/*/result.json"))
    for path in paths:
        unit = UnitResult.read(path.parent)
        out.setdefault(unit.label, []).append(unit)
    return out


def _models(run_dir: Path) -> tuple[list, Comparisons | None]:
    """The run's models, and its comparisons against its reference (a compare run)."""
    if (run_dir / RunResults.FILE).is_file():
        results = RunResults.read(run_dir)
        return results.models, results.comparisons
    if (run_dir / TrainResults.FILE).is_file():
        return [TrainResults.read(run_dir).as_model_result()], None
    if run_kind(run_dir) == "tune":
        raise RunDirectoryError(
            f"run directory {str(run_dir)!r} must be a train, compare or ablate run; it is a "
            "tune run, whose trials doctor does not read. Diagnose the tuned settings (its "
            f"best.yaml names the data too): cellbench doctor --config "
            f"{str(run_dir / 'best.yaml')!r}.")
    raise RunDirectoryError(
        f"run directory {str(run_dir)!r} must hold a finished run (results.json or "
        "metrics.json); it has neither. Let the job finish (rerun it with the same --out).")


def diagnose_run(run_dir: str | Path) -> DoctorResults:
    """Findings about a finished run, from its saved results alone."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    cfg = RunConfig.from_yaml((run_dir / "config.yaml").read_text(encoding="utf-8"),
                              str(run_dir / "config.yaml"))
    models, comparisons = _models(run_dir)
    units = _units(run_dir)
    ds = load_dataset(cfg.data)
    splits = make_splits(ds, cfg.split)
    findings = check_data(ds, splits, cfg.data)
    measured = Measured(models=models, units=units,
                        runs={label: runs_of(us) for label, us in units.items()})
    for model in models:
        if MODELS.get(model.name).family != "nn" or model.label not in units:
            continue
        findings += _about(model, measured, ds, cfg)
    findings = rank(findings)
    ladder = _inconclusive(comparisons, models, cfg.alpha)
    if ladder is not None:  # the run's own question first, after what makes numbers untrue
        at = sum(f.severity == "error" and f.entry.category == "data" for f in findings)
        findings.insert(at if ladder.severity == "warning" else len(findings), ladder)
    return DoctorResults(
        job="doctor", created=datetime.now().isoformat(timespec="seconds"),
        machine=machine_info(), wall_seconds=time.perf_counter() - started,
        budget_seconds=None, setting={"spec": f"the models of {run_dir}", "train":
                                      cfg.train.to_dict()},
        data=data_summary(ds, splits, split_issues(ds, splits)),
        findings=[f.to_dict() for f in findings], models=models,
        not_run=[{"what": "fix experiments", "why": "a finished run is diagnosed from what "
                  "it saved; test the fixes with `cellbench doctor DATA --model SPEC`"}],
        unit="images" if ds.kind == "image" else "cells", run_dir=run_dir)


def _inconclusive(comparisons: Comparisons | None, models: list,
                  alpha: float) -> Finding | None:
    """``difference_not_significant`` about the comparison the run made: the networks whose
    paired test against the run's reference is above alpha (Holm). A warning when the
    reference is a network too (a ladder of network variants whose steps cannot be told
    apart), information otherwise."""
    family = {m.label: MODELS.get(m.name).family for m in models}
    if comparisons is None or comparisons.reference not in family:
        return None
    rows = [r for r in comparisons.rows if family.get(r.model) == "nn"
            and not r.p_adjusted < alpha]
    if not rows:
        return None
    rows.sort(key=lambda r: -abs(r.difference))
    ref, unit = comparisons.reference, rows[0].unit
    listed = "; ".join(f"{r.model} {r.difference * 100:+.2f} points [{r.ci[0] * 100:+.2f}, "
                       f"{r.ci[1] * 100:+.2f}], p = {r.p_adjusted:.2g}" for r in rows[:4])
    detectable = [r.detectable for r in rows if r.detectable is not None]
    span = (f"{min(detectable) * 100:.1f}-{max(detectable) * 100:.1f}"
            if len(detectable) > 1 else f"{detectable[0] * 100:.1f}" if detectable else "")
    tail = f"; with {rows[0].n} {unit} a difference of {span} points is detectable" \
        if span else ""
    return Finding(
        "difference_not_significant", "warning" if family[ref] == "nn" else "info",
        f"{len(rows)} network(s) cannot be told apart from {ref}: {listed}{tail}",
        {"reference": ref, "rows": [{"model": r.model, "difference": r.difference,
                                     "ci": r.ci, "p_adjusted": r.p_adjusted, "n": r.n,
                                     "unit": r.unit} for r in rows]},
        advice="Do not call one of them better: repeat seeds (--seeds 3) and test on more "
               "patients/samples/slides before choosing.", strength=float(len(rows)))


def _about(model, measured: Measured, ds, cfg: RunConfig) -> list[Finding]:
    """The rules' findings about one network of the run, its label in every message."""
    mine = measured.units[model.label]
    others = [m.label for m in measured.models if m.label != model.label
              and measured.runs.get(m.label)]
    vs = paired_against(model.label, measured, others, ds, cfg) if others else None
    train = cfg.train.replace(**{k: v for k, v in mine[0].ident["train"].items()
                                 if k in cfg.train.to_dict()})
    spec = MODELS.get(model.name)
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    ev = Evidence(
        n_classes=ds.n_classes, majority_share=float(counts.max() / counts.sum()), user=model,
        histories=histories_of(mine), stop_reasons=[u.stop_reason for u in mine],
        max_epochs=train.max_epochs, patience=train.patience, lr=train.lr,
        optimizer=train.optimizer, model_kwargs={**spec.defaults, **train.model_kwargs},
        others=[m for m in measured.models if m.label in others], vs_user=vs,
        conv_on_table=ds.kind == "table" and model.name.startswith("cnn1d"),
        alpha=cfg.alpha, min_effect=cfg.min_effect)
    per_model = [r for r in RULES if r != "difference_not_significant"]  # the run's, above
    return [replace(f, message=f"{model.label}: {f.message}") for f in apply_rules(ev, per_model)]
