"""The package's layers (CONTRIBUTING.md, "Layers"): no import cycle among oodlib's modules, counting imports
inside functions and under ``if TYPE_CHECKING``; detectors never import the store, the training loop or the
recipes; one module registers every recipe and the store imports it; a recipe module imports no sibling but
``recipes.common`` (the store's cache key hashes exactly the recipe's module and ``common``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "oodlib"
TRAINING_LAYER = ("oodlib.store", "oodlib.training", "oodlib.recipes", "oodlib.samplers")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under the package directory ``root``."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``import name`` loads last (``pkg.mod.attr`` → ``pkg.mod``), or None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, path: Path) -> list[str]:
    """Every absolute name an ``import`` or ``from ... import`` anywhere in the file refers to."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names += [source] + [f"{source}.{alias.name}" for alias in node.names]
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (function-level imports included). Importing ``a.b.c`` also
    runs the packages ``a.b`` above it, so those count too — except a package the importer lies in, which is
    already being imported when its own modules run."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in _imported_names(module, path):
            target = _resolve(name, modules)
            while target and target != root.name:
                if target != module and not module.startswith(target + "."):
                    graph[module].add(target)
                target = target.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    return "\n".join(f"  {m} -> {sorted(graph[m] & set(component))}" for m in component)


GRAPH = import_graph(PACKAGE)


def test_no_import_cycle_counting_function_level_imports():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n\n".join(_describe(GRAPH, c) for c in found)


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def late():\n    from .c import thing\n    return thing\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n")
    (package / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_importing_a_submodule_counts_its_package(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("from .. import top\n")
    (package / "top.py").write_text("from pkg.sub.leaf import name\n")
    graph = import_graph(package)
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.leaf"}
    assert "pkg.sub" not in graph["pkg.sub.leaf"]  # a module does not import the package it lies in
    assert cycles(graph) == [["pkg.sub", "pkg.sub.leaf", "pkg.top"]]


LAYERS = {1: ("_checks", "utils", "terminal", "losses", "params"), 2: ("data", "models", "metrics", "flows"),
          3: ("attack", "autoencoder", "detectors", "defenses.atom", "defenses.bal"),
          4: ("training", "samplers", "recipes"), 5: ("store",)}
"""CONTRIBUTING.md's layers 1-5 (a name covers its submodules); every other module is in layer 6, the top."""


def layer(module: str) -> int:
    """The layer of ``oodlib.<name>``: that of the longest name of :data:`LAYERS` it is or lies in, else 6."""
    name, best = module.removeprefix("oodlib."), (0, 6)
    for number, names in LAYERS.items():
        for entry in names:
            if (name == entry or name.startswith(entry + ".")) and len(entry) > best[0]:
                best = (len(entry), number)
    return best[1]


def test_a_module_imports_only_from_its_own_layer_or_below():
    upward = [f"{m} (layer {layer(m)}) -> {t} (layer {layer(t)})" for m in sorted(GRAPH) for t in sorted(GRAPH[m])
              if layer(t) > layer(m)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_layer_lookup():
    assert [layer(m) for m in ("oodlib.losses", "oodlib.flows", "oodlib.detectors.glow", "oodlib.defenses.atom",
                               "oodlib.defenses.leaderboard", "oodlib.recipes.jem", "oodlib.store",
                               "oodlib.experiments")] == [1, 2, 3, 3, 6, 4, 5, 6]


DETECTOR_MODULES = sorted(m for m in GRAPH if m.startswith("oodlib.detectors")) + ["oodlib.defenses.atom",
                                                                                   "oodlib.defenses.bal"]


@pytest.mark.parametrize("module", DETECTOR_MODULES)
def test_detectors_never_import_the_store_the_training_loop_or_the_recipes(module):
    banned = {t for t in GRAPH[module] if t.startswith(TRAINING_LAYER)}
    assert not banned, f"{module} imports {sorted(banned)}"


def test_one_module_imports_every_recipe_module_and_the_store_imports_it():
    recipe_modules = {m for m in GRAPH if m.startswith("oodlib.recipes.")}
    assert {"oodlib.recipes.standard", "oodlib.recipes.jem", "oodlib.recipes.atom"} <= recipe_modules
    assert GRAPH["oodlib.recipes"] >= recipe_modules
    importers = {m for m, targets in GRAPH.items() if targets & recipe_modules and not m.startswith("oodlib.recipes")}
    assert importers == set(), f"only oodlib.recipes imports the recipe modules, not {sorted(importers)}"
    assert "oodlib.recipes" in GRAPH["oodlib.store"]
    assert not [m for m, targets in GRAPH.items() if "oodlib.recipes" in targets and m != "oodlib.store"]


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("oodlib.recipes.")))
def test_a_recipe_module_imports_no_sibling_but_common(module):
    siblings = {t for t in GRAPH[module] if t.startswith("oodlib.recipes.")} - {"oodlib.recipes.common"}
    assert not siblings, f"{module} imports {sorted(siblings)}: the store's cache key would not cover them"


def test_registered_recipes_live_in_the_recipe_package():
    import inspect

    from oodlib import store, training  # noqa: F401  (the store registers every recipe)

    for name, recipe in training.RECIPES.items():
        assert inspect.getmodule(recipe).__name__.startswith("oodlib.recipes."), name
