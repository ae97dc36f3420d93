"""Run directories: choose one, check it can take this run, open it, describe the machine.

A run directory holds ``config.yaml`` (the resolved configuration), ``data.json`` and the
job's results; every file is written atomically, so an interrupted job never leaves a
half-written file and a rerun with the same ``--out`` reuses what finished.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import sys
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .._config import RunConfig
from .._utils import atomic_write_json, atomic_write_text
from .._version import __version__
from ..evaluate.results import DataSummary
from ..exceptions import RunDirectoryError

__all__ = ["RunDirectory", "check_run_dir", "invocation", "machine_info", "open_run_dir",
           "run_kind"]

LOCK_FILE = ".lock"  # held (flock) by the one process running a job in the directory


def machine_info() -> dict[str, Any]:
    """Platform, Python, torch, threads, GPU and cellbench version, for the record."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cellbench": __version__}


def invocation() -> dict[str, Any]:
    """The command that started this process, where and when (``run.json``, for the report)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).stem == "cellbench":  # the console script
        command = ["cellbench", *argv[1:]]
    else:  # the Python API, run from a script (or "" in an interactive session)
        command = [Path(sys.executable).name, *argv] if argv and argv[0] else []
    return {"command": command, "command_line": shlex.join(command) if command else None,
            "cwd": os.getcwd(), "started": datetime.now().isoformat(timespec="seconds")}


def check_run_dir(out: str | Path | None, job: str, cfg: RunConfig, reuse: bool) -> Path:
    """Choose the run directory and check it can take this run; creates nothing.

    An existing run is reopened only when ``reuse`` and its data and split settings equal
    ``cfg``'s; otherwise finished results could be mixed with a different run.
    """
    if out is None:
        out = Path("runs") / f"{job}-{datetime.now():%Y%m%d-%H%M%S}"
    path = Path(out)
    saved_cfg = path / "config.yaml"
    if saved_cfg.is_file():
        if not reuse:
            raise RunDirectoryError(
                f"run directory {str(path)!r} must be new; it already holds a run. Pass a new "
                "--out, or --resume to continue it."
            )
        held = run_kind(path)
        if held is not None and held != job:  # another job's files would be mixed in
            raise RunDirectoryError(
                f"run directory {str(path)!r} must hold a {job} run for `cellbench {job}` to "
                f"continue it; it holds a {held} run. Pass a new --out."
            )
        old = RunConfig.from_yaml(saved_cfg.read_text(encoding="utf-8"), str(saved_cfg))
        if old.data != cfg.data or old.split != cfg.split:
            raise RunDirectoryError(
                f"run directory {str(path)!r} holds a run on different data or splits; its "
                "finished results cannot be reused. Pass a new --out."
            )
        if job == "tune" and old.train.model != cfg.train.model:
            raise RunDirectoryError(
                f"run directory {str(path)!r} must hold a tuning of {cfg.train.model!r} to "
                f"continue it; it holds one of {old.train.model!r}, whose results this run "
                "would overwrite. Pass a new --out (without --out, each model gets its own "
                "folder)."
            )
    elif path.exists() and not path.is_dir():
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be empty or a cellbench run; it is a file, not "
            "a folder. Pass a new --out."
        )
    elif path.exists() and any(path.iterdir()):
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be empty or a cellbench run; it holds other "
            "files. Pass a new --out."
        )
    _check_writable(path)
    return path


def run_kind(path: Path) -> str | None:
    """The job that made run directory ``path``: ``run.json``'s ``job``, else what its files
    say (runs made before ``run.json`` named the job); None when nothing tells."""
    record = _json_object(path / "run.json")
    if record.get("job"):
        return str(record["job"])
    if (path / "doctor.json").is_file():
        return "doctor"
    if (path / "tune_results.json").is_file() or (path / "space.yaml").is_file():
        return "tune"
    if (path / "metrics.json").is_file() or (path / "checkpoints").is_dir():
        return "train"
    job = _json_object(path / "results.json").get("job")
    return str(job) if job else None


def _json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_writable(path: Path) -> None:
    """The run directory, or the folder it will be made in, must take new files."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be creatable; {str(existing)!r} is a file, not "
            "a folder. Pass another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be writable; {str(existing)!r} does not let "
            "this user create files (permission denied). Pass another --out, or fix the "
            "folder's permissions.")


class RunDirectory:
    """An opened run directory: held (locked) by this process until closed.

    A context manager (``with open_run_dir(...):``); the lock is also released when the
    object is dropped or the process ends, so a killed job never leaves a stale lock.
    """

    def __init__(self, path: Path, lock: IO[str] | None) -> None:
        self.path = path
        self._lock = lock

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __fspath__(self) -> str:
        return str(self.path)


def _lock(path: Path) -> IO[str] | None:
    """An exclusive lock on ``path/.lock``, or a clear error naming the process holding it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one process per directory is on you
        return None
    handle = open(path / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirectoryError(
            f"run directory {str(path)!r} must not be in use by another job; {holder} is "
            "running in it now. Wait for it to finish (then rerun to reuse its results), or "
            "pass another --out.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"cellbench pid {os.getpid()} on {socket.gethostname()} since "
                 f"{datetime.now():%Y-%m-%d %H:%M:%S}\n")
    handle.flush()
    return handle


def open_run_dir(path: Path, cfg: RunConfig, data: DataSummary | None = None, *,
                 lock: bool = True, job: str | None = None) -> RunDirectory:
    """Create the run directory (after the data loaded and every check passed), lock it
    (``lock``: one job at a time; ``tune`` shares its directory between workers), and write
    ``config.yaml``, ``run.json`` (the job and the command) and ``data.json``."""
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        opened = RunDirectory(path, _lock(path) if lock else None)
        atomic_write_text(path / "config.yaml", cfg.to_yaml())
        atomic_write_json(path / "run.json", {**({"job": job} if job else {}), **invocation()})
        if data is not None:
            atomic_write_json(path / "data.json", data.to_dict())
    except OSError as exc:
        for folder in made:  # nothing half-made is left behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be writable; creating it failed "
            f"({type(exc).__name__}: {exc.strerror or exc}). Pass another --out.") from exc
    return opened
