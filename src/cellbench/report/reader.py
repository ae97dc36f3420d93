"""A finished run directory, read back for the report: no training, no data file needed.

:func:`read_run` recognises the run by the results file it holds (``tune_results.json``,
``results.json`` from ``compare``/``ablate``, ``metrics.json`` from ``train``,
``doctor.json``) and reads it
with the typed readers of :mod:`cellbench.evaluate.results`, together with ``config.yaml``,
``data.json``, ``run.json`` (the command and start time, recorded since the HTML report
exists) and the units' ``history.csv``. Files written before a field existed read with that
field empty, so older run directories still give a report.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .._config import RunConfig
from ..evaluate.results import (
    Comparisons,
    DataSummary,
    DoctorResults,
    ModelResult,
    RunResults,
    TrainResults,
    TuneResults,
    read_json,
)
from ..exceptions import CellbenchError, RunDirectoryError
from .svg import Style, model_styles

__all__ = ["RunView", "UnitHistory", "read_run"]

#: the results file that marks a finished run, by job; the first found decides the kind. A
#: new job whose record has ``models``, ``comparisons`` and ``data`` (like ``results.json``)
#: is read by adding its class here; sections find the record itself in ``RunView.record``.
RESULT_FILES: tuple[type, ...] = (TuneResults, RunResults, TrainResults, DoctorResults)


@dataclass
class UnitHistory:
    """One unit's per-epoch records (``history.csv``) and the epoch it kept."""

    label: str  # "seed 0, fold1"
    records: list[dict[str, float]]
    best_epoch: int | None = None


@dataclass
class RunView:
    """Everything the report shows, read from one run directory."""

    path: Path
    job: str  # compare, ablate, train, tune, doctor (or what results.json names)
    models: list[ModelResult]
    comparisons: Comparisons | None
    unit: str  # cells or images
    group_name: str | None
    data: DataSummary | None
    machine: dict[str, Any]
    config: RunConfig | None = None
    config_text: str | None = None
    invocation: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    wall_seconds: float | None = None
    record: Any = None  # the typed results file as read (any kind)
    results: RunResults | None = None
    train: TrainResults | None = None
    tune: TuneResults | None = None
    styles: dict[str, Style] = field(default_factory=dict)

    def histories(self, model: ModelResult) -> list[UnitHistory]:
        """Every unit's history of ``model`` (several seeds and folds), oldest format too."""
        if self.train is not None:
            best = self.train.best_epoch or None
            return [h for h in [_history(self.path / "history.csv", "holdout", best)] if h]
        root = self.path / ("final" if self.tune is not None else "") / "units" / model.slug
        best = {(u.seed, u.split): u.best_epoch for u in model.per_unit}
        out = []
        for path in sorted(root.glob("seed*/*/history.csv")):
            seed_dir, split = path.parent.parent.name, path.parent.name
            seed = int(seed_dir[4:]) if seed_dir[4:].isdigit() else None
            h = _history(path, f"seed {seed}, {split}", best.get((seed, split)))
            if h:
                out.append(h)
        return out


