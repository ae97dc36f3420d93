"""The ``doctor`` job: why is a network stuck, which fix helps (tested), and a better model.

Plan, on the user's data, model and training settings::

    data rules ─► your setting, the baselines and a reference network on the same splits
    and seeds ─► probes (loss at init, one batch, gradient flow, LR range test, column
    order) ─► rules ─► fix experiments, each paired-tested against your setting (Holm)
    ─► the fixes that helped, combined ─► the final model, tested once and saved

A setting is measured against the others with the same paired tests as ``compare``; a
fix is accepted only when it is significantly better. Finished units, probes and fixes are
reused when the job is rerun with the same ``--out``; the budget decides which fixes run,
and the ones that did not fit are listed, never dropped silently.

Run directory::

    config.yaml  data.json  doctor.json  report (terminal)
    units/<setting>/seed<k>/<split>/   every model and fix (one unit each)
    variants/<fix>/units/...           fixes that change the data (transform, columns)
    probes/probes.json                 probe results with their raw traces
    final/model.pt                     the final model (``cellbench predict`` uses it)
"""

from __future__ import annotations

import math
import re
import shutil
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._config import RunConfig, TrainConfig, load_config
from ..data.dataset import Dataset
from ..data.splits import make_splits
from ..diagnose.data_rules import check_data
from ..diagnose.findings import Finding, rank
from ..diagnose.fixes import DEFAULT_NETWORKS, Change, combine, propose
from ..diagnose.ranking import rerank
from ..diagnose.rules import apply_rules
from ..evaluate.results import DoctorResults
from ..exceptions import CellbenchError, DataError
from ..models import ModelChoice, parse_model
from ..report.html import write_report
from ..report.observer import SILENT, Observer, setup_lines
from ..report.plots import plot_comparison, plot_gradient_flow, plot_lr_range
from .doctor_steps import (
    Budget,
    Measured,
    Setting,
    canonical,
    confirm_groups,
    evidence_for,
    measure,
    paired_against,
    probes_for,
    reference_choices,
    split_setting,
    variant,
)
from .grid import Display, plan_units
from .inputs import data_summary, load_dataset, split_issues
from .jobs import check_before_running
from .rundir import check_run_dir, machine_info, open_run_dir

__all__ = ["doctor", "run_doctor"]

ORDERS = 5  # random column orders (and seeds) of the column-order probe
#: fixes meant for rare classes are judged on balanced accuracy
BALANCED_FIXES = {"class_weights": "balanced_accuracy", "balanced_sampler": "balanced_accuracy"}


def run_doctor(cfg: RunConfig, out: str | Path | None = None, *,
               budget: float | None = 600.0, observer: Observer = SILENT) -> DoctorResults:
    """Diagnose ``cfg.train`` (the user's network and settings) on ``cfg.data``.

    Returns the findings, ranked, with the fixes tried and the final model; also written to
    ``doctor.json``. ``budget`` (seconds, None for no limit) bounds the whole job: fixes
    that do not fit are listed in ``not_run``.
    """
    run_dir = check_run_dir(out, "doctor", cfg, reuse=True)
    ds = load_dataset(cfg.data)
    if ds.kind == "image" and cfg.train.model == TrainConfig().model \
            and not cfg.train.model_kwargs:  # no --model: the default network for images
        cfg = cfg.replace(train=cfg.train.replace(model=DEFAULT_NETWORKS["image"]))
    check_before_running(cfg, [ModelChoice("yours", cfg.train.model)], ds)
    setting = split_setting(cfg.train)
    try:
        splits = make_splits(ds, cfg.split)
    except DataError as exc:  # no model can be trained: say why from the data alone
        return _untrainable(cfg, ds, setting, run_dir, exc, budget)
    data = data_summary(ds, splits, split_issues(ds, splits))
    with open_run_dir(run_dir, cfg, data, job="doctor"):  # one job at a time in a run directory
        observer.started([*setup_lines(ds.describe(), splits, ds.group_name, run_dir),
                          ("your setting", setting.user.spec)])
        job = _Job(cfg, ds, splits, setting, run_dir, Budget(budget), observer)
        started = time.perf_counter()
        findings = job.run()
        results = DoctorResults(
            job="doctor", created=datetime.now().isoformat(timespec="seconds"),
            machine=machine_info(), wall_seconds=time.perf_counter() - started,
            budget_seconds=budget, setting={
                "spec": setting.user.spec,
                "train": setting.user.configure(setting.base).to_dict()},
            data=data, findings=[f.to_dict() for f in findings],
            probes={k: v if isinstance(v, dict) else v.to_dict()
                    for k, v in job.probes.items()},
            models=job.measured.models, comparisons=job.vs_user, fixes=job.fix_rows,
            final=job.final, not_run=job.not_run,
            unit="images" if ds.kind == "image" else "cells", run_dir=run_dir)
        results.write(run_dir)
    write_report(run_dir)  # after the results: a failing report only warns
    return results


