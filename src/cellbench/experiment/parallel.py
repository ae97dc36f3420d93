"""Units of a grid run in parallel: local processes (``--jobs N``) or a Ray cluster (``--ray``).

The contract of a unit does not change (:mod:`cellbench.experiment.grid`): finished units
are found in the run directory and never handed out again, and a unit's ``result.json`` is
written last, atomically, so an interrupted grid continues where it stopped.

- **Local processes** (``jobs > 1``): ``spawn``-ed worker processes, each given the dataset
  once and ``cores // jobs`` threads (torch and OpenMP), so the cores are not
  oversubscribed. They write their units straight into the run directory.
- **Ray** (``ray="auto"``, ``"local"`` or a cluster address): each unit is a Ray task of
  one CPU and one thread, so a cluster runs as many units at once as it has CPUs. The task
  trains in a private temporary folder and returns the unit's files to the driver, which
  writes them into the run directory (``result.json`` last): the cluster needs no shared
  storage. A task lost with its node is retried by Ray
  on another node; a unit the driver has written is never sent again.

Results equal a sequential run's with the same seeds when each unit has the same number of
threads: every unit is seeded, and nothing is shared between units. (Some torch kernels,
e.g. the 1-D convolution, round differently with a different thread count.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._config import DataConfig
from .._utils import atomic_write_bytes, try_import
from ..data.dataset import Dataset
from ..evaluate.results import UnitResult
from ..exceptions import CellbenchError, CellbenchWarning, InvalidParameterError

__all__ = ["run_parallel", "threads_per_job"]

#: Ray tasks lost with a node (or a killed worker process) are tried this many more times
RAY_RETRIES = 3

Finished = Callable[[int, UnitResult], None]
RunUnit = Callable[[Dataset, Any, DataConfig], UnitResult]  # grid.run_unit


def threads_per_job(jobs: int) -> int:
    """Threads each of ``jobs`` local workers gets: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


# -- worker side ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _limit_threads(threads: int) -> None:
    """torch and every OpenMP/BLAS pool loaded (LightGBM's too) use ``threads`` threads."""
    import torch
    from threadpoolctl import threadpool_limits

    with contextlib.suppress(ImportError):  # LightGBM's OpenMP, so that the limit reaches it
        import lightgbm  # noqa: F401
    torch.set_num_threads(threads)
    _WORKER["limits"] = threadpool_limits(threads)  # kept: the limit lasts while it lives


def _init_worker(run: RunUnit, ds: Dataset, data_cfg: DataConfig, threads: int) -> None:
    _WORKER.update(run=run, ds=ds, data_cfg=data_cfg)
    _limit_threads(threads)


def _run_recorded(run: RunUnit, ds: Dataset, unit: Any,
                  data_cfg: DataConfig) -> tuple[UnitResult, list]:
    """Run one unit, recording its warnings for the driver to show (once each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CellbenchWarning)
        result = run(ds, unit, data_cfg)
    shown = [(str(w.message), w.category) for w in caught
             if issubclass(w.category, CellbenchWarning)]
    return result, shown


def _local_unit(unit: Any) -> tuple[UnitResult, list]:
    return _run_recorded(_WORKER["run"], _WORKER["ds"], unit, _WORKER["data_cfg"])


def _ray_unit(run: RunUnit, ds: Dataset, unit: Any, data_cfg: DataConfig,
              threads: int) -> tuple[UnitResult, dict[str, bytes], list]:
    """On a Ray worker: train in a private folder, return the result and the files."""
    _limit_threads(threads)
    with tempfile.TemporaryDirectory(prefix="cellbench-unit-") as tmp:
        local = replace(unit, path=Path(tmp) / "unit")
        result, shown = _run_recorded(run, ds, local, data_cfg)
        files = {p.relative_to(local.path).as_posix(): p.read_bytes()
                 for p in sorted(local.path.rglob("*")) if p.is_file()}
    result.run_dir = None
    return result, files, shown


# -- driver side ------------------------------------------------------------------------

def _reemit(shown: list) -> None:
    for message, category in shown:
        warnings.warn(message, category, stacklevel=2)


def _local(run: RunUnit, ds: Dataset, units: Sequence[Any], data_cfg: DataConfig, jobs: int,
           done: Finished) -> None:
    context = multiprocessing.get_context("spawn")  # fork is unsafe after torch/OpenMP
    pool = ProcessPoolExecutor(min(jobs, len(units)), mp_context=context,
                               initializer=_init_worker,
                               initargs=(run, ds, data_cfg, threads_per_job(jobs)))
    futures = {pool.submit(_local_unit, unit): i for i, unit in enumerate(units)}
    pending = set(futures)
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    result, shown = future.result()
                except BrokenProcessPool as exc:
                    raise CellbenchError(
                        f"worker processes of --jobs {jobs} must run to the end; one died "
                        f"({exc}), e.g. killed for lack of memory. Finished units are kept "
                        "in the run directory: rerun the same command, with fewer --jobs if "
                        "memory is short.") from exc
                _reemit(shown)
                done(futures[future], result)
    except BaseException:
        # units still running are not waited for (an interrupt reaches them too); the
        # finished ones are in the run directory already
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _import_ray() -> Any:
    return try_import("ray", "ray", "--ray (units on a Ray cluster; --jobs N runs them in "
                                    "parallel on this machine without it)")


def _connect(ray: Any, address: str) -> bool:
    """Connect to the cluster; True when this call started the connection."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InvalidParameterError(
            f"ray address must reach a running Ray cluster; connecting to {address!r} failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Start "
            "one with `ray start --head`, pass its address (host:port), or use --ray local."
        ) from exc
    return True


