"""Fit any registry model on a dataset split.

:func:`train_model` fits the preprocessing on the training rows only, builds the model, trains
it (networks through :func:`~cellbench.train.engine.fit`, the others through their own
``fit``) and returns a :class:`~cellbench.train.fitted.FittedModel`, which predicts on raw
rows and saves to one ``weights_only`` checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from .._augment_spec import TTA_VIEWS, trained_symmetries
from .._config import DataConfig, TrainConfig
from .._utils import resolve_device, seed_everything
from ..data.augment import Augmenter
from ..data.dataset import Dataset
from ..data.splits import Split
from ..data.transforms import IMAGE_INPUTS, LARGE_ROWS, ImageNormalizer, Preprocessor
from ..exceptions import CellbenchWarning, DataError, InvalidParameterError, RunDirectoryError
from ..models import (
    MODELS,
    BaseModel,
    SeedEnsemble,
    create_model,
    member_seed,
    model_arguments,
)
from ..models._base import class_weight_vector, image_input
from .callbacks import Callback, Checkpoint, EarlyStopping, ProgressBar, monitor_mode
from .engine import History, effective_monitor, fit
from .fitted import MAX_PARAMETERS, FittedModel, load_model, read_checkpoint, shape_kwargs
from .optim import build_optimizer, build_schedule
from .rows import LazyRows

__all__ = ["MAX_PARAMETERS", "FittedModel", "Prepared", "check_model", "load_model", "prepare",
           "resume_epoch", "train_model"]


def check_model(ds: Dataset, train_cfg: TrainConfig) -> None:
    """Everything about ``train_cfg`` that can fail, checked without training: the device,
    the model's input kind, its arguments (built for free on the meta device), class weights,
    optimizer and schedule settings. Jobs call it before they create a run directory."""
    resolve_device(train_cfg.device)
    spec = MODELS.get(train_cfg.model)
    _check_kind(spec, ds)
    for name, why in (("augment", "Augmentation transforms images"),
                      ("tta", "Test-time augmentation averages views of images")):
        if getattr(train_cfg, name) and ds.kind != "image":
            raise InvalidParameterError(f"{name} must not be set for a table; got "
                                        f"{getattr(train_cfg, name)!r}. {why}; drop it.")
    _check_views(train_cfg)
    class_weight = train_cfg.class_weight
    if isinstance(class_weight, Mapping):
        vector = class_weight_vector(class_weight, ds.y, ds.n_classes, ds.classes)
        class_weight = dict(enumerate(vector.tolist()))
    label = train_cfg.model
    shape = list(ds.X.shape[1:])

    def build(**size: Any) -> Any:
        return create_model(spec.name, n_classes=ds.n_classes, **{**shape_kwargs(shape), **size},
                            random_state=train_cfg.random_state, class_weight=class_weight,
                            **train_cfg.model_kwargs)

    try:
        with torch.device("meta"):
            model = build()
        if isinstance(model, nn.Module):
            probe = [nn.Parameter(torch.zeros(1))]
            optimizer = build_optimizer(train_cfg.optimizer, probe, train_cfg.lr,
                                        train_cfg.weight_decay, train_cfg.optimizer_kwargs)
            build_schedule(train_cfg.scheduler, optimizer, train_cfg.max_epochs, 1,
                           monitor_mode(train_cfg.monitor), train_cfg.scheduler_kwargs)
    except InvalidParameterError:
        raise
    except Exception as exc:  # a value the model's own code rejects (width=-1, ...)
        _check_image_size(ds, spec, build, exc)
        raise InvalidParameterError(
            f"model {label!r} must be buildable with the given arguments "
            f"{dict(train_cfg.model_kwargs)}; building it failed ({type(exc).__name__}: "
            f"{exc}). Check the values (`cellbench models {label}` lists its arguments)."
        ) from exc
    if isinstance(model, nn.Module):
        _check_network_input(ds, spec, train_cfg, model, build)


def _spec_text(name: str, kwargs: Mapping[str, Any]) -> str:
    """``mlp(batchnorm=true,width=64)``, as a model is written on the command line."""
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "/".join(map(text, value))
        return str(value)

    args = ",".join(f"{k}={text(v)}" for k, v in kwargs.items())
    return f"{name}({args})" if args else name


def _check_image_size(ds: Dataset, spec: Any, build: Any, exc: Exception) -> None:
    """Raise when ``exc`` came from images too small for the network (its pooling shrinks
    them to nothing): say so, with the smallest size that works."""
    from ..models.summary import smallest_image_size

    if ds.kind != "image" or spec.family != "nn" or ds.X.ndim != 4:
        return
    c, h, w = (int(n) for n in ds.X.shape[1:])
    side = smallest_image_size(lambda hw: build(img_size=hw), c, start=max(h, w) + 1)
    if side is None:
        return
    raise InvalidParameterError(
        f"images must be at least {side}x{side} pixels for model {spec.name!r} (its pooling "
        f"would shrink smaller ones to nothing); got {h}x{w} images. Pass --resize {side} "
        "(or larger) to upsample them, or choose a model with fewer pooling steps."
    ) from exc


def _check_network_input(ds: Dataset, spec: Any, train_cfg: TrainConfig, model: nn.Module,
                         build: Any) -> None:
    """A network built on the meta device must take the data's rows in training: batch norm
    needs more than one value per channel, and images must survive the pooling."""
    from ..models.summary import forward_error, has_batchnorm

    shape = list(ds.X.shape[1:])
    rows = min(train_cfg.batch_size, len(ds.X))
    if rows < 2 and has_batchnorm(model):
        error = forward_error(model, shape, batch=1, train=True)
        if isinstance(error, ValueError) and "more than 1 value per channel" in str(error):
            off = next((k for k in ("batchnorm", "bn") if k in model_arguments(spec.name)),
                       None)
            raise InvalidParameterError(
                f"batch_size must be at least 2 for a model with batch norm "
                f"({_spec_text(spec.name, train_cfg.model_kwargs)}); got "
                f"{train_cfg.batch_size}. Batch norm cannot train on one row per batch: pass "
                "--batch-size 2 or more (e.g. 64)"
                + (f", or turn batch norm off ({off}=false)." if off else ".")
            )
    error = forward_error(model, shape, batch=2, train=False)
    # only a shape error can mean images too small: an op the meta device has no kernel for
    # (PyTorch raises NotImplementedError) or the model's own argument check says nothing
    # about the size, and training will meet it with real tensors
    if error is not None and not isinstance(error, (NotImplementedError, InvalidParameterError)):
        _check_image_size(ds, spec, build, error)


def _check_views(train_cfg: TrainConfig) -> None:
    """Warn when test-time augmentation averages views the training augmentation never
    showed the network: on BreastMNIST such views cost 1-15 points of accuracy."""
    views = train_cfg.tta
    if views not in ("flip", "d4"):
        return
    covered = trained_symmetries(train_cfg.augment)
    if TTA_VIEWS.index(views) > TTA_VIEWS.index(covered):
        missing = "flip" if covered is None else "rot90"
        warnings.warn(
            f"tta={views!r} averages over views the network never saw in training (augment="
            f"{train_cfg.augment!r} covers {covered or 'no'} views); such views usually lower "
            f"accuracy. Use --tta auto, or add {missing} to --augment if the images have no "
            "orientation.", CellbenchWarning, stacklevel=2)


def resume_epoch(run_dir: str | Path) -> int | None:
    """The last finished epoch saved in ``run_dir/checkpoints/last.pt`` (None: no checkpoint)."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    return int(read_checkpoint(last, "cellbench-train-state").get("epoch", 0))


