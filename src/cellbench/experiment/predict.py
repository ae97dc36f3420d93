"""The ``predict`` job: labels and probabilities for new cells or images with a saved model.

A table is read, predicted and written in chunks of ``chunk_rows`` rows (2^18 by default), so
memory is bounded by the chunk, not by the file, for Parquet, CSV/TSV and ``.h5ad`` inputs; a
folder of FCS files is read one file at a time. The CSV is written to a temporary file beside
``out`` and renamed onto it at the end. An ``.h5ad`` input can instead be copied with the
predictions added (``out`` ending in ``.h5ad``); the input is never modified.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import atomic_path, format_list
from ..data.anndata_io import PredictionsCopy
from ..data.images import IMAGE_SUFFIXES, is_image_source, iter_images_for_prediction
from ..data.io import check_data_folder
from ..data.sample_norm import sample_blocks, stat_rows
from ..data.stream import TableStream, open_table
from ..exceptions import DataError, RunDirectoryError
from ..train.trainer import FittedModel, load_model

__all__ = ["CHUNK_ROWS", "KEEP_ROWS", "Predictions", "run_predict"]

CHUNK_ROWS = 2**18  # rows read, predicted and written at a time
KEEP_ROWS = 2**18  # Predictions.frame holds every row up to this many (keep_frame=None)


@dataclass
class Predictions:
    """What ``predict`` made: one row per cell or image, and accuracy where labels exist.

    ``frame`` is None when the rows were not kept in memory (more than :data:`KEEP_ROWS`, or
    ``keep_frame=False``): they are in ``out`` only. ``n_rows`` and ``counts`` (predicted rows
    per class) are there either way.
    """

    frame: pd.DataFrame | None
    out: Path | None = None
    accuracy: float | None = None
    accuracy_text: str = ""
    notes: list[str] = field(default_factory=list)  # what makes the predictions suspect
    n_rows: int = 0
    counts: dict[Any, int] = field(default_factory=dict)


class _Tally:
    """Rows, predicted classes and agreement with a label column, gathered chunk by chunk."""

    def __init__(self, fm: FittedModel) -> None:
        self.names = np.array([str(c) for c in fm.classes], dtype=object)
        self.rows, self.labelled, self.correct = 0, 0, 0
        self.counts = np.zeros(len(fm.classes), np.int64)

    def add(self, codes: np.ndarray, truth: np.ndarray | None) -> None:
        done = codes >= 0
        self.rows += len(codes)
        self.counts += np.bincount(codes[done], minlength=len(self.counts))
        if truth is not None:
            self.labelled += int(done.sum())
            self.correct += int((truth[done] == self.names[codes[done]]).sum())

    def predictions(self, fm: FittedModel, frame: pd.DataFrame | None,
                    out: Path | None) -> Predictions:
        done = Predictions(frame, out, notes=_notes(fm, self.counts), n_rows=self.rows,
                           counts={c: int(k) for c, k in zip(fm.classes, self.counts,
                                                             strict=True)})
        if self.labelled:
            done.accuracy = self.correct / self.labelled
        return done


def _notes(fm: FittedModel, counts: np.ndarray) -> list[str]:
    """A diverged model, or one class predicted for every row, is said, not hidden."""
    notes = []
    if fm.stop_reason and fm.stop_reason.startswith("diverged"):
        notes.append(f"model {fm.name!r} failed in training ({fm.stop_reason}); its "
                     "predictions mean nothing. Retrain it.")
    n = int(counts.sum())
    if n > 1 and len(fm.classes) > 1 and int((counts > 0).sum()) == 1:
        notes.append(f"every one of the {n:,} predicted rows got the same class, "
                     f"{fm.classes[int(np.argmax(counts))]!r}: this model predicts one class "
                     "for everything, so its labels carry no information about these cells "
                     "(check its balanced accuracy in the training run).")
    return notes


def _predict_images(fm: FittedModel, data: str | Path, resize: int | None) -> tuple:
    if fm.kind != "image":
        raise DataError(f"model {fm.name!r} was trained on a table; {str(data)!r} holds "
                        "images. Predict with a model trained on images.")
    probas, names, labels = [], [], []
    # a folder is decoded and predicted a piece at a time: memory holds one piece's images
    for images, part_names, part_labels in iter_images_for_prediction(data, resize):
        if list(images.shape[1:]) != fm.input_shape:
            c, h, w = fm.input_shape
            raise DataError(
                f"images must have the training shape {c}x{h}x{w} (channels x height x "
                f"width); got {'x'.join(map(str, images.shape[1:]))} (e.g. "
                f"{part_names[0]!r}). Pass --resize {h} if they only differ in size."
            )
        probas.append(fm.predict_proba(images))
        names += part_names
        labels = None if part_labels is None else labels + part_labels
    return np.concatenate(probas), pd.DataFrame({"file": names}), labels


def _add_predictions(result: pd.DataFrame, fm: FittedModel, proba: np.ndarray,
                     missing: np.ndarray | None = None) -> np.ndarray:
    """Add ``predicted`` and ``proba_<class>`` columns; return the class codes (-1: none)."""
    codes = np.nan_to_num(proba).argmax(1)
    if missing is not None:
        codes[missing] = -1
    labels = np.asarray(fm.classes, dtype=object)
    result["predicted"] = np.where(codes >= 0, labels[codes], None)
    for k, c in enumerate(fm.classes):
        result[f"proba_{c}"] = proba[:, k]
    return codes


def _label_strings(values: pd.Series) -> np.ndarray:
    """Labels as strings to compare with the classes' (1.0 read as a float is class 1)."""
    out = values.astype(str).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(values):
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(v) & (np.mod(v, 1) == 0)
        out[whole] = [str(int(x)) for x in v[whole]]
    return out


