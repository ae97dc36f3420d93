"""The ``predict`` job: labels and probabilities for new cells or images with a saved model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import atomic_write_text, format_list
from ..data.images import IMAGE_SUFFIXES, is_image_source, read_images_for_prediction
from ..data.io import read_frame
from ..exceptions import DataError
from ..train.trainer import FittedModel, load_model

__all__ = ["Predictions", "run_predict"]


@dataclass
class Predictions:
    """What ``predict`` made: one row per cell or image, and accuracy where labels exist."""

    frame: pd.DataFrame
    out: Path | None = None
    accuracy: float | None = None
    accuracy_text: str = ""


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


def _add_predictions(result: pd.DataFrame, fm: FittedModel, proba: np.ndarray,
                     missing: np.ndarray | None = None) -> pd.DataFrame:
    labels = np.asarray(fm.classes, dtype=object)
    predicted = labels[np.nan_to_num(proba).argmax(1)]
    result["predicted"] = predicted if missing is None else np.where(missing, None, predicted)
    for k, c in enumerate(fm.classes):
        result[f"proba_{c}"] = proba[:, k]
    return result


def _table_features(fm: FittedModel, data: str | Path, dropna: bool) -> tuple:
    raw = read_frame(data, require_labels=False)
    frame = raw.frame
    lookup = {**dict(raw.aliases.items()), **{c: c for c in frame.columns}}
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
    return frame, columns, X, bad


def run_predict(model_path: str | Path, data: str | Path, out: str | Path | None = None, *,
                dropna: bool = False, resize: int | None = None) -> Predictions:
    """Predict labels and probabilities for raw rows (table, FCS file or FCS folder) or for
    images (a file, a folder, an .npz); writes a CSV to ``out`` when given."""
    fm = load_model(model_path)
    path = Path(data)
    out = None if out is None else Path(out)
    if is_image_source(path) or path.suffix.lower() in IMAGE_SUFFIXES:
        proba, result, truth = _predict_images(fm, path, resize)
        result = _add_predictions(result, fm, proba)
        if out is not None:
            atomic_write_text(out, result.to_csv(index=False))
        done = Predictions(result, out)
        if truth is not None:
            done.accuracy = float(np.mean(np.asarray(truth)
                                          == result["predicted"].astype(str).to_numpy()))
            done.accuracy_text = (f"the images are in class folders: accuracy "
                                  f"{done.accuracy:.4f} on {len(truth)} images")
        return done
    frame, columns, X, bad = _table_features(fm, data, dropna)
    proba = np.full((len(X), len(fm.classes)), np.nan)
    if (~bad).any():
        proba[~bad] = fm.predict_proba(X[~bad])
    result = pd.DataFrame({"row": np.arange(1, len(X) + 1)})
    for col in ("sample", "patient"):
        if col in frame.columns and col not in columns:
            result[col] = frame[col].to_numpy()
    result = _add_predictions(result, fm, proba, missing=bad)
    if out is not None:
        atomic_write_text(out, result.to_csv(index=False))
    done = Predictions(result, out)
    if fm.target in frame.columns:
        truth = frame[fm.target].astype(str).to_numpy()
        ok = ~bad
        done.accuracy = float((truth[ok] == result["predicted"].astype(str).to_numpy()[ok])
                              .mean())
        done.accuracy_text = (f"the data has a {fm.target!r} column: accuracy "
                              f"{done.accuracy:.4f} on {int(ok.sum())} rows")
    return done
