"""``compare --example`` gives today's numbers: a restructuring must not change any result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench.cli import app

from .golden_fingerprint import predictions, strip

GOLDEN = Path(__file__).parent / "golden"


def _close(a, b, path="results"):
    """Equal structure and strings; numbers equal to 1e-9 (relative) or 1e-12."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: keys differ"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool) and isinstance(b, (int, float)):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), f"{path}: {b} != {a}"
    else:
        assert a == b, f"{path}: {b!r} != {a!r}"


def _masked(text: str) -> list[str]:
    """Output lines without the run directory and with the fit-time column masked."""
    text = re.sub(r"\nresults: .*", "", text, flags=re.S)  # paths wrap differently
    lines = []
    for line in text.splitlines():
        if line.startswith("run directory"):
            continue
        cells = line.split("│")
        if len(cells) > 4:  # a table row: model | params | fit s | ...
            cells[3] = "#"
        lines.append(" ".join("│".join(cells).split()))
    return lines


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~30 s alone; a busy shared machine is slower
def test_compare_example_reproduces_the_stored_output(tmp_path):
    out = tmp_path / "example"
    result = CliRunner().invoke(app, ["compare", "--example", "--out", str(out), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected = json.loads((GOLDEN / "results.json").read_text(encoding="utf-8"))
    got = strip(json.loads((out / "results.json").read_text(encoding="utf-8")))
    accs = {m["model"]: m["test"]["accuracy"]["value"] for m in got["models"]}
    assert accs["lda"] > 0.97 and accs["majority"] < 0.6  # the golden file itself is sane
    _close(expected, got)
    with np.load(GOLDEN / "predictions.npz") as z:
        stored = {k: z[k] for k in z.files}
    fresh = predictions(out)
    assert sorted(fresh) == sorted(stored)
    for key, value in stored.items():
        if key.endswith("_proba"):
            np.testing.assert_allclose(fresh[key].astype(np.float32),
                                       value.astype(np.float32), atol=2e-3, err_msg=key)
        else:
            np.testing.assert_array_equal(fresh[key], value, err_msg=key)
    golden_text = (GOLDEN / "output.txt").read_text(encoding="utf-8")
    assert _masked(result.output) == _masked(golden_text)
    assert re.search(r"results: .*results\.json", result.output)
