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
    with pytest.raises(InvalidParameterError, match=r"data.cofactor \(--cofactor\), the arcsinh "
                                                    r"cofactor of every channel, must be a "
                                                    r"number > 0; got 0"):
        DataConfig(cofactor=0)
    with pytest.raises(InvalidParameterError, match=r"cofactor of channel 'CD3' must be a number"):
        DataConfig(cofactors={"CD3": -1.0})


def test_list_settings_equal_their_yaml_round_trip():
    """A list from the Python API equals the tuple read back from config.yaml, so a rerun of
    the same setting reopens its run directory instead of calling it different data."""
    cfg = RunConfig(data=DataConfig(path="x.csv", transform=[], drop=["Time"], features="CD3"))
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again.data == cfg.data and cfg.data.transform == () and cfg.data.features == ("CD3",)


def test_booleans_must_be_real_booleans():
    """A quoted "false" in YAML is text, which Python would read as true."""
    with pytest.raises(InvalidParameterError, match=r"data.dropna must be true or false; got "
                                                    r"'false' \(a string\)\. Write it without "
                                                    r"quotes \(dropna: false\)"):
        RunConfig.from_yaml('data:\n  dropna: "false"\n')
    with pytest.raises(InvalidParameterError, match=r"train.amp must be true or false; got "
                                                    r"'maybe' \(a string\)"):
        RunConfig.from_yaml("train:\n  amp: maybe\n")
    with pytest.raises(InvalidParameterError, match=r"data.dropna must be true or false; got "
                                                    r"'maybe'"):
        apply_overrides(RunConfig(), ["data.dropna=maybe"])
    with pytest.raises(InvalidParameterError, match=r"data.skip_bad must be true or false; "
                                                    r"got 1 \(an int\)"):
        DataConfig(skip_bad=1)
    assert apply_overrides(RunConfig(), ["data.dropna=false"]).data.dropna is False
    assert apply_overrides(RunConfig(), ["data.dropna=true"]).data.dropna is True
    assert RunConfig.from_yaml("train:\n  channels_last: no\n").train.channels_last is False


def test_text_settings_take_numbers_and_refuse_lists():
    """YAML reads a column named 5 as an int (it becomes '5'); a list is refused by name
    instead of failing deep in the loader with a TypeError."""
    for text in ("data:\n  groups: [patient]\n", "data:\n  target: [label]\n"):
        with pytest.raises(InvalidParameterError, match=r"data.(groups|target) must be a "
                                                        r"column name \(a string\); got "
                                                        r"\['(patient|label)'\] \(a list\)"):
            RunConfig.from_yaml(text)
    with pytest.raises(InvalidParameterError, match=r"data.groups must be a column name \(a "
                                                    r"string\); got \['a', 'b'\] \(a list\)"):
        apply_overrides(RunConfig(), ["data.groups=[a,b]"])
    with pytest.raises(InvalidParameterError, match=r"data.path must be a file or folder path "
                                                    r"\(a string\); got \['base.csv'\]"):
        RunConfig.from_yaml("data:\n  path: [base.csv]\n")
    with pytest.raises(InvalidParameterError, match=r"data.split_column must be a column name "
                                                    r"\(a string\); got \{'a': 1\} "
                                                    r"\(a mapping\)"):
        DataConfig(split_column={"a": 1})
    with pytest.raises(InvalidParameterError, match=r"train.device must be a string; got "
                                                    r"\['cpu'\]"):
        TrainConfig(device=["cpu"])
    with pytest.raises(InvalidParameterError, match=r"data.features must be a list of column "
                                                    r"names or globs \(strings\); got \['a'\]"):
        DataConfig(features=[["a"]])
    cfg = RunConfig.from_yaml("data:\n  groups: 5\n  features: [1, CD3]\n")
    assert cfg.data.groups == "5" and cfg.data.features == ("1", "CD3")
    assert apply_overrides(RunConfig(), ["data.target=5"]).data.target == "5"


