"""The jobs behind the CLI: ``train``, ``compare`` and ``predict``.

Each job writes a run directory; every file in it is written atomically, and the file that
marks a unit of work finished (``result.json``) is written last, so an interrupted job never
leaves a half-written result and a rerun picks up where it stopped.

Run directory of ``compare``::

    config.yaml          resolved configuration
    data.json            dataset summary, data checks, split sizes
    results.json         every model: pooled test metrics with CIs, per-fold values
    comparison.png       accuracy of each model with its 95 % CI
    units/<model>/seed<k>/<split>/
        result.json  model.pt  predictions.npz  history.csv  curves.png  confusion.png
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from ._utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    did_you_mean,
    format_list,
    progress_bar,
    split_top_level,
    to_builtin,
)
from ._version import __version__
from .data import checks
from .data.dataset import Dataset
from .data.images import IMAGE_SUFFIXES, is_image_source, load_images, read_images_for_prediction
from .data.io import load_table, read_frame
from .data.splits import Split, make_splits
from .evaluate.ablation import TRAIN_FACTORS, design, parse_factors
from .evaluate.compare import Run, compare_to_reference
from .evaluate.metrics import METRICS, evaluate_predictions
from .exceptions import DataError, InvalidParameterError, RunDirectoryError
from .models import MODELS
from .models._base import model_arguments
from .report.plots import plot_comparison, plot_confusion, plot_curves, plot_effects
from .train.trainer import FittedModel, load_model, train_model

__all__ = ["DEFAULT_IMAGE_MODELS", "DEFAULT_TABLE_MODELS", "ModelChoice", "example_config",
           "load_dataset", "parse_models", "run_ablate", "run_compare", "run_predict",
           "run_train"]

DEFAULT_TABLE_MODELS = ("majority", "logreg", "lda", "lightgbm", "mlp", "cnn1d-seed")
DEFAULT_IMAGE_MODELS = ("majority", "logreg", "shallow-seed004", "cnn-seed003", "resnet8")


# ---------------------------------------------------------------------------------------------
# Bundled examples


def example_path(filename: str) -> Path:
    return Path(str(resources.files("cellbench.examples").joinpath(filename)))


def example_config(name: str = "cytometry") -> RunConfig:
    """Configuration of a bundled example (see ``cellbench/examples/README.md``)."""
    if name == "images":
        return RunConfig(
            data=DataConfig(path=str(example_path("malaria_small.npz")), groups="slide_id"),
            split=SplitConfig(val_size=0.15, test_size=0.2),
            train=TrainConfig(max_epochs=25, patience=6, batch_size=64, lr=2e-3),
        )
    if name == "cytometry":
        return RunConfig(
            data=DataConfig(path=str(example_path("deepcytof_small.parquet")),
                            target="cell_type", groups="sample",
                            transform=("arcsinh", "standardize"), cytometry="mass"),
            split=SplitConfig(cv=4),
            train=TrainConfig(max_epochs=40, patience=8),
        )
    raise InvalidParameterError(f"example must be 'cytometry' or 'images'; got {name!r}.")


# ---------------------------------------------------------------------------------------------
# Inputs


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load and check the data a job runs on."""
    if not cfg.path:
        raise InvalidParameterError(
            "data path must be given; got none. Pass a CSV/Parquet/FCS file or a folder of "
            "FCS files (cellbench compare DATA), or --example."
        )
    if is_image_source(cfg.path):
        table_only = [name for name, value in (("features", cfg.features), ("drop", cfg.drop),
                                               ("split_column", cfg.split_column),
                                               ("target", cfg.target)) if value]
        if table_only:
            raise InvalidParameterError(
                f"{', '.join(table_only)} must not be set for image data; they apply to "
                f"tables. Labels come from class folders, the sample sheet or the .npz."
            )
        ds = load_images(cfg.path, sample_sheet=cfg.sample_sheet, groups=cfg.groups,
                         group_regex=cfg.group_regex, resize=cfg.resize, skip_bad=cfg.skip_bad)
        if cfg.exclude_labels:
            keep = ~np.isin(np.asarray(ds.classes, dtype=str)[ds.y],
                            [str(v) for v in cfg.exclude_labels])
            ds = ds.subset(np.flatnonzero(keep))
            ds.y, ds.classes = _recode(ds.y, ds.classes)
        return ds
    ds = load_table(cfg.path, target=cfg.target, groups=cfg.groups, features=cfg.features,
                    drop=cfg.drop, exclude_labels=cfg.exclude_labels, dropna=cfg.dropna,
                    split_column=cfg.split_column, sample_sheet=cfg.sample_sheet,
                    cytometry=cfg.cytometry)
    ds.issues = [*ds.issues, *checks.check_scale(ds, cfg.transform)]
    return ds


