"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_starts_with_the_two_commands():
    """After the environment: a virtual environment, then (CPU-only) the CPU build of torch."""
    lines = README.read_text(encoding="utf-8").splitlines()
    code = lines[lines.index("```bash") + 1:lines.index("```bash") + 5]
    assert code[0].startswith("python -m venv .venv")
    assert code[1].startswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert code[2].startswith('pip install -e ".[dev]" && cellbench doctor --example')
    assert code[3].startswith("pytest")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_runs(block):
    exec(compile(block, str(README), "exec"), {})


EXAMPLES = sorted((README.parent / "examples").glob("*/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem + "-" + p.parent.name for p in EXAMPLES])
def test_example_configs_name_real_models_and_a_listed_reference(path):
    """The seeds' experiments need ../shared data to run; their configs must at least be valid."""
    from cellbench._config import RunConfig
    from cellbench.models import parse_models

    cfg = RunConfig.from_yaml(path.read_text(encoding="utf-8"))
    labels = [m.label for m in parse_models(cfg.models or (cfg.train.model,))]
    assert cfg.reference is None or cfg.reference in labels
    assert cfg.data.path and str(cfg.data.path).startswith("../shared/data/")


def test_readme_lists_every_finding_id_and_fix():
    from cellbench.diagnose.findings import FIXES, VOCABULARY

    text = README.read_text(encoding="utf-8")
    for entry in VOCABULARY.values():
        assert f"| `{entry.id}` | {entry.meaning} | {entry.detection} |" in text, entry.id
    for fix in FIXES:
        assert f"| `{fix}` |" in text, fix
