"""One self-contained HTML report per run, built from the run directory alone.

:func:`build_report` reads a finished run directory (:func:`~cellbench.report.reader.read_run`:
``train``, ``compare``, ``ablate``, ``tune`` and ``doctor`` runs, older ones included), builds
each section and renders ``templates/base.html.j2`` into ``run_dir/report.html``. The page is one
file: styles, the small sorting script and every figure (SVG drawn from the numbers) are
inline, and its Content-Security-Policy forbids any network request. Jinja2 escapes every
value, so file, column, class, model and group names are shown as text, never run.

How a section plugs in (as the ``doctor`` findings do: :mod:`cellbench.report.doctor`)
--------------------------------------------------------------------------------------
0. If the job writes its own results file, add its typed record (``DoctorResults``) to
   :data:`cellbench.report.reader.RESULT_FILES`: a record with ``models``, ``comparisons``
   and ``data`` fills the common sections (summary, results, groups, curves, confusion) by
   itself, and every builder finds the record as ``run.record``.
1. A builder, ``def doctor(run: RunView) -> Section | None``, in a module of this package
   (``report/doctor.py``). It reads what it shows from the run directory (``run.record``, or
   ``run.path / "..."`` through a typed reader in :mod:`cellbench.evaluate.results`), because
   ``cellbench report`` rebuilds the page from the directory alone, and returns None when the
   run has nothing for it. Figures come from :mod:`cellbench.report.svg`; models keep their
   colours through ``run.styles``.
2. A partial, ``templates/doctor.html.j2``: it lays out ``ctx`` (the section's context) and
   may ``{% import "macros.html.j2" as ui %}`` for swatches, estimates, figures and verdicts.
3. One entry in :data:`SECTIONS`, at the place the section should appear. The base template
   gives every section its ``<section id=...>``, heading and table-of-contents link.

A builder that raises does not lose the page: the section shows the error instead, and a
:class:`~cellbench.exceptions.CellbenchWarning` names it.
"""

from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from .._utils import atomic_write_text
from .._version import __version__
from ..exceptions import CellbenchWarning
from .doctor import doctor
from .reader import RunView, read_run
from .sections import Section, confusion, data, groups, headline, ranked, reproduce, results
from .training import ablation, curves, tune

__all__ = ["SECTIONS", "Builder", "build_report", "render_report", "write_report"]

Builder = Callable[[RunView], Section | None]

#: the page, top to bottom
SECTIONS: tuple[Builder, ...] = (headline, doctor, data, results, groups, curves, confusion,
                                 ablation, tune, reproduce)
REPORT = "report.html"


def _environment() -> Environment:
    return Environment(loader=PackageLoader("cellbench.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _sections(run: RunView, builders: Sequence[Builder]) -> list[Section]:
    out = []
    for build in builders:
        try:
            section = build(run)
        except Exception as exc:  # one broken section must not lose the page
            name = getattr(build, "__name__", "section")
            warnings.warn(f"report section {name!r} could not be built ({type(exc).__name__}: "
                          f"{exc}); the rest of the report is complete.", CellbenchWarning,
                          stacklevel=3)
            section = Section(f"error-{name}", name, "error.html.j2",
                              {"message": f"{type(exc).__name__}: {exc}"})
        if section is not None:
            out.append(section)
    return out


def _heading(run: RunView) -> str:
    source = Path(run.data.source).name if run.data and run.data.source else "the data"
    if run.train is not None:
        return f"{run.train.model} trained on {source}"
    if run.tune is not None:
        return f"tuning {run.tune.study} on {source}"
    if run.job == "doctor":
        setting = getattr(run.record, "setting", None) or {}
        return f"doctor: {setting.get('spec') or 'your setting'} on {source}"
    order = ranked(run.models)
    what = f"{len(run.models)} models compared" if run.job != "ablate" else "ablation"
    return f"{what} on {source}" + (f" — best: {order[0].label}" if order else "")


def render_report(run: RunView, builders: Sequence[Builder] = SECTIONS) -> str:
    """The report's HTML for a run read with :func:`~cellbench.report.reader.read_run`."""
    env = _environment()
    script = env.loader.get_source(env, "report.js")[0]
    css = env.loader.get_source(env, "report.css")[0]
    # only this page's own style and script may run (by hash); nothing may be fetched
    csp = (f"default-src 'none'; img-src data:; style-src 'sha256-{_sha256(css)}'; "
           f"script-src 'sha256-{_sha256(script)}'; base-uri 'none'; form-action 'none'")
    heading = _heading(run)
    return env.get_template("base.html.j2").render(
        title=f"cellbench {run.job}: {heading}", heading=heading, job=run.job,
        run_path=str(run.path), finished=run.finished,
        built=datetime.now().isoformat(timespec="seconds"), version=__version__,
        sections=_sections(run, builders), css=Markup(css), script=Markup(script), csp=csp)


def build_report(run_dir: str | Path, builders: Sequence[Builder] = SECTIONS) -> Path:
    """Write ``run_dir/report.html`` from the run directory alone and return its path.

    Raises
    ------
    RunDirectoryError
        ``run_dir`` is not a finished cellbench run directory.
    """
    run = read_run(run_dir)
    path = run.path / REPORT
    atomic_write_text(path, render_report(run, builders))
    return path


def write_report(run_dir: str | Path) -> Path | None:
    """:func:`build_report` for the end of a job: the results are already saved, so a
    failure here only warns (with the command that retries) and returns None."""
    try:
        return build_report(run_dir)
    except Exception as exc:  # never lose a finished run to its report
        warnings.warn(f"report.html could not be built ({type(exc).__name__}: {exc}); the "
                      f"results are saved. Retry with: cellbench report {run_dir}",
                      CellbenchWarning, stacklevel=2)
        return None