def _recode(y: np.ndarray, classes: list) -> tuple[np.ndarray, list]:
    present = np.unique(y)
    remap = np.full(len(classes), -1)
    remap[present] = np.arange(len(present))
    return remap[y], [classes[i] for i in present]


@dataclass(frozen=True)
class ModelChoice:
    """A model to run: registry name plus its own arguments, e.g. ``mlp(width=256)``."""

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (ablations)
    spec: str = ""  # name(args) without a label; "" when the label is the spec

    @property
    def slug(self) -> str:
        """Folder of the model's units: from the spec, so renaming a model reuses its runs."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.spec or self.label).strip("_")


def _parse_value(text: str) -> Any:
    """A YAML value; ``0.25/0.5`` is a pair (dropout of the two seed-000 layers)."""
    if "/" in text:
        return [_parse_value(part) for part in text.split("/")]
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_models(items: Sequence[str]) -> list[ModelChoice]:
    """Parse ``["lda", "mlp(width=256,depth=3)", "cnn1d-seed(optimizer=asgd,lr=0.01)"]``.

    Commas separate models except inside parentheses; values are read as YAML (``a/b`` is a
    pair). Arguments of the model go to the model; training settings (optimizer, lr,
    weight_decay, augment, ...) apply to that model only. ``label=spec`` names a model in
    tables and verdicts, e.g. ``post=cnn1d-seed(optimizer=asgd,lr=0.01)``.
    """
    parts = [part for item in items for part in split_top_level(item)]
    choices, seen = [], set()
    for entry in parts:
        labelled = re.fullmatch(r"\s*([\w.+/-]+)\s*=\s*([\w.-]+(?:\(.*\))?)\s*", entry)
        label, raw = (labelled.group(1), labelled.group(2)) if labelled else (None, entry)
        match = re.fullmatch(r"([\w.-]+)(?:\((.*)\))?", raw)
        if not match:
            raise InvalidParameterError(
                f"model must look like name, name(key=value,...) or label=name(...); got "
                f"{entry!r}."
            )
        name, args = match.group(1), match.group(2)
        params = set(model_arguments(name))  # unknown names raise with a suggestion
        kwargs: dict[str, Any] = {}
        train: dict[str, Any] = {}
        for arg in split_top_level(args or ""):
            key, sep, value = arg.partition("=")
            key = key.strip()
            if not sep:
                raise InvalidParameterError(
                    f"model argument must look like key=value; got {arg!r} in {raw!r}."
                )
            if key in params:
                kwargs[key] = _parse_value(value)
            elif key in TRAIN_FACTORS:  # a training setting for this model only
                train[key] = _parse_value(value)
            else:
                valid = sorted(params)
                raise InvalidParameterError(
                    f"{key!r} in {raw!r} must be an argument of {name!r} ({', '.join(valid)}) "
                    f"or a training setting ({', '.join(TRAIN_FACTORS)})."
                )
        for key in (raw, label):
            if key in seen:
                raise InvalidParameterError(f"models must be listed once each; {key!r} "
                                            "repeats. Give each a different label or spec.")
            if key is not None:
                seen.add(key)
        if train:
            try:
                TrainConfig().replace(**train)
            except InvalidParameterError as exc:
                raise InvalidParameterError(f"in {raw!r}: {exc}") from exc
        choices.append(ModelChoice(label or raw, name, kwargs, train, raw if label else ""))
    if not choices:
        raise InvalidParameterError("models must name at least one model; got none.")
    return choices


# ---------------------------------------------------------------------------------------------
# Run directories


def _machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cellbench": __version__}


def check_run_dir(out: str | Path | None, job: str, cfg: RunConfig, reuse: bool) -> Path:
    """Choose the run directory and check it can take this run; creates nothing.

    An existing run is reopened only when ``reuse`` and its data and split settings equal
    ``cfg``'s; otherwise finished results could be mixed with a different run.
    """
    if out is None:
        out = Path("runs") / f"{job}-{datetime.now():%Y%m%d-%H%M%S}"
    path = Path(out)
    saved_cfg = path / "config.yaml"
    if saved_cfg.is_file():
        if not reuse:
            raise RunDirectoryError(
                f"run directory {str(path)!r} must be new; it already holds a run. Pass a new "
                "--out, or --resume to continue it."
            )
        old = RunConfig.from_yaml(saved_cfg.read_text(encoding="utf-8"), str(saved_cfg))
        if old.data != cfg.data or old.split != cfg.split:
            raise RunDirectoryError(
                f"run directory {str(path)!r} holds a run on different data or splits; its "
                "finished results cannot be reused. Pass a new --out."
            )
    elif path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be empty or a cellbench run; it holds other "
            "files. Pass a new --out."
        )
    return path


def open_run_dir(path: Path, cfg: RunConfig) -> Path:
    """Create the run directory (after the data loaded) and write ``config.yaml``."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", cfg.to_yaml())
    return path