def make_preprocessor(data_cfg: DataConfig, ds: Dataset) -> Preprocessor:
    pre = Preprocessor(data_cfg.transform, data_cfg.arcsinh_cofactor(), data_cfg.cofactors,
                       ds.aliases, group_name=ds.group_name)
    if pre.per_sample and ds.groups is None:
        step = next(s for s in pre.steps if s.startswith("sample-"))
        raise DataError(
            f"transform step {step!r} aligns each sample's markers and must know the sample "
            f"of every row; {ds.source or 'the data'!r} has no groups. Pass --groups COLUMN "
            "(e.g. --groups sample; groups= in the Python API), or drop the step.")
    return pre


def _check_kind(spec: Any, ds: Dataset) -> None:
    wanted = "image" if ds.kind == "image" else "tabular"
    if spec.input_kind not in (wanted, "any"):
        hint = ("an image model (`cellbench models --kind image`), or the baselines majority "
                "and logreg on downsampled pixels" if wanted == "image" else
                "a tabular model (`cellbench models --kind tabular`)")
        raise InvalidParameterError(
            f"model {spec.name!r} takes {spec.input_kind} input and cannot train on "
            f"{'images' if wanted == 'image' else 'a table'}; choose {hint}."
        )


def _prepare(ds: Dataset, split: Split, spec: Any, data_cfg: DataConfig) -> tuple:
    """Fit the preprocessing on training rows only; return it with the model's inputs."""
    train, val = split.train, split.val
    y_train, y_val = ds.y[train], (ds.y[val] if len(val) else None)
    if ds.kind == "table":
        pre: Any = make_preprocessor(data_cfg, ds).fit(ds.X, ds.feature_names, rows=train,
                                                       groups=ds.groups)
        # a large part goes to a network (or a streaming model) preprocessed batch by batch
        lazy = (len(train) > LARGE_ROWS and not pre.per_sample
                and (spec.family == "nn" or getattr(spec.factory, "streams_rows", False)))

        def part(rows: np.ndarray) -> Any:
            if lazy:
                return LazyRows(ds.X, rows, pre.transform)
            return pre.transform_rows(ds.X, rows, ds.groups)

        return pre, (part(train), y_train), (part(val) if len(val) else None, y_val), None
    if spec.family == "nn":
        pre = ImageNormalizer(data_cfg.image_norm).fit(ds.X[train])
        issue = pre.pixel_scale_issue()
        if issue:
            warnings.warn(issue, CellbenchWarning, stacklevel=3)
        X_val = np.ascontiguousarray(ds.X[val]) if len(val) else None
        return (pre, (np.ascontiguousarray(ds.X[train]), y_train), (X_val, y_val),
                pre.input_fn())
    # other models: downsampled pixels, or the images as stored (BaseModel.image_input)
    pre = IMAGE_INPUTS[image_input(spec.name)]()
    X_train = ds.X[train]
    pre.fit(X_train)
    X_val = pre.transform(ds.X[val]) if len(val) else None
    return pre, (pre.transform(X_train), y_train), (X_val, y_val), None


