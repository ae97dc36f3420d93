"""Does per-sample standardisation help across CyTOF samples? A probe for issue 13, item 1.

DeepCyTOF multi-center, 4-fold CV over samples (the protocol of ``bench/cytometry``). Two
inputs, the same models and folds:

- *pooled*: ``--transform arcsinh,standardize`` (arcsinh cofactor 5; one mean and scale per
  marker, fitted on the training samples), as in ``bench/cytometry``;
- *per sample*: arcsinh cofactor 5, then every sample's markers centred on that sample's
  median and divided by its interquartile range (computed from the sample's own cells, no
  labels; a test sample uses only its own cells), then the pooled standardisation.

This is a probe done outside the package (the file is rewritten before cellbench reads it),
to measure whether the option is worth building into the preprocessing and ``predict``.

Usage: python bench/tabular/sample_norm_probe.py   (needs ../shared/data; about 8 minutes)
Writes bench/tabular/sample_norm_probe.md.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
WORK = HERE / "_work" / "sample_norm"
DATA = Path("../shared/data/deepcytof_multicenter/deepcytof_multicenter.parquet")
MODELS = "lda,lightgbm,mlp"
COMMON = (f"--target label --groups sample --exclude-labels 0 --cv 4 --models {MODELS} "
          "--max-epochs 30 --patience 5 --batch-size 512 --quiet")


def per_sample(frame: pd.DataFrame) -> pd.DataFrame:
    markers = [c for c in frame.columns if c not in ("label", "sample")]
    out = frame.copy()
    values = np.arcsinh(frame[markers].to_numpy(np.float64) / 5.0)
    for _, rows in frame.groupby("sample").indices.items():
        part = values[rows]
        median = np.median(part, axis=0)
        iqr = np.subtract(*np.percentile(part, [75, 25], axis=0))
        values[rows] = (part - median) / np.where(iqr > 0, iqr, 1.0)
    out[markers] = values.astype(np.float32)
    return out


def run(name: str, data: Path, transform: str) -> dict:
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    command = f"cellbench compare {data} {COMMON} --transform {transform} --out {out}"
    start = time.perf_counter()
    subprocess.run(shlex.split(command), check=True)
    results = json.loads((out / "results.json").read_text())
    return {"command": command, "minutes": (time.perf_counter() - start) / 60,
            "models": {m["model"]: m for m in results["models"]}}


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    normalised = WORK / "deepcytof_per_sample.parquet"
    per_sample(pd.read_parquet(DATA)).to_parquet(normalised, index=False)
    runs = {"pooled": run("pooled", DATA, "arcsinh,standardize"),
            "per sample": run("per_sample", normalised, "standardize")}
    lines = ["# Per-sample standardisation across CyTOF samples (a probe)", "",
             f"Machine: {platform.platform()}, 2 cores. Models: {MODELS}; DeepCyTOF "
             "multi-center, label 0 (ungated) removed, 4-fold CV over the 16 samples.", ""]
    for name, r in runs.items():
        lines.append(f"- {name}: `{r['command']}` ({r['minutes']:.1f} min)")
    lines += ["", "| model | input | pooled accuracy % | mean ± sd over folds % | "
              "balanced accuracy % |", "|---|---|---:|---:|---:|"]
    for model in runs["pooled"]["models"]:
        for name, r in runs.items():
            m = r["models"][model]
            spread = (m.get("across_units") or {}).get("accuracy") or {}
            lines.append(
                f"| {model} | {name} | {100 * m['test']['accuracy']['value']:.2f} | "
                f"{100 * spread.get('mean', float('nan')):.2f} ± "
                f"{100 * spread.get('sd', float('nan')):.2f} | "
                f"{100 * m['test']['balanced_accuracy']['value']:.2f} |")
    (HERE / "sample_norm_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
