"""Command-line options, declared once per config section and attached to commands.

Each :class:`Section` lists the options of one part of :class:`~cellbench._config.RunConfig`
(``data``, ``split``, ``train``, and the job-level settings); :func:`with_options` adds a
section's options to a Typer command and hands their values to the command as one
``flags`` mapping ``{section: {field: value}}`` (options left unset are absent), which
:func:`merge_flags` applies to a configuration.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from ._config import RunConfig
from ._utils import split_top_level
from .exceptions import InvalidParameterError

__all__ = ["DATA", "RUN", "SPLIT", "TRAIN", "Section", "merge_flags", "with_options"]


@dataclass(frozen=True)
class Section:
    """The options of one config section: parameter name -> annotated type."""

    name: str  # "data", "split", "train", or "" for the job-level settings
    options: Mapping[str, Any]
    fields: Mapping[str, str] = field(default_factory=dict)  # parameter -> config field
    lists: tuple[str, ...] = ()  # comma-separated values that become lists

    def only(self, *names: str) -> Section:
        return Section(self.name, {k: v for k, v in self.options.items() if k in names},
                       self.fields, self.lists)

    def without(self, *names: str) -> Section:
        return Section(self.name, {k: v for k, v in self.options.items() if k not in names},
                       self.fields, self.lists)


def _opt(kind: Any, *decls: str, help: str, **kwargs: Any) -> Any:
    return Annotated[kind | None, typer.Option(*decls, help=help, **kwargs)]


DATA = Section("data", {
    "target": _opt(str, "--target", "-t", help="Label column."),
    "groups": _opt(str, "--groups", "-g", help="Patient/sample column: no group is split "
                                              "across parts."),
    "features": _opt(str, "--features", help="Comma-separated feature names or globs (FCS: "
                                              "$PnN or $PnS)."),
    "drop": _opt(str, "--drop", help="Comma-separated columns (or globs) not to use, e.g. "
                                     "Time,Event*."),
    "exclude_labels": _opt(str, "--exclude-labels", help="Comma-separated labels whose rows "
                                                         "are removed (e.g. 0)."),
    "dropna": _opt(bool, "--dropna/--no-dropna", help="Drop rows with NaN/inf instead of "
                                                      "failing.", show_default=False),
    "sample_sheet": _opt(str, "--sample-sheet", help="CSV file,label[,patient] for a folder "
                                                     "of FCS files."),
    "split_column": _opt(str, "--split-column", help="Column of train/val/test: use the "
                                                     "split as given."),
    "transform": _opt(str, "--transform", help="Preprocessing fitted on train: arcsinh,"
                                               "standardize,quantile, and sample-standardize "
                                               "or sample-quantile to align each sample "
                                               "(--groups) (comma-separated, in order)."),
    "cells_per_sample": _opt(int, "--cells-per-sample", help="Draw N cells of each sample "
                             "at load time (stratified by label, seeded; --groups names the "
                             "samples of a table)."),
    "cytometry": _opt(str, "--cytometry", help="mass or flow: arcsinh cofactor 5 or 150."),
    "cofactor": _opt(float, "--cofactor", help="arcsinh cofactor."),
    "resize": _opt(int, "--resize", help="Images: resize all to N x N (bilinear, "
                                         "antialiased)."),
    "skip_bad": _opt(bool, "--skip-bad/--no-skip-bad", help="Images: skip unreadable files "
                                                            "instead of failing.",
                     show_default=False),
    "group_regex": _opt(str, "--group-regex", help="Images: group id from each file name "
                                                   "(first regex group)."),
    "image_norm": _opt(str, "--image-norm", help="Images: standardize (default), unit "
                                                 "([0, 1]) or none (raw 0-255)."),
}, lists=("features", "drop", "exclude_labels", "transform"))

SPLIT = Section("split", {
    "cv": _opt(int, "--cv", help="k-fold cross-validation (grouped when --groups)."),
    "test_size": _opt(float, "--test-size", help="Test fraction (holdout)."),
    "val_size": _opt(float, "--val-size", help="Validation fraction."),
    "repeats": _opt(int, "--repeats", help="Repeated k-fold CV: draw the --cv folds R times "
                                           "with different split seeds (paired tests use "
                                           "every run)."),
    "within_groups": _opt(bool, "--within-groups/--across-groups", help="Split inside each "
                          "--groups group (labels assigned per sample, e.g. per-sample "
                          "gates): one model per group, reported per group and pooled.",
                          show_default=False),
})

TRAIN = Section("train", {
    "max_epochs": _opt(int, "--max-epochs", help="Maximum epochs."),
    "batch_size": _opt(int, "--batch-size", help="Batch size."),
    "lr": _opt(float, "--lr", help="Learning rate."),
    "optimizer": _opt(str, "--optimizer", help="sgd, asgd, adam, adamw or rmsprop."),
    "scheduler": _opt(str, "--scheduler", help="step, exponential, cosine, onecycle or "
                                               "plateau."),
    "weight_decay": _opt(float, "--weight-decay", help="L2 weight decay."),
    "patience": _opt(int, "--patience", help="Early-stopping patience (epochs)."),
    "class_weight": _opt(str, "--class-weight", help="'balanced' to weight the loss by "
                                                     "inverse class frequency."),
    "sampler": _opt(str, "--sampler", help="'balanced' to draw classes equally often."),
    "grad_clip": _opt(float, "--grad-clip", help="Max gradient norm."),
    "augment": _opt(str, "--augment", help="Images: augmentation policy, e.g. flip,rot90,"
                                           "rotate=15,mixup=0.2."),
    "label_smoothing": _opt(float, "--label-smoothing", help="Networks: soften the "
                                                           "training targets, e.g. 0.1."),
    "ema": _opt(float, "--ema", help="Networks: evaluate and keep a moving average of the "
                                     "weights with this decay, e.g. 0.999."),
    "tta": _opt(str, "--tta", help="Images: average predictions over views: auto (those "
                                   "--augment trained for), flip (4) or d4 (8)."),
    "ensemble": _opt(int, "--ensemble", help="Networks: train N members with different "
                                             "seeds and average their probabilities."),
    "seed": _opt(int, "--seed", help="Training seed."),
    "device": _opt(str, "--device", help="auto, cpu or cuda[:i]."),
}, fields={"seed": "random_state"})

RUN = Section("", {
    "seeds": _opt(int, "--seeds", help="Repeat networks with N training seeds."),
    "reference": _opt(str, "--reference", help="Model the others are tested against "
                                               "(default: the best)."),
    "test_unit": _opt(str, "--test-unit", help="Unit of the paired tests: auto (patients if "
                                               "--groups, else runs, else cells), groups, "
                                               "runs or cells."),
    "alpha": _opt(float, "--alpha", help="Significance level (0.05)."),
    "jobs": _opt(int, "--jobs", "-j", help="Train N units (model x seed x split) at once in "
                                          "local processes; the cores are shared out."),
    "ray": _opt(str, "--ray", help="Run the units on a Ray cluster: auto (started here with "
                                   "`ray start`), local, or its address host:port "
                                   "(pip install \"cellbench[ray]\")."),
})

Flags = Mapping[str, Mapping[str, Any]]


def with_options(*sections: Section) -> Callable[[Callable], Callable]:
    """Add the sections' options to a command; it receives them as ``flags``."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "flags"]
        owner = {name: s for s in sections for name in s.options}
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=s.options[name]) for name, s in owner.items()]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            flags: dict[str, dict[str, Any]] = {s.name: {} for s in sections}
            for name, section in owner.items():
                value = kwargs.pop(name, None)
                if value is None:
                    continue
                if name in section.lists and isinstance(value, str):
                    value = split_top_level(value)
                flags[section.name][section.fields.get(name, name)] = value
            return fn(**kwargs, flags=flags)

        command.__signature__ = sig.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return command

    return deco


def merge_flags(cfg: RunConfig, flags: Flags, path: str | Path | None = None) -> RunConfig:
    """``cfg`` with the given options applied (and ``path`` as the data path)."""
    models = flags.get("", {}).get("models")
    if isinstance(models, str):
        models = split_top_level(models)
    if models is not None and not [m for m in models if str(m).strip()]:
        # `-m ""` or `-m ,`: leaving -m out means the default line-up, naming none is a slip
        raise InvalidParameterError(
            "models must name at least one model; got ''. Name them, e.g. -m lda,mlp, or "
            "leave -m out for the default line-up.")
    raw = cfg.to_dict()
    if path is not None:
        raw["data"]["path"] = str(path)
    for section, values in flags.items():
        (raw[section] if section else raw).update(values)
    return RunConfig.from_dict(raw, where="options")
