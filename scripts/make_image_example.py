"""Build the bundled image example from ../shared/data/nih_malaria_50px_gray.

A balanced subset: slides are drawn at random and their cells taken until each class has 800
images, so the slide grouping stays meaningful; 50 x 50 8-bit grayscale, as stored. Run from
the repository root: python scripts/make_image_example.py
"""

from pathlib import Path

import numpy as np

SOURCE = Path("../shared/data/nih_malaria_50px_gray/malaria_50x50_gray.npz")
TARGET = Path("src/cellbench/examples/malaria_small.npz")
PER_CLASS = 800


def main() -> None:
    z = np.load(SOURCE)
    X, y, slides = z["X"], z["y"].astype(np.int64), z["slide_id"]
    rng = np.random.default_rng(0)
    chosen: list[int] = []
    counts = np.zeros(2, int)
    for slide in rng.permutation(np.unique(slides)):
        for i in np.flatnonzero(slides == slide):
            if counts[y[i]] < PER_CLASS:
                counts[y[i]] += 1
                chosen.append(int(i))
        if counts.min() >= PER_CLASS:
            break
    idx = np.sort(np.asarray(chosen))
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(TARGET, X=X[idx], y=y[idx], slide_id=slides[idx],
                        label_names=z["label_names"])
    print(f"wrote {TARGET}: {len(idx)} images, classes {np.bincount(y[idx])}, "
          f"{len(np.unique(slides[idx]))} slides, {TARGET.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
