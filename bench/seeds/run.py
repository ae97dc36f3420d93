"""Run the seeds' experiments in examples/ and record their outputs in bench/results/.

Each example is a config plus one command (see examples/README.md). This script runs the
commands, then keeps for each: the terminal output (tables and verdicts), results.json and
the comparison plot, under bench/results/<name>/.

Usage: python bench/seeds/run.py [name ...]   (needs ../shared/data; hours on 2 CPU cores)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "seeds" / "_work"
EXAMPLES = {
    "seed000_lymphoma": "examples/seed000/lymphoma.yaml",
    "seed000_deepcytof": "examples/seed000/deepcytof.yaml",
    "seed003_malaria": "examples/seed003/malaria.yaml",
    "seed004_malaria": "examples/seed004/malaria.yaml",
    "seed004_malaria_raw": "examples/seed004/malaria_raw.yaml",
}


def main() -> None:
    names = sys.argv[1:] or list(EXAMPLES)
    for name in names:
        config = EXAMPLES[name]
        out = WORK / name
        command = ["cellbench", "compare", "--config", config, "--out", str(out), "--quiet"]
        print("$ " + " ".join(command), flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        minutes = (time.perf_counter() - start) / 60
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit(f"{name} failed")
        dest = RESULTS / name
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "output.txt").write_text(
            f"$ {' '.join(command[:-3])}\n# {minutes:.0f} min on this machine\n\n"
            + result.stdout)
        for file in ("results.json", "comparison.png"):
            shutil.copy(out / file, dest / file)
        print(result.stdout[-2500:], flush=True)


if __name__ == "__main__":
    main()
