"""The architecture, checked: library code never imports the command line, the service never imports
click, and the modules' imports form no cycle (package faces aside: a package's __init__ exports its
own modules' names)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "connectome"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every connectome module this file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("connectome", "click")}


FILES = {module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {m: {i for i in imports_of(p) if i in FILES or i == "click"} for m, p in FILES.items()}


def test_library_code_never_imports_the_command_line():
    for m, deps in GRAPH.items():
        if not m.startswith("connectome.cli") and m != "connectome.__main__":
            assert not {d for d in deps if d.startswith("connectome.cli")}, m
            if m != "connectome.__main__":
                assert "click" not in deps, f"{m} imports click"


def test_no_import_cycles():
    faces = {m for m, p in FILES.items() if p.name == "__init__.py"}
    graph = {m: {d for d in deps if d in FILES and d not in faces} for m, deps in GRAPH.items() if m not in faces}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