def _tensor(X: np.ndarray | LazyRows) -> Any:
    return X if isinstance(X, LazyRows) else torch.from_numpy(X)


@dataclass
class Prepared:
    """A model built for a split and its inputs, preprocessing fitted on training rows only.

    What :func:`train_model` trains; probes (:mod:`cellbench.diagnose`) run
    :func:`~cellbench.train.engine.fit` on it with their own callbacks, optimizer or schedule.
    """

    spec: Any
    model: nn.Module | BaseModel
    preprocessor: Any
    X_train: np.ndarray | LazyRows  # LazyRows: a large table's part, np.asarray makes it
    y_train: np.ndarray
    X_val: np.ndarray | LazyRows | None
    y_val: np.ndarray | None
    input_fn: Any
    n_classes: int
    classes: list[Any]
    input_shape: list[int]
    build_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # but the seed

    def rebuild(self, random_state: int) -> Prepared:
        """The same inputs with a new model seeded ``random_state`` (an ensemble member)."""
        seed_everything(random_state)
        model = create_model(self.spec.name, random_state=random_state, **self.build_kwargs)
        return dataclasses.replace(self, model=model)

    def fit_network(self, train_cfg: TrainConfig, **kwargs: Any) -> Any:
        """:func:`~cellbench.train.engine.fit` on these inputs (keyword arguments pass on)."""
        augment = Augmenter.from_spec(train_cfg.augment, self.n_classes)
        return fit(self.model, _tensor(self.X_train), torch.from_numpy(self.y_train),
                   None if self.X_val is None else _tensor(self.X_val),
                   None if self.y_val is None else torch.from_numpy(self.y_val),
                   n_classes=self.n_classes, config=train_cfg, classes=self.classes,
                   input_fn=self.input_fn, augment_fn=augment, **kwargs)


