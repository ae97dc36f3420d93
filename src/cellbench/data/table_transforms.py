"""Table preprocessing fitted on the training part only, saved with the model.

Steps run in the given order:

``arcsinh``
    ``asinh(x / cofactor)`` per channel: the field's variance-stabilising transform
    (cofactor 5 for mass cytometry, 150 for flow cytometry; per-channel overrides).
``standardize``
    Subtract the training mean, divide by the training standard deviation.
``quantile``
    Map each feature through its training quantiles onto a standard normal.
``sample-standardize``, ``sample-quantile``
    Align each sample's markers (rows grouped by ``--groups``) to a reference of the training
    samples, from the sample's own cells: :mod:`cellbench.data.sample_norm`.

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
from . import sample_norm as sn
from .sample_norm import SAMPLE_STEPS, stat_rows

__all__ = ["CHUNK_ROWS", "LARGE_ROWS", "Preprocessor"]

N_QUANTILES = 1000


#: above this many training rows, statistics and transforms go a chunk of rows at a time
LARGE_ROWS = 1 << 20
CHUNK_ROWS = 1 << 16
FIT_CHUNK_ROWS = 1 << 14  # rows a large table's statistics are summed over at a time


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
    group_name : str or None
        The column naming each row's sample, for the ``sample-*`` steps (``predict`` looks
        for it in new data).

    Attributes
    ----------
    feature_names_ : list of str
    cofactors_ : ndarray
    mean_, scale_ : ndarray
    quantiles_ : ndarray of shape (N_QUANTILES, n_features)
    sample_refs_ : dict of int to ndarray
        The reference of each ``sample-*`` step, by its position in ``steps``.
    """

    def __init__(self, steps: Sequence[str] = ("standardize",), cofactor: float = 5.0,
                 cofactors: Mapping[str, float] | None = None,
                 aliases: Mapping[str, str] | None = None,
                 group_name: str | None = None) -> None:
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
        self.group_name = group_name
        self.fitted_ = False

    @property
    def per_sample(self) -> bool:
        """Whether a step aligns each sample (then transforms need the rows' samples)."""
        return any(step in SAMPLE_STEPS for step in self.steps)

    def fit(self, X: np.ndarray, feature_names: Sequence[str],
            rows: np.ndarray | None = None, groups: np.ndarray | None = None
            ) -> Preprocessor:
        """Learn the statistics of each step from training rows ``X`` (``X[rows]``).

        ``groups`` (aligned with ``X``) names each row's sample for the ``sample-*`` steps;
        None: all rows are one sample. Above :data:`LARGE_ROWS` training rows (and without
        the quantile and sample steps) the statistics are summed in chunks of rows, so no
        copy of the training rows is made.
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
        self.sample_refs_: dict[int, np.ndarray] = {}
        if (rows is not None and len(rows) > LARGE_ROWS and "quantile" not in self.steps
                and not self.per_sample):
            self._fit_in_chunks(X, rows)
            self.fitted_ = True
            return self
        Z = X if rows is None else X[rows]
        G = groups if groups is None or rows is None else np.asarray(groups)[rows]
        blocks = list(sn.sample_blocks(G, len(Z))) if self.per_sample else []
        for i, step in enumerate(self.steps):
            if step in SAMPLE_STEPS:
                # each sample's statistics once: for the reference, then to align it
                stats = [sn.sample_stats(step, Z[b[stat_rows(len(b))]])
                         if len(b) >= sn.MIN_CELLS else None for b in blocks]
                measured = [st for st in stats if st is not None]
                if not measured:
                    raise InvalidParameterError(
                        f"transform step {step!r} needs a training sample of at least "
                        f"{sn.MIN_CELLS} cells to learn its reference; the largest has "
                        f"{max(map(len, blocks))}. Drop {step!r} from --transform.")
                ref = self.sample_refs_[i] = sn.reference(measured)
                aligned = np.empty_like(Z, dtype=np.float32)
                for b, st in zip(blocks, stats, strict=True):
                    aligned[b] = sn.align(step, Z[b], ref if st is None else st, ref)
                Z = aligned
                continue
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

    def sample_statistics(self, Z: np.ndarray) -> list[np.ndarray]:
        """One sample's statistics for each ``sample-*`` step, from its rows ``Z`` (raw
        values, those of :func:`~cellbench.data.sample_norm.stat_rows`): what
        :meth:`transform` computes from a whole sample, for data streamed in chunks."""
        Z = np.asarray(Z, dtype=np.float32)
        out = []
        for i, step in enumerate(self.steps):
            if step in SAMPLE_STEPS:
                ref = self.sample_refs_[i]
                stats = sn.sample_stats(step, Z) if len(Z) >= sn.MIN_CELLS else ref
                out.append(stats)
                Z = sn.align(step, Z, stats, ref)
            else:
                Z = self._apply(step, Z)
        return out

    def _transform_sample(self, X: np.ndarray, stats: list[np.ndarray] | None) -> np.ndarray:
        """All steps on the rows of one sample (``stats``: its statistics, or None to
        compute them from these rows)."""
        if stats is None:
            stats = self.sample_statistics(X[stat_rows(len(X))])
        k = 0
        for i, step in enumerate(self.steps):
            if step in SAMPLE_STEPS:
                X = sn.align(step, X, stats[k], self.sample_refs_[i])
                k += 1
            else:
                X = self._apply(step, X)
        return X

    def transform(self, X: np.ndarray, groups: np.ndarray | None = None,
                  stats_by_sample: Mapping[Any, list[np.ndarray]] | None = None
                  ) -> np.ndarray:
        """Apply the fitted steps; returns float32.

        For the ``sample-*`` steps ``groups`` names each row's sample (None: all rows are
        one sample), and each sample's statistics come from its rows here, or from
        ``stats_by_sample[group]`` when given (:meth:`sample_statistics` of data streamed in
        chunks).
        """
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
        if self.per_sample:
            out = np.empty(X.shape, np.float32)
            keys = None if groups is None else np.asarray(groups)
            for b in sn.sample_blocks(keys, len(X)):
                stats = None
                if stats_by_sample is not None:
                    stats = stats_by_sample.get(None if keys is None else keys[b[0]])
                out[b] = self._transform_sample(X[b], stats)
            return out
        for step in self.steps:
            X = self._apply(step, X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def transform_rows(self, X: np.ndarray, rows: np.ndarray,
                       groups: np.ndarray | None = None) -> np.ndarray:
        """``transform(X[rows], groups[rows])``, made a chunk of rows (or one sample) at a
        time: the same values, without a copy of the raw rows nor full-size temporaries.
        ``groups`` is aligned with ``X``."""
        out = np.empty((len(rows), X.shape[1]), np.float32)
        if self.per_sample:
            G = None if groups is None else np.asarray(groups)[rows]
            for b in sn.sample_blocks(G, len(rows)):
                out[b] = self.transform(X[rows[b]])
            return out
        for start in range(0, len(rows), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = self.transform(X[rows[start:start + CHUNK_ROWS]])
        return out

    def _chunks(self, X: np.ndarray, rows: np.ndarray, steps: Sequence[str]
                ) -> Iterator[np.ndarray]:
        for start in range(0, len(rows), FIT_CHUNK_ROWS):
            Z = np.asarray(X[rows[start:start + FIT_CHUNK_ROWS]], dtype=np.float32)
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
                squares = sum(np.square(D := Z - mean, out=D).sum(axis=0)
                              for Z in self._chunks(X, rows, done))
                std = np.sqrt(squares / len(rows)).astype(np.float32)
                self.mean_ = mean.astype(np.float32)
                self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
            done.append(step)

    def fit_transform(self, X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        return self.fit(X, feature_names).transform(X)

    def _apply(self, step: str, X: np.ndarray) -> np.ndarray:
        # each step makes one new array and works in it (no second full-size temporary)
        if step == "arcsinh":
            Z = X / self.cofactors_
            return np.arcsinh(Z, out=Z)
        if step == "standardize":
            Z = X - self.mean_
            Z /= self.scale_
            return Z
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
            "sample_refs_": {str(i): ref.tolist() for i, ref in self.sample_refs_.items()},
            "group_name": self.group_name,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Preprocessor:
        pre = cls(state["steps"], state["cofactor"], state["cofactors"],
                  group_name=state.get("group_name"))
        pre.feature_names_ = list(state["feature_names"])
        d = len(pre.feature_names_)
        pre.cofactors_ = np.asarray(state["cofactors_"], np.float32)
        pre.mean_ = np.asarray(state["mean_"], np.float32)
        pre.scale_ = np.asarray(state["scale_"], np.float32)
        pre.quantiles_ = np.asarray(state["quantiles_"], np.float32).reshape(-1, d)
        pre.sample_refs_ = {int(i): np.asarray(ref, np.float32).reshape(-1, d)
                            for i, ref in state.get("sample_refs_", {}).items()}
        pre.fitted_ = True
        return pre

    def __repr__(self) -> str:
        return f"Preprocessor(steps={self.steps!r}, cofactor={self.cofactor:g})"
