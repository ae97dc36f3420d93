"""The ``cellbench`` command line: a thin Typer layer over :mod:`cellbench.experiment`.

Settings come, in increasing priority, from defaults, ``--config run.yaml``, explicit flags,
and ``--set section.key=value``. Options are declared once per config section
(:mod:`cellbench._options`); commands compute nothing themselves: they build the
configuration, run a job and render its results (:mod:`cellbench.report.terminal`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from ._config import RunConfig, apply_overrides, load_config
from ._options import DATA, RUN, SPLIT, TRAIN, Flags, merge_flags, with_options
from ._utils import map_buffers_of_large_input, split_top_level
from .exceptions import CellbenchError, CellbenchWarning, InvalidParameterError
from .report.observer import TerminalObserver

app = typer.Typer(
    name="cellbench",
    help="Train, compare, diagnose and improve classifiers for cytometry tables and cell "
         "images, with honest numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# logs and pipes get a wide table instead of one wrapped at 80 columns
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

# -- options every training command has (the config sections' options: cellbench._options) --
DataArg = Annotated[str | None, typer.Argument(
    help="CSV/TSV/Parquet/FCS file, folder of FCS files, folder of images (one subfolder per "
         "class) or .npz. With --example: the example's name, cytometry (default) or images.",
    show_default=False)]
Example = Annotated[bool, typer.Option("--example", help="Run on a bundled example dataset.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file "
                                                   "(sections data, split, train).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any setting: --set train.lr=3e-4 (repeatable).")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default "
                                             "runs/<job>-<time>).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Registry name, optionally with arguments and training settings: "
                          "mlp(width=64), cnn1d-seed(dropout=0.5/0.9,optimizer=asgd).")]
Resize = Annotated[int | None, typer.Option("--resize", help="Images: resize all to N x N "
                                            "(bilinear, antialiased).")]


def _build_config(data: str | None, example: bool, config: Path | None,
                  sets: list[str] | None, flags: Flags, model: str | None = None,
                  models: str | None = None, holdout_example: bool = False) -> RunConfig:
    """defaults < example < --config < flags < --set; ``model`` is a full spec.

    Every job that trains builds its configuration here, so this is also where a process
    with a large input hands large buffers back to the system once freed
    (:func:`~cellbench._utils.map_buffers_of_large_input`; ``predict`` never does).
    """
    from .experiment import example_config
    from .models import parse_model

    cfg = RunConfig()
    if example:
        cfg = example_config(data or "cytometry")
        if holdout_example and not flags.get("split", {}).get("cv"):
            cfg = cfg.replace(split=cfg.split.replace(cv=None))  # one model: one split
        data = None
    if config is not None:
        cfg = load_config(config)
    flags = {k: dict(v) for k, v in flags.items()}
    if models is not None:
        flags.setdefault("", {})["models"] = split_top_level(models)
    choice = parse_model(model) if model is not None else None
    if choice is not None:
        flags.setdefault("train", {})["model"] = choice.name
    cfg = apply_overrides(merge_flags(cfg, flags, data), sets or [])
    if choice is not None and (choice.kwargs or choice.train):
        cfg = cfg.replace(train=choice.configure(cfg.train))
    map_buffers_of_large_input(cfg.data.path)
    return cfg


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a job; CellbenchErrors become a one-paragraph message and exit code 2."""

    shown: set[str] = set()  # a warning each unit raises again is printed once

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CellbenchWarning):
            if str(message) not in shown:
                shown.add(str(message))
                err_console.print(f"[yellow]warning:[/] {escape(str(message))}",
                                  highlight=False)
        else:
            _default_show(message, category, filename, lineno, file, line)

    _default_show = warnings.showwarning
    warnings.showwarning = show
    try:
        return fn(*args, **kwargs)
    except CellbenchError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted.[/] Finished results are kept; rerun the same "
                          "command (train: --resume) to continue.")
        raise typer.Exit(130) from None
    finally:
        warnings.showwarning = _default_show


def _observer(quiet: bool) -> TerminalObserver:
    return TerminalObserver(console, show_progress=not quiet)