def _history(path: Path, label: str, best: int | None) -> UnitHistory | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            records = [{k: _float(v) for k, v in row.items() if k} for row in
                       csv.DictReader(fh)]
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    return UnitHistory(label, records, best) if records else None


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _filled(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every field ``cls`` requires but an older file lacks set to None
    (nested records too), so :meth:`from_dict` can read it."""
    out = dict(data)
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key", f.name)
        if f.name in ("extra", "run_dir") or not f.metadata.get("json", True):
            continue
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        if key not in out:
            if required:
                out[key] = None
            continue
        kind, value = f.metadata.get("kind"), out[key]
        if isinstance(kind, list) and isinstance(value, list):
            out[key] = [_filled(kind[0], v) if isinstance(v, Mapping) else v for v in value]
        elif isinstance(kind, type) and isinstance(value, Mapping):
            out[key] = _filled(kind, value)
    return out


def _read(cls: Any, path: Path) -> Any:
    data = read_json(path / cls.FILE, cls.WHAT)
    missing = [k for k in cls.REQUIRED if k not in data]
    if missing:
        raise RunDirectoryError(
            f"{cls.WHAT} {str(path / cls.FILE)!r} must be a cellbench {cls.FILE} (with "
            f"{', '.join(map(repr, cls.REQUIRED))}); it is not. Pass the --out folder of a "
            "cellbench run.")
    try:
        record = cls.from_dict(_filled(cls, data))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RunDirectoryError(
            f"{cls.WHAT} {str(path / cls.FILE)!r} must be in a format cellbench can read; "
            f"got {type(exc).__name__}: {exc}. Rerun the job to write it again.") from exc
    record.run_dir = path
    return record


def _check(path: Path) -> type:
    if not path.is_dir():
        got = "a file" if path.exists() else "nothing at that path"
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be an existing folder; got {got}. Pass the "
            "--out folder of a finished run.")
    for cls in RESULT_FILES:
        if (path / cls.FILE).is_file():
            return cls
    unfinished = (path / "config.yaml").is_file()
    raise RunDirectoryError(
        f"run directory {str(path)!r} must hold a finished run's results.json, metrics.json, "
        f"tune_results.json or doctor.json; got none of them. " + (
            "The run has not finished: rerun its command to finish it." if unfinished else
            "Pass the --out folder of a train, compare, ablate, tune or doctor run."))


def _config(path: Path) -> tuple[RunConfig | None, str | None]:
    file = path / "config.yaml"
    if not file.is_file():
        return None, None
    text = file.read_text(encoding="utf-8")
    try:
        return RunConfig.from_yaml(text, str(file)), text
    except CellbenchError:  # a config of another version: show it, do not interpret it
        return None, text


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")


def _optional(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return read_json(path, what)
    except RunDirectoryError:
        return {}


def read_run(run_dir: str | Path) -> RunView:
    """Read a finished run directory; one clear error when it is not one."""
    path = Path(run_dir)
    cls = _check(path)
    record = _read(cls, path)
    config, config_text = _config(path)
    data_file = _optional(path / "data.json", "data summary")
    data = DataSummary.from_dict(_filled(DataSummary, data_file)) if data_file else None
    view = RunView(path=path, job=record.job or cls.__name__, models=[], comparisons=None,
                   unit="cells", group_name=None, data=data, machine={}, config=config,
                   config_text=config_text, invocation=_optional(path / "run.json", "run"),
                   finished=_mtime(path / cls.FILE))
    view.record = record
    if isinstance(record, TrainResults):
        view.train, view.models, view.machine = record, [record.as_model_result()], \
            record.machine or {}
    elif isinstance(record, TuneResults):
        view.tune, view.models, view.comparisons = record, record.final, \
            record.tuned_vs_default
    else:  # results.json, or another job's record of the same shape
        view.results = record if isinstance(record, RunResults) else None
        view.models = list(getattr(record, "models", None) or [])
        view.comparisons = getattr(record, "comparisons", None)
        view.data = getattr(record, "data", None) or data
        view.unit = getattr(record, "unit", None) or "cells"
        view.group_name = getattr(record, "group_name", None)
        view.machine = getattr(record, "machine", None) or {}
        view.wall_seconds = getattr(record, "wall_seconds", None)
        view.finished = getattr(record, "created", None) or view.finished
    if view.data is not None:
        view.unit = "images" if view.data.kind == "image" else view.unit
        view.group_name = view.group_name or (view.data.groups or {}).get("column")
    view.started = view.invocation.get("started") or _started(view)
    view.styles = model_styles([m.label for m in view.models])
    return view


def _started(view: RunView) -> str | None:
    if view.finished and view.wall_seconds:
        try:
            end = datetime.fromisoformat(view.finished)
        except ValueError:
            return None
        return (end - timedelta(seconds=view.wall_seconds)).isoformat(timespec="seconds")
    return None
