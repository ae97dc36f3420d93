"""A 10^7-cell study on one machine: compare on a per-sample subsample, predict every cell.

Writes a synthetic study of 100 Parquet files (one per sample) x 100,000 cells x 40 markers
(8 cell types, a per-sample shift like a batch effect) to ``bench/scale/_work/study``, then
runs, each in its own process under ``/usr/bin/time -v``:

1. the baseline: a process that imports cellbench and the libraries a job loads (torch and
   its optimizers, LightGBM, scikit-learn, matplotlib, pyarrow.parquet, jinja2) and loads no
   data;
2. ``cellbench compare STUDY --cells-per-sample 20000 -m lda,mlp`` (2,000,000 cells drawn),
3. the same with ``-m mlp`` alone (the data path and one network);
4. ``cellbench predict`` of the MLP over all 10^7 cells of the folder.

Peak RSS is reported as measured and above the baseline, against the size of the float32
array the job trains on (2,000,000 x 40 x 4 bytes = 320 MB).

Usage: python bench/scale/study.py [--samples 100] [--cells 100000] [--per-sample 20000]
Writes bench/scale/study.md and study.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
WORK = HERE / "_work"
MARKERS = 40
TYPES = 8


def make_study(root: Path, samples: int, cells: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{samples} {cells} v2":
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.3, size=(TYPES, MARKERS)).astype(np.float32)
    share = rng.dirichlet(np.full(TYPES, 2.0))
    names = [f"CD{i + 1}" for i in range(MARKERS)]
    for s in range(samples):
        y = rng.choice(TYPES, size=cells, p=share)
        X = rng.normal(size=(cells, MARKERS)).astype(np.float32)
        X += centres[y]
        X += rng.normal(scale=0.3, size=MARKERS).astype(np.float32)  # the sample's shift
        cols = {n: X[:, j] for j, n in enumerate(names)}
        cols["cell_type"] = np.array([f"type{k}" for k in range(TYPES)])[y]
        pq.write_table(pa.table(cols), root / f"sample{s:03d}.parquet",
                       row_group_size=32_768)
    done.write_text(f"{samples} {cells} v2")


def timed(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one command in its own process."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)[1])
    return {"cmd": " ".join(cmd), "wall_s": round(wall, 1), "peak_rss_mb": round(rss_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--per-sample", type=int, default=20_000)
    parser.add_argument("--max-epochs", type=int, default=5)
    args = parser.parse_args()
    study = WORK / "study"
    start = time.perf_counter()
    make_study(study, args.samples, args.cells)
    made = time.perf_counter() - start
    cellbench = str(Path(sys.executable).with_name("cellbench"))
    run = WORK / "compare"
    shutil.rmtree(run, ignore_errors=True)

    # the libraries a job loads, whatever its data: torch's optimizers, matplotlib, Arrow's
    # Parquet reader, the report's templates (about 100 MB, lazily imported by the job)
    baseline = timed([sys.executable, "-c", "import cellbench, torch, lightgbm; "
                      "import cellbench.experiment, cellbench.cli, torch.optim, "
                      "matplotlib.pyplot, pyarrow.parquet, jinja2, scipy.stats, "
                      "sklearn.discriminant_analysis; torch.optim.Adam(torch.nn.Linear(2, 2)"
                      ".parameters()); matplotlib.pyplot.figure()"])
    compares = {}
    for models in ("mlp", "lda,mlp"):
        out = run / models.replace(",", "-")
        compares[models] = timed([cellbench, "compare", str(study), "--target", "cell_type",
                                  "--cells-per-sample", str(args.per_sample), "-m", models,
                                  "--max-epochs", str(args.max_epochs), "--out", str(out),
                                  "--quiet"])
    model = next((run / "mlp").glob("units/mlp/seed*/*/model.pt"))
    preds = WORK / "predictions.csv"
    predict = timed([cellbench, "predict", str(model), str(study), "--out", str(preds)])

    total = args.samples * args.cells
    drawn = args.samples * min(args.per_sample, args.cells)
    array_mb = drawn * MARKERS * 4 / 2**20
    results = json.loads((run / "lda-mlp" / "results.json").read_text())
    with open(preds) as fh:
        rows = sum(1 for _ in fh) - 1
    record = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "study": {"samples": args.samples, "cells_per_file": args.cells, "markers": MARKERS,
                  "cells": total, "on_disk_mb": round(sum(p.stat().st_size for p in
                                                         study.glob("*.parquet")) / 2**20),
                  "made_s": round(made, 1)},
        "drawn_cells": drawn, "train_array_mb": round(array_mb),
        "baseline": baseline, "compare": compares, "predict": predict,
        "predicted_rows": rows, "predict_cells_per_s": round(total / predict["wall_s"]),
        "accuracy": {m["model"]: m["test"]["accuracy"]["value"] for m in results["models"]},
    }
    (HERE / "study.json").write_text(json.dumps(record, indent=2) + "\n")
    pred_above = predict["peak_rss_mb"] - baseline["peak_rss_mb"]
    lines = [
        "# A 10^7-cell study on one machine", "",
        f"Command: `python bench/scale/study.py` (machine: {platform.platform()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}).", "",
        f"Study: {args.samples} Parquet files x {args.cells:,} cells x {MARKERS} markers = "
        f"{total:,} cells, {record['study']['on_disk_mb']:,} MB on disk (written in "
        f"{made:.0f} s; reused when present). compare draws {args.per_sample:,} cells per "
        f"sample: {drawn:,} cells, a float32 array of {array_mb:.0f} MB; holdout split by "
        f"sample (70/15/15), {args.max_epochs} epochs.", "",
        "| step | wall s | peak RSS MB | above baseline MB | above baseline / array |",
        "|---|---:|---:|---:|---:|",
        f"| baseline (imports only) | {baseline['wall_s']} | {baseline['peak_rss_mb']} | 0 | |"]
    for models, c in compares.items():
        above = c["peak_rss_mb"] - baseline["peak_rss_mb"]
        lines.append(f"| compare -m {models} | {c['wall_s']} | {c['peak_rss_mb']} | {above} | "
                     f"{above / array_mb:.2f}x |")
    lines += [
        f"| predict all {total:,} cells (mlp) | {predict['wall_s']} | "
        f"{predict['peak_rss_mb']} | {pred_above} | |", "",
        f"- predict scored {rows:,} rows at {record['predict_cells_per_s']:,} cells/s "
        "(reading Parquet, predicting, writing a CSV of 11 columns).",
        "- test accuracy: " + ", ".join(f"{k} {v:.2%}" for k, v in
                                        record["accuracy"].items()),
        "- Where the memory goes: `python bench/scale/rss_probe.py compare STUDY ...` samples "
        "RSS with the stack. What stays for the whole job is the array, the labels (int64), "
        "the group ids (shared strings) and their int32 codes and the split's row numbers: "
        "about 1.3x the array. The rest is one phase's temporaries at a time (preprocessing "
        "statistics in 16k-row chunks, an epoch's row order, one part's probabilities "
        "while it is scored), and heap kept between phases. Arrow's Parquet reader decodes "
        "pages with its default pool (mimalloc), whatever `pyarrow.set_memory_pool` says; "
        "`release_free_memory` empties that pool after the read (about 22 MB here).", "",
    ]
    (HERE / "study.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
