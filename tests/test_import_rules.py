"""The import rule of docs/development.md, read from engine/'s source with `ast` (nothing is imported).

Layers, and what each may import from engine/:

    errors     nothing                     (engine/__init__.py too: it holds the version only)
    core       core, errors                and nothing impure: see test_core_is_pure
    ports      core, errors
    local      local, core, errors
    run        core, ports, local, errors  (run/ and adapters/ never import each other)
    adapters   core, ports, local, errors
    app        all of the above
    cli        app and below; cli/common.py imports no other cli module
    action     cli and below               (engine/__main__.py too)

Every import counts, wherever it sits: at module level, inside a function, and under
`if TYPE_CHECKING:` (it runs at type-check time only, but it is still a dependency in that
direction, so it counts for the direction and for cycles alike).

KNOWN_* sets hold what other work in progress has not fixed yet. A test fails on anything
found that is not in its set, and on an entry that is no longer found: the sets only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"

BELOW_APP = {"core", "ports", "local", "run", "adapters", "errors"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"core", "errors"},
    "ports": {"core", "errors"},
    "local": {"local", "core", "errors"},
    "run": {"run", "core", "ports", "local", "errors"},
    "adapters": {"adapters", "core", "ports", "local", "errors"},
    "app": {"app", *BELOW_APP},
    "cli": {"cli", "app", *BELOW_APP},
    "action": {"cli", "app", *BELOW_APP},
}

# importer -> imported, as the failure message spells it
KNOWN_VIOLATIONS: set[str] = set()
# the modules of each import cycle, sorted and joined by " "
KNOWN_CYCLES: set[str] = set()
# importer -> imported: a function-level engine import without a `# lazy:` comment
KNOWN_UNMARKED_LAZY: set[str] = set()
# module: what it does that core/ must not (see IMPURE_*)
KNOWN_IMPURE: set[str] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # an engine module (or package) name
    line: int
    in_function: bool
    lazy_comment: bool  # `# lazy:` on the import's lines or the comment line just above

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ENGINE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if module in ("engine", "engine.errors"):
        return "errors"
    if module in ("engine.action", "engine.__main__"):
        return "action"
    if parts[1] == "ports":
        return "ports"
    return parts[1]


def _is_package(module: str) -> bool:
    return modules()[module].name == "__init__.py"


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The engine modules this statement imports (a `from P import name` of a submodule: it)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "engine" or alias.name.startswith("engine."):
                yield alias.name
        return
    base = node.module or ""
    if node.level:  # relative: from the importer's package, up level - 1
        package = importer if _is_package(importer) else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if not (base == "engine" or base.startswith("engine.")):
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in modules() else base


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, in_function: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, in_function or nested)


def _has_lazy_comment(lines: list[str], node: ast.stmt) -> bool:
    end = node.end_lineno or node.lineno
    span = lines[node.lineno - 1 : end]
    above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
    return any("# lazy:" in line for line in span) or (above.startswith("#") and "# lazy:" in above)


@cache
def imports() -> list[Import]:
    found = []
    for module, path in modules().items():
        source = path.read_text()
        lines = source.splitlines()
        for node, in_function in _walk(ast.parse(source, str(path))):
            for imported in _resolve(module, node):
                if imported in modules():
                    marked = _has_lazy_comment(lines, node)
                    found.append(Import(module, imported, node.lineno, in_function, marked))
    return found


def violations() -> dict[str, Import]:
    found: dict[str, Import] = {}
    for imp in imports():
        if imp.importer == imp.imported:
            continue
        wrong = layer(imp.imported) not in ALLOWED[layer(imp.importer)]
        common = imp.importer == "engine.cli.common" and imp.imported.startswith("engine.cli.")
        if wrong or common:
            found.setdefault(str(imp), imp)
    return found


def _why(imp: Import) -> str:
    path = modules()[imp.importer].relative_to(ENGINE.parent)
    if imp.importer == "engine.cli.common":
        return f"{imp}  ({path}:{imp.line}: cli/common.py imports no other cli module)"
    allowed = ", ".join(sorted(ALLOWED[layer(imp.importer)])) or "nothing from engine"
    return f"{imp}  ({path}:{imp.line}: {layer(imp.importer)} may import {allowed})"


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in modules()}
    for imp in imports():
        if imp.importer != imp.imported:
            edges[imp.importer].add(imp.imported)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def a_cycle(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle through the component's first module, as a path that returns to it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest way back to start
        node = queue.pop(0)
        for child in sorted(edges[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def check_known(found: dict[str, str], known: set[str], what: str) -> None:
    new = sorted(key for key in found if key not in known)
    gone = sorted(known - set(found))
    message = []
    if new:
        message.append(f"{what}:\n  " + "\n  ".join(found[key] for key in new))
    if gone:
        message.append(
            f"no longer {what}; remove from the test's known set:\n  " + "\n  ".join(gone)
        )
    assert not message, "\n".join(message)


# --- the rules -------------------------------------------------------------------------------


def test_the_parser_sees_engine() -> None:
    """A guard for the tests below: they read real modules and real imports."""
    assert {"engine.errors", "engine.ports", "engine.cli.main", "engine.core.spec"} <= set(
        modules()
    )
    assert any(i.importer == "engine.cli.main" and i.in_function is False for i in imports())
    assert all(layer(module) in ALLOWED for module in modules()), sorted(
        {layer(m) for m in modules()} - set(ALLOWED)
    )


def test_imports_run_one_way() -> None:
    found = {key: _why(imp) for key, imp in violations().items()}
    check_known(found, KNOWN_VIOLATIONS, "imports against the direction (importer -> imported)")


def test_no_import_cycles() -> None:
    edges = graph()
    found = {
        " ".join(component): "cycle: " + " -> ".join(a_cycle(edges, component))
        for component in strongly_connected(edges)
    }
    check_known(found, KNOWN_CYCLES, "import cycles")


def test_function_level_engine_imports_say_why() -> None:
    found = {
        str(imp): f"{imp}  ({modules()[imp.importer].relative_to(ENGINE.parent)}:{imp.line})"
        for imp in imports()
        if imp.in_function and not imp.lazy_comment
    }
    check_known(found, KNOWN_UNMARKED_LAZY, "function-level engine imports without `# lazy: why`")


# core/ is pure: no I/O, no clock, no environment, no processes, no docker/git/click/rich
IMPURE_MODULES = {
    "subprocess",
    "socket",
    "shutil",
    "tempfile",
    "http",
    "urllib",
    "docker",
    "git",
    "click",
    "rich",
    "fsspec",
    "threading",
}
IMPURE_CALLS = {
    ("os", "environ"),
    ("os", "getenv"),
    ("os", "getcwd"),
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "sleep"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
}


def impurities(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            names = []
        found += [f"imports {n}" for n in names if n.split(".")[0] in IMPURE_MODULES]
        attribute = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if attribute and (node.value.id, node.attr) in IMPURE_CALLS:  # type: ignore[attr-defined]
            found.append(f"uses {node.value.id}.{node.attr}")  # type: ignore[attr-defined]
        called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if called and node.func.id in ("open", "print", "input"):  # type: ignore[attr-defined]
            found.append(f"calls {node.func.id}()")  # type: ignore[attr-defined]
    return sorted(set(found))


def test_core_is_pure() -> None:
    found = {}
    for module, path in modules().items():
        if layer(module) == "core" or module == "engine.errors":
            for what in impurities(path):
                found[f"{module}: {what}"] = f"{module}: {what}"
    check_known(found, KNOWN_IMPURE, "impure code in core/ (or errors.py)")


# --- the checker itself, on tiny graphs ------------------------------------------------------


def test_cycle_finder_names_the_modules_of_each_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}, "f": set()}
    components = strongly_connected(edges)
    assert sorted(components) == [["a", "b", "c"], ["e", "e2"]]
    assert a_cycle(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_check_known_fails_on_new_and_on_stale_entries() -> None:
    check_known({"x -> y": "x -> y"}, {"x -> y"}, "bad")
    for found, known, said in (
        ({"x -> y": "x -> y (why)"}, set(), "x -> y (why)"),
        ({}, {"x -> y"}, "no longer bad"),
    ):
        try:
            check_known(found, known, "bad")
        except AssertionError as error:
            assert said in str(error)
        else:
            raise AssertionError("check_known passed")


def test_impurities_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os, subprocess\nfrom datetime import datetime\n"
        "def f():\n    from rich import print as p\n    return os.environ, datetime.now(), open('x')\n"
    )
    assert impurities(module) == [
        "calls open()",
        "imports rich",
        "imports subprocess",
        "uses datetime.now",
        "uses os.environ",
    ]
    module.write_text("import os.path\nfrom engine.core import spec\nX = os.path.join('a', 'b')\n")
    assert impurities(module) == []


def test_layers_of_names() -> None:
    assert layer("engine.core.triggers.cron") == "core"
    assert layer("engine.ports") == "ports"
    assert layer("engine.__main__") == "action"
    assert layer("engine") == "errors"
    assert "run" not in ALLOWED["adapters"] and "adapters" not in ALLOWED["run"]
