"""Tuning benchmark: tuned MLP vs tuned LightGBM at equal budgets; pruning vs no pruning.

Datasets (the CLI does the work; this script runs it and reads the studies):

* lymphoma_flowcytometric, stratified cell split (no patient ids exist);
* deepcytof_multicenter, split by sample, on a fixed subsample of 4,000 labelled cells per
  sample (64,000 cells) so that 100-trial studies fit in the time of a benchmark run.

For each dataset:

1. MLP and LightGBM each tuned for the same wall-clock budget (``--timeout``), TPE with the
   Hyperband pruner; the best configuration is then tested once (3 seeds).
2. The MLP tuned for 100 trials without pruning (the reference best) and 100 trials with
   Hyperband; for each study, the elapsed time until its best-so-far validation accuracy came
   within 0.3 points of the no-pruning 100-trial best. With ``--repeats R`` the pair is run
   with sampler seeds 0..R-1 (``--sampler-seed``), since one seed's time-to-target is mostly
   the luck of its first draws; the report also gives tighter tolerances (0.1, 0.05 points).

Usage: python bench/tuning/run.py [--report-only] [--budget 10m] [--repeats 3]
       [--skip KEY,...] [--only KEY,...]   (needs ../shared/data; finished runs are kept)
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from optuna.trial import TrialState

HERE = Path(__file__).parent
WORK = HERE / "_work"
DATA = Path("../shared/data")
TOLERANCE = 0.003
TOLERANCES = (0.003, 0.001, 0.0005)  # 0.3 points (the issue's), and two tighter ones
#: what a reader of results.md must know about a recorded run
OLD_SAMPLER = ("recorded before commit caf0a92, with one `TPESampler(seed=0)` per process "
               "rather than per-trial seeds; one process, so the studies are valid, but a rerun "
               "draws other settings")
NOTES = {"lymphoma-mlp-budget": OLD_SAMPLER, "lymphoma-lightgbm-budget": OLD_SAMPLER,
         "lymphoma-mlp-none": OLD_SAMPLER,
         "lymphoma-mlp-hyperband": OLD_SAMPLER + "; stopped by hand after 11 trials to free the "
                                   "CPU"}


def subsample_deepcytof() -> Path:
    path = WORK / "deepcytof_4000_per_sample.parquet"
    if not path.is_file():
        df = pd.read_parquet(DATA / "deepcytof_multicenter" / "deepcytof_multicenter.parquet")
        df = df[df["label"] != 0]
        # GroupBy.sample keeps the grouping column (apply drops it in pandas >= 3)
        df = df.groupby("sample").sample(4000, random_state=0)
        df.to_parquet(path, index=False)
    return path


def datasets() -> dict[str, str]:
    return {
        "lymphoma": (f"{DATA}/lymphoma_flowcytometric/lymphoma_flowcytometric.parquet "
                     "--target label --test-size 0.15 --val-size 0.15"),
        "deepcytof": (f"{subsample_deepcytof()} --target label --groups sample "
                      "--transform arcsinh,standardize --cytometry mass"),
    }


def run(command: str) -> float:
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    subprocess.run(shlex.split(command), check=True)
    return time.perf_counter() - start


@functools.cache  # the report reads each study several times
def trials_of(out: Path, model: str) -> list:
    import optuna

    from cellbench.tune.study import TuneSettings, make_storage

    storage = make_storage(None, out, TuneSettings())
    return optuna.load_study(study_name=f"cellbench-{model}", storage=storage).get_trials()


def time_to_target(trials: list, target: float) -> tuple[float | None, int | None]:
    """Seconds from the first trial's start until best-so-far >= target (and the trial)."""
    trials = [t for t in trials if t.datetime_start is not None]
    start = min(t.datetime_start for t in trials)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                  key=lambda t: t.datetime_complete)
    for t in done:
        if t.value >= target:
            return (t.datetime_complete - start).total_seconds(), t.number
    return None, None


