"""The generic registry and declared search spaces."""

from __future__ import annotations

import pytest

from cellbench._registry import Registry
from cellbench._spaces import (
    CategoricalDist,
    FloatDist,
    IntDist,
    space_from_dict,
    space_to_dict,
)
from cellbench.exceptions import InvalidParameterError, UnknownNameError
from cellbench.models import MODELS


def test_register_get_list_and_duplicates():
    reg: Registry[int] = Registry("thing")
    reg.register("resnet8", 8)
    reg.register("resnet18", 18)
    assert reg.get("resnet8") == 8 and reg.list("resnet1*") == ["resnet18"]
    with pytest.raises(InvalidParameterError, match=r"must be unique.*override=True"):
        reg.register("resnet8", 9)
    reg.register("resnet8", 9, override=True)
    assert reg.get("resnet8") == 9
    with pytest.raises(UnknownNameError, match=r"Unknown thing 'resnet81'\. Did you mean "
                                               r"'resnet8'\? Valid: 'resnet18', 'resnet8'\."):
        reg.get("resnet81")


def test_every_model_declares_a_valid_search_space():
    for name in MODELS:
        spec = MODELS.get(name)
        assert spec.summary, name
        for key, dist in spec.search_space.items():
            assert isinstance(dist, (FloatDist, IntDist, CategoricalDist)), (name, key)


def test_space_dict_round_trip_and_errors():
    space = {"lr": FloatDist(1e-4, 1e-1, log=True), "depth": IntDist(1, 4),
             "optimizer": CategoricalDist(("adam", "sgd"))}
    assert space_from_dict(space_to_dict(space)) == space
    assert space_from_dict({"optimizer": ["adam", "sgd"]})["optimizer"] == space["optimizer"]
    with pytest.raises(InvalidParameterError, match=r"low must be below high"):
        FloatDist(1, 1)
    with pytest.raises(InvalidParameterError, match=r"must give 'high'"):
        space_from_dict({"lr": {"type": "float", "low": 1}})
    with pytest.raises(InvalidParameterError, match=r"unknown keys \['hgih'\]"):
        space_from_dict({"lr": {"type": "float", "low": 1, "hgih": 2}})
