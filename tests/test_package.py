"""The optimizer library is torch-only: `import sam` works with the trainer's dependencies missing, and
`pip install .` puts the library into a fresh venv where every installed module imports with torch alone."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli import copy_repository
from packaging.requirements import Requirement

BLOCKED = ["hydra", "omegaconf", "wandb", "timm", "tqdm", "torchvision", "sklearn", "scipy", "matplotlib"]


def test_import_sam_needs_torch_only():
    code = textwrap.dedent(
        f"""
        import importlib.abc, importlib.machinery, sys

        class Missing(importlib.abc.Loader):
            # Found (so torch's optional-dependency probes see a spec without an origin) but never importable.
            def create_module(self, spec):
                raise ModuleNotFoundError("blocked: " + spec.name)

            def exec_module(self, module):
                raise ModuleNotFoundError("blocked: " + module.__name__)

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    return importlib.machinery.ModuleSpec(name, Missing(), origin=None)
                return None

        sys.meta_path.insert(0, Block())
        import torch
        import sam
        from sam import SAM, frozen_bn_stats, select_step
        model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
        model(torch.randn(4, 3)).sum().backward()
        opt.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            model(torch.randn(4, 3)).sum().backward()
        opt.second_step(zero_grad=True)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r} or m == "sam.trainer")
        print("LOADED", loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


def test_public_api_is_the_contract():
    import sam

    for name in ("SAM", "frozen_bn_stats", "select_step", "sam_step", "sgd_step", "StepOptions"):
        assert name in sam.__all__
    for internal in ("RNGState", "PERTURBATION_MODES", "PRECISIONS", "WEIGHT_DECAY_MODES", "ChunkedBNStats"):
        assert internal not in sam.__all__


@pytest.mark.slow  # about 12 s: a wheel build, a pip install and a fresh interpreter importing torch
def test_pip_install_into_a_fresh_venv_imports_every_module_with_torch_alone(tmp_path):
    """``pip install .`` (a wheel built from what a clone has, installed with pip into a venv without system
    site-packages) installs ``sam`` and nothing else; from another directory every installed module
    imports, with only torch and its own requirements importable, and loads nothing else."""
    source = copy_repository(tmp_path / "clone")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "dist", source],
        check=True,
        timeout=120,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True, timeout=120
    )

    site = Path(venv_path(python, "purelib"))
    installed = {p.name for p in site.iterdir()}
    assert {n for n in installed if not re.fullmatch(r"sam_repro-[^-]+\.dist-info", n)} == {"sam"}, installed

    # torch and the distributions it requires, and nothing else, reachable through a .pth file.
    torch_only = tmp_path / "torch_only"
    link_distributions(requirement_closure("torch"), torch_only)
    (site / "torch_only.pth").write_text(f"{torch_only}\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run(
        [python, "-I", "-c", IMPORT_EVERY_MODULE],
        cwd=work,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert {"sam", "sam.optimizer", "sam.steps", "sam.variants"} <= set(report["files"]), report["files"]
    for name, file in report["files"].items():
        assert Path(file).is_relative_to(site), f"{name} imported from {file}, not from the install"
    roots = [site, torch_only, *map(Path, report["stdlib"])]
    on_disk = {m: Path(f) for m, f in report["loaded"].items() if f and os.path.isabs(f)}  # not torch.ops
    foreign = {m: f for m, f in on_disk.items() if not any(f.is_relative_to(r) for r in roots)}
    assert not foreign, f"importing the installed sam loaded modules from elsewhere: {foreign}"
    tops = {m.split(".")[0] for m in report["loaded"]}
    assert not tops & (set(BLOCKED) | {"numpy", "models", "data", "trainer", "analysis", "plugins"}), tops


# Run by the fresh venv's python in a directory that is not the repository.
IMPORT_EVERY_MODULE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, sysconfig

    import sam

    def fail(name):
        raise  # walk_packages calls this inside its except clause: re-raise the import error

    names = ["sam"] + [m.name for m in pkgutil.walk_packages(sam.__path__, "sam.", onerror=fail)]
    modules = [importlib.import_module(name) for name in names]

    import torch
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = sam.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    opt.step(lambda: model(torch.randn(4, 3)).sum().backward())

    files = {m.__name__: m.__file__ for m in modules}
    loaded = {name: getattr(m, "__file__", None) for name, m in sys.modules.items()}
    stdlib = [sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")]
    print(json.dumps({"files": files, "loaded": loaded, "stdlib": stdlib}))
    """
)


def venv_path(python: Path, key: str) -> str:
    code = f"import sysconfig; print(sysconfig.get_path({key!r}))"
    return subprocess.run(
        [python, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def requirement_closure(root: str) -> list[importlib.metadata.Distribution]:
    """The installed distribution ``root`` and every installed one it requires, transitively (extras
    followed where asked for, other markers evaluated for this interpreter)."""
    found: dict[tuple[str, frozenset[str]], importlib.metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if (key, extras) in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # required on another platform, or optional
        found[(key, extras)] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            markers = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(m) for m in markers):
                todo.append((req.name, frozenset(req.extras)))
    return list({d.metadata["Name"]: d for d in found.values()}.values())


def link_distributions(dists: list[importlib.metadata.Distribution], dest: Path) -> None:
    """Symlink the top-level entries (packages, modules, metadata) of ``dists`` into ``dest``."""
    dest.mkdir()
    for dist in dists:
        for file in dist.files or []:
            top = file.parts[0]
            if top not in ("..", "__pycache__") and not (dest / top).is_symlink():
                (dest / top).symlink_to(dist.locate_file(top))
