"""The package's rooms and the direction of their imports: every import of every module points down (README,
"Layout"), so no room depends on one above it."""

import ast
from pathlib import Path

from tests.helpers import ROOT

# room -> level: a module may import its own room and rooms of a lower level only
LEVELS = {
    "utils": 0,
    "ek100": 1,
    "benchmark": 2,
    "prompts": 2,
    "data": 3,
    "model": 3,
    "evaluation": 4,
    "training": 5,
    "cli": 6,
}
NO_LIGHTNING = ("lightning", "llavaction.model", "llavaction.training", "llavaction.evaluation", "llavaction.cli")


def imports(path: Path) -> list[str]:
    """Every module a file imports, at its top and inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "llavaction" and len(parts) > 1 and parts[1] in LEVELS else None


def test_every_import_points_down():
    climbing = []
    for path in sorted((ROOT / "llavaction").rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        own = room(".".join(relative.parts))
        if own is None:  # llavaction/__init__.py and __main__.py (the console) stand above the rooms
            continue
        for name in imports(path):
            target = room(name)
            if target is not None and target != own and LEVELS[target] >= LEVELS[own]:
                climbing.append(f"{relative} imports {name}")
    assert climbing == []


def test_every_room_is_in_the_table():
    rooms = {p.name for p in (ROOT / "llavaction").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(LEVELS)


def test_data_preparation_needs_no_lightning_and_no_model():
    found = [
        f"{path.name} imports {name}"
        for path in sorted((ROOT / "data_prep").glob("*.py"))
        for name in imports(path)
        if name.startswith(NO_LIGHTNING)
    ]
    assert found == []
