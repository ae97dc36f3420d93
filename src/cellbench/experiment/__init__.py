"""The jobs: run directories, the grid of units, train / compare / ablate / tune / predict.

Every job returns typed results (:mod:`cellbench.evaluate.results`) and prints nothing;
pass an observer (:class:`cellbench.report.observer.TerminalObserver`) to hear what happens,
and render results with :mod:`cellbench.report.terminal`.

>>> from cellbench.experiment import example_config, run_compare
>>> cfg = example_config().replace(models=("lda",))
"""

from .ablation import design, parse_factors
from .grid import Unit, plan_units, pool, run_grid, run_unit
from .inputs import example_config, example_path, load_dataset
from .jobs import (
    DEFAULT_IMAGE_MODELS,
    DEFAULT_TABLE_MODELS,
    run_ablate,
    run_compare,
    run_models,
    run_train,
)
from .predict import Predictions, run_predict
from .rundir import check_run_dir, open_run_dir
from .tune import run_tune, run_tune_worker

__all__ = [
    "DEFAULT_IMAGE_MODELS",
    "DEFAULT_TABLE_MODELS",
    "Predictions",
    "Unit",
    "check_run_dir",
    "design",
    "example_config",
    "example_path",
    "load_dataset",
    "open_run_dir",
    "parse_factors",
    "plan_units",
    "pool",
    "run_ablate",
    "run_compare",
    "run_grid",
    "run_models",
    "run_predict",
    "run_train",
    "run_tune",
    "run_tune_worker",
    "run_unit",
]
