"""Image classifiers for 28-256 px cell images: the seeds' networks and strong small baselines.

Every model takes ``in_chans``, ``img_size`` (int or (H, W)) and ``n_classes``, and exposes
``forward_features`` / ``forward_head``. Flattened sizes are found by running a dummy image
through the feature extractor, so any input size works.

Seed models (seed 003: 256 x 256 grayscale, binary; seed 004: nuclei, binary) end in one
logit for two classes, as in the posts (BCE-with-logits): :class:`OneLogitHead` returns
``[0, z]``, and cross-entropy on ``[0, z]`` is exactly BCE-with-logits on ``z``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._spaces import CategoricalDist, FloatDist
from ..exceptions import InvalidParameterError
from ._base import register_model

__all__ = [
    "SE",
    "VGG",
    "CNNSeed003",
    "GAPSeed003",
    "InceptionSmall",
    "OneLogitHead",
    "ResNetSmall",
    "ShallowSeed004",
]


def _hw(img_size: int | Sequence[int] | None) -> tuple[int, int]:
    if img_size is None:
        raise InvalidParameterError("img_size must be given for image models; got None.")
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = img_size
    return int(h), int(w)


def _check_chans(in_chans: int | None) -> int:
    if not isinstance(in_chans, int) or in_chans < 1:
        raise InvalidParameterError(f"in_chans must be an int >= 1; got {in_chans!r}.")
    return in_chans


@torch.no_grad()
def _features_size(features: nn.Module, in_chans: int, hw: tuple[int, int]) -> int:
    was = features.training
    features.eval()
    out = features(torch.zeros(1, in_chans, *hw)).flatten(1).shape[1]
    features.train(was)
    return int(out)


class OneLogitHead(nn.Module):
    """``Linear(d, 1)`` for two classes, returning ``[0, z]`` (so CE == BCE-with-logits)."""

    def __init__(self, in_features: int, n_classes: int, one_logit: bool = True) -> None:
        super().__init__()
        self.one = one_logit and n_classes == 2
        self.fc = nn.Linear(in_features, 1 if self.one else n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x)
        return torch.cat([torch.zeros_like(z), z], dim=1) if self.one else z


class SE(nn.Module):
    """Squeeze-and-excitation: channel attention from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x).view(x.shape[0], -1, 1, 1)


def conv_block(cin: int, cout: int, k: int = 3, bn: bool = False, se: bool = False,
               pool: bool = True) -> nn.Sequential:
    """Conv(k, same padding) [-> BN] -> ReLU [-> SE] [-> MaxPool 2]."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    if se:
        layers.append(SE(cout))
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Net(nn.Module):
    """features -> (flatten) -> head; subclasses set ``self.features`` and ``self.head``."""

    features: nn.Module
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------
# Seed 003: ANN, CNN (optionally with dropout; L2 is the optimizer's weight decay), GAP


@register_model("ann-seed003", input_kind="image", family="nn",
                search_space={"dropout": FloatDist(0.0, 0.5)})
class ANNSeed003(_Net):
    """Seed 003's ANN: flatten -> 3 x [Linear 32 -> ReLU] -> one logit."""

    def __init__(self, n_classes: int, in_chans: int = 1, img_size: int = 256,
                 hidden: int = 32, dropout: float = 0.0, one_logit: bool = True) -> None:
        super().__init__()
        h, w = _hw(img_size)
        d = _check_chans(in_chans) * h * w
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(3):
            layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = hidden
        self.features = nn.Sequential(*layers)
        self.head = OneLogitHead(hidden, n_classes, one_logit)


@register_model("cnn-seed003", input_kind="image", family="nn",
                search_space={"dropout": FloatDist(0.0, 0.6)})
class CNNSeed003(_Net):
    """Seed 003's CNN: 3 x [conv32 3x3 pad 1 -> ReLU -> maxpool 2] -> fc32 -> dropout -> logit."""

    def __init__(self, n_classes: int, in_chans: int = 1, img_size: int = 256,
                 filters: int = 32, hidden: int = 32, dropout: float = 0.0,
                 one_logit: bool = True, se: bool = False) -> None:
        super().__init__()
        c = _check_chans(in_chans)
        self.features = nn.Sequential(conv_block(c, filters, se=se),
                                      conv_block(filters, filters, se=se),
                                      conv_block(filters, filters, se=se))
        flat = _features_size(self.features, c, _hw(img_size))
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), OneLogitHead(hidden, n_classes, one_logit))


@register_model("gap-seed003", input_kind="image", family="nn",
                search_space={"dropout": FloatDist(0.0, 0.6), "bn": CategoricalDist((True, False))})
