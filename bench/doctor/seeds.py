"""The users' stories answered by ``cellbench doctor`` (issue 10, item 6), on real data.

Each case runs the doctor on a public dataset from ``../shared/data`` with the user's own
setting, subsampled so that the whole script fits a 2-core machine in under an hour (the
subsample is written to ``_work/`` and named in the output). Recorded in ``seeds.md``: the
command, the wall time, the findings in order, the fixes and the final model.

    python bench/doctor/seeds.py                 # every case
    python bench/doctor/seeds.py seed000 healthy
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = HERE / "_work" / "seeds"


def _deepcytof(per_sample: int) -> Path:
    path = WORK / f"deepcytof_{per_sample}.parquet"
    if not path.is_file():
        frame = pd.read_parquet(DATA / "deepcytof_multicenter" / "deepcytof_multicenter.parquet")
        frame = frame[frame.label != 0]
        frame = frame.groupby("sample").sample(n=per_sample, random_state=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.reset_index(drop=True).to_parquet(path)
    return path


def _malaria(n_slides: int) -> Path:
    path = WORK / f"malaria_{n_slides}slides.npz"
    if not path.is_file():
        with np.load(DATA / "nih_malaria_50px_gray" / "malaria_50x50_gray.npz",
                     allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        slides = np.unique(arrays["slide_id"])
        keep = np.isin(arrays["slide_id"], np.random.default_rng(0).choice(slides, n_slides,
                                                                            replace=False))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: (v[keep] if len(v) == len(keep) else v)
                          for k, v in arrays.items()})
    return path


def _lymphoma(n: int) -> Path:
    path = WORK / f"lymphoma_{n}.parquet"
    if not path.is_file():
        frame = pd.read_parquet(DATA / "lymphoma_flowcytometric" /
                                "lymphoma_flowcytometric.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.sample(n=n, random_state=0).reset_index(drop=True).to_parquet(path)
    return path


#: case -> (story, data, cellbench doctor arguments)
CASES = {
    "seed000": ("seed 000: the post's 1D-CNN as its code has it (dropout 0.5/0.9, ASGD lr "
                "0.01) on DeepCyTOF, 4-fold CV by sample (16 samples, 2,000 labelled cells "
                "each)", lambda: _deepcytof(2000),
                ["--target", "label", "--groups", "sample", "--transform",
                 "arcsinh,standardize", "--cytometry", "mass", "--cv", "4", "--model",
                 "cnn1d-seed(dropout=0.5/0.9,optimizer=asgd,lr=0.01)", "--max-epochs", "20",
                 "--patience", "4", "--batch-size", "1024"]),
    "seed004": ("seed 004: reduced VGG-11 on raw 0-255 pixels with RMSprop, NIH malaria 50 px "
                "by slide (60 slides), holdout", lambda: _malaria(60),
                ["--groups", "slide_id", "--image-norm", "none", "--model",
                 "vgg11(optimizer=rmsprop,lr=0.001)", "--max-epochs", "10", "--patience", "10",
                 "--batch-size", "128", "--val-size", "0.15", "--test-size", "0.15"]),
    "seed002": ("seed 002: validation accuracy stagnates on an imbalanced cytometry table "
                "(FlowSOM mouse sample, 7 gates from 39 % to 1.6 %, one sample: cells at random)",
                lambda: DATA / "flowsom_68983" / "flowsom_68983.parquet",
                ["--target", "label", "--drop", "Time", "--model", "cnn1d-seed",
                 "--max-epochs", "20", "--seeds", "3"]),
    "healthy": ("healthy control: the default MLP on lymphoma (20,000 cells, cells at random, "
                "3 seeds)", lambda: _lymphoma(20_000),
                ["--target", "label", "--model", "mlp", "--max-epochs", "30", "--seeds", "3"]),
}
SEED003_MODELS = ("ann=ann-seed003,cnn=cnn-seed003,cnn+dropout=cnn-seed003(dropout=0.5),"
                  "cnn+l2=cnn-seed003(weight_decay=0.01),gap=gap-seed003,"
                  "gap+bn+dropout=gap-seed003-wide")


def _cli(args: list[str]) -> tuple[str, float]:
    from typer.testing import CliRunner

    from cellbench.cli import app

    start = time.perf_counter()
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"cellbench {' '.join(args)} failed:\n{result.output}")
    return result.output, time.perf_counter() - start


def run(case: str) -> dict:
    out = WORK / case
    if case == "seed003":
        data = _malaria(60)
        compare = ["compare", str(data), "--groups", "slide_id", "--models", SEED003_MODELS,
                   "--reference", "cnn", "--max-epochs", "10", "--batch-size", "128",
                   "--val-size", "0.15", "--test-size", "0.15", "--out", str(out / "compare"),
                   "--quiet"]
        _, compare_seconds = _cli(compare)
        args = ["doctor", str(out / "compare"), "--quiet"]
        output, seconds = _cli(args)
        story = ("seed 003: the homework's ladder (ANN, CNN, +dropout, +L2, GAP, GAP+BN+dropout)"
                 " compared on NIH malaria 50 px by slide (60 slides), then `cellbench doctor` "
                 "on that run")
        return {"case": case, "story": story, "command": "cellbench " + " ".join(compare)
                + "\ncellbench " + " ".join(args), "seconds": seconds,
                "compare_seconds": compare_seconds, "output": output}
    story, data, extra = CASES[case]
    args = ["doctor", str(data()), *extra, "--budget", "30m", "--out", str(out), "--quiet"]
    output, seconds = _cli(args)
    return {"case": case, "story": story, "command": "cellbench " + " ".join(args),
            "seconds": seconds, "output": output}


def write(rows: dict[str, dict]) -> None:
    (HERE / "seeds.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    lines = ["# The users' stories answered by `cellbench doctor`", "",
             "Command: `python bench/doctor/seeds.py` (subsamples of `../shared/data` are "
             "written to `bench/doctor/_work/seeds/`; finished units are reused).", "",
             f"Machine: {platform.platform()}, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}; wall times are of this run (other jobs shared the machine "
             "unless said otherwise).", ""]
    for case in ("seed000", "seed004", "seed003", "seed002", "healthy"):
        if case not in rows:
            continue
        r = rows[case]
        extra = (f" (the compare took {r['compare_seconds'] / 60:.1f} min)"
                 if "compare_seconds" in r else "")
        lines += [f"## {r['story']}", "", f"Wall time: {r['seconds'] / 60:.1f} min{extra}.",
                  "", "```", r["command"], "", r["output"].rstrip(), "```", ""]
    (HERE / "seeds.md").write_text("\n".join(lines), encoding="utf-8")


def main(which: list[str]) -> None:
    path = HERE / "seeds.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    for case in which or ["seed000", "seed004", "seed003", "seed002", "healthy"]:
        print(f"== {case}", flush=True)
        rows[case] = run(case)
        print(f"   {rows[case]['seconds'] / 60:.1f} min", flush=True)
        write(rows)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main(sys.argv[1:])