@app.command()
@with_options(DATA, SPLIT, TRAIN, RUN)
def compare(
    data: DataArg = None, example: Example = False, config: ConfigOpt = None,
    models: Annotated[str | None, typer.Option(
        "--models", "-m", help="Comma-separated models, each optionally with arguments: "
        "lda,lightgbm,mlp(width=256,depth=3). Default for tables: majority, logreg, lda, "
        "lightgbm, mlp, cnn1d-seed; for images: majority, logreg, image-lgbm, "
        "shallow-seed004, cnn-seed003, resnet8.")] = None,
    out: Out = None, sets: SetOpt = None, quiet: Quiet = False, *, flags: Flags,
) -> None:
    """Train several models on the same splits; metrics with 95% CIs and paired tests.

    Example: cellbench compare cells.parquet --target label --groups patient --cv 5
    """
    from .experiment import run_compare
    from .report.terminal import show_compare

    cfg = _run(_build_config, data, example, config, sets, flags, models=models)
    results = _run(run_compare, cfg, out, observer=_observer(quiet))
    show_compare(results, console)
    _exit_if_failed(results)


def _exit_if_failed(result: Any) -> None:
    """Exit code 1 when no model has a result to show (every one failed, e.g. diverged)."""
    models = getattr(result, "models", None)
    failed = (all(m.failed for m in models) if models
              else bool(getattr(result, "failed", None)))
    if failed:
        raise typer.Exit(1)


@app.command()
@with_options(DATA, SPLIT, TRAIN, RUN.only("seeds", "jobs", "ray"))
def train(
    data: DataArg = None, example: Example = False, config: ConfigOpt = None,
    model: ModelOpt = None, out: Out = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue the interrupted run in this directory.")] = None,
    sets: SetOpt = None, quiet: Quiet = False, *, flags: Flags,
) -> None:
    """Train one model; evaluate the test part once; save model.pt, curves and metrics.

    With --seeds N and/or --cv K the model is trained on every seed and fold, and the mean
    with its CI is reported.

    Example: cellbench train cells.fcs --target label --model cnn1d-seed --max-epochs 50
    """
    from .experiment import run_train
    from .report.terminal import show_train

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            err_console.print(f"[red]error:[/] --resume must name the run directory of an "
                              f"interrupted train; {escape(str(resume))!r} holds no "
                              "config.yaml. Pass the directory train printed (runs/train-...).",
                              highlight=False)
            raise typer.Exit(2)
        cfg = _run(load_config, resume / "config.yaml")
        result = _run(run_train, cfg, resume, resume=True, observer=_observer(quiet))
    else:
        cfg = _run(_build_config, data, example, config, sets, flags, model=model,
                   holdout_example=True)
        result = _run(run_train, cfg, out, observer=_observer(quiet))
    show_train(result, console)
    _exit_if_failed(result)


@app.command()
@with_options(DATA, SPLIT, TRAIN, RUN.without("reference"))
def ablate(
    data: DataArg = None, example: Example = False, config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The base model (registry "
                                              "name, optionally with arguments).")] = None,
    factor: Annotated[list[str] | None, typer.Option(
        "--factor", "-f", help="name=base,level2,... (repeatable), e.g. "
        "dropout=0.25/0.5,0,0.5/0.9 or optimizer=adam,asgd. The first level is the base.")
    ] = None,
    design_kind: Annotated[str, typer.Option("--design", help="oat (one factor at a time "
                                             "from the base) or full (factorial).")] = "oat",
    out: Out = None, sets: SetOpt = None, quiet: Quiet = False, *, flags: Flags,
) -> None:
    """Vary factors of one model over seeds and folds; test each level against the base.

    Example: cellbench ablate --example --model cnn1d-seed --factor dropout=0.25/0.5,0,0.5/0.9
    --factor batchnorm=on,off --seeds 3
    """
    from .experiment import run_ablate
    from .report.terminal import show_ablate

    cfg = _run(_build_config, data, example, config, sets, flags, model=model)
    show_ablate(_run(run_ablate, cfg, factor or [], design_kind, out,
                     observer=_observer(quiet)), console)


