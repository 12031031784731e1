"""The layout: the kono package's modules import each other without a cycle, and README's Layout table
names every top-level path of the repository."""

import ast
import re
import subprocess

from tests.lab import REPO


def kono_imports() -> dict[str, set[str]]:
    """{module: the kono modules it imports, anywhere in it} for every module of the package."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "kono").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kono"):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                imported.update(name if (REPO / (name.replace(".", "/") + ".py")).exists() else node.module
                                for name in names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("kono"))
        graph[module] = imported - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, path + [module])
        done.add(module)

    for module in graph:
        visit(module, [])
    return found


def test_no_import_cycle_among_the_modules():
    graph = kono_imports()
    assert "kono.stack" in graph and "kono.commands" in graph["kono.stack"]  # the reader reads imports
    assert cycles(graph) == []


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_readme_layout_names_every_top_level_path():
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.split()
    top = {path.split("/")[0] for path in tracked}
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layout"):]
    table = table[:table.index("\n## ")] if "\n## " in table else table
    named = {re.split(r"[/ ]", cell)[0] for cell in re.findall(r"`([^`]+)`", "\n".join(
        line.split("|")[1] for line in table.splitlines() if line.startswith("| `")))}
    assert sorted(top - named) == []
