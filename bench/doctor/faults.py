"""Every finding id with a synthetic fault that triggers it, and the doctor's rank for it.

Each case plants one fault in a small synthetic table (or, for the evaluation ids, in a
finished compare run) and runs ``cellbench doctor`` on it. Recorded per case: the rank of
the planted id among the findings (1 = named first), its severity, the fix accepted, and the
accuracy of the faulty setting, of the final model and of the same setting without the
fault (how much of the accuracy the fault cost the final model recovers).

    python bench/doctor/faults.py            # all cases -> faults.md, faults.json
    python bench/doctor/faults.py lr_too_high dropout_gap

Finished doctor runs are reused (``_work/``); delete it to rerun from scratch.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).parent
WORK = HERE / "_work"
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig  # noqa: E402
from cellbench.experiment.doctor import doctor, run_doctor  # noqa: E402
from cellbench.models import parse_model  # noqa: E402
from synthetic import make_table  # noqa: E402


def table(n=900, classes=3, donors=12, seed=1, separation=1.5, features=10) -> pd.DataFrame:
    return make_table(n=n, n_features=features, n_classes=classes, n_donors=donors, seed=seed,
                      separation=separation)


def _imbalanced(ratio: int, seed: int = 2, separation: float = 1.0) -> pd.DataFrame:
    frame = table(n=2400, seed=seed, separation=separation)
    rng = np.random.default_rng(seed)
    keep = (frame.label == "type0") | (rng.random(len(frame)) < 1 / ratio)
    return frame[keep].reset_index(drop=True)


def _hard_rare(seed: int = 3) -> pd.DataFrame:
    """Two common classes and a rare one (1 in 8) whose marker barely moves: accuracy stays
    high while the rare class is mostly missed, and the imbalance itself is only moderate."""
    frame = table(n=2400, seed=seed)
    rng = np.random.default_rng(seed)
    keep = (frame.label != "type2") | (rng.random(len(frame)) < 1 / 8)
    frame = frame[keep].reset_index(drop=True)
    rare = frame.label == "type2"
    frame.loc[rare, "CD3"] -= 1.5 * 0.7  # its shift 1.5 -> 0.45 standard deviations
    return frame


def _raw(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    cols = [c for c in frame.columns if c.startswith("CD")]
    frame[cols] = np.sinh(frame[cols] * 2) * 200  # like raw mass-cytometry intensities
    return frame


def _leak(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(gate=frame.label.map({"type0": 1, "type1": 2, "type2": 3}))


def _confound(frame: pd.DataFrame) -> pd.DataFrame:
    donors = frame.label.map({"type0": "D00", "type1": "D01", "type2": "D02"})
    return frame.assign(donor=donors + (np.arange(len(frame)) % 2).astype(str))


def _missing_groups() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = table(n=1200, donors=12, separation=0.6)
    cols = [c for c in frame.columns if c.startswith("CD")]
    donor = frame.donor.str[1:].astype(int).to_numpy()
    frame[cols] += rng.normal(scale=1.5, size=(12, len(cols)))[donor]  # strong donor effects
    # labels partly follow the donor, as in per-patient disease status
    frame["label"] = np.where(rng.random(len(frame)) < 0.5, frame.label,
                              np.array(["type0", "type1", "type2"])[donor % 3])
    return frame.assign(donor=donor)


def _duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns="donor")  # cells at random: copies land on both sides
    return pd.concat([frame, frame.sample(frac=0.4, random_state=0)], ignore_index=True)


def _conflicts(frame: pd.DataFrame) -> pd.DataFrame:
    copy = frame.sample(frac=0.3, random_state=0).copy()
    copy["label"] = copy.label.map({"type0": "type1", "type1": "type2", "type2": "type0"})
    return pd.concat([frame, copy], ignore_index=True)


def _unlabelled(frame: pd.DataFrame) -> pd.DataFrame:
    """A fifth of the cells, drawn from every population, labelled 'Unlabeled' (what gating
    leaves outside its gates)."""
    out = frame.copy()
    out.loc[out.sample(frac=0.2, random_state=0).index, "label"] = "Unlabeled"
    return out


def _batch_shift(frame: pd.DataFrame, sd: float = 2.0, seed: int = 5) -> pd.DataFrame:
    """Every donor's markers offset by N(0, sd^2) (a detector or staining drift per run)."""
    rng = np.random.default_rng(seed)
    markers = [c for c in frame.columns if c.startswith("CD")]
    out = frame.copy()
    for _, rows in frame.groupby("donor").indices.items():
        out.loc[out.index[rows], markers] += rng.normal(0, sd, len(markers)).astype(np.float32)
    return out


def _tiny(frame: pd.DataFrame) -> pd.DataFrame:
    small = frame[frame.label == "type2"].head(6)
    return pd.concat([frame[frame.label != "type2"], small], ignore_index=True)


