"""The layout of course_utils, checked from its import statements (CONTRIBUTING.md, "How course_utils is laid out").

* a module imports only from its own subpackage or from lower layers; the tracks (text, vision, llm) never import
  each other; no import cycle, inside a subpackage either;
* losses, metrics and trainers never touch the model cache: only the cache-or-train modules (and ``core``) do;
* no relative import inside a function (lazy imports are for heavy third-party packages only);
* one home and one name per public function, class or constant;
* each subpackage's ``__init__`` lists its modules in ``__all__`` and in its docstring.
"""
from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "course_utils"

#: Layer of each subpackage: a module may import from its own subpackage and from lower numbers only.
LAYERS = {"_lazy": -1, "core": 0, "kd": 1, "evaluation": 2, "training": 3, "text": 4, "vision": 4, "llm": 4,
          "checks": 5, "nbtool": 5, "classroom": 6, "__init__": 7}
#: The only modules that read or write the model cache (cache-or-train), besides ``core`` itself.
CACHE_USERS = {"text.recipes", "llm.pipeline", "llm.on_policy", "llm.gguf", "llm.data"}
#: Modules at the top of their track: nothing else in the track imports them.
TRACK_TOPS = {"text.recipes", "llm.pipeline", "llm.on_policy"}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)  # "" for the package's own __init__


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names (relative to the package root) that a relative ``from … import …`` refers to."""
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    target = base + (node.module.split(".") if node.module else [])
    # ``from .core import cache`` imports the module core.cache; ``from .core.cache import save`` the module core.cache
    return [".".join(target + [alias.name]) for alias in node.names]


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """``(edges, nested)``: module → modules it imports (inside the package), and the relative imports found inside
    a function or class (``"module:line"``). A ``from . import x`` of a module ``x`` counts as an edge to ``x``."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    nested: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top_level = set()
        for node in tree.body:
            top_level.add(node)
            if isinstance(node, ast.If):  # ``if TYPE_CHECKING:`` blocks are module level
                top_level.update(node.body)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            if node not in top_level:
                nested.append(f"{name}:{node.lineno}")
            for target in _resolve(name, path.name == "__init__.py", node):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges, nested


def _layer(module: str) -> tuple[str, int]:
    head = module.split(".")[0] if module else "__init__"
    return head, LAYERS[head]


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a layer or across tracks, and every import cycle."""
    problems = []
    for source, targets in sorted(edges.items()):
        (s_pkg, s_layer) = _layer(source)
        for target in sorted(targets):
            (t_pkg, t_layer) = _layer(target)
            if s_pkg == t_pkg or s_pkg == "__init__":
                continue
            if t_layer > s_layer or (t_layer == s_layer and t_pkg != s_pkg):
                problems.append(f"{source} imports {target}: {t_pkg} is not below {s_pkg}")
    # cycles (depth-first search over the whole graph, packages' __init__ included)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt])
                                if nxt in stack else f"import cycle through {node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return problems


# ------------------------------------------------------------------------------------------------ the package
def test_imports_go_down_the_layers_and_never_cycle():
    edges, _ = import_graph(ROOT)
    assert layer_violations(edges) == []


def test_no_relative_import_inside_a_function():
    _, nested = import_graph(ROOT)
    assert nested == [], f"relative imports inside functions: {nested}; import at module level"


def test_only_cache_or_train_modules_touch_the_cache():
    edges, _ = import_graph(ROOT)
    users = {m for m, targets in edges.items() if "core.cache" in targets and not m.startswith("core")}
    assert users <= CACHE_USERS, f"{sorted(users - CACHE_USERS)} use the model cache; only recipes should"


def test_cache_or_train_modules_sit_on_top_of_their_track():
    edges, _ = import_graph(ROOT)
    for top in TRACK_TOPS:
        track = top.split(".")[0]
        importers = {m for m, targets in edges.items() if top in targets and m.startswith(track + ".")}
        assert importers == set(), f"{sorted(importers)} import {top}, which must stay on top of the {track} track"


def _public_definitions() -> dict[str, list[str]]:
    homes: dict[str, list[str]] = defaultdict(list)
    for path in ROOT.rglob("*.py"):
        module = _module_name(path, ROOT)
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                if not name.startswith("_") and name != "main":  # ``main``: the ``python -m`` entry point
                    homes[name].append(module)
    return homes


def test_one_home_per_public_name():
    twice = {name: where for name, where in _public_definitions().items() if len(where) > 1}
    assert twice == {}, f"defined in more than one module: {twice}"


SUBPACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("package", [p for p in SUBPACKAGES if p != "checks"])
def test_each_subpackage_lists_its_modules(package):
    module = importlib.import_module(f"course_utils.{package}")
    on_disk = sorted(p.stem for p in (ROOT / package).glob("*.py") if not p.stem.startswith("_"))
    assert sorted(module.__all__) == on_disk
    for name in on_disk:
        assert f"``{name}``" in module.__doc__, f"course_utils.{package}'s docstring does not describe {name}"
        assert getattr(module, name).__name__ == f"course_utils.{package}.{name}"  # lazy attribute access works


def test_checks_lists_every_checker_of_every_notebook():
    checks = importlib.import_module("course_utils.checks")
    defined = {name for path in (ROOT / "checks").glob("*.py") if not path.stem.startswith("_")
               for name in importlib.import_module(f"course_utils.checks.{path.stem}").__all__}
    assert set(checks.__all__) == defined | {"CheckFailed", "yours_or_reference"}
    for path in (ROOT / "checks").glob("*.py"):
        if not path.stem.startswith("_"):
            assert f"``{path.stem}``" in checks.__doc__


def test_every_module_exports_what_it_defines():
    for path in ROOT.rglob("*.py"):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        name = "course_utils" + ("." + _module_name(path, ROOT) if _module_name(path, ROOT) else "")
        module = importlib.import_module(name)
        for exported in getattr(module, "__all__", []):
            assert hasattr(module, exported), f"{name}.__all__ lists {exported}, which it does not define"


# ------------------------------------------------------------------------- the checker itself, on a toy package
def _toy_package(tmp_path: Path, extra: dict[str, str]) -> Path:
    files = {"__init__.py": "", "core/__init__.py": "", "core/cache.py": "X = 1\n",
             "kd/__init__.py": "", "kd/losses.py": "from ..core import cache\n",
             "text/__init__.py": "", "text/recipes.py": "from ..kd import losses\n", **extra}
    root = tmp_path / "toy"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_checker_accepts_a_layered_package(tmp_path):
    edges, nested = import_graph(_toy_package(tmp_path, {}))
    assert edges["kd.losses"] == {"core.cache"} and layer_violations(edges) == [] and nested == []


def test_the_checker_catches_an_upward_import(tmp_path):
    root = _toy_package(tmp_path, {"core/cache.py": "from ..text import recipes\n"})
    problems = layer_violations(import_graph(root)[0])
    assert "core.cache imports text.recipes: text is not below core" in problems
    assert any(p.startswith("import cycle") for p in problems)


def test_the_checker_catches_a_track_importing_another(tmp_path):
    root = _toy_package(tmp_path, {"vision/__init__.py": "", "vision/digits.py": "from ..text.recipes import X\n"})
    assert layer_violations(import_graph(root)[0]) == ["vision.digits imports text.recipes: text is not below vision"]


def test_the_checker_catches_a_function_level_relative_import(tmp_path):
    root = _toy_package(tmp_path, {"kd/features.py": "def f():\n    from ..core import cache\n"})
    assert import_graph(root)[1] == ["kd.features:2"]
