"""Per-layer summary of a network: output shape, parameters, multiply-accumulates (MACs).

Like the tables in seed 003 (``Conv2d-1 [-1, 32, 256, 256] 320``), for any registry model.

>>> from cellbench.models import create_model
>>> s = summarize(create_model("cnn-seed003", n_classes=2, in_chans=1, img_size=256),
...               (1, 256, 256))
>>> s.total_params
1067457
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..exceptions import InvalidParameterError

__all__ = ["LayerInfo", "ModelSummary", "check_summary_input", "forward_error", "has_batchnorm",
           "input_too_small", "smallest_image_size", "summarize"]


@dataclass
class LayerInfo:
    name: str  # e.g. "Conv2d-1"
    path: str  # attribute path in the model, e.g. "features.0.0"
    output_shape: list[int]
    params: int
    macs: int


@dataclass
class ModelSummary:
    input_shape: list[int]
    layers: list[LayerInfo] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0

    def to_dict(self) -> dict:
        return {"input_shape": self.input_shape, "total_params": self.total_params,
                "trainable_params": self.trainable_params, "total_macs": self.total_macs,
                "layers": [vars(layer) for layer in self.layers]}


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """MACs per sample of conv and linear layers (others are negligible and counted as 0)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = (module.in_channels // module.groups) * int(torch.tensor(
            module.kernel_size).prod())
        return int(output[0].numel()) * per_output
    if isinstance(module, nn.Linear):
        return int(output[0].numel()) * module.in_features
    return 0


@torch.no_grad()
def summarize(model: nn.Module, input_shape: Sequence[int]) -> ModelSummary:
    """Run one dummy sample of ``input_shape`` (without the batch axis) through ``model``."""
    summary = ModelSummary(list(input_shape))
    counters: dict[str, int] = {}
    hooks = []
    paths = {m: p for p, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        kind = type(module).__name__
        counters[kind] = counters.get(kind, 0) + 1
        out = output if isinstance(output, torch.Tensor) else output[0]
        params = sum(p.numel() for p in module.parameters(recurse=False))
        summary.layers.append(LayerInfo(f"{kind}-{len(summary.layers) + 1}", paths[module],
                                         [-1, *out.shape[1:]], int(params),
                                         _macs(module, inputs, out)))

    for module in model.modules():
        has_own = any(True for _ in module.parameters(recurse=False))
        if not any(True for _ in module.children()) or has_own:
            hooks.append(module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    summary.total_params = int(sum(p.numel() for p in model.parameters()))
    summary.trainable_params = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    summary.total_macs = int(sum(layer.macs for layer in summary.layers))
    return summary


# ---------------------------------------------------------------------------------------------
# Shape checks without computing anything (the meta device): can a network take an input?


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch norm layer (which cannot train on one value per
    channel: a batch of one row for ``BatchNorm1d`` on features)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def forward_error(model: nn.Module, input_shape: Sequence[int], batch: int = 2,
                  train: bool = False) -> Exception | None:
    """The error a forward pass of ``batch`` samples of ``input_shape`` raises, or None.

    Runs on the meta device (shapes only, no memory, no arithmetic): ``model`` should have
    been built there. The model's train/eval mode is restored afterwards.
    """
    was = model.training
    model.train(train)
    try:
        with torch.device("meta"), torch.no_grad():
            model(torch.zeros(batch, *input_shape))
    except Exception as exc:  # whatever the model's layers say about the shape
        return exc
    finally:
        model.train(was)
    return None


#: square sizes tried, beyond every size up to 64, when looking for the smallest that works
_LARGER_SIZES = (80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def smallest_image_size(build: Callable[[tuple[int, int]], Any], in_chans: int,
                        start: int = 1) -> int | None:
    """The smallest square image side from ``start`` up that a network takes: ``build(hw)``
    returns the network for images of ``hw`` (it is called on the meta device), which must
    build and run one forward pass. None when not even 512 x 512 works."""
    for side in (*range(max(1, start), 65), *(s for s in _LARGER_SIZES if s >= start)):
        try:
            with torch.device("meta"):
                model = build((side, side))
        except Exception:  # too small to build (a flattened size of 0, ...)
            continue
        if isinstance(model, nn.Module) and forward_error(model, (in_chans, side, side)) is None:
            return side
    return None


def check_summary_input(name: str, input_kind: str, shape: list[int], text: str) -> None:
    """An image network needs CxHxW, a table network the number of features."""
    if input_kind == "image" and len(shape) != 3:
        raise InvalidParameterError(
            f"--input must be CxHxW for {name!r}, which takes images; got {text!r}. Pass the "
            "channels and size, e.g. --input 1x64x64.")
    if input_kind == "tabular" and len(shape) != 1:
        raise InvalidParameterError(
            f"--input must be the number of features for {name!r}, which takes a table; got "
            f"{text!r}. Pass --input N_FEATURES, e.g. --input 24 (or pick an image model: "
            "`cellbench models --kind image`).")



def input_too_small(label: str, create: Any, shape: list[int], exc: Exception) -> None:
    """Raise when images of ``shape`` are too small for the network, naming a size that works."""
    if len(shape) != 3:
        return
    side = smallest_image_size(lambda hw: create(img_size=hw), shape[0],
                               start=max(shape[1:]) + 1)
    if side is not None:
        raise InvalidParameterError(
            f"--input images must be at least {side}x{side} for {label!r} (its pooling would "
            f"shrink smaller ones to nothing); got {shape[1]}x{shape[2]}. Try --input "
            f"{shape[0]}x{side}x{side} or larger.") from exc
