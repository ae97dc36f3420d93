"""Image augmentation on whole batches, on the training device.

Written as plain tensor operations (no per-image Python): every random choice is drawn per
image from PyTorch's generator, which the engine seeds and checkpoints, so runs repeat and
resume exactly. Augmentation runs on training batches only, after normalisation.

A policy is a comma-separated string (recorded in the run config)::

    flip                  random horizontal and vertical flips
    rot90                 random multiples of 90 degrees (square images)
    rotate=15             random rotation within +-15 degrees
    shift=0.1             random translation up to 10 % of the size
    crop=0.8              random resized crop keeping 80-100 % of the area
    jitter=0.2            brightness +-0.2 (in standard deviations) and contrast x(1 +- 0.2)
    noise=0.05            Gaussian noise with this standard deviation
    blur=1.0              Gaussian blur, sigma drawn in [0.1, 1.0] pixels
    erase=0.25            random erasing of one rectangle with probability 0.25
    mixup=0.2             MixUp, lambda ~ Beta(0.2, 0.2)
    cutmix=1.0            CutMix, lambda ~ Beta(1, 1)

Geometric operations pad with the border pixels (the background of a cell crop).

>>> aug = Augmenter.from_spec("flip,rot90,mixup=0.2")
>>> aug.describe()
'flip, rot90, mixup=0.2'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._augment_spec import AUGMENTATIONS, parse_augment

__all__ = ["AUGMENTATIONS", "Augmenter"]  # AUGMENTATIONS: the grammar, kept in _config

@dataclass
class Augmenter:
    """Apply a policy to ``(x, y)`` training batches; returns ``(x, target)``.

    ``target`` is the class codes, or soft labels ``(B, n_classes)`` when MixUp/CutMix ran.
    """

    ops: dict[str, float | None] = field(default_factory=dict)
    n_classes: int = 2

    @classmethod
    def from_spec(cls, spec: str | None, n_classes: int = 2) -> Augmenter | None:
        """Parse a policy string; None or "" gives None (no augmentation)."""
        if not spec:
            return None
        return cls(parse_augment(spec), n_classes)

    def describe(self) -> str:
        return ", ".join(k if v is None else f"{k}={v:g}" for k, v in self.ops.items())

    # -- the batch transform ---------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ops = self.ops
        if "flip" in ops:
            x = self._flip(x)
        if "rot90" in ops:
            x = self._rot90(x)
        if any(k in ops for k in ("rotate", "shift", "crop")):
            x = self._affine(x, ops.get("rotate"), ops.get("shift"), ops.get("crop"))
        if "jitter" in ops:
            x = self._jitter(x, ops["jitter"])
        if "blur" in ops:
            x = self._blur(x, ops["blur"])
        if "noise" in ops:
            x = x + ops["noise"] * torch.randn_like(x)
        if "erase" in ops:
            x = self._erase(x, ops["erase"])
        target: torch.Tensor = y
        mix = [k for k in ("mixup", "cutmix") if k in ops]
        if mix:
            # one of them per batch, like timm's mixup with both enabled
            kind = mix[int(torch.randint(len(mix), ()).item())]
            x, target = self._mix(x, y, kind, ops[kind])
        return x, target

    @staticmethod
    def _per_image(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
        return (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(self._per_image(x), x.flip(-1), x)
        return torch.where(self._per_image(x), x.flip(-2), x)

    def _rot90(self, x: torch.Tensor) -> torch.Tensor:
        square = x.shape[-1] == x.shape[-2]
        k = torch.randint(0, 4 if square else 2, (x.shape[0],), device=x.device)
        if not square:
            k = k * 2  # only 0 and 180 degrees keep a rectangle's shape
        out = x.clone()
        for turns in (1, 2, 3):
            chosen = k == turns
            if chosen.any():
                out[chosen] = torch.rot90(x[chosen], turns, dims=(-2, -1))
        return out

    def _affine(self, x: torch.Tensor, rotate: float | None, shift: float | None,
                crop: float | None) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        angle = torch.zeros(b, device=dev)
        if rotate:
            angle = (torch.rand(b, device=dev) * 2 - 1) * math.radians(rotate)
        scale = torch.ones(b, device=dev)
        if crop is not None:  # keep a fraction of the area in [crop, 1]
            scale = torch.sqrt(crop + (1 - crop) * torch.rand(b, device=dev))
        tx = torch.zeros(b, device=dev)
        ty = torch.zeros(b, device=dev)
        if shift:
            tx = (torch.rand(b, device=dev) * 2 - 1) * shift * 2
            ty = (torch.rand(b, device=dev) * 2 - 1) * shift * 2
        if crop is not None:  # a crop may sit anywhere the image still covers
            room = 1 - scale
            tx = tx + (torch.rand(b, device=dev) * 2 - 1) * room
            ty = ty + (torch.rand(b, device=dev) * 2 - 1) * room
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1),
                             torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)

    @staticmethod
    def _jitter(x: torch.Tensor, strength: float) -> torch.Tensor:
        b = x.shape[0]
        contrast = 1 + (torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1) * strength
        brightness = (torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1) * strength
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * contrast + mean + brightness

    @staticmethod
    def _blur(x: torch.Tensor, max_sigma: float) -> torch.Tensor:
        b, c, h, w = x.shape
        radius = max(1, math.ceil(3 * max_sigma))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        sigma = 0.1 + (max_sigma - 0.1) * torch.rand(b, 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (b*c, k)
        flat = x.reshape(1, b * c, h, w)
        flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
        flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
        flat = F.pad(flat, (0, 0, radius, radius), mode="replicate")
        flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
        return flat.view(b, c, h, w)

    @staticmethod
    def _box(b: int, h: int, w: int, area: torch.Tensor, aspect: torch.Tensor,
             device: torch.device) -> torch.Tensor:
        """A rectangle mask (b, 1, h, w) of the given area fractions, anywhere in the image."""
        bh = torch.sqrt(area * aspect).clamp(max=1.0) * h
        bw = torch.sqrt(area / aspect).clamp(max=1.0) * w
        cy = torch.rand(b, device=device) * h
        cx = torch.rand(b, device=device) * w
        ys = torch.arange(h, device=device).view(1, h, 1)
        xs = torch.arange(w, device=device).view(1, 1, w)
        inside_y = (ys >= (cy - bh / 2).view(-1, 1, 1)) & (ys < (cy + bh / 2).view(-1, 1, 1))
        inside_x = (xs >= (cx - bw / 2).view(-1, 1, 1)) & (xs < (cx + bw / 2).view(-1, 1, 1))
        return (inside_y & inside_x).unsqueeze(1)

    def _erase(self, x: torch.Tensor, p: float) -> torch.Tensor:
        b, _, h, w = x.shape
        area = 0.02 + 0.31 * torch.rand(b, device=x.device)
        aspect = torch.exp(torch.empty(b, device=x.device).uniform_(math.log(0.3),
                                                                    math.log(3.3)))
        mask = self._box(b, h, w, area, aspect, x.device) & self._per_image(x, p)
        return x.masked_fill(mask, 0.0)  # 0 = the training mean after standardization

    def _mix(self, x: torch.Tensor, y: torch.Tensor, kind: str,
             alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        lam = float(torch.distributions.Beta(alpha, alpha).sample(()).item())
        perm = torch.randperm(b, device=x.device)
        if kind == "mixup":
            x = lam * x + (1 - lam) * x[perm]
        else:
            h, w = x.shape[-2:]
            mask = self._box(1, h, w, torch.tensor([1 - lam], device=x.device),
                             torch.ones(1, device=x.device), x.device)
            x = torch.where(mask, x[perm], x)
            lam = 1 - mask.float().mean().item()  # the area actually pasted
        onehot = F.one_hot(y, self.n_classes).to(x.dtype)
        return x, lam * onehot + (1 - lam) * onehot[perm]
