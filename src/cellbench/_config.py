"""Frozen configuration dataclasses, validated on construction, with strict YAML in and out.

Keyword arguments at the edge (CLI flags, the estimator) are frozen into these objects; YAML
keys map one to one onto fields, and an unknown key raises with the closest valid name.

>>> cfg = RunConfig.from_dict({"train": {"lr": 3e-4}})
>>> cfg.train.lr
0.0003
>>> apply_overrides(cfg, ["train.max_epochs=5"]).train.max_epochs
5
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ._augment_spec import parse_augment
from ._utils import did_you_mean, split_top_level
from ._value_checks import (
    as_tuple,
    check_bools,
    check_cofactors,
    check_names,
    check_texts,
    is_bool,
    kind_of,
    raise_all,
)
from .exceptions import InvalidParameterError

__all__ = [
    "DataConfig",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_augment",
]

TRANSFORMS = ("arcsinh", "standardize", "quantile", "sample-standardize", "sample-quantile")
CYTOMETRY_COFACTORS = {"mass": 5.0, "flow": 150.0}


def _as_float(value: str) -> float | str:
    """YAML 1.1 reads ``3e-4`` as a string; accept it where a float is expected."""
    try:
        return float(value)
    except ValueError:
        return value  # left for the field's own validation message


@dataclass(frozen=True)
class _Base:
    """Shared dict/YAML conversion for the config dataclasses."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str | None = None):
        where = where or cls.__name__
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in fields]
        if unknown:
            msgs = []
            for key in unknown:
                guess = did_you_mean(key, fields)
                msgs.append(
                    f"{where} has no setting {key!r}"
                    + (f"; did you mean {guess!r}?" if guess else ".")
                )
            raise InvalidParameterError(
                " ".join(msgs) + " Valid settings: " + ", ".join(sorted(fields)) + "."
            )
        kwargs = {}
        for key, value in data.items():
            f = fields[key]
            sub = _SECTIONS.get(key) if cls is RunConfig else None
            if sub is not None:
                if value is not None and not isinstance(value, Mapping):
                    raise InvalidParameterError(
                        f"{key} must be a mapping of settings (e.g. {key}: "
                        f"{_SECTION_EXAMPLES[key]}); got {value!r} ({kind_of(value)}) in "
                        f"{where}. Give its settings as name: value pairs, or set one with "
                        f"--set {key}.NAME=VALUE."
                    )
                kwargs[key] = sub.from_dict(value, f"{where}.{key}")
            elif cls is RunConfig and key == "models" and isinstance(value, str) \
                    and not split_top_level(value):
                raise InvalidParameterError(
                    f"models must name at least one model; got {value!r} in {where}. Name "
                    "them, e.g. models: [lda, mlp], or leave models out for the default "
                    "line-up."
                )
            elif isinstance(f.default, tuple):
                kwargs[key] = as_tuple(value, f"{where}.{key}")
            elif isinstance(value, str) and "float" in str(f.type):
                kwargs[key] = _as_float(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Base):
                out[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            elif isinstance(value, Mapping):
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DataConfig(_Base):
    """How to read the data and which columns play which role."""

    path: str | None = None  # table (CSV/TSV/Parquet), FCS file, or folder of FCS files
    target: str | None = None  # label column; None: 'label'/'class'/... if exactly one exists
    groups: str | None = None  # patient/sample column; splits never put one group in two parts
    features: tuple[str, ...] = ()  # feature names or globs (FCS: $PnN or $PnS); () = all others
    drop: tuple[str, ...] = ()  # columns (names or globs) never used as features, e.g. Time
    exclude_labels: tuple[str, ...] = ()  # rows with these labels are removed (e.g. '0' = ungated)
    dropna: bool = False  # drop rows with NaN/inf features or a missing label instead of failing
    split_column: str | None = None  # column of train/val/test per row: use that split as given
    sample_sheet: str | None = None  # CSV file,label[,patient] for a folder of FCS files
    transform: tuple[str, ...] = ("standardize",)  # fitted on train only, applied in this order
    cytometry: str | None = None  # 'mass' or 'flow': default arcsinh cofactor 5 or 150
    cofactor: float | None = None  # arcsinh cofactor for every channel (overrides cytometry)
    cofactors: Mapping[str, float] = field(default_factory=dict)  # per-channel cofactors
    cells_per_sample: int | None = None  # draw N cells of each sample at load time (seeded)
    subsample_seed: int = 0  # seed of that draw (each sample's draw depends on its name too)
    # images only
    resize: int | None = None  # resize every image to N x N (otherwise sizes must agree)
    skip_bad: bool = False  # skip unreadable image files (with a count) instead of failing
    group_regex: str | None = None  # group id from each file name: the regex's first group
    image_norm: str = "standardize"  # standardize (per channel), unit ([0, 1]) or none (raw)

    def __post_init__(self) -> None:
        # lists (the Python API, JSON) and a single name become tuples, so that two equal
        # settings compare equal (a rerun reuses its run directory)
        for name in ("features", "drop", "exclude_labels", "transform"):
            value = getattr(self, name)
            if isinstance(value, (str, numbers.Real)) and not is_bool(value):
                object.__setattr__(self, name, (str(value),))
            elif isinstance(value, Iterable) and not isinstance(value, (tuple, Mapping)):
                object.__setattr__(self, name, tuple(value))  # a list, an array, a set
        if self.cofactors is None:
            object.__setattr__(self, "cofactors", {})
        problems: list[str] = []
        column = "a column name (a string)"
        check_texts(self, "data", {"path": "a file or folder path (a string)",
                                    "sample_sheet": "a CSV file path (a string)"},
                     problems, paths=True)
        check_texts(self, "data", {"target": column, "groups": column, "split_column": column,
                                    "cytometry": "'mass' or 'flow'",
                                    "group_regex": "a regular expression (a string)",
                                    "image_norm": "standardize, unit or none"}, problems)
        check_names(self, "data", {"features": "column names or globs (strings)",
                                    "drop": "column names or globs (strings)",
                                    "exclude_labels": "labels (strings)",
                                    "transform": "transform names (strings)"}, problems)
        check_bools(self, "data", ("dropna", "skip_bad"), problems)
        if not isinstance(self.cofactors, Mapping):
            problems.append(f"data.cofactors must be a mapping channel -> cofactor (e.g. "
                            f"{{CD3: 150}}); got {self.cofactors!r} ({kind_of(self.cofactors)}).")
        raise_all("data", problems)  # the checks below need the right types
        if self.image_norm not in ("standardize", "unit", "none"):
            problems.append(f"data.image_norm must be standardize, unit or none; got "
                            f"{self.image_norm!r}.")
        if self.resize is not None and not (isinstance(self.resize, int) and self.resize >= 4):
            problems.append(f"data.resize must be an int >= 4 or None; got {self.resize!r}.")
        for step in self.transform:
            if step not in TRANSFORMS:
                guess = did_you_mean(step, TRANSFORMS)
                problems.append(
                    f"data.transform steps must be among {', '.join(TRANSFORMS)}; got {step!r}."
                    + (f" Did you mean {guess!r}?" if guess else "")
                )
        if self.cytometry is not None and self.cytometry not in CYTOMETRY_COFACTORS:
            problems.append(
                f"data.cytometry must be 'mass' or 'flow'; got {self.cytometry!r}."
            )
        check_cofactors(self.cofactor, self.cofactors, problems)
        if not (isinstance(self.subsample_seed, int) and not is_bool(self.subsample_seed)
                and self.subsample_seed >= 0):
            problems.append(f"data.subsample_seed must be an int >= 0; got "
                            f"{self.subsample_seed!r}.")
        if self.cells_per_sample is not None and (
                isinstance(self.cells_per_sample, bool)
                or not isinstance(self.cells_per_sample, int) or self.cells_per_sample < 1):
            problems.append(f"data.cells_per_sample must be an int >= 1 (cells drawn from "
                            f"each sample) or None; got {self.cells_per_sample!r}.")
        raise_all("data", problems)

    def arcsinh_cofactor(self) -> float:
        """The cofactor for channels without their own: explicit, by cytometry kind, or 5."""
        if self.cofactor is not None:
            return float(self.cofactor)
        return CYTOMETRY_COFACTORS.get(self.cytometry or "mass", 5.0)


@dataclass(frozen=True)
class SplitConfig(_Base):
    """How cells are split into train / validation / test."""

    cv: int | None = None  # k-fold CV (grouped when groups exist); None: one train/val/test split
    val_size: float = 0.15  # fraction held out from training for early stopping and model choice
    test_size: float = 0.15  # fraction of the test part (holdout only); it is evaluated once
    random_state: int = 0  # seed of the split (independent of the training seed)
    repeats: int = 1  # repeated k-fold CV: the k folds drawn this many times (split seeds differ)
    within_groups: bool = False  # split inside each group (per-sample labels); one model each

    def __post_init__(self) -> None:
        problems = []
        if self.cv is not None and not (isinstance(self.cv, int) and self.cv >= 2):
            problems.append(f"split.cv (--cv) must be an int >= 2, the number of folds; got "
                            f"{self.cv!r}. Leave it unset for one train/val/test holdout.")
        if not (isinstance(self.repeats, int) and not isinstance(self.repeats, bool)
                and self.repeats >= 1):
            problems.append(f"split.repeats must be an int >= 1; got {self.repeats!r}.")
        elif self.repeats > 1 and self.cv is None:
            problems.append(f"split.repeats needs k-fold CV; got repeats {self.repeats} "
                            "without cv. Pass --cv K as well (e.g. --cv 5 --repeats 3).")
        check_bools(self, "split", ("within_groups",), problems)
        for name in ("val_size", "test_size"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                problems.append(f"split.{name} must be a fraction in [0, 1); got {value!r}.")
        if not problems and self.cv is None and self.val_size + self.test_size >= 0.9:
            problems.append(
                f"split.val_size + split.test_size must leave at least 10% for training; got "
                f"{self.val_size} + {self.test_size}."
            )
        raise_all("split", problems)


OPTIMIZER_NAMES = ("sgd", "asgd", "adam", "adamw", "rmsprop")
SCHEDULER_NAMES = ("step", "exponential", "cosine", "onecycle", "plateau")


#: training settings added after runs were first saved, with their defaults: left out of
#: :meth:`TrainConfig.ident` at those defaults, so a unit an older cellbench finished is reused
LATER_TRAIN_SETTINGS: Mapping[str, Any] = MappingProxyType(
    {"label_smoothing": 0.0, "ema": None, "tta": None, "ensemble": 1})


@dataclass(frozen=True)
class TrainConfig(_Base):
    """How one model is built and trained. Non-network models use only the first fields."""

    model: str = "mlp"  # registry name; `cellbench models` lists them
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  # architecture arguments
    random_state: int = 0  # seeds weights, batch order, dropout and the train-eval subset
    class_weight: str | Mapping[str, float] | None = None  # 'balanced' or {label: weight}
    optimizer: str = "adam"  # sgd, asgd, adam, adamw or rmsprop
    lr: float = 1e-3  # peak learning rate
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)  # e.g. momentum, nesterov
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    scheduler: str | None = None  # step, exponential, cosine, onecycle, plateau or None
    scheduler_kwargs: Mapping[str, Any] = field(default_factory=dict)  # e.g. step_size, gamma
    max_epochs: int = 100  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # cells (or images) per optimizer step
    patience: int | None = 10  # epochs without improvement of `monitor` before stopping
    monitor: str = "valid_loss"  # history key for early stopping, plateau and best weights
    sampler: str | None = None  # 'balanced': draw each class equally often (with replacement)
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    eval_train_size: int = 10_000  # fixed train subset re-measured in eval mode each epoch
    device: str = "auto"  # 'auto' (CUDA if present), 'cpu' or 'cuda[:i]'
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    augment: str | None = None  # image augmentation policy, e.g. 'flip,rot90,mixup=0.2'
    # image tensors in channels-last layout: 1.1-1.5x faster on CPU (bench/images/channels_last.md)
    channels_last: bool = True
    label_smoothing: float = 0.0  # networks: training targets (1 - e) one-hot + e / n_classes
    ema: float | None = None  # networks: evaluate and keep an average of the weights (decay)
    tta: str | None = None  # images: mean over test views: auto, flip (4) or d4 (8)
    ensemble: int = 1  # networks: train N members (seeds differ) and average probabilities

    def ident(self) -> dict[str, Any]:
        """:meth:`to_dict` without the later settings left at their defaults: what must match
        for a finished unit (or an interrupted training) to be reused."""
        return {k: v for k, v in self.to_dict().items()
                if not (k in LATER_TRAIN_SETTINGS and v == LATER_TRAIN_SETTINGS[k])}

    def __post_init__(self) -> None:
        problems: list[str] = []
        check_texts(self, "train", {name: "a string" for name in (
            "model", "optimizer", "scheduler", "monitor", "sampler", "device", "augment",
            "tta")}, problems)
        check_bools(self, "train", ("amp", "channels_last"), problems)
        raise_all("train", problems)  # the checks below need the right types

        def check(ok: bool, msg: str) -> None:
            if not ok:
                problems.append(msg)

        def number(name: str, low: float, low_open: bool, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
            bound = f"{'>' if low_open else '>='} {low:g}"
            check(ok, f"train.{name} must be a number {bound}; got {value!r}.")

        def integer(name: str, low: int, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
            check(ok, f"train.{name} must be an int >= {low}; got {value!r}.")

        number("lr", 0, True)
        number("weight_decay", 0, False)
        number("grad_clip", 0, True, allow_none=True)
        integer("max_epochs", 1)
        integer("batch_size", 1)
        integer("patience", 1, allow_none=True)
        integer("eval_train_size", 1)
        integer("random_state", 0)
        check(isinstance(self.ensemble, int) and not isinstance(self.ensemble, bool)
              and 1 <= self.ensemble <= 100,
              f"train.ensemble must be an int in [1, 100]; got {self.ensemble!r}. 5 members "
              "take 5 times as long to train.")
        ls = self.label_smoothing
        check(isinstance(ls, (int, float)) and not isinstance(ls, bool) and 0 <= ls < 1,
              f"train.label_smoothing must be a number in [0, 1); got {ls!r}. 0.1 is usual.")
        ema = self.ema
        check(ema is None or (isinstance(ema, float) and 0 < ema < 1),
              f"train.ema must be a decay in (0, 1) or None; got {ema!r}. 0.999 is usual "
              "(about the last 1,000 steps).")
        check(self.tta in (None, "auto", "flip", "d4"),
              f"train.tta must be 'auto', 'flip', 'd4' or None; got {self.tta!r}. 'flip' "
              "averages 4 flipped views of each image, 'd4' adds the 90-degree rotations "
              "(square images), 'auto' takes the views the augmentation trained for.")
        check(self.optimizer in OPTIMIZER_NAMES,
              f"train.optimizer must be one of {', '.join(OPTIMIZER_NAMES)}; "
              f"got {self.optimizer!r}.")
        check(self.scheduler is None or self.scheduler in SCHEDULER_NAMES,
              f"train.scheduler must be one of {', '.join(SCHEDULER_NAMES)} or None; "
              f"got {self.scheduler!r}.")
        cw = self.class_weight
        check(cw is None or cw == "balanced" or (
            isinstance(cw, Mapping) and all(isinstance(v, (int, float)) and v > 0
                                            for v in cw.values())),
              f"train.class_weight must be 'balanced', a mapping label -> weight > 0, or None; "
              f"got {cw!r}.")
        check(self.sampler in (None, "balanced"),
              f"train.sampler must be 'balanced' or None; got {self.sampler!r}.")
        check(isinstance(self.model, str) and bool(self.model),
              f"train.model must be a registry name; got {self.model!r}.")
        if self.augment:
            try:
                parse_augment(self.augment)
            except InvalidParameterError as exc:
                problems.append(f"train.augment: {exc}")
        for name in ("model_kwargs", "optimizer_kwargs", "scheduler_kwargs"):
            check(isinstance(getattr(self, name), Mapping),
                  f"train.{name} must be a mapping; got {getattr(self, name)!r}.")
        raise_all("train", problems)


@dataclass(frozen=True)
class RunConfig(_Base):
    """One job: data, split and training settings, plus the models to compare."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models: tuple[str, ...] = ()  # `compare`: registry names; () = the default line-up
    seeds: int = 1  # repeat each network with this many training seeds (random_state + i)
    reference: str | None = None  # model the others are tested against; None = the best
    test_unit: str = "auto"  # unit of paired tests: auto, groups, runs or cells
    alpha: float = 0.05  # significance level of the paired tests (after Holm's correction)
    min_effect: float = 0.005  # difference worth detecting (fraction): sizes the power note
    jobs: int = 1  # units trained at once in local processes (cores shared out among them)
    ray: str | None = None  # run the units on a Ray cluster: auto, local or host:port

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.models, tuple):  # text "lda,mlp", a list, None
            object.__setattr__(self, "models", as_tuple(self.models, "models"))
        check_names(self, "", {"models": "model specs (strings)"}, problems)
        check_texts(self, "", {"reference": "a model name (a string)",
                                      "test_unit": "auto, groups, runs or cells"}, problems)
        raise_all("config", problems)  # the checks below need the right types
        if isinstance(self.data, DataConfig) and isinstance(self.split, SplitConfig) \
                and self.data.split_column and self.split.cv is not None:
            problems.append(
                f"split.cv must not be combined with a given split (--split-column "
                f"{self.data.split_column}); got cv {self.split.cv!r}, and the split column "
                "already fixes every part. Drop --cv (or set split.cv: null) to use the "
                "given split, or drop --split-column for k-fold cross-validation.")
        if not (isinstance(self.seeds, int) and not is_bool(self.seeds) and self.seeds >= 1):
            problems.append(f"seeds must be an int >= 1; got {self.seeds!r}.")
        if self.test_unit not in ("auto", "groups", "runs", "cells"):
            problems.append(f"test_unit must be auto, groups, runs or cells; got "
                            f"{self.test_unit!r}.")
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 0.5):
            problems.append(f"alpha must be a float in (0, 0.5); got {self.alpha!r}.")
        if not (isinstance(self.jobs, int) and not isinstance(self.jobs, bool)
                and self.jobs >= 1):
            problems.append(f"jobs must be an int >= 1 (units trained at once); got "
                            f"{self.jobs!r}.")
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()
                                     or " " in self.ray.strip()):
            problems.append(f"ray must be auto (the cluster started here with `ray start`), "
                            f"local (a new Ray instance) or a cluster address such as "
                            f"10.0.0.5:6379; got {self.ray!r}.")
        if not (isinstance(self.min_effect, (int, float)) and 0 < self.min_effect < 1):
            problems.append(f"min_effect must be a fraction in (0, 1); got "
                            f"{self.min_effect!r}.")
        raise_all("config", problems)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, where: str = "config") -> RunConfig:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise InvalidParameterError(f"{where} must be valid YAML; got a parse error: {exc}"
                                        ) from exc
        if not isinstance(data, Mapping):
            raise InvalidParameterError(
                f"{where} must be a YAML mapping with sections data/split/train; got "
                f"{type(data).__name__}."
            )
        return cls.from_dict(data, where=where)


_SECTION_EXAMPLES = {"data": "{target: label}", "split": "{cv: 5}",
                     "train": "{max_epochs: 20}"}

_SECTIONS: dict[str, type[_Base]] = {
    "data": DataConfig,
    "split": SplitConfig,
    "train": TrainConfig,
}


def load_config(path: str | Path) -> RunConfig:
    """Read a :class:`RunConfig` from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError(
            f"config file must exist; got {str(path)!r}, which does not. Check the path."
        )
    return RunConfig.from_yaml(path.read_text(encoding="utf-8"), where=str(path))


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML) to ``cfg``.

    ``train.model_kwargs.width=64`` sets one key inside a mapping field.
    """
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(
                f"--set must look like section.key=value (e.g. train.lr=3e-4); got {item!r}."
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                valid = sorted(node) if isinstance(node, dict) else []
                guess = did_you_mean(part, valid)
                raise InvalidParameterError(
                    f"--set key {'.'.join(parts[:depth + 1])!r} must name a config section; "
                    + (f"did you mean {guess!r}? " if guess else "")
                    + f"valid here: {', '.join(valid)}."
                )
            if node[part] is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return RunConfig.from_dict(data, where="config (after --set)")