def test_a_section_must_be_a_mapping():
    with pytest.raises(InvalidParameterError, match=r"train must be a mapping of settings "
                                                    r"\(e.g. train: \{max_epochs: 20\}\); got "
                                                    r"\[1, 2\] \(a list\)"):
        RunConfig.from_yaml("train: [1, 2]\n")
    with pytest.raises(InvalidParameterError, match=r"train must be a mapping of settings .*; "
                                                    r"got 1 \(an int\)"):
        apply_overrides(RunConfig(), ["train=1"])
    with pytest.raises(InvalidParameterError, match=r"data.cofactors must be a mapping"):
        RunConfig.from_yaml("data:\n  cofactors: 5\n")
    assert RunConfig.from_yaml("train:\n") == RunConfig()  # an empty section: the defaults


def test_cv_must_not_be_combined_with_a_split_column():
    """The given split would win silently over the k folds asked for."""
    with pytest.raises(InvalidParameterError, match=r"split.cv must not be combined with a "
                                                    r"given split \(--split-column part\)"):
        RunConfig(data=DataConfig(split_column="part"), split=SplitConfig(cv=3))
    with pytest.raises(InvalidParameterError, match=r"split.cv must not be combined"):
        apply_overrides(RunConfig(data=DataConfig(split_column="part")), ["split.cv=3"])
    cfg = RunConfig(data=DataConfig(split_column="part"))
    assert cfg.split.cv is None and cfg.data.split_column == "part"
    assert RunConfig(split=SplitConfig(cv=3)).split.cv == 3


def test_models_must_name_at_least_one_when_given():
    from cellbench._options import merge_flags

    for given in ([], ["", " "]):
        with pytest.raises(InvalidParameterError, match=r"models must name at least one "
                                                        r"model; got ''"):
            merge_flags(RunConfig(), {"": {"models": given}})
    with pytest.raises(InvalidParameterError, match=r"models must name at least one model"):
        RunConfig.from_yaml('models: ","\n')
    assert merge_flags(RunConfig(), {"": {}}).models == ()  # no -m: the default line-up
    assert merge_flags(RunConfig(), {"": {"models": ["lda", "mlp"]}}).models == ("lda", "mlp")


def test_a_model_spec_refuses_an_argument_given_twice():
    from cellbench.models import parse_model

    with pytest.raises(InvalidParameterError, match=r"model argument 'width' must be given "
                                                    r"once in 'mlp\(width=64,width=32\)'"):
        parse_model("mlp(width=64,width=32)")  # the last one used to win silently
    assert parse_model("a=mlp(width=64,depth=1)").kwargs == {"width": 64, "depth": 1}


def test_model_arguments_of_the_wrong_kind_are_named():
    """``dropout=abc`` is named like ``width=abc`` is, not shown as an internal TypeError."""
    from cellbench.models import create_model, parse_model, parse_models

    with pytest.raises(InvalidParameterError, match=r"settings in 'mlp\(dropout=abc\)': "
                                                    r"dropout must be a number; got 'abc' "
                                                    r"\(a string\)"):
        parse_model("mlp(dropout=abc)")
    with pytest.raises(InvalidParameterError, match=r"batchnorm must be true or false"):
        parse_model("mlp(batchnorm=maybe)")
    with pytest.raises(InvalidParameterError, match=r"learning_rate must be a number; got "
                                                    r"'fast'"):
        create_model("lightgbm", n_classes=3, learning_rate="fast")  # the Python API too
    with pytest.raises(InvalidParameterError, match=r"models must name at least one model; "
                                                    r"got ','"):
        parse_models([","])
    assert parse_model("mlp(dropout=0.5,width=8)").kwargs == {"dropout": 0.5, "width": 8}
    assert parse_model("cnn1d-seed(dropout=0.5/0.9)").kwargs == {"dropout": [0.5, 0.9]}