def _data_summary(ds: Dataset, splits: Sequence[Split], issues: Sequence[Any]) -> dict:
    return {
        "source": ds.source, "n": ds.n_samples, "kind": ds.kind, "target": ds.target,
        "shape": list(ds.X.shape[1:]), "dtype": str(ds.X.dtype),
        "features": ds.feature_names, "classes": to_builtin(ds.classes),
        "class_counts": {str(k): v for k, v in ds.class_counts.items()},
        "groups": ({"column": ds.group_name, "n": len(np.unique(ds.groups))}
                   if ds.groups is not None else None),
        "splits": [{"name": s.name, "grouped": s.grouped, **s.sizes()} for s in splits],
        "issues": [i.to_dict() for i in issues],
    }


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _history_csv(fm: FittedModel, path: Path) -> None:
    if fm.history:
        atomic_write_text(path, pd.DataFrame(list(fm.history)).to_csv(index=False))


# ---------------------------------------------------------------------------------------------
# One unit of work: one model, one seed, one split


def _run_unit(ds: Dataset, split: Split, train_cfg: TrainConfig, data_cfg: DataConfig,
              unit_dir: Path, label: str, progress: Any, keep_checkpoint: bool) -> dict:
    ident = {"train": to_builtin(train_cfg.to_dict()), "split": split.name,
             "test_rows": len(split.test)}
    result_path = unit_dir / "result.json"
    if result_path.is_file():
        saved = json.loads(result_path.read_text(encoding="utf-8"))
        if saved.get("ident") == ident and (unit_dir / "predictions.npz").is_file():
            saved["reused"] = True
            return saved
    unit_dir.mkdir(parents=True, exist_ok=True)
    resume = (unit_dir / "checkpoints" / "last.pt").is_file()
    fm = train_model(ds, split, train_cfg, data_cfg, run_dir=unit_dir, resume=resume,
                     progress=progress)
    fm.save(unit_dir / "model.pt")
    groups = ds.groups
    start = time.perf_counter()
    test_proba = (fm.predict_proba(ds.X[split.test]) if len(split.test)
                  else np.zeros((0, ds.n_classes)))
    predict_seconds = time.perf_counter() - start
    val_proba = (fm.predict_proba(ds.X[split.val]) if len(split.val)
                 else np.zeros((0, ds.n_classes)))
    _save_npz(unit_dir / "predictions.npz", test_index=split.test, test_proba=test_proba,
              val_index=split.val, val_proba=val_proba)
    result: dict[str, Any] = {
        "ident": ident, "label": label, "model": fm.name, "model_kwargs": fm.model_kwargs,
        "seed": train_cfg.random_state, "split": split.name, "sizes": split.sizes(),
        "n_params": fm.n_params, "fit_seconds": fm.fit_seconds,
        "predict_seconds": predict_seconds, "epochs": len(fm.history),
        "best_epoch": fm.best_epoch, "stop_reason": fm.stop_reason, "info": fm.info,
    }
    if len(split.val):
        result["validation"] = evaluate_predictions(
            ds.y[split.val], val_proba, ds.classes,
            groups=None if groups is None else groups[split.val])
    if len(split.test):
        result["test"] = evaluate_predictions(
            ds.y[split.test], test_proba, ds.classes,
            groups=None if groups is None else groups[split.test])
        plot_confusion(result["test"]["confusion_matrix"]["counts"], ds.classes,
                       unit_dir / "confusion.png", f"{label} [{split.name}], test")
    _history_csv(fm, unit_dir / "history.csv")
    if fm.history:
        plot_curves(list(fm.history), unit_dir / "curves.png", f"{label} [{split.name}]",
                    best_epoch=fm.best_epoch)
    atomic_write_json(result_path, to_builtin(result))  # last: marks the unit finished
    if not keep_checkpoint:
        shutil.rmtree(unit_dir / "checkpoints", ignore_errors=True)
    return result


def _runs(units: list[dict], unit_dirs: list[Path]) -> list[Run]:
    runs = []
    for u, d in zip(units, unit_dirs, strict=True):
        if "test" not in u:
            continue
        with np.load(d / "predictions.npz") as z:
            runs.append(Run(u["seed"], u["split"], z["test_index"], z["test_proba"],
                            int(u["sizes"]["train"])))
    return runs


