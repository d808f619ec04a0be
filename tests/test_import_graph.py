"""The project's modules import each other without a cycle, at module level.

A cycle of module-level imports loads or fails depending on which of its modules is imported
first (a partially initialised module). The graph is read with `ast`, nothing is imported:
`import x`, `from x import y` and relative imports at module level (class bodies, if/try blocks
included); imports inside functions and under `if TYPE_CHECKING:` are left out. Every cycle
fails the test, named module by module; test_cycle_finder_on_synthetic_graphs shows it failing.

The CPU stand-in (`tiny/`) lives apart from the product: no product module imports it, anywhere
in its file (functions included), but the one seam of STAND_IN_SEAM.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The project's own packages (pyproject's light core `aria` and the stage packages beside it).
PROJECT_PACKAGES = (
    "aria",
    "training",
    "serve",
    "evaluation",
    "preparation",
    "publishing",
    "scripts",
    "tiny",
)
# The product's packages; `tiny` (the stand-in), `scripts` and `tests` drive them.
PRODUCT_PACKAGES = ("aria", "preparation", "training", "serve", "evaluation", "publishing")
STAND_IN = "tiny"
# The one product module that may import the stand-in (tiny/__init__.py says why).
STAND_IN_SEAM = frozenset({"training.bench_training"})


def module_name(path: Path, root: Path = ROOT) -> str:
    """`training/merge.py` → `training.merge`; `aria/__init__.py` → `aria`."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PROJECT_PACKAGES) -> dict:
    """{module name: file} of every .py file in the project's packages."""
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements run when the module is imported: at the top, in class bodies and
    in if/try/with/for blocks; not inside functions nor under `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            yield from module_level_imports(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody"):
                yield from module_level_imports(getattr(node, field, None) or [])
            # except handlers and match cases are not statements; their bodies are.
            for clause in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:
                yield from module_level_imports(clause.body)


def imported_modules(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool
) -> list[str]:
    """The dotted names an import statement loads: `import a.b` → a.b; `from a import b` → a.b
    (a module) or a (b is a name in it); relative imports resolved against `importer`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"] or [base]


def project_module(name: str, modules: Mapping[str, Path]) -> str | None:
    """The project module `name` loads: itself, or its longest prefix that is one (None: outside)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """{module: the project modules it imports at module level}."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {
            target
            for node in module_level_imports(tree.body)
            for imported in imported_modules(node, name, path.name == "__init__.py")
            if (target := project_module(imported, modules)) is not None
        }
    return graph


def strongly_connected_components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of `graph` (iterative), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def one_cycle(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of `component`: [a, b, ..., a]."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child in members and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [start]


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One named cycle per component of more than one module, or per module importing itself."""
    return [
        one_cycle(graph, component)
        for component in strongly_connected_components(graph)
        if len(component) > 1 or component[0] in graph.get(component[0], ())
    ]


def importers_of(package: str, modules: Mapping[str, Path]) -> dict[str, list[int]]:
    """{module: the lines where it imports `package` or a module of it}, for every import in the
    file: module level, functions, `if TYPE_CHECKING:` alike."""
    found: dict[str, list[int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = imported_modules(node, name, path.name == "__init__.py")
            if any(t == package or t.startswith(f"{package}.") for t in targets):
                found.setdefault(name, []).append(node.lineno)
    return found


def test_no_import_cycle_between_project_modules():
    modules = project_modules()
    assert "training.merge" in modules and "aria.settings" in modules, "the project was not found"
    cycles = import_cycles(import_graph(modules))
    assert not cycles, (
        "import cycles between project modules (module-level imports):\n"
        + "\n".join("  " + " → ".join(cycle) for cycle in cycles)
    )


def test_every_package_is_scanned():
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert found <= set(PROJECT_PACKAGES), f"add {sorted(found - set(PROJECT_PACKAGES))} here"


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"a"}, "b": set()}, [["a", "a"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
    ],
    ids=["acyclic", "three-cycle", "self-import", "two-cycles"],
)
def test_cycle_finder_on_synthetic_graphs(graph, expected):
    assert import_cycles(graph) == expected


def test_graph_reads_module_level_imports_only(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from pkg import b\n"
        "from . import c\n"
        "try:\n    import pkg.d\nexcept ImportError:\n    pass\n"
        "if TYPE_CHECKING:\n    from pkg.e import E\n"
        "def f():\n    from pkg import f\n"
    )
    for name in "bcdef":
        (package / f"{name}.py").write_text("from .a import X\n" if name == "b" else "")
    modules = project_modules(tmp_path, ("pkg",))
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.b", "pkg.c", "pkg.d"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_the_product_reaches_the_stand_in_through_one_seam():
    modules = project_modules(packages=PRODUCT_PACKAGES)
    assert "training.bench_training" in modules, "the product was not found"
    importers = importers_of(STAND_IN, modules)
    extra = {name: lines for name, lines in importers.items() if name not in STAND_IN_SEAM}
    assert not extra, (
        f"product modules importing `{STAND_IN}` beside the seam {sorted(STAND_IN_SEAM)}: "
        + ", ".join(f"{name} (line {', '.join(map(str, lines))})" for name, lines in extra.items())
        + "; take what they need through the seam, or move them into tiny/"
    )


def test_stand_in_importers_are_found_at_any_depth(tmp_path):
    package = tmp_path / "product"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "top.py").write_text("import tiny.build\n")
    (package / "inner.py").write_text("def f():\n    from tiny.tokenizer import train_tokenizer\n")
    (package / "typing_only.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tiny import build\n"
    )
    (package / "clean.py").write_text("import tinyurl\nfrom product import top\n")
    modules = project_modules(tmp_path, ("product",))
    assert importers_of("tiny", modules) == {
        "product.top": [1],
        "product.inner": [2],
        "product.typing_only": [3],
    }
