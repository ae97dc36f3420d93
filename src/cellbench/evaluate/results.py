"""Typed results and the one reader/writer of ``results.json`` (and a unit's ``result.json``).

A run's results are a :class:`RunResults`: the data summary, one :class:`ModelResult` per
model (pooled test metrics and one :class:`UnitSummary` per seed x split), and the paired
tests (:class:`Comparisons`). A unit of work (one model, seed and split) is a
:class:`UnitResult`. Metrics are :class:`Metrics` with :class:`Estimate` values.

Every record writes exactly the JSON the jobs wrote before these types existed, and reads
those files back (keys it does not know are kept in ``extra`` and written again), so a
report can be rebuilt from any run directory.

>>> m = Metrics.from_dict({"n": 4, "accuracy": {"value": 0.75, "ci": [0.3, 0.95],
...                                             "method": "wilson"}})
>>> m.accuracy.value, m.get("auroc").value
(0.75, None)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._utils import atomic_write_json, to_builtin
from ..exceptions import RunDirectoryError
from .metrics import METRICS

__all__ = ["Comparison", "Comparisons", "DataSummary", "DoctorResults", "Estimate", "Metrics",
           "ModelResult", "RunResults", "Spread", "TrainResults", "TuneResults",
           "UnitPredictions", "UnitResult", "UnitSummary", "read_json"]


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing or damaged file raises a clear error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"{what} must exist; {str(path)!r} does not.") from None
    except (OSError, ValueError) as exc:
        raise RunDirectoryError(f"{what} {str(path)!r} must be readable JSON; got {exc}. It "
                                "may be truncated: rerun the job with the same --out.") from exc
    if not isinstance(data, dict):
        raise RunDirectoryError(f"{what} {str(path)!r} must hold a JSON object; got "
                                f"{type(data).__name__}.")
    return data


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


class _Record:
    """dict <-> dataclass in JSON key order. Field metadata: ``key`` (JSON name), ``kind``
    (a record type, or ``[type]`` for a list, ``{type}`` for a mapping of them), ``omit``
    (leave the key out when the value is None), ``json`` False (not written)."""

    extra: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        kwargs: dict[str, Any] = {}
        known = set()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra" or not f.metadata.get("json", True):
                continue
            key = _key(f)
            known.add(key)
            if key in data:
                kwargs[f.name] = _load(f.metadata.get("kind"), data[key])
        if any(f.name == "extra" for f in dataclasses.fields(cls)):  # type: ignore[arg-type]
            kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        extra = getattr(self, "extra", {}) or {}
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra" or not f.metadata.get("json", True):
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit"):
                continue
            out[_key(f)] = _dump(value)
        out.update({k: v for k, v in extra.items() if k not in out})
        return to_builtin(out)


class _File(_Record):
    """A record stored as one JSON file in a directory (run or unit directory)."""

    FILE: ClassVar[str]
    WHAT: ClassVar[str]  # for messages
    REQUIRED: ClassVar[tuple[str, ...]] = ()  # keys without which the file is not ours
    run_dir: Path | None

    @classmethod
    def read(cls, directory: str | Path):
        """Read ``directory/FILE`` (a file path is accepted too)."""
        path = Path(directory)
        path = path / cls.FILE if path.is_dir() else path
        data = read_json(path, cls.WHAT)
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise RunDirectoryError(f"{cls.WHAT} {str(path)!r} must be a cellbench {cls.FILE} "
                                    f"(with {', '.join(map(repr, cls.REQUIRED))}); it is not.")
        record = cls.from_dict(data)
        record.run_dir = path.parent
        return record

    def write(self, directory: str | Path) -> None:
        """Write ``directory/FILE`` atomically."""
        atomic_write_json(Path(directory) / self.FILE, self.to_dict())


def _load(kind: Any, value: Any) -> Any:
    if value is None or kind is None:
        return value
    if isinstance(kind, list):
        return [_load(kind[0], v) for v in value]
    if isinstance(kind, set):
        (inner,) = kind
        return {k: _load(inner, v) for k, v in value.items()}
    return kind.from_dict(value)


def _dump(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Estimate(_Record):
    """A metric's value, its confidence interval and how the interval was computed."""

    value: float | None
    ci: list[float | None] = field(default_factory=lambda: [None, None])
    method: str = ""

    @property
    def known(self) -> bool:
        return self.value is not None and np.isfinite(self.value)


_MISSING = Estimate(None, [None, None], "not computed")


@dataclass
class Metrics(_Record):
    """:func:`~cellbench.evaluate.metrics.evaluate_predictions`'s result, typed.

    ``groups`` (patient/sample level) keeps the documented dict of
    :func:`~cellbench.evaluate.metrics.group_level`.
    """

    n: int
    accuracy: Estimate = field(default=_MISSING, metadata={"kind": Estimate})
    balanced_accuracy: Estimate = field(default=_MISSING, metadata={"kind": Estimate})
    macro_f1: Estimate = field(default=_MISSING, metadata={"kind": Estimate})
    auroc: Estimate = field(default=_MISSING, metadata={"kind": Estimate})
    confusion_matrix: dict[str, Any] | None = field(default=None, metadata={"omit": True})
    per_class: list[dict[str, Any]] | None = field(default=None, metadata={"omit": True})
    groups: dict[str, Any] | None = field(default=None, metadata={"omit": True})
    pooled_over: str | None = field(default=None, metadata={"omit": True})
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, metric: str) -> Estimate:
        """One of :data:`~cellbench.evaluate.metrics.METRICS` by name."""
        return getattr(self, metric) if metric in METRICS else _MISSING