def _xor() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1200, 6)).astype(np.float32)
    label = np.where((X[:, 0] > 0) ^ (X[:, 1] > 0), "a", "b")
    frame = pd.DataFrame(X, columns=[f"CD{i + 1}" for i in range(6)])
    return frame.assign(label=label, donor=[f"D{i % 12:02d}" for i in range(1200)])


#: id -> (frame builder, model spec, train settings, data settings, split, healthy spec)
CASES = {
    "unscaled_input": (lambda: _raw(table()), "mlp", {}, {"transform": []}, None),
    "sample_shift": (lambda: _batch_shift(table()), "mlp", {}, {}, None),
    "class_imbalance": (lambda: _imbalanced(12), "mlp", {}, {}, None),
    "tiny_class": (lambda: _tiny(table()), "mlp", {}, {}, None),
    "group_class_confound": (lambda: _confound(table()), "mlp", {}, {}, {"cv": 3}),
    "missing_groups": (_missing_groups, "mlp", {}, {"groups": None}, {"cv": 4}),
    "duplicate_rows_across_splits": (lambda: _duplicates(table()), "mlp", {},
                                     {"groups": None}, {"cv": 4}),
    "leaking_feature": (lambda: _leak(table()), "mlp", {}, {}, None),
    "too_few_samples": (lambda: table(n=48, donors=8, features=30), "mlp", {}, {},
                        {"cv": 4}),
    "label_conflict": (lambda: _conflicts(table()), "mlp", {}, {}, None),
    "unlabelled_class": (lambda: _unlabelled(table()), "mlp", {}, {}, None),
    "lr_too_high": (table, "mlp", {"optimizer": "sgd", "lr": 20.0}, {}, None),
    "lr_too_low": (table, "mlp", {"optimizer": "sgd", "lr": 1e-5}, {}, None),
    "too_few_epochs": (table, "mlp", {"max_epochs": 2, "optimizer": "sgd", "lr": 0.003}, {},
                       None),
    "overfitting": (lambda: table(n=240, donors=8, features=40, separation=1.0),
                    "mlp(width=512,depth=3)", {"patience": None, "max_epochs": 150}, {},
                    {"cv": 4}),
    "underfitting": (_xor, "mlp(width=2,depth=1)", {}, {}, None),
    "stuck_at_chance": (table, "mlp(depth=8,width=32,activation=tanh)",
                        {"optimizer": "sgd", "lr": 1e-3}, {}, None),
    "dropout_gap": (table, "mlp(dropout=0.9,depth=3)", {}, {}, None),
    "nan_loss": (table, "mlp", {"optimizer": "sgd", "lr": 1e4}, {}, None),
    "below_baseline": (table, "cnn1d-seed(dropout=0.5/0.9)", {}, {}, None),
    "feature_order_arbitrary": (lambda: table(features=24), "cnn1d-seed", {"max_epochs": 15},
                                {}, None),
    "metric_misleading": (_hard_rare, "mlp", {"class_weight": None}, {}, None),
}


def _cfg(path: Path, model: str, train: dict, data: dict, split: dict | None) -> RunConfig:
    choice = parse_model(model)
    base = TrainConfig(**{"max_epochs": 30, "patience": 6, "device": "cpu", **train})
    data = {"groups": "donor", **data}
    return RunConfig(data=DataConfig(path=str(path), target="label", **data),
                     split=SplitConfig(**(split or {"cv": 4})),
                     train=choice.configure(base.replace(model=choice.name)))


def _acc(result, label: str, metric: str = "accuracy") -> float | None:
    m = next((m for m in result.models if m.label == label), None)
    return None if m is None or m.test is None else getattr(m.test, metric).value


def _final(result, metric: str = "accuracy") -> float | None:
    return ((result.final or {}).get("test", {}).get(metric) or {}).get("value")


def run_case(fault: str) -> dict:
    build, model, train, data, split = CASES[fault]
    folder = WORK / fault
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cells.csv"
    build().to_csv(path, index=False)
    cfg = _cfg(path, model, train, data, split)
    start = time.perf_counter()
    result = run_doctor(cfg, folder / "run", budget=None)
    seconds = time.perf_counter() - start
    ids = [f["id"] for f in result.findings]
    found = next((f for f in result.findings if f["id"] == fault), None)
    reference = _acc(result, "mlp")
    return {"fault": fault, "model": model, "train": train, "rank": ids.index(fault) + 1
            if fault in ids else None, "severity": found["severity"] if found else None,
            "first": ids[0] if ids else None, "findings": ids,
            "accepted": [x["label"] for x in result.fixes if x["accepted"]],
            "yours": _acc(result, "yours"), "final": _final(result),
            "yours_balanced": _acc(result, "yours", "balanced_accuracy"),
            "final_balanced": _final(result, "balanced_accuracy"),
            "final_label": (result.final or {}).get("label"),
            "reference_mlp": reference, "seconds": seconds}


