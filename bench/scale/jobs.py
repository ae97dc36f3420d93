"""``compare --example`` with ``--jobs 2`` against the sequential run: wall-time ratio.

Each round runs both, in alternating order, each in a fresh process and a fresh run
directory (nothing reused); the ratio is paired within a round. The units' results are
checked equal between the two (models whose numbers do not depend on the thread count).

Usage: python bench/scale/jobs.py [--rounds 3] [--jobs 2]
Writes bench/scale/jobs.md and jobs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / "_work" / "jobs"


def run(jobs: int, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("cellbench")), "compare", "--example", "--out",
           str(out), "--quiet", "--jobs", str(jobs)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def accuracies(out: Path) -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())
    return {m["model"]: m["test"]["accuracy"]["value"] for m in results["models"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for r in range(args.rounds):
        order = [1, args.jobs] if r % 2 == 0 else [args.jobs, 1]
        times = {j: run(j, WORK / f"jobs{j}") for j in order}
        rows.append({"round": r + 1, "sequential_s": round(times[1], 1),
                     "parallel_s": round(times[args.jobs], 1),
                     "ratio": round(times[args.jobs] / times[1], 3)})
        print(rows[-1], flush=True)
    seq, par = accuracies(WORK / "jobs1"), accuracies(WORK / f"jobs{args.jobs}")
    ratio = statistics.median(r["ratio"] for r in rows)
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "jobs": args.jobs, "rounds": rows, "median_ratio": ratio,
              "accuracy_sequential": seq, "accuracy_parallel": par}
    (HERE / "jobs.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# `--jobs` on the bundled example", "",
             f"Command: `python bench/scale/jobs.py --rounds {args.rounds} --jobs {args.jobs}` "
             f"(machine: {platform.platform()}, {os.cpu_count()} cores).", "",
             f"`cellbench compare --example` (6 models x 4 folds = 24 units), sequential vs "
             f"`--jobs {args.jobs}` ({args.jobs} spawned processes, "
             f"{max(1, (os.cpu_count() or 1) // args.jobs)} thread(s) each), fresh run "
             "directories, alternating order.", "",
             "| round | sequential s | --jobs s | ratio |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['sequential_s']} | {r['parallel_s']} | {r['ratio']} |"
              for r in rows]
    lines += ["", f"Median wall-time ratio (--jobs / sequential): **{ratio:.2f}**.", "",
              "Test accuracy per model, sequential vs parallel (last round):", "",
              "| model | sequential | --jobs |", "|---|---:|---:|"]
    lines += [f"| {m} | {seq[m]:.4%} | {par.get(m, float('nan')):.4%} |" for m in seq]
    (HERE / "jobs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
