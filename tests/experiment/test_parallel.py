"""Units in parallel: local processes (--jobs) and a Ray cluster that loses a node mid-run.

Both must give every unit the result of a sequential run with the same seeds, and never
train a finished unit again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench.exceptions import InvalidParameterError
from cellbench.experiment import run_compare
from synthetic import make_table  # tests/ is on sys.path (pytest rootdir)

MODELS = ("majority", "lda", "mlp(width=32)")


def _cfg(path: Path, **kwargs) -> RunConfig:
    return RunConfig(data=DataConfig(path=str(path), target="label", groups="donor"),
                     split=SplitConfig(cv=3), seeds=2, models=MODELS,
                     train=TrainConfig(max_epochs=kwargs.pop("epochs", 3), device="cpu"),
                     **kwargs)


def _units(run_dir: Path) -> dict[str, dict]:
    """Each finished unit's result (minus timings) and test probabilities."""
    out = {}
    for result in sorted(run_dir.glob("units/*/seed*/*/result.json")):
        data = json.loads(result.read_text(encoding="utf-8"))
        with np.load(result.parent / "predictions.npz") as z:
            proba = z["test_proba"].copy()
        key = result.parent.relative_to(run_dir).as_posix()
        out[key] = {"test": data.get("test"), "validation": data.get("validation"),
                    "epochs": data.get("epochs"), "proba": proba}
    return out


