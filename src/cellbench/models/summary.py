"""Per-layer summary of a network: output shape, parameters, multiply-accumulates (MACs).

Like the tables in seed 003 (``Conv2d-1 [-1, 32, 256, 256] 320``), for any registry model.

>>> from cellbench.models import create_model
>>> s = summarize(create_model("cnn-seed003", n_classes=2, in_chans=1, img_size=256),
...               (1, 256, 256))
>>> s.total_params
1067457
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LayerInfo", "ModelSummary", "summarize"]


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
