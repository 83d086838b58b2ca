"""The optimizer library is torch-only: `import sam` works with the trainer's dependencies missing."""

import subprocess
import sys
import textwrap

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
