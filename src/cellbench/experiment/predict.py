"""The ``predict`` job: labels and probabilities for new cells or images with a saved model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import atomic_write_text, format_list
from ..data.images import IMAGE_SUFFIXES, is_image_source, read_images_for_prediction
from ..data.io import read_frame
from ..exceptions import DataError, RunDirectoryError
from ..train.trainer import FittedModel, load_model

__all__ = ["Predictions", "run_predict"]


@dataclass
class Predictions:
    """What ``predict`` made: one row per cell or image, and accuracy where labels exist."""

    frame: pd.DataFrame
    out: Path | None = None
    accuracy: float | None = None
    accuracy_text: str = ""
    notes: list[str] = field(default_factory=list)  # what makes the predictions suspect


def _notes(fm: FittedModel, predicted: pd.Series) -> list[str]:
    """A diverged model, or one class predicted for every row, is said, not hidden."""
    notes = []
    if fm.stop_reason and fm.stop_reason.startswith("diverged"):
        notes.append(f"model {fm.name!r} failed in training ({fm.stop_reason}); its "
                     "predictions mean nothing. Retrain it.")
    values = predicted.dropna()
    if len(values) > 1 and len(fm.classes) > 1 and values.nunique() == 1:
        notes.append(f"every one of the {len(values):,} predicted rows got the same class, "
                     f"{values.iloc[0]!r}: this model predicts one class for everything, so "
                     "its labels carry no information about these cells (check its "
                     "balanced accuracy in the training run).")
    return notes


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


def _write(out: Path, frame: pd.DataFrame) -> None:
    try:
        atomic_write_text(out, frame.to_csv(index=False))
    except OSError as exc:
        raise RunDirectoryError(f"--out {str(out)!r} must be a writable file path; writing "
                                f"failed ({type(exc).__name__}: {exc.strerror or exc}). Pass "
                                "another --out.") from exc


def run_predict(model_path: str | Path, data: str | Path, out: str | Path | None = None, *,
                dropna: bool = False, resize: int | None = None) -> Predictions:
    """Predict labels and probabilities for raw rows (table, FCS file or FCS folder) or for
    images (a file, a folder, an .npz); writes a CSV to ``out`` when given."""
    out = None if out is None else Path(out)
    if out is not None and out.is_dir():
        raise RunDirectoryError(f"--out {str(out)!r} must be a file path for the CSV; it is a "
                                "folder. Pass e.g. --out predictions.csv.")
    fm = load_model(model_path)
    path = Path(data)
    if is_image_source(path) or path.suffix.lower() in IMAGE_SUFFIXES:
        proba, result, truth = _predict_images(fm, path, resize)
        result = _add_predictions(result, fm, proba)
        if out is not None:
            _write(out, result)
        done = Predictions(result, out, notes=_notes(fm, result["predicted"]))
        if truth is not None:
            done.accuracy = float(np.mean(np.asarray(truth)
                                          == result["predicted"].astype(str).to_numpy()))
            done.accuracy_text = (f"the images are in class folders: accuracy "
                                  f"{done.accuracy:.2%} on {len(truth)} images")
        return done
    if fm.kind == "image":
        raise DataError(f"model {fm.name!r} was trained on images; {str(data)!r} is a table. "
                        "Predict images (a file, a folder or an .npz) with it.")
    if resize is not None:
        raise DataError(f"--resize must not be set for a table; it applies to images, and "
                        f"model {fm.name!r} was trained on a table. Drop --resize.")
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
        _write(out, result)
    done = Predictions(result, out, notes=_notes(fm, result["predicted"]))
    if fm.target in frame.columns and (~bad).any():
        truth = frame[fm.target].astype(str).to_numpy()
        ok = ~bad
        done.accuracy = float((truth[ok] == result["predicted"].astype(str).to_numpy()[ok])
                              .mean())
        done.accuracy_text = (f"the data has a {fm.target!r} column: accuracy "
                              f"{done.accuracy:.2%} on {int(ok.sum())} rows")
    return done
