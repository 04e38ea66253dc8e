"""The package's parts point one way: payloads at the bottom, the call path above them, the middleware above
that, settings, setup and the CLI on top; no import cycle between modules or between parts.

The graph is read from the source with ``ast``, lazy (function-level) imports included, imports under
``if TYPE_CHECKING:`` left out (they never run). ``from a.b import c`` depends on the module ``a.b.c`` when
there is one, else on ``a.b``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests._services import REPO_ROOT

PACKAGE = "dramatiq_ray"
ROOT = REPO_ROOT / PACKAGE

#: Each part (a top-level module or subpackage of the package) and its floor; a part imports only from its own
#: floor or below, and parts of one floor form no cycle.
FLOORS: dict[str, int] = {
    "errors": 0,
    "_version": 0,
    "metrics": 0,
    "payloads": 1,
    "callpath": 2,
    "_otel": 0,
    "tracing": 3,
    "results": 3,
    "execution": 3,
    "delivery": 3,
    "webhooks": 3,
    "retries": 3,
    "settings": 4,
    "_install": 4,
    "cli": 5,
    "demo": 7,  # an application of the package, as a user writes one
    "__init__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that importing ``name`` may run, lazy imports included."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    submodule = f"{target}.{alias.name}"
                    found.add(submodule if submodule in known else target)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {target for target in found if target in known and target != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def part_of(module: str) -> str:
    rest = module[len(PACKAGE) + 1 :]
    return rest.split(".")[0] if rest else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_layers_modules_import_one_another_without_a_cycle() -> None:
    assert cycles(graph()) == []


def test_layers_parts_import_one_another_without_a_cycle() -> None:
    parts: dict[str, set[str]] = {}
    for module, targets in graph().items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets if part_of(t) != part_of(module))
    assert cycles(parts) == []


def test_layers_every_part_has_a_floor() -> None:
    assert {part_of(module) for module in modules()} - {"py"} <= set(FLOORS) | {"py"}


def test_layers_no_part_imports_from_a_floor_above_its_own() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in targets
        if FLOORS.get(part_of(target), 99) > FLOORS.get(part_of(module), -1)
    )
    assert upward == []


def test_layers_payloads_know_nothing_of_dramatiq_middleware_or_ray() -> None:
    offending = []
    for name, path in modules().items():
        if part_of(name) != "payloads":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for imported in names:
                if imported.split(".")[0] == "ray" or imported.startswith(("dramatiq.middleware", "dramatiq.results")):
                    offending.append(f"{name} imports {imported}")
    assert offending == []


def test_layers_the_cycle_finder_finds_a_cycle() -> None:
    # The check above can fail: a two-module loop is reported.
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
