"""Per-sample normalisation across CyTOF samples: what each option does (issue 13, item 1).

DeepCyTOF multi-center, label 0 (ungated) removed, 4-fold CV over the 16 samples (the protocol
of ``bench/cytometry``), the same models, folds and seeds for three preprocessing chains:

- ``pooled``: ``--transform arcsinh,standardize`` (what ``bench/cytometry`` uses);
- ``sample-standardize``: ``arcsinh,sample-standardize,standardize``: each sample's markers
  moved to the training samples' mean and standard deviation;
- ``sample-quantile``: ``arcsinh,sample-quantile,standardize``: each sample's marker quantiles
  mapped onto the mean quantile function of the training samples.

Each is run on the data as published and on the same data with planted batch effects: every
sample's raw intensities multiplied per marker by ``exp(N(0, sd^2))`` (a detector's
sensitivity drifting between runs; seeded), sd 0.3 and 1.0. Per-sample accuracies are
compared with the pooled chain's, paired over the 16 test samples (Wilcoxon signed-rank).

Usage: python bench/tabular/sample_norm.py   (needs ../shared/data; about 15 minutes per data
set on 2 cores; a data set whose results are in _work/ is not rerun: delete them to redo it)
Writes bench/tabular/sample_norm.md.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cellbench.evaluate.stats import wilcoxon_signed_rank

HERE = Path(__file__).parent
WORK = HERE / "_work" / "sample_norm_bench"
DATA = Path("../shared/data/deepcytof_multicenter/deepcytof_multicenter.parquet")
MODELS = "lda,lightgbm,mlp"
COMMON = (f"--target label --groups sample --exclude-labels 0 --cv 4 --models {MODELS} "
          "--seeds 3 --max-epochs 30 --patience 5 --batch-size 512 --quiet")
CHAINS = {"pooled": "arcsinh,standardize",
          "sample-standardize": "arcsinh,sample-standardize,standardize",
          "sample-quantile": "arcsinh,sample-quantile,standardize"}
BATCH_SDS = (0.3, 1.0)


def planted(frame: pd.DataFrame, sd: float, seed: int = 0) -> pd.DataFrame:
    """Every sample's raw markers scaled by its own factors exp(N(0, sd^2))."""
    rng = np.random.default_rng(seed)
    markers = [c for c in frame.columns if c not in ("label", "sample")]
    out = frame.copy()
    values = frame[markers].to_numpy(np.float64, copy=True)
    for _, rows in sorted(frame.groupby("sample").indices.items()):
        values[rows] *= np.exp(rng.normal(0, sd, len(markers)))
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


def per_sample(model: dict) -> pd.Series:
    groups = model["test"]["groups"]["per_group"]
    return pd.Series({g: v["cell_accuracy"] for g, v in groups.items()}).sort_index()


def table(runs: dict[str, dict]) -> list[str]:
    lines = ["| model | chain | accuracy % | mean ± sd over folds % | balanced accuracy % | "
             "vs pooled, per-sample mean difference (points) | Wilcoxon p |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for model in runs["pooled"]["models"]:
        base = per_sample(runs["pooled"]["models"][model])
        for name, r in runs.items():
            m = r["models"][model]
            spread = (m.get("across_units") or {}).get("accuracy") or {}
            diff, p = "", ""
            if name != "pooled":
                d = (per_sample(m) - base).to_numpy()
                diff = f"{100 * d.mean():+.2f}"
                p = f"{wilcoxon_signed_rank(d).p_value:.3g}"
            lines.append(
                f"| {model} | {name} | {100 * m['test']['accuracy']['value']:.2f} | "
                f"{100 * spread.get('mean', float('nan')):.2f} ± "
                f"{100 * spread.get('sd', float('nan')):.2f} | "
                f"{100 * m['test']['balanced_accuracy']['value']:.2f} | {diff} | {p} |")
    return lines


def data_sets() -> dict[str, tuple[str, Path]]:
    """Title -> (slug, file); the planted files are written on first use."""
    sets = {"as published": ("as", DATA)}
    for sd in BATCH_SDS:
        path = WORK / f"deepcytof_planted_batch_sd{sd}.parquet"
        if not path.is_file():
            planted(pd.read_parquet(DATA), sd).to_parquet(path, index=False)
        sets[f"planted batch effect (sd {sd})"] = (f"planted{sd}", path)
    return sets


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    lines = ["# Per-sample normalisation across CyTOF samples", "",
             "Command: `python bench/tabular/sample_norm.py` (machine: "
             f"{platform.platform()}, {os.cpu_count()} cores). DeepCyTOF multi-center, label 0 "
             f"removed, 4-fold CV over the 16 samples; models {MODELS}, networks over 3 seeds "
             "(their accuracy pools the seeds' predictions). Per-sample differences are paired "
             "over the 16 test samples.", ""]
    for title, (slug, data) in data_sets().items():
        cache = WORK / f"{slug}.json"
        if cache.is_file():
            runs = json.loads(cache.read_text())
        else:
            runs = {name: run(f"{slug}_{name}", data, chain) for name, chain in CHAINS.items()}
            cache.write_text(json.dumps(runs))
        lines += [f"## {title}", ""]
        lines += [f"- {name}: `{r['command']}` ({r['minutes']:.1f} min)"
                  for name, r in runs.items()]
        lines += ["", *table(runs), ""]
        print("\n".join(lines), flush=True)
    (HERE / "sample_norm.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
