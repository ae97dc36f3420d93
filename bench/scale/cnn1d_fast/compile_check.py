"""cnn1d-seed on 172k x 24 cells: does torch.compile or a fused Adam make the stock layers faster?

Three forms train the same initial network for 3 epochs (batch 256, Adam 1e-3, forward,
backward and step): eager (what cellbench runs), eager with ``Adam(fused=True)``, and the
forward and backward compiled with ``torch.compile`` (inductor, C++ kernels on the CPU; its
first epoch includes the compilation). Prints seconds per epoch.

Usage: python bench/scale/cnn1d_fast/compile_check.py   (about 1 minute on 2 cores)
"""

from __future__ import annotations

import copy
import platform
import time

import torch

from cellbench.models import create_model

N, D, K = 172_000, 24, 5


def main() -> None:
    torch.manual_seed(0)
    X, y = torch.randn(N, D), torch.randint(0, K, (N,))
    base = create_model("cnn1d-seed", n_features=D, n_classes=K)
    print(f"{platform.platform()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; seconds per epoch:")
    for kind in ("eager", "fused Adam", "compiled"):
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), 1e-3, fused=kind == "fused Adam")

        def step(xb: torch.Tensor, yb: torch.Tensor, model: torch.nn.Module = model) -> None:
            torch.nn.functional.cross_entropy(model(xb), yb).backward()

        run = torch.compile(step) if kind == "compiled" else step
        g = torch.Generator().manual_seed(1)
        times = []
        for _ in range(3):
            order = torch.randperm(N, generator=g)
            start = time.perf_counter()
            for i in range(0, N - 255, 256):
                idx = order[i:i + 256]
                opt.zero_grad(set_to_none=True)
                run(X[idx], y[idx])
                opt.step()
            times.append(time.perf_counter() - start)
        print(f"  {kind}: " + ", ".join(f"{t:.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
