"""Step time and memory of SGD, SAM, ASAM and chunked m-sharpness on a CIFAR-shaped batch (issue 2).

Usage:
    python benchmarks/bench_sam.py [--model resnet18|wrn16_8] [--device auto|cpu|cuda] [--batch-size 256]
        [--m 32] [--rounds 5] [--warmup 1] [--threads N] [--precision auto|fp32|bf16|fp16]
        [--channels-last] [--variants sgd,sam,asam,chunked] [--no-memory] [--quick]
        [--efficient] [--seed 0]

    python benchmarks/bench_sam.py --quick --threads 1   # batch 64, m 16: ~2 min on 2 cores
    python benchmarks/bench_sam.py                       # issue 2's setting: batch 256, m 32
    python benchmarks/bench_sam.py --efficient --quick --threads 1   # the efficient SAM family (issue 15)

--efficient times SGD, SAM and every variant of ``sam.variants`` (paper defaults, rho 0.05, one e(w) per
batch) over 10 rounds, their schedules restarted after the warmup so that the rounds hold two LookSAM
cycles, RST's coins, SAM-late's last quarter; their per-step cost varies by design, so it is reported as
the mean over the rounds (x SGD's mean), with the number of two-pass steps among them.

What runs: our real step functions, picked by ``sam.select_step`` exactly as the trainer picks them
(``sgd_step`` for torch.optim.SGD, ``sam_step`` for SAM/ASAM, ``sam_step_chunked`` for m < batch), with
``StepOptions(nn.CrossEntropyLoss(), l2_weight_decay=5e-4, grad_clip=5.0)`` and SGD, Nesterov 0.9
(lr 0.05; SAM rho 0.05; ASAM rho 0.5, eta 0.01 as the ASAM paper's CIFAR runs). The model is torchvision's
``resnet18(num_classes=10)`` or ``models.create_model("wrn16_8", 10)`` (or ``wrn_tiny_digits``: the
digits study's WRN-10-2 on 1x8x8 inputs); the data are fixed random
normal 3x32x32 images with random labels (timing does not depend on the values).

Timing: every variant has its own copy of the same initial model. The variants run interleaved in one
process, one step each per round, the starting variant rotating from round to round, so that load from
other processes on a shared machine hits all of them alike; the first ``--warmup`` rounds are discarded.
Reported: median ms/step over the rounds (min-max beside it), its ratio to SGD, and chunked's ratio to
plain SAM. Each step ends with a device synchronise. On a loaded CPU, ``--threads 1`` gives far steadier
numbers than torch's default (an intra-op thread that loses its core stalls every parallel region).

Memory, two numbers, both in copies of the trainable parameters (fp32 bytes of one copy of w):
  * held: tensors an optimizer keeps between steps beyond the base optimizer's state (SAM's saved copy
    of w), exact, read from the optimizer object after the timed steps.
  * peak / extra: peak bytes of tensors allocated during two steps (fresh model and optimizer per
    variant, so momentum buffers and SAM's copy are counted) over the model and batch that exist
    before them; extra = that peak minus SGD's. On CUDA this is ``torch.cuda.max_memory_allocated``
    minus ``memory_allocated`` before the steps, peak stats reset per variant. On CPU there is no
    allocator peak counter, so the steps run under ``torch.profiler`` with ``profile_memory=True`` and
    the peak is the running sum of the signed sizes of its allocation/free events: exact tensor bytes,
    without the page, allocator-cache and oneDNN-scratch noise of resident-set measurements (which we
    tried first: +-0.5 parameter copies run to run).

"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: sam/, models/, data/, trainer/

import plugins  # noqa: F401  (variants added in plugins/ are benchmarked too)
from sam import SAM, StepOptions, StepResult, resolve_precision, select_step
from sam.variants import VARIANTS as EFFICIENT_VARIANTS
from sam.variants import build_variant

MODELS = ("resnet18", "wrn16_8", "wrn_tiny_digits")
# Input (C, H, W) per model: CIFAR-shaped, except the digits study's WRN-10-2 on 8x8 grey digits.
INPUT_SHAPE = {"wrn_tiny_digits": (1, 8, 8)}
VARIANTS = ("sgd", "sam", "asam", "chunked", *EFFICIENT_VARIANTS)
# --efficient: the SAM family of issue 15 beside SGD and SAM, each with its paper's defaults (configs/optimizer/)
# and the rho of SAM; MESA's trajectory loss on from the first step (its cost is the teacher forward), SAF's
# from the second (one step per "epoch"), SAM-late's last 12.5% of the rounds rounded to whole steps.
# benchmarks/bench_variants.py is the measurement with intervals (issue 21).
EFFICIENT = ("sgd", "sam", *EFFICIENT_VARIANTS)
EFFICIENT_OPTIONS = {"mesa": {"start_epoch": 0}, "saf": {"past_epochs": 1, "start_epoch": 1}}
EFFICIENT_ROUNDS = 10  # two LookSAM cycles (k = 5); per-step cost is the mean over them
NUM_CLASSES = 10
LR, MOMENTUM = 0.05, 0.9
SAM_RHO = 0.05
ASAM_RHO, ASAM_ETA = 0.5, 0.01
WEIGHT_DECAY, GRAD_CLIP = 5e-4, 5.0
# Targets from issue 2.
TARGET_SAM_X_SGD = 2.05
TARGET_EXTRA_PARAM_COPIES = 1.0
TARGET_CHUNKED_X_SAM = 1.3
QUICK = dict(batch_size=64, m=16, rounds=3, warmup=1)
FULL = dict(batch_size=256, m=32, rounds=5, warmup=1)
MIB = 2**20


# --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help=f"one of {MODELS}")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="per step (default 256; 64 with --quick)")
    p.add_argument("--m", type=int, default=None, help="m-sharpness chunk size (default 32; 16 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="discarded rounds first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (sam.resolve_precision)")
    p.add_argument("--channels-last", action="store_true", help="model and batch in channels_last")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--quick", action="store_true", help=f"smaller defaults: {QUICK}")
    p.add_argument(
        "--efficient",
        action="store_true",
        help=f"time the efficient SAM family: --variants {','.join(EFFICIENT)}, {EFFICIENT_ROUNDS} rounds",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.efficient:
        args.variants = ",".join(EFFICIENT)
        if args.rounds is None:
            args.rounds = EFFICIENT_ROUNDS

    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model not in MODELS:
        raise ValueError(f"--model {args.model!r} is not one of {MODELS}")
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or not args.variants:
        raise ValueError(f"--variants {bad or args.variants} invalid: choose from {VARIANTS}")
    if args.batch_size <= 0 or args.m <= 0 or args.batch_size % args.m:
        raise ValueError(f"--m {args.m} must be a positive divisor of --batch-size {args.batch_size}")
    if args.batch_size // args.m < 2 and "chunked" in args.variants:
        raise ValueError(f"--m {args.m} = --batch-size: chunked would be plain SAM; pick m < batch size")
    if args.rounds < 1 or args.warmup < 0:
        raise ValueError(f"--rounds {args.rounds} must be >= 1 and --warmup {args.warmup} >= 0")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads} must be >= 1")
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} but torch sees no CUDA device; use --device cpu")
    return device


def build_model(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if name == "resnet18":
        from torchvision.models import resnet18

        return resnet18(num_classes=NUM_CLASSES)
    try:
        from models import create_model
    except ImportError as err:
        raise SystemExit(
            f"--model {name} needs the repo's models/ package (models.create_model), which failed to "
            f"import: {err}. Run from the repo root once models/ exists, or use --model resnet18."
        ) from err
    if name == "wrn_tiny_digits":  # configs/model/wrn_tiny.yaml on digits (results/digits/)
        return create_model("wide_resnet", NUM_CLASSES, in_chans=1, depth=10, widen_factor=2, drop_rate=0.0)
    return create_model(name, NUM_CLASSES)


def make_batches(
    args: argparse.Namespace, device: torch.device, count: int = 2
) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(count):
        shape = INPUT_SHAPE.get(args.model, (3, 32, 32))
        x = torch.randn(args.batch_size, *shape, generator=g)  # (B, C, H, W), already "normalised"
        y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g)
        x = x.to(device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append((x, y.to(device)))
    return batches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, step, *args):
    """``step(*args)`` between two device synchronisations: (its result, seconds)."""
    sync(device)
    t0 = time.perf_counter()
    result = step(*args)
    sync(device)
    return result, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    label: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    run: Callable[[Tensor, Tensor], StepResult]
    times: list[float] = field(default_factory=list)
    step_name: str = ""


def make_variant(
    name: str, model: nn.Module, args: argparse.Namespace, device: torch.device, precision: str | None = None
) -> Variant:
    """A model copy, its optimizer and the step function ``select_step`` picks for it."""
    model = copy.deepcopy(model).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opts = StepOptions(
        nn.CrossEntropyLoss(),
        l2_weight_decay=WEIGHT_DECAY,
        grad_clip=GRAD_CLIP,
        precision=resolve_precision(precision or args.precision, device),  # own GradScaler if fp16
    )
    sgd = dict(lr=LR, momentum=MOMENTUM, nesterov=True)
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), **sgd)
    elif name in EFFICIENT_VARIANTS:  # schedules span the timed rounds (reset after warmup)
        options = EFFICIENT_OPTIONS.get(name)
        if name == "sam_late":
            options = {"late_fraction": None, "late_epochs": max(1, round(0.125 * args.rounds))}
        opt = build_variant(
            name,
            model.parameters(),
            model=model,
            rho=SAM_RHO,
            options=options,
            total_steps=args.rounds,
            steps_per_epoch=1,
            seed=args.seed,
            example_indices=(lambda: torch.arange(args.batch_size)) if name == "saf" else None,
            **sgd,
        )
    elif name == "asam":
        opt = SAM(model.parameters(), torch.optim.SGD, rho=ASAM_RHO, adaptive=True, eta=ASAM_ETA, **sgd)
    else:
        opt = SAM(model.parameters(), torch.optim.SGD, rho=SAM_RHO, **sgd)
    m = args.m if name == "chunked" else None  # the efficient variants: one e(w) per batch
    step = select_step(opt, m, args.batch_size)
    label = f"chunked m={args.m}" if name == "chunked" else name
    variant = Variant(name, label, model, opt, lambda x, y: step(model, opt, x, y, opts))
    variant.step_name = step.__name__
    return variant


def time_interleaved(variants: list[Variant], batches: list[tuple[Tensor, Tensor]], args, device) -> None:
    """One step per variant per round, starting variant rotating; warmup rounds discarded."""
    total = args.warmup + args.rounds
    for r in range(total):
        if (
            r == args.warmup
        ):  # variant schedules (LookSAM's k, SAM-late's tail, ...) start with the timed rounds
            for v in variants:
                if hasattr(v.optimizer, "steps_taken"):
                    v.optimizer.steps_taken = 0
                if hasattr(v.optimizer, "sam_steps"):
                    v.optimizer.sam_steps = 0
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        x, y = batches[r % len(batches)]
        for v in order:
            result, dt = timed(device, v.run, x, y)
            if not torch.isfinite(result.loss):
                raise RuntimeError(f"{v.name}: non-finite loss {float(result.loss)}; timings would be off")
            if r >= args.warmup:
                v.times.append(dt)
        print(f"  round {r + 1}/{total}{' (warmup)' if r < args.warmup else ''}: "
              + ", ".join(f"{v.name} {v.times[-1] * 1e3:.0f} ms" if r >= args.warmup else v.name for v in variants),
              flush=True)  # fmt: skip


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _tensor_bytes(obj, seen: set[int]) -> int:
    if isinstance(obj, Tensor):
        key = obj.untyped_storage().data_ptr()
        if key in seen or obj.numel() == 0:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(_tensor_bytes(o, seen) for o in obj.values())
    return 0


def held_bytes(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(base optimizer state, tensors the SAM wrapper keeps beyond it) between steps, storage-deduplicated."""
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    seen = {p.untyped_storage().data_ptr() for g in base.param_groups for p in g["params"]}
    base_state = _tensor_bytes(dict(base.state), seen)
    if not isinstance(optimizer, SAM):
        return base_state, 0
    skip = {"base_optimizer", "param_groups", "state", "defaults"}
    extra = _tensor_bytes({k: v for k, v in vars(optimizer).items() if k not in skip}, seen)
    return base_state, extra


