"""Exceptions and warnings raised by cellbench.

Every message follows one shape: ``<what> must be <expectation>; got <actual>. <how to fix>``,
naming the file, column, row or value at fault.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "CellbenchError",
    "CellbenchWarning",
    "DataError",
    "DataLeakageError",
    "InvalidParameterError",
    "MissingDependencyError",
    "NotFittedError",
    "RunDirectoryError",
    "StopTraining",
    "UnknownNameError",
]


class CellbenchError(Exception):
    """Base class of every error cellbench raises on purpose."""


class InvalidParameterError(CellbenchError, ValueError, TypeError):
    """A parameter has a value outside its documented range or type."""


class UnknownNameError(InvalidParameterError):
    """A name (model, optimizer, column, ...) is not known; the message suggests the closest."""


class DataError(CellbenchError, ValueError):
    """Input data cannot be used as given (missing column, NaN, corrupt file, ...)."""


class DataLeakageError(CellbenchError, ValueError):
    """A split would put one patient/sample in two parts, or test data would reach training."""


class NotFittedError(CellbenchError, _SklearnNotFittedError):
    """An estimator was used before ``fit`` (also a scikit-learn ``NotFittedError``)."""


class MissingDependencyError(CellbenchError, ImportError):
    """An optional package is needed for the requested feature."""


class RunDirectoryError(CellbenchError):
    """A run directory is missing, incomplete or holds a different run."""


class CellbenchWarning(UserWarning):
    """Something looks wrong with the data or settings, but the run can go on."""


class StopTraining(Exception):
    """Raised by a callback to end training cleanly; never escapes :func:`train.engine.fit`."""
