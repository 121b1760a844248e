"""Layers import downward only, and no module imports itself back through others.

The layers, bottom to top (a layer may import those below it, never those above):

    client     ecomgen_client: the public contract and the thin client (numpy, tritonclient)
    core       ecomgen.{errors, numerics, hostinfo, spec}: shared types and numbers
    creative   ecomgen.creative: ads, text, inventory, provenance, the studio (numpy, Pillow, OpenCV)
    serving    ecomgen.serving: the runtime inside Triton (steps, handlers, runners, backend)
    models     ecomgen.models: nn.Modules and checkpoint I/O (torch; no serving, no specs)
    specs      ecomgen.specs, ecomgen.registry: one spec per served model (reads model constants and
               the scene library's names)
    training   training: loops, data, evaluation
    export     export: ONNX, TensorRT, parity, the repository builder, the build command
    launcher   ecomgen.launcher: process control, security material, configuration, supervision
    cli        ecomgen.cli, ecomgen.__main__, ecomgen.verify (dispatches to export by entry point)
    tools      benchmarks, deploy, docker, docs (may import anything)

Side rules: models never see serving, creative or specs; the launcher and the CLI never import
models, specs, training or export. The scan reads every import statement, including the lazy
ones inside functions, in every source folder.
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
    "deploy": ROOT / "deploy",
    "docker": ROOT / "docker",
    "docs": ROOT / "docs",
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


CORE = ("ecomgen", "ecomgen.errors", "ecomgen.numerics", "ecomgen.hostinfo", "ecomgen.spec")
PREFIXES = (
    ("ecomgen_client", "client"),
    ("ecomgen.creative", "creative"),
    ("ecomgen.serving", "serving"),
    ("ecomgen.models", "models"),
    ("ecomgen.specs", "specs"),
    ("ecomgen.registry", "specs"),
    ("ecomgen.launcher", "launcher"),
    ("ecomgen.cli", "cli"),
    ("ecomgen.__main__", "cli"),
    ("ecomgen.verify", "cli"),
    ("training", "training"),
    ("export", "export"),
    ("benchmarks", "tools"),
    ("deploy", "tools"),
    ("docker", "tools"),
    ("docs", "tools"),
)


def layer(name: str) -> str:
    if name in CORE:
        return "core"
    for prefix, lay in PREFIXES:
        if name == prefix or name.startswith(prefix + "."):
            return lay
    raise AssertionError(f"{name} is in no layer: add it to the table in this test")


ALLOWED = {
    "client": {"client"},
    "core": {"client", "core"},
    "creative": {"client", "core", "creative"},
    "serving": {"client", "core", "creative", "serving"},
    "models": {"client", "core", "models"},
    "specs": {"client", "core", "creative", "models", "specs"},
    "training": {"client", "core", "creative", "serving", "models", "specs", "training"},
    "export": {"client", "core", "creative", "serving", "models", "specs", "training", "export"},
    "launcher": {"client", "core", "serving", "launcher"},
    "cli": {"client", "core", "creative", "serving", "launcher", "cli"},
    "tools": {
        "client",
        "core",
        "creative",
        "serving",
        "models",
        "specs",
        "training",
        "export",
        "launcher",
        "cli",
        "tools",
    },
}


def test_every_module_has_a_layer():
    assert {layer(n) for n in GRAPH} <= set(ALLOWED)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name):
    bad = sorted(i for i in project_imports(name) if layer(i) not in ALLOWED[layer(name)])
    assert not bad, f"{name} ({layer(name)}) imports {bad}"


def test_serving_and_client_never_import_torch():
    for name in GRAPH:
        if layer(name) in ("client", "core", "creative", "serving", "launcher", "cli"):
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
    names = [
        n
        for n in GRAPH
        if layer(n) in ("core", "creative", "serving", "launcher", "cli")
        and n not in ("ecomgen.serving.triton_backend", "ecomgen.__main__", "ecomgen.launcher.__main__")
    ]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'export'))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
