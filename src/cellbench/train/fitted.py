"""A trained model: prediction on raw rows or images, and its one-file checkpoint.

:class:`FittedModel` is what :func:`~cellbench.train.trainer.train_model` returns: the network
(or a model that fits itself), its fitted preprocessing and what it was trained on. It saves
to one ``weights_only`` checkpoint, and :func:`load_model` checks everything it reads before
building anything from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._augment_spec import trained_symmetries
from .._config import TrainConfig
from .._utils import atomic_torch_save, format_list, resolve_device, to_builtin
from ..data.transforms import ImageNormalizer, preprocessor_from_state
from ..exceptions import InvalidParameterError, RunDirectoryError
from ..models import MODELS, BaseModel, SeedEnsemble, count_parameters, create_model
from .engine import History, channels_last_fn, predict_logits

__all__ = ["MAX_PARAMETERS", "MODEL_FORMAT", "FittedModel", "load_model", "read_checkpoint",
           "shape_kwargs", "tta_views"]


def tta_views(tta: str | None, square: bool) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The views of an image batch ``(N, C, H, W)`` that test-time augmentation averages.

    ``flip``: the image and its horizontal, vertical and double flips (4 views). ``d4``: the
    8 symmetries of a square (those 4 and the same after a transpose, i.e. the 90-degree
    rotations and both diagonal mirrors); a non-square image gets the 4 flips, the
    symmetries that keep its shape. None: the image alone.

    >>> x = torch.arange(4.).view(1, 1, 2, 2)
    >>> len(tta_views("d4", True)), len({tuple(v(x).flatten().tolist())
    ...                                  for v in tta_views("d4", True)})
    (8, 8)
    """
    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    if tta is None:
        return [identity]
    flips = [identity, lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.flip(-2, -1)]
    if tta == "d4" and square:
        return [*flips, *[lambda x, f=f: f(x.transpose(-2, -1)) for f in flips]]
    return flips

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

    def network_inputs(self, X: np.ndarray, groups: np.ndarray | None = None,
                       stats_by_sample: Any = None) -> tuple[torch.Tensor, Any]:
        """The tensor a network consumes and the on-device input function (images);
        ``groups`` and ``stats_by_sample`` as in :meth:`predict_proba`."""
        X = self._check_input(X)
        if isinstance(self.preprocessor, ImageNormalizer):
            fn = self.preprocessor.input_fn()
            if self.config.channels_last:
                fn = channels_last_fn(fn)
            X = X if X.flags.writeable and X.flags.c_contiguous else np.array(X)
            return torch.from_numpy(X), fn
        return torch.from_numpy(self._transform(X, groups, stats_by_sample)), None

    def _transform(self, X: np.ndarray, groups: np.ndarray | None,
                   stats_by_sample: Any) -> np.ndarray:
        if getattr(self.preprocessor, "per_sample", False):
            return self.preprocessor.transform(X, groups, stats_by_sample)
        return self.preprocessor.transform(X)

    def predict_proba(self, X: np.ndarray, device: str = "auto", batch_size: int = 4096,
                      groups: np.ndarray | None = None,
                      stats_by_sample: Any = None) -> np.ndarray:
        """Class probabilities for raw (un-preprocessed) rows or images.

        A model whose preprocessing aligns each sample (``--transform sample-*``) normalises
        the rows of each sample named by ``groups`` (None: all rows are one sample) with
        that sample's statistics: from these rows, or ``stats_by_sample[group]``
        (:meth:`~cellbench.data.transforms.Preprocessor.sample_statistics`) for data
        predicted in chunks.
        """
        if isinstance(self.model, BaseModel):
            return self.model.predict_proba(
                self._transform(self._check_input(X), groups, stats_by_sample))
        dev = resolve_device(device)
        self.model.to(dev)
        inputs, input_fn = self.network_inputs(X, groups, stats_by_sample)
        image = self.kind == "image"
        tta = self.config.tta
        if tta == "auto":  # the views the training augmentation covered
            tta = trained_symmetries(self.config.augment)
        views = tta_views(tta if image else None,
                          image and self.input_shape[1] == self.input_shape[2])
        proba = None
        for view in views:  # test-time augmentation: the mean over the views' probabilities
            fn = input_fn if len(views) == 1 else (lambda xb, v=view: input_fn(v(xb)))
            logits = predict_logits(self.model, inputs, batch_size=batch_size, device=dev,
                                    input_fn=fn, amp=self.config.amp)
            p = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
            proba = p if proba is None else proba + p
        return proba / len(views)

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


def model_file(path: str | Path) -> Path:
    """``path``, or the ``model.pt`` in the run directory ``path`` (a train run's)."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "model.pt").is_file():
        return path / "model.pt"
    units = sorted(path.glob("units/*/seed*/*/model.pt"))
    hint = (f"; this run keeps one per unit, e.g. {str(units[0])!r}" if units else
            "; `cellbench train` writes one into its run directory")
    raise RunDirectoryError(f"model file must be a model.pt file or a run directory holding "
                            f"one; got the folder {str(path)!r}, which holds none{hint}.")


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in one line (never PyTorch's advice to unpickle unsafely)."""
    text = str(exc)
    if "weights_only" in text:
        return ("it holds Python objects other than tensors and plain data, which are never "
                "loaded (they could run code)")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def read_checkpoint(path: Path, expected: str) -> dict[str, Any]:
    if not path.exists():
        raise RunDirectoryError(f"model file must exist; got {str(path)!r}, which does not.")
    if not path.is_file():
        raise RunDirectoryError(f"model file must be a file; got {str(path)!r}, which is not.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunDirectoryError(
            f"model file {str(path)!r} must be a cellbench checkpoint; loading failed "
            f"({_load_failure(exc)}). It may be truncated or another kind of file; retrain "
            "or use a backup."
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
    kwargs = dict(n_classes=len(ckpt["classes"]), **shape_kwargs(list(ckpt["input_shape"])),
                  random_state=config.random_state, **ckpt["model_kwargs"])
    if MODELS.get(ckpt["name"]).family != "nn":
        model = create_model(ckpt["name"], **kwargs)
        model.set_state(ckpt["state"])
        return model
    def build() -> nn.Module:  # a seed ensemble holds config.ensemble networks
        if config.ensemble == 1:
            return create_model(ckpt["name"], **kwargs)
        return SeedEnsemble([create_model(ckpt["name"], **kwargs)
                             for _ in range(config.ensemble)])

    with torch.device("meta"):
        shell = build()
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
    model = build()
    model.load_state_dict(ckpt["state"])
    return model.eval()


def load_model(path: str | Path) -> FittedModel:
    """Load a :class:`FittedModel` saved by :meth:`FittedModel.save`.

    Everything loaded is checked before it is used: required keys and types, sizes (no
    model larger than :data:`MAX_PARAMETERS` is built), weights that fit the model, and one
    prediction on a row of zeros.
    """
    path = model_file(path)
    ckpt = read_checkpoint(path, MODEL_FORMAT)
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


def shape_kwargs(shape: list[int]) -> dict[str, Any]:
    if len(shape) == 3:
        return {"in_chans": int(shape[0]), "img_size": (int(shape[1]), int(shape[2]))}
    return {"n_features": int(shape[0])}