@dataclass
class UnitPredictions:
    """A unit's saved predictions (``predictions.npz``)."""

    test_index: np.ndarray
    test_proba: np.ndarray
    val_index: np.ndarray
    val_proba: np.ndarray

    @classmethod
    def load(cls, path: Path, validation: bool = True) -> UnitPredictions:
        """The file's predictions; without ``validation``, the test part's only (the
        validation part comes back empty, and is not read)."""
        with np.load(path) as z:
            test_proba = z["test_proba"]
            if not validation:
                return cls(z["test_index"], test_proba, np.zeros(0, np.int64),
                           np.zeros((0, *test_proba.shape[1:])))
            return cls(z["test_index"], test_proba, z["val_index"], z["val_proba"])


@dataclass
class UnitResult(_File):
    """One unit of work: one model trained with one seed on one split (``result.json``)."""

    ident: dict[str, Any]
    label: str
    model: str
    model_kwargs: dict[str, Any]
    seed: int
    split: str
    sizes: dict[str, int]
    n_params: int
    fit_seconds: float
    predict_seconds: float
    epochs: int
    best_epoch: int
    stop_reason: str | None
    info: dict[str, Any]
    validation: Metrics | None = field(default=None, metadata={"kind": Metrics, "omit": True})
    test: Metrics | None = field(default=None, metadata={"kind": Metrics, "omit": True})
    failed: str | None = field(default=None, metadata={"omit": True})  # why, e.g. diverged
    extra: dict[str, Any] = field(default_factory=dict)
    reused: bool = field(default=False, metadata={"json": False})
    run_dir: Path | None = field(default=None, metadata={"json": False})  # the unit's folder

    FILE: ClassVar[str] = "result.json"  # written last: it marks the unit finished
    WHAT: ClassVar[str] = "unit result"
    REQUIRED: ClassVar[tuple[str, ...]] = ("ident", "seed", "split")

    def predictions(self, validation: bool = True) -> UnitPredictions:
        """The unit's saved predictions (see :meth:`UnitPredictions.load`)."""
        if self.run_dir is None:
            raise RunDirectoryError(f"unit {self.label} [{self.split}] must have been read "
                                    "from a run directory to load its predictions.")
        return UnitPredictions.load(self.run_dir / "predictions.npz", validation)


@dataclass
class UnitSummary(_Record):
    """One seed x split of a model, as listed in ``results.json``."""

    split: str
    seed: int
    n: int
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None
    auroc: float | None = None
    fit_seconds: float = 0.0
    epochs: int = 0
    best_epoch: int = 0
    stop_reason: str | None = None
    failed: str | None = field(default=None, metadata={"omit": True})
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, unit: UnitResult) -> UnitSummary:
        assert unit.test is not None
        return cls(unit.split, unit.seed, unit.test.n,
                   **{m: unit.test.get(m).value for m in METRICS},
                   fit_seconds=unit.fit_seconds, epochs=unit.epochs,
                   best_epoch=unit.best_epoch, stop_reason=unit.stop_reason,
                   failed=unit.failed)


@dataclass(frozen=True)
class Spread(_Record):
    """Mean and standard deviation over units."""

    mean: float
    sd: float


@dataclass
class ModelResult(_Record):
    """One model of a run: its test predictions pooled over splits, and each unit."""

    label: str = field(metadata={"key": "model"})
    name: str
    spec: str
    slug: str
    n_params: int
    fit_seconds: float
    units: int
    reused_units: int = 0
    test: Metrics | None = field(default=None, metadata={"kind": Metrics, "omit": True})
    per_unit: list[UnitSummary] = field(default_factory=list,
                                        metadata={"kind": [UnitSummary]})
    across_units: dict[str, Spread] | None = field(default=None,
                                                   metadata={"kind": {Spread}, "omit": True})
    failed: str | None = field(default=None, metadata={"omit": True})  # runs that failed, why
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison(_Record):
    """One model tested against the reference (see :mod:`cellbench.evaluate.compare`)."""

    model: str
    test: str
    difference: float
    ci: list[float]
    p_value: float
    n: int
    unit: str
    detectable: float | None = None
    note: str = ""
    p_adjusted: float = float("nan")
    verdict: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparisons(_Record):
    """Every model against one reference, Holm-adjusted."""

    reference: str | None
    metric: str = "accuracy"
    unit: str = "auto"
    alpha: float = 0.05
    correction: str = "none"
    rows: list[Comparison] = field(default_factory=list, metadata={"kind": [Comparison]})
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, model: str) -> Comparison | None:
        return next((r for r in self.rows if r.model == model), None)


