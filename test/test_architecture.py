"""The package's layering, read from the source: imports only go down, and task names are listed
nowhere but in the task registry (docs/architecture.md)."""
import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from partlib import tasks

PKG = Path(__file__).resolve().parents[1] / "partlib"


def _imports(path: Path) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # "from partlib import tasks" imports partlib.tasks
                yield node.lineno, f"{node.module}.{alias.name}"


def _modules(*subpackages: str) -> List[Path]:
    return sorted(p for sub in subpackages for p in (PKG / sub).rglob("*.py"))


@pytest.mark.parametrize("sub", ["data", "features", "models", "infer", "analysis", "scoring"])
def test_nothing_below_train_imports_train(sub):
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {name}" for p in _modules(sub)
           for line, name in _imports(p) if name == "partlib.train" or name.startswith("partlib.train.")]
    assert not bad, "\n".join(bad)


def test_the_task_registry_is_the_ground_floor():
    allowed = {"partlib", "partlib.common", "partlib.data", "partlib.data.langs"}
    names = {name for _, name in _imports(PKG / "tasks.py") if name.startswith("partlib")}
    # a name imported from an allowed module (partlib.common.ConfigError) is fine too
    bad = {n for n in names if n not in allowed and n.rsplit(".", 1)[0] not in allowed - {"partlib", "partlib.data"}}
    assert not bad, bad


def test_no_task_name_list_outside_the_registry():
    known = set(tasks.names())
    found = []
    for p in sorted(PKG.rglob("*.py")):
        if p == PKG / "tasks.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(set(words) & known) >= 2:
                    found.append(f"{p.relative_to(PKG.parent)}:{node.lineno}: {words}")
    assert not found, "\n".join(found)