class GAPSeed003(_Net):
    """Seed 003's GAP net: 3 conv blocks, global average pooling instead of flatten -> logit.

    ``gap-seed003-wide`` is the post's improved version: more filters (64/128/256), batch norm
    after each conv, dropout before the output (the post gives no exact widths).
    """

    def __init__(self, n_classes: int, in_chans: int = 1, img_size: int = 256,
                 filters: Sequence[int] = (32, 32, 32), bn: bool = False, dropout: float = 0.0,
                 hidden: int = 32, one_logit: bool = True, se: bool = False) -> None:
        super().__init__()
        c = _check_chans(in_chans)
        _hw(img_size)
        blocks, cin = [], c
        for cout in filters:
            blocks.append(conv_block(cin, cout, bn=bn, se=se))
            cin = cout
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), OneLogitHead(hidden, n_classes, one_logit))


register_model("gap-seed003-wide", input_kind="image", family="nn",
               defaults={"filters": (64, 128, 256), "bn": True, "dropout": 0.5},
               search_space={"dropout": FloatDist(0.0, 0.6)},
               summary="Seed 003's improved GAP net: 64/128/256 filters, batch norm, dropout.")(
    GAPSeed003)


# ---------------------------------------------------------------------------------------------
# Seed 004: the shallow network that beat VGG


@register_model("shallow-seed004", input_kind="image", family="nn",
                search_space={"dropout": FloatDist(0.0, 0.6), "bn": CategoricalDist((True, False))})
class ShallowSeed004(_Net):
    """Seed 004's net: 32c3-mp-32c3-mp-64c5-mp-fc32-fc32-out (ReLU, dropout after each fc).

    Convolutions use 'same' padding (the post does not say; 'valid' would leave nothing of a
    28 px image). Dropout placement is also unstated; here it follows each hidden fc layer.
    """

    def __init__(self, n_classes: int, in_chans: int = 1, img_size: int = 64,
                 dropout: float = 0.25, bn: bool = False, one_logit: bool = True,
                 se: bool = False) -> None:
        super().__init__()
        c = _check_chans(in_chans)
        self.features = nn.Sequential(conv_block(c, 32, 3, bn, se), conv_block(32, 32, 3, bn, se),
                                      conv_block(32, 64, 5, bn, se))
        flat = _features_size(self.features, c, _hw(img_size))
        self.head = nn.Sequential(
            nn.Linear(flat, 32), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Dropout(dropout),
            OneLogitHead(32, n_classes, one_logit))


# ---------------------------------------------------------------------------------------------
# VGG with a width multiplier (seed 004 reduced the widths to fit a laptop)

VGG_CFGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
}


class VGG(_Net):
    """VGG-11/13 for small images: widths x ``width``; max-pools are skipped once the feature
    map is down to 1 pixel; classifier fc -> fc (``4096 x width``, dropout 0.5) -> out.

    Parameters
    ----------
    width : float
        Width multiplier (0.25 gives 16-32-64-128-128 filters and 1,024-unit fc layers).
    bn : bool
        BatchNorm after every convolution (VGG-11-BN).
    """

    def __init__(self, cfg: Sequence[int | str], n_classes: int, in_chans: int = 1,
                 img_size: int = 64, width: float = 0.25, bn: bool = False,
                 dropout: float = 0.5, se: bool = False) -> None:
        super().__init__()
        c = _check_chans(in_chans)
        if not 0 < width <= 4:
            raise InvalidParameterError(f"width must be in (0, 4]; got {width!r}.")
        h, w = _hw(img_size)
        layers: list[nn.Module] = []
        cin = c
        for item in cfg:
            if item == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            cout = max(4, round(int(item) * width))
            layers.extend(conv_block(cin, cout, 3, bn=bn, se=se, pool=False))
            cin = cout
        self.features = nn.Sequential(*layers)
        flat = _features_size(self.features, c, _hw(img_size))
        hidden = max(16, round(4096 * width))
        self.head = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, n_classes))
        # VGG's own initialisation (as in torchvision): PyTorch's layer defaults are too small
        # for a deep plain ReLU stack, which then stays at chance without batch norm
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


_VGG_SPACE = {"width": CategoricalDist((0.125, 0.25, 0.5)), "bn": CategoricalDist((True, False)),
              "dropout": FloatDist(0.0, 0.6)}


@register_model("vgg11", input_kind="image", family="nn", search_space=_VGG_SPACE)
def vgg11(n_classes: int, in_chans: int = 1, img_size: int = 64, width: float = 0.25,
          bn: bool = False, dropout: float = 0.5, se: bool = False) -> VGG:
    """VGG-11 (8 conv + 3 fc), width multiplier 0.25 by default, optional batch norm."""
    return VGG(VGG_CFGS["vgg11"], n_classes, in_chans, img_size, width, bn, dropout, se)


@register_model("vgg13", input_kind="image", family="nn", search_space=_VGG_SPACE)
def vgg13(n_classes: int, in_chans: int = 1, img_size: int = 64, width: float = 0.25,
          bn: bool = False, dropout: float = 0.5, se: bool = False) -> VGG:
    """VGG-13 (10 conv + 3 fc), width multiplier 0.25 by default, optional batch norm."""
    return VGG(VGG_CFGS["vgg13"], n_classes, in_chans, img_size, width, bn, dropout, se)


