"""Channels-last vs the default (contiguous NCHW) memory layout for training steps on CPU.

For each image model: a batch of 128 grayscale 50 x 50 images (the malaria example's shape),
Adam, forward + backward + step. Both layouts are timed in the same process, in alternating
rounds, after warm-up; the ratio is the median over rounds of (NCHW time / channels-last time),
so values above 1 mean channels-last is faster. cellbench trains in channels-last by default
(``TrainConfig.channels_last``); this records why.

Usage: python bench/images/channels_last.py [--rounds 5] [--steps 5]
(writes bench/images/channels_last.md)
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cellbench.models import create_model

HERE = Path(__file__).parent
MODELS = ["cnn-seed003", "shallow-seed004", "vgg11", "resnet8"]


def steps_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                  channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(128, 1, 50, 50)
    y = torch.randint(0, 2, (128,))
    rows = []
    for name in MODELS:
        model = create_model(name, n_classes=2, in_chans=1, img_size=50)
        steps_seconds(model, x, y, 2, True)  # warm-up, both layouts
        steps_seconds(model, x, y, 2, False)
        ratios, base, last = [], [], []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            t = {cl: steps_seconds(model, x, y, args.steps, cl) for cl in order}
            base.append(t[False])
            last.append(t[True])
            ratios.append(t[False] / t[True])
        rows.append((name, float(np.median(base)), float(np.median(last)),
                     float(np.median(ratios)), float(np.min(ratios)), float(np.max(ratios))))
        print(rows[-1], flush=True)
    lines = ["# Channels-last on CPU", "",
             f"Command: `python bench/images/channels_last.py --rounds {args.rounds} --steps "
             f"{args.steps}` on {platform.platform()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} torch thread(s) (a shared 2-core VM; other benchmarks "
             "may have been running, which is why both layouts alternate in one process).", "",
             "Training step = forward + backward + Adam step on 128 x 1 x 50 x 50.", "",
             "| model | NCHW s / step | channels-last s / step | speed-up, median (min-max) |",
             "|---|---:|---:|---:|"]
    for name, b, c, med, lo, hi in rows:
        lines.append(f"| {name} | {b:.3f} | {c:.3f} | {med:.2f}x ({lo:.2f}-{hi:.2f}) |")
    lines += ["", "Above 1: channels-last is faster. cellbench uses it by default for images "
              "(`--set train.channels_last=false` turns it off).", ""]
    (HERE / "channels_last.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
