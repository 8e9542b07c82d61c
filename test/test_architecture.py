"""The package's layering, read from the source: every import goes down the floors and no imports
close a cycle, and task names are listed nowhere but in the task registry (docs/architecture.md)."""
import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from partlib import tasks

PKG = Path(__file__).resolve().parents[1] / "partlib"

# The floors of partlib, lowest first; each floor holds rooms (name -> the modules it holds). A module
# may import modules of its own room and of every room on a lower floor; not a room beside it on its
# floor, not a floor above. A package stands for all its modules except those a more specific entry
# names (partlib.data holds data dirs; partlib.data.examples sits higher); the root package stands
# for its __init__ only. Why each floor sits where it does: docs/architecture.md, "Floors".
Floors = Sequence[Dict[str, Tuple[str, ...]]]
FLOORS: Floors = (
    {"common": ("partlib", "partlib.common")},
    {"config": ("partlib.config",), "provenance": ("partlib.provenance",)},
    {"data dirs": ("partlib.data",)},
    {"tasks": ("partlib.tasks",)},
    {"text": ("partlib.text",)},
    {"examples": ("partlib.data.examples", "partlib.data.batching", "partlib.data.shards",
                  "partlib.data.streaming", "partlib.data.lhotse_shar"),
     "corpora": ("partlib.data.corpora",)},
    {"features": ("partlib.features",), "models": ("partlib.models",), "scoring": ("partlib.scoring",)},
    {"analysis": ("partlib.analysis",), "infer": ("partlib.infer",)},
    {"train": ("partlib.train",)},
    {"bin": ("partlib.bin",)},
)


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another: where it is written and what it loads."""

    module: str
    path: Path
    line: int
    target: str


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path) -> Dict[str, Path]:
    """Module name -> file of every module of the package in directory ``root``."""
    return {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def _loaded(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The module of the package that importing the dotted ``name`` loads (the longest prefix
    that is a module: ``pkg.mod.func`` loads ``pkg.mod``), or None outside the package."""
    parts = name.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)


def package_imports(root: Path) -> List[Import]:
    """Every import of a module of the package in ``root`` by another module of it, read from the
    AST of every file: imports inside functions and relative imports included."""
    modules = package_modules(root)
    out = set()  # one entry for `from m import a, b`
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name of `base`
            else:
                continue
            for name in names:
                target = _loaded(name, modules)
                if target is not None and target != module:
                    out.add(Import(module, path, node.lineno, target))
    return sorted(out, key=lambda imp: (imp.path, imp.line, imp.target))


def _room(module: str, floors: Floors, root: str) -> Optional[Tuple[int, str]]:
    """(floor index, room name) of ``module``: the room whose entry names it most specifically."""
    best: Optional[Tuple[int, int, str]] = None
    for level, rooms in enumerate(floors):
        for room, entries in rooms.items():
            for e in entries:
                if module == e or (e != root and module.startswith(e + ".")):
                    if best is None or len(e) > best[0]:
                        best = (len(e), level, room)
    return None if best is None else best[1:]


def _cycles(imports: Sequence[Import]) -> List[List[Import]]:
    """One shortest cycle of imports through each strongly connected group of modules."""
    graph: Dict[str, Dict[str, Import]] = {}
    for imp in imports:
        graph.setdefault(imp.module, {}).setdefault(imp.target, imp)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    groups: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in (set(g) for g in groups if len(g) > 1):
        start = min(group)
        reached: Dict[str, Import] = {}  # module -> the import that first reached it from start
        frontier = [start]
        while start not in reached:  # breadth first inside the group, back to start
            following = []
            for v in frontier:
                for imp in graph[v].values():
                    if imp.target in group and imp.target not in reached:
                        reached[imp.target] = imp
                        following.append(imp.target)
            frontier = following
        path = [reached[start]]
        while path[-1].module != start:
            path.append(reached[path[-1].module])
        cycles.append(path[::-1])
    return sorted(cycles, key=lambda c: c[0].module)


def floor_violations(root: Path, floors: Floors) -> List[str]:
    """What breaks the floors in the package in ``root``, one line each: a module on no floor, an
    import up a floor or into another room of its floor (file:line), an import cycle."""
    def where(imp: Import) -> str:
        return f"{imp.path.relative_to(root.parent)}:{imp.line}"

    modules = package_modules(root)
    rooms = {m: _room(m, floors, root.name) for m in modules}
    out = [f"{p.relative_to(root.parent)}: {m} is on no floor" for m, p in modules.items() if rooms[m] is None]
    imports = package_imports(root)
    for imp in imports:
        src, dst = rooms[imp.module], rooms[imp.target]
        if src is None or dst is None or src == dst or dst[0] < src[0]:
            continue
        how = "up a floor" if dst[0] > src[0] else "beside it on its floor"
        out.append(f"{where(imp)}: {imp.module} ({src[1]}) imports {imp.target} ({dst[1]}), {how}")
    for cycle in _cycles(imports):
        out.append("import cycle: " + " -> ".join(
            [cycle[0].module] + [f"{imp.target} ({where(imp)})" for imp in cycle]))
    return out


def test_imports_go_down_the_floors_and_close_no_cycle():
    bad = floor_violations(PKG, FLOORS)
    assert not bad, "\n".join(bad)


def test_the_checker_finds_what_breaks_the_floors(tmp_path):
    files = {
        "__init__.py": "",
        "low.py": "import os\n\n\ndef f():\n    from pkg.high import c  # up a floor, inside a function\n",
        "high/__init__.py": "from .a import x\n",
        "high/a.py": "from . import b\nfrom ..low import f\nx = 1\n",  # relative imports
        "high/b.py": "def g():\n    from pkg.high import a\n",  # closes a -> b -> a
        "high/c.py": "y = 2\n",
        "side.py": "import pkg.high.a\n",  # another room of its floor
        "stray.py": "from pkg.low import f\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    floors = ({"low": ("pkg", "pkg.low")}, {"high": ("pkg.high",), "side": ("pkg.side",)})
    assert floor_violations(tmp_path / "pkg", floors) == [
        "pkg/stray.py: pkg.stray is on no floor",
        "pkg/low.py:5: pkg.low (low) imports pkg.high.c (high), up a floor",
        "pkg/side.py:1: pkg.side (side) imports pkg.high.a (high), beside it on its floor",
        "import cycle: pkg.high.a -> pkg.high.b (pkg/high/a.py:1) -> pkg.high.a (pkg/high/b.py:2)",
    ]


def test_the_task_registry_imports_only_common_and_the_language_table():
    names = {imp.target for imp in package_imports(PKG) if imp.module == "partlib.tasks"}
    assert names <= {"partlib.common", "partlib.data.langs"}, names


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
