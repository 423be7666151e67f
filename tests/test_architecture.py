"""The layout rules of docs/architecture.md, checked on the source: the stages depend downward only (no import
circles, no module importing from a higher stage), every module listed in the architecture tree exists and every
module is listed, no module over 400 lines, no module named after nothing ("extra", "misc", "utils")."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "analyzer"

# Stages, lowest first: a module may import from its own stage or a lower one.
LAYERS = [
    ["analyzer.errors", "analyzer.config", "analyzer.progress", "analyzer.vectors"],
    ["analyzer.ingest"],
    ["analyzer.encoders", "analyzer.hashes"],
    ["analyzer.concepts"],
    ["analyzer.tagging"],
    ["analyzer.store"],
    ["analyzer.engines"],
    ["analyzer.index"],
    ["analyzer.risk"],
    ["analyzer.escalation", "analyzer.recommend"],
    ["analyzer.policy"],
    ["analyzer.reporting"],
    ["analyzer.pipeline", "analyzer.run", "analyzer.stress"],
    ["analyzer.api", "analyzer.notebook"],
    ["analyzer.cli"],
]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _layer(module: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return i
    raise AssertionError(f"{module} belongs to no stage of LAYERS (add it to docs/architecture.md and here)")


def _imports(path: Path, module: str) -> set[str]:
    """Every analyzer module ``path`` imports, at any depth of the file (function-level imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("analyzer")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("analyzer"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from analyzer.x import submodule`
    modules = _modules()
    return {m for m in out if m in modules and m != module}


def _graph() -> dict[str, set[str]]:
    return {m: _imports(p, m) for m, p in _modules().items()}


def test_no_relative_imports_and_no_upward_imports():
    bad = []
    for module, path in _modules().items():
        if module == "analyzer":  # the package's lazy public API (analyzer.scan, ...) imports api on first use
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree)):
            bad.append(f"{module}: relative import")
        for target in _imports(path, module):
            if target == "analyzer":
                continue
            if _layer(target) > _layer(module):
                bad.append(f"{module} (stage {_layer(module)}) imports {target} (stage {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    graph = _graph()
    graph.pop("analyzer", None)
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for t in graph.get(m, ()):
            if t == "analyzer":
                continue
            # a package's __init__ importing its own submodules is how packages export names, not a circle
            if t.startswith(m + "."):
                continue
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t] if t in stack else [m, t])
            elif state.get(t) is None:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if state.get(m) is None:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_in_stage_order():
    import importlib

    order = sorted((m for m in _modules() if m != "analyzer.cli.__main__"), key=lambda m: (_layer(m) if m != "analyzer" else -1, m))
    for m in order:
        importlib.import_module(m)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size_and_name(module):
    path = _modules()[module]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): split it by what it holds"
    assert not re.search(r"(^|_)(extra|misc|utils?|helpers?|stuff)($|_)", path.stem), f"{path.name} says nothing"


def test_architecture_doc_tree_matches_the_code():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    tree = doc.split("```")[1]  # the document opens with the tree
    listed = set(re.findall(r"^\s*(\S+\.py)\b", tree, flags=re.M))
    files, stack = set(), []
    for line in tree.splitlines():  # rebuild paths from the indentation of the tree
        m = re.match(r"^(\s*)(\S+)", line)
        if not m:
            continue
        depth, name = len(m.group(1)) // 2, m.group(2)
        stack = stack[:depth] + [name]
        if name.endswith(".py"):
            files.add("/".join(s.rstrip("/") for s in stack))
    actual = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert listed, "docs/architecture.md must open with the module tree"
    assert files == actual, (f"in the code, not in the tree: {sorted(actual - files)}; "
                             f"in the tree, not in the code: {sorted(files - actual)}")
