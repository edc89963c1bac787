"""The import rule (DESIGN.md): imports flow one way, and the sweeper plugin imports nothing of the project.

    run.py -> recipes -> (reports, search) -> callbacks -> modules -> datamodules -> core

Every import counts, the ones inside functions too: a lazy import hides a cycle from Python, not from a
reader. The test reads the source (ast), so it also catches imports on code paths no other test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Higher numbers may import lower ones (and their own package), never the reverse.
LAYERS = {"run": 6, "recipes": 5, "reports": 4, "search": 4, "callbacks": 3, "modules": 2, "datamodules": 1, "core": 0}
PLUGIN = "hydra_plugins"
PACKAGES = (*LAYERS, PLUGIN)


def source_files() -> list[Path]:
    files = [ROOT / "run.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules ``path`` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    known = {module_name(p) for p in source_files()}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from recipes import distill` imports the module recipes.distill (its package's __init__ too,
            # but a package importing its own modules is not a cycle worth reporting)
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & known
            names.update(subs or {node.module})
    return {n for n in names if n in known and n.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    return {module_name(p): project_imports(p) - {module_name(p)} for p in source_files()}


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for importer, imported in graph().items():
        top = importer.split(".")[0]
        for name in imported:
            target = name.split(".")[0]
            if top == PLUGIN:
                if target != PLUGIN:
                    wrong.append(f"{importer} -> {name} (the sweeper plugin imports nothing of the project)")
            elif target == PLUGIN:
                continue  # the project may use the plugin's public API
            elif target != top and LAYERS[target] >= LAYERS[top]:
                wrong.append(f"{importer} -> {name}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
WHY = "Long on purpose:"  # in the module's / function's docstring, followed by the reason


def test_files_and_functions_are_short_or_say_why() -> None:
    """STYLE.md: a file does one job and a function fits on a screen, unless its docstring says why not
    (a model file that reads top to bottom, say)."""
    long_ones = []
    for path in source_files():
        text = path.read_text()
        tree = ast.parse(text)
        rel = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_FILE_LINES and WHY not in (ast.get_docstring(tree) or ""):
            long_ones.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and WHY not in (ast.get_docstring(node) or ""):
                    long_ones.append(f"{rel}:{node.lineno} {node.name}(): {length} lines")
    assert not long_ones, f"over {MAX_FILE_LINES} lines per file / {MAX_FUNCTION_LINES} per function " \
        f"without a '{WHY}' docstring line:\n" + "\n".join(long_ones)
