"""Cost of every efficient SAM variant against SGD, with intervals, on two models (issue 21).

Usage:
    python benchmarks/bench_variants.py --quick --threads 1 --out runs/bench_variants.md   # CPU, a few minutes
    python benchmarks/bench_variants.py --out results/digits/efficient/bench.md            # the full run

``--out X.md`` also writes ``X.json``: every timed round's ratio to SGD, per model, variant and kind of step
(``analysis/efficient_study.py`` reads it to cost each variant at the two-pass share its study runs took).

What runs: SGD, SAM and every variant of ``sam.variants``, each built from its ``configs/optimizer/<name>.yaml``
(its paper's defaults, as ``optimizer=<name>`` runs it; SAM-ON at ASAM-ON's rho 10, Momentum-SAM at its
rho 3, the others at SAM's 0.05), stepping with the step function ``sam.select_step`` picks, as the
trainer does (m = null: one perturbation per batch, the digits study's setting; ``--m`` for chunks), with
``StepOptions(CrossEntropyLoss, l2 5e-4, clip 5)`` and SGD + Nesterov 0.9. Models: the digits study's
WRN-10-2 on 1x8x8 batches (``wrn_tiny_digits``) and torchvision's ResNet-18 on CIFAR-shaped 3x32x32
batches; random inputs and labels (timing does not depend on their values).

Settings for the benchmark only, so that each variant's mechanism runs in the timed rounds (one step per
"epoch"): MESA's teacher from the first step (start_epoch 0), SAF's loss from the second (past_epochs 1,
start_epoch 1, the batch's examples as the whole set), SAM-late's SAM steps the last 12.5% of the timed
rounds rounded to whole steps (its schedule restarts with them), LookSAM's, RST's and AE-SAM's schedules
restarted with them too.

Timing: every variant has its own copy of the same initial model; each round runs one step of every
variant in an order shuffled afresh every round (seeded), so a load spike from other processes hits a
random variant rather than always the same neighbour; the first ``--warmup`` rounds are discarded. Each
step is one timed call with a device synchronise on both sides. Per round, a variant's time is divided
by SGD's time in the same round (paired: both saw the same load). A variant whose steps differ by kind
(LookSAM, RST, SAM-late, AE-SAM: two-pass SAM steps and one-pass steps) has its rounds split by the kind
of step taken; per kind, the **median** of the per-round ratios; the cost is the share-weighted sum,
``share x median(SAM steps) + (1 - share) x median(other steps)``, with the share of SAM steps it took in
the timed rounds. (Use the per-kind medians with a run's own share, from its final optimizer state,
for its cost in that run.) The **95% interval** is a percentile bootstrap over the rounds (2,000
resamples, resampling each kind's rounds, share held fixed).

Memory, persistent: tensors each optimizer keeps between steps beyond SGD's (the momentum buffer is
SGD's own), storage-deduplicated, in copies of the trainable parameters: SAM's saved w, LookSAM's g_v,
MESA's EMA teacher (with BatchNorm buffers), SAF's stored outputs (here sized for the benchmark's
examples; in a real run (E + 1) x N x C floats, N training examples, C classes, shown beside it for the
digits set, 1,437 x 10, and CIFAR-10, 50,000 x 10). ``--peak`` also measures the transient peak of two
steps (``bench_sam.py``'s profiler measurement), minus SGD's: what a step allocates on top (GSAM and
LookSAM hold g through pass 2), leaving out what an optimizer allocated when it was built.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root
sys.path.insert(0, str(HERE))

from bench_sam import (  # noqa: E402
    _tensor_bytes,
    build_model,
    cpu_name,
    cpu_peaks,
    cuda_peaks,
    load_line,
    param_bytes,
    resolve_device,
    timed,
)

import plugins  # noqa: E402, F401  (variants added in plugins/ are benchmarked too)
from sam import SAM, StepOptions, resolve_precision, select_step  # noqa: E402
from sam.variants import VARIANTS, build_variant  # noqa: E402

CONFIGS = HERE.parent / "configs" / "optimizer"
MODELS = ("wrn_tiny_digits", "resnet18")
NAMES = ("sgd", "sam", *VARIANTS)
# rho each variant's paper runs at, where it is not SAM's (the run's top-level key in train.py).
PAPER_RHO = {"sam_on": 10.0, "msam": 3.0}
SAM_RHO = 0.05
LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP = 0.05, 0.9, 5e-4, 5.0
SAM_LATE_SHARE = 0.125
GOAL_X_SGD = 1.3
BOOTSTRAP = 2000
# real-run sizes of SAF's stored outputs: (examples, classes)
SAF_SETS = {"digits": (1437, 10), "CIFAR-10": (50_000, 10)}
ONE_PASS = ("sgd", "mesa", "saf", "msam")  # one forward/backward per step (constant kind)
QUICK = dict(rounds=12, warmup=2, batch_size=64, resnet_batch_size=32)
FULL = dict(rounds=60, warmup=3, batch_size=64, resnet_batch_size=128)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    p.add_argument("--variants", default=",".join(NAMES), help=f"comma-separated subset of {NAMES}")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (60; 12 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="discarded rounds first (3; 2 with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="digits WRN batch (64)")
    p.add_argument(
        "--resnet-batch-size", type=int, default=None, help="ResNet-18 batch (128; 32 with --quick)"
    )
    p.add_argument("--m", type=int, default=None, help="m-sharpness chunk size (default: none, m = null)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16, fp16 or auto (sam.resolve_precision)")
    p.add_argument("--peak", action="store_true", help="also the transient peak memory of two steps")
    p.add_argument("--quick", action="store_true", help=f"short CPU run: {QUICK}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the markdown table here (e.g. runs/bench_variants.md)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [m for m in args.models if m not in MODELS] + [v for v in args.variants if v not in NAMES]
    if bad or "sgd" not in args.variants:
        raise SystemExit(f"unknown --models/--variants {bad}, or sgd missing (every ratio is to SGD's step)")
    if args.rounds < 2 or args.warmup < 0:
        raise SystemExit(f"--rounds {args.rounds} must be >= 2 and --warmup {args.warmup} >= 0")
    return args


@dataclass
class Runner:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: object
    opts: StepOptions
    times: list[float] = field(default_factory=list)
    two_pass: list[bool | None] = field(default_factory=list)  # per timed round: a SAM step? None: one kind

    def run(self, x, y):
        before = getattr(self.optimizer, "sam_steps", None)
        result = self.step(self.model, self.optimizer, x, y, self.opts)
        after = getattr(self.optimizer, "sam_steps", None)
        return result, None if before is None else after > before


def variant_options(name: str, rounds: int) -> tuple[dict, dict]:
    """(options for build_variant, optimizer config keys) from configs/optimizer/<name>.yaml + bench settings."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    options = dict(cfg.get("variant") or {})
    if name == "mesa":
        options["start_epoch"] = 0
    elif name == "saf":
        options.update(past_epochs=1, start_epoch=1)
    elif name == "sam_late":
        options.update(late_fraction=None, late_epochs=max(1, round(SAM_LATE_SHARE * rounds)))
    return options, cfg