def _write_files(unit: Any, files: dict[str, bytes]) -> None:
    """The unit's files into the run directory; ``result.json`` last (marks it finished)."""
    for name in sorted(files, key=lambda n: n == UnitResult.FILE):
        path = unit.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, files[name])


def _fetch(ray: Any, ref: Any, unit: Any, attempt: int
           ) -> tuple[UnitResult, dict[str, bytes], list] | None:
    """A finished task's output; its own error (a bad setting) is raised as itself. None when
    the task or its output was lost with a node (the output of a task that finished on a node
    killed before the driver read it is gone too): the caller submits it again."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except ray.exceptions.RayError as exc:
        if attempt < RAY_RETRIES:
            return None
        raise CellbenchError(
            f"unit {unit.choice.label} seed {unit.seed} {unit.split.name} must finish on the "
            f"Ray cluster; it was lost {attempt + 1} times ({type(exc).__name__}). "
            "Finished units are kept in the run directory: rerun the same command to "
            "continue.") from exc


def _ray(run: RunUnit, ds: Dataset, units: Sequence[Any], data_cfg: DataConfig, address: str,
         done: Finished, status: Callable[[str], None]) -> None:
    ray = _import_ray()
    started = _connect(ray, address)
    pending: list[Any] = []
    try:
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(_ray_unit)
        ds_ref = ray.put(ds)
        refs: dict[Any, int] = {}
        attempts = [0] * len(units)

        def submit(i: int) -> Any:
            ref = task.remote(run, ds_ref, replace(units[i], path=units[i].path.resolve()),
                              data_cfg, 1)
            refs[ref] = i
            return ref

        pending = [submit(i) for i in range(len(units))]
        while pending:
            status(f"ray: {len(pending)} units left on "
                   f"{len([n for n in ray.nodes() if n.get('Alive')])} nodes")
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                i = refs.pop(ref)
                fetched = _fetch(ray, ref, units[i], attempts[i])
                if fetched is None:  # lost with its node: run it again
                    attempts[i] += 1
                    pending.append(submit(i))
                    continue
                result, files, shown = fetched
                _write_files(units[i], files)
                result.run_dir = units[i].path
                _reemit(shown)
                done(i, result)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def run_parallel(run: RunUnit, ds: Dataset, units: Sequence[Any], data_cfg: DataConfig, *,
                 jobs: int = 1, ray: str | None = None, done: Finished,
                 status: Callable[[str], None] = lambda text: None) -> None:
    """Run ``units`` (none finished yet) with ``run(ds, unit, data_cfg)`` on local processes
    or Ray; ``done(i, result)`` is called in the driver as each unit ``i`` finishes, in the
    order they finish."""
    if not units:
        return
    if ray is not None:
        _ray(run, ds, units, data_cfg, ray, done, status)
    else:
        _local(run, ds, units, data_cfg, jobs, done)