@dataclass
class DataSummary(_Record):
    """What a run trained on: size, classes, groups, splits and every data issue."""

    source: str
    n: int
    kind: str
    target: str | None
    shape: list[int]
    dtype: str
    features: list[str]
    classes: list[Any]
    class_counts: dict[str, int]
    groups: dict[str, Any] | None
    splits: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResults(_File):
    """A run's ``results.json``: every model's results and the paired tests.

    ``extra`` holds what a job adds (``ablation`` for ``ablate``).
    """

    job: str
    created: str
    machine: dict[str, Any]
    wall_seconds: float
    data: DataSummary = field(metadata={"kind": DataSummary})
    unit: str
    group_name: str | None
    models: list[ModelResult] = field(metadata={"kind": [ModelResult]})
    comparisons: Comparisons | None = field(metadata={"kind": Comparisons})
    extra: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = field(default=None, metadata={"json": False})

    FILE: ClassVar[str] = "results.json"
    WHAT: ClassVar[str] = "results file"
    REQUIRED: ClassVar[tuple[str, ...]] = ("job", "models")

    def __iter__(self) -> Iterator[ModelResult]:
        return iter(self.models)

    def model(self, label: str) -> ModelResult:
        for m in self.models:
            if m.label == label:
                return m
        raise KeyError(f"no model {label!r} in this run; it has "
                       f"{', '.join(m.label for m in self.models)}")


@dataclass
class TrainResults(_File):
    """``train``'s ``metrics.json``: the one model, its fit and its validation/test metrics."""

    job: str
    model: str
    model_kwargs: dict[str, Any]
    n_params: int
    fit_seconds: float
    epochs: int
    best_epoch: int
    stop_reason: str | None
    info: dict[str, Any]
    sizes: dict[str, int]
    machine: dict[str, Any]
    validation: Metrics | None = field(default=None, metadata={"kind": Metrics, "omit": True})
    test: Metrics | None = field(default=None, metadata={"kind": Metrics, "omit": True})
    failed: str | None = field(default=None, metadata={"omit": True})  # why, e.g. diverged
    extra: dict[str, Any] = field(default_factory=dict)
    unit: str = field(default="cells", metadata={"json": False})  # cells or images
    group_name: str | None = field(default=None, metadata={"json": False})
    reused: bool = field(default=False, metadata={"json": False})
    run_dir: Path | None = field(default=None, metadata={"json": False})

    FILE: ClassVar[str] = "metrics.json"
    WHAT: ClassVar[str] = "train metrics"
    REQUIRED: ClassVar[tuple[str, ...]] = ("job", "model")

    def as_model_result(self) -> ModelResult:
        """The one model as a row of a comparison table."""
        return ModelResult(self.model, self.model, self.model, self.model, self.n_params,
                           self.fit_seconds, 1, test=self.test, failed=self.failed)


@dataclass
class TuneResults(_File):
    """``tune``'s ``tune_results.json``: the study, the best trial, and the final test of the
    tuned against the default configuration."""

    job: str
    study: str
    trials: dict[str, Any]
    tuning_seconds_this_process: float
    space: dict[str, Any]
    best: dict[str, Any]
    importances: dict[str, float]
    final: list[ModelResult] = field(metadata={"kind": [ModelResult]})
    tuned_vs_default: Comparisons | None = field(metadata={"kind": Comparisons})
    extra: dict[str, Any] = field(default_factory=dict)
    metric: str = field(default="accuracy", metadata={"json": False})
    unit: str = field(default="cells", metadata={"json": False})
    run_dir: Path | None = field(default=None, metadata={"json": False})

    FILE: ClassVar[str] = "tune_results.json"
    WHAT: ClassVar[str] = "tuning results"
    REQUIRED: ClassVar[tuple[str, ...]] = ("job", "best", "final")


@dataclass
class DoctorResults(_File):
    """``doctor``'s ``doctor.json``: findings (ranked), probes, the models and fixes tried,
    their paired tests against the user's setting, and the final model.

    ``findings`` hold :meth:`cellbench.diagnose.findings.Finding.to_dict` records; ``fixes``
    one dict per fix experiment (``fix``, ``label``, ``spec``, ``findings``, ``accuracy``,
    ``difference``, ``ci``, ``p_adjusted``, ``accepted``, ``verdict``); ``final`` the chosen
    setting, its test metrics and ``model_path`` (relative to the run directory).
    """

    job: str
    created: str
    machine: dict[str, Any]
    wall_seconds: float
    budget_seconds: float | None
    setting: dict[str, Any]
    data: DataSummary = field(metadata={"kind": DataSummary})
    findings: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    models: list[ModelResult] = field(default_factory=list, metadata={"kind": [ModelResult]})
    comparisons: Comparisons | None = field(default=None, metadata={"kind": Comparisons})
    fixes: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    not_run: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    unit: str = field(default="cells", metadata={"json": False})
    run_dir: Path | None = field(default=None, metadata={"json": False})

    FILE: ClassVar[str] = "doctor.json"
    WHAT: ClassVar[str] = "doctor results"
    REQUIRED: ClassVar[tuple[str, ...]] = ("job", "findings")
