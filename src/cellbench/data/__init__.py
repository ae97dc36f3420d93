"""Loading, checking, splitting and preprocessing cell data."""

from .checks import DataIssue, check_no_group_overlap, check_scale, check_split_duplicates
from .dataset import Dataset
from .io import from_arrays, load_table, read_sample_sheet
from .splits import Split, holdout_split, kfold_splits, make_splits
from .transforms import Preprocessor

__all__ = [
    "DataIssue",
    "Dataset",
    "Preprocessor",
    "Split",
    "check_no_group_overlap",
    "check_scale",
    "check_split_duplicates",
    "from_arrays",
    "holdout_split",
    "kfold_splits",
    "load_table",
    "make_splits",
    "read_sample_sheet",
]
