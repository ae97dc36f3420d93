"""Fit any registry model on a dataset split, and save/load the result.

:func:`train_model` fits the preprocessing on the training rows only, builds the model, trains
it (networks through :func:`~cellbench.train.engine.fit`, the others through their own
``fit``) and returns a :class:`FittedModel`, which predicts on raw rows and saves to one
``weights_only`` checkpoint.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._config import DataConfig, TrainConfig
from .._utils import atomic_torch_save, format_list, resolve_device, seed_everything, to_builtin
from ..data.augment import Augmenter
from ..data.dataset import Dataset
from ..data.splits import Split
from ..data.transforms import IMAGE_INPUTS, ImageNormalizer, Preprocessor, preprocessor_from_state
from ..exceptions import CellbenchWarning, DataError, InvalidParameterError, RunDirectoryError
from ..models import MODELS, BaseModel, count_parameters, create_model
from ..models._base import class_weight_vector, image_input
from .callbacks import Callback, Checkpoint, EarlyStopping, ProgressBar, monitor_mode
from .engine import History, channels_last_fn, effective_monitor, fit, predict_logits
from .optim import build_optimizer, build_schedule

__all__ = ["MAX_PARAMETERS", "FittedModel", "Prepared", "check_model", "load_model", "prepare",
           "resume_epoch", "train_model"]

MODEL_FORMAT = "cellbench-model"


@dataclass
class FittedModel:
    """A trained model with everything needed to predict on raw rows.

    Attributes
    ----------
    name : str
        Registry name.
    model : nn.Module or BaseModel
    preprocessor : Preprocessor, ImageNormalizer, PixelFeatures or RawImages
        Fitted on the training rows.
    classes : list
        Original labels; column ``k`` of :meth:`predict_proba` is ``classes[k]``.
    feature_names : list of str
    history : History
        Per-epoch records (networks only).
    best_epoch : int
        Epoch whose weights were kept (networks only).
    stop_reason : str or None
        Why training ended before ``max_epochs`` (early stopping, divergence).
    """

    name: str
    model_kwargs: dict[str, Any]
    model: nn.Module | BaseModel
    preprocessor: Any
    classes: list[Any]
    feature_names: list[str]
    config: TrainConfig
    target: str = "label"
    input_shape: list[int] = field(default_factory=list)  # (n_features,) or (C, H, W)
    aliases: dict[str, str] = field(default_factory=dict)
    history: History = field(default_factory=History)
    best_epoch: int = 0
    stop_reason: str | None = None
    fit_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return MODELS.get(self.name).family

    @property
    def n_params(self) -> int:
        return count_parameters(self.model)

    @property
    def kind(self) -> str:
        return "image" if len(self.input_shape) == 3 else "table"

    def _check_input(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if list(X.shape[1:]) != self.input_shape:
            what = "images of shape (C, H, W) =" if self.kind == "image" else "rows with"
            raise InvalidParameterError(
                f"X must hold {what} {tuple(self.input_shape)}"
                f"{'' if self.kind == 'image' else ' features'}, as in training; got shape "
                f"{X.shape}." + (" Resize the images (--resize) to match."
                                 if self.kind == "image" else "")
            )
        return X

    def network_inputs(self, X: np.ndarray) -> tuple[torch.Tensor, Any]:
        """The tensor a network consumes and the on-device input function (images)."""
        X = self._check_input(X)
        if isinstance(self.preprocessor, ImageNormalizer):
            fn = self.preprocessor.input_fn()
            if self.config.channels_last:
                fn = channels_last_fn(fn)
            X = X if X.flags.writeable and X.flags.c_contiguous else np.array(X)
            return torch.from_numpy(X), fn
        return torch.from_numpy(self.preprocessor.transform(X)), None

    def predict_proba(self, X: np.ndarray, device: str = "auto",
                      batch_size: int = 4096) -> np.ndarray:
        """Class probabilities for raw (un-preprocessed) rows or images."""
        if isinstance(self.model, BaseModel):
            return self.model.predict_proba(self.preprocessor.transform(self._check_input(X)))
        dev = resolve_device(device)
        self.model.to(dev)
        inputs, input_fn = self.network_inputs(X)
        logits = predict_logits(self.model, inputs, batch_size=batch_size, device=dev,
                                input_fn=input_fn, amp=self.config.amp)
        return torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Original labels for raw rows."""
        return np.asarray(self.classes, dtype=object)[self.predict_proba(X).argmax(1)]

    # -- persistence ----------------------------------------------------------------------
    def to_checkpoint(self) -> dict[str, Any]:
        if isinstance(self.model, nn.Module):
            state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        else:
            state = self.model.get_state()
        return {
            "format": MODEL_FORMAT, "version": 1,
            "name": self.name, "model_kwargs": to_builtin(self.model_kwargs),
            "state": state, "preprocessing": self.preprocessor.state_dict(),
            "classes": to_builtin(self.classes), "feature_names": list(self.feature_names),
            "input_shape": list(self.input_shape),
            "target": self.target, "aliases": dict(self.aliases),
            "config": self.config.to_dict(), "history": [dict(r) for r in self.history],
            "best_epoch": self.best_epoch, "stop_reason": self.stop_reason,
            "fit_seconds": self.fit_seconds, "info": to_builtin(self.info),
        }

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` atomically (loads with ``weights_only=True``)."""
        atomic_torch_save(self.to_checkpoint(), path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FittedModel:
        return load_model(path)


def _read_checkpoint(path: Path, expected: str) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirectoryError(f"model file must exist; got {str(path)!r}, which does not.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunDirectoryError(
            f"model file {str(path)!r} must be a cellbench checkpoint; loading failed "
            f"({type(exc).__name__}: {exc}). It may be truncated; retrain or use a backup."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != expected:
        raise RunDirectoryError(
            f"model file {str(path)!r} must be a {expected!r} checkpoint; got "
            f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}."
        )
    return ckpt


#: what a model checkpoint must hold, and the type of each value
_MODEL_KEYS = {"name": str, "model_kwargs": dict, "state": dict, "preprocessing": dict,
               "classes": list, "feature_names": list, "input_shape": list, "config": dict,
               "target": str}
MAX_PARAMETERS = 2_000_000_000  # a loaded model larger than this is refused before it is built


def _check_model_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Keys, types and sizes of a model checkpoint, checked before anything is built."""
    where = f"model file {str(path)!r}"
    missing = [k for k in _MODEL_KEYS if k not in ckpt]
    wrong = [f"{k!r} ({type(ckpt[k]).__name__}, not {t.__name__})"
             for k, t in _MODEL_KEYS.items() if k in ckpt and not isinstance(ckpt[k], t)]
    if missing or wrong:
        raise RunDirectoryError(
            f"{where} must hold a complete cellbench model; "
            + (f"it lacks {', '.join(map(repr, missing))}" if missing else "")
            + ("; " if missing and wrong else "") + (f"it has {', '.join(wrong)}" if wrong
                                                     else "")
            + ". It is damaged or was not written by cellbench: retrain it.")
    shape = ckpt["input_shape"]
    if not (len(shape) in (1, 3) and all(isinstance(v, int) and 0 < v <= 10**6 for v in shape)
            and int(np.prod(shape)) <= 10**8):
        raise RunDirectoryError(f"{where} must give an input shape of 1 or 3 positive sizes; "
                                f"got {shape!r}. It is damaged: retrain it.")
    if not 2 <= len(ckpt["classes"]) <= 10**6:
        raise RunDirectoryError(f"{where} must list between 2 and 10^6 classes; got "
                                f"{len(ckpt['classes'])}. It is damaged: retrain it.")
    if ckpt["name"] not in MODELS:
        raise RunDirectoryError(f"{where} names model {ckpt['name']!r}, which this cellbench "
                                "does not know; use the cellbench version that wrote it.")


def _build_checked(ckpt: dict[str, Any], config: TrainConfig, path: Path) -> Any:
    """The checkpoint's model, built only after a free build on the meta device shows that
    its parameter count is sane and its shapes match the saved weights."""
    kwargs = dict(n_classes=len(ckpt["classes"]), **_shape_kwargs(list(ckpt["input_shape"])),
                  random_state=config.random_state, **ckpt["model_kwargs"])
    if MODELS.get(ckpt["name"]).family != "nn":
        model = create_model(ckpt["name"], **kwargs)
        model.set_state(ckpt["state"])
        return model
    with torch.device("meta"):
        shell = create_model(ckpt["name"], **kwargs)
    n_params = sum(p.numel() for p in shell.parameters())
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["state"].items() if isinstance(v, torch.Tensor)}
    if n_params > MAX_PARAMETERS or expected != got:
        differ = sorted(set(expected) ^ set(got)) or [k for k in expected
                                                      if expected[k] != got.get(k)]
        raise RunDirectoryError(
            f"model file {str(path)!r} must hold weights for the model it describes; it asks "
            f"for {ckpt['name']!r} with {n_params:,} parameters"
            + (f" (more than {MAX_PARAMETERS:,})" if n_params > MAX_PARAMETERS else "")
            + (f", and its weights differ in {format_list(differ, 3)}" if expected != got
               else "")
            + ". It is damaged or crafted: retrain it.")
    model = create_model(ckpt["name"], **kwargs)
    model.load_state_dict(ckpt["state"])
    return model.eval()


def load_model(path: str | Path) -> FittedModel:
    """Load a :class:`FittedModel` saved by :meth:`FittedModel.save`.

    Everything loaded is checked before it is used: required keys and types, sizes (no
    model larger than :data:`MAX_PARAMETERS` is built), weights that fit the model, and one
    prediction on a row of zeros.
    """
    path = Path(path)
    ckpt = _read_checkpoint(path, MODEL_FORMAT)
    _check_model_checkpoint(ckpt, path)
    try:
        config = TrainConfig.from_dict(ckpt["config"])
        fm = FittedModel(
            name=ckpt["name"], model_kwargs=dict(ckpt["model_kwargs"]),
            model=_build_checked(ckpt, config, path),
            preprocessor=preprocessor_from_state(ckpt["preprocessing"]),
            input_shape=list(ckpt["input_shape"]), classes=list(ckpt["classes"]),
            feature_names=list(ckpt["feature_names"]), config=config, target=ckpt["target"],
            aliases=dict(ckpt.get("aliases") or {}), history=History(ckpt.get("history") or []),
            best_epoch=int(ckpt.get("best_epoch") or 0), stop_reason=ckpt.get("stop_reason"),
            fit_seconds=float(ckpt.get("fit_seconds") or 0.0), info=dict(ckpt.get("info") or {}),
        )
        proba = fm.predict_proba(np.zeros((1, *fm.input_shape), np.float32), device="cpu")
        if proba.shape != (1, len(fm.classes)):
            raise ValueError(f"a prediction has shape {proba.shape}, not (1, {len(fm.classes)})")
    except RunDirectoryError:
        raise
    except Exception as exc:  # anything a damaged or crafted file makes the build raise
        raise RunDirectoryError(
            f"model file {str(path)!r} must hold a model cellbench can rebuild; rebuilding "
            f"failed ({type(exc).__name__}: {exc}). It is damaged or was not written by "
            "cellbench: retrain it."
        ) from exc
    return fm


def check_model(ds: Dataset, train_cfg: TrainConfig) -> None:
    """Everything about ``train_cfg`` that can fail, checked without training: the device,
    the model's input kind, its arguments (built for free on the meta device), class weights,
    optimizer and schedule settings. Jobs call it before they create a run directory."""
    resolve_device(train_cfg.device)
    spec = MODELS.get(train_cfg.model)
    _check_kind(spec, ds)
    if train_cfg.augment and ds.kind != "image":
        raise InvalidParameterError(f"augment must not be set for a table; got "
                                    f"{train_cfg.augment!r}. Augmentation transforms images; "
                                    "drop --augment.")
    class_weight = train_cfg.class_weight
    if isinstance(class_weight, Mapping):
        vector = class_weight_vector(class_weight, ds.y, ds.n_classes, ds.classes)
        class_weight = dict(enumerate(vector.tolist()))
    label = train_cfg.model
    try:
        with torch.device("meta"):
            model = create_model(spec.name, n_classes=ds.n_classes,
                                 **_shape_kwargs(list(ds.X.shape[1:])),
                                 random_state=train_cfg.random_state,
                                 class_weight=class_weight, **train_cfg.model_kwargs)
        if isinstance(model, nn.Module):
            probe = [nn.Parameter(torch.zeros(1))]
            optimizer = build_optimizer(train_cfg.optimizer, probe, train_cfg.lr,
                                        train_cfg.weight_decay, train_cfg.optimizer_kwargs)
            build_schedule(train_cfg.scheduler, optimizer, train_cfg.max_epochs, 1,
                           monitor_mode(train_cfg.monitor), train_cfg.scheduler_kwargs)
    except InvalidParameterError:
        raise
    except Exception as exc:  # a value the model's own code rejects (width=-1, ...)
        raise InvalidParameterError(
            f"model {label!r} must be buildable with the given arguments "
            f"{dict(train_cfg.model_kwargs)}; building it failed ({type(exc).__name__}: "
            f"{exc}). Check the values (`cellbench models {label}` lists its arguments)."
        ) from exc


def resume_epoch(run_dir: str | Path) -> int | None:
    """The last finished epoch saved in ``run_dir/checkpoints/last.pt`` (None: no checkpoint)."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    return int(_read_checkpoint(last, "cellbench-train-state").get("epoch", 0))


def make_preprocessor(data_cfg: DataConfig, ds: Dataset) -> Preprocessor:
    return Preprocessor(data_cfg.transform, data_cfg.arcsinh_cofactor(), data_cfg.cofactors,
                        ds.aliases)


def _shape_kwargs(shape: list[int]) -> dict[str, Any]:
    if len(shape) == 3:
        return {"in_chans": int(shape[0]), "img_size": (int(shape[1]), int(shape[2]))}
    return {"n_features": int(shape[0])}


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
        pre: Any = make_preprocessor(data_cfg, ds).fit(ds.X, ds.feature_names, rows=train)
        X_val = pre.transform_rows(ds.X, val) if len(val) else None
        return pre, (pre.transform_rows(ds.X, train), y_train), (X_val, y_val), None
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


@dataclass
class Prepared:
    """A model built for a split and its inputs, preprocessing fitted on training rows only.

    What :func:`train_model` trains; probes (:mod:`cellbench.diagnose`) run
    :func:`~cellbench.train.engine.fit` on it with their own callbacks, optimizer or schedule.
    """

    spec: Any
    model: nn.Module | BaseModel
    preprocessor: Any
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    input_fn: Any
    n_classes: int
    classes: list[Any]
    input_shape: list[int]

    def fit_network(self, train_cfg: TrainConfig, **kwargs: Any) -> Any:
        """:func:`~cellbench.train.engine.fit` on these inputs (keyword arguments pass on)."""
        augment = Augmenter.from_spec(train_cfg.augment, self.n_classes)
        return fit(self.model, torch.from_numpy(self.X_train), torch.from_numpy(self.y_train),
                   None if self.X_val is None else torch.from_numpy(self.X_val),
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
    model = create_model(spec.name, n_classes=ds.n_classes, **_shape_kwargs(shape),
                         random_state=train_cfg.random_state, class_weight=class_weight,
                         **train_cfg.model_kwargs)
    return Prepared(spec, model, pre, X_train, y_train, X_val, y_val, input_fn, ds.n_classes,
                    list(ds.classes), shape)


def _train_network(p: Prepared, train_cfg: TrainConfig, split: Split,
                   run_dir: str | Path | None, resume: bool, progress: Any, verbose: bool,
                   callbacks: tuple[Callback, ...]) -> Any:
    cbs: list[Callback] = [EarlyStopping(effective_monitor(train_cfg, p.X_val is not None),
                                         train_cfg.patience), *callbacks]
    resume_state = None
    if run_dir is not None:
        last = Path(run_dir) / "checkpoints" / "last.pt"
        ident = {"model_name": p.spec.name, "preprocessing": p.preprocessor.state_dict()}
        if resume and last.is_file():
            resume_state = _read_checkpoint(last, "cellbench-train-state")
            if resume_state["config"] != train_cfg.to_dict():
                raise RunDirectoryError(
                    f"--resume must use the configuration of the interrupted run in "
                    f"{str(run_dir)!r}; the training settings differ. Rerun with the "
                    "original settings, or start a new run directory."
                )
        cbs.append(Checkpoint(last, extra=ident))
    if progress is not None or verbose:
        cbs.append(ProgressBar(f"{p.spec.name} [{split.name}]", progress=progress))
    return p.fit_network(train_cfg, callbacks=cbs, resume=resume_state)


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
        state = _train_network(p, train_cfg, split, run_dir, resume, progress, verbose,
                               callbacks)
        history, best_epoch, stop_reason = state.history, state.best_epoch, state.stop_reason
        model.cpu().eval()
    return FittedModel(
        name=p.spec.name, model_kwargs={**p.spec.defaults, **train_cfg.model_kwargs},
        model=model, preprocessor=p.preprocessor, classes=list(ds.classes),
        feature_names=list(ds.feature_names), config=train_cfg, target=ds.target,
        input_shape=p.input_shape, aliases=dict(ds.aliases), history=history,
        best_epoch=best_epoch, stop_reason=stop_reason,
        fit_seconds=time.perf_counter() - start, info=info,
    )
