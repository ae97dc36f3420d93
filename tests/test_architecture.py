"""The package's shape: floors that import only downwards, no circles, no private imports,
modules and functions of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "cellbench"

#: lowest first; a module may import from its own floor and the floors below
FLOORS = [
    {"exceptions", "_version", "_utils", "_spaces", "_registry", "_config", "_options",
     "_augment_spec", "_value_checks",
     "examples"},
    {"data"},
    {"models"},
    {"train"},
    {"evaluate"},
    {"report"},
    {"tune"},
    {"diagnose"},
    {"experiment"},
    {"estimator", "cli", "__init__", "__main__"},
]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80  # code lines, docstring excluded


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(module: str, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        name = node.module or ""
        return name.removeprefix("cellbench.") if name.startswith("cellbench") else None
    base = module.split(".")
    base = base[:len(base) - node.level]
    if MODULES[module].name == "__init__.py":
        base = module.split(".")[:len(module.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _runtime_imports(module: str) -> list[tuple[str, str]]:
    """(imported module, imported name) outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in skip:
            target = _target(module, node)
            if target is not None:
                found += [(target, a.name) for a in node.names]
    return found


def _floor(module: str) -> int:
    head = module.split(".")[0]
    return next(i for i, floor in enumerate(FLOORS) if head in floor)


def _resolve(target: str, name: str) -> str:
    full = f"{target}.{name}" if target else name
    if full in MODULES or f"{full}.__init__" in MODULES:
        return full
    return target if target in MODULES else f"{target}.__init__"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downwards_and_name_nothing_private(module):
    for target, name in _runtime_imports(module):
        assert not (name.startswith("_") and name != "__version__"), \
            f"{module} imports the private name {name} from {target}"
        if target:
            assert _floor(target) <= _floor(module), \
                f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"


def test_no_import_circles():
    graph = {m: {_resolve(t, n) for t, n in _runtime_imports(m)} for m in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt == node:
                continue
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(
                [*path[path.index(nxt):], nxt] if nxt in path else [*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_readable(module):
    text = MODULES[module].read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{module} is over {MAX_MODULE_LINES}"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant):
                body = body[1:] or body
            length = node.end_lineno - body[0].lineno + 1
            assert length <= MAX_FUNCTION_LINES, \
                f"{module}.{node.name} has {length} lines of code"
