"""The house rules that keep the package readable: one direction of imports, no import cycle, short
functions, and a README module map that matches the tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "neuron_encoder"
MAX_LINES = 60


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Package modules `name` imports, at top level or inside functions (lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules() and m != name}


def test_the_package_has_no_import_cycle():
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    graph = {name: {m for m in deps if m != "neuron_encoder"} for name, deps in graph.items()}  # the root re-exports
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join(stack + [node, dep])}"
            if dep not in state:
                visit(dep, stack + [node])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_loading_an_artifact_imports_no_compiler_or_checkpoint_code():
    code = ("import sys, neuron_encoder.runtime; "
            "print(sorted(m for m in sys.modules if m.startswith('neuron_encoder')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for module in ("compiler", "weights", "models", "bench", "cli"):
        assert f"'neuron_encoder.{module}" not in loaded, loaded


def test_functions_are_short_or_say_why():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_the_readme_module_map_matches_the_tree():
    """Every module is on the map once, in its folder; the map names nothing that is not there."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Module map", 1)[1].split("```", 2)[1]
    listed, folder = [], ""
    for line in block.splitlines():
        match = re.match(r"^( +)([a-z0-9_]+(?:\.py|/))", line)
        if not match:
            continue
        depth, entry = len(match.group(1)) // 2, match.group(2)
        if entry.endswith("/"):
            folder = entry if depth == 1 else folder
        else:
            listed.append(entry if depth == 1 else folder + entry)
    files = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert sorted(listed) == files, (f"missing from the map: {sorted(set(files) - set(listed))}; "
                                     f"not in the tree: {sorted(set(listed) - set(files))}")
    order = {"neuron_encoder." + entry[:-3].replace("/", "."): i for i, entry in enumerate(listed)}
    for name, position in order.items():
        later = [m for m in imports_of(name, modules()[name]) if order.get(m, -1) > position]
        assert not later, f"{name} imports {later}, listed below it: the map is not in dependency order"
