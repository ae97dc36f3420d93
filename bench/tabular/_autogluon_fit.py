"""Run inside the AutoGluon environment (not cellbench's): fit TabularPredictor on the given
rows and write test probabilities. Called by bench/tabular/autogluon_lymphoma.py."""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np
import pandas as pd
from autogluon.tabular import TabularPredictor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--time-limit", type=float, required=True)
    ap.add_argument("--presets", default="medium_quality")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    df = pd.read_parquet(args.data)
    split = np.load(args.split)
    train, val, test = (df.iloc[split[k]].reset_index(drop=True)
                        for k in ("train", "val", "test"))
    shutil.rmtree(args.workdir, ignore_errors=True)
    start = time.perf_counter()
    # validation rows are AutoGluon's tuning data, as they are cellbench's early-stopping rows
    predictor = TabularPredictor(label="label", path=args.workdir, verbosity=1).fit(
        train, tuning_data=val, time_limit=args.time_limit, presets=args.presets,
        num_cpus=2, num_gpus=0)
    fit_seconds = time.perf_counter() - start
    proba = predictor.predict_proba(test.drop(columns=["label"]))
    classes = [c for c in proba.columns]
    np.savez(args.out, proba=proba.to_numpy(np.float64), classes=np.asarray(classes))
    board = predictor.leaderboard(silent=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"fit_seconds": fit_seconds, "time_limit": args.time_limit,
                   "presets": args.presets, "best": predictor.model_best,
                   "models": board["model"].tolist()}, f)


if __name__ == "__main__":
    main()