def prepare(ds: Dataset, split: Split, train_cfg: TrainConfig,
            data_cfg: DataConfig | None = None) -> Prepared:
    """Fit the preprocessing on ``split.train``, seed, and build ``train_cfg.model``."""
    data_cfg = data_cfg or DataConfig()
    spec = MODELS.get(train_cfg.model)
    _check_kind(spec, ds)
    if len(np.unique(ds.y[split.train])) < 2:  # LDA would "learn" it, logreg would crash
        raise DataError(f"the training part of split {split.name!r} must hold at least 2 "
                        f"classes to learn a classifier; it holds {len(split.train)} rows of "
                        f"{len(np.unique(ds.y[split.train]))} class(es). Change the split.")
    pre, (X_train, y_train), (X_val, y_val), input_fn = _prepare(ds, split, spec, data_cfg)
    seed_everything(train_cfg.random_state)
    class_weight = train_cfg.class_weight
    if isinstance(class_weight, Mapping):  # labels -> codes, checked against the classes
        vector = class_weight_vector(class_weight, y_train, ds.n_classes, ds.classes)
        class_weight = dict(enumerate(vector.tolist()))
    shape = list(ds.X.shape[1:])
    build = dict(n_classes=ds.n_classes, **shape_kwargs(shape), class_weight=class_weight,
                 **train_cfg.model_kwargs)
    model = create_model(spec.name, random_state=train_cfg.random_state, **build)
    return Prepared(spec, model, pre, X_train, y_train, X_val, y_val, input_fn, ds.n_classes,
                    list(ds.classes), shape, build)


def _train_network(p: Prepared, train_cfg: TrainConfig, split: Split,
                   run_dir: str | Path | None, resume: bool, progress: Any, verbose: bool,
                   callbacks: tuple[Callback, ...], member: str = "") -> Any:
    """Train ``p.model``; a member of a seed ensemble checkpoints to ``<member>.pt``. A
    checkpoint whose training finished is loaded on ``resume``, not trained further."""
    cbs: list[Callback] = [EarlyStopping(effective_monitor(train_cfg, p.X_val is not None),
                                         train_cfg.patience), *callbacks]
    resume_state = None
    if run_dir is not None:
        last = Path(run_dir) / "checkpoints" / f"{member or 'last'}.pt"
        ident = {"model_name": p.spec.name, "preprocessing": p.preprocessor.state_dict()}
        if resume and last.is_file():
            resume_state = read_checkpoint(last, "cellbench-train-state")
            if TrainConfig.from_dict(resume_state["config"]).ident() != train_cfg.ident():
                raise RunDirectoryError(
                    f"--resume must use the configuration of the interrupted run in "
                    f"{str(run_dir)!r}; the training settings differ. Rerun with the "
                    "original settings, or start a new run directory."
                )
        if resume_state is not None and resume_state.get("finished"):
            p.model.load_state_dict(resume_state["model"])
            return SimpleNamespace(history=History(resume_state["history"]),
                                   best_epoch=int(resume_state.get("best_epoch") or 0),
                                   stop_reason=resume_state.get("stop_reason"))
        cbs.append(Checkpoint(last, extra=ident))
    if progress is not None or verbose:
        what = f"{p.spec.name} [{split.name}]" + (f" {member}" if member else "")
        cbs.append(ProgressBar(what, progress=progress))
    return p.fit_network(train_cfg, callbacks=cbs, resume=resume_state)