# --------------------------------------------------------------------------------------------------
def _walk(events):
    stack = list(events)
    while stack:
        event = stack.pop()
        yield event
        stack.extend(event.children)


def cpu_peaks(args: argparse.Namespace, names: list[str], device: torch.device) -> dict[str, int]:
    """Peak live bytes of CPU tensors allocated during two steps, from the profiler's allocation events.

    Every allocation and free of the CPU allocator is an event with a signed size; their running sum in
    time order is the bytes allocated since the start and still live, so its maximum is the analogue of
    ``torch.cuda.max_memory_allocated`` minus the baseline. (The events' own ``total_allocated`` counter
    is not used: it misses some frees and drifts upwards.)
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    peaks = {}
    for name in names:
        gc.collect()
        variant = make_variant(name, build_model(args.model, args.seed), args, device)
        batches = make_batches(args, device)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for x, y in batches:
                variant.run(x, y)
        tree = prof.profiler.kineto_results.experimental_event_tree()
        allocs = sorted(
            (e for e in _walk(tree) if e.tag == _EventType.Allocation), key=lambda e: e.start_time_ns
        )
        live = peak = 0
        for event in allocs:
            live += event.extra_fields.alloc_size  # negative for a free
            peak = max(peak, live)
        peaks[name] = peak
        del variant, batches
    return peaks


def cuda_peaks(args: argparse.Namespace, names: list[str], device: torch.device) -> dict[str, int]:
    peaks = {}
    for name in names:
        gc.collect()
        torch.cuda.empty_cache()
        variant = make_variant(name, build_model(args.model, args.seed), args, device)
        batches = make_batches(args, device)
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for x, y in batches:
            variant.run(x, y)
        sync(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) - before
        del variant, batches
    return peaks


# --------------------------------------------------------------------------------------------------
def load_line() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unavailable"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(variants: list[Variant], peaks: dict[str, int] | None, pbytes: int, args) -> None:
    med = {v.name: statistics.median(v.times) for v in variants}
    sgd, sam = med.get("sgd"), med.get("sam")
    print(f"\n{'variant':<16}{'ms/step':>10}{'  (min-max)':<20}{'x SGD':>8}{'x SAM':>8}"
          f"{'held':>8}{'peak MiB':>10}{'extra':>8}  targets")  # fmt: skip
    for v in variants:
        t = med[v.name]
        x_sgd = f"{t / sgd:.2f}" if sgd else "-"
        x_sam = f"{t / sam:.2f}" if sam and v.name == "chunked" else ""
        _, extra_held = held_bytes(v.optimizer)
        peak = f"{peaks[v.name] / MIB:.0f}" if peaks and v.name in peaks else "-"
        extra = ""
        if peaks and "sgd" in peaks and v.name in peaks:
            extra = f"{(peaks[v.name] - peaks['sgd']) / pbytes:+.2f}"
        notes = []
        if v.name in ("sam", "asam") and sgd:
            notes.append(f"x SGD <= {TARGET_SAM_X_SGD}: {mark(t / sgd <= TARGET_SAM_X_SGD)}")
        if v.name == "chunked" and sam:
            notes.append(f"x SAM <= {TARGET_CHUNKED_X_SAM}: {mark(t / sam <= TARGET_CHUNKED_X_SAM)}")
        if v.name != "sgd" and peaks and "sgd" in peaks and v.name in peaks:
            ok = round((peaks[v.name] - peaks["sgd"]) / pbytes, 2) <= TARGET_EXTRA_PARAM_COPIES
            notes.append(f"extra <= {TARGET_EXTRA_PARAM_COPIES:g}: {mark(ok)}")
        spread = f"  ({min(v.times) * 1e3:.0f}-{max(v.times) * 1e3:.0f})"
        print(f"{v.label:<16}{t * 1e3:>10.1f}{spread:<20}{x_sgd:>8}{x_sam:>8}"
              f"{extra_held / pbytes:>8.2f}{peak:>10}{extra:>8}  {'; '.join(notes)}")  # fmt: skip
    print(
        "\nheld = tensors the optimizer keeps between steps beyond the base optimizer's momentum, in copies of\n"
        f"the parameters ({pbytes / MIB:.1f} MiB); peak MiB = peak step memory over model and batch; extra =\n"
        "peak minus SGD's peak, in parameter copies (see the docstring for how peak is measured)."
    )


def report_efficient(variants: list[Variant]) -> None:
    """Per-step cost of the efficient family: the mean over the timed rounds (their cost varies by step)."""
    mean = {v.name: statistics.fmean(v.times) for v in variants}
    sgd = mean.get("sgd")
    print(
        f"\n{'variant':<16}{'mean ms/step':>14}{'x SGD':>8}{'SAM steps':>11}  (efficient family, mean over rounds)"
    )
    for v in variants:
        share = ""
        if hasattr(v.optimizer, "sam_steps"):
            share = f"{v.optimizer.sam_steps}/{len(v.times)}"
        elif v.name == "looksam":
            share = f"{-(-len(v.times) // v.optimizer.k)}/{len(v.times)}"
        ratio = f"{mean[v.name] / sgd:.2f}" if sgd else "-"
        print(f"{v.label:<16}{mean[v.name] * 1e3:>14.1f}{ratio:>8}{share:>11}")


def kernel_floor(
    model: nn.Module, batch: tuple[Tensor, Tensor], m: int, device: torch.device, rounds: int
) -> float:
    """Plain forward+backward of the batch in chunks of m over one whole-batch pass (no SAM work at all).

    The chunked step cannot be cheaper than this ratio times plain SAM: it is what smaller batches cost
    the convolution kernels on this device.
    """
    model = copy.deepcopy(model).to(device)
    x, y = batch
    loss_fn = nn.CrossEntropyLoss()

    def whole() -> None:
        loss_fn(model(x), y).backward()

    def chunked() -> None:
        for xc, yc in zip(x.split(m), y.split(m)):
            loss_fn(model(xc), yc).backward()

    times: dict[str, list[float]] = {"whole": [], "chunked": []}
    for r in range(rounds + 1):
        for name, fn in (("whole", whole), ("chunked", chunked)):
            _, seconds = timed(device, fn)
            if r:  # the first round warms up
                times[name].append(seconds)
            model.zero_grad(set_to_none=True)
    return statistics.median(times["chunked"]) / statistics.median(times["whole"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    base_model = build_model(args.model, args.seed)
    pbytes = param_bytes(base_model)
    precision = resolve_precision(args.precision, device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"bench_sam: {args.model} ({pbytes / 4 / 1e6:.2f}M params), batch {args.batch_size}, m {args.m} "
          f"({args.batch_size // args.m} chunks), {precision.name}"
          f"{', channels_last' if args.channels_last else ''}, {args.rounds} rounds + {args.warmup} warmup")  # fmt: skip
    print(
        f"device {device} ({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} threads, {load_line()}"
    )
    batches = make_batches(args, device)

    print("\ntiming (interleaved):", flush=True)
    variants = [make_variant(name, base_model, args, device) for name in args.variants]
    print("  steps: " + ", ".join(f"{v.name} -> {v.step_name}" for v in variants), flush=True)
    time_interleaved(variants, batches, args, device)

    peaks = None
    if not args.no_memory:
        print("\npeak memory per variant (fresh model and optimizer, two steps each)", flush=True)
        peaks = (cuda_peaks if device.type == "cuda" else cpu_peaks)(args, args.variants, device)
    report(variants, peaks, pbytes, args)
    if any(v.name in EFFICIENT_VARIANTS for v in variants):
        report_efficient(variants)
    if "chunked" in args.variants:
        floor = kernel_floor(base_model, batches[0], args.m, device, args.rounds)
        print(
            f"kernel floor: forward+backward in {args.batch_size // args.m} chunks of {args.m} takes {floor:.2f}x "
            f"one batch of {args.batch_size} on this device, before any SAM work"
        )
    print(f"\nafter the run: {load_line()}")


if __name__ == "__main__":
    main()
