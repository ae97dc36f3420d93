"""cnn1d-seed training speed: torch's stock layers vs the fast layers (issue 14), same process.

172,000 synthetic cells x 24 markers (seed 000's size), all of them trained on every epoch:
shuffle, batches of 256, forward, cross-entropy, backward, Adam step, the bare loop of
``bench/engine_overhead/run.py`` without its validation pass. The *stock* form is
``CytometryCNN.reference()`` (``nn.Conv1d``, ``nn.BatchNorm1d``, ``nn.AvgPool1d``: the
network before issue 14); the *fast* form is ``create_model("cnn1d-seed")`` as it is now.
Both start from the same weights in a round.

Runs alternate in rotating order and ratios are paired within a round, so slow drifts of
machine load cancel out; the first epoch of every run is dropped (it warms caches and
allocators). Keep the machine otherwise idle while it runs.

Usage: python bench/scale/cnn1d_seed.py [--cells 172000] [--rounds 8] [--epochs 3]
Writes bench/scale/cnn1d_seed.md and cnn1d_seed.json (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cellbench.models import create_model

HERE = Path(__file__).parent
D, BATCH = 24, 256
FORMS = ("stock", "fast")


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, the first six markers shifted by the class (as the engine bench)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    X = torch.randn(n, D, generator=g)
    X[:, :6] += 0.8 * y[:, None]
    return X, y


def build(form: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("cnn1d-seed", n_features=D, n_classes=2)
    return model.reference() if form == "stock" else model


def train_epochs(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int,
                 seed: int) -> list[float]:
    """Seconds per epoch of shuffled mini-batch training with Adam."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), BATCH):
            idx = order[i:i + BATCH]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def agreement(X: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Largest output and gradient differences of the two forms on one training batch."""
    out, grads = {}, {}
    for form in FORMS:
        model = build(form, 0)
        torch.manual_seed(1)
        logits = model(X[:BATCH])
        F.cross_entropy(logits, y[:BATCH]).backward()
        out[form] = logits.detach()
        grads[form] = [p.grad for p in model.parameters()]
    return {"max_abs_output_diff": float((out["fast"] - out["stock"]).abs().max()),
            "max_abs_grad_diff": max(float((a - b).abs().max())
                                     for a, b in zip(grads["fast"], grads["stock"],
                                                     strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=172_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is dropped")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's own choice)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of each run is dropped)")
    if args.threads:
        torch.set_num_threads(args.threads)
    X, y = make_data(args.cells)
    check = agreement(X, y)
    print(f"agreement: outputs {check['max_abs_output_diff']:.2e}, gradients "
          f"{check['max_abs_grad_diff']:.2e}", flush=True)

    epochs: dict[str, list[float]] = {f: [] for f in FORMS}
    ratios = []  # stock / fast: the speed-up, paired within a round
    for rnd in range(args.rounds):
        order = FORMS[rnd % 2:] + FORMS[:rnd % 2]  # rotate: neither form always first
        median_of_run = {}
        for form in order:
            t = train_epochs(build(form, rnd), X, y, args.epochs, rnd)
            epochs[form].extend(t[1:])
            median_of_run[form] = statistics.median(t[1:])
        ratios.append(median_of_run["stock"] / median_of_run["fast"])
        print(f"round {rnd + 1}/{args.rounds}: stock {median_of_run['stock']:.3f} s, fast "
              f"{median_of_run['fast']:.3f} s per epoch, speed-up {ratios[-1]:.2f}x", flush=True)

    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    rows = [{"form": f, "median_epoch_s": statistics.median(epochs[f]),
             "min_epoch_s": min(epochs[f]), "epochs_timed": len(epochs[f])} for f in FORMS]
    summary = {"paired_speedup_median": statistics.median(ratios),
               "paired_speedup_iqr": [q[0], q[2]],
               "min_speedup": min(epochs["stock"]) / min(epochs["fast"]),
               "paired_speedups": ratios}
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "python": platform.python_version(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu_count": _cpu_count()}
    command = "python bench/scale/cnn1d_seed.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cnn1d_seed.json").write_text(json.dumps(
        {"command": command.strip(), "machine": machine, "cells": args.cells, "markers": D,
         "batch": BATCH, "rounds": args.rounds, "epochs": args.epochs, "agreement": check,
         "rows": rows, **summary}, indent=2) + "\n")
    lines = [
        "# cnn1d-seed: stock layers vs fast layers (issue 14)",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine['platform']}, {machine['threads']} torch threads "
        f"({machine['cpu_count']} CPUs visible), torch {machine['torch']}, Python "
        f"{machine['python']}.",
        "",
        f"Data: {args.cells:,} synthetic cells x {D} markers, every cell trained on each epoch "
        f"(shuffled, batch {BATCH}, Adam lr 1e-3, forward + backward + step; no validation "
        "pass).",
        "",
        f"Design: {args.rounds} rounds; in each round both forms train a fresh copy of the same "
        f"initial network for {args.epochs} epochs, in rotating order; the first epoch of every "
        "run is dropped. *Speed-up*: the stock form's median epoch time over the fast form's "
        "in the same round (median and interquartile range over rounds). *Min speed-up*: "
        "fastest stock epoch over fastest fast epoch.",
        "",
        f"Agreement on one batch (same weights, same dropout draws): outputs to "
        f"{check['max_abs_output_diff']:.1e}, parameter gradients to "
        f"{check['max_abs_grad_diff']:.1e} (absolute).",
        "",
        "| form | median s / epoch | min s / epoch | epochs timed |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['form']} | {r['median_epoch_s']:.3f} | {r['min_epoch_s']:.3f} | "
                     f"{r['epochs_timed']} |")
    lines += ["", f"Paired speed-up (stock / fast): **{summary['paired_speedup_median']:.2f}x** "
              f"(IQR {q[0]:.2f}-{q[2]:.2f}); min speed-up {summary['min_speedup']:.2f}x.", ""]
    (args.out / "cnn1d_seed.md").write_text("\n".join(lines))
    print(f"paired speed-up {summary['paired_speedup_median']:.2f}x "
          f"[{q[0]:.2f}, {q[2]:.2f}], min {summary['min_speedup']:.2f}x")


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count()


if __name__ == "__main__":
    main()
