"""CellbenchClassifier: any registry model behind the scikit-learn estimator API.

>>> import numpy as np
>>> from cellbench import CellbenchClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 5)); y = (X[:, 0] > 0).astype(int)
>>> clf = CellbenchClassifier(model="mlp", max_epochs=5, random_state=0).fit(X, y)
>>> clf.predict(X[:3]).shape
(3,)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._config import DataConfig, TrainConfig
from .data.io import from_arrays
from .data.splits import holdout_split
from .exceptions import CellbenchWarning, InvalidParameterError
from .models import MODELS
from .train.trainer import FittedModel, train_model

__all__ = ["CellbenchClassifier"]


class CellbenchClassifier(ClassifierMixin, BaseEstimator):
    """Train a cellbench model (network, gradient boosting or baseline) on a table.

    ``fit`` holds out ``val_size`` of the rows (grouped by ``groups`` when given) for early
    stopping, fits the preprocessing on the remaining training rows only, and trains.

    Parameters
    ----------
    model : str
        Registry name (``cellbench models`` lists them), e.g. ``"mlp"``, ``"cnn1d-seed"``,
        ``"lightgbm"``.
    model_kwargs : dict, optional
        The model's own arguments, e.g. ``{"width": 256, "dropout": 0.2}``.
    preprocessing : sequence of str
        Steps fitted on training rows only: ``arcsinh``, ``standardize``, ``quantile``,
        and ``sample-standardize`` / ``sample-quantile``, which align each sample (``groups``
        of :meth:`fit` and :meth:`predict_proba`) to the training samples.
    cofactor : float
        arcsinh cofactor (5 for mass, 150 for flow cytometry).
    optimizer, lr, weight_decay, scheduler, max_epochs, batch_size, patience, class_weight,
    sampler, grad_clip, label_smoothing, ema, ensemble, device
        As in :class:`cellbench.TrainConfig` (networks only, except ``class_weight``);
        ``ensemble=5`` trains 5 networks with different seeds and averages their
        probabilities.
    val_size : float
        Fraction of rows held out for early stopping (0 disables it).
    random_state : int or None
        Seed of the validation split, weights and batch order. None draws one.
    verbose : int
        1 shows a progress bar.

    Attributes
    ----------
    classes_ : ndarray
        Labels seen in ``fit``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names.
    model_ : FittedModel
        The trained model with its preprocessing.
    history_ : list of dict
        Per-epoch records (networks).
    best_epoch_ : int
        Epoch whose weights were kept.
    """

    def __init__(self, model: str = "mlp", *, model_kwargs: Mapping[str, Any] | None = None,
                 preprocessing: Sequence[str] = ("standardize",), cofactor: float = 5.0,
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 scheduler: str | None = None, max_epochs: int = 100, batch_size: int = 256,
                 patience: int | None = 10, class_weight: str | None = None,
                 sampler: str | None = None, grad_clip: float | None = None,
                 label_smoothing: float = 0.0, ema: float | None = None, ensemble: int = 1,
                 val_size: float = 0.15, device: str = "auto", random_state: int | None = None,
                 verbose: int = 0) -> None:
        self.model = model
        self.model_kwargs = model_kwargs
        self.preprocessing = preprocessing
        self.cofactor = cofactor
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.class_weight = class_weight
        self.sampler = sampler
        self.grad_clip = grad_clip
        self.label_smoothing = label_smoothing
        self.ema = ema
        self.ensemble = ensemble
        self.val_size = val_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _configs(self, seed: int) -> tuple[TrainConfig, DataConfig]:
        name = type(self).__name__
        MODELS.get(self.model)
        if not (isinstance(self.val_size, (int, float)) and 0 <= self.val_size < 1):
            raise InvalidParameterError(
                f"The 'val_size' parameter of {name} must be a float in [0, 1). Got "
                f"{self.val_size!r} instead."
            )
        try:
            train = TrainConfig(
                model=self.model, model_kwargs=dict(self.model_kwargs or {}),
                random_state=seed, class_weight=self.class_weight, optimizer=self.optimizer,
                lr=self.lr, weight_decay=self.weight_decay, scheduler=self.scheduler,
                max_epochs=self.max_epochs, batch_size=self.batch_size,
                patience=self.patience if self.val_size > 0 else None,
                sampler=self.sampler, grad_clip=self.grad_clip,
                label_smoothing=self.label_smoothing, ema=self.ema, ensemble=self.ensemble,
                device=self.device)
            data = DataConfig(transform=tuple(self.preprocessing), cofactor=self.cofactor)
        except InvalidParameterError as exc:
            # "train.lr must be ..." -> "The 'lr' parameter of CellbenchClassifier must be ..."
            msg = str(exc)
            for prefix in ("train.", "data."):
                msg = msg.replace(prefix, "", 1) if msg.startswith(prefix) else msg
            head, _, rest = msg.partition(" must ")
            if rest and " " not in head:
                msg = f"The {head!r} parameter of {name} must {rest}"
            raise InvalidParameterError(msg) from exc
        return train, data

    def fit(self, X: Any, y: Any, groups: Any = None) -> CellbenchClassifier:
        """Fit on ``X`` (n_samples, n_features) and labels ``y``.

        ``groups`` (patient/sample per row) keeps each group on one side of the held-out
        validation rows.
        """
        seed = (int(np.random.randint(0, 2**31 - 1)) if self.random_state is None
                else int(self.random_state))
        train_cfg, data_cfg = self._configs(seed)
        # shape, dtype, sparse/complex input, y checks; NaN/inf are reported by from_arrays,
        # which says how many and where
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float32, ensure_all_finite=False,
                                     ensure_min_samples=2)
        check_classification_targets(y_arr)
        names = getattr(self, "feature_names_in_", None)
        ds = from_arrays(X_arr, y_arr, groups=groups,
                         feature_names=None if names is None else [str(n) for n in names])
        val = self.val_size if ds.n_samples >= 10 else 0.0
        split = holdout_split(ds.y, ds.groups, val_size=val, test_size=0.0, random_state=seed,
                              classes=ds.classes)
        self.model_: FittedModel = train_model(ds, split, train_cfg, data_cfg,
                                               verbose=bool(self.verbose))
        self.classes_ = np.asarray(ds.classes)
        self.history_ = list(self.model_.history)
        self.best_epoch_ = self.model_.best_epoch
        reason = self.model_.stop_reason or ""
        if reason.startswith("diverged"):  # a fitted estimator must not pass as a good one
            warnings.warn(f"{self.model!r} failed to train ({reason}); its predictions mean "
                          "nothing.", CellbenchWarning, stacklevel=2)
        return self

    def predict_proba(self, X: Any, groups: Any = None) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        ``groups`` names each row's sample for ``preprocessing`` steps that align samples
        (``sample-standardize``, ``sample-quantile``); None: the rows are one sample.
        """
        check_is_fitted(self, "model_")
        X_arr = validate_data(self, X, reset=False, dtype=np.float32, ensure_all_finite=False)
        bad = ~np.isfinite(X_arr)
        if bad.any():
            raise InvalidParameterError(
                f"X must be finite; got {int(bad.sum())} NaN or inf values (first in row "
                f"{int(np.argmax(bad.any(axis=1))) + 1}). Impute or drop those rows first."
            )
        if groups is not None and len(groups) != len(X_arr):
            raise InvalidParameterError(f"groups must hold one sample id per row of X "
                                        f"({len(X_arr)}); got {len(groups)}.")
        return self.model_.predict_proba(X_arr, device=self.device,
                                         groups=None if groups is None else np.asarray(groups))

    def predict(self, X: Any, groups: Any = None) -> np.ndarray:
        """Predicted labels (``groups`` as in :meth:`predict_proba`)."""
        check_is_fitted(self, "model_")
        return self.classes_[self.predict_proba(X, groups).argmax(axis=1)]
