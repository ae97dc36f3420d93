"""DeepCyTOF across samples: the stronger networks, and how high any model can go (issue 13).

Issue 13 asks for a cellbench network at >= 98.8 % mean over the 4 folds of DeepCyTOF
multi-center by sample, better than LightGBM and LDA with a significant paired test over the
16 samples. This script measures three things:

1. **The acceptance run**: the protocol of ``bench/cytometry`` (label 0 removed, 4-fold CV
   over the 16 samples, arcsinh cofactor 5 and standardisation) with the registry's tabular
   networks (``mlp``, ``mlp-plr``, ``tabm``) over 3 seeds, LightGBM as the reference.
2. **The same models without any cross-sample shift**: 4-fold CV over cells at random (the
   sample column dropped), so every test sample's own cells are in training. What a model
   scores here bounds what per-sample normalisation or domain adaptation can add.
3. **Events that carry no marker signal**: cells whose lineage markers (everything but CD45
   and CD14) are all near zero. Gating gave them all four labels; no function of the 8
   markers can tell them apart, so every such cell outside its pooled majority label is an
   error of every model. Counted per sample, with how many of each model's errors they are.

Usage: python bench/cytometry/ceiling.py   (needs ../shared/data; about 45 minutes on 2 cores;
a run whose results.json is in _work/ is reused: delete it to redo it)
Writes bench/cytometry/ceiling.md.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellbench.evaluate.stats import wilcoxon_signed_rank

HERE = Path(__file__).parent
WORK = HERE / "_work" / "ceiling"
DATA = Path("../shared/data/deepcytof_multicenter/deepcytof_multicenter.parquet")
MARKERS = ["CCR6", "CD20", "CD45", "CD14", "CD16", "CD8", "CD3", "CD4"]
LINEAGE = ["CCR6", "CD20", "CD16", "CD8", "CD3", "CD4"]  # every marker but CD45 and CD14
EMPTY_BELOW = 0.5  # arcsinh(x / 5): a raw intensity under about 2.6
TARGET_PERCENT = 98.8
COMMON = ("--target label --exclude-labels 0 --transform arcsinh,standardize --cytometry mass "
          "--cv 4 --max-epochs 30 --patience 5 --batch-size 512 --quiet")
RUNS = {
    "by_sample": f"--groups sample --models lda,lightgbm,mlp,mlp-plr,tabm --seeds 3 "
                 f"--reference lightgbm {COMMON}",
    "by_cell": f"--drop sample --models lda,lightgbm,mlp,mlp-plr {COMMON}",
}


def run(name: str) -> dict:
    out = WORK / name
    command = f"cellbench compare {DATA} {RUNS[name]} --out {out}"
    timing = WORK / f"{name}.minutes"
    if not (out / "results.json").is_file():
        start = time.perf_counter()
        subprocess.run(shlex.split(command), check=True)
        timing.write_text(f"{(time.perf_counter() - start) / 60:.1f}")
    results = json.loads((out / "results.json").read_text())
    return {"command": command, "minutes": timing.read_text() if timing.is_file() else "?",
            "results": results, "models": {m["name"]: m for m in results["models"]}}


def fold_mean(model: dict) -> tuple[float, float]:
    spread = (model.get("across_units") or {}).get("accuracy") or {}
    return 100 * spread.get("mean", float("nan")), 100 * spread.get("sd", float("nan"))


def per_sample(model: dict) -> pd.Series:
    groups = model["test"]["groups"]["per_group"]
    return pd.Series({int(g): v["cell_accuracy"] for g, v in groups.items()}).sort_index()


def model_table(r: dict, by_sample: bool) -> list[str]:
    head = "| model | params | accuracy % (95% CI) | mean ± sd over folds % | fit s per unit |"
    rule = "|---|---:|---:|---:|---:|"
    if by_sample:  # cellbench's own paired tests (Holm-adjusted), and one against LDA
        head += " vs lightgbm: points [95% CI], Holm p | vs lda: points, Wilcoxon p |"
        rule += "---|---|"
        tests = {row["model"]: row for row in r["results"]["comparisons"]["rows"]}
        lda = per_sample(r["models"]["lda"])
    lines = [head, rule]
    for name, m in sorted(r["models"].items(), key=lambda kv: -fold_mean(kv[1])[0]):
        acc = m["test"]["accuracy"]
        mean, sd = fold_mean(m)
        row = (f"| {name} | {m['n_params']:,} | {100 * acc['value']:.2f} "
               f"({100 * acc['ci'][0]:.2f}-{100 * acc['ci'][1]:.2f}) | {mean:.2f} ± {sd:.2f} | "
               f"{m['fit_seconds']:.1f} |")
        if by_sample:
            t = tests.get(name)
            row += (" reference |" if t is None else
                    f" {100 * t['difference']:+.3f} [{100 * t['ci'][0]:+.3f}, "
                    f"{100 * t['ci'][1]:+.3f}], {t['p_adjusted']:.3g} |")
            if name == "lda":
                row += " |"
            else:
                d = (per_sample(m) - lda).to_numpy()
                row += f" {100 * d.mean():+.3f}, {wilcoxon_signed_rank(d).p_value:.3g} |"
        lines.append(row)
    return lines


def empty_events(frame: pd.DataFrame) -> tuple[np.ndarray, int, list[str]]:
    x = np.arcsinh(frame[MARKERS].to_numpy(np.float64) / 5)
    empty = (x[:, [MARKERS.index(m) for m in LINEAGE]] < EMPTY_BELOW).all(axis=1)
    counts = pd.crosstab(frame["sample"][empty], frame["label"][empty])
    pooled = counts.sum()
    majority = pooled.idxmax()
    unavoidable = int(empty.sum() - counts[majority].sum())
    lines = [
        f"{int(empty.sum()):,} of {len(frame):,} labelled cells ({100 * empty.mean():.2f} %) "
        f"have every lineage marker ({', '.join(LINEAGE)}) under arcsinh(x/5) = {EMPTY_BELOW} "
        "(a raw intensity under about 2.6): debris, dead cells or empty events that the "
        "gates still assigned. Their labels, per sample:", "",
        "| sample | " + " | ".join(f"label {c}" for c in counts.columns) + " | all cells |",
        "|---:|" + "---:|" * (len(counts.columns) + 1)]
    sizes = frame.groupby("sample").size()
    for s, row in counts.iterrows():
        lines.append(f"| {s} | " + " | ".join(str(v) for v in row) + f" | {sizes[s]:,} |")
    lines += [
        "| all | " + " | ".join(str(v) for v in pooled) + f" | {len(frame):,} |", "",
        f"Pooled, label {majority} is their most common label "
        f"({100 * pooled[majority] / pooled.sum():.0f} %). The markers give a classifier "
        f"nothing else to go on, so at best it calls them all label {majority}: the other "
        f"**{unavoidable:,} cells ({100 * unavoidable / len(frame):.2f} points of accuracy) are "
        "errors of every model** (per sample the best constant does "
        f"no better: {int((counts.sum(axis=1) - counts.max(axis=1)).sum()):,}).", ""]
    return empty, unavoidable, lines


def errors_table(frame: pd.DataFrame, empty: np.ndarray, name: str) -> tuple[int, list[str]]:
    """Per test sample: accuracy, errors, and how many of the errors are empty events."""
    classes = np.sort(frame["label"].unique())
    wrong = np.zeros(len(frame), bool)
    seen = np.zeros(len(frame), bool)
    unit_dir = WORK / "by_sample" / "units" / name / "seed0"
    for path in sorted(unit_dir.glob("fold*/predictions.npz")):
        with np.load(path) as z:
            index, proba = z["test_index"], z["test_proba"]
        seen[index] = True
        wrong[index] = classes[proba.argmax(1)] != frame["label"].to_numpy()[index]
    if not seen.all():
        raise SystemExit(f"{unit_dir}: the folds' predictions cover {seen.sum()} of "
                         f"{len(frame)} cells; rerun the by-sample comparison.")
    lines = [f"`{name}`, seed 0, per test sample:", "",
             "| sample | accuracy % | errors | of them empty events | accuracy % without "
             "empty events |", "|---:|---:|---:|---:|---:|"]
    samples = frame["sample"].to_numpy()
    for s in np.unique(samples):
        m = samples == s
        lines.append(f"| {s} | {100 * (1 - wrong[m].mean()):.2f} | {wrong[m].sum():,} | "
                     f"{(wrong & empty)[m].sum():,} | "
                     f"{100 * (1 - wrong[m & ~empty].mean()):.2f} |")
    lines.append(f"| all | {100 * (1 - wrong.mean()):.2f} | {wrong.sum():,} | "
                 f"{(wrong & empty).sum():,} | {100 * (1 - wrong[~empty].mean()):.2f} |")
    return int((wrong & empty).sum()), [*lines, ""]


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    frame = pd.read_parquet(DATA)
    frame = frame[frame["label"] != 0].reset_index(drop=True)  # --exclude-labels 0 keeps order
    runs = {name: run(name) for name in RUNS}
    by_sample, by_cell = runs["by_sample"], runs["by_cell"]
    best = max((n for n in by_sample["models"] if n not in ("lda", "lightgbm")),
               key=lambda n: fold_mean(by_sample["models"][n])[0])
    best_mean = fold_mean(by_sample["models"][best])[0]
    ceiling = max(fold_mean(m)[0] for m in by_cell["models"].values())
    empty, unavoidable, empty_lines = empty_events(frame)
    best_empty_errors, error_lines = errors_table(frame, empty, best)
    lda_mean = fold_mean(by_sample["models"]["lda"])[0]
    lgbm_mean = fold_mean(by_sample["models"]["lightgbm"])[0]
    lines = [
        "# DeepCyTOF across samples: the networks, and how high any model can go", "",
        f"Produced by `python bench/cytometry/ceiling.py` on {platform.platform()} "
        f"({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}). 693,643 labelled cells x 8 markers, label 0 removed.", "",
        "## 1. The acceptance run: 4-fold CV over the 16 samples, 3 seeds", "",
        f"`{by_sample['command']}` ({by_sample['minutes']} min)", "",
        "Accuracy pools every seed's test predictions; the per-fold mean and sd are over "
        "seeds x folds. Both paired tests are over the 16 test samples: against LightGBM, "
        "cellbench's own (Wilcoxon signed-rank, Holm-adjusted over the models); against LDA, "
        "a Wilcoxon signed-rank test on each sample's accuracy pooled over the seeds.", "",
        *model_table(by_sample, by_sample=True), "",
        f"Best network: **{best}, {best_mean:.2f} %** mean over folds; the target is "
        f"{TARGET_PERCENT} % ({TARGET_PERCENT - best_mean:+.2f} points to go).", "",
        "## 2. The same models with no cross-sample shift: 4-fold CV over cells at random", "",
        f"`{by_cell['command']}` ({by_cell['minutes']} min)", "",
        *model_table(by_cell, by_sample=False), "",
        f"With every test sample's own cells in training, the best model scores "
        f"**{ceiling:.2f} %**: {ceiling - best_mean:+.2f} points above the best network "
        "across samples. That is all that per-sample normalisation, alignment or any other "
        "remedy for cross-sample shift could add here; "
        f"{TARGET_PERCENT} % is {TARGET_PERCENT - ceiling:+.2f} points above what these models "
        "reach without any shift.", "",
        "## 3. Events without marker signal", "",
        *empty_lines,
        *error_lines,
        "## Reading", "",
        f"- **Better than LightGBM and LDA, significantly, by little.** `{best}` is ahead of "
        f"LightGBM ({lgbm_mean:.2f} %) and LDA ({lda_mean:.2f} %) in the paired tests over the "
        "16 samples above (a test at p < 0.05 is a difference in the same direction on most "
        "samples, not a large one).",
        f"- **{TARGET_PERCENT} % is not reached** ({best_mean:.2f} %), and the runs say why: "
        f"without any cross-sample shift the same models reach {ceiling:.2f} %, so "
        f"{TARGET_PERCENT} % asks for more than removing the shift entirely would give.",
        f"- **Part of the error is unavoidable.** {unavoidable:,} cells without marker signal "
        f"carry other labels than the one a classifier can give them; `{best}` errs on "
        f"{best_empty_errors:,} such cells" + (
            ", exactly that floor: it already calls them all the best label."
            if best_empty_errors == unavoidable else "."),
        "- Left alone: removing those events from the test parts, or relabelling them, would "
        "raise every model's accuracy, but it changes the published protocol that the target "
        "refers to.",
    ]
    (HERE / "ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
