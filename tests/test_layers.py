"""Imports go one way, down the layers of ARCHITECTURE.md: no module imports a higher layer."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fidan"

# ARCHITECTURE.md's table, bottom first. A module may import its own layer and the ones above it
# in this list, never the ones below.
LAYERS = [
    {"__init__", "errors", "atomic", "settings", "records", "text", "dist", "progress", "stats"},
    {"model"},
    {"config", "context", "rundir", "staging"},
    {"corpus", "tokenizer"},
    {"data"},
    {"train"},
    {"infer"},
    {"estimate"},
    {"finetune"},
    {"eval"},
    {"rlhf"},
    {"serve"},
    {"stages", "pipeline", "commands", "cli", "__main__"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def unit(path: Path) -> str:
    """The layer unit of a source file: its top-level package or module under fidan/."""
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".py")


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fidan":
                out.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return out


def test_every_unit_has_a_layer():
    units = {unit(p) for p in SRC.rglob("*.py")} | {p.name for p in SRC.iterdir() if p.is_dir() and
                                                    not p.name.startswith("__") and any(p.glob("*.py"))}
    assert units - set(LEVEL) == set(), "add the new module to ARCHITECTURE.md's layers and to LAYERS here"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down(path):
    here = LEVEL[unit(path)]
    upward = [f"line {line}: imports fidan.{target} (layer {LEVEL[target]} > {here})"
              for line, target in imports(path) if LEVEL.get(target, -1) > here]
    assert upward == []