#: the bundled examples' deliberately poor settings, taken from the users' stories
DOCTOR_EXAMPLES = {
    # seed 000's network as its code has it: dropout 0.5/0.9, ASGD at lr 0.01
    "cytometry": "cnn1d-seed(dropout=0.5/0.9,optimizer=asgd,lr=0.01)",
    # seed 004's VGG on raw 0-255 pixels with RMSprop
    "images": "vgg11(width=0.25,dropout=0.5,optimizer=rmsprop,lr=0.001)",
}
DOCTOR_EXAMPLE_DATA = {"images": {"image_norm": "none"}}


@app.command()
@with_options(DATA, SPLIT, TRAIN, RUN.without("reference"))
def doctor(
    data: DataArg = None, example: Example = False, config: ConfigOpt = None,
    model: ModelOpt = None,
    budget: Annotated[str, typer.Option(
        "--budget", help="Wall-clock budget of the whole job, e.g. 10m or 1h; fixes that do "
                         "not fit are listed, not run.")] = "10m",
    out: Out = None, sets: SetOpt = None, quiet: Quiet = False, *, flags: Flags,
) -> None:
    """Say why a model is stuck, test the fixes, and hand back a better model.

    DATA may also be a finished train/compare run directory: it is then diagnosed from what
    it saved, without training.

    Example: cellbench doctor cells.parquet --target label --groups patient
    --model "cnn1d-seed(dropout=0.5/0.9)" --optimizer asgd --lr 0.01
    """
    from .experiment.doctor import run_doctor
    from .experiment.doctor_rundir import diagnose_run, is_run_dir
    from .report.terminal import show_doctor
    from .tune.study import parse_duration

    if data is not None and not example and is_run_dir(data):
        show_doctor(_run(diagnose_run, data), console)
        return
    if example and model is None:
        name = data or "cytometry"
        model = DOCTOR_EXAMPLES.get(name)
        flags = {**flags, "data": {**DOCTOR_EXAMPLE_DATA.get(name, {}),
                                   **flags.get("data", {})}}
    cfg = _run(_build_config, data, example, config, sets, flags, model=model)
    seconds = _run(parse_duration, budget, "--budget")
    show_doctor(_run(run_doctor, cfg, out, budget=seconds, observer=_observer(quiet)),
                console)


#: what tuning searches is not an option of ``tune`` (it would be overridden by every trial)
TUNED = ("batch_size", "lr", "optimizer", "scheduler", "weight_decay", "class_weight",
         "sampler", "grad_clip")


