"""An ``.h5ad`` larger than what the job keeps: memory follows the cells drawn, not the file.

Writes two synthetic AnnData files (dense float32 ``X``, 40 markers; ``obs``: ``sample``
(100 samples) and ``cell_type`` (8 types), both categorical) of 1,000,000 and 4,000,000
cells to ``bench/scale/_work/``, then runs, each in its own process under ``/usr/bin/time -v``:

1. the baseline: the same job on a file of 10,000 cells with 10 drawn per sample;
2. ``cellbench compare FILE.h5ad -t cell_type -g sample --cells-per-sample 2000 -m lda``
   for each file (200,000 cells drawn: a 31 MB float32 array);
3. the same through the whole-table path that cellbench took for every .h5ad until now
   (every row of ``X`` read into a pandas frame, then drawn), for comparison.

Usage: python bench/scale/h5ad.py [--sizes 1000000,4000000] [--per-sample 2000]
Writes bench/scale/h5ad.md and h5ad.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from study import timed

HERE = Path(__file__).parent
WORK = HERE / "_work"
MARKERS = 40
TYPES = 8
SAMPLES = 100
BLOCK = 250_000  # rows written at a time


def make_h5ad(path: Path, cells: int, seed: int = 0) -> None:
    """Write the file block by block with h5py, in the layout anndata writes (checked by
    reading it back with anndata in ``main``)."""
    import anndata as ad
    import h5py
    import pandas as pd

    done = path.with_suffix(".complete")
    if done.is_file() and done.read_text() == f"{cells} v1":
        return
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.3, size=(TYPES, MARKERS)).astype(np.float32)
    sample = np.repeat(np.arange(SAMPLES), -(-cells // SAMPLES))[:cells]
    cell_type = rng.integers(0, TYPES, size=cells)
    # an empty-X AnnData of the right obs and var, then X filled in blocks
    obs = pd.DataFrame({
        "sample": pd.Categorical.from_codes(sample, [f"s{k:03d}" for k in range(SAMPLES)]),
        "cell_type": pd.Categorical.from_codes(cell_type, [f"type{k}" for k in range(TYPES)]),
    }, index=pd.Index([str(i) for i in range(cells)], dtype=object))
    var = pd.DataFrame(index=pd.Index([f"CD{j + 1}" for j in range(MARKERS)], dtype=object))
    ad.AnnData(obs=obs, var=var).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        if "X" in f:
            del f["X"]
        X = f.create_dataset("X", shape=(cells, MARKERS), dtype="float32",
                             chunks=(min(cells, 8192), MARKERS))
        X.attrs["encoding-type"] = "array"
        X.attrs["encoding-version"] = "0.2.0"
        for start in range(0, cells, BLOCK):
            stop = min(cells, start + BLOCK)
            block = rng.normal(size=(stop - start, MARKERS)).astype(np.float32)
            block += centres[cell_type[start:stop]]
            X[start:stop] = block
    done.write_text(f"{cells} v1")


WHOLE_TABLE = ("import sys, cellbench.data.io as io; io._load_h5ad = lambda *a, **k: None; "
               "from cellbench.cli import app; app(sys.argv[1:])")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,4000000")
    parser.add_argument("--per-sample", type=int, default=2000)
    args = parser.parse_args()
    import anndata as ad

    WORK.mkdir(parents=True, exist_ok=True)
    cellbench = str(Path(sys.executable).with_name("cellbench"))
    # the baseline: the same job on a file of 10,000 cells, 10 drawn per sample (every
    # library and fixed cost, next to no data)
    tiny = WORK / "cells10000.h5ad"
    make_h5ad(tiny, 10_000)
    baseline = timed([cellbench, "compare", str(tiny), "-t", "cell_type", "-g", "sample",
                      "--cells-per-sample", "10", "-m", "lda", "--quiet", "--out",
                      str(WORK / "h5ad-baseline")])
    drawn = SAMPLES * args.per_sample
    array_mb = drawn * MARKERS * 4 / 2**20
    rows = []
    for cells in (int(s) for s in args.sizes.split(",")):
        path = WORK / f"cells{cells}.h5ad"
        start = time.perf_counter()
        make_h5ad(path, cells)
        made = time.perf_counter() - start
        back = ad.read_h5ad(path, backed="r")  # anndata reads what we wrote
        assert back.shape == (cells, MARKERS) and list(back.obs.columns) == [
            "sample", "cell_type"]
        back.file.close()
        job = ["compare", str(path), "-t", "cell_type", "-g", "sample", "--cells-per-sample",
               str(args.per_sample), "-m", "lda", "--quiet"]
        runs = {}
        for how, cmd in (("reads the drawn rows", [cellbench, *job]),
                         ("whole table into a frame", [sys.executable, "-c", WHOLE_TABLE, *job])):
            out = WORK / f"h5ad-{cells}-{how.split()[0]}"
            runs[how] = timed([*cmd, "--out", str(out)])
            result = json.loads((out / "results.json").read_text())
            runs[how]["accuracy"] = result["models"][0]["test"]["accuracy"]["value"]
        rows.append({"cells": cells, "x_mb": round(cells * MARKERS * 4 / 2**20),
                     "file_mb": round(path.stat().st_size / 2**20), "made_s": round(made, 1),
                     "runs": runs})
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "baseline": baseline, "drawn_cells": drawn, "drawn_array_mb": round(array_mb, 1),
              "files": rows}
    (HERE / "h5ad.json").write_text(json.dumps(record, indent=2) + "\n")
    base = baseline["peak_rss_mb"]
    lines = [
        "# An .h5ad larger than what the job keeps", "",
        f"Command: `python bench/scale/h5ad.py` (machine: {platform.platform()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}).", "",
        f"Files: dense float32 X, {MARKERS} markers, {SAMPLES} samples; `compare -m lda "
        f"--cells-per-sample {args.per_sample}` draws {drawn:,} cells (a {array_mb:.0f} MB "
        f"float32 array). Baseline (the job on 10,000 cells, 10 drawn per sample): {base} MB peak "
        "RSS.", "",
        "| cells in file | X MB | load path | wall s | peak RSS MB | above baseline MB | "
        "above baseline / drawn array | test accuracy |",
        "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        for how, r in row["runs"].items():
            above = r["peak_rss_mb"] - base
            lines.append(f"| {row['cells']:,} | {row['x_mb']} | {how} | {r['wall_s']} | "
                         f"{r['peak_rss_mb']} | {above} | {above / array_mb:.2f}x | "
                         f"{r['accuracy']:.2%} |")
    lines.append("")
    (HERE / "h5ad.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
