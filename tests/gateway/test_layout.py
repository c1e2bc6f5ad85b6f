"""The layout keeps its promises: no import circles, the proxy process stays light, the two
processes meet only in gateway/link/, functions stay short. Read from the source (AST), so a
cycle hidden in a function body or under TYPE_CHECKING counts too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT

PACKAGES = ("gateway", "routing", "stats")
HEAVY = ("numba", "llvmlite", "scipy")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module `name` imports, wherever the import statement stands."""
    out: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package[: len(package) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere():
    assert _cycles(_graph()) == []


def test_the_processes_meet_only_in_link():
    graph = _graph()

    def reaches(prefix: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(m, t) for m, targets in graph.items() if m.startswith(prefix)
                for t in targets if t.startswith(forbidden)]

    assert reaches("gateway.proxy", ("gateway.monitor", "gateway.alerts",
                                     "gateway.experiments", "gateway.tools")) == []
    assert reaches("gateway.monitor", ("gateway.proxy", "gateway.tools")) == []
    assert reaches("gateway.link", ("gateway.proxy", "gateway.monitor")) == []
    assert reaches("routing", ("stats", "gateway")) == []
    assert reaches("stats", ("routing", "gateway")) == []


def test_the_proxy_process_imports_no_numba_llvmlite_or_scipy():
    code = ("import sys, gateway.tools.cli, gateway.proxy.server; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    # and the check would see them: the monitor's entry module does import numba
    code = code.replace("gateway.proxy.server", "gateway.monitor.service")
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "numba" in done.stdout


def _functions():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield path.relative_to(ROOT).as_posix(), node


def _compiled(node: ast.FunctionDef) -> bool:
    """numba kernels are written flat on purpose (one compiled loop, no calls)."""
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Name) and target.id in ("njit", "intrinsic", "jit"):
            return True
    return False


# The demo model is a small model server written as one readable app.
LONG_ALLOWED = {("gateway/tools/demo_model.py", "build_model_app")}
HOT_PATH = ("gateway/proxy/app.py", "gateway/proxy/headers.py", "gateway/proxy/engine.py",
            "gateway/proxy/metrics.py", "gateway/link/queue.py", "routing/match.py",
            "routing/split.py")


def test_functions_are_short(limit: int = 60):
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions()
            if node.end_lineno - node.lineno + 1 > limit and not _compiled(node)
            and (path, node.name) not in LONG_ALLOWED]
    assert long == []


def test_hot_path_functions_take_few_parameters():
    def count(node) -> int:
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        return len([n for n in names if n not in ("self", "cls")])

    many = [f"{path}:{node.lineno} {node.name} ({count(node)})" for path, node in _functions()
            if path in HOT_PATH and count(node) > 6]
    assert many == []
