"""Preprocessing fitted on the training part only, saved with the model: tables
(:class:`Preprocessor`, :mod:`cellbench.data.table_transforms`) and images.

>>> import numpy as np
>>> norm = ImageNormalizer("unit").fit(np.full((2, 1, 4, 4), 255, np.uint8))
>>> float(norm.scale_ * 255)
1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..exceptions import InvalidParameterError
from .table_transforms import CHUNK_ROWS, LARGE_ROWS, Preprocessor

__all__ = ["CHUNK_ROWS", "IMAGE_INPUTS", "IMAGE_NORMS", "LARGE_ROWS", "ImageNormalizer",
           "PixelFeatures", "Preprocessor", "RawImages", "preprocessor_from_state"]


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
