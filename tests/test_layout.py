"""The package's layout: no import cycles, no import strings, one package per source.

Static reading only (no Spark): every `import` in the library, at module level or inside a
function, is an edge of the graph, so a cycle hidden behind a lazy import is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import retail_lake
from retail_lake.config import load_config

PACKAGE = Path(retail_lake.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "demo_data" in parts or "_conf" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The library modules `name` imports (`from a import b` counts b when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    edges.add(f"{base}.{alias.name}")
                elif base in modules:
                    edges.add(base)
    return edges - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []
    # The check sees the graph: the registry reaches every job, and the runner none.
    assert {"retail_lake.ingest", "retail_lake.recommend.job"} <= graph["retail_lake.registry"]
    assert not any(m.startswith("retail_lake.sources") for m in graph["retail_lake.runner"])


def test_capabilities_read_sources_through_their_contracts_only():
    """Gold (forecasting, recommend, locations, images, training) imports a source's
    `tables` module, never its cleanser; and no source package imports a capability."""
    modules = _modules()
    capabilities = ("forecasting", "recommend", "locations", "images", "training")
    crossings = []
    for name, path in modules.items():
        package = name.split(".")[1] if name.count(".") else ""
        for target in _imports(name, path, modules):
            into_source = target.startswith("retail_lake.sources.")
            if package in capabilities and into_source and not target.endswith(".tables"):
                crossings.append(f"{name} -> {target}")
            if package == "sources" and target.split(".")[1] in capabilities:
                crossings.append(f"{name} -> {target}")
    assert crossings == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_library_imports_no_module_by_string():
    """No `importlib.import_module` / `__import__` of the package's own modules."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and any(
                isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and a.value.startswith("retail_lake.")
                for a in node.args
            ):
                func = ast.unparse(node.func)
                if func.endswith(("import_module", "__import__")):
                    offenders.append(f"{name}: {ast.unparse(node)}")
    assert offenders == []


@pytest.mark.parametrize("source", ["rossmann", "online_retail", "geography", "fashion_mnist"])
def test_each_source_package_holds_its_contracts_and_cleanser(source):
    """Everything between a source's landing files and its silver tables is in its package,
    and the registry lists that package's cleansers and contracts."""
    from retail_lake import registry
    from retail_lake.sources import fashion_mnist, geography, online_retail, rossmann

    package = {
        "rossmann": rossmann,
        "online_retail": online_retail,
        "geography": geography,
        "fashion_mnist": fashion_mnist,
    }[source]
    folder = Path(package.__file__).parent
    assert {"tables.py", "cleanse.py"} <= {p.name for p in folder.iterdir()}
    cleanse = __import__(f"{package.__name__}.cleanse", fromlist=["CLEANSERS"])
    tables = __import__(f"{package.__name__}.tables", fromlist=["BRONZE", "SILVER"])
    assert cleanse.CLEANSERS and all(c in registry.CLEANSERS for c in cleanse.CLEANSERS)
    contracts = {c.name for c in (*tables.BRONZE, *tables.SILVER)}
    assert contracts and all(name in registry.CONTRACTS for name in contracts)
    # A cleanser reads its own source's bronze and writes its own silver tables.
    assert {c.bronze for c in cleanse.CLEANSERS} <= contracts


def test_every_registered_contract_and_job_is_reachable():
    from retail_lake import registry

    names = [c.name for c in registry.CONTRACT_LIST]
    assert len(names) == len(set(names))  # no table declared twice
    layers = {n.split(".")[0] for n in names}
    assert layers == {"bronze", "silver", "gold", "ops"}
    # Every step the pipeline runs by default is a registered job.
    assert set(load_config("test").get("pipeline.steps")) <= set(registry.JOBS)
    assert set(registry.FORMATS) == {"csv", "idx"}
    with pytest.raises(registry.UnknownJobError, match="unknown job 'nope'"):
        registry.resolve("nope")
