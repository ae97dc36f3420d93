"""The doctor on planted faults in images: the image counterpart of ``faults.py``.

Tiny synthetic cell images (24 x 24 gray, 0-255: a dim blob, a bright square, a bright bar,
each slide with its own brightness), 480 images from 16 slides, 4-fold CV by slide. Each case
plants one fault in the setting (the model or its training) and runs ``cellbench doctor``
with no budget; recorded: the rank of the planted id (1 = named first), the fixes accepted,
the accuracy of the faulty setting and of the final model, and the healthy control's
findings (it must get nothing above info).

    python bench/doctor/image_faults.py            # all cases -> image_faults.md / .json
    python bench/doctor/image_faults.py dropout_gap
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
WORK = HERE / "_work" / "images"

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig  # noqa: E402
from cellbench.experiment.doctor import run_doctor  # noqa: E402
from cellbench.models import parse_model  # noqa: E402


def images(n: int = 480, slides: int = 16, size: int = 24, seed: int = 0,
           shares: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)) -> Path:
    """Three classes of 0-255 gray images: dim noise, a bright square, a bright bar."""
    name = f"cells_{n}_{'_'.join(f'{s:.2f}' for s in shares)}.npz"
    path = WORK / name
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    y = rng.choice(len(shares), size=n, p=np.asarray(shares) / sum(shares))
    slide = np.arange(n) % slides
    X = rng.normal(70, 18, size=(n, 1, size, size)) + rng.normal(0, 15, slides)[slide, None,
                                                                                  None, None]
    for i in range(n):
        r, c = rng.integers(3, size - 9, 2)
        if y[i] == 1:
            X[i, 0, r:r + 6, c:c + 6] += 80
        elif y[i] == 2:
            X[i, 0, r:r + 2, 2:size - 2] += 80
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=np.clip(X, 0, 255).astype(np.uint8), y=y,
             slide_id=np.array([f"S{s:02d}" for s in slide]))
    return path


#: id -> (data builder, model spec, train settings, data settings)
CASES = {
    "healthy": (images, "shallow-seed004", {}, {}),
    "unscaled_input": (images, "cnn-seed003", {}, {"image_norm": "none"}),
    "lr_too_high": (images, "shallow-seed004", {"optimizer": "sgd", "lr": 5.0}, {}),
    "lr_too_high:adam": (images, "shallow-seed004", {"lr": 0.05}, {}),
    "lr_too_low": (images, "shallow-seed004", {"optimizer": "sgd", "lr": 1e-5}, {}),
    "too_few_epochs": (images, "shallow-seed004", {"max_epochs": 2, "optimizer": "sgd",
                                                   "lr": 0.003}, {}),
    "dropout_gap": (images, "shallow-seed004(dropout=0.9)", {}, {}),
    "class_imbalance": (lambda: images(n=900, shares=(0.9, 0.06, 0.04)), "shallow-seed004",
                        {}, {}),
}


def run_case(case: str) -> dict:
    build, model, train, data = CASES[case]
    choice = parse_model(model)
    base = TrainConfig(**{"max_epochs": 20, "patience": 5, "batch_size": 32, "device": "cpu",
                          **train})
    cfg = RunConfig(data=DataConfig(path=str(build()), groups="slide_id", **data),
                    split=SplitConfig(cv=4),
                    train=choice.configure(base.replace(model=choice.name)))
    start = time.perf_counter()
    result = run_doctor(cfg, WORK / case.replace(":", "_"), budget=None)
    ids = [f["id"] for f in result.findings]
    yours = next((m for m in result.models if m.label == "yours"), None)
    final = (result.final or {}).get("test", {}).get("accuracy", {}).get("value")
    return {"case": case, "model": model, "train": train, "data": data, "findings": ids,
            "severities": [f["severity"] for f in result.findings],
            "rank": ids.index(planted) + 1 if (planted := case.split(":")[0]) in ids else None,
            "accepted": [x["label"] for x in result.fixes if x["accepted"]],
            "yours": yours.test.accuracy.value if yours and yours.test else None,
            "final": final, "final_label": (result.final or {}).get("label"),
            "seconds": time.perf_counter() - start}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}"


def write(rows: dict[str, dict]) -> None:
    (HERE / "image_faults.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    lines = ["# The doctor on planted faults in images", "",
             "Command: `python bench/doctor/image_faults.py`. 480 synthetic 24 x 24 gray cell "
             "images (0-255; three classes: dim noise, a bright square, a bright bar; a "
             "brightness per slide), 16 slides, 4-fold CV by slide; the doctor with no budget "
             "and its defaults (reference network ResNet-8). *rank*: where the planted id is "
             "among the findings (1 = named first); the healthy control must get nothing above "
             "info.", "",
             f"Machine: {platform.platform()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads.", "",
             "| planted fault | setting | rank | findings (severity) | fixes accepted | yours % "
             "| final % | seconds |", "|---|---|---:|---|---|---:|---:|---:|"]
    for r in rows.values():
        if r.get("error"):
            lines.append(f"| `{r['case']}` | `{r['model']}` | - | failed: {r['error']} | - | - "
                         "| - | - |")
            continue
        found = ", ".join(f"{i} ({s})" for i, s in zip(r["findings"], r["severities"],
                                                         strict=True)) or "none"
        setting = f"`{r['model']}` {r['train'] or ''} {r['data'] or ''}".strip()
        lines.append(f"| `{r['case']}` | {setting} | {r['rank'] or '-'} | {found} | "
                     f"{', '.join(r['accepted']) or '-'} | {_pct(r['yours'])} | "
                     f"{_pct(r['final'])} | {r['seconds']:.0f} |")
    planted = [r for r in rows.values() if r["case"] != "healthy"]
    healthy = rows.get("healthy")
    quiet = healthy is not None and all(s == "info" for s in healthy.get("severities", ["x"]))
    lines += ["", f"Named first: {sum(r.get('rank') == 1 for r in planted)} of {len(planted)}; "
              f"healthy control without warnings: {'yes' if quiet else 'no'}."]
    (HERE / "image_faults.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(which: list[str]) -> None:
    path = HERE / "image_faults.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    for case in which or list(CASES):
        print(f"== {case}", flush=True)
        try:
            rows[case] = run_case(case)
        except Exception as exc:  # one case must not stop the table
            rows[case] = {"case": case, "model": CASES[case][1], "error":
                          f"{type(exc).__name__}: {exc}", "rank": None}
        print(f"   rank {rows[case].get('rank')} findings {rows[case].get('findings')} "
              f"{rows[case].get('seconds', 0):.0f}s", flush=True)
        write({k: rows[k] for k in CASES if k in rows})


if __name__ == "__main__":
    main(sys.argv[1:])
