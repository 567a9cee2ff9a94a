"""Imports run one way. The pipeline audio -> transcription -> vocabulary -> sections -> review -> documents ->
fhir is also the import order: a stage may use what an earlier stage made, never a later one; the use cases
(dictation, realtime, subscriptions) sit above the stages, the HTTP layer above them, the entry points on top.
A cycle between packages, or an import against this order, fails here with the file that makes it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "service"

# Earliest first. A package may import its own layer's packages only in the foundation (errors counts in metrics).
LAYERS: list[set[str]] = [
    {"config", "logs", "metrics", "errors"},
    {"audio"},
    {"transcription"},
    {"vocabulary"},   # chart terms -> decoding hints; pure (the chart is read by fhir/chart_reader.py)
    {"sections"},
    {"review"},
    {"documents"},
    {"fhir"},
    {"auth"},
    {"dictation", "realtime"},
    {"subscriptions"},
    {"web"},
    {"api"},
    {"serving"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
FOUNDATION = LAYERS[0]


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "service" and len(parts) > 1 else None


def import_graph() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> the files that import, for every import between two packages of service/."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent)
        here = _unit(".".join(relative.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this file's package
                    base = relative.parent.parts[: len(relative.parent.parts) - node.level + 1]
                    names = [".".join([*base, node.module or ""]).rstrip(".")]
                else:
                    names = [node.module or ""]
                names += [f"{names[0]}.{alias.name}" for alias in node.names]  # `from service import metrics`
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            targets = {_unit(name) for name in names} - {None, here}
            if here is not None:
                for target in targets:
                    if (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file():
                        edges[(here, target)].append(str(relative))
    return edges


def _layer(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"service/{unit} is in no layer of {__file__}: add it where it belongs")


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_packages():
    edges = import_graph()
    cycles = _cycles(set(edges))
    assert not cycles, "import cycles: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{a}->{b}: {edges[(a, b)][0]}" for a in c for b in c if (a, b) in edges)
        + ")" for c in cycles)


def test_every_import_runs_down_the_layers():
    wrong = [f"{files[0]} imports service.{b} (layer {_layer(b)}) from service.{a} (layer {_layer(a)})"
             for (a, b), files in sorted(import_graph().items())
             if _layer(b) > _layer(a) or (_layer(b) == _layer(a) and a not in FOUNDATION)]
    assert not wrong, "imports against the pipeline's order:\n" + "\n".join(wrong)


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The two tests above would pass on an empty graph: prove they read real imports and catch both faults."""
    edges = import_graph()
    assert ("fhir", "documents") in edges and ("api", "dictation") in edges and ("errors", "metrics") in edges
    assert _cycles({("cli", "demo"), ("demo", "cli"), ("fhir", "documents")}) == [["cli", "demo"]]
    assert _layer("vocabulary") < _layer("fhir")  # the chart is read by fhir, never the other way round


def test_only_the_dependencies_module_reads_app_state():
    """Routers and middleware get what start-up built through service/api/deps.py (FastAPI dependencies), so a
    reader finds every shared object in one place; app.py builds it."""
    readers = [str(path.relative_to(PACKAGE.parent)) for path in (PACKAGE / "api").rglob("*.py")
               if path.name not in {"deps.py", "app.py"} and "app.state" in path.read_text()]
    assert not readers, f"these read app.state directly instead of through service/api/deps.py: {readers}"
