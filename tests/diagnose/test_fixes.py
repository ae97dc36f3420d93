"""Fix experiments as changes of the user's setting: what each proposes, and stacking."""

from __future__ import annotations

import pytest

from cellbench._config import DataConfig
from cellbench.diagnose.fixes import Change, combine, propose
from cellbench.models import ModelChoice

SEED000 = ModelChoice("yours", "cnn1d-seed", {"dropout": [0.5, 0.9]},
                      {"optimizer": "asgd", "lr": 0.01})


def test_lighter_dropout_cuts_every_rate_and_keeps_the_rest():
    new, _ = propose("lighter_dropout", SEED000, {}).apply(SEED000)
    assert new.kwargs == {"dropout": [0.2, 0.2]} and new.train == SEED000.train
    # the preset's own default dropout counts too (cnn1d-seed-0509 is 0.5/0.9 by default)
    preset = ModelChoice("yours", "cnn1d-seed-0509")
    assert propose("lighter_dropout", preset, {}).kwargs == {"dropout": [0.2, 0.2]}
    assert propose("lighter_dropout", ModelChoice("m", "mlp", {"dropout": 0.05}), {}) is None


def test_learning_rate_from_the_range_test_only_when_it_differs():
    change = propose("lr_from_range_test", SEED000, {"lr": 0.01, "suggested_lr": 0.123})
    assert change.train == {"lr": 0.12}
    assert propose("lr_from_range_test", SEED000, {"lr": 0.01, "suggested_lr": 0.015}) is None
    assert propose("lr_from_range_test", ModelChoice("l", "lda"), {"lr": 1,
                                                                   "suggested_lr": 9}) is None


@pytest.mark.parametrize("kind, data, expected", [
    ("table", DataConfig(transform=()), {"transform": ("arcsinh", "standardize")}),
    ("table", DataConfig(transform=("arcsinh",)), {"transform": ("arcsinh", "standardize")}),
    ("image", DataConfig(image_norm="none"), {"image_norm": "standardize"}),
])
def test_normalize_input_changes_the_data_configuration(kind, data, expected):
    change = propose("normalize_input", SEED000, {"kind": kind, "data": data,
                                                  "raw_cytometry": True})
    assert dict(change.data) == expected
    _, new = change.apply(SEED000, data)
    assert all(getattr(new, k) == v for k, v in expected.items())
    done = DataConfig(transform=("arcsinh", "standardize"))
    assert propose("normalize_input", SEED000, {"kind": "table", "data": done,
                                                "raw_cytometry": True}) is None


def test_model_replacements_drop_arguments_the_new_model_does_not_take():
    new, _ = propose("mlp_instead_of_conv", SEED000, {}).apply(SEED000)
    assert (new.name, new.kwargs, new.train) == ("mlp", {}, SEED000.train)
    default, _ = propose("default_recipe", SEED000, {"kind": "table"}).apply(SEED000)
    assert default.name == "mlp" and default.train == {}  # default settings, job's epochs
    image, _ = propose("default_recipe", SEED000, {"kind": "image"}).apply(SEED000)
    assert image.name == "resnet8"


def test_other_fixes_and_ones_that_do_not_apply():
    assert propose("add_batchnorm", ModelChoice("m", "mlp"), {}).kwargs == {"batchnorm": True}
    assert propose("add_batchnorm", ModelChoice("v", "vgg11"), {}).kwargs == {"bn": True}
    assert propose("add_batchnorm", ModelChoice("m", "lda"), {}) is None
    assert propose("class_weights", SEED000, {}).train == {"class_weight": "balanced"}
    assert propose("more_epochs", SEED000, {"max_epochs": 2, "patience": None}).train == \
        {"max_epochs": 60, "patience": 10}
    assert propose("bigger_model", ModelChoice("m", "mlp"), {}).kwargs == {"width": 512}
    # a tiny one-layer network: x4 but at least the preset's width, and a second layer
    assert propose("bigger_model", ModelChoice("m", "mlp", {"width": 2, "depth": 1}),
                   {}).kwargs == {"width": 128, "depth": 2}
    assert propose("bigger_model", ModelChoice("v", "vgg11", {"width": 0.25}),
                   {}).kwargs == {"width": 0.5}
    assert propose("drop_column", SEED000, {"columns": ["gate"]}).drop == ("gate",)
    assert propose("grouped_split", SEED000, {}) is None  # measured, not a training change


def test_combine_stacks_changes_in_order():
    dropout = propose("lighter_dropout", SEED000, {})
    lr = Change("lr_from_range_test", train={"lr": 0.1})
    data = Change("normalize_input", data={"transform": ("arcsinh", "standardize")})
    choice, cfg, drop = combine([dropout, lr, data], SEED000, DataConfig())
    assert choice.kwargs == {"dropout": [0.2, 0.2]} and choice.train["lr"] == 0.1
    assert choice.label == "lighter_dropout+lr_from_range_test+normalize_input"
    assert cfg.transform == ("arcsinh", "standardize") and drop == ()