def _train_members(p: Prepared, train_cfg: TrainConfig, split: Split, **kwargs: Any) -> tuple:
    """Train the network, or each member of a seed ensemble (``train_cfg.ensemble``), on the
    same inputs: member ``i`` is built and trained with :func:`member_seed` ``(seed, i)``.
    Extra callbacks (a tuning pruner) watch the first member only."""
    n = train_cfg.ensemble
    if n == 1:
        state = _train_network(p, train_cfg, split, **kwargs)
        return p.model.cpu().eval(), state, {}
    models, states, members = [], [], []
    for i in range(n):
        seed = member_seed(train_cfg.random_state, i)
        q = p if i == 0 else p.rebuild(seed)
        cfg = train_cfg.replace(random_state=seed, ensemble=1)
        state = _train_network(q, cfg, split, **{**kwargs, "callbacks": kwargs["callbacks"]
                                                 if i == 0 else ()},
                               member="" if i == 0 else f"member{i}")
        models.append(q.model.cpu().eval())
        states.append(state)
        members.append({"seed": seed, "epochs": len(state.history),
                        "best_epoch": state.best_epoch, "stop_reason": state.stop_reason})
    return SeedEnsemble(models).eval(), states[0], {"members": members}


def train_model(ds: Dataset, split: Split, train_cfg: TrainConfig,
                data_cfg: DataConfig | None = None, *, run_dir: str | Path | None = None,
                resume: bool = False, progress: Any = None, verbose: bool = False,
                callbacks: tuple[Callback, ...] = (),
                on_iteration: Any = None) -> FittedModel:
    """Fit ``train_cfg.model`` on ``split.train`` (early stopping on ``split.val``).

    Parameters
    ----------
    ds : Dataset
    split : Split
        Only ``train`` and ``val`` rows are touched; ``test`` is for the caller, once.
    train_cfg : TrainConfig
    data_cfg : DataConfig, optional
        Preprocessing settings (default: standardize).
    run_dir : path, optional
        Networks checkpoint here after every epoch (``checkpoints/last.pt``).
    resume : bool
        Continue from ``run_dir/checkpoints/last.pt`` (same configuration required).
    progress : rich.progress.Progress, optional
        Shared display; otherwise a bar of its own when ``verbose``.
    callbacks : tuple of Callback
        Extra callbacks for networks (e.g. a tuning pruner).
    on_iteration : callable, optional
        ``(value, iteration)`` hook for boosted trees (tuning reports through it).
    """
    p = prepare(ds, split, train_cfg, data_cfg)
    model = p.model
    start = time.perf_counter()
    history, best_epoch, stop_reason, info = History(), 0, None, {}
    if isinstance(model, BaseModel):
        model.on_iteration = on_iteration
        try:
            model.fit(p.X_train, p.y_train, p.X_val, p.y_val)
        finally:
            model.on_iteration = None
        info = model.fit_info()
    else:
        model, state, info = _train_members(p, train_cfg, split, run_dir=run_dir,
                                            resume=resume, progress=progress,
                                            verbose=verbose, callbacks=callbacks)
        history, best_epoch, stop_reason = state.history, state.best_epoch, state.stop_reason
    return FittedModel(
        name=p.spec.name, model_kwargs={**p.spec.defaults, **train_cfg.model_kwargs},
        model=model, preprocessor=p.preprocessor, classes=list(ds.classes),
        feature_names=list(ds.feature_names), config=train_cfg, target=ds.target,
        input_shape=p.input_shape, aliases=dict(ds.aliases), history=history,
        best_epoch=best_epoch, stop_reason=stop_reason,
        fit_seconds=time.perf_counter() - start, info=info,
    )
