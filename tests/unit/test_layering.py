"""Layers import downward only, and no module imports itself back through others.

client (the public contract) <- ecomgen.serving (torch-free, runs inside Triton) <-
ecomgen.models (nn.Modules) <- training / evaluation <- export <- CLI and benchmarks.
The scan reads every import statement, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "ecomgen_client": ROOT / "client" / "ecomgen_client",
    "ecomgen": ROOT / "ecomgen",
    "training": ROOT / "training",
    "export": ROOT / "export",
    "benchmarks": ROOT / "benchmarks",
}
PROJECT = tuple(SOURCES)


def module_name(path: Path, top: str) -> str:
    rel = path.relative_to(SOURCES[top]).with_suffix("")
    parts = [top, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Iterator[tuple[str, Path]]:
    for top, base in SOURCES.items():
        for path in sorted(base.rglob("*.py")):
            yield module_name(path, top), path


def imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute or relative), at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


GRAPH = {name: imports(name, path) for name, path in modules()}


def project_imports(name: str) -> set[str]:
    out = set()
    for imp in GRAPH[name]:
        # Resolve "pkg.module.attr" to the longest known module prefix.
        parts = imp.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in GRAPH:
                if candidate != name:
                    out.add(candidate)
                break
    return out


def third_party(name: str) -> set[str]:
    return {i.split(".")[0] for i in GRAPH[name]} - set(PROJECT)


def layer(name: str) -> str:
    if name.startswith("ecomgen.serving") or name in ("ecomgen.spec", "ecomgen.hostinfo"):
        return "serving"
    if name.startswith(("ecomgen.served", "ecomgen.registry")):
        return "serving"
    if name.startswith("ecomgen.models"):
        return "models"
    if name.startswith(("ecomgen.cli", "ecomgen.server", "ecomgen.__main__", "ecomgen.verify")):
        return "cli"
    if name == "ecomgen":
        return "serving"
    return name.split(".")[0].replace("ecomgen_client", "client")


ALLOWED = {
    "client": {"client"},
    "serving": {"client", "serving"},
    "models": {"client", "serving", "models"},
    "training": {"client", "serving", "models", "training"},
    "export": {"client", "serving", "models", "export"},
    "cli": {"client", "serving", "models", "training", "export", "cli"},
    "benchmarks": {"client", "serving", "models", "training", "export", "cli", "benchmarks"},
}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name):
    bad = sorted(i for i in project_imports(name) if layer(i) not in ALLOWED[layer(name)])
    assert not bad, f"{name} ({layer(name)}) imports {bad}"


def test_serving_and_client_never_import_torch():
    for name in GRAPH:
        if layer(name) in ("client", "serving"):
            assert "torch" not in third_party(name), name
    for name in GRAPH:
        if layer(name) == "client":
            assert third_party(name) <= {
                "numpy",
                "tritonclient",
                "grpc",
                "PIL",
                "__future__",
                *sys.stdlib_module_names,
            }, name


def test_export_never_imports_training():
    assert not [
        n
        for n in GRAPH
        if n.startswith("export") and any(i.startswith("training") for i in project_imports(n))
    ]


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in project_imports(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    # A package's __init__ re-exporting its own submodules is not a cycle between layers.
    real = [c for c in cycles if not all(m.split(".")[0] == c[0].split(".")[0] and m in _inits(c) for m in c)]
    assert not real, f"import cycles: {real}"


def _inits(component: list[str]) -> set[str]:
    """Members of a package/submodule pair, e.g. ecomgen_client <-> ecomgen_client.client."""
    out = set()
    for m in component:
        if any(other.startswith(m + ".") for other in component) or any(
            m.startswith(o + ".") for o in component
        ):
            out.add(m)
    return out


def test_importing_every_serving_module_loads_no_torch():
    names = [n for n in GRAPH if layer(n) == "serving" and n != "ecomgen.serving.triton_backend"]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'export'))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
