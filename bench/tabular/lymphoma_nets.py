"""The new tabular networks (mlp-plr, tabm) beside LightGBM and the MLP on lymphoma (issue 13).

The split of ``bench/cytometry`` (stratified 70/15/15 by cell: the file has no patient ids),
the same training settings as there (30 epochs at most, patience 5, batch 512), 3 seeds for
every network; paired tests over the runs against LightGBM. AutoGluon is not in this run.

Usage: python bench/tabular/lymphoma_nets.py   (needs ../shared/data)
Writes bench/tabular/lymphoma_nets.md (and keeps the run in bench/tabular/_work/lymphoma).
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / "_work" / "lymphoma"
DATA = Path("../shared/data/lymphoma_flowcytometric/lymphoma_flowcytometric.parquet")
MODELS = "lightgbm,mlp,mlp-plr,tabm"
COMMAND = (f"cellbench compare {DATA} --target label --test-size 0.15 --val-size 0.15 "
           f"--models {MODELS} --seeds 3 --reference lightgbm --max-epochs 30 --patience 5 "
           f"--batch-size 512 --quiet --out {WORK}")


def _fit_seconds(model: dict) -> float:
    if "fit_seconds" in model:
        return float(model["fit_seconds"])
    units = model.get("per_unit") or []
    times = [u["fit_seconds"] for u in units if "fit_seconds" in u]
    return sum(times) / len(times) if times else float("nan")


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(shlex.split(COMMAND), check=True)
    wall = time.perf_counter() - start
    results = json.loads((WORK / "results.json").read_text())
    lines = ["# Tabular networks on lymphoma (issue 13)", "",
             f"Command: `{COMMAND}` ({wall / 60:.1f} min on {platform.platform()}, 2 cores).",
             "", "Split by cell at random (no patient ids in the file), as in "
             "`bench/cytometry`. Pooled accuracy is the first seed's test part; the mean and "
             "sd are over the 3 seeds.", "",
             "| model | params | accuracy % (95% CI) | mean ± sd over seeds % | fit s per run |",
             "|---|---:|---:|---:|---:|"]
    for m in results["models"]:
        acc = m["test"]["accuracy"]
        spread = (m.get("across_units") or {}).get("accuracy")
        lines.append(
            f"| {m['model']} | {m['n_params']:,} | {100 * acc['value']:.2f} "
            f"({100 * acc['ci'][0]:.2f}-{100 * acc['ci'][1]:.2f}) | "
            + (f"{100 * spread['mean']:.2f} ± {100 * spread['sd']:.2f}" if spread else "-")
            + f" | {_fit_seconds(m):.1f} |")
    lines += ["", "Paired tests against LightGBM (Holm-adjusted):", ""]
    for row in (results.get("comparisons") or {}).get("rows", []):
        lines.append(f"- {row['verdict']}")
    (HERE / "lymphoma_nets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
