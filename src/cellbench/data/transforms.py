"""Feature preprocessing fitted on the training part only, saved with the model.

Steps run in the given order:

``arcsinh``
    ``asinh(x / cofactor)`` per channel: the field's variance-stabilising transform
    (cofactor 5 for mass cytometry, 150 for flow cytometry; per-channel overrides).
``standardize``
    Subtract the training mean, divide by the training standard deviation.
``quantile``
    Map each feature through its training quantiles onto a standard normal.

>>> import numpy as np
>>> X = np.array([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]], dtype=np.float32)
>>> pre = Preprocessor(("standardize",)).fit(X, ["a", "b"])
>>> [round(float(v), 3) for v in pre.transform(X)[:, 0]]
[-1.225, 0.0, 1.225]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri

from .._config import TRANSFORMS
from ..exceptions import InvalidParameterError, NotFittedError

__all__ = ["IMAGE_INPUTS", "IMAGE_NORMS", "ImageNormalizer", "PixelFeatures", "Preprocessor",
           "RawImages", "preprocessor_from_state"]

N_QUANTILES = 1000


#: above this many training rows, statistics and transforms go a chunk of rows at a time
LARGE_ROWS = 1 << 20
CHUNK_ROWS = 1 << 16


class Preprocessor:
    """Fit-on-train feature transform for tables.

    Parameters
    ----------
    steps : sequence of {"arcsinh", "standardize", "quantile"}
        Applied in order. An empty sequence leaves values unchanged.
    cofactor : float
        arcsinh cofactor for channels without their own.
    cofactors : mapping of str to float
        Per-channel arcsinh cofactors by feature name (or alias).
    aliases : mapping of str to str
        Other names of features (FCS ``$PnS`` → ``$PnN``), so cofactors can name markers.

    Attributes
    ----------
    feature_names_ : list of str
    cofactors_ : ndarray
    mean_, scale_ : ndarray
    quantiles_ : ndarray of shape (N_QUANTILES, n_features)
    """

    def __init__(self, steps: Sequence[str] = ("standardize",), cofactor: float = 5.0,
                 cofactors: Mapping[str, float] | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
        unknown = [s for s in steps if s not in TRANSFORMS]
        if unknown:
            raise InvalidParameterError(
                f"transform steps must be among {', '.join(TRANSFORMS)}; got {unknown}."
            )
        if not cofactor > 0:
            raise InvalidParameterError(f"cofactor must be > 0; got {cofactor!r}.")
        self.steps = tuple(steps)
        self.cofactor = float(cofactor)
        self.cofactors = dict(cofactors or {})
        self.aliases = dict(aliases or {})
        self.fitted_ = False

    def fit(self, X: np.ndarray, feature_names: Sequence[str],
            rows: np.ndarray | None = None) -> Preprocessor:
        """Learn the statistics of each step from training rows ``X`` (``X[rows]``).

        Above :data:`LARGE_ROWS` training rows (and without the quantile step) the
        statistics are summed in chunks of rows, so no copy of the training rows is made.
        """
        X = np.asarray(X, dtype=np.float32)
        names = list(feature_names)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise InvalidParameterError(
                f"X must be 2-D with {len(names)} columns (one per feature name); got shape "
                f"{X.shape}."
            )
        self.feature_names_ = names
        cof = np.full(len(names), self.cofactor, dtype=np.float32)
        for key, value in self.cofactors.items():
            name = self.aliases.get(key, key)
            if name not in names:
                raise InvalidParameterError(
                    f"cofactor channel must be a feature; got {key!r}. Features: "
                    f"{', '.join(names[:12])}."
                )
            if not value > 0:
                raise InvalidParameterError(f"cofactor for {key!r} must be > 0; got {value!r}.")
            cof[names.index(name)] = value
        self.cofactors_ = cof
        self.mean_ = np.zeros(len(names), np.float32)
        self.scale_ = np.ones(len(names), np.float32)
        self.quantiles_ = np.zeros((0, len(names)), np.float32)
        if rows is not None and len(rows) > LARGE_ROWS and "quantile" not in self.steps:
            self._fit_in_chunks(X, rows)
            self.fitted_ = True
            return self
        Z = X if rows is None else X[rows]
        for step in self.steps:
            if step == "standardize":
                self.mean_ = Z.mean(axis=0, dtype=np.float64).astype(np.float32)
                std = Z.std(axis=0, dtype=np.float64).astype(np.float32)
                self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
            elif step == "quantile":
                levels = np.linspace(0, 1, min(N_QUANTILES, max(len(Z), 2)))
                self.quantiles_ = np.quantile(Z, levels, axis=0).astype(np.float32)
            Z = self._apply(step, Z)
        self.fitted_ = True
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted steps; returns float32."""
        if not self.fitted_:
            raise NotFittedError("Preprocessor must be fitted before transform; call fit(X) "
                                 "on the training rows first.")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names_):
            names = ", ".join(self.feature_names_[:8])
            more = ", ..." if len(self.feature_names_) > 8 else ""
            raise InvalidParameterError(
                f"X must have {len(self.feature_names_)} columns ({names}{more}); got shape "
                f"{X.shape}."
            )
        for step in self.steps:
            X = self._apply(step, X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def transform_rows(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``transform(X[rows])``, made a chunk of rows at a time (the same values, without a
        copy of the raw rows nor full-size temporaries)."""
        out = np.empty((len(rows), X.shape[1]), np.float32)
        for start in range(0, len(rows), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = self.transform(X[rows[start:start + CHUNK_ROWS]])
        return out

    def _chunks(self, X: np.ndarray, rows: np.ndarray, steps: Sequence[str]
                ) -> Iterator[np.ndarray]:
        for start in range(0, len(rows), CHUNK_ROWS):
            Z = np.asarray(X[rows[start:start + CHUNK_ROWS]], dtype=np.float32)
            for step in steps:
                Z = self._apply(step, Z)
            yield Z

    def _fit_in_chunks(self, X: np.ndarray, rows: np.ndarray) -> None:
        """Each step's statistics over the rows after the steps before it, in two passes
        of float64 sums (mean, then squared deviations) per standardize step."""
        done: list[str] = []
        for step in self.steps:
            if step == "standardize":
                total = sum(Z.sum(axis=0, dtype=np.float64) for Z in self._chunks(X, rows, done))
                mean = total / len(rows)
                squares = sum(np.square(Z - mean).sum(axis=0)
                              for Z in self._chunks(X, rows, done))
                std = np.sqrt(squares / len(rows)).astype(np.float32)
                self.mean_ = mean.astype(np.float32)
                self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
            done.append(step)

    def fit_transform(self, X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        return self.fit(X, feature_names).transform(X)

    def _apply(self, step: str, X: np.ndarray) -> np.ndarray:
        if step == "arcsinh":
            return np.arcsinh(X / self.cofactors_)
        if step == "standardize":
            return (X - self.mean_) / self.scale_
        # quantile: training CDF, then the normal quantile function; kept off the infinite ends
        n_levels = self.quantiles_.shape[0]
        levels = np.linspace(0, 1, n_levels)
        out = np.empty_like(X, dtype=np.float32)
        for j in range(X.shape[1]):
            q = self.quantiles_[:, j]
            # average of left/right interpolation handles repeated quantiles (ties)
            up = np.interp(X[:, j], q, levels)
            down = -np.interp(-X[:, j], -q[::-1], -levels[::-1])
            out[:, j] = 0.5 * (up + down)
        eps = 1e-7
        return ndtri(np.clip(out, eps, 1 - eps)).astype(np.float32)

    # -- persistence: plain lists, so checkpoints load with torch.load(weights_only=True) ----
    def state_dict(self) -> dict[str, Any]:
        if not self.fitted_:
            raise NotFittedError("Preprocessor must be fitted before it can be saved.")
        return {
            "kind": "table",
            "steps": list(self.steps),
            "cofactor": self.cofactor,
            "cofactors": dict(self.cofactors),
            "feature_names": list(self.feature_names_),
            "cofactors_": self.cofactors_.tolist(),
            "mean_": self.mean_.tolist(),
            "scale_": self.scale_.tolist(),
            "quantiles_": self.quantiles_.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Preprocessor:
        pre = cls(state["steps"], state["cofactor"], state["cofactors"])
        pre.feature_names_ = list(state["feature_names"])
        d = len(pre.feature_names_)
        pre.cofactors_ = np.asarray(state["cofactors_"], np.float32)
        pre.mean_ = np.asarray(state["mean_"], np.float32)
        pre.scale_ = np.asarray(state["scale_"], np.float32)
        pre.quantiles_ = np.asarray(state["quantiles_"], np.float32).reshape(-1, d)
        pre.fitted_ = True
        return pre

    def __repr__(self) -> str:
        return f"Preprocessor(steps={self.steps!r}, cofactor={self.cofactor:g})"


IMAGE_NORMS = ("standardize", "unit", "none")


def _dtype_scale(dtype: np.dtype) -> float:
    """1/255 for uint8, 1/65535 for uint16, 1 for floats (already scaled, or not: see fit)."""
    if np.issubdtype(dtype, np.integer):
        return 1.0 / float(np.iinfo(dtype).max)
    return 1.0


class ImageNormalizer:
    """Pixel scaling fitted on training images, applied on the device batch by batch.

    Parameters
    ----------
    mode : {"standardize", "unit", "none"}
        ``standardize``: scale to [0, 1] by the type's range, then subtract each channel's
        training mean and divide by its standard deviation (default). ``unit``: only the
        scaling to [0, 1]. ``none``: raw values as floats (e.g. 0-255), as in seed 004.

    The images stay in their stored type (uint8 needs a quarter of float32's memory) until a
    batch reaches :meth:`input_fn`.
    """

    def __init__(self, mode: str = "standardize") -> None:
        if mode not in IMAGE_NORMS:
            raise InvalidParameterError(
                f"image normalization must be one of {', '.join(IMAGE_NORMS)}; got {mode!r}."
            )
        self.mode = mode
        self.fitted_ = False

    def fit(self, images: np.ndarray) -> ImageNormalizer:
        """Learn per-channel statistics from training images ``(n, C, H, W)``."""
        if images.ndim != 4:
            raise InvalidParameterError(f"images must be (n, C, H, W); got shape {images.shape}.")
        self.dtype_ = str(images.dtype)
        self.scale_ = _dtype_scale(images.dtype) if self.mode != "none" else 1.0
        n_chans = images.shape[1]
        total = np.zeros(n_chans)
        squares = np.zeros(n_chans)
        count = 0
        for start in range(0, len(images), 2048):  # in chunks: no float copy of everything
            chunk = images[start:start + 2048].astype(np.float64) * self.scale_
            total += chunk.sum(axis=(0, 2, 3))
            squares += (chunk ** 2).sum(axis=(0, 2, 3))
            count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0))
        if self.mode == "standardize":
            self.mean_ = mean.astype(np.float32)
            self.std_ = np.where(std > 0, std, 1.0).astype(np.float32)
        else:
            self.mean_ = np.zeros(n_chans, np.float32)
            self.std_ = np.ones(n_chans, np.float32)
        self.raw_max_ = float(images[: min(len(images), 4096)].max())
        self.fitted_ = True
        return self

    def pixel_scale_issue(self) -> str | None:
        """Why the network's input scale is a problem, or None."""
        if self.mode == "none" and self.raw_max_ > 1.5:
            return (f"Pixel values reach {self.raw_max_:g} and go into the network unscaled "
                    "(--image-norm none). Networks train poorly on inputs of this size (deep "
                    "ones often stay at chance); use --image-norm standardize (the default) or "
                    "unit.")
        if self.dtype_.startswith("float") and self.raw_max_ > 1.5:
            return (f"Images are floats reaching {self.raw_max_:g}: they look like 0-255 "
                    "pixels stored as floats. cellbench standardizes each channel with "
                    "training statistics, so this is harmless here, but a network fed these "
                    "values directly needs them divided by 255."
                    if self.mode == "standardize" else
                    f"Images are floats reaching {self.raw_max_:g} (0-255 pixels stored as "
                    "floats?) and 'unit' scaling leaves them as they are; use --image-norm "
                    "standardize.")
        return None

    def input_fn(self) -> Any:
        """A function mapping a stored batch (on any device) to normalised float32."""
        import torch

        scale = self.scale_
        cache: dict[Any, tuple[Any, Any]] = {}

        def normalize(x: torch.Tensor) -> torch.Tensor:
            if x.device not in cache:
                cache[x.device] = (
                    torch.as_tensor(self.mean_, device=x.device).view(1, -1, 1, 1),
                    torch.as_tensor(1.0 / self.std_, device=x.device).view(1, -1, 1, 1))
            mean, inv_std = cache[x.device]
            return (x.float() * scale - mean) * inv_std

        return normalize

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "image", "mode": self.mode, "dtype": self.dtype_,
                "scale": self.scale_, "mean": self.mean_.tolist(), "std": self.std_.tolist(),
                "raw_max": self.raw_max_}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ImageNormalizer:
        norm = cls(state["mode"])
        norm.dtype_, norm.scale_ = state["dtype"], float(state["scale"])
        norm.mean_ = np.asarray(state["mean"], np.float32)
        norm.std_ = np.asarray(state["std"], np.float32)
        norm.raw_max_ = float(state["raw_max"])
        norm.fitted_ = True
        return norm


class PixelFeatures:
    """Images as a table for the baselines: average-pooled to at most ``size`` x ``size``,
    scaled to [0, 1], flattened, then standardized on the training images."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.fitted_ = False

    def _pool(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = []
        for start in range(0, len(images), 4096):
            t = torch.from_numpy(images[start:start + 4096].astype(np.float32))
            h, w = t.shape[-2:]
            t = F.adaptive_avg_pool2d(t, (min(h, self.size), min(w, self.size)))
            out.append(t.flatten(1).numpy() * _dtype_scale(images.dtype))
        return np.concatenate(out).astype(np.float32)

    def fit(self, images: np.ndarray) -> PixelFeatures:
        self.shape_ = list(images.shape[1:])
        features = self._pool(images)
        self.standardize_ = Preprocessor(("standardize",)).fit(
            features, [f"p{i}" for i in range(features.shape[1])])
        self.fitted_ = True
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return self.standardize_.transform(self._pool(images))

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "pixels", "size": self.size, "shape": self.shape_,
                "standardize": self.standardize_.state_dict()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PixelFeatures:
        feats = cls(int(state["size"]))
        feats.shape_ = list(state["shape"])
        feats.standardize_ = Preprocessor.from_state(state["standardize"])
        feats.fitted_ = True
        return feats


class RawImages:
    """Images passed on as stored, for models that compute their own features from them
    (``image_input = "raw"``, e.g. ``image-lgbm``); nothing is fitted but the shape."""

    def fit(self, images: np.ndarray) -> RawImages:
        self.shape_ = list(images.shape[1:])
        self.dtype_ = str(images.dtype)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "raw", "shape": self.shape_, "dtype": self.dtype_}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RawImages:
        raw = cls()
        raw.shape_, raw.dtype_ = list(state["shape"]), str(state["dtype"])
        return raw


#: what non-network models are given on images, by their ``image_input``
IMAGE_INPUTS: dict[str, type] = {"pixels": PixelFeatures, "raw": RawImages}


def preprocessor_from_state(state: Mapping[str, Any]) -> Any:
    """Rebuild whichever preprocessor a checkpoint holds."""
    kind = state.get("kind", "table")
    if kind == "image":
        return ImageNormalizer.from_state(state)
    if kind == "pixels":
        return PixelFeatures.from_state(state)
    if kind == "raw":
        return RawImages.from_state(state)
    return Preprocessor.from_state(state)