def _untrainable(cfg: RunConfig, ds: Dataset, setting: Setting, run_dir: Path,
                 exc: DataError, budget: float | None) -> DoctorResults:
    """When the data cannot be split for training (one class per group, a class in one
    group): the data rules' findings, and why nothing was trained."""
    findings = rank(check_data(ds, [], cfg.data))
    data = data_summary(ds, [], list(ds.issues))
    results = DoctorResults(
        job="doctor", created=datetime.now().isoformat(timespec="seconds"),
        machine=machine_info(), wall_seconds=0.0, budget_seconds=budget,
        setting={"spec": setting.user.spec,
                 "train": setting.user.configure(setting.base).to_dict()},
        data=data, findings=[f.to_dict() for f in findings],
        not_run=[{"what": "every model", "why": f"the data cannot be split for training: "
                  f"{exc}"}], unit="images" if ds.kind == "image" else "cells",
        run_dir=run_dir)
    with open_run_dir(run_dir, cfg, data, job="doctor"):
        results.write(run_dir)
    return results


def doctor(data: str | Path | None = None, *, model: str | None = None,
           config: str | Path | None = None, budget: float | str | None = "10m",
           out: str | Path | None = None, **settings: Any) -> DoctorResults:
    """Python entry point of ``cellbench doctor``: the same job, the same results.

    ``data`` is a table, FCS folder, image folder or ``.npz`` -- or a finished run
    directory, which is diagnosed from what it saved. ``model`` is a spec
    (``"cnn1d-seed(dropout=0.5/0.9,optimizer=asgd,lr=0.01)"``); ``settings`` are
    ``section__field=value`` overrides or plain fields of the data, split and train
    sections (``target="label"``, ``groups="patient"``, ``cv=5``, ``max_epochs=50``).

    >>> from cellbench.experiment.doctor import doctor
    >>> callable(doctor)
    True
    """
    from ..tune.study import parse_duration
    from .doctor_rundir import diagnose_run, is_run_dir
    from .inputs import example_config

    if data is not None and is_run_dir(data):
        return diagnose_run(data)
    cfg = load_config(config) if config is not None else RunConfig()
    if data == "example":
        cfg = example_config()
        data = None
    raw = cfg.to_dict()
    if data is not None:
        raw["data"]["path"] = str(data)
    for key, value in settings.items():
        section, _, name = key.rpartition("__")
        section = section or next((s for s in ("data", "split", "train")
                                   if name in raw[s]), "")
        (raw[section] if section else raw)[name] = value
    cfg = RunConfig.from_dict(raw, where="doctor()")
    if model is not None:
        choice = parse_model(model)
        cfg = cfg.replace(train=choice.configure(cfg.train.replace(model=choice.name)))
    return run_doctor(cfg, out, budget=parse_duration(budget, "budget"))