@app.command()
@with_options(DATA, SPLIT.without("repeats", "within_groups"), TRAIN.without(*TUNED))
def tune(
    data: DataArg = None, example: Example = False, config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model to tune: a registry name, optionally with fixed "
                              "arguments, e.g. mlp(depth=2).")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials (complete "
                                        "or pruned) the study should reach.")] = 20,
    timeout: Annotated[str | None, typer.Option("--timeout", help="Stop this process after "
                                                "e.g. 90s, 30m or 2h.")] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="hyperband, median or none.")
                      ] = "hyperband",
    sampler: Annotated[str, typer.Option("--sampler", help="tpe or random.")] = "tpe",
    sampler_seed: Annotated[int, typer.Option(
        "--sampler-seed", help="Seed of the sampler's draws (trial n draws from (seed, n), so "
                               "workers never repeat each other).")] = 0,
    metric: Annotated[str, typer.Option("--metric", help="Validation metric to maximise: "
                                        "accuracy or balanced_accuracy.")] = "accuracy",
    storage: Annotated[str | None, typer.Option(
        "--storage", help="postgresql://user@host:port/db for workers on many machines; "
                          "default: a journal file in the run directory.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name (default "
                                              "cellbench-<model>).")] = None,
    space: Annotated[Path | None, typer.Option(
        "--space", help="YAML overriding the search space: name: {type: float, low: ..., "
                        "high: ..., log: true}, a list of choices, a fixed value, or null.")
    ] = None,
    final_seeds: Annotated[int, typer.Option("--final-seeds", help="Seeds for retraining "
                                             "the best configuration.")] = 3,
    heartbeat: Annotated[int, typer.Option("--heartbeat", help="Seconds between heartbeats "
                                           "of a running trial.")] = 30,
    grace: Annotated[int, typer.Option("--grace-period", help="Seconds without a heartbeat "
                                       "before a trial is failed and retried.")] = 300,
    out: Out = None, sets: SetOpt = None, quiet: Quiet = False, *, flags: Flags,
) -> None:
    """Tune a model with Optuna (TPE, pruning); resumable; test the best settings once.

    Rerun the same command to continue an interrupted study. With --storage postgresql://...
    other machines join with `cellbench tune-worker --study NAME --storage URL`.
    """
    from .experiment import run_tune
    from .report.terminal import show_tune
    from .tune.study import TuneSettings, parse_duration

    def build() -> tuple[RunConfig, TuneSettings, dict | None]:
        cfg = _build_config(data, example, config, sets, flags, model=model,
                            holdout_example=True)
        settings = TuneSettings(trials=trials, timeout=parse_duration(timeout), pruner=pruner,
                                sampler=sampler, metric=metric, storage=storage,
                                study_name=study, final_seeds=final_seeds,
                                heartbeat=heartbeat, grace=grace, seed=sampler_seed)
        overrides = None
        if space is not None:
            if not space.is_file():
                raise InvalidParameterError(f"--space must be a YAML file; got {str(space)!r}, "
                                            "which does not exist.")
            try:
                overrides = yaml.safe_load(space.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise InvalidParameterError(
                    f"--space {str(space)!r} must be a readable YAML file; it is not "
                    f"({' '.join(str(exc).split())}). Fix the file.") from None
            overrides = {} if overrides is None else overrides
        return cfg, settings, overrides

    cfg, settings, overrides = _run(build)
    where = "search space override" if space is None else f"--space {str(space)!r}"
    show_tune(_run(run_tune, cfg, settings, out, space_overrides=overrides,
                   space_source=where, observer=_observer(quiet)), console)


@app.command("tune-worker")
def tune_worker(
    study: Annotated[str, typer.Option("--study", help="Name of the study to join.")],
    storage: Annotated[str, typer.Option("--storage", help="The study's database URL.")],
    trials: Annotated[int | None, typer.Option("--trials", help="Override the study's "
                                               "target of finished trials.")] = None,
    timeout: Annotated[str | None, typer.Option("--timeout", help="Stop after e.g. 2h.")
                       ] = None,
    quiet: Quiet = False,
) -> None:
    """Join a study started by `cellbench tune --storage URL` and run its trials."""
    from .experiment import run_tune_worker
    from .tune.study import parse_duration

    _run(lambda: run_tune_worker(study, storage, trials=trials,
                                 timeout=parse_duration(timeout), observer=_observer(quiet)))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(
        help="Run directory of a finished train, compare, ablate, tune or doctor run.",
        show_default=False)],
) -> None:
    """Rebuild a run's self-contained HTML report (report.html) from its directory alone.

    Example: cellbench report runs/compare-20250101-120000
    """
    from .report.html import build_report

    console.print(f"report: {escape(str(_run(build_report, run_dir)))}", highlight=False)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A model.pt written by train or compare, "
                                         "or the train run folder holding it.")],
    data: Annotated[str, typer.Argument(help="Table, FCS file or folder, .h5ad, image, "
                                        "folder of images or .npz.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV to write (default: "
                                                "predictions.csv); for an .h5ad input also "
                                                "an .h5ad: a copy with the predictions.")] = None,
    dropna: Annotated[bool, typer.Option("--dropna", help="Leave rows with NaN/inf "
                                         "unpredicted instead of failing.")] = False,
    resize: Resize = None,
) -> None:
    """Predict labels and class probabilities for new cells or images with a saved model."""
    from .experiment import run_predict
    from .report.terminal import show_predict

    show_predict(_run(run_predict, model, data, out or Path("predictions.csv"), dropna=dropna,
                      resize=resize), console)


