"""Rule ``unscaled_input``: inputs that reach the network far from unit scale."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._config import DataConfig
from ...data import checks
from ...data.dataset import Dataset
from ...data.splits import Split
from ...exceptions import CellbenchWarning
from ..findings import Finding
from ._common import RMS_LIMIT, SCALE_SPAN, fit_and_heldout, make_finding, subsample

__all__ = ["check_unscaled_input"]


def _fed_pixels(ds: Dataset, rows: np.ndarray, image_norm: str) -> np.ndarray:
    """Pixels as the network gets them under ``image_norm`` (before any standardization)."""
    per_image = max(1, int(np.prod(ds.X.shape[1:])))
    rows = subsample(rows, max(8, min(2048, 2_000_000 // per_image)))
    X = ds.X[rows].astype(np.float64)
    if image_norm == "unit" and np.issubdtype(ds.X.dtype, np.integer):
        X = X / float(np.iinfo(ds.X.dtype).max)
    return X

def check_unscaled_input(ds: Dataset, splits: Sequence[Split] = (),
                         data_cfg: DataConfig | None = None) -> list[Finding]:
    """Inputs reach the network far from unit scale.

    Rule: images whose values as fed (``image_norm`` none, or unit on float images) have an
    RMS above 10, ten times a standardized input's; a table that
    :func:`checks.check_scale` calls raw cytometry intensities while the transform has neither
    arcsinh nor quantile; or a table fed without standardize/quantile whose per-feature RMS
    (after arcsinh, if any) spans more than 100x or exceeds 100. Severity warning; fix
    ``normalize_input``.
    """
    cfg = data_cfg or DataConfig()
    if ds.n_samples == 0:
        return []
    fit_rows = fit_and_heldout(ds, splits)[0] if splits else np.arange(ds.n_samples)
    if len(fit_rows) == 0:
        fit_rows = np.arange(ds.n_samples)
    if ds.kind == "image":
        if cfg.image_norm == "standardize":
            return []
        X = _fed_pixels(ds, fit_rows, cfg.image_norm)
        rms = float(np.sqrt(np.mean(X * X)))
        if rms <= RMS_LIMIT:
            return []
        return [make_finding(
            "unscaled_input", "warning",
            f"images go into the network unscaled (image_norm {cfg.image_norm!r}): pixel "
            f"values have RMS {rms:.3g} and reach {X.max():.4g}, {rms:.0f}x a standardized "
            "input; deep networks often stay at chance on such inputs",
            {"kind": "image", "reason": "raw_pixels", "image_norm": cfg.image_norm,
             "dtype": str(ds.X.dtype), "rms": rms, "max": float(X.max()),
             "threshold": RMS_LIMIT},
            fix="normalize_input", strength=np.log10(rms / RMS_LIMIT),
            advice="Use --image-norm standardize (the default) or unit.")]

    transform = tuple(cfg.transform)
    reasons: list[str] = []
    evidence: dict[str, Any] = {"kind": "table", "transform": list(transform)}
    strength = 0.0
    X = ds.X[subsample(fit_rows)].astype(np.float64)
    if "arcsinh" not in transform and "quantile" not in transform:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CellbenchWarning)
            raw = checks.check_scale(ds, transform)
        if raw:
            q50, q99 = np.percentile(X, [50, 99], axis=0)
            tail = q99 / np.maximum(np.abs(q50), 1.0)
            worst = int(np.argmax(tail))
            reasons.append(
                f"columns look like raw cytometry intensities (e.g. {ds.feature_names[worst]!r}"
                f": 99th percentile {q99[worst]:.4g}, median {q50[worst]:.3g}) and the "
                "transform has no arcsinh")
            evidence.update(reason="raw_intensities", check_scale=raw[0].message,
                            tail_ratio=float(tail[worst]), column=ds.feature_names[worst])
            strength = max(strength, float(np.log10(max(tail[worst], 1.0) / 20.0)))
    if "standardize" not in transform and "quantile" not in transform and X.shape[1] > 0:
        Z = X
        if "arcsinh" in transform:
            cof = np.full(X.shape[1], cfg.arcsinh_cofactor())
            for key, value in dict(cfg.cofactors).items():
                name = ds.aliases.get(key, key)
                if name in ds.feature_names:
                    cof[ds.feature_names.index(name)] = float(value)
            Z = np.arcsinh(X / cof)
        rms = np.sqrt(np.mean(Z * Z, axis=0))
        live = np.ptp(Z, axis=0) > 0
        if live.any():
            big, small = int(np.argmax(np.where(live, rms, -np.inf))), int(
                np.argmin(np.where(live, rms, np.inf)))
            span = float(rms[big] / max(rms[small], 1e-12))
            if span > SCALE_SPAN or rms[big] > SCALE_SPAN:
                reasons.append(
                    f"features are fed without standardize: their scales (RMS) span "
                    f"{span:.3g}x, from {ds.feature_names[small]!r} ({rms[small]:.3g}) to "
                    f"{ds.feature_names[big]!r} ({rms[big]:.3g})")
                evidence.setdefault("reason", "feature_scales")
                evidence.update(scale_span=span, max_rms=float(rms[big]),
                                min_rms=float(rms[small]), threshold=SCALE_SPAN)
                strength = max(strength, float(np.log10(max(span, rms[big]) / SCALE_SPAN)))
    if not reasons:
        return []
    evidence["reasons"] = reasons
    return [make_finding(
        "unscaled_input", "warning", "; ".join(reasons), evidence, fix="normalize_input",
        strength=strength,
        advice="Use --transform arcsinh,standardize (cofactor 5 mass, 150 flow cytometry).")]
