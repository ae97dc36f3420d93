"""Run the seeds' experiments in examples/ and record their outputs in bench/results/.

Each example is a config plus one command (see examples/README.md). This script runs the
commands, then keeps for each: the terminal output (tables and verdicts), results.json and
the comparison plot, under bench/results/<name>/.

Usage: python bench/seeds/run.py [name ...]   (needs ../shared/data; hours on 2 CPU cores)

A rerun reuses every finished unit (a changed label or reference costs seconds); the minutes
recorded are those of the invocation that trained the most units.
"""

from __future__ import annotations

import json
import os
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
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "COLUMNS": "180"})
        minutes = (time.perf_counter() - start) / 60
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit(f"{name} failed")
        summary = json.loads((out / "results.json").read_text())
        trained = sum(m["units"] - m["reused_units"] for m in summary["models"])
        walls_file = WORK / "walls.json"
        walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
        if trained >= walls.get(name, {}).get("trained", 0):
            walls[name] = {"trained": trained, "minutes": minutes,
                           "threads": summary["machine"]["threads"]}
            walls_file.write_text(json.dumps(walls, indent=1))
        minutes, threads = walls[name]["minutes"], walls[name]["threads"]
        dest = RESULTS / name
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "output.txt").write_text(
            f"$ {' '.join(command[:-3])}\n# {minutes:.0f} min on this machine "
            f"({threads} torch thread(s), 2 CPU cores shared with other benchmarks)\n\n"
            + result.stdout)
        for file in ("results.json", "comparison.png"):
            shutil.copy(out / file, dest / file)
        print(result.stdout[-2500:], flush=True)


if __name__ == "__main__":
    main()