def repeats_section(name: str, n_trials: int, repeats: int, walls: dict) -> list[str]:
    """Time-to-target of the pruning pair over sampler seeds, at several tolerances."""
    pairs = [(seed, f"{name}-mlp-none" + (f"-s{seed}" if seed else ""),
              f"{name}-mlp-hyperband" + (f"-s{seed}" if seed else "")) for seed in range(repeats)]
    pairs = [(seed, a, b) for seed, a, b in pairs if a in walls and b in walls]
    if len(pairs) < 2:
        return []
    studies = {key: trials_of(WORK / key, "mlp") for _, a, b in pairs for key in (a, b)}
    best = max(t.value for _, a, _ in pairs for t in studies[a]
               if t.state == TrialState.COMPLETE)
    lines = ["", f"### Pruning vs no pruning over {len(pairs)} sampler seeds", "",
             f"Each seed: {n_trials} trials without pruning and {n_trials} with Hyperband, same "
             "`--sampler-seed`. One target for all: the best of the "
             f"{len(pairs)} no-pruning studies ({best:.4f}) minus the tolerance. Cells: seconds "
             "to reach it (trial number); ratio = Hyperband / none.", "",
             "| sampler seed | " + " | ".join(
                 f"none, {tol * 100:g} pts | Hyperband, {tol * 100:g} pts | ratio"
                 for tol in TOLERANCES) + " |",
             "|---:|" + "---:|" * (3 * len(TOLERANCES))]
    ratios: dict[float, list[float]] = {tol: [] for tol in TOLERANCES}
    sums = {tol: [0.0, 0.0] for tol in TOLERANCES}
    for seed, a, b in pairs:
        cells = [str(seed)]
        for tol in TOLERANCES:
            (tn, nn), (th, nh) = (time_to_target(studies[k], best - tol) for k in (a, b))
            cells += [f"{tn:.0f} s ({nn})" if tn is not None else "not reached",
                      f"{th:.0f} s ({nh})" if th is not None else "not reached"]
            if tn is not None and th is not None:
                ratios[tol].append(th / tn)
                sums[tol][0] += tn
                sums[tol][1] += th
                cells.append(f"{th / tn:.0%}")
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for tol in TOLERANCES:
        r = ratios[tol]
        if r:
            lines.append(f"- within {tol * 100:g} points: median ratio **{np.median(r):.0%}** "
                         f"over {len(r)} seeds; total time to target {sums[tol][1]:.0f} s with "
                         f"Hyperband vs {sums[tol][0]:.0f} s without "
                         f"({sums[tol][1] / sums[tol][0]:.0%}).")
        else:
            lines.append(f"- within {tol * 100:g} points: no seed reached it both ways.")
    first = sum(time_to_target(studies[a], best - TOLERANCES[0])[1] == 0 for _, a, _ in pairs)
    if first:
        lines += ["", f"In {first} of {len(pairs)} seeds the very first trial (the same settings "
                  "in both studies of a pair) was already within 0.3 points, so at that "
                  "tolerance the ratio is the first trial's time in one study over the other: "
                  "the noise of a shared machine, not the pruner (reporting to Hyperband and "
                  "asking it whether to prune costs under 1 ms per epoch: "
                  "pruner_overhead.md). Pruning can only shorten the search for a target that "
                  "takes more than a few trials to reach."]
    tight = ratios[TOLERANCES[-1]]
    if tight and min(tight) > 0.5:
        lines += ["", f"At {TOLERANCES[-1] * 100:g} points, where the first trial is often not "
                  "enough, Hyperband was not consistently faster either (ratios "
                  + ", ".join(f"{r:.0%}" for r in tight) + "; not reached in "
                  f"{len(pairs) - len(tight)} seed(s)). The best configurations differ by a "
                  "few validation cells, a difference the first epochs, on which Hyperband "
                  "stops trials, cannot be expected to predict. What pruning buys on these data "
                  "is trials per minute (see the throughput line above), not an earlier hit."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--skip", default="", help="comma-separated runs not to do, e.g. "
                        "deepcytof-mlp-none,deepcytof-mlp-hyperband")
    parser.add_argument("--only", default="", help="comma-separated runs to do (others are "
                        "not run, but reported if finished earlier)")
    parser.add_argument("--repeats", type=int, default=1, help="sampler seeds of the "
                        "pruning pair (seed 0 is the 100-trial pair above)")
    args = parser.parse_args()
    skip = {k for k in args.skip.split(",") if k}
    only = {k for k in args.only.split(",") if k}
    WORK.mkdir(exist_ok=True)
    sets = datasets()
    common = "--max-epochs 20 --quiet --final-seeds 3"
    commands = {}
    for name, data in sets.items():
        for model in ("mlp", "lightgbm"):
            commands[f"{name}-{model}-budget"] = (
                f"cellbench tune {data} -m {model} --trials 100000 --timeout {args.budget} "
                f"--pruner hyperband {common} --out {WORK}/{name}-{model}-budget")
        for pruner in ("none", "hyperband"):
            commands[f"{name}-mlp-{pruner}"] = (
                f"cellbench tune {data} -m mlp --trials {args.trials} --pruner {pruner} "
                f"{common} --out {WORK}/{name}-mlp-{pruner}")
        for seed in range(1, args.repeats):
            for pruner in ("none", "hyperband"):  # the test part is not what this measures
                commands[f"{name}-mlp-{pruner}-s{seed}"] = (
                    f"cellbench tune {data} -m mlp --trials {args.trials} --pruner {pruner} "
                    f"--sampler-seed {seed} --max-epochs 20 --quiet --final-seeds 1 "
                    f"--out {WORK}/{name}-mlp-{pruner}-s{seed}")
    walls_file = WORK / "walls.json"
    if args.report_only:
        walls = json.loads(walls_file.read_text())
    else:
        walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
        for key, cmd in commands.items():
            if key in walls or key in skip or (only and key not in only):
                continue  # finished in an earlier invocation, or not wanted
            out = WORK / key
            if out.exists():
                shutil.rmtree(out)
            seconds = run(cmd)
            # re-read: another invocation (with a different --skip) may share the file
            walls = {**(json.loads(walls_file.read_text()) if walls_file.is_file() else {}),
                     **walls, key: seconds}
            walls_file.write_text(json.dumps(walls))

    lines = ["# Tuning benchmark", "", "Produced by `python bench/tuning/run.py "
             f"--budget {args.budget} --trials {args.trials} --repeats {args.repeats}"
             + (f" --skip {args.skip}" if args.skip else "") + "`. Commands, verbatim:", ""]
    lines += [f"- `{cmd}` ({walls[key] / 60:.1f} min wall"
              + (f"; {NOTES[key]}" if key in NOTES else "") + ")" if key in walls else
              f"- `{cmd}` (**not run** in this recording)" for key, cmd in commands.items()]
    for name in sets:
        lines += ["", f"## {name}", "", "### Tuned MLP vs tuned LightGBM, same budget "
                  f"({args.budget} of tuning each, then 3 seeds on the test part)", "",
                  "| model | trials (complete / pruned) | best validation acc. | test accuracy "
                  "%, first seed (95% CI) | mean ± sd over 3 seeds | tuned vs default |",
                  "|---|---:|---:|---:|---:|---|"]
        for model in ("mlp", "lightgbm"):
            if f"{name}-{model}-budget" not in walls:
                lines.append(f"| {model} | not run in this recording | | | | |")
                continue
            res = json.loads((WORK / f"{name}-{model}-budget" / "tune_results.json").read_text())
            tuned = next(m for m in res["final"] if m["model"] == "tuned")
            acc = tuned["test"]["accuracy"]
            verdict = res["tuned_vs_default"]["rows"][0]["verdict"].split("->")[-1].strip()
            spread = tuned.get("across_units", {}).get("accuracy")
            spread_text = (f"{spread['mean'] * 100:.2f} ± {spread['sd'] * 100:.2f}" if spread
                           else "-")
            lines.append(f"| {model} | {res['trials']['complete']} / {res['trials']['pruned']} "
                         f"| {res['best']['value']:.4f} | {acc['value'] * 100:.2f} "
                         f"({acc['ci'][0] * 100:.2f}-{acc['ci'][1] * 100:.2f}) | {spread_text} "
                         f"| {verdict} |")
        if not all(f"{name}-mlp-{p}" in walls for p in ("none", "hyperband")):
            lines += ["", f"### Pruning vs no pruning (MLP, {args.trials} trials each)", "",
                      "Not run in this recording (see the commands above)."]
            continue
        ref_trials = trials_of(WORK / f"{name}-mlp-none", "mlp")
        best = max(t.value for t in ref_trials if t.state == TrialState.COMPLETE)
        target = best - TOLERANCE
        lines += ["", f"### Pruning vs no pruning (MLP, {args.trials} trials each)", "",
                  f"No-pruning best validation accuracy {best:.4f}; target {target:.4f} "
                  "(within 0.3 points).", "",
                  "| pruner | trials complete / pruned | time to target | at trial | "
                  "total time |", "|---|---:|---:|---:|---:|"]
        times = {}
        for pruner in ("none", "hyperband"):
            trials = trials_of(WORK / f"{name}-mlp-{pruner}", "mlp")
            seconds, number = time_to_target(trials, target)
            times[pruner] = seconds
            complete = sum(t.state == TrialState.COMPLETE for t in trials)
            pruned = sum(t.state == TrialState.PRUNED for t in trials)
            starts = [t.datetime_start for t in trials if t.datetime_start]
            ends = [t.datetime_complete for t in trials if t.datetime_complete]
            total = (max(ends) - min(starts)).total_seconds()
            stopped = (f" (stopped after {complete + pruned} of {args.trials})"
                       if complete + pruned < args.trials else "")
            lines.append(f"| {pruner} | {complete} / {pruned}{stopped} | "
                         + (f"{seconds:.0f} s" if seconds is not None else "not reached")
                         + f" | {number if number is not None else '-'} | {total:.0f} s |")
        values = np.array([t.value for t in ref_trials if t.state == TrialState.COMPLETE])
        first = min(t.datetime_start for t in ref_trials)
        first_done = min(t.datetime_complete for t in ref_trials if t.datetime_complete)
        lines += ["", f"How flat the landscape is: the {len(values)} complete no-pruning trials "
                  f"score median {np.median(values):.4f}, 10th percentile "
                  f"{np.percentile(values, 10):.4f}, best {best:.4f}; of them "
                  + ", ".join(f"{np.mean(values >= best - tol):.0%} within {tol * 100:g}"
                              for tol in TOLERANCES) + " points of the best. "
                  f"The first trial alone took {(first_done - first).total_seconds():.0f} s."]
        gaps = np.diff(np.unique(values))
        if gaps.size:  # accuracies are k / n: the smallest step between them is one cell
            n_val = round(1 / gaps.min(), -1)  # float32 scores: the nearest ten
            lines[-1] += (f" One validation cell is about {100 / n_val:.3f} points (about "
                          f"{n_val:,.0f} validation cells), so 0.3 points is {0.003 * n_val:.0f} "
                          "cells.")
        done = {p: sorted(t.datetime_complete for t in trials_of(WORK / f"{name}-mlp-{p}", "mlp")
                          if t.datetime_complete) for p in ("none", "hyperband")}
        k = min(len(v) for v in done.values())
        span = {p: (done[p][k - 1] - min(t.datetime_start for t in trials_of(
            WORK / f"{name}-mlp-{p}", "mlp"))).total_seconds() for p in done}
        lines += ["", f"Throughput over the first {k} finished trials of each study: "
                  f"{span['none']:.0f} s without pruning, {span['hyperband']:.0f} s with "
                  f"Hyperband ({span['none'] / span['hyperband']:.1f}x as many trials per "
                  "minute)."]
        if times["none"] and times["hyperband"]:
            ratio = times["hyperband"] / times["none"]
            lines += ["", f"Pruning reached the target in **{ratio:.0%}** of the no-pruning "
                      "time (acceptance: <= 50 % on at least one dataset)."]
            _, number = time_to_target(ref_trials, target)
            if ratio > 0.5 and number is not None and number < 10:
                lines += ["", f"Why not faster: the no-pruning study hit the target with trial "
                          f"{number}, one of TPE's 10 random start-up trials. Both studies use "
                          "the same sampler seed, so their first trials have the same "
                          "settings, and a trial good enough to reach the target is one the "
                          "pruner rightly lets finish. When most configurations are within "
                          "the tolerance (see above), time-to-target measures the luck of the "
                          "first draws, not the pruner; what pruning buys on such data is "
                          "the throughput above. The repeats below, when recorded, check this "
                          "over other sampler seeds and tighter tolerances."]
        elif times["hyperband"] is None:
            lines += ["", "With pruning the target was **not reached** in "
                      f"{args.trials} trials."]
        lines += repeats_section(name, args.trials, args.repeats, walls)
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
