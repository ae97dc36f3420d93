"""One contract over every image model in the registry, plus the seeds' exact sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellbench.models import MODELS, count_parameters, create_model
from cellbench.models.summary import summarize

IMAGE = [n for n in MODELS.list()  # the networks; image-lgbm: tests/models/test_image_features.py
         if MODELS.get(n).input_kind == "image" and MODELS.get(n).family == "nn"]


@pytest.mark.parametrize("name", IMAGE)
@pytest.mark.parametrize(("chans", "size"), [(1, 28), (3, 28), (1, 64), (3, 64)])
def test_forward_backward_on_1_and_3_channels_at_28_and_64_px(name, chans, size):
    torch.manual_seed(0)
    model = create_model(name, n_classes=3, in_chans=chans, img_size=size)
    x = torch.randn(4, chans, size, size)
    out = model(x)
    assert out.shape == (4, 3)
    loss = nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", IMAGE)
def test_overfits_32_images(name):
    torch.manual_seed(0)
    x = torch.randn(32, 1, 28, 28)
    y = torch.arange(32) % 2
    model = create_model(name, n_classes=2, in_chans=1, img_size=28, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(80):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.6 * first


@pytest.mark.parametrize("name", IMAGE)
def test_two_class_and_channels_last_give_the_same_output(name):
    torch.manual_seed(0)
    model = create_model(name, n_classes=2, in_chans=1, img_size=32).eval()
    x = torch.randn(3, 1, 32, 32)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref,
                               rtol=1e-4, atol=1e-5)


def test_seed003_sizes_match_the_posted_tables():
    ann = create_model("ann-seed003", n_classes=2, in_chans=1, img_size=256)
    cnn = create_model("cnn-seed003", n_classes=2, in_chans=1, img_size=256)
    assert count_parameters(ann) == 2_099_329  # 2,097,184 + 1,056 + 1,056 + 33
    assert count_parameters(cnn) == 1_067_457  # 320 + 9,248 + 9,248 + 1,048,608 + 33
    rows = [(layer.name.split("-")[0], layer.output_shape, layer.params)
            for layer in summarize(cnn, (1, 256, 256)).layers if layer.params]
    assert rows == [("Conv2d", [-1, 32, 256, 256], 320), ("Conv2d", [-1, 32, 128, 128], 9248),
                    ("Conv2d", [-1, 32, 64, 64], 9248), ("Linear", [-1, 32], 1_048_608),
                    ("Linear", [-1, 1], 33)]


def test_one_logit_head_is_bce_with_logits():
    torch.manual_seed(0)
    model = create_model("shallow-seed004", n_classes=2, in_chans=1, img_size=28).eval()
    x = torch.randn(5, 1, 28, 28)
    y = torch.tensor([0, 1, 1, 0, 1])
    logits = model(x)
    assert torch.equal(logits[:, 0], torch.zeros(5))
    ce = nn.functional.cross_entropy(logits, y)
    bce = nn.functional.binary_cross_entropy_with_logits(logits[:, 1], y.float())
    torch.testing.assert_close(ce, bce)
    wide = create_model("shallow-seed004", n_classes=2, in_chans=1, img_size=28,
                        one_logit=False)
    assert wide.head[-1].fc.out_features == 2


def test_vgg_width_bn_and_se_options():
    plain = create_model("vgg11", n_classes=2, in_chans=1, img_size=50)
    bn = create_model("vgg11", n_classes=2, in_chans=1, img_size=50, bn=True)
    se = create_model("resnet8", n_classes=2, in_chans=1, img_size=50, se=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 8
    assert any(type(m).__name__ == "SE" for m in se.modules())
    convs = [m.out_channels for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]  # VGG-11 at width 0.25


def test_summary_counts_macs_of_convolutions():
    s = summarize(create_model("cnn-seed003", n_classes=2, in_chans=1, img_size=256),
                  (1, 256, 256))
    assert s.layers[0].macs == 256 * 256 * 32 * 9  # each output: 9 MACs over 1 input channel
    assert s.total_params == 1_067_457 and s.total_macs > s.layers[0].macs