def _aggregate(ds: Dataset, choice: ModelChoice, units: list[dict],
               unit_dirs: list[Path]) -> dict:
    """Pool a model's test predictions over folds/seeds and summarise per-fold values."""
    out: dict[str, Any] = {"model": choice.label, "name": choice.name,
                           "spec": choice.spec or choice.label, "slug": choice.slug,
                           "n_params": int(units[0]["n_params"]),
                           "fit_seconds": float(np.mean([u["fit_seconds"] for u in units])),
                           "units": len(units),
                           "reused_units": sum(bool(u.get("reused")) for u in units)}
    seeds = sorted({u["seed"] for u in units})
    per_seed = []
    for seed in seeds:
        index, proba = [], []
        for u, d in zip(units, unit_dirs, strict=True):
            if u["seed"] == seed:
                with np.load(d / "predictions.npz") as z:
                    index.append(z["test_index"])
                    proba.append(z["test_proba"])
        idx = np.concatenate(index)
        if len(idx):
            per_seed.append((seed, idx, np.concatenate(proba)))
    if per_seed:
        seed, idx, proba = per_seed[0]
        pooled = evaluate_predictions(ds.y[idx], proba, ds.classes,
                                      groups=None if ds.groups is None else ds.groups[idx])
        out["test"] = pooled
        out["test"]["pooled_over"] = (f"{len([u for u in units if u['seed'] == seed])} "
                                      f"test parts (seed {seed})")
    histories = []
    for d in unit_dirs:
        if (d / "history.csv").is_file():
            histories.append(pd.read_csv(d / "history.csv").to_dict("records"))
    if len(histories) > 1:
        plot_curves(histories, unit_dirs[0].parent.parent / "curves.png",
                    f"{choice.label}: mean and range over {len(histories)} runs")
    folds = [u for u in units if "test" in u]
    out["per_unit"] = [{"split": u["split"], "seed": u["seed"], "n": u["test"]["n"],
                        **{m: u["test"][m]["value"] for m in METRICS},
                        "fit_seconds": u["fit_seconds"], "epochs": u["epochs"],
                        "best_epoch": u["best_epoch"], "stop_reason": u["stop_reason"]}
                       for u in folds]
    if len(folds) > 1:
        out["across_units"] = {
            m: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))}
            for m in METRICS
            if (v := [u["test"][m]["value"] for u in folds if u["test"][m]["value"] is not None])
        }
    return out


# ---------------------------------------------------------------------------------------------
# Jobs


def _run_models(cfg: RunConfig, choices: Sequence[ModelChoice], ds: Dataset,
                splits: Sequence[Split], run_dir: Path, console: Any,
                show_progress: bool) -> tuple[list[dict], dict[str, list[Run]]]:
    """Every model x seed x split unit (finished ones reused); per-model summaries and runs."""
    seeds = [cfg.train.random_state + s for s in range(cfg.seeds)]
    results: list[dict] = []
    runs: dict[str, list[Run]] = {}
    progress = _progress(console) if show_progress else None
    n_units = sum(1 if MODELS.get(c.name).family != "nn" else len(seeds)
                  for c in choices) * len(splits)
    try:
        if progress is not None:
            progress.start()
            overall = progress.add_task("models x splits", total=n_units, info="")
        for choice in choices:
            spec = MODELS.get(choice.name)
            model_seeds = seeds if spec.family == "nn" else seeds[:1]
            units, dirs = [], []
            for seed in model_seeds:
                # the config's model_kwargs belong to the config's model
                base = cfg.train.model_kwargs if choice.name == cfg.train.model else {}
                train_cfg = cfg.train.replace(model=choice.name,
                                              model_kwargs={**base, **choice.kwargs},
                                              random_state=seed, **choice.train)
                for split in splits:
                    unit_dir = run_dir / "units" / choice.slug / f"seed{seed}" / split.name
                    if progress is not None:
                        progress.update(overall, info=f"{choice.label} seed {seed} "
                                                      f"{split.name}")
                    units.append(_run_unit(ds, split, train_cfg, cfg.data, unit_dir,
                                           choice.label, progress, keep_checkpoint=False))
                    dirs.append(unit_dir)
                    if progress is not None:
                        progress.advance(overall)
            results.append(_aggregate(ds, choice, units, dirs))
            runs[choice.label] = _runs(units, dirs)
    finally:
        if progress is not None:
            progress.stop()
    return results, runs