@app.command("models")
def list_models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'cnn*'.")] = "*",
    kind: Annotated[str | None, typer.Option("--kind", help="tabular or image.")] = None,
) -> None:
    """List the registered models with their family and search space."""
    from rich.table import Table

    from .models import MODELS
    from .models.choice import matching_models

    names = _run(matching_models, pattern, kind)
    table = Table(title="cellbench models")
    for col in ("name", "input", "family", "description", "tunable"):
        table.add_column(col)
    for name in names:
        spec = MODELS.get(name)
        # literal text: the install hint "pip install 'cellbench[xgboost]'" is not markup
        table.add_row(*(escape(text) for text in (
            name, spec.input_kind, spec.family, spec.summary.replace("``", ""),
            ", ".join(spec.search_space))))
    console.print(table)


def _parse_shape(text: str) -> list[int]:
    parts = [p for p in text.lower().replace("×", "x").replace(",", "x").split("x") if p]
    try:
        shape = [int(p) for p in parts]
    except ValueError:
        shape = []
    if len(shape) not in (1, 3) or min(shape, default=0) < 1:
        raise InvalidParameterError(
            f"--input must be CxHxW for images (e.g. 1x256x256) or the number of features for "
            f"tables (e.g. 24); got {text!r}."
        )
    return shape


@app.command()
def summary(
    model: Annotated[str, typer.Argument(help="Registry name, optionally with arguments: "
                                         "cnn-seed003(dropout=0.5).")],
    input: Annotated[str, typer.Option("--input", "-i", help="CxHxW for images (1x256x256), "
                                       "or the number of features for tables (24).")],
    classes: Annotated[int, typer.Option("--classes", help="Number of classes.")] = 2,
) -> None:
    """Per-layer output shape and parameters, total parameters and multiply-accumulates."""
    from rich.table import Table

    from .models import MODELS, create_model, parse_models
    from .models.summary import check_summary_input, input_too_small, summarize

    def build() -> Any:
        choice = parse_models([model])[0]
        shape = _parse_shape(input)
        spec = MODELS.get(choice.name)
        if spec.family != "nn":
            raise InvalidParameterError(
                f"summary's model must be a network (family nn); got {choice.name!r}, a "
                f"{spec.family} model. Pick a network from `cellbench models`.")
        check_summary_input(choice.name, spec.input_kind, shape, input)
        kwargs = ({"in_chans": shape[0], "img_size": (shape[1], shape[2])} if len(shape) == 3
                  else {"n_features": shape[0]})

        def create(**size: Any) -> Any:
            return create_model(choice.name, n_classes=classes, **{**kwargs, **size},
                                **choice.kwargs)

        try:
            return choice, shape, summarize(create(), shape)
        except CellbenchError:
            raise
        except Exception as exc:  # the model's layers refuse the input's shape
            input_too_small(choice.label, create, shape, exc)
            raise InvalidParameterError(
                f"model {choice.label!r} must take an input of {input!r}; running it failed "
                f"({type(exc).__name__}: {exc}). Try another --input."
            ) from exc

    choice, shape, result = _run(build)
    table = Table(title=f"{escape(choice.label)}, input {'x'.join(map(str, shape))}, "
                        f"{classes} classes")
    for col in ("Layer (type)", "Output Shape", "Param #", "MACs"):
        table.add_column(col, justify="left" if col == "Layer (type)" else "right")
    for layer in result.layers:
        table.add_row(escape(layer.name), str(layer.output_shape), f"{layer.params:,}",
                      f"{layer.macs:,}" if layer.macs else "")
    console.print(table)
    console.print(f"Total params: {result.total_params:,} (trainable "
                  f"{result.trainable_params:,})\nMultiply-accumulates per sample: "
                  f"{result.total_macs:,} ({result.total_macs / 1e6:.1f} M; conv and linear "
                  "layers)")


def main() -> None:
    """Entry point of the ``cellbench`` script."""
    app(prog_name="cellbench")


if __name__ == "__main__":
    sys.exit(main())
