"""Image benchmark: the CLI on NIH malaria (slide-grouped) and BreastMNIST (official split).

1. Malaria, 27,558 cells, 50 x 50 grayscale, split by slide (about 70/15/15): the seed-003
   trio (ann, cnn, gap and its wide variant), the seed-004 trio (shallow, VGG-11 without and
   with batch norm) and ResNet-8, all with one recipe (Adam, one-cycle LR 3e-3, batch 128,
   10 epochs, flips and 90-degree turns).
2. Seed 004's setting (raw 0-255 pixels, RMSprop, no augmentation) is the example
   examples/seed004/malaria_raw.yaml; its recorded results (bench/results/seed004_malaria_raw,
   from bench/seeds/run.py) are summarised here when present.
3. BreastMNIST (MedMNIST v2, 28 x 28, official train/val/test): several CPU-sized models;
   the one best on *validation* is reported on test against MedMNIST's ResNet-18 (28):
   ACC 0.863, AUC 0.901.

Usage: python bench/images/run.py [--report-only] [--force]   (needs ../shared/data; about an
hour on 2 CPU cores). A run whose results.json exists is kept unless --force is given.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cellbench.models import ModelChoice

HERE = Path(__file__).parent
WORK = HERE / "_work"
DATA = Path("../shared/data")
MALARIA = f"{DATA}/nih_malaria_50px_gray/malaria_50x50_gray.npz"
RECIPE = ("--max-epochs 10 --patience 10 --scheduler onecycle --lr 3e-3 --batch-size 128 "
          "--augment flip,rot90")

RUNS = {
    "malaria": (
        f"cellbench compare {MALARIA} --groups slide_id --models "
        "majority,logreg,ann-seed003,cnn-seed003,gap-seed003,gap-seed003-wide,"
        "shallow-seed004,vgg11,vgg11(bn=true),resnet8 "
        f"{RECIPE} --quiet --out {WORK}/malaria"),
    "breastmnist": (
        f"cellbench compare {DATA}/breastmnist/breastmnist_28_resaved.npz --models "
        "majority,logreg,shallow-seed004,cnn-seed003,resnet8,inception-small "
        "--max-epochs 60 --patience 15 --lr 1e-3 --batch-size 32 --seeds 3 "
        f"--augment flip,rotate=15,shift=0.1 --quiet --out {WORK}/breastmnist"),
}


def run(name: str, command: str) -> float:
    out = WORK / name
    if out.exists():
        shutil.rmtree(out)
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    subprocess.run(shlex.split(command), check=True)
    return time.perf_counter() - start


def pct(m: dict) -> str:
    lo, hi = m["ci"]
    return f"{m['value'] * 100:.2f} ({lo * 100:.2f}-{hi * 100:.2f})"


def epoch_seconds(model: dict) -> str:
    epochs = [u["epochs"] for u in model["per_unit"] if u["epochs"]]
    if not epochs:
        return "-"
    return f"{sum(u['fit_seconds'] for u in model['per_unit']) / sum(epochs):.1f}"


def malaria_table(summary: dict) -> list[str]:
    lines = ["| model | params | test accuracy % (95% CI) | AUROC | s / epoch | fit s |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in sorted(summary["models"], key=lambda m: -m["test"]["accuracy"]["value"]):
        lines.append(f"| {m['model']} | {m['n_params']:,} | {pct(m['test']['accuracy'])} | "
                     f"{m['test']['auroc']['value']:.3f} | {epoch_seconds(m)} | "
                     f"{m['fit_seconds']:.0f} |")
    return lines


def breast_rows(summary: dict, run_dir: Path) -> tuple[list[str], dict]:
    """Validation accuracy (mean over seeds) chooses the model; test is reported after."""
    rows, best = [], None
    for m in summary["models"]:
        slug = ModelChoice(m["model"], m["name"]).slug
        units = list((run_dir / "units" / slug).glob("seed*/given/result.json"))
        vals = [json.loads(p.read_text())["validation"]["accuracy"]["value"] for p in units]
        val = sum(vals) / len(vals)
        t = m["test"]
        rows.append((val, m, t))
        if m["name"] not in ("majority", "logreg") and (best is None or val > best[0]):
            best = (val, m, t)
    lines = ["| model | params | validation acc. (mean of seeds) | test ACC (95% CI), first "
             "seed | test AUC (95% CI) | test ACC mean ± sd over seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for val, m, t in sorted(rows, key=lambda r: -r[0]):
        across = m.get("across_units", {}).get("accuracy")
        spread = f"{across['mean']:.3f} ± {across['sd']:.3f}" if across else "-"
        lo, hi = t["auroc"]["ci"]
        lines.append(f"| {m['model']} | {m['n_params']:,} | {val:.3f} | "
                     f"{t['accuracy']['value']:.3f} ({t['accuracy']['ci'][0]:.3f}-"
                     f"{t['accuracy']['ci'][1]:.3f}) | {t['auroc']['value']:.3f} ({lo:.3f}-"
                     f"{hi:.3f}) | {spread} |")
    return lines, {"model": best[1]["model"], "val": best[0], "test": best[2]}


def main() -> None:
    WORK.mkdir(exist_ok=True)
    walls_file = WORK / "walls.json"
    if "--report-only" in sys.argv:
        walls = json.loads(walls_file.read_text())
    else:
        walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
        for name, cmd in RUNS.items():
            if (WORK / name / "results.json").exists() and "--force" not in sys.argv:
                print(f"{name}: kept (results.json exists; --force reruns)")
                continue
            walls[name] = run(name, cmd)
            walls_file.write_text(json.dumps(walls))
    mal = json.loads((WORK / "malaria" / "results.json").read_text())
    raw_file = HERE.parent / "results" / "seed004_malaria_raw" / "results.json"
    raw = json.loads(raw_file.read_text()) if raw_file.is_file() else None
    breast = json.loads((WORK / "breastmnist" / "results.json").read_text())
    shutil.copy(WORK / "malaria" / "comparison.png", HERE / "malaria_comparison.png")
    best_mal = max(mal["models"], key=lambda m: m["test"]["accuracy"]["value"])
    b_lines, best_b = breast_rows(breast, WORK / "breastmnist")
    machine = mal["machine"]
    lines = [
        "# Image benchmark",
        "",
        f"Produced by `python bench/images/run.py` on {machine['platform']} "
        f"({machine['threads']} torch threads, CPU only, torch {machine['torch']}; no GPU was "
        "available to this run, so no GPU epoch times are recorded). Commands, verbatim:",
        "",
        *[f"- `{cmd}` ({walls[name] / 60:.0f} min wall)" for name, cmd in RUNS.items()],
        "",
        "## NIH malaria, 50 x 50 grayscale, split by slide",
        "",
        f"{mal['data']['n']:,} images; test part {best_mal['test']['n']:,} images from "
        f"{best_mal['test']['groups']['n_groups']} slides that no model saw in training. The "
        "published figures (96-99.5 %) are on the RGB originals at full size with cell-level "
        "splits; grayscale 50 px with a slide-level split is harder.",
        "",
        *malaria_table(mal),
        "",
        f"Best: **{best_mal['model']} {best_mal['test']['accuracy']['value'] * 100:.2f} %** "
        f"after {best_mal['fit_seconds'] / 60:.1f} minutes of training on this 2-core CPU "
        "(acceptance: >= 95 % within 10 minutes).",
        "",
        "![comparison](malaria_comparison.png)",
        "",
        "### Seed 004's setting: raw 0-255 pixels, RMSprop, no augmentation",
        "",
        *(["From `cellbench compare --config examples/seed004/malaria_raw.yaml` (recorded in "
           "bench/results/seed004_malaria_raw; lr 1e-3, 10 epochs, batch 128):", "",
           *malaria_table(raw)] if raw else
          ["Not recorded yet: run `python bench/seeds/run.py seed004_malaria_raw`."]),
        "",
        "## BreastMNIST (MedMNIST v2, 28 x 28), official split",
        "",
        "Three seeds per network; the model is chosen by validation accuracy (mean over "
        "seeds), then its test numbers are read once. Test n = "
        f"{breast['models'][0]['test']['n']} images, so the 95 % CI of an accuracy is about "
        "±6 points: differences of a few points between models are not measurable here.",
        "",
        *b_lines,
        "",
        f"Chosen on validation: **{best_b['model']}**, test ACC "
        f"{best_b['test']['accuracy']['value']:.3f} ({best_b['test']['accuracy']['ci'][0]:.3f}-"
        f"{best_b['test']['accuracy']['ci'][1]:.3f}), AUC {best_b['test']['auroc']['value']:.3f}"
        f" ({best_b['test']['auroc']['ci'][0]:.3f}-{best_b['test']['auroc']['ci'][1]:.3f}), "
        "against MedMNIST v2 ResNet-18 (28): ACC 0.863, AUC 0.901.",
        "",
    ]
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