def run_compare(cfg: RunConfig, out: str | Path | None = None, *, console: Any = None,
                show_progress: bool = True, choices: Sequence[ModelChoice] | None = None,
                job: str = "compare", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every model in ``cfg.models`` on the same splits and compare them honestly.

    ``choices`` replaces ``cfg.models`` (ablations pass their configurations). Returns the
    content of ``results.json`` (also written to the run directory).
    """
    from rich.console import Console

    console = console or Console()
    run_dir = check_run_dir(out, job, cfg, reuse=True)
    ds = load_dataset(cfg.data)
    if choices is None:
        choices = parse_models(cfg.models or (DEFAULT_IMAGE_MODELS if ds.kind == "image"
                                              else DEFAULT_TABLE_MODELS))
    labels = [c.label for c in choices]
    if cfg.reference is not None and cfg.reference not in labels:
        # Checked before training: a typo here must not cost the whole run.
        guess = did_you_mean(cfg.reference, labels)
        raise InvalidParameterError(
            f"reference must be one of the compared models ({', '.join(labels)}); got "
            f"{cfg.reference!r}." + (f" Did you mean {guess!r}?" if guess else ""))
    splits = make_splits(ds, cfg.split)
    issues = list(ds.issues)
    if ds.kind == "table":
        for split in splits:
            issues += checks.check_split_duplicates(ds.X, split.train, split.test,
                                                    f"{split.name} test", split.grouped)
    open_run_dir(run_dir, cfg)
    atomic_write_json(run_dir / "data.json", _data_summary(ds, splits, issues))
    console.print(f"[bold]data[/] {ds.describe()}")
    console.print("[bold]split[/] " + _describe_splits(splits, ds))
    console.print(f"[bold]run directory[/] {run_dir}")

    started = time.perf_counter()
    results, runs = _run_models(cfg, choices, ds, splits, run_dir, console, show_progress)
    pooled = {r["model"]: r["test"]["accuracy"]["value"] for r in results if "test" in r}
    comparisons = compare_to_reference(
        {m: r for m, r in runs.items() if r}, ds.y, ds.groups, reference=cfg.reference,
        unit=cfg.test_unit, alpha=cfg.alpha, min_effect=cfg.min_effect,
        group_name=_plural(ds.group_name), pooled=pooled) if len(pooled) > 1 else None
    summary = {
        "job": job, "created": datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(), "wall_seconds": time.perf_counter() - started,
        "data": _data_summary(ds, splits, issues),
        "unit": "images" if ds.kind == "image" else "cells", "group_name": ds.group_name,
        "models": results, "comparisons": comparisons, **(extra or {}),
    }
    atomic_write_json(run_dir / "results.json", to_builtin(summary))
    plot_comparison([{"model": r["model"], **{m: r["test"][m] for m in METRICS}}
                     for r in results if "test" in r], run_dir / "comparison.png",
                    title=f"test accuracy, {len(splits)} split(s), 95% CI")
    if job == "compare":
        print_comparison(summary, console)
        print_verdicts(comparisons, console)
        console.print(f"\nresults: {run_dir / 'results.json'}  plots: "
                      f"{run_dir / 'comparison.png'}")
    summary["run_dir"] = str(run_dir)
    return summary


def run_ablate(cfg: RunConfig, factors: Sequence[str], design_kind: str = "oat",
               out: str | Path | None = None, *, console: Any = None,
               show_progress: bool = True) -> dict[str, Any]:
    """Vary ``factors`` of ``cfg.train.model`` (one at a time or factorial) over seeds and
    folds; test each configuration against the base with Holm's correction."""
    from rich.console import Console

    console = console or Console()
    parsed = parse_factors(factors, cfg.train.model)
    configs = design(parsed, design_kind)
    choices = [ModelChoice(c.label, cfg.train.model, c.model_kwargs, c.train) for c in configs]
    ablation = {"model": cfg.train.model, "design": design_kind,
                "factors": [{"name": f.name, "applies_to": f.target, "levels": list(f.labels)}
                            for f in parsed],
                "configs": [{"label": c.label, "levels": c.levels} for c in configs]}
    summary = run_compare(cfg.replace(reference="base"), out, console=console,
                          show_progress=show_progress, choices=choices, job="ablate",
                          extra={"ablation": ablation})
    run_dir = Path(summary.pop("run_dir"))
    rows = _ablation_rows(summary, configs)
    summary["ablation"]["rows"] = rows
    atomic_write_json(run_dir / "results.json", to_builtin(summary))
    plot_effects(rows, run_dir / "ablation.png",
                 title=f"{cfg.train.model}: effect of each level vs base, 95% CI")
    print_ablation(summary, rows, console)
    console.print(f"\nresults: {run_dir / 'results.json'}  plot: {run_dir / 'ablation.png'}")
    summary["run_dir"] = str(run_dir)
    return summary


def _ablation_rows(summary: dict[str, Any], configs: Sequence[Any]) -> list[dict[str, Any]]:
    by_model = {m["model"]: m for m in summary["models"]}
    tests = {r["model"]: r for r in (summary.get("comparisons") or {}).get("rows", [])}
    rows = []
    for c in configs:
        m = by_model[c.label]
        across = m.get("across_units", {}).get("accuracy")
        row = {"config": c.label, "levels": c.levels,
               "accuracy": m["test"]["accuracy"],
               "mean": across["mean"] if across else m["test"]["accuracy"]["value"],
               "sd": across["sd"] if across else None, "runs": m["units"]}
        t = tests.get(c.label)
        if t is not None:
            row.update({"difference": t["difference"], "ci": t["ci"], "p": t["p_value"],
                        "p_adjusted": t["p_adjusted"], "test": t["test"],
                        "verdict": t["verdict"]})
        rows.append(row)
    return rows


def _plural(group_name: str | None) -> str:
    return "groups" if not group_name else f"{group_name} groups"


def print_verdicts(comparisons: dict | None, console: Any) -> None:
    """The paired tests, one verdict per line."""
    if not comparisons or not comparisons.get("rows"):
        return
    unit = {"groups": "patients/samples (each group's accuracy)",
            "runs": ("seeds on one split, seed and test-cell variation"
                     if any(r.get("test") == "seed_cell_t" for r in comparisons["rows"])
                     else "runs (seed x fold), corrected resampled t"),
            "cells": "test cells (one run)"}.get(comparisons["unit"], comparisons["unit"])
    adj = ", Holm-adjusted" if comparisons["correction"] == "holm" else ""
    console.print(f"\n[bold]paired tests against {comparisons['reference']}[/] on "
                  f"{comparisons['metric']} (unit: {unit}; alpha {comparisons['alpha']}{adj}):")
    for row in comparisons["rows"]:
        console.print("  " + row["verdict"], highlight=False)


def run_train(cfg: RunConfig, out: str | Path | None = None, *, resume: bool = False,
              console: Any = None, show_progress: bool = True) -> dict[str, Any]:
    """Train one model on one split; the test part is evaluated once, at the end."""
    from rich.console import Console

    console = console or Console()
    if cfg.split.cv or cfg.seeds > 1:  # repeats: one model through the compare machinery
        return run_compare(cfg.replace(models=(cfg.train.model,)), out, console=console,
                           show_progress=show_progress)
    run_dir = check_run_dir(out, "train", cfg, reuse=resume)
    ds = load_dataset(cfg.data)
    split = make_splits(ds, cfg.split)[0]
    issues = list(ds.issues)
    if ds.kind == "table":
        issues += checks.check_split_duplicates(ds.X, split.train, split.test,
                                                grouped=split.grouped)
    open_run_dir(run_dir, cfg)
    atomic_write_json(run_dir / "data.json", _data_summary(ds, [split], issues))
    console.print(f"[bold]data[/] {ds.describe()}")
    console.print("[bold]split[/] " + _describe_splits([split], ds))
    console.print(f"[bold]run directory[/] {run_dir}")
    if resume and (run_dir / "metrics.json").is_file():
        console.print("this run already finished; nothing to resume.")
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    fm = train_model(ds, split, cfg.train, cfg.data, run_dir=run_dir, resume=resume,
                     verbose=show_progress)
    fm.save(run_dir / "model.pt")
    metrics: dict[str, Any] = {
        "job": "train", "model": fm.name, "model_kwargs": fm.model_kwargs,
        "n_params": fm.n_params, "fit_seconds": fm.fit_seconds, "epochs": len(fm.history),
        "best_epoch": fm.best_epoch, "stop_reason": fm.stop_reason, "info": fm.info,
        "sizes": split.sizes(), "machine": _machine(),
    }
    groups = ds.groups
    for part, index in (("validation", split.val), ("test", split.test)):
        if len(index):
            metrics[part] = evaluate_predictions(
                ds.y[index], fm.predict_proba(ds.X[index]), ds.classes,
                groups=None if groups is None else groups[index])
    _history_csv(fm, run_dir / "history.csv")
    if fm.history:
        plot_curves(list(fm.history), run_dir / "curves.png", fm.name,
                    best_epoch=fm.best_epoch)
    if "test" in metrics:
        plot_confusion(metrics["test"]["confusion_matrix"]["counts"], ds.classes,
                       run_dir / "confusion.png", f"{fm.name}, test")
    atomic_write_json(run_dir / "metrics.json", to_builtin(metrics))
    row = {"model": fm.name, "n_params": fm.n_params, "fit_seconds": fm.fit_seconds,
           "test": metrics.get("test")}
    print_comparison({"models": [row], "unit": "images" if ds.kind == "image" else "cells",
                      "group_name": ds.group_name}, console)
    if fm.stop_reason:
        console.print(f"stopped: {fm.stop_reason}")
    console.print(f"\nmodel: {run_dir / 'model.pt'}  metrics: {run_dir / 'metrics.json'}")
    return metrics


def _predict_images(fm: FittedModel, data: str | Path, resize: int | None) -> tuple:
    if fm.kind != "image":
        raise DataError(f"model {fm.name!r} was trained on a table; {str(data)!r} holds "
                        "images. Predict with a model trained on images.")
    images, names, labels = read_images_for_prediction(data, resize)
    if list(images.shape[1:]) != fm.input_shape:
        c, h, w = fm.input_shape
        raise DataError(
            f"images must have the training shape {c}x{h}x{w} (channels x height x width); "
            f"got {'x'.join(map(str, images.shape[1:]))}. Pass --resize {h} if they only "
            "differ in size."
        )
    return fm.predict_proba(images), pd.DataFrame({"file": names}), labels


def run_predict(model_path: str | Path, data: str | Path, out: str | Path | None = None, *,
                dropna: bool = False, resize: int | None = None,
                console: Any = None) -> pd.DataFrame:
    """Predict labels and probabilities for raw rows (table, FCS file or FCS folder) or for
    images (a file, a folder, an .npz)."""
    from rich.console import Console

    console = console or Console()
    fm = load_model(model_path)
    path = Path(data)
    if is_image_source(path) or path.suffix.lower() in IMAGE_SUFFIXES:
        proba, result, truth = _predict_images(fm, path, resize)
        labels = np.asarray(fm.classes, dtype=object)
        result["predicted"] = labels[proba.argmax(1)]
        for k, c in enumerate(fm.classes):
            result[f"proba_{c}"] = proba[:, k]
        if out is not None:
            atomic_write_text(out, result.to_csv(index=False))
            console.print(f"wrote {len(result)} predictions to {out}")
        if truth is not None:
            acc = float(np.mean(np.asarray(truth) == result["predicted"].astype(str).to_numpy()))
            console.print(f"the images are in class folders: accuracy {acc:.4f} on "
                          f"{len(truth)} images")
        return result
    raw = read_frame(data, require_labels=False)
    frame = raw.frame
    lookup = {**{a: n for a, n in raw.aliases.items()}, **{c: c for c in frame.columns}}
    reverse = {n: a for a, n in fm.aliases.items()}
    columns, missing = [], []
    for name in fm.feature_names:
        for candidate in (name, reverse.get(name)):
            if candidate is not None and candidate in lookup:
                columns.append(lookup[candidate])
                break
        else:
            missing.append(name)
    if missing:
        raise DataError(
            f"data must have the model's feature columns; {str(data)!r} lacks "
            f"{format_list(missing, 8)}. Its columns: {format_list(list(frame.columns), 12)}."
        )
    try:
        X = frame[columns].apply(pd.to_numeric, errors="raise").to_numpy(np.float32)
    except (ValueError, TypeError) as exc:
        raise DataError(f"feature columns of {str(data)!r} must be numeric ({exc}).") from exc
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any() and not dropna:
        raise DataError(
            f"feature values must be finite; {int(bad.sum())} rows of {str(data)!r} have NaN "
            f"or inf (first at row {int(np.argmax(bad)) + 1}). Pass --dropna to leave those "
            "rows without a prediction."
        )
    proba = np.full((len(X), len(fm.classes)), np.nan)
    if (~bad).any():
        proba[~bad] = fm.predict_proba(X[~bad])
    labels = np.asarray(fm.classes, dtype=object)
    result = pd.DataFrame({"row": np.arange(1, len(X) + 1)})
    for col in ("sample", "patient"):
        if col in frame.columns and col not in columns:
            result[col] = frame[col].to_numpy()
    result["predicted"] = np.where(bad, None, labels[np.nan_to_num(proba).argmax(1)])
    for k, c in enumerate(fm.classes):
        result[f"proba_{c}"] = proba[:, k]
    if out is not None:
        atomic_write_text(out, result.to_csv(index=False))
        console.print(f"wrote {len(result)} predictions to {out}")
    if fm.target in frame.columns:
        truth = frame[fm.target].astype(str).to_numpy()
        ok = ~bad
        acc = float((truth[ok] == result["predicted"].astype(str).to_numpy()[ok]).mean())
        console.print(f"the data has a {fm.target!r} column: accuracy {acc:.4f} on "
                      f"{int(ok.sum())} rows")
    return result


# ---------------------------------------------------------------------------------------------
# Terminal output


def _progress(console: Any) -> Any:
    return progress_bar(console)


def _describe_splits(splits: Sequence[Split], ds: Dataset) -> str:
    s = splits[0]
    by = f"grouped by {ds.group_name!r}" if s.grouped else "stratified by class, cells at random"
    if len(splits) > 1:
        return f"{len(splits)}-fold cross-validation, {by}; a validation part is held out of " \
               f"each training part for early stopping"
    sizes = s.sizes()
    return (f"{s.name}: train {sizes['train']}, validation {sizes['val']}, test "
            f"{sizes['test']} ({by})")


def _fmt(metric: dict | None, percent: bool = True) -> str:
    if not metric or metric.get("value") is None:
        return "-"
    scale, digits = (100, 2) if percent else (1, 3)
    lo, hi = metric["ci"]
    return (f"{metric['value'] * scale:.{digits}f} ({lo * scale:.{digits}f}-"
            f"{hi * scale:.{digits}f})")


def _point(metric: dict | None, percent: bool = True) -> str:
    if not metric or metric.get("value") is None:
        return "-"
    return f"{metric['value'] * 100:.2f}" if percent else f"{metric['value']:.3f}"


def print_comparison(summary: dict[str, Any], console: Any) -> None:
    """The terminal table: metrics with 95 % CIs, fit time and parameter count.

    Accuracy and balanced accuracy show their CI; every CI is in results.json.
    """
    from rich.table import Table

    rows = summary["models"]
    cv = any("across_units" in r for r in rows)
    table = Table(title="test results, % (95% CI)", title_justify="left")
    table.add_column("model", no_wrap=True)
    for col in ("params", "fit s", "accuracy", "balanced acc.", "macro-F1", "AUROC"):
        table.add_column(col, justify="right", no_wrap=col in ("accuracy", "balanced acc."))
    if cv:
        table.add_column("acc. per fold", justify="right")
    ranked = sorted(rows, key=lambda r: -(r.get("test") or {}).get("accuracy", {}).get(
        "value", -1))
    for r in ranked:
        test = r.get("test") or {}
        cells = [r["model"], f"{r['n_params']:,}", f"{r['fit_seconds']:.1f}",
                 _fmt(test.get("accuracy")), _fmt(test.get("balanced_accuracy")),
                 _point(test.get("macro_f1")), _point(test.get("auroc"), percent=False)]
        if cv:
            acc = r.get("across_units", {}).get("accuracy")
            cells.append(f"{acc['mean'] * 100:.2f} ± {acc['sd'] * 100:.2f}" if acc else "-")
        table.add_row(*cells)
    console.print(table)
    first = next((r["test"] for r in ranked if r.get("test")), None)
    if first:
        pooled = f", pooled over {first['pooled_over']}" if "pooled_over" in first else ""
        console.print(f"n = {first['n']} {summary.get('unit', 'cells')}{pooled}. CIs: Wilson "
                      "(accuracy), bootstrap (balanced accuracy, macro-F1), DeLong (AUROC).")
        groups = first.get("groups")
        if groups and groups.get("applicable"):
            for r in ranked:
                g = (r.get("test") or {}).get("groups", {})
                if g.get("applicable"):
                    console.print(f"  patient level, {r['model']}: "
                                  f"{_fmt(g['accuracy'])} over {g['n_groups']} groups")
            if "caution" in groups:
                console.print(f"[yellow]{groups['caution']}[/]")
        elif groups:
            across = groups["cell_accuracy_across_groups"]
            unit = summary.get("group_name") or "group"
            console.print(f"  {ranked[0]['model']}: accuracy per {unit} ranges "
                          f"{across['min']:.4f}-{across['max']:.4f} over {groups['n_groups']} "
                          "groups in the test part(s)")


def print_ablation(summary: dict[str, Any], rows: Sequence[dict[str, Any]], console: Any) -> None:
    """Each configuration's accuracy and its paired difference from the base."""
    from rich.table import Table

    comparisons = summary.get("comparisons") or {}
    unit = comparisons.get("unit", "-")
    table = Table(title=f"ablation of {summary['ablation']['model']} ({unit} as the test unit)",
                  title_justify="left")
    # The mean over every run (folds x seeds) is what the paired difference is built from, so
    # it comes first; the pooled CI is the first seed's alone and can rank differently.
    runs = max((row.get("runs") or 1 for row in rows), default=1)
    for col in (("configuration", f"accuracy %, mean ± sd over {runs} runs",
                 "difference vs base, points [95% CI]", "p (Holm)",
                 "first seed, pooled (95% CI)")):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for row in rows:
        diff = (f"{row['difference'] * 100:+.2f} [{row['ci'][0] * 100:+.2f}, "
                f"{row['ci'][1] * 100:+.2f}]" if "difference" in row else "(reference)")
        p = f"{row['p_adjusted']:.3g}" if "p_adjusted" in row else ""
        spread = (f"{row['mean'] * 100:.2f} ± {row['sd'] * 100:.2f}" if row["sd"] is not None
                  else f"{row['mean'] * 100:.2f}")
        table.add_row(row["config"], spread, diff, p, _fmt(row["accuracy"]))
    console.print(table)
    print_verdicts(comparisons, console)

