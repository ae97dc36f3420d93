"""Small helpers shared across subpackages: atomic writes, seeding, devices, names, imports."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import json
import os
import random
import secrets
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import MissingDependencyError, UnknownNameError

# ---------------------------------------------------------------------------------------------
# Atomic writes: a reader never sees a half-written file, a crash leaves the old file intact.


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its files are 0600 whatever the umask; these follow it like any other tool
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class NpzWriter:
    """An uncompressed .npz that ``np.load`` reads, written array by array as they come
    (``add``), each from its own memory in 1 MB pieces (``np.savez`` needs every array at
    once and copies 16 MB at a time). Use as a context manager around an open binary file."""

    def __init__(self, fh: Any) -> None:
        import zipfile

        self._zip = zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, **arrays: Any) -> None:
        from numpy.lib import format as npy

        for name, value in arrays.items():
            array = np.asarray(value)
            array = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            with self._zip.open(f"{name}.npy", "w", force_zip64=True) as out:
                if array.dtype.hasobject:  # pickled, as np.savez does
                    npy.write_array(out, array)
                    continue
                npy.write_array_header_1_0(out, npy.header_data_from_array_1_0(array))
                raw = array.reshape(-1).view(np.uint8)
                for i in range(0, len(raw), 1 << 20):
                    out.write(raw[i:i + (1 << 20)])

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (numpy scalars and arrays allowed)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a truncated checkpoint behind."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray, Path, set, frozenset, tuple)):
        return to_builtin(list(obj) if isinstance(obj, (set, frozenset)) else obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def to_builtin(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and Paths inside ``obj`` to plain Python values."""
    if isinstance(obj, dict):
        return {str(k): to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_builtin(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Seeding and devices


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> Any:
    """Turn ``"auto"``/``"cpu"``/``"cuda[:i]"`` into a :class:`torch.device`, checking it exists."""
    import torch

    from .exceptions import InvalidParameterError

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(
            f"device must be 'auto', 'cpu' or 'cuda[:index]'; got {device!r}."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"device must be available on this machine; got {device!r} but PyTorch sees no CUDA "
            "GPU. Use --device cpu (or 'auto'), or install a CUDA build of PyTorch."
        )
    return dev


# ---------------------------------------------------------------------------------------------
# Names


def _libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:  # no C library to ask
        return None


#: input size from which a training job maps its large buffers (:func:`map_large_buffers`)
LARGE_INPUT_BYTES = 256 << 20


def input_bytes(path: str | Path | None) -> int:
    """Bytes of a job's input on disk: a file, or the files of a folder and of its
    subfolders one level down (0 for none or a path that does not exist)."""
    if not path:
        return 0
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    if not root.is_dir():
        return 0
    files = [p for p in root.iterdir() if p.is_file()]
    files += [f for sub in root.iterdir() if sub.is_dir() for f in sub.iterdir() if f.is_file()]
    return sum(f.stat().st_size for f in files)


def map_large_buffers(threshold: int = 1 << 18) -> None:
    """Give every heap buffer of ``threshold`` bytes or more its own memory mapping, handed
    back to the system when freed (glibc's ``mallopt(M_MMAP_THRESHOLD)``; elsewhere a
    no-op). glibc otherwise raises that threshold as large buffers are freed, and later
    arrays of that size stay resident in the heap after use: a job's temporaries pile up
    instead of coming and going. Set once, by the command line, for the whole process."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD


def map_buffers_of_large_input(path: str | Path | None) -> None:
    """:func:`map_large_buffers` for a job whose input holds :data:`LARGE_INPUT_BYTES` or
    more: its whole-table temporaries then come and go (25-30 MB less at peak on a
    2-million-cell compare). Smaller inputs keep glibc's own threshold: mapping every buffer
    of 256 KB or more costs a training loop page faults (the image example took 1.5x as
    long, the cytometry one 1.1x), for nothing to gain on small tables."""
    if input_bytes(path) >= LARGE_INPUT_BYTES:
        map_large_buffers()


def release_free_memory() -> None:
    """Give freed memory back to the system, so a loader's transient buffers do not stay in
    the process's resident memory: the C heap's pages (glibc's ``malloc_trim``; elsewhere a
    no-op) and, once pyarrow is loaded, what Arrow's default pool keeps cached. The Parquet
    reader decodes pages with that pool (mimalloc) whatever ``pyarrow.set_memory_pool``
    says, and mimalloc keeps about 20 MB of a 100-file read otherwise."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """Return the closest match to ``name`` among ``choices``, or ``None``."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return close[0] if close else None


def unknown_name_error(
    kind: str, name: str, choices: Iterable[str], hint: str | None = None
) -> UnknownNameError:
    """Build an :class:`UnknownNameError` listing or suggesting valid names."""
    choices = sorted(choices)
    msg = f"Unknown {kind} {name!r}."
    guess = did_you_mean(name, choices)
    if guess is not None:
        msg += f" Did you mean {guess!r}?"
    if len(choices) <= 10:
        msg += " Valid: " + format_list(choices, 10) + "."
    if hint:
        msg += f" {hint}"
    return UnknownNameError(msg)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets: ``"a,b(c=1,d=[2,3])"`` -> ``["a", "b(c=1,d=[2,3])"]``."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "([") - (ch in ")]")
        if ch == sep and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def format_list(items: Iterable[Any], limit: int = 5) -> str:
    """``'a', 'b', 'c' and 7 more`` for messages."""
    items = [i.item() if isinstance(i, np.generic) else i for i in items]
    shown = ", ".join(repr(i) for i in items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown


# ---------------------------------------------------------------------------------------------
# Optional imports (Optuna's try_import, simplified)


def try_import(module: str, extra: str | None = None, purpose: str = "") -> Any:
    """Import ``module`` or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        how = f"pip install 'cellbench[{extra}]'" if extra else f"pip install {module}"
        raise MissingDependencyError(
            f"The package {module!r} must be installed{what}; it could not be imported "
            f"({exc}). Install it with: {how}"
        ) from exc


def progress_bar(console: Any = None, *, label: str = "{task.description}",
                 transient: bool = True) -> Any:
    """The one progress bar every long job shows: label, bar, done/total, elapsed, ETA, info.

    Tasks added to it must carry an ``info`` field (``add_task(..., info="")``).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    # markup=False: descriptions and info hold model labels, split and group names ("[fold1]")
    return Progress(TextColumn(label, markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}", markup=False), console=console,
                    transient=transient)
