"""Running a study: the trial loop with stale-trial recovery, its progress, its history plot.

Shared by ``cellbench tune`` and ``cellbench tune-worker``; it tells an observer (see
:mod:`cellbench.report.observer`) what happens and prints nothing itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .._utils import atomic_path, try_import
from ..exceptions import CellbenchError
from .study import TuneSettings, recover_stale_trials, study_counts, taken_over_trial

__all__ = ["history_plot", "optimize"]


class _ProgressPoller:
    """A progress bar fed by polling the storage: every worker's trials, not only ours."""

    def __init__(self, study: Any, total: int, observer: Any) -> None:
        self.study, self.total = study, total
        self.progress = observer.progress(label="trials", transient=False)
        self.enabled = self.progress is not None
        self._stop = threading.Event()

    def __enter__(self) -> _ProgressPoller:
        if not self.enabled:
            return self
        self.task = self.progress.add_task("trials", total=self.total, info="")
        self.progress.start()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _update(self) -> None:
        c = study_counts(self.study)
        best = "-" if c["best"] is None else f"{c['best'] * 100:.2f} %"
        self.progress.update(self.task, completed=min(c["finished"], self.total),
                             info=f"running {c['running']} pruned {c['pruned']} failed "
                                  f"{c['failed']} best {best}")

    def _poll(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self._update()
            except Exception:  # a transient storage hiccup must not kill the display
                continue

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._stop.set()
            self.thread.join(timeout=5)
            self._update()
            self.progress.stop()


class _QuietStops(logging.Filter):
    """Drops Optuna's report of a trial ended by Ctrl-C or by a cellbench error: the
    interruption or the error goes on to the command line, which says it in one line, where
    Optuna would print its whole traceback (and a second line) first. Other failures (a
    trial's own torch error) are still reported with their traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.quiet: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        number = re.match(r"Trial (\d+) failed", str(record.msg))
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (KeyboardInterrupt, CellbenchError)):
            if number:
                self.quiet.add(number.group(1))
            return False
        return not (number and number.group(1) in self.quiet)


@contextlib.contextmanager
def _quiet_stops() -> Iterator[None]:
    log = logging.getLogger("optuna.study._optimize")  # where Optuna reports failed trials
    quiet = _QuietStops()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def optimize(study: Any, objective: Any, settings: TuneSettings, journal: bool,
             observer: Any) -> None:
    """Run trials until the study has ``settings.trials`` finished ones (all workers),
    the timeout passes, or too many fail; recovers stale trials of dead processes first."""
    try_import("optuna", purpose="tuning")
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    failures = {"n": 0}

    def stop_on_failures(st: Any, trial: Any) -> None:
        # without this, trials that keep failing would never reach the target: run forever
        if trial.state == TrialState.FAIL:
            failures["n"] += 1
            if failures["n"] >= max(5, settings.trials // 2):
                observer.note(f"stopping: {failures['n']} trials failed in this process; see "
                              "the trials' errors above and fix the cause", "error")
                st.stop()

    callbacks = [MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE,
                                                             TrialState.PRUNED)),
                 stop_on_failures]
    if journal:
        recovered = recover_stale_trials(study, settings.grace)
        if recovered:
            observer.note(f"recovered {len(recovered)} interrupted trials "
                          f"({', '.join(map(str, recovered))}); their settings run again")
        callbacks.append(lambda st, _t: recover_stale_trials(st, settings.grace))
    if study_counts(study)["finished"] >= settings.trials:
        observer.note(f"the study already has {settings.trials} finished trials")
        return
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    with _ProgressPoller(study, settings.trials, observer), _quiet_stops():
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                # torch errors (e.g. out of memory) fail one trial; configuration errors
                # stop all
                study.optimize(objective, n_trials=None, timeout=remaining,
                               callbacks=callbacks, catch=(RuntimeError, FloatingPointError),
                               gc_after_trial=False)
                break
            except (ValueError, AssertionError, UpdateFinishedTrialError) as exc:
                lost = _lost_to_another_process(study, exc)
                if lost is None:
                    raise
                failures["n"] += 1
                observer.note(f"trial {lost} was failed by another process (no heartbeat "
                              f"from this one within {settings.grace} s); its settings are "
                              "queued again and this process carries on", "warning")
                if failures["n"] >= max(5, settings.trials // 2):
                    observer.note(f"stopping: {failures['n']} trials of this process failed; "
                                  "if other workers keep failing its trials, its heartbeats do "
                                  "not reach the storage in time: raise --grace-period",
                                  "error")
                    break
                if study_counts(study)["finished"] >= settings.trials:
                    break


def _lost_to_another_process(study: Any, exc: Exception) -> int | None:
    """The trial ``exc`` came from if another process had already failed it, else None.

    Optuna cannot tell a trial that another process has failed as stale: it raises
    ValueError, or AssertionError when the objective had returned. That is no reason for
    this worker to stop; any other error still stops it.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    if not (isinstance(exc, UpdateFinishedTrialError)
            or str(exc).startswith(("Cannot tell a", "Should not reach"))):
        return None
    return taken_over_trial(study)


def history_plot(study: Any, path: Path) -> None:
    """Objective per trial (all workers), best so far, and the pruned trials."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if done:
        x, y = zip(*sorted(done), strict=True)
        ax.plot(x, y, "o", color="#1f77b4", ms=4, label="complete")
        ax.plot(x, np.maximum.accumulate(y), "-", color="#d62728", label="best so far")
    if pruned:
        x, y = zip(*pruned, strict=True)
        ax.plot(x, y, "x", color="#999", ms=4, label="pruned (last reported)")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("optimization history (all workers)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
