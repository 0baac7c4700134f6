"""The import graph of gan_dist points down only (docs: DESIGN.md, "Where the shape is going"): every module sits in
one layer, imports (at the top or inside a function) only from its own layer or below, and no modules import each
other in a circle. Drawn from the source with ast, so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gan_dist"

# Bottom to top; a module belongs to the layer of the longest name (under gan_dist.) that prefixes it.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "seeds", "imaging", "progress", "storage", "config", "models"),
    ("data", "masks", "tracking", "search_space"),
    ("checkpoint",),
    ("eval",),  # the metric library the training loop measures with
    ("train",),
    # Inference: the commands that load checkpoints or runs and report on them.
    ("sample", "translate", "complete", "explore", "synthetic", "evaluate", "augmentation_study", "report",
     "tune_results"),
    # The runtime drives the loop or a command locally or through Ray; bench times the training step both ways.
    ("runtime", "bench"),
    ("cli", "__main__"),
]


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the gan_dist modules it imports (a `from pkg import name` counts as pkg.name when that is a
    module, else as pkg)."""
    modules = {module_name(path, package): path for path in package.rglob("*.py")}

    def known(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in _executed(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {known(a.name) for a in node.names if a.name.startswith("gan_dist")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                if base.startswith("gan_dist"):
                    imported |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base)
                                 for a in node.names}
        graph[name] = imported - {name, "gan_dist"}
    return graph


def _executed(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`: imports for annotations only, never run."""
    found = []

    def visit(node: ast.AST) -> None:
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if not (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)):
                visit(child)

    visit(tree)
    return found


def layer(module: str) -> int:
    inner = module.removeprefix("gan_dist.")
    found = [(len(prefix), level) for level, names in enumerate(LAYERS) for prefix in names
             if inner == prefix or inner.startswith(prefix + ".")]
    assert found, f"{module} sits in no layer: add it to LAYERS"
    return max(found)[1]


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() if a != "gan_dist" for b in targets
                  if layer(b) > layer(a))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_runs_up_a_layer():
    assert upward(import_graph()) == []


def test_no_modules_import_each_other_in_a_circle():
    assert circles(import_graph()) == []


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    package = tmp_path / "gan_dist"
    (package / "eval").mkdir(parents=True)
    (package / "eval" / "__init__.py").write_text("")
    (package / "eval" / "evaluate.py").write_text("def f():\n    from gan_dist.sample import load\n")
    (package / "sample.py").write_text("from typing import TYPE_CHECKING\nfrom gan_dist.eval import evaluate\n"
                                       "if TYPE_CHECKING:\n    from gan_dist.cli import main\n")
    graph = import_graph(package)
    assert graph["gan_dist.eval.evaluate"] == {"gan_dist.sample"}
    assert graph["gan_dist.sample"] == {"gan_dist.eval.evaluate"}  # its TYPE_CHECKING import is left out
    assert upward(graph) == ["gan_dist.eval.evaluate -> gan_dist.sample"]
    assert circles(graph) == [["gan_dist.eval.evaluate", "gan_dist.sample"]]
