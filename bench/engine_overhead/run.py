"""Engine overhead: cellbench's training loop vs a bare PyTorch loop, same process.

172,000 synthetic cells x 24 markers (seed 000's size), 70 % train / 15 % validation. Both
loops train the same freshly initialised model (same seed) with Adam, batch 256, for the same
epochs, shuffling every epoch and measuring the validation loss and accuracy after each epoch
(what seed 000's own loop does). cellbench additionally re-measures 10,000 training cells in
eval mode, keeps the best weights (EarlyStopping with patience=None), records history and,
in the "+ checkpoint" variant, writes a resumable checkpoint every epoch.

Runs alternate in rotating order and ratios are paired within a round, so slow drifts of
machine load cancel out (see results.md for the design).

Usage: python bench/engine_overhead/run.py [--epochs 3] [--repeats 8]
Writes bench/engine_overhead/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cellbench._config import TrainConfig
from cellbench.models import create_model
from cellbench.train import Checkpoint, EarlyStopping, fit

HERE = Path(__file__).parent
N, D, BATCH = 172_000, 24, 256
EVAL = 1024  # rows per evaluation batch, as in cellbench's engine for this batch size


def make_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (N,), generator=g)
    X = torch.randn(N, D, generator=g)
    X[:, :6] += 0.8 * y[:, None]
    n_train = int(0.7 * N)
    n_val = int(0.15 * N)
    return (X[:n_train], y[:n_train]), (X[n_train:n_train + n_val], y[n_train:n_train + n_val])


def bare_loop(model, train, val, epochs: int, seed: int) -> list[float]:
    """The reference: what a user writes by hand."""
    torch.manual_seed(seed)
    X, y = train
    Xv, yv = val
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), BATCH):
            idx = order[i:i + BATCH]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            logits = torch.cat([model(Xv[i:i + EVAL]) for i in range(0, len(Xv), EVAL)])
            _ = F.cross_entropy(logits, yv).item(), (logits.argmax(1) == yv).float().mean().item()
        times.append(time.perf_counter() - start)
    return times


def cellbench_loop(model, train, val, epochs: int, seed: int, checkpoint: bool) -> list[float]:
    cfg = TrainConfig(max_epochs=epochs, batch_size=BATCH, lr=1e-3, optimizer="adam",
                      patience=None, random_state=seed, device="cpu")
    callbacks = [EarlyStopping("valid_loss", patience=None)]
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint:
            callbacks.append(Checkpoint(Path(tmp) / "last.pt"))
        state = fit(model, *train, *val, n_classes=2, config=cfg, callbacks=callbacks)
    return [r["time"] for r in state.history]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    train, val = make_data()
    variants = ["bare", "cellbench", "cellbench + checkpoint"]
    rows = []
    for name in ("mlp", "cnn1d-seed"):
        epochs = {v: [] for v in variants}
        paired = {v: [] for v in variants[1:]}
        for rep in range(args.repeats):
            order = variants[rep % 3:] + variants[:rep % 3]  # rotate: no variant always first
            median_of_run = {}
            for variant in order:
                torch.manual_seed(rep)
                model = create_model(name, n_features=D, n_classes=2)
                if variant == "bare":
                    t = bare_loop(model, train, val, args.epochs, rep)
                else:
                    t = cellbench_loop(model, train, val, args.epochs, rep,
                                       checkpoint=variant.endswith("checkpoint"))
                epochs[variant].extend(t[1:])  # the first epoch warms caches and allocators
                median_of_run[variant] = statistics.median(t[1:])
            for variant in variants[1:]:
                paired[variant].append(median_of_run[variant] / median_of_run["bare"])
        for variant in variants:
            ratios = paired.get(variant, [1.0])
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [1.0, 1.0, 1.0]
            rows.append({
                "model": name, "variant": variant,
                "median_epoch_s": statistics.median(epochs[variant]),
                "min_epoch_s": min(epochs[variant]),
                "paired_ratio_median": statistics.median(ratios),
                "paired_ratio_iqr": [q[0], q[2]],
                "min_ratio": min(epochs[variant]) / min(epochs["bare"]),
                "epochs_timed": len(epochs[variant]),
            })
            r = rows[-1]
            print(f"{name:12s} {variant:24s} median {r['median_epoch_s']:.3f} s  "
                  f"paired ratio {r['paired_ratio_median']:.3f} "
                  f"[{q[0]:.3f}, {q[2]:.3f}]  min ratio {r['min_ratio']:.3f}", flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "python": platform.python_version(), "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    (HERE / "results.json").write_text(json.dumps({"machine": machine, "rows": rows,
                                                   "epochs": args.epochs,
                                                   "repeats": args.repeats}, indent=2))
    lines = [
        "# Engine overhead: cellbench vs a bare PyTorch loop",
        "",
        f"Command: `python bench/engine_overhead/run.py --epochs {args.epochs} --repeats "
        f"{args.repeats}`",
        "",
        f"Machine: {machine['platform']}, {machine['threads']} torch threads, torch "
        f"{machine['torch']}, Python {machine['python']} (CPU, a shared virtual machine: single "
        "epochs vary by up to ±10 % from one minute to the next).",
        "",
        f"Data: {N:,} synthetic cells x {D} markers, 70 % train ({len(train[0]):,}) / 15 % "
        f"validation ({len(val[0]):,}); Adam, batch {BATCH}, validation measured every epoch "
        f"in both loops (evaluation batches of {EVAL} rows in both).",
        "",
        f"Design: {args.repeats} rounds; in each round the three loops train a fresh model for "
        f"{args.epochs} epochs, in rotating order; the first epoch of every run is dropped. "
        "*Paired ratio*: cellbench's median epoch time over the bare loop's in the same round "
        "(median and interquartile range over rounds). *Min ratio*: fastest cellbench epoch "
        "over fastest bare epoch (the least disturbed by other load).",
        "",
        "| model | loop | median s / epoch | paired ratio (IQR) | min ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["paired_ratio_iqr"]
        lines.append(f"| {r['model']} | {r['variant']} | {r['median_epoch_s']:.3f} | "
                     f"{r['paired_ratio_median']:.3f} ({lo:.3f}-{hi:.3f}) | "
                     f"{r['min_ratio']:.3f} |")
    lines += ["", "cellbench's extra work per epoch: an eval-mode pass over 10,000 training cells "
              "(train_loss/train_accuracy), running loss and accuracy of every batch, "
              "best-weight tracking, the history record, and in the last variant a resumable "
              "checkpoint written atomically.", ""]
    (HERE / "results.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
