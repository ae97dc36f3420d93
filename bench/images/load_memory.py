"""Loading 100,000 images of 64 x 64: time and peak memory against the array's own size.

Writes 100k 8-bit grayscale PNGs (two class folders) to a temporary folder, then loads them
with cellbench in a fresh process and reports the peak resident memory (ru_maxrss) above the
process's baseline. Loading decodes each file straight into one preallocated uint8 array, so
the peak should be close to the array itself (409.6 MB), not a multiple of it.

Usage: python bench/images/load_memory.py [--n 100000]   (writes bench/images/load_memory.md)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
MEASURE = """
import json, resource, sys, time
import numpy as np
import cellbench.data.images as images
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
ds = images.load_images(sys.argv[1])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "shape": list(ds.X.shape), "dtype": str(ds.X.dtype),
                  "array_mb": ds.X.nbytes / 1e6, "baseline_mb": base / 1e3,
                  "peak_mb": peak / 1e3, "increase_mb": (peak - base) / 1e3}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        for label in ("a", "b"):
            (root / label).mkdir()
        for i in range(args.n):
            img = rng.integers(0, 255, (64, 64), dtype=np.uint8)
            Image.fromarray(img).save(root / ("a" if i % 2 else "b") / f"{i}.png",
                                      compress_level=1)
        write_s = time.perf_counter() - start
        out = subprocess.run([sys.executable, "-c", MEASURE, str(root)], check=True,
                             capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [
        "# Loading 100k images: time and memory", "",
        f"Command: `python bench/images/load_memory.py --n {args.n}` on {platform.platform()} "
        f"(Python {platform.python_version()}).", "",
        f"- {args.n:,} PNGs of 64 x 64, 8-bit grayscale (written in {write_s:.0f} s)",
        f"- loaded into one array {tuple(r['shape'])} {r['dtype']} of {r['array_mb']:.1f} MB "
        f"in {r['seconds']:.1f} s ({args.n / r['seconds']:,.0f} images/s)",
        f"- peak resident memory rose by {r['increase_mb']:.1f} MB over the process baseline "
        f"({r['baseline_mb']:.0f} MB after imports): **{r['increase_mb'] / r['array_mb']:.2f}x "
        "the array**", "",
        "Files are decoded one at a time into a preallocated array; no per-image copies are "
        "kept in Python lists.", ""]
    (HERE / "load_memory.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
