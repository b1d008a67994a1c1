"""The house rules for imports, read from the source with ``ast`` (issue 11):

* no import cycles between spiderfarm's modules (``TYPE_CHECKING`` imports aside);
* no module of ``spiderfarm.worker`` imports ``spiderfarm.frontier`` (they share
  ``spiderfarm.protocol``);
* only ``__main__`` modules import ``spiderfarm.cli``;
* the worker's entry (``spiderfarm.worker.main``, which crawl forks from) reaches nothing
  of the server's, the console's, the feeds' or the cli's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "spiderfarm"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> set[str]:
    """The spiderfarm modules ``path`` imports (anywhere but under TYPE_CHECKING)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spiderfarm"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("spiderfarm"):
                found.add(target)
                for alias in node.names:  # "from . import exceptions" imports a module
                    candidate = f"{target}.{alias.name}"
                    if candidate in MODULES:
                        found.add(candidate)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports_of(p) for p in FILES}


def _resolve(target: str) -> str:
    while target not in MODULES and "." in target:
        target = target.rpartition(".")[0]
    return target


def test_there_are_no_import_cycles() -> None:
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    graph = {
        m: {t for t in map(_resolve, deps) if t != m and not t.startswith(m + ".")}
        for m, deps in GRAPH.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_worker_module_imports_the_frontier() -> None:
    offenders = {
        m: sorted(t for t in deps if _resolve(t).startswith("spiderfarm.frontier"))
        for m, deps in GRAPH.items()
        if m == "spiderfarm.worker" or m.startswith("spiderfarm.worker.")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_only_main_modules_import_the_cli() -> None:
    def is_cli(module: str) -> bool:
        return module == "spiderfarm.cli" or module.startswith("spiderfarm.cli.")

    importers = sorted(
        m
        for m, deps in GRAPH.items()
        if not is_cli(m) and any(is_cli(_resolve(t)) for t in deps)
    )
    assert all(m.endswith("__main__") for m in importers), importers


SERVER_SIDE = ("spiderfarm.cli", "spiderfarm.server", "spiderfarm.frontier",
               "spiderfarm.console", "spiderfarm.feeds")  # fmt: skip


def reached_from(module: str) -> set[str]:
    """Every spiderfarm module importing ``module`` loads (its packages' ``__init__`` too)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = _resolve(todo.pop())
        parts = name.split(".")
        for n in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            step = ".".join(parts[:n])
            if step in MODULES and step not in seen:
                seen.add(step)
                todo.extend(GRAPH[step])
    return seen


def test_the_worker_entry_reaches_nothing_of_the_server() -> None:
    reached = reached_from("spiderfarm.worker.main")
    assert "spiderfarm.worker.pump" in reached and "spiderfarm.fetch" in reached
    packages = tuple(name + "." for name in SERVER_SIDE)
    assert sorted(m for m in reached if m in SERVER_SIDE or m.startswith(packages)) == []


def test_the_rules_see_the_imports_they_police() -> None:
    """The parser finds what is there: a known import of each kind."""
    assert "spiderfarm.protocol" in GRAPH["spiderfarm.worker.pump"]
    assert "spiderfarm.cli" in GRAPH["spiderfarm.server.__main__"]
    assert "spiderfarm.worker.main" in GRAPH["spiderfarm.prespawn"]  # inside prespawn()
    assert "spiderfarm.server" in reached_from("spiderfarm.cli")


def test_loading_the_cli_loads_no_web_app() -> None:
    """crawl forks its workers, loads the cli, starts the server and tells the workers
    where to go before it builds the console: the console's web app (aiohttp.web,
    prometheus_client: ~50 ms) is loaded only then, off the workers' way."""
    code = (
        "import sys, spiderfarm.cli\n"
        "print(sorted(m for m in ('aiohttp.web', 'prometheus_client', "
        "'spiderfarm.console.web', 'spiderfarm.console.snapshots') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
