"""Run directories: choose one, check it can take this run, open it, describe the machine.

A run directory holds ``config.yaml`` (the resolved configuration), ``data.json`` and the
job's results; every file is written atomically, so an interrupted job never leaves a
half-written file and a rerun with the same ``--out`` reuses what finished.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from .._config import RunConfig
from .._utils import atomic_write_json, atomic_write_text
from .._version import __version__
from ..evaluate.results import DataSummary
from ..exceptions import RunDirectoryError

__all__ = ["check_run_dir", "invocation", "machine_info", "open_run_dir"]


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
        old = RunConfig.from_yaml(saved_cfg.read_text(encoding="utf-8"), str(saved_cfg))
        if old.data != cfg.data or old.split != cfg.split:
            raise RunDirectoryError(
                f"run directory {str(path)!r} holds a run on different data or splits; its "
                "finished results cannot be reused. Pass a new --out."
            )
    elif path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirectoryError(
            f"run directory {str(path)!r} must be empty or a cellbench run; it holds other "
            "files. Pass a new --out."
        )
    return path


def open_run_dir(path: Path, cfg: RunConfig, data: DataSummary | None = None) -> Path:
    """Create the run directory (after the data loaded) with ``config.yaml``, ``run.json``
    (the command) and ``data.json``."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", cfg.to_yaml())
    atomic_write_json(path / "run.json", invocation())
    if data is not None:
        atomic_write_json(path / "data.json", data.to_dict())
    return path
