"""Batched augmentation: each operation does what it says, only on training batches."""

from __future__ import annotations

import pytest
import torch

from cellbench.data import Augmenter
from cellbench.exceptions import InvalidParameterError


def _batch(b=16, c=1, h=12, w=12):
    torch.manual_seed(0)
    return torch.randn(b, c, h, w), torch.arange(b) % 3


def test_policy_parsing_and_errors():
    aug = Augmenter.from_spec("flip, rot90, rotate=10, mixup", n_classes=3)
    assert aug.ops == {"flip": None, "rot90": None, "rotate": 10.0, "mixup": 0.2}
    assert Augmenter.from_spec("") is None and Augmenter.from_spec(None) is None
    with pytest.raises(InvalidParameterError, match=r"one of flip, rot90.*got 'flipp'\. Did "
                                                    r"you mean 'flip'\?"):
        Augmenter.from_spec("flipp")
    with pytest.raises(InvalidParameterError, match=r"augmentation rotate must be in \[0, 180\]"):
        Augmenter.from_spec("rotate=400")
    with pytest.raises(InvalidParameterError, match=r"'flip' takes no value"):
        Augmenter.from_spec("flip=2")


@pytest.mark.parametrize("spec", ["flip", "rot90", "rotate=20", "shift=0.2", "crop=0.6",
                                  "jitter=0.3", "noise=0.1", "blur=1.5", "erase=1.0",
                                  "flip,rot90,rotate=15,crop=0.8,jitter=0.2,noise=0.05,blur=1.0"])
def test_each_operation_keeps_shape_changes_pixels_and_is_seeded(spec):
    x, y = _batch(c=3)
    aug = Augmenter.from_spec(spec, n_classes=3)
    torch.manual_seed(1)
    out, target = aug(x, y)
    torch.manual_seed(1)
    again, _ = aug(x, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.equal(out, x)
    torch.testing.assert_close(out, again)
    assert torch.equal(target, y)


def test_flip_and_rot90_only_permute_pixels():
    x, y = _batch()
    out, _ = Augmenter.from_spec("flip,rot90")(x, y)
    torch.testing.assert_close(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_rot90_on_rectangles_only_turns_by_180():
    x, y = _batch(h=8, w=12)
    out, _ = Augmenter.from_spec("rot90")(x, y)
    assert out.shape == x.shape


def test_erase_blanks_a_rectangle_to_the_mean():
    x = torch.ones(8, 1, 20, 20)
    out, _ = Augmenter.from_spec("erase=1.0")(x, torch.zeros(8, dtype=torch.long))
    erased = (out == 0).float().mean(dim=(1, 2, 3))
    assert (erased > 0).all() and (erased < 0.5).all()


@pytest.mark.parametrize("kind", ["mixup=0.4", "cutmix=1.0"])
def test_mixing_returns_soft_labels_that_sum_to_one(kind):
    x, y = _batch()
    _out, target = Augmenter.from_spec(kind, n_classes=3)(x, y)
    assert target.shape == (16, 3)
    torch.testing.assert_close(target.sum(1), torch.ones(16))
    assert (target.max(1).values < 1).any()
    loss = torch.nn.functional.cross_entropy(torch.randn(16, 3), target)  # accepted as target
    assert torch.isfinite(loss)
