"""The shape of the code, kept by tests: imports run one way (healthscore/ -> services/ ->
shared/, and no service imports another), no module imports itself round a cycle, and no class
in services/ grows past what a reader holds in their head."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("healthscore", "services", "shared")
# with headroom: the largest class is AccountState at ~185 lines (a class that would pass this
# is split by job, not the limit raised)
MAX_CLASS_LINES = 200


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at module level or inside functions."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        imported |= {name for name in names if name in modules}
    return imported


GRAPH = {name: _imports(path, _modules()) for name, path in _modules().items()}


def _layer(module: str) -> tuple[str, str | None]:
    parts = module.split(".")
    return parts[0], parts[1] if parts[0] == "services" and len(parts) > 1 else None


def test_imports_run_from_the_composition_root_to_services_to_shared() -> None:
    wrong = []
    for module, imported in GRAPH.items():
        top, service = _layer(module)
        for target in imported:
            target_top, target_service = _layer(target)
            if top == "shared" and target_top != "shared":
                wrong.append(f"{module} -> {target}")
            if top == "services" and target_top == "healthscore":
                wrong.append(f"{module} -> {target}")
            if top == "services" and target_top == "services" and target_service != service:
                wrong.append(f"{module} -> {target} (another service)")
    assert wrong == []


def test_no_module_imports_itself_round_a_cycle() -> None:
    """Tarjan's strongly connected components over every import, lazy ones included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_checks_above_see_real_imports() -> None:
    """So that the two tests above cannot pass by finding nothing."""
    assert "shared.scoring.model" in GRAPH["shared.scoring.state"]
    assert "services.scorer.prepare" in GRAPH["services.scorer.consume"]
    assert "services.scorer.consume" in GRAPH["healthscore.cli"]  # a lazy import


def test_no_class_in_services_or_shared_is_longer_than_a_reader_can_hold() -> None:
    long = []
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({lines} lines)")
    assert long == []