@dataclass
class _Plan:
    """Which columns of the input a table prediction reads, and what for."""

    features: list[str]  # in the model's order
    carry: list[str]  # copied into the output (sample, patient)
    target: str | None  # the training label column, when the data has it
    sample: str | None = None  # names each row's sample, for per-sample normalisation

    @property
    def wanted(self) -> list[str]:
        return list(dict.fromkeys([*self.features, *self.carry,
                                   *filter(None, [self.target, self.sample])]))


def _plan(fm: FittedModel, table: TableStream, data: str | Path) -> _Plan:
    lookup = {**dict(table.aliases.items()), **{c: c for c in table.columns}}
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
            f"{format_list(missing, 8)}. Its columns: {format_list(list(table.columns), 12)}."
        )
    carry = [c for c in ("sample", "patient") if c in table.columns and c not in columns]
    sample = None
    if getattr(fm.preprocessor, "per_sample", False):  # the training groups column, else
        sample = next((c for c in (fm.preprocessor.group_name, "sample")  # a folder's files
                       if c and c in table.columns and c not in columns), None)
    return _Plan(columns, carry, fm.target if fm.target in table.columns else None, sample)


def _sample_keys(chunk: pd.DataFrame, plan: _Plan) -> np.ndarray | None:
    return None if plan.sample is None else chunk[plan.sample].astype(str).to_numpy(object)


def _sample_statistics(fm: FittedModel, table: TableStream, plan: _Plan, data: Path,
                       chunk_rows: int) -> dict[Any, list[np.ndarray]]:
    """Each sample's statistics for a model that normalises samples (``sample-*`` steps):
    from the same rows as in training (every k-th finite row of the sample, in file order),
    in two passes over the file: count, then collect. Without a sample column (the training
    ``--groups`` column, or ``sample``) the whole file is one sample."""
    def finite() -> Any:
        offset = 0
        for chunk in table.chunks(plan.wanted, chunk_rows):
            X = _numeric(chunk, plan.features, data, offset)
            ok = np.isfinite(X).all(axis=1)
            keys = _sample_keys(chunk, plan)
            yield X[ok], (np.full(int(ok.sum()), None, object) if keys is None else keys[ok])
            offset += len(chunk)

    counts: dict[Any, int] = {}
    for X, keys in finite():
        for b in sample_blocks(keys, len(X)):
            counts[keys[b[0]]] = counts.get(keys[b[0]], 0) + len(b)
    seen = dict.fromkeys(counts, 0)
    kept: dict[Any, list[np.ndarray]] = {key: [] for key in counts}
    for X, keys in finite():
        for b in sample_blocks(keys, len(X)):
            key = keys[b[0]]
            position = seen[key] + np.arange(len(b))
            kept[key].append(X[b[position % stat_rows(counts[key]).step == 0]])
            seen[key] += len(b)
    return {key: fm.preprocessor.sample_statistics(np.concatenate(rows))
            for key, rows in kept.items()}


