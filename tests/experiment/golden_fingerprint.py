"""The fingerprint of a ``compare --example`` run directory, to hold a refactor to its output.

``python tests/experiment/golden_fingerprint.py RUN_DIR`` wrote ``golden/`` from the output
of the code before the experiment layer was restructured (commit 701d7cc), which the
restructuring reproduced exactly; it was written again once the hardening changed the
numbers on purpose (baselines fitted on train + validation, balanced-accuracy bootstrap
within classes, per-class recall in the terminal). The test in ``test_golden_example.py``
compares a fresh run against it. Timing fields and the machine
are left out; everything else in ``results.json`` must be equal, the predicted class of every
test and validation cell must be equal, and the probabilities equal to float16 precision.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

VOLATILE = {"fit_seconds", "predict_seconds", "wall_seconds", "created", "machine", "time",
            "run_dir", "reused_units", "reused"}


def strip(obj):
    """``obj`` without timing, machine and reuse fields; a data source by its file name only
    (the checkout's absolute path differs between machines)."""
    if isinstance(obj, dict):
        return {k: Path(v).name if k == "source" and isinstance(v, str) else strip(v)
                for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """Every unit's predicted classes (exact) and probabilities (float16), keyed by unit."""
    out = {}
    for path in sorted((run_dir / "units").glob("*/*/*/predictions.npz")):
        key = "/".join(path.parent.relative_to(run_dir / "units").parts)
        with np.load(path) as z:
            for part in ("test", "val"):
                proba = z[f"{part}_proba"]
                out[f"{key}:{part}_index"] = z[f"{part}_index"].astype(np.int32)
                out[f"{key}:{part}_pred"] = proba.argmax(1).astype(np.uint8)
                out[f"{key}:{part}_proba"] = proba.astype(np.float16)
    return out


def write(run_dir: Path, golden: Path) -> None:
    golden.mkdir(parents=True, exist_ok=True)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    (golden / "results.json").write_text(json.dumps(strip(results), indent=1) + "\n",
                                         encoding="utf-8")
    np.savez_compressed(golden / "predictions.npz", **predictions(run_dir))


if __name__ == "__main__":
    write(Path(sys.argv[1]), Path(__file__).parent / "golden")
