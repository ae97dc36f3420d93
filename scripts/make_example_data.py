"""Build the bundled cytometry example from ../shared/data/deepcytof_multicenter.

Eight of the 16 samples, 1,500 gated (labelled) cells each, raw CyTOF intensities. Run from the
repository root: python scripts/make_example_data.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

SOURCE = Path("../shared/data/deepcytof_multicenter/deepcytof_multicenter.parquet")
TARGET = Path("src/cellbench/examples/deepcytof_small.parquet")
NAMES = {1: "B cells", 2: "CD4+ T cells", 3: "CD8+ T cells", 4: "Monocytes"}
CELLS_PER_SAMPLE = 1500


def main() -> None:
    df = pd.read_parquet(SOURCE)
    df = df[df["label"] != 0]  # 0 = ungated cells, excluded as in the published protocol
    rng = np.random.default_rng(0)
    samples = np.sort(rng.choice(np.unique(df["sample"]), size=8, replace=False))
    parts = []
    for s in samples:
        rows = df[df["sample"] == s]
        parts.append(rows.iloc[np.sort(rng.choice(len(rows), CELLS_PER_SAMPLE, replace=False))])
    out = pd.concat(parts, ignore_index=True)
    out["cell_type"] = out.pop("label").map(NAMES)
    out["sample"] = out["sample"].map(lambda s: f"sample{s:02d}")
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(TARGET, index=False, compression="zstd")
    print(f"wrote {TARGET}: {out.shape}, {TARGET.stat().st_size / 1e6:.2f} MB, samples "
          f"{list(samples)}")
    print(out["cell_type"].value_counts().to_dict())


if __name__ == "__main__":
    main()