def make_runner(name: str, base: nn.Module, batch: int, args, device) -> Runner:
    model = build_model_copy(base, device)
    opts = StepOptions(
        nn.CrossEntropyLoss(),
        l2_weight_decay=WEIGHT_DECAY,
        grad_clip=GRAD_CLIP,
        precision=resolve_precision(args.precision, device),
    )
    sgd = dict(lr=LR, momentum=MOMENTUM, nesterov=True)
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), **sgd)
    elif name == "sam":
        opt = SAM(model.parameters(), torch.optim.SGD, rho=SAM_RHO, **sgd)
    else:
        options, cfg = variant_options(name, args.rounds)
        extra = {"example_indices": lambda: torch.arange(batch)} if name == "saf" else {}
        opt = build_variant(
            name, model.parameters(), model=model, rho=PAPER_RHO.get(name, SAM_RHO), adaptive=cfg["adaptive"],
            eta=cfg["eta"], options=options, total_steps=args.rounds, steps_per_epoch=1, seed=args.seed,
            lr=LR, momentum=cfg["momentum"], nesterov=cfg["nesterov"], **extra,
        )  # fmt: skip
    return Runner(name, model, opt, select_step(opt, args.m, batch), opts)


def build_model_copy(base: nn.Module, device) -> nn.Module:
    import copy

    model = copy.deepcopy(base).to(device)
    model.train()
    return model


def restart_schedules(runner: Runner) -> None:
    for attr in ("steps_taken", "sam_steps"):
        if hasattr(runner.optimizer, attr):
            setattr(runner.optimizer, attr, 0)


