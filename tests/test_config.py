"""Frozen configs: validation, strict YAML, overrides."""

from __future__ import annotations

import pytest

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig, apply_overrides
from cellbench.exceptions import InvalidParameterError


def test_yaml_round_trip():
    cfg = RunConfig(data=DataConfig(path="x.csv", features=("CD3", "CD4"),
                                    cofactors={"CD3": 150.0}),
                    split=SplitConfig(cv=4), train=TrainConfig(model="cnn1d-seed",
                                                               model_kwargs={"dropout": [0.5,
                                                                                         0.9]}),
                    models=("lda", "mlp(width=8,depth=1)"))
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg


def test_all_problems_are_reported_at_once():
    with pytest.raises(InvalidParameterError) as err:
        TrainConfig(lr=0, batch_size=0, optimizer="adamm", class_weight="equal")
    msg = str(err.value)
    assert msg.startswith("train has 4 invalid settings")
    for part in ("train.lr must be a number > 0; got 0", "train.batch_size must be an int >= 1",
                 "train.optimizer must be one of sgd, asgd, adam, adamw, rmsprop; got 'adamm'",
                 "train.class_weight must be 'balanced', a mapping"):
        assert part in msg


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(InvalidParameterError, match=r"RunConfig.split has no setting 'folds'"):
        RunConfig.from_dict({"split": {"folds": 3}})
    with pytest.raises(InvalidParameterError, match=r"did you mean 'transform'\?"):
        RunConfig.from_dict({"data": {"transfrom": ["arcsinh"]}})


def test_yaml_reads_exponents_as_numbers_and_lists_as_tuples():
    cfg = RunConfig.from_yaml("train:\n  lr: 3e-4\ndata:\n  transform: arcsinh,standardize\n")
    assert cfg.train.lr == 3e-4 and cfg.data.transform == ("arcsinh", "standardize")


def test_overrides_reach_nested_mappings_and_reject_bad_paths():
    cfg = apply_overrides(RunConfig(), ["train.model_kwargs.width=64", "split.cv=5",
                                        "data.cofactor=150"])
    assert cfg.train.model_kwargs == {"width": 64} and cfg.split.cv == 5
    assert cfg.data.arcsinh_cofactor() == 150
    with pytest.raises(InvalidParameterError, match=r"--set must look like section.key=value"):
        apply_overrides(cfg, ["train.lr"])
    with pytest.raises(InvalidParameterError, match=r"did you mean 'train'\?"):
        apply_overrides(cfg, ["trian.lr=1"])


def test_cytometry_sets_the_default_cofactor_and_fractions_are_checked():
    assert DataConfig(cytometry="flow").arcsinh_cofactor() == 150
    assert DataConfig(cytometry="mass").arcsinh_cofactor() == 5
    assert DataConfig(cytometry="flow", cofactor=20).arcsinh_cofactor() == 20
    with pytest.raises(InvalidParameterError, match=r"data.cytometry must be 'mass' or 'flow'"):
        DataConfig(cytometry="spectral")
    with pytest.raises(InvalidParameterError, match=r"must leave at least 10% for training"):
        SplitConfig(val_size=0.5, test_size=0.45)


def test_list_settings_equal_their_yaml_round_trip():
    """A list from the Python API equals the tuple read back from config.yaml, so a rerun of
    the same setting reopens its run directory instead of calling it different data."""
    cfg = RunConfig(data=DataConfig(path="x.csv", transform=[], drop=["Time"], features="CD3"))
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again.data == cfg.data and cfg.data.transform == () and cfg.data.features == ("CD3",)
