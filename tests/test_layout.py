"""The layout's promises (docs/design.md §1), checked on the source: who may import whom, no cycles.

    train.py -> trainer/ -> sam/, models/, data/, plugins/   (sam, models, data never import each other)
    scripts/ -> analysis/ -> run directories, results/        (commands only in scripts/)

Every ``import`` counts, at module level or inside a function, so a lazy import cannot hide a layer
violation or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cli import REPO

PACKAGES = (
    "sam",
    "models",
    "data",
    "trainer",
    "plugins",
    "analysis",
    "scripts",
    "benchmarks",
    "hydra_plugins",
)
# What each top-level part may import (besides itself, the standard library and third-party packages).
ALLOWED = {
    "sam": set(),
    "models": set(),
    "data": set(),
    "plugins": {"sam"},
    "trainer": {"sam", "models", "data", "plugins"},
    "train": {"trainer"},
    "analysis": {"sam", "models", "data", "trainer"},
    "scripts": {"analysis", "sam", "models", "data", "trainer"},
    "benchmarks": {"analysis", "sam", "models", "data", "trainer", "plugins"},
    "hydra_plugins": set(),
}
# Third-party packages the library layers must not need (docs/design.md §1: torch-only sam; no Hydra below trainer).
FORBIDDEN_THIRD_PARTY = {
    "sam": {
        "hydra",
        "omegaconf",
        "wandb",
        "timm",
        "torchvision",
        "tqdm",
        "numpy",
        "sklearn",
        "scipy",
        "yaml",
    },
    "models": {"hydra", "omegaconf", "wandb"},
    "data": {"hydra", "omegaconf", "wandb"},
    "plugins": {"hydra", "omegaconf", "wandb"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    found = {"train": REPO / "train.py"}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The modules ``name`` imports: first-party ones resolved to a known module, others by top name."""
    out = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from X import y``: the module X.y when it is one, else X itself (a name defined in X)
            targets = [
                f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules or target.split(".")[0] not in modules:
                out.add(target)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def test_every_import_respects_the_layers():
    deps = graph()
    first_party = {top(m) for m in deps}
    violations = []
    for module, targets in sorted(deps.items()):
        layer = top(module)
        for target in sorted(targets):
            other = top(target)
            if other in first_party and other != layer and other not in ALLOWED[layer]:
                violations.append(f"{module} imports {target}")
            if other in FORBIDDEN_THIRD_PARTY.get(layer, ()):
                violations.append(f"{module} imports {target} (not a dependency of {layer}/)")
    assert not violations, "\n".join(violations)


def find_cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(deps.get(v, ())):
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

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return cycles


def test_the_import_graph_has_no_cycles():
    full = graph()
    cycles = find_cycles({m: {t for t in ts if t in full} for m, ts in full.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation_and_a_cycle(tmp_path):
    """The two checks above can fail: a planted upward import and a planted cycle are found."""
    modules = {"sam.a": tmp_path / "a.py", "sam.b": tmp_path / "b.py", "trainer.run": tmp_path / "r.py"}
    modules["sam.a"].write_text("from sam.b import x\nimport trainer.run\n")
    modules["sam.b"].write_text("def f():\n    from sam import a\n")
    modules["trainer.run"].write_text("")
    assert imports_of(modules["sam.a"], "sam.a", modules) == {"sam.b", "trainer.run"}
    assert imports_of(modules["sam.b"], "sam.b", modules) == {"sam.a"}  # lazy, and through the package
    deps = {"sam.a": {"sam.b", "trainer.run"}, "sam.b": {"sam.a"}, "trainer.run": set()}
    assert find_cycles(deps) == [["sam.a", "sam.b"]]