def time_model(model_name: str, args, device) -> tuple[list[Runner], int]:
    batch = args.batch_size if model_name == "wrn_tiny_digits" else args.resnet_batch_size
    base = build_model(model_name, args.seed)
    shape = (1, 8, 8) if model_name == "wrn_tiny_digits" else (3, 32, 32)
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = [
        (
            torch.randn(batch, *shape, generator=g).to(device),
            torch.randint(0, 10, (batch,), generator=g).to(device),
        )
        for _ in range(2)
    ]
    runners = [make_runner(n, base, batch, args, device) for n in args.variants]
    order_rng = random.Random(args.seed)
    total = args.warmup + args.rounds
    for r in range(total):
        if r == args.warmup:
            for runner in runners:
                restart_schedules(runner)
        order = order_rng.sample(runners, len(runners))
        x, y = batches[r % 2]
        for runner in order:
            (result, two), dt = timed(device, runner.run, x, y)
            if not torch.isfinite(result.loss):
                raise RuntimeError(f"{runner.name}: non-finite loss; its timing would not be a real step's")
            if r >= args.warmup:
                runner.times.append(dt)
                runner.two_pass.append(two)
        if r >= args.warmup:
            sgd_ms = next(u for u in runners if u.name == "sgd").times[-1] * 1e3
            print(
                f"  {model_name} round {r - args.warmup + 1}/{args.rounds}: sgd {sgd_ms:.0f} ms", flush=True
            )
    return runners, param_bytes(base)


# -- statistics -------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cost(runner: Runner, sgd: Runner, seed: int) -> dict:
    """Median per-round ratio per kind of step, the share-weighted cost, and its bootstrap 95% interval."""
    ratios = [t / s for t, s in zip(runner.times, sgd.times)]
    kinds: dict[str, list[float]] = {}
    for ratio, two in zip(ratios, runner.two_pass):
        kinds.setdefault("all" if two is None else ("sam" if two else "other"), []).append(ratio)
    n = len(ratios)
    share = {k: len(v) / n for k, v in kinds.items()}
    point = sum(share[k] * statistics.median(v) for k, v in kinds.items())
    rng = random.Random(seed)
    boot = []
    for _ in range(BOOTSTRAP):
        boot.append(sum(share[k] * statistics.median(rng.choices(v, k=len(v))) for k, v in kinds.items()))
    return {
        "x_sgd": point,
        "lo": percentile(boot, 0.025),
        "hi": percentile(boot, 0.975),
        "sam_share": share.get("sam", 0.0) if "all" not in kinds else float(runner.name not in ONE_PASS),
        "sam_steps_x": statistics.median(kinds["sam"]) if "sam" in kinds else None,
        "other_steps_x": statistics.median(kinds["other"]) if "other" in kinds else None,
        "mean_x": statistics.fmean(runner.times) / statistics.fmean(sgd.times),
        "switching": "all" not in kinds,
    }


def persistent_copies(runner: Runner, pbytes: int) -> float:
    """Tensors the optimizer keeps between steps beyond SGD's state, in copies of the parameters."""
    opt = runner.optimizer
    if not isinstance(opt, SAM):
        return 0.0
    base = opt.base_optimizer
    seen = {p.untyped_storage().data_ptr() for g in base.param_groups for p in g["params"]}
    _tensor_bytes(dict(base.state), seen)  # SGD's own momentum buffers are not extra
    skip = {"base_optimizer", "param_groups", "state", "defaults", "model", "example_indices"}
    return _tensor_bytes({k: v for k, v in vars(opt).items() if k not in skip}, seen) / pbytes


def saf_real_copies(pbytes: int, past_epochs: int = 3) -> str:
    parts = [f"{name} {(past_epochs + 1) * n * c * 4 / pbytes:.2f}" for name, (n, c) in SAF_SETS.items()]
    return "; ".join(parts)


