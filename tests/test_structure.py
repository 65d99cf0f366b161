"""The shape of the code: no import circles between project modules (docs/design.md: imports
point one way), and which modules are largest.

Every module under iqs_cli/ and training/ (installed as `iqs_training`) is parsed with `ast`;
each import of a project module, at module level or inside a function (a lazy import is still
an edge: it only hides a circle until that function runs), becomes an edge of the import
graph, relative imports resolved. A circle is a strongly connected component of that graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folder -> the package name it is imported as (pyproject's [tool.setuptools.package-dir]).
PACKAGES = {"iqs_cli": "iqs_cli", "training": "iqs_training"}


def project_modules(repo: Path = REPO) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every .py under the project's package folders."""
    modules = {}
    for folder, package in PACKAGES.items():
        root = repo / folder
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join((package, *parts))] = (path, is_package)
    return modules


def _absolute(name: str, is_package: bool, level: int, module: str | None) -> str:
    """`from <level dots><module> import ...` inside module `name`, as an absolute name."""
    if level == 0:
        return module or ""
    base = name.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The project modules that module `name` imports, anywhere in its file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, is_package, node.level, node.module)
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` only mod.
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
            targets = submodules if len(submodules) == len(node.names) else [source, *submodules]
        else:
            continue
        for target in targets:
            # `import a.b.c` binds a, but runs a.b.c: the edge is to the deepest known module.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)  # itself too: a module importing itself is a circle of one
    return found


def import_graph(repo: Path = REPO) -> dict[str, set[str]]:
    modules = project_modules(repo)
    known = set(modules)
    return {name: imports_of(name, path, is_package, known)
            for name, (path, is_package) in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a circle in them (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        work = [(node, iter(sorted(graph.get(node, ()))))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[current] = min(low[current], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1 or current in graph.get(current, ()):
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def largest_modules(repo: Path = REPO, count: int = 10) -> list[tuple[int, str]]:
    sizes = [(len(path.read_text(encoding="utf-8").splitlines()), name)
             for name, (path, _) in project_modules(repo).items()]
    return sorted(sizes, reverse=True)[:count]


def test_no_import_circles_between_project_modules():
    graph = import_graph()
    assert "iqs_training.train" in graph and "iqs_cli.cli" in graph  # the finder sees the tree
    cycles = import_cycles(graph)
    assert cycles == [], "import circles (move what both sides need into a third module): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


def test_the_finder_sees_a_circle_hidden_in_a_function(tmp_path):
    package = tmp_path / "training"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub.b import thing\n")
    (package / "sub" / "b.py").write_text("def thing():\n    from ..a import x\n    return x\n")
    (package / "c.py").write_text("from . import a\nimport iqs_training.sub.b\n")
    (tmp_path / "iqs_cli").mkdir()
    (tmp_path / "iqs_cli" / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["iqs_training.c"] == {"iqs_training.a", "iqs_training.sub.b"}
    assert import_cycles(graph) == [["iqs_training.a", "iqs_training.sub.b"]]


def test_report_the_largest_modules():
    largest = largest_modules()
    print("\nlargest modules (lines):")
    for lines, name in largest:
        print(f"  {lines:5d}  {name}")
    assert largest and all(lines > 0 for lines, _ in largest)


if __name__ == "__main__":
    # python tests/test_structure.py [REPO]: the circles and largest modules of another tree.
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    for cycle in import_cycles(import_graph(root)):
        print("circle:", " <-> ".join(cycle))
    for lines, name in largest_modules(root):
        print(f"{lines:5d}  {name}")
