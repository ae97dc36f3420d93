"""The jobs that train: ``train``, ``compare`` and ``ablate``, all through the grid runner.

Each returns typed results (:class:`~cellbench.evaluate.results.RunResults` or
:class:`~cellbench.evaluate.results.TrainResults`) and prints nothing; an
:class:`~cellbench.report.observer.Observer` hears what happens while it runs, and
:mod:`cellbench.report.terminal` renders the results.

Run directory of ``compare`` (``ablate`` adds ``ablation.png``)::

    config.yaml          resolved configuration
    data.json            dataset summary, data checks, split sizes
    results.json         every model: pooled test metrics with CIs, per-fold values, tests
    comparison.png       accuracy of each model with its 95 % CI
    report.html          everything above in one page (cellbench report rebuilds it)
    units/<model>/seed<k>/<split>/   one unit each (see :mod:`cellbench.experiment.grid`)

Run directory of ``train``: ``config.yaml``, ``data.json``, ``metrics.json`` and the unit's
files (``model.pt``, ``predictions.npz``, ``history.csv``, curves, confusion matrix,
``checkpoints/last.pt`` for ``--resume``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from .._config import RunConfig
from .._utils import did_you_mean
from ..data.dataset import Dataset
from ..data.splits import Split, make_splits
from ..evaluate.compare import compare_to_reference
from ..evaluate.metrics import METRICS
from ..evaluate.results import Comparisons, RunResults, TrainResults
from ..exceptions import InvalidParameterError
from ..models import MODELS, ModelChoice, parse_models
from ..report.html import write_report
from ..report.observer import SILENT, Observer, setup_lines
from ..report.plots import plot_comparison, plot_effects
from ..train.trainer import check_model, resume_epoch
from .ablation import ablation_rows, design, parse_factors
from .grid import Unit, check_no_stale_units, plan_units, pool, run_grid, run_unit, runs_of
from .inputs import data_summary, load_dataset, split_issues
from .rundir import check_run_dir, machine_info, open_run_dir

__all__ = ["DEFAULT_IMAGE_MODELS", "DEFAULT_TABLE_MODELS", "check_before_running", "run_ablate",
           "run_compare", "run_models", "run_train"]

DEFAULT_TABLE_MODELS = ("majority", "logreg", "lda", "lightgbm", "mlp", "cnn1d-seed")
DEFAULT_IMAGE_MODELS = ("majority", "logreg", "image-lgbm", "shallow-seed004", "cnn-seed003",
                        "resnet8")


def _plural(group_name: str | None) -> str:
    return "groups" if not group_name else f"{group_name} groups"


def _unit_kind(ds: Dataset) -> str:
    return "images" if ds.kind == "image" else "cells"


def run_models(cfg: RunConfig, choices: Sequence[ModelChoice], ds: Dataset,
               splits: Sequence[Split], root: Path, observer: Observer = SILENT
               ) -> tuple[list, Comparisons | None]:
    """Every choice x seed x split under ``root`` (finished units reused), each model pooled,
    and every model tested against ``cfg.reference`` (default: the best)."""
    units = plan_units(cfg, choices, splits, root)
    results = run_grid(ds, units, cfg.data, observer, jobs=cfg.jobs, ray=cfg.ray)
    models, runs = [], {}
    for choice in choices:
        mine = [r for u, r in zip(units, results, strict=True) if u.choice is choice]
        models.append(pool(ds, choice, mine))
        runs[choice.label] = runs_of(mine)
    # a failed model (diverged) has no numbers to test: it is reported as failed instead
    pooled = {m.label: m.test.accuracy.value for m in models
              if m.test is not None and not m.failed}
    comparisons = None
    if len(pooled) > 1:
        stochastic = {c.label for c in choices if MODELS.get(c.name).family == "nn"}
        reference = cfg.reference if cfg.reference in pooled else None  # failed: the best
        comparisons = Comparisons.from_dict(compare_to_reference(
            {m: r for m, r in runs.items() if r and m in pooled}, ds.y, ds.groups,
            reference=reference, unit=cfg.test_unit, alpha=cfg.alpha,
            min_effect=cfg.min_effect, group_name=_plural(ds.group_name), pooled=pooled,
            stochastic=stochastic))
    return models, comparisons


def check_before_running(cfg: RunConfig, choices: Sequence[ModelChoice], ds: Dataset) -> None:
    """Every model choice, built for free on the meta device with its settings and the
    device it asks for: a typo must fail here, before a run directory is made."""
    seen = set()
    for choice in choices:
        train = choice.configure(cfg.train)
        key = repr(train.to_dict())
        if key not in seen:
            seen.add(key)
            check_model(ds, train)


def _check_reference(reference: str | None, choices: Sequence[ModelChoice]) -> None:
    labels = [c.label for c in choices]
    if reference is not None and reference not in labels:
        # Checked before training: a typo here must not cost the whole run.
        guess = did_you_mean(reference, labels)
        raise InvalidParameterError(
            f"reference must be one of the compared models ({', '.join(labels)}); got "
            f"{reference!r}." + (f" Did you mean {guess!r}?" if guess else ""))


def run_compare(cfg: RunConfig, out: str | Path | None = None, *,
                observer: Observer = SILENT, choices: Sequence[ModelChoice] | None = None,
                job: str = "compare", extra: dict | None = None) -> RunResults:
    """Train every model in ``cfg.models`` on the same splits and compare them honestly.

    ``choices`` replaces ``cfg.models`` (ablations pass their configurations). The results
    are also written to ``results.json`` in the run directory.
    """
    run_dir = check_run_dir(out, job, cfg, reuse=True)
    ds = load_dataset(cfg.data)
    if choices is None:
        choices = parse_models(cfg.models or (DEFAULT_IMAGE_MODELS if ds.kind == "image"
                                              else DEFAULT_TABLE_MODELS))
    _check_reference(cfg.reference, choices)
    splits = make_splits(ds, cfg.split)
    if not any(len(s.test) for s in splits):
        if ds.split is not None:
            raise InvalidParameterError(
                f"{job} needs a test part to compare on; the given split "
                f"({cfg.data.split_column or 'of the data file'}) marks no row 'test'. Mark "
                "the test rows, or leave out --split-column to let cellbench split.")
        raise InvalidParameterError(
            f"{job} needs a test part to compare on; got none (--test-size 0 and no --cv). "
            "Set --test-size above 0, or use --cv K; `cellbench train` fits a model on all "
            "rows.")
    data = data_summary(ds, splits, split_issues(ds, splits))
    check_before_running(cfg, choices, ds)
    check_no_stale_units(plan_units(cfg, choices, splits, run_dir), run_dir)
    with open_run_dir(run_dir, cfg, data, job=job):
        observer.started(setup_lines(ds.describe(), splits, ds.group_name, run_dir,
                                     cfg.split.within_groups))
        started = time.perf_counter()
        models, comparisons = run_models(cfg, choices, ds, splits, run_dir, observer)
        extra = dict(extra or {})
        if cfg.split.within_groups:
            extra["protocol"] = f"within {ds.group_name or 'group'}: one model per group"
        results = RunResults(
            job=job, created=datetime.now().isoformat(timespec="seconds"),
            machine=machine_info(), wall_seconds=time.perf_counter() - started, data=data,
            unit=_unit_kind(ds), group_name=ds.group_name, models=models,
            comparisons=comparisons, extra=extra, run_dir=run_dir)
        results.write(run_dir)
        tested = [{"model": m.label, **{k: m.test.get(k).to_dict() for k in METRICS}}
                  for m in models if m.test is not None and not m.failed]
        if tested:
            plot_comparison(tested, run_dir / "comparison.png",
                            title=f"test accuracy, {len(splits)} split(s), 95% CI")
        write_report(run_dir)  # after the results: a failing report only warns
    return results


def run_train(cfg: RunConfig, out: str | Path | None = None, *, resume: bool = False,
              observer: Observer = SILENT) -> TrainResults | RunResults:
    """Train one model on one split; the test part is evaluated once, at the end.

    With ``cfg.split.cv``, ``cfg.seeds > 1`` or ``cfg.split.within_groups`` the model runs
    through ``compare``.
    """
    if cfg.split.cv or cfg.seeds > 1 or cfg.split.within_groups:  # many runs of one model
        return run_compare(cfg.replace(models=(cfg.train.model,)), out, observer=observer)
    run_dir = check_run_dir(out, "train", cfg, reuse=resume)
    ds = load_dataset(cfg.data)
    split = make_splits(ds, cfg.split)[0]
    data = data_summary(ds, [split], split_issues(ds, [split], name_parts=False))
    choice = ModelChoice(cfg.train.model, cfg.train.model)
    check_before_running(cfg, [choice], ds)
    with open_run_dir(run_dir, cfg, data, job="train"):
        observer.started(setup_lines(ds.describe(), [split], ds.group_name, run_dir))
        if resume and (run_dir / TrainResults.FILE).is_file():
            finished = TrainResults.read(run_dir)
            finished.reused = True
            return finished
        if resume:
            observer.note(_resume_text(run_dir, cfg.train.max_epochs))
        unit = Unit(choice, cfg.train, split, run_dir, title=cfg.train.model,
                    keep_checkpoint=True)
        progress = observer.progress(transient=False)
        if progress is not None:
            progress.start()
        try:
            result = run_unit(ds, unit, cfg.data, progress)
        finally:
            if progress is not None:
                progress.stop()
        metrics = TrainResults(
            job="train", model=result.model, model_kwargs=result.model_kwargs,
            n_params=result.n_params, fit_seconds=result.fit_seconds, epochs=result.epochs,
            best_epoch=result.best_epoch, stop_reason=result.stop_reason, info=result.info,
            sizes=result.sizes, machine=machine_info(), validation=result.validation,
            test=result.test, failed=result.failed, unit=_unit_kind(ds),
            group_name=ds.group_name, run_dir=run_dir)
        metrics.write(run_dir)
        write_report(run_dir)
    return metrics


def _resume_text(run_dir: Path, max_epochs: int) -> str:
    """Where ``train --resume`` continues, said before it starts."""
    done = resume_epoch(run_dir)
    if done is None:
        return (f"resuming {str(run_dir)!r}: no checkpoint was saved yet, so training starts "
                "at epoch 1")
    if done >= max_epochs:
        return (f"resuming {str(run_dir)!r}: all {max_epochs} epochs were trained; only the "
                "evaluation is left")
    return (f"resuming {str(run_dir)!r} from its checkpoint: epochs 1-{done} of {max_epochs} "
            f"are done; training continues with epoch {done + 1}")


def run_ablate(cfg: RunConfig, factors: Sequence[str], design_kind: str = "oat",
               out: str | Path | None = None, *, observer: Observer = SILENT) -> RunResults:
    """Vary ``factors`` of ``cfg.train.model`` (one at a time or factorial) over seeds and
    folds; test each configuration against the base with Holm's correction."""
    parsed = parse_factors(factors, cfg.train.model)
    configs = design(parsed, design_kind)
    choices = [ModelChoice(c.label, cfg.train.model, c.model_kwargs, c.train) for c in configs]
    ablation = {"model": cfg.train.model, "design": design_kind,
                "factors": [{"name": f.name, "applies_to": f.target, "levels": list(f.labels)}
                            for f in parsed],
                "configs": [{"label": c.label, "levels": c.levels} for c in configs]}
    results = run_compare(cfg.replace(reference="base"), out, observer=observer,
                          choices=choices, job="ablate", extra={"ablation": ablation})
    rows = ablation_rows(results, configs)
    results.extra["ablation"]["rows"] = rows
    results.write(results.run_dir)
    plot_effects(rows, results.run_dir / "ablation.png",
                 title=f"{cfg.train.model}: effect of each level vs base, 95% CI")
    write_report(results.run_dir)  # again, now with the ablation's rows
    return results