# ---------------------------------------------------------------------------------------------
# ResNets with a CIFAR stem (3x3 conv, no max-pool): ResNet-8/-14/-20 and ResNet-18


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, identity (or 1x1 projection) shortcut, optional SE."""

    def __init__(self, cin: int, cout: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            *([SE(cout)] if se else []))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNetSmall(_Net):
    """ResNet for small images: 3x3 stem, stages of basic blocks, global pooling, linear head.

    Parameters
    ----------
    blocks : sequence of int
        Blocks per stage; each stage after the first halves the resolution.
    widths : sequence of int
        Channels per stage before the width multiplier.
    width : float
        Width multiplier.
    """

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], n_classes: int,
                 in_chans: int = 1, img_size: int = 64, width: float = 1.0,
                 dropout: float = 0.0, se: bool = False) -> None:
        super().__init__()
        c = _check_chans(in_chans)
        _hw(img_size)
        chans = [max(4, round(w * width)) for w in widths]
        layers: list[nn.Module] = [nn.Conv2d(c, chans[0], 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)]
        cin = chans[0]
        for stage, (n, cout) in enumerate(zip(blocks, chans, strict=True)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1, se))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, n_classes))


_RESNET_SPACE = {"width": CategoricalDist((0.5, 1.0, 2.0)), "dropout": FloatDist(0.0, 0.5),
                 "se": CategoricalDist((False, True))}


@register_model("resnet8", input_kind="image", family="nn", search_space=_RESNET_SPACE)
def resnet8(n_classes: int, in_chans: int = 1, img_size: int = 64, width: float = 1.0,
            dropout: float = 0.0, se: bool = False) -> ResNetSmall:
    """ResNet-8 (CIFAR style): 3 stages x 1 block, 16/32/64 channels x width."""
    return ResNetSmall((1, 1, 1), (16, 32, 64), n_classes, in_chans, img_size, width,
                       dropout, se)


@register_model("resnet14", input_kind="image", family="nn", search_space=_RESNET_SPACE)
def resnet14(n_classes: int, in_chans: int = 1, img_size: int = 64, width: float = 1.0,
             dropout: float = 0.0, se: bool = False) -> ResNetSmall:
    """ResNet-14 (CIFAR style): 3 stages x 2 blocks, 16/32/64 channels x width."""
    return ResNetSmall((2, 2, 2), (16, 32, 64), n_classes, in_chans, img_size, width,
                       dropout, se)


@register_model("resnet18", input_kind="image", family="nn", search_space=_RESNET_SPACE)
def resnet18(n_classes: int, in_chans: int = 1, img_size: int = 64, width: float = 0.25,
             dropout: float = 0.0, se: bool = False) -> ResNetSmall:
    """ResNet-18 (CIFAR stem): 4 stages x 2 blocks, 64-512 channels x width (0.25 default)."""
    return ResNetSmall((2, 2, 2, 2), (64, 128, 256, 512), n_classes, in_chans, img_size,
                       width, dropout, se)


# ---------------------------------------------------------------------------------------------
# Inception-style network


class InceptionModule(nn.Module):
    """Four parallel branches: 1x1, 1x1->3x3, 1x1->3x3->3x3 (a 5x5 field), pool->1x1."""

    def __init__(self, cin: int, b1: int, b3: int, b5: int, bp: int, se: bool = False):
        super().__init__()

        def cbr(i: int, o: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o),
                    nn.ReLU(inplace=True)]

        self.b1 = nn.Sequential(*cbr(cin, b1, 1))
        self.b3 = nn.Sequential(*cbr(cin, b3, 1), *cbr(b3, b3, 3))
        self.b5 = nn.Sequential(*cbr(cin, b5, 1), *cbr(b5, b5, 3), *cbr(b5, b5, 3))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), *cbr(cin, bp, 1))
        self.se = SE(b1 + b3 + b5 + bp) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1))


@register_model("inception-small", input_kind="image", family="nn",
                search_space={"width": CategoricalDist((0.5, 1.0, 2.0)),
                              "dropout": FloatDist(0.0, 0.5), "se": CategoricalDist((False, True))})
class InceptionSmall(_Net):
    """Inception-style net: 3x3 stem, three inception modules with pooling between, GAP."""

    def __init__(self, n_classes: int, in_chans: int = 1, img_size: int = 64,
                 width: float = 1.0, dropout: float = 0.2, se: bool = False) -> None:
        super().__init__()
        c = _check_chans(in_chans)
        _hw(img_size)

        def s(v: int) -> int:
            return max(4, round(v * width))

        stem = s(32)
        m1 = (s(16), s(24), s(8), s(8))
        m2 = (s(32), s(48), s(16), s(16))
        m3 = (s(48), s(64), s(24), s(24))
        self.features = nn.Sequential(
            nn.Conv2d(c, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            InceptionModule(stem, *m1, se=se), nn.MaxPool2d(2),
            InceptionModule(sum(m1), *m2, se=se), nn.MaxPool2d(2),
            InceptionModule(sum(m2), *m3, se=se), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(m3), n_classes))