class _Job:
    """One doctor run: its state and its stages."""

    def __init__(self, cfg: RunConfig, ds: Dataset, splits: list, setting: Setting,
                 run_dir: Path, budget: Budget, observer: Observer) -> None:
        self.cfg, self.ds, self.splits, self.setting = cfg, ds, splits, setting
        self.run_dir, self.budget, self.observer = run_dir, budget, observer
        self.job_cfg = cfg.replace(train=setting.base)
        self.measured = Measured()
        self.vs_user = None
        self.probes: dict[str, Any] = {}
        self.fix_rows: list[dict[str, Any]] = []
        self.not_run: list[dict[str, str]] = []
        self.final: dict[str, Any] | None = None
        self.display: Display | None = None

    # -- the plan -------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        progress = self.observer.progress(label="doctor")
        choices = [*reference_choices(self.ds, self.setting), self.setting.user]
        planned = len(plan_units(self.job_cfg, choices, self.splits, self.run_dir)) + 1
        try:
            if progress is not None:
                progress.start()
                self.display = Display(progress, progress.add_task(
                    "doctor", total=planned, info="data rules"))
            return self._stages()
        finally:
            if progress is not None:
                progress.stop()

    def _stages(self) -> list[Finding]:
        findings = [self._checked_groups(f) for f in
                    check_data(self.ds, self.splits, self.cfg.data)]
        self._show("baselines and your setting")
        choices = [*reference_choices(self.ds, self.setting), self.setting.user]
        self.measured.add(measure(self.job_cfg, choices, self.ds, self.splits,
                                  self.run_dir, self.cfg.data, self.display))
        others = [c.label for c in choices if c.label != "yours"]
        self.vs_user = paired_against("yours", self.measured, others, self.ds, self.cfg)
        self._show("probes")
        self.probes = self._probes()
        ev = evidence_for(self.ds, self.setting, self.measured, self.vs_user, self.probes,
                          self.cfg, None)
        ev.unscaled = any(f.id == "unscaled_input" and f.severity != "info" for f in findings)
        if ev.conv_on_table and ev.hurt and not ev.stuck:
            ev.column_order = self._column_order()
        findings += apply_rules(ev)
        outcomes = self._fixes(findings, ev)
        return self._with_plots(rerank(findings, outcomes), ev)

    def _with_plots(self, findings: list[Finding], ev: Any) -> list[Finding]:
        """Draw the evidence (``doctor/*.png``, the units' curves) and attach it."""
        folder = self.run_dir / "doctor"
        plots: dict[str, str] = {}
        if "lr_range_test" in self.probes:
            plot_lr_range(self.probes["lr_range_test"].to_dict(), folder / "lr_range.png",
                          lr=ev.lr)
            plots["lr"] = "doctor/lr_range.png"
        if "gradient_flow" in self.probes:
            plot_gradient_flow(self.probes["gradient_flow"].to_dict(),
                               folder / "gradient_flow.png")
            plots["flow"] = "doctor/gradient_flow.png"
        models = [m for m in self.measured.models if m.test is not None]
        plot_comparison([{"model": m.label, "accuracy": m.test.accuracy.to_dict()}
                         for m in models], folder / "models.png",
                        title="your setting, the baselines and the fixes, 95% CI")
        plots["models"] = "doctor/models.png"
        curves = self.run_dir / "units" / self.setting.user.slug / "curves.png"
        if curves.is_file():
            plots["curves"] = str(curves.relative_to(self.run_dir))
        which = {"lr_too_high": ("lr",), "lr_too_low": ("lr", "curves"),
                 "nan_loss": ("flow", "lr"), "stuck_at_chance": ("curves", "flow"),
                 "dropout_gap": ("curves",), "too_few_epochs": ("curves",),
                 "overfitting": ("curves",), "underfitting": ("curves",),
                 "below_baseline": ("models",), "difference_not_significant": ("models",)}
        return [replace(f, plots=tuple(plots[k] for k in which.get(f.id, ()) if k in plots))
                for f in findings]

    def _checked_groups(self, finding: Finding) -> Finding:
        """A missing-groups candidate, confirmed or dropped by measuring the inflation."""
        if finding.id != "missing_groups":
            return finding
        self._show(f"checking groups: {finding.evidence.get('column') or 'file names'}")
        check = confirm_groups(self.job_cfg, finding, self.run_dir / "groups_check",
                               self.display)
        if not check or check.get("confirmed") is None:
            return finding
        evidence = {**finding.evidence, **check}
        if check["confirmed"]:
            return replace(finding, severity="error", evidence=evidence,
                           message=f"{finding.message}: a split grouped by it scores "
                                   f"{check['inflation'] * 100:.1f} points lower "
                                   f"({check['grouped_accuracy'] * 100:.1f}% vs "
                                   f"{check['random_accuracy'] * 100:.1f}% random, "
                                   f"{check['model']}); every number of a random split is "
                                   "inflated", strength=check["inflation"] / check["noise"])
        return replace(finding, severity="info", evidence=evidence, fix=None,
                       message=f"{finding.message}; checked: a split grouped by it scores "
                               f"the same within noise ({check['inflation'] * 100:+.1f} "
                               "points)")

    def _column_order(self) -> dict[str, Any]:
        """Your network on ``ORDERS`` random column orders of the first split, and on as many
        seeds in the given order: the spread over orders against the spread over seeds. Five
        of each, not three: the F test's 95 % point is 19 with 2 and 2 degrees of freedom,
        6.4 with 4 and 4, so three of each misses orders that spread 4x as much as seeds."""
        split, ds = self.splits[0], self.ds
        rng = np.random.default_rng(self.cfg.train.random_state)
        permuted = []
        for k in range(ORDERS):
            self._show(f"column order {k + 1} of {ORDERS}")
            perm = rng.permutation(ds.X.shape[1])
            shuffled = Dataset(**{**ds.__dict__, "X": np.ascontiguousarray(ds.X[:, perm]),
                                  "feature_names": [ds.feature_names[i] for i in perm]})
            m = measure(self.job_cfg.replace(seeds=1), [self.setting.user], shuffled, [split],
                        self.run_dir / "probes" / f"order{k + 1}", self.cfg.data, self.display)
            permuted.append(m.models[0].test.accuracy.value)
        seeds = measure(self.job_cfg.replace(seeds=ORDERS), [self.setting.user], ds, [split],
                        self.run_dir, self.cfg.data, self.display)
        result = {"permuted": permuted, "seeds": [u.test.accuracy.value
                                                  for u in seeds.units["yours"] if u.test],
                  "split": 0}
        self.probes["column_order"] = result
        return result

    def _show(self, stage: str) -> None:
        if self.display is not None:
            self.display.show(stage)

    def _probes(self) -> dict[str, Any]:
        from ..models import MODELS

        if MODELS.get(self.setting.user.name).family != "nn":
            return {}
        train = self.setting.user.configure(self.setting.base)
        try:
            # the LR range test gets at most 15 % of what is left of the budget (90 s)
            seconds = min(90.0, 0.15 * self.budget.left) if self.budget.seconds else None
            return probes_for(self.ds, self.splits[0], train, self.cfg.data,
                              self.run_dir / "probes", seconds)
        finally:
            if self.display is not None:
                self.display.advance()

    # -- fixes ----------------------------------------------------------------------------
    def _changes(self, findings: list[Finding], ev: Any) -> list[tuple[Change, list[str]]]:
        lr_range = self.probes.get("lr_range_test")
        train = self.setting.user.configure(self.setting.base)
        leaks = [f.evidence.get("column") for f in findings if f.id == "leaking_feature"
                 and f.severity != "info"]
        context = {"kind": self.ds.kind, "data": self.cfg.data, "lr": train.lr,
                   "max_epochs": train.max_epochs, "patience": train.patience,
                   "suggested_lr": getattr(lr_range, "suggestion", None)
                   if lr_range is not None and math.isfinite(lr_range.suggestion) else None,
                   "raw_cytometry": any(f.id == "unscaled_input" for f in findings),
                   "columns": [c for c in leaks if c]}
        proposed: dict[str, tuple[Change, list[str]]] = {}
        for f in findings:  # an info finding's fix only when its rule asks for the test
            if f.fix is None or (f.severity == "info" and not f.evidence.get("test_fix")):
                continue
            for fix in [f.fix, *f.evidence.get("fixes", [])]:
                change = propose(fix, self.setting.user, context)
                if change is None or self._no_op(change):
                    continue
                proposed.setdefault(change.label, (change, []))[1].append(f.id)
        return list(proposed.values())

    def _no_op(self, change: Change) -> bool:
        """A change that leaves your setting as it is (the default recipe when yours is it)."""
        choice, _ = change.apply(self.setting.user)
        return not (change.data or change.drop) and canonical(choice).spec == \
            self.setting.user.spec

    def _fixes(self, findings: list[Finding], ev: Any) -> dict[str, dict[str, Any]]:
        """Run each proposed fix that fits the budget; paired tests against your setting."""
        changes = self._changes(findings, ev)
        per_unit = self.measured.seconds_per_unit("yours")
        n_units = len(self.measured.units.get("yours", []))
        ran: list[tuple[Change, list[str], str]] = []
        if self.display is not None and changes:
            self.display.progress.update(self.display.task, total=self.display.progress.tasks[
                self.display.task].total + n_units * (len(changes) + 1))
        for change, ids in changes:
            epochs = change.train.get("max_epochs")
            ratio = min(epochs / self.setting.base.max_epochs, 10) if epochs else 1
            cost = per_unit * n_units * ratio
            if not self.budget.fits(cost):
                self.not_run.append({"what": change.label, "why": f"needs about {cost:.0f} s; "
                                     f"{max(self.budget.left, 0):.0f} s of the budget left"})
                continue
            self._show(change.label)
            try:
                ran.append((change, ids, self._run_change(change)))
            except (CellbenchError, ValueError, RuntimeError) as exc:  # one fix, not the job
                self.not_run.append({"what": change.label, "why": f"failed: {exc}"})
        outcomes = self._test(ran)
        leak = [c for c, ids, _ in ran if c.fix == "drop_column" and any(
            f.id == "leaking_feature" and f.severity == "error" for f in findings)]
        accepted = leak or [c for c, _, label in ran
                            if outcomes.get(label, {}).get("accepted")]
        self._final(accepted, outcomes, ev)
        return {fid: outcomes[label] for _, ids, label in ran for fid in ids}

    def _run_change(self, change: Change) -> str:
        choice, _ = change.apply(self.setting.user)
        return self._run_choice(canonical(choice, change.label), change)

    def _run_choice(self, choice: ModelChoice, change: Change) -> str:
        """Train ``choice`` on every unit, on the data ``change`` makes (columns, config)."""
        ds, data_cfg = variant(self.ds, self.cfg.data, change)
        root = self.run_dir if not (change.drop or change.data) else \
            self.run_dir / "variants" / re.sub(r"[^A-Za-z0-9._-]+", "_", change.label)
        self.measured.add(measure(self.job_cfg, [choice], ds, self.splits, root, data_cfg,
                                  self.display))
        return choice.label

    def _test(self, ran: list[tuple[Change, list[str], str]]) -> dict[str, dict[str, Any]]:
        """Paired tests against your setting, Holm over the fixes; fixes for rare classes
        on balanced accuracy (what they are meant to improve), the others on accuracy."""
        by_metric: dict[str, list[str]] = {}
        for change, _, label in ran:
            by_metric.setdefault(BALANCED_FIXES.get(change.fix, "accuracy"), []).append(label)
        tests = {m: paired_against("yours", self.measured, labels, self.ds, self.cfg, m)
                 for m, labels in by_metric.items()}
        outcomes = {}
        for change, ids, label in ran:
            metric = BALANCED_FIXES.get(change.fix, "accuracy")
            row = tests[metric].row(label) if tests[metric] else None
            model = next(m for m in self.measured.models if m.label == label)
            accepted = bool(row and row.difference > 0 and row.p_adjusted < self.cfg.alpha)
            outcome = {"fix": change.fix, "label": label, "findings": ids, "metric": metric,
                       "spec": model.spec, "accuracy": model.test.accuracy.to_dict()
                       if model.test else None,
                       "difference": row.difference if row else None,
                       "ci": row.ci if row else None, "p_adjusted": row.p_adjusted
                       if row else None, "verdict": row.verdict if row else "",
                       "accepted": accepted}
            outcomes[label] = outcome
            self.fix_rows.append(outcome)
        return outcomes

    # -- the final model ------------------------------------------------------------------
    def _final(self, accepted: list[Change], outcomes: dict[str, dict[str, Any]],
               ev: Any) -> None:
        """The best of the accepted fixes and their combination; when no fix helped, the
        model that beat yours by the most (yours when none did)."""
        candidates = [c.label for c in accepted]
        if not candidates and ev is not None:
            better = [m for m, _, _ in ev.better_than_user()]
            if not better and getattr(ev.user, "failed", None):  # yours never trained
                better = [m for m in ev.others if m.test is not None
                          and m.test.accuracy.ci[0] > ev.majority_share]
            if better:
                candidates = [max(better, key=lambda m: m.test.accuracy.value).label]
        if len(accepted) > 1:
            order = sorted(accepted, key=lambda c: -(outcomes[c.label]["difference"] or 0))
            exclusive = [c for c in order if c.reset_train]
            stack = exclusive[:1] or [c for c in order if not c.reset_train]
            combined, _, drop = combine(stack, self.setting.user, self.cfg.data)
            data = {k: v for c in stack for k, v in c.data.items()}
            label = "+".join(c.fix for c in stack)
            if label not in candidates and len(stack) > 1:
                try:
                    candidates.append(self._run_choice(canonical(combined, label),
                                                       Change(label, data=data, drop=drop)))
                except (CellbenchError, ValueError, RuntimeError) as exc:
                    self.not_run.append({"what": label, "why": f"failed: {exc}"})
        label = max(candidates, key=self._mean_accuracy, default="yours")
        model = next(m for m in self.measured.models if m.label == label)
        unit = self.measured.units[label][0]
        path = self.run_dir / "final" / "model.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(unit.run_dir / "model.pt", path)
        self.final = {"label": label, "spec": model.spec,
                      "model_path": str(path.relative_to(self.run_dir)),
                      "test": model.test.to_dict() if model.test else None,
                      "unit": str(unit.run_dir.relative_to(self.run_dir))}

    def _mean_accuracy(self, label: str) -> float:
        units = self.measured.units.get(label) or []
        values = [u.test.accuracy.value for u in units if u.test is not None]
        return float(np.mean(values)) if values else -1.0