# -- report ------------------------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: dict[str, tuple[list[Runner], int]], args, device) -> str:
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    lines = [
        f"bench_variants: {args.rounds} timed rounds + {args.warmup} warmup per model, order shuffled per "
        f"round (seed {args.seed}), m {args.m or 'null'}, {resolve_precision(args.precision, device).name}",
        f"device {device} ({dev}), torch {torch.__version__}, {torch.get_num_threads()} threads, {load_line()}",
        "",
        "x SGD = median over rounds of (step time / SGD's step time in the same round), per kind of step, "
        "weighted by the share of SAM (two-pass) steps; [95% interval] = percentile bootstrap over rounds. "
        "SAM steps / other steps = the per-kind medians (switching variants). persistent = tensors kept "
        "between steps beyond SGD's momentum, in parameter copies.",
        "",
    ]
    for model_name, (runners, pbytes) in results.items():
        sgd = next(r for r in runners if r.name == "sgd")
        batch = args.batch_size if model_name == "wrn_tiny_digits" else args.resnet_batch_size
        lines += [
            f"### {model_name} ({pbytes / 4 / 1e6:.2f}M params), batch {batch}: SGD "
            f"{statistics.median(sgd.times) * 1e3:.1f} ms/step (median)",
            "",
            "| variant | x SGD [95% interval] | SAM steps x SGD | other steps x SGD | SAM-step share | "
            f"mean x SGD | persistent (param copies) | <= {GOAL_X_SGD}x SGD |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for runner in runners:
            c = cost(runner, sgd, args.seed)
            copies = persistent_copies(runner, pbytes)
            note = f" (real runs: {saf_real_copies(pbytes)})" if runner.name == "saf" else ""
            if runner.name == "sgd":
                ci, goal = "1.00 (reference)", ""
            else:
                ci = f"{c['x_sgd']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"
                goal = "yes" if c["hi"] <= GOAL_X_SGD else ("no" if c["lo"] > GOAL_X_SGD else "undecided")
            lines.append(
                f"| {runner.name} | {ci} | {fmt(c['sam_steps_x'])} | {fmt(c['other_steps_x'])} | "
                f"{c['sam_share']:.2f} | {c['mean_x']:.2f} | {copies:.2f}{note} | {goal} |"
            )
        lines.append("")
    lines.append(f"after the run: {load_line()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    results = {}
    for model_name in args.models:
        print(f"timing {model_name} ...", flush=True)
        results[model_name] = time_model(model_name, args, device)
    text = table(results, args, device)
    if args.peak:
        text += "\n\n" + peak_section(args, device)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps(raw_ratios(results, args, device), indent=1) + "\n")
        print(f"\nwrote {out} and {out.with_suffix('.json')}")


def raw_ratios(results: dict[str, tuple[list[Runner], int]], args, device) -> dict:
    """Every timed round's step time / SGD's in that round, per model, variant and kind of step."""
    models = {}
    for model_name, (runners, pbytes) in results.items():
        sgd = next(r for r in runners if r.name == "sgd")
        variants = {}
        for runner in runners:
            kinds: dict[str, list[float]] = {}
            for t, s, two in zip(runner.times, sgd.times, runner.two_pass):
                kinds.setdefault("all" if two is None else ("sam" if two else "other"), []).append(t / s)
            variants[runner.name] = {"ratios": kinds, "persistent_copies": persistent_copies(runner, pbytes)}
        models[model_name] = {
            "sgd_ms_median": statistics.median(sgd.times) * 1e3,
            "params": pbytes // 4,
            "batch_size": args.batch_size if model_name == "wrn_tiny_digits" else args.resnet_batch_size,
            "variants": variants,
        }
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": f"{device} ({dev})", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "rounds": args.rounds, "warmup": args.warmup, "seed": args.seed, "m": args.m,
            "precision": resolve_precision(args.precision, device).name, "models": models}  # fmt: skip


def peak_section(args, device) -> str:
    """Transient peak of two steps minus SGD's, via bench_sam's measurement (its own variant set-up)."""
    lines = [
        "transient: bytes allocated and live at the peak of two steps, minus SGD's, in parameter copies "
        "(bench_sam.py's profiler measurement; it leaves out what an optimizer allocated when it was built, "
        "e.g. MESA's teacher, so read it beside the persistent column):"
    ]
    for model_name in args.models:
        batch = args.batch_size if model_name == "wrn_tiny_digits" else args.resnet_batch_size
        ns = argparse.Namespace(
            model=model_name, seed=args.seed, batch_size=batch, m=args.m or batch, channels_last=False,
            precision=args.precision, rounds=args.rounds,
        )  # fmt: skip
        names = list(args.variants)
        peaks = (cuda_peaks if device.type == "cuda" else cpu_peaks)(ns, names, device)
        pbytes = param_bytes(build_model(model_name, args.seed))
        lines.append(
            f"  {model_name}: " + ", ".join(f"{n} {(peaks[n] - peaks['sgd']) / pbytes:+.2f}" for n in names)
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
