"""What a job runs on: the bundled examples, loading and checking the data, its summary.

>>> cfg = example_config()
>>> cfg.data.target, cfg.split.cv
('cell_type', 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from .._utils import release_free_memory, to_builtin
from ..data import checks, labels
from ..data.dataset import Dataset
from ..data.images import is_image_source, load_images
from ..data.io import check_data_folder, load_table
from ..data.splits import Split
from ..evaluate.results import DataSummary
from ..exceptions import InvalidParameterError

__all__ = ["data_summary", "example_config", "example_path", "load_dataset",
           "split_issues"]


def example_path(filename: str) -> Path:
    """Path of a file bundled in ``cellbench/examples``."""
    return Path(str(resources.files("cellbench.examples").joinpath(filename)))


def example_config(name: str = "cytometry") -> RunConfig:
    """Configuration of a bundled example (see ``cellbench/examples/README.md``)."""
    if name == "images":
        return RunConfig(
            data=DataConfig(path=str(example_path("malaria_small.npz")), groups="slide_id"),
            split=SplitConfig(val_size=0.15, test_size=0.2),
            train=TrainConfig(max_epochs=25, patience=6, batch_size=64, lr=2e-3),
        )
    if name == "cytometry":
        return RunConfig(
            data=DataConfig(path=str(example_path("deepcytof_small.parquet")),
                            target="cell_type", groups="sample",
                            transform=("arcsinh", "standardize"), cytometry="mass"),
            split=SplitConfig(cv=4),
            train=TrainConfig(max_epochs=40, patience=8),
        )
    raise InvalidParameterError(f"example must be 'cytometry' or 'images'; got {name!r}.")


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load and check the data a job runs on."""
    if not cfg.path:
        raise InvalidParameterError(
            "data path must be given; got none. Pass a CSV/Parquet/FCS file or a folder of "
            "FCS files (cellbench compare DATA), or --example."
        )
    check_data_folder(cfg.path)
    if is_image_source(cfg.path):
        table_only = [name for name, value in (("features", cfg.features), ("drop", cfg.drop),
                                               ("split_column", cfg.split_column),
                                               ("target", cfg.target),
                                               ("cells_per_sample", cfg.cells_per_sample))
                      if value]
        if table_only:
            raise InvalidParameterError(
                f"{', '.join(table_only)} must not be set for image data; they apply to "
                f"tables. Labels come from class folders, the sample sheet or the .npz."
            )
        ds = load_images(cfg.path, sample_sheet=cfg.sample_sheet, groups=cfg.groups,
                         group_regex=cfg.group_regex, resize=cfg.resize, skip_bad=cfg.skip_bad)
        if cfg.exclude_labels:
            keep = ~np.isin(np.asarray(ds.classes, dtype=str)[ds.y],
                            [str(v) for v in cfg.exclude_labels])
            ds = ds.subset(np.flatnonzero(keep))
            ds.y, ds.classes = _recode(ds.y, ds.classes)
        return ds
    image_only = [name for name, value in (("resize", cfg.resize), ("skip_bad", cfg.skip_bad),
                                           ("group_regex", cfg.group_regex),
                                           ("image_norm", cfg.image_norm != "standardize"))
                  if value]
    if image_only:
        raise InvalidParameterError(
            f"{', '.join(image_only)} must not be set for a table; "
            f"{'it applies' if len(image_only) == 1 else 'they apply'} to images. Drop "
            f"{'it' if len(image_only) == 1 else 'them'} (--groups names the patient/sample "
            "column of a table).")
    ds = load_table(cfg.path, target=cfg.target, groups=cfg.groups, features=cfg.features,
                    drop=cfg.drop, exclude_labels=cfg.exclude_labels, dropna=cfg.dropna,
                    split_column=cfg.split_column, sample_sheet=cfg.sample_sheet,
                    cytometry=cfg.cytometry, cells_per_sample=cfg.cells_per_sample,
                    subsample_seed=cfg.subsample_seed)
    ds.issues = [*ds.issues, *checks.check_scale(ds, cfg.transform)]
    release_free_memory()  # the loader's and checks' transients, before training needs room
    return ds


def _recode(y: np.ndarray, classes: list) -> tuple[np.ndarray, list]:
    present = np.unique(y)
    remap = np.full(len(classes), -1)
    remap[present] = np.arange(len(present))
    return remap[y], [classes[i] for i in present]


def split_issues(ds: Dataset, splits: Sequence[Split], name_parts: bool = True) -> list[Any]:
    """The data's issues plus, for tables, cells copied between each training and test part
    (named ``<split> test`` when ``name_parts``, else ``test``)."""
    issues = [*ds.issues, *labels.check_training_parts(ds, splits)]
    if ds.kind == "table":
        for split in splits:
            name = f"{split.name} test" if name_parts else "test"
            issues += checks.check_split_duplicates(ds.X, split.train, split.test, name,
                                                    split.grouped, y=ds.y)
        release_free_memory()  # the row hashes
    return issues


def data_summary(ds: Dataset, splits: Sequence[Split], issues: Sequence[Any]) -> DataSummary:
    """What ``data.json`` and ``results.json`` record about the data."""
    return DataSummary(
        source=ds.source, n=ds.n_samples, kind=ds.kind, target=ds.target,
        shape=list(ds.X.shape[1:]), dtype=str(ds.X.dtype), features=ds.feature_names,
        classes=to_builtin(ds.classes),
        class_counts={str(k): v for k, v in ds.class_counts.items()},
        groups=({"column": ds.group_name, "n": ds.n_groups}
                if ds.groups is not None else None),
        splits=[{"name": s.name, "grouped": s.grouped, **s.sizes()} for s in splits],
        issues=[i.to_dict() for i in issues],
        extra={"subsample": ds.drawn} if ds.drawn else {},
    )
