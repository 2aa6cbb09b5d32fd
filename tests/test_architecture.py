"""The package's shape: imports flow one way, modules stay small, the CLI stays a thin fast layer."""
import ast
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnlab"
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, top_level_only: bool = False) -> Set[str]:
    """attnlab modules ``path`` imports (module level and, unless asked, inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: Set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("attnlab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("attnlab"):
                continue
            for a in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{a.name}"
                out.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else target)
    return out - {name}


def graph() -> Dict[str, Set[str]]:
    g = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    # a package's __init__ is not a dependency edge of its own submodules' data flow
    return {m: {t for t in deps if t in g and not m.startswith(t + ".")} for m, deps in g.items()}


def find_cycle(g: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> List[str]:
        state[n] = 1
        stack.append(n)
        for t in sorted(g.get(n, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        state[n] = 2
        stack.pop()
        return []

    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle_between_modules():
    # package __init__ files only re-export (lazily): leave them out, as any importer of a submodule runs them
    g = {m: {t for t in deps if not (PACKAGE.parent / (t.replace(".", "/")) / "__init__.py").exists()}
         for m, deps in graph().items()}
    assert find_cycle(g) == []


def test_nothing_in_the_package_imports_the_cli():
    offenders = [m for m, deps in graph().items() if not m.startswith(("attnlab.cli", "attnlab.__main__"))
                 and any(d.startswith("attnlab.cli") for d in deps)]
    assert offenders == []


def test_metrics_import_no_model_or_study_code():
    for m, deps in graph().items():
        if m.startswith("attnlab.metrics"):
            assert not {d for d in deps if d.startswith(("attnlab.models", "attnlab.capture", "attnlab.studies",
                                                          "attnlab.train"))}, m


def test_cli_imports_torch_only_inside_commands():
    for path in (PACKAGE / "cli").glob("*.py"):
        top = {a.name.split(".")[0] for node in ast.parse(path.read_text()).body
               for a in getattr(node, "names", []) if isinstance(node, ast.Import)}
        top |= {(node.module or "").split(".")[0] for node in ast.parse(path.read_text()).body
                if isinstance(node, ast.ImportFrom) and not node.level}
        assert not top & {"torch", "timm", "pandas", "matplotlib", "numpy"}, path.name


def test_no_module_is_over_about_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_help_is_fast():
    best = min(_timed([sys.executable, "-m", "attnlab", "--help"]) for _ in range(3))
    assert best < 1.5  # the README promises under 0.5 s on a quiet machine; this allows a busy test run


def _timed(cmd: List[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


@pytest.mark.parametrize("module", ["attnlab", "attnlab.cli"])
def test_import_pulls_no_heavy_library(module):
    code = (f"import sys, {module}; print(sorted(m for m in ('torch', 'timm', 'pandas', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