def run_evaluation_case() -> dict:
    """difference_not_significant: two nearly identical networks in a finished compare."""
    from typer.testing import CliRunner

    from cellbench.cli import app

    folder = WORK / "difference_not_significant"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cells.csv"
    table().to_csv(path, index=False)
    out = folder / "compare"
    if not (out / "results.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        CliRunner().invoke(app, ["compare", str(path), "-t", "label", "-g", "donor", "--cv", "4",
                                 "--models", "a=mlp(width=64),b=mlp(width=65)",
                                 "--max-epochs", "20", "--out", str(out), "--quiet"])
    start = time.perf_counter()
    result = doctor(out)
    ids = [f["id"] for f in result.findings]
    fault = "difference_not_significant"
    found = next((f for f in result.findings if f["id"] == fault), None)
    return {"fault": fault, "model": "a=mlp(width=64), b=mlp(width=65)", "train": {},
            "rank": ids.index(fault) + 1 if fault in ids else None,
            "severity": found["severity"] if found else None, "first": ids[0] if ids else None,
            "findings": ids, "accepted": [], "yours": None, "final": None,
            "final_label": None, "reference_mlp": None,
            "seconds": time.perf_counter() - start}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}"


def write(rows: list[dict]) -> None:
    (HERE / "faults.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    lines = ["# The doctor on planted faults", "",
             "Command: `python bench/doctor/faults.py`. Each row plants one fault in a small "
             "synthetic table (900 cells x 10 markers, 3 classes, 12 donors, 4-fold CV by donor "
             "unless said otherwise; the fault builders are in the script) and runs the doctor "
             "with no budget. *rank*: where the planted id is among the findings (1 = named "
             "first). *yours / final*: test accuracy of the faulty setting and of the doctor's "
             "final model, then their balanced accuracy (the metric the doctor tests class "
             "weights and balanced sampling on); *reference MLP*: the default MLP on the same "
             "splits (the level a fixed setting should reach).", "",
             f"Machine: {platform.platform()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads.", "",
             "| planted fault | model | rank | severity | named first | fixes accepted | yours % "
             "| final % | yours / final balanced % | reference MLP % | seconds |",
             "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| `{r['fault']}` | `{r['model']}` | - | - | failed: {r['error']} "
                         "| - | - | - | - | - | - |")
            continue
        lines.append(f"| `{r['fault']}` | `{r['model']}` {r['train'] or ''} | {r['rank'] or '-'} "
                     f"| {r['severity'] or '-'} | {r['first'] or '-'} | "
                     f"{', '.join(r['accepted']) or '-'} | {_pct(r['yours'])} | "
                     f"{_pct(r['final'])} | {_pct(r.get('yours_balanced'))} / "
                     f"{_pct(r.get('final_balanced'))} | {_pct(r['reference_mlp'])} | "
                     f"{r['seconds']:.0f} |")
    named = sum(r["rank"] == 1 for r in rows)
    found = sum(r["rank"] is not None for r in rows)
    lines += ["", f"Named first: {named} of {len(rows)}; found at all: {found} of {len(rows)}.",
              "", "Notes. These are the project's own plants, so the rules were written knowing "
              "them; what they do not show is how the doctor does on faults it has not seen. "
              "The first recording named 15 of 21 first; between it and this one: nan_loss "
              "needs a loss that is non-finite or past sqrt(float32 max) (an explosion below it "
              "is lr_too_high's), bigger_model widens to at least the preset width (x2 left a "
              "2-unit network at chance), the column-order probe uses 5 orders and 5 seeds and "
              "its fix is tested even when the order effect is not significant, and the "
              "metric_misleading plant changed: it was a 20:1 table with an undertrained "
              "16-unit MLP below the majority floor (a stuck network, not a misleading metric); "
              "it is now a moderate imbalance whose rare class barely differs, so accuracy "
              "stays high while that class is missed. *seconds* are wall times of this run "
              "from scratch (no reuse) on the machine above."]
    (HERE / "faults.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(which: list[str]) -> None:
    old = json.loads((HERE / "faults.json").read_text()) if (HERE / "faults.json").is_file() \
        else []
    rows = {r["fault"]: r for r in old}
    for fault in which or [*CASES, "difference_not_significant"]:
        print(f"== {fault}", flush=True)
        try:
            rows[fault] = (run_evaluation_case() if fault == "difference_not_significant"
                           else run_case(fault))
        except Exception as exc:  # record it and go on: one case must not stop the table
            rows[fault] = {"fault": fault, "model": CASES.get(fault, ("", "-"))[1],
                           "train": {}, "rank": None, "severity": None, "first": None,
                           "findings": [], "accepted": [], "yours": None, "final": None,
                           "final_label": None, "reference_mlp": None, "seconds": 0.0,
                           "error": f"{type(exc).__name__}: {exc}"}
        print(f"   rank {rows[fault]['rank']} first {rows[fault]['first']} "
              f"{rows[fault]['seconds']:.0f}s", flush=True)
        write([rows[k] for k in [*CASES, "difference_not_significant"] if k in rows])


if __name__ == "__main__":
    main(sys.argv[1:])
