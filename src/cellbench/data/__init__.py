"""Loading, checking, splitting and preprocessing cell data."""

from .augment import Augmenter
from .checks import DataIssue, check_no_group_overlap, check_scale, check_split_duplicates
from .dataset import Dataset
from .images import load_images, read_image
from .io import from_arrays, load_table
from .sheets import read_sample_sheet
from .splits import Split, holdout_split, kfold_splits, make_splits
from .transforms import ImageNormalizer, PixelFeatures, Preprocessor

__all__ = [
    "Augmenter",
    "DataIssue",
    "Dataset",
    "ImageNormalizer",
    "PixelFeatures",
    "Preprocessor",
    "Split",
    "check_no_group_overlap",
    "check_scale",
    "check_split_duplicates",
    "from_arrays",
    "holdout_split",
    "kfold_splits",
    "load_images",
    "load_table",
    "make_splits",
    "read_image",
    "read_sample_sheet",
]
