"""The stage layout of ../DESIGN.md, checked on the import graph: every import of an aimbench
module (at the top or inside a function) goes to the same stage or a lower floor, launchers use the
probes only through their package surface, terminal libraries stay in the user-facing layer, and
modules stay small enough to hold one concept."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aimbench"

# Lowest first. A module may import its own stage and any lower floor, never a higher or a sibling one.
FLOORS: list[set[str]] = [
    {
        "version",
        "errors",
        "paths",
        "atomic",
        "checksum",
        "hashing",
        "dtypes",
        "devices",
        "confine",
        "safetensors_bytes",
        "provenance",
        "identity",
        "names",
        "special_files",
        "distributed",
        "stats",
    },
    {"cards"},
    {"models", "data"},
    {"adapters"},
    {"probes", "pretrain"},
    {"store"},
    {"launch"},
    {"report"},
    {"cli", "api", "demo", "__main__", "(package)"},
]
SHARED_FLOORS = (0, len(FLOORS) - 1)  # the bottom helpers use each other; so does the user-facing top
TERMINAL_LIBRARIES = ("rich", "typer", "click")
TERMINAL_ALLOWED = ("cli", "demo", "report.render", "pretrain.progress")  # what draws on the terminal


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def _floor(stage: str) -> int:
    return next(index for index, stages in enumerate(FLOORS) if stage in stages)


def _imports() -> dict[str, set[str]]:
    """Every module's imported modules (aimbench's and third-party top-level names), wherever the import is."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names = found.setdefault(_module(path), set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                if node.module == "aimbench":  # from aimbench import demo
                    names.update(f"aimbench.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for name in graph.get(module, ()):
            if name not in index:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in stack:
                low[module] = min(low[module], index[name])
        if low[module] == index[module]:
            group = []
            while True:
                name = stack.pop()
                group.append(name)
                if name == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def _module_graph() -> dict[str, set[str]]:
    """aimbench's modules and the aimbench modules each imports (``from a.b import c`` reaches a.b.c where that is a module)."""
    imports = _imports()
    graph: dict[str, set[str]] = {}
    for module, names in imports.items():
        edges = {name for name in names if name in imports}
        edges |= {f"{name}.{member}" for name in names for member in _from_names(module, name) if f"{name}.{member}" in imports}
        graph[module] = edges - {module}
    return graph


def _from_names(module: str, imported: str) -> set[str]:
    """The names ``module`` imports from ``imported`` (``from imported import a, b``)."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == imported for alias in node.names}


def test_no_import_circle_anywhere() -> None:
    """A circle (a imports b, b imports a, however long the way round) makes import order matter and a module unusable alone."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself finds one
    assert not _cycles(_module_graph()), _cycles(_module_graph())


def test_every_stage_is_on_a_floor() -> None:
    stages = {_stage(module) for module in _imports()}
    assert stages <= set().union(*FLOORS), sorted(stages - set().union(*FLOORS))


def test_no_import_runs_up_or_sideways_between_stages() -> None:
    wrong = []
    for module, names in _imports().items():
        stage = _stage(module)
        for name in names:
            if not name.startswith("aimbench.") or _stage(name) == stage:
                continue
            mine, theirs = _floor(stage), _floor(_stage(name))
            if theirs > mine or (theirs == mine and mine not in SHARED_FLOORS):
                wrong.append(f"{module} -> {name}")
    assert not wrong, wrong


def test_launchers_use_the_probes_only_through_their_package() -> None:
    reaching = [
        f"{module} -> {name}"
        for module, names in _imports().items()
        if _stage(module) == "launch"
        for name in names
        if name.startswith("aimbench.probes.")
    ]
    assert not reaching, reaching


def test_terminal_libraries_stay_in_the_user_facing_layer() -> None:
    leaking = [
        f"{module} -> {name}"
        for module, names in _imports().items()
        if not module.removeprefix("aimbench.").startswith(TERMINAL_ALLOWED)
        for name in names
        if name.split(".")[0] in TERMINAL_LIBRARIES
    ]
    assert not leaking, leaking


def test_modules_hold_one_concept() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long


def test_every_adapter_a_card_may_name_has_a_family() -> None:
    from aimbench.adapters import FAMILIES
    from aimbench.cards.backbone_card import ADAPTERS

    assert set(FAMILIES) == set(ADAPTERS)
    assert all(
        FAMILIES[name]().__name__.endswith("Backbone") for name in ("aim", "timm")
    )  # open_clip's import is slow: conformance covers it
