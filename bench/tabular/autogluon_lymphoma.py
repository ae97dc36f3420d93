"""AutoGluon beside cellbench on lymphoma, on the same split (issue 13, deliverable 5).

AutoGluon (``autogluon.tabular``) is never a cellbench dependency: it lives in its own virtual
environment (``AG_PYTHON``, default /work/agvenv/bin/python; made with ``python -m venv``,
``pip install torch==2.13.0 "autogluon.tabular[lightgbm,catboost,xgboost]"``). This script
runs in cellbench's environment:

1. reads the split of ``bench/tabular/lymphoma_nets.py``'s run (its units' test and
   validation rows; training rows are the rest) and writes it for AutoGluon;
2. fits AutoGluon (``medium_quality``; validation rows as its tuning data) with a time limit
   equal to cellbench's best entry's training time per run, and with 10 times that;
3. tests each against cellbench's ``mlp`` (3 seeds) and LightGBM with the statistics cellbench
   reports (Wilson CI; seeds x cells t-test; McNemar for one run).

Usage: python bench/tabular/autogluon_lymphoma.py   (after bench/tabular/lymphoma_nets.py)
Writes bench/tabular/autogluon_lymphoma.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from cellbench.evaluate.stats import mcnemar_exact, seed_cell_ttest, wilson_ci

HERE = Path(__file__).parent
RUN = HERE / "_work" / "lymphoma"
WORK = HERE / "_work" / "autogluon"
DATA = Path("../shared/data/lymphoma_flowcytometric/lymphoma_flowcytometric.parquet")
AG_PYTHON = os.environ.get("AG_PYTHON", "/work/agvenv/bin/python")


def unit_predictions(model: str) -> list[dict]:
    out = []
    for path in sorted((RUN / "units" / model).glob("seed*/holdout/predictions.npz")):
        with np.load(path) as d:
            out.append({k: d[k] for k in d.files})
    return out


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    results = json.loads((RUN / "results.json").read_text())
    data = json.loads((RUN / "data.json").read_text())
    classes = data["classes"]
    mlp, lgbm = unit_predictions("mlp"), unit_predictions("lightgbm")
    test, val = mlp[0]["test_index"], mlp[0]["val_index"]
    assert all(np.array_equal(u["test_index"], test) for u in mlp + lgbm)
    train = np.setdiff1d(np.arange(data["n"]), np.concatenate([test, val]))
    np.savez(WORK / "split.npz", train=train, val=val, test=test)
    import pandas as pd
    y = pd.read_parquet(DATA, columns=["label"])["label"].to_numpy()[test]
    code = {c: i for i, c in enumerate(classes)}
    y_code = np.array([code[v] for v in y])

    def correct(proba: np.ndarray) -> np.ndarray:
        return proba.argmax(1) == y_code

    mlp_correct = np.stack([correct(u["test_proba"]) for u in mlp])
    lgbm_correct = correct(lgbm[0]["test_proba"])
    fit = {m["model"]: m["fit_seconds"] for m in results["models"]}
    budget = max(fit["mlp"], 1.0)  # the best cellbench entry's training time per run
    runs = []
    for limit in (budget, 10 * budget):
        out = WORK / f"ag_{limit:.0f}s.npz"
        subprocess.run([AG_PYTHON, str(HERE / "_autogluon_fit.py"), "--data", str(DATA),
                        "--split", str(WORK / "split.npz"), "--time-limit", f"{limit:.1f}",
                        "--out", str(out), "--workdir", str(WORK / f"ag_{limit:.0f}s")],
                       check=True)
        with np.load(out) as d:
            order = [list(d["classes"]).index(str(c)) if str(c) in list(d["classes"])
                     else list(d["classes"].astype(int)).index(c) for c in classes]
            proba = d["proba"][:, order]
        meta = json.loads(Path(str(out) + ".json").read_text())
        runs.append((limit, correct(proba), meta))
    n = len(test)
    lines = ["# AutoGluon beside cellbench on lymphoma (issue 13)", "",
             f"`python bench/tabular/autogluon_lymphoma.py` on {platform.platform()} (2 cores). "
             f"Same split as `bench/tabular/lymphoma_nets.md` (train {len(train):,}, validation "
             f"{len(val):,} as AutoGluon's tuning data, test {n:,} cells; by cell, the file has "
             "no patient ids).", "",
             "| entry | training time per run | test accuracy % (95% CI) |", "|---|---:|---:|"]

    def row(name: str, seconds: float, c: np.ndarray) -> str:
        lo, hi = wilson_ci(int(c.sum()), len(c))
        return (f"| {name} | {seconds:.1f} s | {100 * c.mean():.2f} "
                f"({100 * lo:.2f}-{100 * hi:.2f}) |")

    per_seed = ", ".join(f"{100 * c.mean():.2f}" for c in mlp_correct)
    lines.append(f"| cellbench mlp, 3 seeds (per seed: {per_seed}) | {fit['mlp']:.1f} s | "
                 f"{100 * mlp_correct.mean():.2f} (mean) |")
    lines.append(row("cellbench lightgbm", fit["lightgbm"], lgbm_correct))
    for limit, c, meta in runs:
        lines.append(row(f"AutoGluon {meta['presets']}, time_limit {limit:.0f} s (best: "
                         f"{meta['best']}, {len(meta['models'])} models)", meta["fit_seconds"],
                         c))
    lines += ["", "Paired tests on the same test cells (cellbench's statistics):", ""]
    for limit, c, _ in runs:
        t = seed_cell_ttest(mlp_correct, np.tile(c, (len(mlp_correct), 1)))
        m = mcnemar_exact(lgbm_correct, c)
        lines.append(f"- mlp (3 seeds) vs AutoGluon {limit:.0f} s: {100 * t.difference:+.2f} "
                     f"points [{100 * t.ci[0]:+.2f}, {100 * t.ci[1]:+.2f}], p = {t.p_value:.3g} "
                     "(seeds x cells t-test)")
        lines.append(f"- lightgbm vs AutoGluon {limit:.0f} s: {100 * m.difference:+.2f} points "
                     f"[{100 * m.ci[0]:+.2f}, {100 * m.ci[1]:+.2f}], p = {m.p_value:.3g} "
                     "(McNemar exact)")
    (HERE / "autogluon_lymphoma.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
