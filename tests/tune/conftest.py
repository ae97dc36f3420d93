"""A throwaway PostgreSQL server for the multi-worker tests (skipped where none is installed)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

HOW = ("PostgreSQL is not installed, so the multi-worker tuning tests are skipped. Install it "
       "(Debian: apt-get install -y postgresql; .ci/run does) and pip install psycopg2-binary, "
       "then rerun: pytest tests/tune")


def _bin_dir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    pytest.importorskip("psycopg2", reason=HOW)
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip(HOW)
    # Not under pytest's tmp_path: its root is private to the user running pytest, so the
    # postgres account could not reach a data directory inside it when we run as root.
    base = Path(tempfile.mkdtemp(prefix="cellbench-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own account
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "cellbench",
        "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-o",
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cellbench",
            "tuning")
        yield f"postgresql+psycopg2://cellbench@127.0.0.1:{port}/tuning"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
