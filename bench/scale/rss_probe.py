"""Where a cellbench command's memory peaks: RSS sampled every 20 ms with the main thread's
stack, so the peak can be attributed to the code that allocated it.

Usage: python bench/scale/rss_probe.py compare STUDY --target cell_type ...   (any CLI args)
Prints the baseline RSS (after imports), the peak, and the cellbench frames live at the
highest RSS seen in each distinct innermost cellbench function.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    import lightgbm  # noqa: F401  (the baseline imports what the job imports)
    import torch  # noqa: F401

    from cellbench._utils import map_large_buffers
    from cellbench.cli import app

    map_large_buffers()  # as the cellbench script does for a large input (this study is one)

    base = rss_mb()
    main_id = threading.get_ident()
    by_site: dict[str, tuple[float, list[str]]] = {}
    rises: list[tuple[float, str]] = []  # where the high-water mark grew by 10 MB or more
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = rss_mb()
            frame = sys._current_frames().get(main_id)
            stack = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                     for f in traceback.extract_stack(frame)
                     if "cellbench" in f.filename] if frame else []
            site = stack[-1] if stack else "(outside cellbench)"
            if rss > by_site.get(site, (0.0, []))[0]:
                by_site[site] = (rss, stack)
            if rss >= (rises[-1][0] if rises else base) + 10:
                rises.append((rss, " <- ".join(reversed(stack[-3:]))))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        app(sys.argv[1:], standalone_mode=False)
    finally:
        stop.set()
        thread.join()
    print(f"\nbaseline after imports: {base:.0f} MB; where the peak grew:")
    for rss, where in rises:
        print(f"{rss - base:+7.0f} MB  {where}")
    for site, (rss, stack) in sorted(by_site.items(), key=lambda kv: -kv[1][0])[:8]:
        print(f"\n{rss:7.0f} MB ({rss - base:+.0f} above baseline) at {site}")
        for line in stack[-7:-1]:
            print(f"          {line}")


if __name__ == "__main__":
    main()
