"""How a running job tells the outside what it does, without printing itself.

Jobs compute and return typed results; while they run they call an :class:`Observer`:
``started`` once the data are loaded and split (before any training), ``note`` for events
worth a line (a resumed study, a finished run), and ``progress`` for a shared progress
display. :data:`SILENT` ignores everything (the Python API); :class:`TerminalObserver`
prints with rich (the command line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.markup import escape

from .._utils import progress_bar

__all__ = ["SILENT", "Observer", "SilentObserver", "TerminalObserver", "describe_splits",
           "setup_lines"]


class Observer(Protocol):
    def started(self, lines: Sequence[tuple[str, str]]) -> None:
        """The job's set-up, as (heading, text) lines: data, split, run directory."""

    def note(self, text: str, style: str = "") -> None:
        """One event worth a line; ``style`` is ``warning``, ``error`` or ``""``."""

    def table(self, table: Any) -> None:
        """A rich table shown before the work starts (a tuning search space)."""

    def progress(self, label: str = "{task.description}", transient: bool = True) -> Any:
        """A started-later ``rich.progress.Progress``, or None for no progress display."""


class SilentObserver:
    """Ignores everything: the Python API's default."""

    def started(self, lines: Sequence[tuple[str, str]]) -> None:
        return None

    def note(self, text: str, style: str = "") -> None:
        return None

    def table(self, table: Any) -> None:
        return None

    def progress(self, label: str = "{task.description}", transient: bool = True) -> Any:
        return None


SILENT = SilentObserver()
_STYLES = {"warning": "yellow", "error": "red"}


class TerminalObserver:
    """Prints a job's set-up and events on a rich console; progress bars unless quiet."""

    def __init__(self, console: Any, show_progress: bool = True) -> None:
        self.console = console
        self.show_progress = show_progress

    def started(self, lines: Sequence[tuple[str, str]]) -> None:
        for heading, text in lines:  # user text (paths, class names) is never markup
            self.console.print(f"[bold]{heading}[/] {escape(text)}")

    def note(self, text: str, style: str = "") -> None:
        color = _STYLES.get(style)
        self.console.print(f"[{color}]{escape(text)}[/]" if color else escape(text))

    def table(self, table: Any) -> None:
        self.console.print(table)

    def progress(self, label: str = "{task.description}", transient: bool = True) -> Any:
        if not self.show_progress:
            return None
        return progress_bar(self.console, label=label, transient=transient)


def describe_splits(splits: Sequence[Any], group_name: str | None,
                    within_groups: bool = False) -> str:
    """One line on how the rows were split (``within_groups``: inside each group)."""
    s = splits[0]
    if s.name == "given":
        by = f"as given by the split column{f', grouped by {group_name!r}' if s.grouped else ''}"
    elif s.grouped:
        by = f"grouped by {group_name!r}"
    else:
        by = "stratified by class, cells at random"
    within = ""
    repeats = len({x.name.split("-", 1)[0] for x in splits if x.name[:1] == "r"
                   and x.name.split("-", 1)[0][1:].isdigit()})
    if within_groups:  # names <group>-fold<k> (r<i>-<group>-fold<k> when repeated)
        per_group = {x.name.rsplit("-", 1)[0].split("-", 1)[-1] if repeats else
                     x.name.rsplit("-", 1)[0] for x in splits}
        within = f"within each of {len(per_group)} {group_name!r} groups (one model each): "
        splits = splits[: len(splits) // len(per_group)]
        by = "stratified by class"
    val = any(len(x.val) for x in splits)
    if len(splits) > 1:
        folds = len(splits) // max(repeats, 1)
        text = (f"{within}{folds}-fold cross-validation"
                + (f" repeated {repeats} times" if repeats > 1 else "") + f", {by}")
        return text + ("; a validation part is held out of each training part for early "
                       "stopping" if val else "; no validation part (--val-size 0)")
    sizes = s.sizes()
    return (f"{within}{s.name}: train {sizes['train']}, validation {sizes['val']}, test "
            f"{sizes['test']} ({by})")


def setup_lines(description: str, splits: Sequence[Any], group_name: str | None,
                run_dir: Path, within_groups: bool = False) -> list[tuple[str, str]]:
    """The lines every training job shows before it starts."""
    return [("data", description),
            ("split", describe_splits(splits, group_name, within_groups)),
            ("run directory", str(run_dir))]
