"""The package's shape: no import cycles (lazy imports inside functions included), no private names across
modules, the embedded benchmark reached only through registries, small files and functions.

A cycle means two modules cannot be understood, tested or moved apart; a private name imported from another
module is an API nobody promised; general code that imports a benchmark cannot serve another data set. All
are checked statically, from the source.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "invgen"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, str]]:
    """(module imported, name imported or '') for every invgen import in `path`, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("invgen")]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module.startswith("invgen"):
                # `from invgen.x import y` imports the module invgen.x.y when there is one
                found += [(f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module, a.name)
                          for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    # Package __init__ files only re-export; an edge through one is not a dependency between features.
    return {name: {m for m, _ in _imports(name, path, mods) if m in mods and mods[m].name != "__init__.py"}
            for name, path in mods.items() if path.name != "__init__.py"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle_and_only_that():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_itself_back_through_others():
    graph = _graph()
    assert len(graph) > 50 and graph["invgen.invdiff.train"]  # the graph is read, not empty
    assert _cycles(graph) == []


def test_no_module_imports_a_private_name_of_another():
    mods = _modules()
    private = [(name, module, imported) for name, path in mods.items()
               for module, imported in _imports(name, path, mods) if imported.startswith("_") and module != name]
    assert private == []


# Entry points may name the embedded benchmark: `invgen data digits`, `invgen demo`, and the public API's
# `make_colored_digits` (a lazy export).
BENCHMARK_IMPORTERS = {"invgen", "invgen.cli"}


def test_general_code_reaches_the_benchmarks_only_through_registries():
    mods = _modules()
    leaks = sorted({(name, module) for name, path in mods.items() if not name.startswith("invgen.benchmarks")
                    and name not in BENCHMARK_IMPORTERS
                    for module, _ in _imports(name, path, mods) if module.startswith("invgen.benchmarks")})
    assert leaks == []


def test_no_file_over_400_lines_and_no_function_over_80():
    long_files = [(str(p.relative_to(PACKAGE)), n) for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    long_functions = [(str(p.relative_to(PACKAGE)), node.name, node.end_lineno - node.lineno + 1)
                      for p in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 80]
    assert long_files == [] and long_functions == []