def _numeric(chunk: pd.DataFrame, columns: list[str], data: str | Path,
             offset: int) -> np.ndarray:
    """The feature columns as float32; a value that is no number is named with its row."""
    block = chunk[columns]
    try:
        return block.apply(pd.to_numeric, errors="raise").to_numpy(np.float32, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        for col in columns:
            wrong = (pd.to_numeric(block[col], errors="coerce").isna()
                     & block[col].notna()).to_numpy()
            if wrong.any():
                i = int(np.argmax(wrong))
                raise DataError(
                    f"feature columns of {str(data)!r} must be numeric; column {col!r} holds "
                    f"{block[col].iloc[i]!r} in row {offset + i + 1}. Fix or remove that "
                    "value.") from exc
        raise DataError(f"feature columns of {str(data)!r} must be numeric ({exc}).") from exc


class _CsvOut:
    """Chunks appended to a temporary CSV beside ``out``, renamed onto it at the end."""

    def __init__(self, out: Path, stack: contextlib.ExitStack) -> None:
        tmp = stack.enter_context(atomic_path(out))
        self._fh = stack.enter_context(tmp.open("w", encoding="utf-8", newline=""))
        self._header = True

    def write(self, result: pd.DataFrame, codes: np.ndarray, proba: np.ndarray) -> None:
        result.to_csv(self._fh, index=False, header=self._header, lineterminator="\n")
        self._header = False


class _H5adOut:
    """A copy of the input ``.h5ad`` (beside ``out``, renamed onto it) gaining predictions."""

    def __init__(self, out: Path, data: Path, fm: FittedModel,
                 stack: contextlib.ExitStack) -> None:
        tmp = stack.enter_context(atomic_path(out))
        self._copy = stack.enter_context(PredictionsCopy(data, tmp, fm.classes))

    def write(self, result: pd.DataFrame, codes: np.ndarray, proba: np.ndarray) -> None:
        self._copy.write(codes, proba)


class _NoOut:
    def write(self, result: pd.DataFrame, codes: np.ndarray, proba: np.ndarray) -> None:
        pass


@contextlib.contextmanager
def _output(out: Path | None, data: Path, fm: FittedModel) -> Any:
    """Where the rows go; a failing write is said as a problem with ``out``."""
    try:
        with contextlib.ExitStack() as stack:
            if out is None:
                yield _NoOut()
            elif out.suffix.lower() == ".h5ad":
                yield _H5adOut(out, data, fm, stack)
            else:
                yield _CsvOut(out, stack)
    except OSError as exc:  # the readers turn theirs into DataError: this is the output
        raise RunDirectoryError(f"--out {str(out)!r} must be a writable file path; writing "
                                f"failed ({type(exc).__name__}: {exc.strerror or exc}). Pass "
                                "another --out.") from exc


def _predict_chunks(fm: FittedModel, table: TableStream, plan: _Plan, data: Path, sink: Any,
                    *, dropna: bool, chunk_rows: int,
                    keep_frame: bool | None) -> tuple[_Tally, pd.DataFrame | None]:
    tally = _Tally(fm)
    stats = None
    if getattr(fm.preprocessor, "per_sample", False):
        stats = _sample_statistics(fm, table, plan, data, chunk_rows)
    kept: list[pd.DataFrame] | None = None if keep_frame is False else []
    offset, n_bad, first_bad = 0, 0, None
    for chunk in table.chunks(plan.wanted, chunk_rows):
        X = _numeric(chunk, plan.features, data, offset)
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any() and not dropna:  # counted to the end, so the message says how many
            first_bad = offset + int(np.argmax(bad)) if first_bad is None else first_bad
            n_bad += int(bad.sum())
        if first_bad is None:
            proba = np.full((len(X), len(fm.classes)), np.nan)
            if (~bad).any():
                keys = _sample_keys(chunk, plan)
                proba[~bad] = fm.predict_proba(
                    X[~bad], groups=None if keys is None else keys[~bad],
                    stats_by_sample=stats)
            result = pd.DataFrame({"row": np.arange(offset + 1, offset + len(X) + 1)})
            for col in plan.carry:
                result[col] = chunk[col].to_numpy()
            codes = _add_predictions(result, fm, proba, missing=bad)
            sink.write(result, codes, proba)
            tally.add(codes, None if plan.target is None else _label_strings(chunk[plan.target]))
            if kept is not None:
                kept.append(result)
                if keep_frame is None and offset + len(X) > KEEP_ROWS:
                    kept = None
        offset += len(X)
    if first_bad is not None:
        raise DataError(
            f"feature values must be finite; {n_bad} rows of {str(data)!r} have NaN "
            f"or inf (first at row {first_bad + 1}). Pass --dropna to leave those "
            "rows without a prediction."
        )
    return tally, None if kept is None else pd.concat(kept, ignore_index=True)


def _predict_table(fm: FittedModel, data: Path, out: Path | None, *, dropna: bool,
                   chunk_rows: int, keep_frame: bool | None) -> Predictions:
    with open_table(data, require_labels=False) as table:
        plan = _plan(fm, table, data)
        with _output(out, data, fm) as sink:
            tally, frame = _predict_chunks(fm, table, plan, data, sink, dropna=dropna,
                                           chunk_rows=chunk_rows, keep_frame=keep_frame)
    done = tally.predictions(fm, frame, out)
    if done.accuracy is not None:
        done.accuracy_text = (f"the data has a {fm.target!r} column: accuracy "
                              f"{done.accuracy:.2%} on {tally.labelled} rows")
    return done


def _check_out(out: Path | None, data: Path) -> None:
    """``out`` is a new CSV (or, for an ``.h5ad`` input, a new ``.h5ad``), never the input
    nor a file inside an input folder."""
    if out is None:
        return
    if out.is_dir():
        raise RunDirectoryError(f"--out {str(out)!r} must be a file path for the CSV; it is a "
                                "folder. Pass e.g. --out predictions.csv.")
    h5ad = out.suffix.lower() == ".h5ad"
    example = "predicted.h5ad" if h5ad else "predictions.csv"
    if out.exists() and data.exists() and (
            out.resolve() == data.resolve()
            or (data.is_dir() and data.resolve() in out.resolve().parents)):
        raise RunDirectoryError(f"--out {str(out)!r} must not be the input data or inside "
                                f"its folder ({str(data)!r}): the input is never modified. "
                                f"Pass e.g. --out {example}.")
    if h5ad:
        if data.suffix.lower() != ".h5ad" or data.is_dir():
            raise DataError(f"--out {str(out)!r} must be a CSV unless the data is an .h5ad "
                            f"file (then it may be a copy of it with the predictions); the "
                            f"data is {str(data)!r}. Pass e.g. --out predictions.csv.")
        return
    if out.suffix.lower() != ".csv":
        also = "; or .h5ad for a copy of the .h5ad input" if data.suffix.lower() == ".h5ad" else ""
        raise DataError(f"--out {str(out)!r} must end in .csv (predictions are written as "
                        f"CSV{also}); got {out.suffix or 'no suffix'!r}. Pass e.g. --out "
                        f"{example}.")


def run_predict(model_path: str | Path, data: str | Path, out: str | Path | None = None, *,
                dropna: bool = False, resize: int | None = None, chunk_rows: int = CHUNK_ROWS,
                keep_frame: bool | None = None) -> Predictions:
    """Predict labels and probabilities for raw rows (table, FCS file or folder, ``.h5ad``) or
    for images (a file, a folder, an .npz); writes a CSV to ``out`` when given, or for an
    ``.h5ad`` input and an ``out`` ending in ``.h5ad`` a copy of the input with
    ``obs["cellbench_predicted"]``, ``obsm["cellbench_proba"]`` and ``uns["cellbench_classes"]``.

    Tables are read ``chunk_rows`` rows at a time. ``keep_frame``: keep every row in
    ``Predictions.frame`` (True), none (False), or only up to :data:`KEEP_ROWS` rows (None).
    """
    out = None if out is None else Path(out)
    path = Path(data)
    _check_out(out, path)
    fm = load_model(model_path)
    check_data_folder(path)
    if is_image_source(path) or path.suffix.lower() in IMAGE_SUFFIXES:
        proba, result, truth = _predict_images(fm, path, resize)
        codes = _add_predictions(result, fm, proba)
        with _output(out, path, fm) as sink:
            sink.write(result, codes, proba)
        tally = _Tally(fm)
        tally.add(codes, None if truth is None else np.asarray(truth).astype(str)
                  .astype(object))
        done = tally.predictions(fm, result, out)
        if done.accuracy is not None:
            done.accuracy_text = (f"the images are in class folders: accuracy "
                                  f"{done.accuracy:.2%} on {len(truth)} images")
        return done
    if fm.kind == "image":
        raise DataError(f"model {fm.name!r} was trained on images; {str(data)!r} is a table. "
                        "Predict images (a file, a folder or an .npz) with it.")
    if resize is not None:
        raise DataError(f"--resize must not be set for a table; it applies to images, and "
                        f"model {fm.name!r} was trained on a table. Drop --resize.")
    return _predict_table(fm, path, out, dropna=dropna, chunk_rows=chunk_rows,
                          keep_frame=keep_frame)