def _assert_same_units(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, unit in expected.items():
        np.testing.assert_array_equal(got[key]["proba"], unit["proba"], err_msg=key)
        for part in ("test", "validation", "epochs"):
            assert got[key][part] == unit[part], f"{key}: {part} differs"


@pytest.fixture
def cells(tmp_path) -> Path:
    path = tmp_path / "cells.csv"
    make_table(n=900, n_donors=9).to_csv(path, index=False)
    return path


@pytest.fixture
def one_thread():
    """The sequential reference with one thread per unit, like each parallel worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_jobs_give_the_sequential_results_and_reuse_finished_units(tmp_path, cells,
                                                                   one_thread, monkeypatch):
    monkeypatch.setattr("cellbench.experiment.parallel.threads_per_job", lambda jobs: 1)
    run_compare(_cfg(cells), tmp_path / "seq")
    expected = _units(tmp_path / "seq")
    assert len(expected) == (1 + 1 + 2) * 3  # majority, lda: one seed; mlp: two; 3 folds

    parallel = run_compare(_cfg(cells, jobs=2), tmp_path / "par")
    _assert_same_units(_units(tmp_path / "par"), expected)
    assert parallel.model("mlp(width=32)").test.accuracy.value == \
        run_compare(_cfg(cells), tmp_path / "seq").model("mlp(width=32)").test.accuracy.value

    # a rerun finds every unit finished: nothing is trained or written again
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "par").glob("units/**/result.json")}
    again = run_compare(_cfg(cells, jobs=2), tmp_path / "par")
    assert all(m.reused_units == m.units for m in again.models)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_jobs_and_ray_settings_are_checked(cells):
    with pytest.raises(InvalidParameterError, match=r"jobs must be an int >= 1 .*; got 0"):
        _cfg(cells, jobs=0)
    with pytest.raises(InvalidParameterError, match=r"ray must be auto .*; got ''"):
        _cfg(cells, ray="")


# -- a Ray cluster of two nodes (separate processes), one killed mid-run -------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    ray = Path(sys.executable).with_name("ray")
    return str(ray) if ray.exists() else shutil.which("ray") or "ray"


def _start_node(args: list[str], temp: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as fh:
        return subprocess.Popen([_ray_cli(), "start", "--block", "--num-cpus=1",
                                 "--disable-usage-stats", f"--temp-dir={temp}", *args],
                                stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _session(node: subprocess.Popen) -> list[Path]:
    """The node's processes: its session (Ray puts each worker in a process group of its
    own, but they stay in the session the node was started in)."""
    procs = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getsid(int(proc.name)) == node.pid:
                procs.append(proc)
        except (OSError, ProcessLookupError):
            continue
    return procs


def _kill(node: subprocess.Popen) -> None:
    """Kill the node: ``ray start``, its raylet and every worker process."""
    for proc in _session(node):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(proc.name), signal.SIGKILL)
    node.wait(timeout=30)


def _tasks_running_on(node: subprocess.Popen) -> int:
    """Units being trained now on the node (Ray names a worker after its task)."""
    count = 0
    for proc in _session(node):
        try:
            count += b"_ray_unit" in (proc / "cmdline").read_bytes()
        except OSError:
            continue
    return count


def _wait_for_nodes(address: str, n: int, temp: Path, deadline: float) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True,
                             text=True, timeout=120)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster did not reach {n} nodes; logs in {temp}")


def test_the_grid_survives_a_ray_worker_node_killed_mid_run(tmp_path, cells, one_thread):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'cellbench[ray]')")
    run_compare(_cfg(cells, epochs=60), tmp_path / "seq")
    expected = _units(tmp_path / "seq")

    temp = Path(f"/tmp/cbray{os.getpid()}")  # short: Ray's socket paths have a length limit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path / "ray.log"
    head = _start_node(["--head", f"--port={port}", "--include-dashboard=false"], temp, log)
    worker = None
    try:
        _wait_for_nodes(address, 1, temp, time.time() + 120)
        worker = _start_node([f"--address={address}"], temp, log)
        _wait_for_nodes(address, 2, temp, time.time() + 120)

        run_dir = tmp_path / "ray"
        cfg = _cfg(cells, epochs=60).replace(ray=address)
        (tmp_path / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        driver = subprocess.Popen(
            [sys.executable, "-m", "cellbench", "compare", "--config",
             str(tmp_path / "config.yaml"), "--out", str(run_dir), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        finished: dict[Path, tuple[int, bytes]] = {}
        deadline = time.time() + 600
        while driver.poll() is None and time.time() < deadline:
            done = list(run_dir.glob("units/*/seed*/*/result.json"))
            # kill the second node while it trains a unit, after some units finished
            if len(done) >= 2 and _tasks_running_on(worker):
                finished = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in done}
                _kill(worker)
                break
            time.sleep(0.2)
        if not finished or len(finished) == len(expected):  # say why, with the driver's words
            if driver.poll() is None:
                driver.kill()
            output, _ = driver.communicate(timeout=60)
            assert finished, f"no unit finished before the driver stopped:\n{output}"
            raise AssertionError(f"every unit finished before the node was killed:\n{output}")
        output, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, output

        _assert_same_units(_units(run_dir), expected)
        for path, (stamp, data) in finished.items():  # never recomputed nor rewritten
            assert path.stat().st_mtime_ns == stamp and path.read_bytes() == data
        assert json.loads((run_dir / "results.json").read_text())["models"]
    finally:
        if worker is not None:
            _kill(worker)
        _kill(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_unit_lost_with_its_node_is_run_again_then_given_up():
    """A task's output lost with a killed node comes back as None (the driver submits the
    unit again); after RAY_RETRIES losses it is a clear error; a unit's own error is itself."""
    import types

    from cellbench.exceptions import CellbenchError
    from cellbench.experiment.parallel import RAY_RETRIES, _fetch

    class RayError(Exception):
        pass

    class RayTaskError(RayError):
        def __init__(self, cause):
            self.cause = cause

    def ray_that(raises):
        def get(ref):
            raise raises
        return types.SimpleNamespace(get=get, exceptions=types.SimpleNamespace(
            RayError=RayError, RayTaskError=RayTaskError))

    unit = types.SimpleNamespace(choice=types.SimpleNamespace(label="mlp"), seed=0,
                                 split=types.SimpleNamespace(name="fold1"))
    lost = ray_that(RayError("object lost"))
    assert _fetch(lost, None, unit, 0) is None
    with pytest.raises(CellbenchError, match=f"it was lost {RAY_RETRIES + 1} times"):
        _fetch(lost, None, unit, RAY_RETRIES)
    with pytest.raises(InvalidParameterError, match="bad"):
        _fetch(ray_that(RayTaskError(InvalidParameterError("bad"))), None, unit, 0)
    ok = types.SimpleNamespace(get=lambda ref: ("result", {}, []),
                               exceptions=lost.exceptions)
    assert _fetch(ok, None, unit, 0) == ("result", {}, [])
